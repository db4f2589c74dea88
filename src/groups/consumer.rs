//! The consumer group protocol (KIP-848) state of one group: members with their
//! subscriptions and epochs, the group epoch, the target assignment the server-side
//! assignor computed, and each member's reconciliation towards it (Kafka's
//! GroupMetadataManager.consumerGroupHeartbeat, TargetAssignmentBuilder and
//! CurrentAssignmentBuilder). A partition goes to its new owner only once its previous owner
//! acknowledged revoking it (a heartbeat whose owned partitions no longer include it).
//!
//! Runs on: the group's coordinator shard only; synchronous. Membership is in memory only:
//! after a coordinator move the members hear UNKNOWN_MEMBER_ID / FENCED_MEMBER_EPOCH and
//! rejoin with epoch 0 (committed offsets are in `__consumer_offsets` as for classic groups).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use super::assignor::{self, MemberSpec, TopicPartitions};

/// Kafka's error codes of the consumer group protocol.
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const UNRELEASED_INSTANCE_ID: i16 = 111;
pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
pub const STALE_MEMBER_EPOCH: i16 = 113;

/// Member epochs with a meaning of their own (Kafka's).
pub const JOIN_EPOCH: i32 = 0;
pub const LEAVE_EPOCH: i32 = -1;
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Topic names one subscription may list, and the longest regex.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;
pub const SUBSCRIBED_REGEX_MAX_BYTES: usize = 4096;
/// The longest id, rack or assignor name a member may send (bytes).
pub const MEMBER_STRING_MAX_BYTES: usize = 1024;
/// Kafka's topic name limit.
const TOPIC_NAME_MAX_BYTES: usize = 249;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    UnrevokedPartitions,
    UnreleasedPartitions,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    pub previous_epoch: i32,
    pub state: MemberState,
    pub subscribed: BTreeSet<String>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout: Duration,
    /// Partitions the member owns now (acknowledged or granted), and those it must give up.
    pub assigned: TopicPartitions,
    pub revoking: TopicPartitions,
    last_seen: Instant,
    /// While in UnrevokedPartitions: when it is fenced for not revoking.
    revoke_deadline: Option<Instant>,
}

impl ConsumerMember {
    pub fn bytes(&self) -> usize {
        let tp =
            |t: &TopicPartitions| -> usize { t.iter().map(|(n, p)| n.len() + 4 * p.len()).sum() };
        super::GROUP_MEMBER_OVERHEAD_BYTES
            + self.id.len()
            + self.instance_id.as_ref().map_or(0, String::len)
            + self.rack_id.as_ref().map_or(0, String::len)
            + self.client_id.len()
            + self.client_host.len()
            + self.subscribed.iter().map(String::len).sum::<usize>()
            + self.regex.as_ref().map_or(0, String::len)
            + tp(&self.assigned)
            + tp(&self.revoking)
    }
}

/// One ConsumerGroupHeartbeat, decoded (topic ids of the owned partitions already
/// resolved to names; unknown ids dropped).
pub struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed: Option<Vec<String>>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<TopicPartitions>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat gets back.
#[derive(Debug, Default)]
pub struct HeartbeatResult {
    pub error: i16,
    pub message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    /// Sent when it changed or the request was a full one (Kafka's rule).
    pub assignment: Option<TopicPartitions>,
}

impl HeartbeatResult {
    fn error(code: i16, message: impl Into<String>) -> Self {
        HeartbeatResult {
            error: code,
            message: Some(message.into()),
            ..Default::default()
        }
    }
}

/// The topics that exist now: name -> partition count (from the cluster metadata).
pub type TopicCounts = BTreeMap<String, i32>;

pub struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// group.instance.id -> member id.
    static_ids: HashMap<String, String>,
    /// Target assignment per member, as of `assignment_epoch`.
    pub target: HashMap<String, TopicPartitions>,
    /// Partition counts of the subscribed topics when the target was computed.
    subscribed_counts: TopicCounts,
    pub assignor: &'static str,
    /// After a coordinator move the previous members' assignments are unknown (membership
    /// is in memory only): until this instant (load + session timeout, when the previous
    /// coordinator's members have either rejoined here, dropping their partitions, or
    /// would have been timed out by Kafka too) no partition is granted.
    pub hold_until: Option<Instant>,
}

