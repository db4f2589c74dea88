//! One consumer group's membership state machine (Kafka's classic group protocol):
//! Empty -> PreparingRebalance -> CompletingRebalance -> Stable (-> Dead when deleted), with
//! member ids, generations, protocol selection, static members and the deadlines the shard's
//! ticker enforces (session, rebalance, initial delay, pending members, sync).
//!
//! Runs on: the group's coordinator shard only. Everything here is synchronous: a request
//! that must wait (JoinGroup until the rebalance completes, SyncGroup until the leader
//! assigns) gets a oneshot receiver and awaits it after the caller dropped every borrow.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::errors::*;
use super::offsets::CommittedOffset;
use super::{
    GROUP_MAX_SIZE, GROUP_MEMBER_ASSIGNMENT_MAX_BYTES, GROUP_MEMBER_METADATA_MAX_BYTES,
    GROUP_PROTOCOLS_PER_MEMBER_MAX, SESSION_TIMEOUT_MAX_MS, SESSION_TIMEOUT_MIN_MS,
};
use crate::sync::{OneshotReceiver, OneshotSender, oneshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a JoinGroup gets back (immediately or when the rebalance completes).
#[derive(Clone, Debug, Default)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: (member id, instance id, metadata of the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinResult {
    pub fn error(error: i16, member_id: &str) -> Self {
        JoinResult {
            error,
            generation: -1,
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: i16) -> Self {
        SyncResult {
            error,
            ..Default::default()
        }
    }
}

pub enum Wait<T> {
    Now(T),
    Later(OneshotReceiver<T>),
}

/// The parameters of one JoinGroup request.
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and an id.
    pub require_known_member_id: bool,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// The bytes a member with these fields holds, its assignment aside.
pub fn member_bytes(
    id_bytes: usize,
    instance_id: Option<&str>,
    client_id: &str,
    client_host: &str,
    protocols: &[(String, Bytes)],
) -> usize {
    super::GROUP_MEMBER_OVERHEAD_BYTES
        + id_bytes
        + instance_id.map_or(0, str::len)
        + client_id.len()
        + client_host.len()
        + protocols
            .iter()
            .map(|(n, m)| n.len() + m.len())
            .sum::<usize>()
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    join_waiter: Option<OneshotSender<JoinResult>>,
    sync_waiter: Option<OneshotSender<SyncResult>>,
    /// Join order: the earliest member still present becomes leader when the leader left.
    order: u64,
}

impl Member {
    /// The bytes this member holds, as the shard's membership bound counts them.
    pub fn bytes(&self) -> usize {
        member_bytes(
            self.id.len(),
            self.instance_id.as_deref(),
            &self.client_id,
            &self.client_host,
            &self.protocols,
        ) + self.assignment.len()
    }

    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn same_protocols(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: HashMap<String, Member>,
    /// group.instance.id -> current member id.
    static_ids: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined, with their deadline.
    pending: HashMap<String, Instant>,
    /// PreparingRebalance: when the join phase ends regardless of missing members.
    rebalance_deadline: Option<Instant>,
    /// PreparingRebalance from Empty: (current delay end, latest possible end).
    initial_delay: Option<(Instant, Instant)>,
    /// CompletingRebalance: when members that did not sync are dropped.
    sync_deadline: Option<Instant>,
    next_order: u64,
    /// Committed offsets, (topic, partition) -> value.
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    /// Highest tombstone stamp applied: offsets with a lower stamp are deleted.
    pub deleted_stamp: u64,
    /// When the group last became empty (ms since the epoch), for offset retention.
    pub empty_since_ms: i64,
    /// OffsetCommits appended but not yet applied: a deleted group stays (Dead) until 0,
    /// so a late commit cannot resurrect it.
    pub inflight_commits: usize,
    /// TxnOffsetCommit offsets per producer id, applied or dropped by the transaction's
    /// marker.
    pub pending_txn: HashMap<i64, Vec<super::offsets::OffsetEntry>>,
    /// Set when the group speaks the consumer protocol (KIP-848, `consumer`): its
    /// membership lives there and `members` stays empty.
    pub consumer: Option<Box<super::consumer::ConsumerGroup>>,
    /// Set for groups loaded from the offsets log: until then, a consumer-protocol group
    /// here grants no partition (members of the previous coordinator may still hold them;
    /// see `ConsumerGroup::hold_until`).
    pub consumer_hold_until: Option<std::time::Instant>,
}

/// The topics of a ConsumerProtocolSubscription (version i16, then an array of i16-length
/// strings; every version starts so, later fields are not needed). `None` if malformed.
pub fn consumer_subscription_topics(b: &[u8]) -> Option<Vec<String>> {
    let count = i32::from_be_bytes(b.get(2..6)?.try_into().ok()?);
    let mut at = 6;
    let mut topics = Vec::new();
    for _ in 0..count.max(0) {
        let len = i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        let len = usize::try_from(len).ok()?;
        topics.push(String::from_utf8(b.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    Some(topics)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Group {
    pub fn new(id: String) -> Group {
        Group {
            id,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            static_ids: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            sync_deadline: None,
            next_order: 0,
            offsets: HashMap::new(),
            deleted_stamp: 0,
            empty_since_ms: now_ms(),
            inflight_commits: 0,
            pending_txn: HashMap::new(),
            consumer: None,
            consumer_hold_until: None,
        }
    }

    /// Membership bytes of the group (members, and pending member ids), as the shard's
    /// bound counts them.
    pub fn membership_bytes(&self) -> usize {
        self.members.values().map(Member::bytes).sum::<usize>()
            + self
                .pending
                .keys()
                .map(|id| super::GROUP_MEMBER_OVERHEAD_BYTES + id.len())
                .sum::<usize>()
            + self.consumer.as_ref().map_or(0, |c| c.membership_bytes())
    }

    /// The bytes member `id` holds now, if it is a member.
    pub fn member_bytes_of(&self, id: &str) -> Option<usize> {
        self.members.get(id).map(Member::bytes)
    }

    /// True when nothing but (possibly) offsets remains: no members, none pending.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
            && self.pending.is_empty()
            && self.consumer.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// Applies committed offsets in stamp order (the log's order), whatever order the
    /// appends completed in.
    pub fn apply_offset(&mut self, topic: String, partition: i32, value: CommittedOffset) {
        if value.stamp <= self.deleted_stamp {
            return;
        }
        match self.offsets.get(&(topic.clone(), partition)) {
            Some(old) if old.stamp >= value.stamp => {}
            _ => {
                self.offsets.insert((topic, partition), value);
            }
        }
    }

    pub fn apply_tombstone(&mut self, stamp: u64) {
        if stamp > self.deleted_stamp {
            self.deleted_stamp = stamp;
            self.offsets.retain(|_, v| v.stamp > stamp);
        }
    }

    /// Holds a transaction's offsets until its marker (a later commit of the same
    /// partition in the same transaction replaces the earlier one).
    pub fn hold_txn_offsets(
        &mut self,
        producer_id: i64,
        offsets: Vec<super::offsets::OffsetEntry>,
    ) {
        let held = self.pending_txn.entry(producer_id).or_default();
        for o in offsets {
            held.retain(|h| (h.topic.as_str(), h.partition) != (o.topic.as_str(), o.partition));
            held.push(o);
        }
    }

    /// The transaction's marker: its held offsets are committed with `stamp`, or dropped.
    /// True when the group held any.
    pub fn end_txn(&mut self, producer_id: i64, commit: bool, stamp: u64) -> bool {
        let Some(held) = self.pending_txn.remove(&producer_id) else {
            return false;
        };
        if commit {
            for mut o in held {
                o.value.stamp = stamp;
                self.apply_offset(o.topic, o.partition, o.value);
            }
        }
        true
    }

    /// OffsetDelete: removes these partitions' offsets committed before `stamp`.
    pub fn delete_offsets(&mut self, partitions: &[(String, i32)], stamp: u64) {
        for tp in partitions {
            if self.offsets.get(tp).is_some_and(|v| v.stamp < stamp) {
                self.offsets.remove(tp);
            }
        }
    }

    /// Topics the members subscribed to, from their consumer-protocol metadata for the
    /// selected protocol (`None` when the group is not a consumer group with one).
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if let Some(c) = &self.consumer {
            // Consumer protocol: the named subscriptions (regex ones match nothing here).
            return Some(
                c.members
                    .values()
                    .flat_map(|m| m.subscribed.iter().cloned())
                    .collect(),
            );
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut out = HashSet::new();
        for m in self.members.values() {
            out.extend(consumer_subscription_topics(&m.metadata_for(protocol))?);
        }
        Some(out)
    }

    /// group.instance.id given with a member id that is not the instance's current one.
    /// The answer a request naming a member gets before anything else is checked: the
    /// group is gone (COORDINATOR_NOT_AVAILABLE) or a newer member holds its static
    /// instance id (FENCED_INSTANCE_ID).
    fn identity_error(&self, member_id: &str, instance_id: Option<&str>) -> Option<i16> {
        if self.state == GroupState::Dead {
            Some(COORDINATOR_NOT_AVAILABLE)
        } else if self.is_fenced(member_id, instance_id) {
            Some(FENCED_INSTANCE_ID)
        } else {
            None
        }
    }

    pub fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        match instance_id.and_then(|i| self.static_ids.get(i)) {
            Some(current) => current != member_id,
            None => false,
        }
    }

    /// Protocols every current member supports.
    fn candidate_protocols(&self) -> HashSet<&str> {
        let mut iter = self.members.values();
        let Some(first) = iter.next() else {
            return HashSet::new();
        };
        let mut set: HashSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in iter {
            set.retain(|p| m.protocols.iter().any(|(n, _)| n == p));
        }
        set
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidate_protocols();
        protocols
            .iter()
            .any(|(n, _)| candidates.contains(n.as_str()))
    }

    /// Kafka's vote: each member votes for its most preferred candidate; most votes wins,
    /// ties go to the leader's preference order.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(n.as_str()))
            {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let leader = self.leader.as_ref().and_then(|l| self.members.get(l))?;
        let mut best: Option<(&str, usize)> = None;
        for (n, _) in &leader.protocols {
            let v = votes.get(n.as_str()).copied().unwrap_or(0);
            if candidates.contains(n.as_str()) && best.is_none_or(|(_, b)| v > b) {
                best = Some((n.as_str(), v));
            }
        }
        best.map(|(n, _)| n.to_string())
    }

    fn new_member_id(client_id: &str, seq: u64) -> String {
        // Unique, not secret: the coordinator's shard-local counter plus the clock.
        format!("{client_id}-{:016x}{:08x}", now_ms() as u64, seq as u32)
    }

    pub fn join(
        &mut self,
        p: JoinParams,
        initial_delay: Duration,
        id_seq: &mut u64,
    ) -> Wait<JoinResult> {
        let now = Instant::now();
        if self.state == GroupState::Dead {
            return Wait::Now(JoinResult::error(COORDINATOR_NOT_AVAILABLE, &p.member_id));
        }
        if !(SESSION_TIMEOUT_MIN_MS..=SESSION_TIMEOUT_MAX_MS).contains(&p.session_timeout_ms) {
            return Wait::Now(JoinResult::error(INVALID_SESSION_TIMEOUT, &p.member_id));
        }
        // The limit is on all of a member's protocol metadata together.
        if p.protocols.len() > GROUP_PROTOCOLS_PER_MEMBER_MAX
            || p.protocols.iter().map(|(_, m)| m.len()).sum::<usize>()
                > GROUP_MEMBER_METADATA_MAX_BYTES
        {
            return Wait::Now(JoinResult::error(INVALID_REQUEST, &p.member_id));
        }
        let known = !p.member_id.is_empty();
        let is_new = !known || !self.members.contains_key(&p.member_id);
        if is_new
            && !(known && self.pending.contains_key(&p.member_id))
            && self.members.len() + self.pending.len() >= GROUP_MAX_SIZE
            && !p
                .instance_id
                .as_ref()
                .is_some_and(|i| self.static_ids.contains_key(i))
        {
            return Wait::Now(JoinResult::error(GROUP_MAX_SIZE_REACHED, &p.member_id));
        }
        if !known {
            if !self.supports(&p.protocol_type, &p.protocols) {
                return Wait::Now(JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, ""));
            }
            *id_seq += 1;
            let new_id = Self::new_member_id(&p.client_id, *id_seq);
            if let Some(instance) = p.instance_id.clone() {
                if let Some(old_id) = self.static_ids.get(&instance).cloned() {
                    return self.replace_static_member(old_id, new_id, p, initial_delay, now);
                }
                return self.add_member_and_rebalance(new_id, p, initial_delay, now);
            }
            if p.require_known_member_id {
                self.pending.insert(
                    new_id.clone(),
                    now + Duration::from_millis(p.session_timeout_ms as u64),
                );
                return Wait::Now(JoinResult::error(MEMBER_ID_REQUIRED, &new_id));
            }
            return self.add_member_and_rebalance(new_id, p, initial_delay, now);
        }
        // A known member id.
        if self.pending.remove(&p.member_id).is_some() {
            if !self.supports(&p.protocol_type, &p.protocols) {
                return Wait::Now(JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &p.member_id));
            }
            let id = p.member_id.clone();
            return self.add_member_and_rebalance(id, p, initial_delay, now);
        }
        if self.is_fenced(&p.member_id, p.instance_id.as_deref()) {
            return Wait::Now(JoinResult::error(FENCED_INSTANCE_ID, &p.member_id));
        }
        if !self.members.contains_key(&p.member_id) {
            return Wait::Now(JoinResult::error(UNKNOWN_MEMBER_ID, &p.member_id));
        }
        if !self.supports(&p.protocol_type, &p.protocols) {
            return Wait::Now(JoinResult::error(INCONSISTENT_GROUP_PROTOCOL, &p.member_id));
        }
        let id = p.member_id.clone();
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(id, p, now),
            GroupState::CompletingRebalance => {
                let same = self.members[&id].same_protocols(&p.protocols);
                if same {
                    // The member missed the join response: send it again.
                    Wait::Now(self.join_result_for(&id))
                } else {
                    self.update_member_and_rebalance(id, p, now)
                }
            }
            GroupState::Stable => {
                let same = self.members[&id].same_protocols(&p.protocols);
                if self.leader.as_deref() == Some(id.as_str()) || !same {
                    self.update_member_and_rebalance(id, p, now)
                } else {
                    Wait::Now(self.join_result_for(&id))
                }
            }
            GroupState::Empty | GroupState::Dead => {
                Wait::Now(JoinResult::error(UNKNOWN_MEMBER_ID, &p.member_id))
            }
        }
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.member_list(&protocol)
            } else {
                Vec::new()
            },
        }
    }

    fn member_list(&self, protocol: &str) -> Vec<(String, Option<String>, Bytes)> {
        let mut ms: Vec<&Member> = self.members.values().collect();
        ms.sort_by_key(|m| m.order);
        ms.into_iter()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(protocol),
                )
            })
            .collect()
    }

    fn add_member_and_rebalance(
        &mut self,
        id: String,
        p: JoinParams,
        initial_delay: Duration,
        now: Instant,
    ) -> Wait<JoinResult> {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        let (tx, rx) = oneshot();
        self.next_order += 1;
        if let Some(i) = &p.instance_id {
            self.static_ids.insert(i.clone(), id.clone());
        }
        let rebalance_timeout_ms = if p.rebalance_timeout_ms > 0 {
            p.rebalance_timeout_ms
        } else {
            p.session_timeout_ms
        };
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: p.instance_id,
                client_id: p.client_id,
                client_host: p.client_host,
                session_timeout: Duration::from_millis(p.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(rebalance_timeout_ms as u64),
                protocols: p.protocols,
                assignment: Bytes::new(),
                last_seen: now,
                join_waiter: Some(tx),
                sync_waiter: None,
                order: self.next_order,
            },
        );
        if self.leader.is_none() {
            self.leader = Some(id);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay pushes the delay out (Kafka's
                // InitialDelayedJoin), never beyond the rebalance timeout.
                if let Some((end, max)) = self.initial_delay {
                    self.initial_delay = Some(((now + initial_delay).min(max).max(end), max));
                }
                if let Some(d) = self.rebalance_deadline {
                    let mine = now + Duration::from_millis(rebalance_timeout_ms as u64);
                    self.rebalance_deadline = Some(d.max(mine));
                }
            }
            _ => self.prepare_rebalance(initial_delay, now),
        }
        self.maybe_complete_join(now);
        Wait::Later(rx)
    }

    fn update_member_and_rebalance(
        &mut self,
        id: String,
        p: JoinParams,
        now: Instant,
    ) -> Wait<JoinResult> {
        let (tx, rx) = oneshot();
        if let Some(m) = self.members.get_mut(&id) {
            m.protocols = p.protocols;
            m.client_id = p.client_id;
            m.session_timeout = Duration::from_millis(p.session_timeout_ms as u64);
            if p.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = Duration::from_millis(p.rebalance_timeout_ms as u64);
            }
            m.last_seen = now;
            // A second JoinGroup of the same member replaces the first (that one resolves
            // with REBALANCE_IN_PROGRESS when its sender is dropped here).
            m.join_waiter = Some(tx);
        }
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(Duration::ZERO, now);
        }
        self.maybe_complete_join(now);
        Wait::Later(rx)
    }

    /// A static member rejoined with an empty member id: it takes over its instance's
    /// member entry under a new id; the old id is fenced.
    fn replace_static_member(
        &mut self,
        old_id: String,
        new_id: String,
        p: JoinParams,
        initial_delay: Duration,
        now: Instant,
    ) -> Wait<JoinResult> {
        let Some(mut m) = self.members.remove(&old_id) else {
            self.static_ids
                .remove(p.instance_id.as_deref().unwrap_or_default());
            return self.add_member_and_rebalance(new_id, p, initial_delay, now);
        };
        if let Some(w) = m.join_waiter.take() {
            w.send(JoinResult::error(FENCED_INSTANCE_ID, &old_id));
        }
        if let Some(w) = m.sync_waiter.take() {
            w.send(SyncResult::error(FENCED_INSTANCE_ID));
        }
        let same = m.same_protocols(&p.protocols);
        m.id = new_id.clone();
        m.client_id = p.client_id.clone();
        m.client_host = p.client_host.clone();
        m.last_seen = now;
        if let Some(i) = &p.instance_id {
            self.static_ids.insert(i.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        self.members.insert(new_id.clone(), m);
        match self.state {
            // Kafka: a static member coming back into a stable group with the same
            // protocols gets the current generation and keeps its assignment: no rebalance.
            GroupState::Stable if same => Wait::Now(self.join_result_for(&new_id)),
            _ => self.update_member_and_rebalance(new_id, p, now),
        }
    }

    fn prepare_rebalance(&mut self, initial_delay: Duration, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_fail_syncs(REBALANCE_IN_PROGRESS);
        }
        let rebalance = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            let max = now + rebalance;
            self.initial_delay = Some(((now + initial_delay).min(max), max));
        } else {
            self.initial_delay = None;
        }
        self.rebalance_deadline = Some(now + rebalance);
        self.sync_deadline = None;
        self.state = GroupState::PreparingRebalance;
    }

    fn reset_and_fail_syncs(&mut self, error: i16) {
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            if let Some(w) = m.sync_waiter.take() {
                w.send(SyncResult::error(error));
            }
        }
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let due = match self.initial_delay {
            Some((end, _)) => now >= end,
            None => self.all_joined() || self.rebalance_deadline.is_some_and(|d| now >= d),
        };
        if due {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: drops members that did not rejoin, bumps the generation and
    /// answers every waiting JoinGroup.
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member_entry(&id);
        }
        self.initial_delay = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.empty_since_ms = now_ms();
            return;
        }
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.order)
                .map(|m| m.id.clone());
        }
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let rebalance = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.sync_deadline = Some(now + rebalance);
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let result = self.join_result_for(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.last_seen = now;
                if let Some(w) = m.join_waiter.take() {
                    w.send(result);
                }
            }
        }
    }

    fn remove_member_entry(&mut self, id: &str) -> Option<Member> {
        let m = self.members.remove(id)?;
        if let Some(i) = &m.instance_id
            && self.static_ids.get(i).map(String::as_str) == Some(id)
        {
            self.static_ids.remove(i);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// A member leaves (LeaveGroup) or expires (session timeout).
    pub fn remove_member(&mut self, id: &str, now: Instant) {
        let Some(mut m) = self.remove_member_entry(id) else {
            return;
        };
        if let Some(w) = m.join_waiter.take() {
            w.send(JoinResult::error(UNKNOWN_MEMBER_ID, id));
        }
        if let Some(w) = m.sync_waiter.take() {
            w.send(SyncResult::error(UNKNOWN_MEMBER_ID));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(Duration::ZERO, now);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// LeaveGroup for one member identity; returns its error code.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>) -> i16 {
        let now = Instant::now();
        let id = match instance_id {
            Some(i) => match self.static_ids.get(i) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return FENCED_INSTANCE_ID,
                None => return UNKNOWN_MEMBER_ID,
            },
            None => member_id.to_string(),
        };
        if self.pending.remove(&id).is_some() {
            self.maybe_complete_join(now);
            return NONE;
        }
        if !self.members.contains_key(&id) {
            return UNKNOWN_MEMBER_ID;
        }
        self.remove_member(&id, now);
        NONE
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Wait<SyncResult> {
        if let Some(code) = self.identity_error(member_id, instance_id) {
            return Wait::Now(SyncResult::error(code));
        }
        if !self.members.contains_key(member_id) {
            return Wait::Now(SyncResult::error(UNKNOWN_MEMBER_ID));
        }
        if generation != self.generation {
            return Wait::Now(SyncResult::error(ILLEGAL_GENERATION));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            return Wait::Now(SyncResult::error(INCONSISTENT_GROUP_PROTOCOL));
        }
        if assignments
            .iter()
            .any(|(_, a)| a.len() > GROUP_MEMBER_ASSIGNMENT_MAX_BYTES)
        {
            return Wait::Now(SyncResult::error(INVALID_REQUEST));
        }
        let now = Instant::now();
        match self.state {
            GroupState::Empty | GroupState::Dead => Wait::Now(SyncResult::error(UNKNOWN_MEMBER_ID)),
            GroupState::PreparingRebalance => Wait::Now(SyncResult::error(REBALANCE_IN_PROGRESS)),
            GroupState::Stable => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.last_seen = now;
                }
                Wait::Now(self.sync_result(member_id))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot();
                if let Some(m) = self.members.get_mut(member_id) {
                    m.sync_waiter = Some(tx);
                    m.last_seen = now;
                }
                if self.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = by_member.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    self.sync_deadline = None;
                    let ids: Vec<String> = self.members.keys().cloned().collect();
                    for id in ids {
                        let r = self.sync_result(&id);
                        if let Some(m) = self.members.get_mut(&id) {
                            m.last_seen = now;
                            if let Some(w) = m.sync_waiter.take() {
                                w.send(r);
                            }
                        }
                    }
                }
                Wait::Later(rx)
            }
        }
    }

    fn sync_result(&self, member_id: &str) -> SyncResult {
        SyncResult {
            error: NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        if let Some(code) = self.identity_error(member_id, instance_id) {
            return code;
        }
        let Some(m) = self.members.get_mut(member_id) else {
            return UNKNOWN_MEMBER_ID;
        };
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        m.last_seen = Instant::now();
        match self.state {
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        }
    }

    /// May a commit with this identity go through? NONE or the error for every partition.
    pub fn commit_allowed(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> i16 {
        if let Some(code) = self.identity_error(member_id, instance_id) {
            return code;
        }
        if generation < 0 && self.state == GroupState::Empty {
            // A consumer with manual assignment that only stores offsets here.
            return NONE;
        }
        if !self.members.contains_key(member_id) {
            return UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            return ILLEGAL_GENERATION;
        }
        match self.state {
            GroupState::Stable | GroupState::PreparingRebalance => NONE,
            GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::Empty | GroupState::Dead => UNKNOWN_MEMBER_ID,
        }
    }

    /// Enforces the deadlines: pending member ids, session timeouts, the join phase and
    /// the sync phase. Called by the shard's ticker.
    pub fn tick(&mut self, now: Instant) {
        let before = self.pending.len();
        self.pending.retain(|_, deadline| *deadline > now);
        let pending_expired = self.pending.len() != before;
        // Members waiting in JoinGroup or SyncGroup are kept alive (Kafka's shouldKeepAlive).
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| {
                m.join_waiter.is_none()
                    && m.sync_waiter.is_none()
                    && now >= m.last_seen + m.session_timeout
            })
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            log::info!(
                "group {}: member {id} missed its session timeout; removing it",
                self.id
            );
            self.remove_member(id, now);
        }
        if pending_expired {
            self.maybe_complete_join(now);
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if self.initial_delay.is_none() && self.rebalance_deadline.is_some_and(|d| now >= d)
                {
                    self.complete_join(now);
                } else {
                    self.maybe_complete_join(now);
                }
            }
            GroupState::CompletingRebalance if self.sync_deadline.is_some_and(|d| now >= d) => {
                // The leader never sent its assignment: drop the members that did not sync
                // and start over.
                let gone: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| m.sync_waiter.is_none())
                    .map(|m| m.id.clone())
                    .collect();
                for id in gone {
                    self.remove_member_entry(&id);
                }
                self.prepare_rebalance(Duration::ZERO, now);
                self.maybe_complete_join(now);
            }
            _ => {}
        }
    }

    /// Marks the group deleted and fails whatever still waits on it.
    pub fn kill(&mut self) {
        for m in self.members.values_mut() {
            if let Some(w) = m.join_waiter.take() {
                w.send(JoinResult::error(COORDINATOR_NOT_AVAILABLE, &m.id));
            }
            if let Some(w) = m.sync_waiter.take() {
                w.send(SyncResult::error(COORDINATOR_NOT_AVAILABLE));
            }
        }
        self.state = GroupState::Dead;
    }
}