/// Validates a heartbeat's fields (Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid);
/// the INVALID_REQUEST / UNSUPPORTED_ASSIGNOR message when refused.
pub fn validate(p: &HeartbeatParams, version: i16) -> Result<(), (i16, String)> {
    use crate::protocol::error::INVALID_REQUEST;
    let bad = |m: &str| Err((INVALID_REQUEST, m.to_string()));
    if version >= 1 && p.member_id.is_empty() {
        return bad("MemberId can't be empty.");
    }
    if p.member_id.is_empty() && p.member_epoch != JOIN_EPOCH {
        return bad("MemberId can't be empty.");
    }
    let long = |s: &Option<String>| {
        s.as_ref()
            .is_some_and(|s| s.len() > MEMBER_STRING_MAX_BYTES)
    };
    if p.member_id.len() > MEMBER_STRING_MAX_BYTES
        || long(&p.instance_id)
        || long(&p.rack_id)
        || long(&p.server_assignor)
    {
        return bad("a field is too long");
    }
    if p.instance_id.as_deref() == Some("") {
        return bad("InstanceId can't be empty.");
    }
    if p.rack_id.as_deref() == Some("") {
        return bad("RackId can't be empty.");
    }
    if let Some(s) = &p.subscribed
        && (s.len() > SUBSCRIBED_TOPICS_MAX || s.iter().any(|t| t.len() > TOPIC_NAME_MAX_BYTES))
    {
        return bad("SubscribedTopicNames too large");
    }
    if let Some(r) = &p.regex {
        if r.len() > SUBSCRIBED_REGEX_MAX_BYTES {
            return bad("SubscribedTopicRegex too long");
        }
        if !r.is_empty() && regex::Regex::new(r).is_err() {
            return bad("SubscribedTopicRegex is not a valid regular expression");
        }
    }
    match p.member_epoch {
        JOIN_EPOCH => {
            if p.rebalance_timeout_ms <= 0 {
                return bad("RebalanceTimeoutMs must be provided in first request.");
            }
            if p.owned.as_ref().is_some_and(|o| !o.is_empty()) {
                return bad("TopicPartitions must be empty when (re-)joining.");
            }
            if p.subscribed.is_none() && p.regex.is_none() {
                return bad(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                );
            }
        }
        STATIC_LEAVE_EPOCH if p.instance_id.is_none() => {
            return bad("InstanceId can't be null when MemberEpoch is -2.");
        }
        e if e < STATIC_LEAVE_EPOCH => return bad("MemberEpoch is invalid."),
        _ => {}
    }
    if let Some(a) = &p.server_assignor
        && !assignor::ASSIGNORS.contains(&a.as_str())
    {
        return Err((
            UNSUPPORTED_ASSIGNOR,
            format!("ServerAssignor {a} is not supported."),
        ));
    }
    Ok(())
}

fn contains(tp: &TopicPartitions, t: &str, p: i32) -> bool {
    tp.get(t).is_some_and(|s| s.contains(&p))
}

fn is_subset(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    a.iter()
        .all(|(t, ps)| ps.iter().all(|p| contains(b, t, *p)))
}

fn overlaps(a: &TopicPartitions, b: &TopicPartitions) -> bool {
    a.iter()
        .any(|(t, ps)| ps.iter().any(|p| contains(b, t, *p)))
}

fn prune(tp: &mut TopicPartitions) {
    tp.retain(|_, ps| !ps.is_empty());
}

impl Default for ConsumerGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsumerGroup {
    pub fn new() -> Self {
        ConsumerGroup {
            epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_ids: HashMap::new(),
            target: HashMap::new(),
            subscribed_counts: TopicCounts::new(),
            assignor: assignor::UNIFORM,
            hold_until: None,
        }
    }

    pub fn membership_bytes(&self) -> usize {
        self.members.values().map(ConsumerMember::bytes).sum()
    }

    /// Kafka's group states: empty, assigning (target not computed for the epoch),
    /// reconciling (some member not at the assignment epoch), stable.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    fn subscribed_topics(m: &ConsumerMember, topics: &TopicCounts) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = m
            .subscribed
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(r) = m.regex.as_deref().filter(|r| !r.is_empty())
            && let Ok(re) = regex::Regex::new(&format!("^(?:{r})$"))
        {
            out.extend(
                topics
                    .keys()
                    .filter(|t| !t.starts_with("__") && re.is_match(t))
                    .cloned(),
            );
        }
        out
    }

    /// Partition counts of the topics any member subscribes to.
    fn counts_now(&self, topics: &TopicCounts) -> TopicCounts {
        let mut out = TopicCounts::new();
        for m in self.members.values() {
            for t in Self::subscribed_topics(m, topics) {
                let n = topics[&t];
                out.insert(t, n);
            }
        }
        out
    }

    fn bump(&mut self) {
        self.epoch += 1;
    }

    fn pick_assignor(&mut self) {
        // Kafka: the assignor most members ask for, else the default.
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref()
                && let Some(known) = assignor::ASSIGNORS.iter().find(|k| **k == a)
            {
                *votes.entry(known).or_default() += 1;
            }
        }
        self.assignor = votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map_or(assignor::UNIFORM, |(name, _)| name);
    }

    fn compute_target(&mut self, topics: &TopicCounts) {
        self.pick_assignor();
        let subs: Vec<(String, BTreeSet<String>)> = self
            .members
            .values()
            .map(|m| (m.id.clone(), Self::subscribed_topics(m, topics)))
            .collect();
        let specs: Vec<MemberSpec<'_>> = subs
            .iter()
            .map(|(id, t)| MemberSpec {
                id,
                topics: t,
                previous: self.target.get(id),
            })
            .collect();
        let counts = self.counts_now(topics);
        let out = assignor::assign(self.assignor, &specs, &counts);
        self.target = out.into_iter().collect();
        self.subscribed_counts = counts;
        self.assignment_epoch = self.epoch;
    }

    /// Is (topic, partition) held (assigned or being revoked) by a member other than `me`?
    fn owned_by_other(&self, me: &str, t: &str, p: i32) -> bool {
        self.members
            .values()
            .any(|m| m.id != me && (contains(&m.assigned, t, p) || contains(&m.revoking, t, p)))
    }

    /// Kafka's CurrentAssignmentBuilder: moves member `id` towards its target given the
    /// partitions it reports owning (`None`: not reported, assumed still owned).
    fn reconcile(&mut self, id: &str, owned: Option<&TopicPartitions>, now: Instant) {
        let target_epoch = self.assignment_epoch;
        let Some(m) = self.members.get(id) else {
            return;
        };
        let (epoch, current) = match m.state {
            MemberState::Stable if m.epoch == target_epoch => return,
            MemberState::Stable | MemberState::UnreleasedPartitions => {
                (m.epoch, m.assigned.clone())
            }
            MemberState::UnrevokedPartitions => {
                let still_owns = match owned {
                    None => true,
                    Some(o) => overlaps(&m.revoking, o),
                };
                if still_owns {
                    return;
                }
                ((m.epoch + 1).min(target_epoch), m.assigned.clone())
            }
        };
        let empty = TopicPartitions::new();
        let target = self.target.get(id).unwrap_or(&empty);
        let mut keep = TopicPartitions::new();
        let mut revoke = TopicPartitions::new();
        let mut unreleased = false;
        for (t, ps) in &current {
            for &p in ps {
                if contains(target, t, p) {
                    keep.entry(t.clone()).or_default().insert(p);
                } else {
                    revoke.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        let mut grant = keep.clone();
        let held = self.hold_until.is_some_and(|h| now < h);
        for (t, ps) in target {
            for &p in ps {
                if contains(&current, t, p) {
                    continue;
                }
                if held || self.owned_by_other(id, t, p) {
                    unreleased = true;
                } else {
                    grant.entry(t.clone()).or_default().insert(p);
                }
            }
        }
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        if !revoke.is_empty() {
            m.assigned = keep;
            m.revoking = revoke;
            m.previous_epoch = m.epoch;
            m.epoch = epoch;
            m.state = MemberState::UnrevokedPartitions;
            m.revoke_deadline = Some(now + m.rebalance_timeout);
        } else {
            prune(&mut grant);
            m.assigned = grant;
            m.revoking.clear();
            if m.epoch != target_epoch {
                m.previous_epoch = m.epoch;
            }
            m.epoch = target_epoch;
            m.state = if unreleased {
                MemberState::UnreleasedPartitions
            } else {
                MemberState::Stable
            };
            m.revoke_deadline = None;
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(i) = &m.instance_id
                && self.static_ids.get(i).is_some_and(|x| x == id)
            {
                self.static_ids.remove(i);
            }
            self.target.remove(id);
            self.bump();
        }
    }

    /// One ConsumerGroupHeartbeat. `new_id` makes a member id (v0 joins without one);
    /// `admit` takes membership bytes for a new member (false: the shard is full).
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &mut self,
        p: HeartbeatParams,
        topics: &TopicCounts,
        max_size: usize,
        now: Instant,
        new_id: impl FnOnce() -> String,
        mut admit: impl FnMut(usize) -> bool,
    ) -> HeartbeatResult {
        use crate::protocol::error::{GROUP_MAX_SIZE_REACHED, UNKNOWN_MEMBER_ID};
        // Leaving.
        if p.member_epoch == LEAVE_EPOCH || p.member_epoch == STATIC_LEAVE_EPOCH {
            let id = match &p.instance_id {
                Some(i) if p.member_id.is_empty() => self.static_ids.get(i).cloned(),
                _ => Some(p.member_id.clone()),
            };
            let Some(id) = id.filter(|id| self.members.contains_key(id)) else {
                return HeartbeatResult::error(UNKNOWN_MEMBER_ID, "unknown member");
            };
            if let (Some(i), Some(m)) = (&p.instance_id, self.members.get(&id))
                && m.instance_id.as_ref() != Some(i)
            {
                return HeartbeatResult::error(
                    crate::protocol::error::FENCED_INSTANCE_ID,
                    "instance id of another member",
                );
            }
            if p.member_epoch == STATIC_LEAVE_EPOCH {
                // A static member leaving for a while keeps its partitions until its
                // session times out or the same instance rejoins.
                if let Some(m) = self.members.get_mut(&id) {
                    if m.epoch != STATIC_LEAVE_EPOCH {
                        m.previous_epoch = m.epoch;
                    }
                    m.epoch = STATIC_LEAVE_EPOCH;
                    m.last_seen = now;
                }
            } else {
                self.remove(&id);
            }
            return HeartbeatResult {
                member_id: id,
                member_epoch: p.member_epoch,
                ..Default::default()
            };
        }
        let mut changed = false;
        let mut full = p.owned.is_some() || p.member_epoch == JOIN_EPOCH;
        let id = if p.member_epoch == JOIN_EPOCH {
            // Static member replacing its earlier incarnation.
            let replaced = p
                .instance_id
                .as_ref()
                .and_then(|i| self.static_ids.get(i).cloned());
            if let Some(old) = replaced.as_ref().and_then(|o| self.members.get(o))
                && old.epoch != STATIC_LEAVE_EPOCH
                && old.id != p.member_id
            {
                return HeartbeatResult::error(
                    UNRELEASED_INSTANCE_ID,
                    format!(
                        "Static member {} with instance id {} is not released yet.",
                        old.id,
                        p.instance_id.as_deref().unwrap_or_default()
                    ),
                );
            }
            let id = if p.member_id.is_empty() {
                new_id()
            } else {
                p.member_id.clone()
            };
            if let Some(old) = replaced.filter(|o| *o != id) {
                // The new incarnation takes the old one's place and assignment.
                if let Some(mut m) = self.members.remove(&old) {
                    if let Some(t) = self.target.remove(&old) {
                        self.target.insert(id.clone(), t);
                    }
                    m.id = id.clone();
                    self.members.insert(id.clone(), m);
                }
            }
            if let Some(m) = self.members.get_mut(&id) {
                // A static member back (same or new member id): its epoch and
                // partitions as before it left. A dynamic member rejoining with epoch 0
                // (it lost its state) starts again from nothing.
                if m.epoch == STATIC_LEAVE_EPOCH {
                    m.epoch = m.previous_epoch.max(0);
                } else if p.instance_id.is_none() {
                    m.assigned.clear();
                    m.revoking.clear();
                    m.state = MemberState::Stable;
                    m.epoch = 0;
                    changed = true;
                }
            } else {
                if self.members.len() >= max_size {
                    return HeartbeatResult::error(
                        GROUP_MAX_SIZE_REACHED,
                        format!(
                            "The consumer group has reached its maximum capacity of {max_size} members."
                        ),
                    );
                }
                let m = ConsumerMember {
                    id: id.clone(),
                    instance_id: p.instance_id.clone(),
                    rack_id: None,
                    client_id: p.client_id.clone(),
                    client_host: p.client_host.clone(),
                    epoch: 0,
                    previous_epoch: -1,
                    state: MemberState::Stable,
                    subscribed: BTreeSet::new(),
                    regex: None,
                    server_assignor: None,
                    rebalance_timeout: Duration::from_millis(p.rebalance_timeout_ms.max(0) as u64),
                    assigned: TopicPartitions::new(),
                    revoking: TopicPartitions::new(),
                    last_seen: now,
                    revoke_deadline: None,
                };
                // Its subscription is admitted below, with every subscription change.
                if !admit(m.bytes()) {
                    return HeartbeatResult::error(
                        GROUP_MAX_SIZE_REACHED,
                        "the coordinator's membership memory is full",
                    );
                }
                self.members.insert(id.clone(), m);
                changed = true;
            }
            if let Some(i) = &p.instance_id {
                self.static_ids.insert(i.clone(), id.clone());
            }
            id
        } else {
            let Some(m) = self.members.get(&p.member_id) else {
                return HeartbeatResult::error(
                    UNKNOWN_MEMBER_ID,
                    format!("Member {} is not a member of the group.", p.member_id),
                );
            };
            if p.instance_id.is_some() && m.instance_id != p.instance_id {
                return HeartbeatResult::error(
                    crate::protocol::error::FENCED_INSTANCE_ID,
                    "instance id of another member",
                );
            }
            if p.member_epoch != m.epoch {
                // Kafka tolerates the previous epoch when the member's owned partitions are
                // a subset of what it has (the last response was lost).
                let lost_response = p.member_epoch == m.previous_epoch
                    && p.owned.as_ref().is_some_and(|o| is_subset(o, &m.assigned));
                if !lost_response {
                    return HeartbeatResult::error(
                        FENCED_MEMBER_EPOCH,
                        format!(
                            "The consumer group member has a smaller member epoch ({}) than the one known by the group coordinator ({}).",
                            p.member_epoch, m.epoch
                        ),
                    );
                }
                full = true;
            }
            p.member_id.clone()
        };
        // Field updates.
        if let Some(m) = self.members.get_mut(&id) {
            m.last_seen = now;
            if p.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = Duration::from_millis(p.rebalance_timeout_ms as u64);
            }
            if p.rack_id.is_some() {
                m.rack_id = p.rack_id.clone();
            }
            if let Some(s) = &p.subscribed {
                let s: BTreeSet<String> = s.iter().cloned().collect();
                let size = |s: &BTreeSet<String>| s.iter().map(String::len).sum::<usize>();
                let (new_bytes, old_bytes) = (size(&s), size(&m.subscribed));
                if s != m.subscribed && new_bytes > old_bytes && !admit(new_bytes - old_bytes) {
                    return HeartbeatResult::error(
                        GROUP_MAX_SIZE_REACHED,
                        "the coordinator's membership memory is full",
                    );
                }
                if s != m.subscribed {
                    m.subscribed = s;
                    changed = true;
                }
            }
            if let Some(r) = &p.regex {
                let r = (!r.is_empty()).then(|| r.clone());
                if r != m.regex {
                    m.regex = r;
                    changed = true;
                }
            }
            if let Some(a) = &p.server_assignor
                && m.server_assignor.as_ref() != Some(a)
            {
                m.server_assignor = Some(a.clone());
                changed = true;
            }
        }
        if changed || self.counts_now(topics) != self.subscribed_counts {
            self.bump();
        }
        if self.assignment_epoch < self.epoch {
            self.compute_target(topics);
        }
        let before = self.members.get(&id).map(|m| m.assigned.clone());
        self.reconcile(&id, p.owned.as_ref(), now);
        let Some(m) = self.members.get(&id) else {
            return HeartbeatResult::error(UNKNOWN_MEMBER_ID, "member gone");
        };
        let send = full || before.as_ref() != Some(&m.assigned);
        HeartbeatResult {
            error: 0,
            message: None,
            member_id: id.clone(),
            member_epoch: m.epoch,
            assignment: send.then(|| m.assigned.clone()),
        }
    }

    /// Session and rebalance timeouts; true when membership changed.
    pub fn tick(&mut self, now: Instant, session_timeout: Duration, group: &str) -> bool {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                now >= m.last_seen + session_timeout
                    || (m.state == MemberState::UnrevokedPartitions
                        && m.revoke_deadline.is_some_and(|d| now >= d))
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &gone {
            log::info!(
                "consumer group {group}: member {id} missed its session or rebalance timeout; fencing it"
            );
            self.remove(id);
        }
        !gone.is_empty()
    }

    /// Commits from consumer-protocol members (OffsetCommit v9+ carries the member epoch;
    /// Kafka's ConsumerGroup.validateOffsetCommit): NONE, UNKNOWN_MEMBER_ID or
    /// STALE_MEMBER_EPOCH. An empty member id with epoch -1 is an admin/manual commit,
    /// allowed when the group has no members.
    pub fn commit_allowed(&self, member_id: &str, epoch: i32) -> i16 {
        use crate::protocol::error::{NONE, UNKNOWN_MEMBER_ID};
        if member_id.is_empty() && epoch < 0 {
            return if self.members.is_empty() {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        let Some(m) = self.members.get(member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if epoch != m.epoch {
            return STALE_MEMBER_EPOCH;
        }
        NONE
    }

    /// OffsetFetch v9+ from a member: NONE, UNKNOWN_MEMBER_ID or STALE_MEMBER_EPOCH.
    pub fn fetch_allowed(&self, member_id: Option<&str>, epoch: i32) -> i16 {
        match member_id {
            None => crate::protocol::error::NONE,
            Some(id) => {
                let Some(m) = self.members.get(id) else {
                    return crate::protocol::error::UNKNOWN_MEMBER_ID;
                };
                if epoch != m.epoch {
                    STALE_MEMBER_EPOCH
                } else {
                    crate::protocol::error::NONE
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(
        id: &str,
        epoch: i32,
        topics: Option<&[&str]>,
        owned: Option<TopicPartitions>,
    ) -> HeartbeatParams {
        HeartbeatParams {
            member_id: id.into(),
            member_epoch: epoch,
            instance_id: None,
            rack_id: None,
            rebalance_timeout_ms: 60_000,
            subscribed: topics.map(|t| t.iter().map(|s| s.to_string()).collect()),
            regex: None,
            server_assignor: None,
            owned,
            client_id: "c".into(),
            client_host: "h".into(),
        }
    }

    fn hb(g: &mut ConsumerGroup, p: HeartbeatParams, topics: &TopicCounts) -> HeartbeatResult {
        g.heartbeat(p, topics, 100, Instant::now(), || "gen".into(), |_| true)
    }

    fn n(tp: &Option<TopicPartitions>) -> usize {
        tp.as_ref()
            .map_or(0, |t| t.values().map(BTreeSet::len).sum())
    }

    #[test]
    fn second_member_gets_partitions_only_after_revocation() {
        let topics: TopicCounts = [("t".to_string(), 4)].into();
        let mut g = ConsumerGroup::new();
        let a = hb(
            &mut g,
            params("a", 0, Some(&["t"]), Some(TopicPartitions::new())),
            &topics,
        );
        assert_eq!((a.error, a.member_epoch, n(&a.assignment)), (0, 1, 4));
        let b = hb(
            &mut g,
            params("b", 0, Some(&["t"]), Some(TopicPartitions::new())),
            &topics,
        );
        // b's target is two partitions a still owns: nothing yet, but epoch 2.
        assert_eq!((b.error, b.member_epoch, n(&b.assignment)), (0, 2, 0));
        // a heartbeats still owning all four: asked to keep two (revoke two), epoch 1.
        let owned_all = a.assignment.clone();
        let a2 = hb(&mut g, params("a", 1, None, owned_all), &topics);
        assert_eq!((a2.member_epoch, n(&a2.assignment)), (1, 2));
        // b still gets nothing while a has not revoked.
        let b2 = hb(
            &mut g,
            params("b", 2, None, Some(TopicPartitions::new())),
            &topics,
        );
        assert_eq!(n(&b2.assignment), 0);
        // a acknowledges: epoch 2.
        let a3 = hb(&mut g, params("a", 1, None, a2.assignment.clone()), &topics);
        assert_eq!((a3.error, a3.member_epoch), (0, 2));
        let b3 = hb(
            &mut g,
            params("b", 2, None, Some(TopicPartitions::new())),
            &topics,
        );
        assert_eq!(n(&b3.assignment), 2);
        assert!(!overlaps(
            a2.assignment.as_ref().unwrap(),
            b3.assignment.as_ref().unwrap()
        ));
        assert_eq!(g.state_name(), "Stable");
    }

    #[test]
    fn epochs_and_errors() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        let a = hb(&mut g, params("a", 0, Some(&["t"]), None), &topics);
        assert_eq!(a.member_epoch, 1);
        assert_eq!(
            hb(&mut g, params("a", 5, None, None), &topics).error,
            FENCED_MEMBER_EPOCH
        );
        assert_eq!(
            hb(&mut g, params("zz", 1, None, None), &topics).error,
            crate::protocol::error::UNKNOWN_MEMBER_ID
        );
        assert_eq!(g.commit_allowed("a", 0), STALE_MEMBER_EPOCH);
        assert_eq!(g.commit_allowed("a", 1), 0);
        let left = hb(&mut g, params("a", LEAVE_EPOCH, None, None), &topics);
        assert_eq!((left.error, left.member_epoch), (0, LEAVE_EPOCH));
        assert!(g.members.is_empty());
        let mut bad = params("", 0, Some(&["t"]), None);
        bad.server_assignor = Some("nope".into());
        assert_eq!(validate(&bad, 0).unwrap_err().0, UNSUPPORTED_ASSIGNOR);
        assert!(validate(&params("", 0, Some(&["t"]), None), 1).is_err());
        assert!(validate(&params("x", 0, None, None), 1).is_err());
    }

    #[test]
    fn static_member_replacement() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        let mut p = params("a", 0, Some(&["t"]), None);
        p.instance_id = Some("i".into());
        assert_eq!(hb(&mut g, p, &topics).member_epoch, 1);
        let mut p = params("b", 0, Some(&["t"]), None);
        p.instance_id = Some("i".into());
        assert_eq!(hb(&mut g, p, &topics).error, UNRELEASED_INSTANCE_ID);
        let mut p = params("a", STATIC_LEAVE_EPOCH, None, None);
        p.instance_id = Some("i".into());
        assert_eq!(hb(&mut g, p, &topics).member_epoch, STATIC_LEAVE_EPOCH);
        let mut p = params("b", 0, Some(&["t"]), None);
        p.instance_id = Some("i".into());
        let r = hb(&mut g, p, &topics);
        assert_eq!((r.error, r.member_epoch, n(&r.assignment)), (0, 1, 2));
        assert!(g.members.contains_key("b") && !g.members.contains_key("a"));
    }

    #[test]
    fn regex_subscription_and_range_assignor() {
        let topics: TopicCounts = [
            ("orders-1".to_string(), 2),
            ("orders-2".to_string(), 1),
            ("other".to_string(), 5),
        ]
        .into();
        let mut g = ConsumerGroup::new();
        let mut p = params("a", 0, None, None);
        p.regex = Some("orders-.*".into());
        p.server_assignor = Some("range".into());
        let r = hb(&mut g, p, &topics);
        assert_eq!((r.error, n(&r.assignment)), (0, 3));
        assert_eq!(g.assignor, assignor::RANGE);
        assert!(!r.assignment.unwrap().contains_key("other"));
        // A new matching topic bumps the group epoch and is assigned.
        let mut more = topics.clone();
        more.insert("orders-3".into(), 2);
        let r = hb(&mut g, params("a", 1, None, None), &more);
        assert_eq!((r.member_epoch, n(&r.assignment)), (2, 5));
    }

    #[test]
    fn rebalance_timeout_fences_a_member_that_does_not_revoke() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        let mut p = params("a", 0, Some(&["t"]), None);
        p.rebalance_timeout_ms = 1000;
        let a = hb(&mut g, p, &topics);
        hb(&mut g, params("b", 0, Some(&["t"]), None), &topics);
        // a is asked to revoke one partition and never acknowledges.
        let mut p = params("a", 1, None, a.assignment);
        p.rebalance_timeout_ms = -1;
        let r = hb(&mut g, p, &topics);
        assert_eq!(n(&r.assignment), 1);
        assert_eq!(g.members["a"].state, MemberState::UnrevokedPartitions);
        let later = Instant::now() + Duration::from_millis(1500);
        assert!(g.tick(later, Duration::from_secs(45), "g"));
        assert!(!g.members.contains_key("a"));
        // b gets both once it heartbeats.
        let r = hb(
            &mut g,
            params("b", 2, None, Some(TopicPartitions::new())),
            &topics,
        );
        assert_eq!((r.member_epoch, n(&r.assignment)), (3, 2));
    }

    #[test]
    fn group_max_size_and_membership_bound() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        let now = Instant::now();
        let first = g.heartbeat(
            params("a", 0, Some(&["t"]), None),
            &topics,
            1,
            now,
            || "x".into(),
            |_| true,
        );
        assert_eq!(first.error, 0);
        let full = g.heartbeat(
            params("b", 0, Some(&["t"]), None),
            &topics,
            1,
            now,
            || "x".into(),
            |_| true,
        );
        assert_eq!(full.error, crate::protocol::error::GROUP_MAX_SIZE_REACHED);
        let refused = g.heartbeat(
            params("c", 0, Some(&["t"]), None),
            &topics,
            10,
            now,
            || "x".into(),
            |_| false,
        );
        assert_eq!(
            refused.error,
            crate::protocol::error::GROUP_MAX_SIZE_REACHED
        );
        // v0 join without a member id: the coordinator makes one.
        let made = g.heartbeat(
            params("", 0, Some(&["t"]), None),
            &topics,
            10,
            now,
            || "made".into(),
            |_| true,
        );
        assert_eq!((made.error, made.member_id.as_str()), (0, "made"));
    }

    #[test]
    fn nothing_is_granted_while_a_coordinator_move_hold_lasts() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        let now = Instant::now();
        g.hold_until = Some(now + Duration::from_secs(5));
        let r = g.heartbeat(
            params("a", 0, Some(&["t"]), None),
            &topics,
            10,
            now,
            || "x".into(),
            |_| true,
        );
        assert_eq!((r.error, r.member_epoch, n(&r.assignment)), (0, 1, 0));
        let later = now + Duration::from_secs(6);
        let r = g.heartbeat(
            params("a", 1, None, Some(TopicPartitions::new())),
            &topics,
            10,
            later,
            || "x".into(),
            |_| true,
        );
        assert_eq!((r.member_epoch, n(&r.assignment)), (1, 2));
    }

    #[test]
    fn timeouts_fence() {
        let topics: TopicCounts = [("t".to_string(), 2)].into();
        let mut g = ConsumerGroup::new();
        hb(&mut g, params("a", 0, Some(&["t"]), None), &topics);
        assert!(!g.tick(Instant::now(), Duration::from_secs(45), "g"));
        assert!(g.tick(
            Instant::now() + Duration::from_secs(46),
            Duration::from_secs(45),
            "g"
        ));
        assert!(g.members.is_empty());
    }
}
