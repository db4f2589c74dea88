//! Consumer-group membership for the client: FindCoordinator, JoinGroup (following
//! MEMBER_ID_REQUIRED), SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch, plus
//! the classic consumer protocol ("consumer" type, ConsumerProtocolSubscription /
//! ConsumerProtocolAssignment with their 2-byte version prefix, as Java clients write them)
//! and a range assignor. Runs on the `Client`'s executor; no borrow is held across an await.

use std::collections::BTreeMap;
use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest, GroupId,
    HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, OffsetFetchRequest,
    SyncGroupRequest, TopicName, consumer_protocol_assignment,
};
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use super::error::check_code;
use super::{Client, ClientError, Connection, Result};

// Version caps: FindCoordinator 4 batches keys, OffsetFetch 8 batches groups, OffsetCommit 9
// and JoinGroup 8+ belong to the new consumer protocol or need fields this client never sets.
const FIND_COORDINATOR_VERSION_CAP: i16 = 3;
const JOIN_GROUP_VERSION_CAP: i16 = 7;
const SYNC_GROUP_VERSION_CAP: i16 = 5;
const HEARTBEAT_VERSION_CAP: i16 = 4;
const LEAVE_GROUP_VERSION_CAP: i16 = 5;
const OFFSET_COMMIT_VERSION_CAP: i16 = 8;
const OFFSET_FETCH_VERSION_CAP: i16 = 7;
/// The version of ConsumerProtocolSubscription we write (1: with owned partitions).
const SUBSCRIPTION_VERSION: i16 = 1;
/// The version of ConsumerProtocolAssignment we write.
const ASSIGNMENT_VERSION: i16 = 1;

/// Kafka error codes the group calls surface and callers act on.
pub mod codes {
    /// COORDINATOR_LOAD_IN_PROGRESS: retry.
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    /// COORDINATOR_NOT_AVAILABLE: find the coordinator again.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// NOT_COORDINATOR: find the coordinator again.
    pub const NOT_COORDINATOR: i16 = 16;
    /// ILLEGAL_GENERATION: rejoin.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// UNKNOWN_MEMBER_ID: rejoin with an empty member id.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// REBALANCE_IN_PROGRESS: rejoin.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// MEMBER_ID_REQUIRED: rejoin with the member id given in the answer.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

/// The consumer protocol type.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The range assignor's protocol name.
pub const RANGE_ASSIGNOR: &str = "range";

/// One member as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Member id.
    pub member_id: String,
    /// The member's protocol metadata (a ConsumerProtocolSubscription for "consumer").
    pub metadata: Bytes,
}

/// The outcome of a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedGroup {
    /// The generation.
    pub generation: i32,
    /// This member's id.
    pub member_id: String,
    /// The leader's member id.
    pub leader: String,
    /// The protocol the coordinator chose.
    pub protocol_name: Option<String>,
    /// All members with their metadata (only filled for the leader).
    pub members: Vec<GroupMember>,
}

impl JoinedGroup {
    /// True if this member is the leader and must compute the assignment.
    pub fn is_leader(&self) -> bool {
        self.leader == self.member_id
    }
}

/// A partition's committed offset from OffsetFetch (`Ok(-1)`: nothing committed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset, -1 if none, or the partition's error.
    pub offset: std::result::Result<i64, ClientError>,
}

/// Assigned partitions, topic -> partitions.
pub type Assignment = BTreeMap<String, Vec<i32>>;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn versioned<M: Encodable>(m: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    m.encode(&mut buf, version)
        .map_err(|e| ClientError::Encode(format!("consumer protocol: {e}")))?;
    Ok(buf.freeze())
}

fn unversioned<M: Decodable + Message>(mut b: Bytes, what: &str) -> Result<M> {
    if b.len() < 2 {
        return Err(ClientError::Protocol(format!("{what}: {} bytes", b.len())));
    }
    // A newer writer's version is read as the newest we know: later versions only append.
    let v = b.get_i16().clamp(M::VERSIONS.min, M::VERSIONS.max);
    M::decode(&mut b, v).map_err(|e| ClientError::Protocol(format!("{what}: {e}")))
}

/// Encodes a ConsumerProtocolSubscription (version prefix + body) for JoinGroup.
pub fn encode_subscription(topics: &[String]) -> Result<Bytes> {
    let s =
        ConsumerProtocolSubscription::default().with_topics(topics.iter().map(|t| sb(t)).collect());
    versioned(&s, SUBSCRIPTION_VERSION)
}

/// Decodes a member's subscription: its topics.
pub fn decode_subscription(b: Bytes) -> Result<Vec<String>> {
    let s: ConsumerProtocolSubscription = unversioned(b, "subscription")?;
    Ok(s.topics.iter().map(|t| t.to_string()).collect())
}

/// Encodes a ConsumerProtocolAssignment (version prefix + body) for SyncGroup.
pub fn encode_assignment(a: &Assignment) -> Result<Bytes> {
    let m = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .map(|(t, ps)| {
                consumer_protocol_assignment::TopicPartition::default()
                    .with_topic(TopicName(sb(t)))
                    .with_partitions(ps.clone())
            })
            .collect(),
    );
    versioned(&m, ASSIGNMENT_VERSION)
}

/// Decodes an assignment from SyncGroup (empty bytes: nothing assigned).
pub fn decode_assignment(b: Bytes) -> Result<Assignment> {
    if b.is_empty() {
        return Ok(Assignment::new());
    }
    let m: ConsumerProtocolAssignment = unversioned(b, "assignment")?;
    let mut out = Assignment::new();
    for tp in m.assigned_partitions {
        out.entry(tp.topic.0.to_string())
            .or_default()
            .extend(tp.partitions);
    }
    Ok(out)
}

/// Kafka's RangeAssignor: per topic, the subscribed members sorted by id each get a
/// contiguous range; the first `partitions % members` get one more. `members` are (id,
/// subscribed topics); `partitions` is topic -> partition count. Every member is in the
/// result, possibly with nothing.
pub fn range_assign(
    members: &[(String, Vec<String>)],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|(m, _)| (m.clone(), Assignment::new()))
        .collect();
    for (topic, &n) in partitions {
        let mut subs: Vec<&String> = members
            .iter()
            .filter(|(_, ts)| ts.contains(topic))
            .map(|(m, _)| m)
            .collect();
        subs.sort();
        if subs.is_empty() || n <= 0 {
            continue;
        }
        let k = subs.len() as i32;
        let (per, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, m) in subs.into_iter().enumerate() {
            let count = per + i32::from((i as i32) < extra);
            if count > 0
                && let Some(a) = out.get_mut(m)
            {
                a.insert(topic.clone(), (next..next + count).collect());
            }
            next += count;
        }
    }
    out
}

fn group_err(code: i16, what: &str, group: &str, message: Option<&str>) -> Result<()> {
    check_code(code, || format!("{what} {group}"), message)
}

impl Client {
    /// Asks any broker for the coordinator of `group` and remembers its address; returns its
    /// node id. Errors: Kafka 15 COORDINATOR_NOT_AVAILABLE while the broker is starting.
    pub async fn find_coordinator(&self, group: &str) -> Result<i32> {
        let conn = self.any_connection().await?;
        let v = conn.version_for::<FindCoordinatorRequest>(FIND_COORDINATOR_VERSION_CAP)?;
        let req = FindCoordinatorRequest::default()
            .with_key(sb(group))
            .with_key_type(0);
        let resp = conn.request(&req, v).await?;
        group_err(
            resp.error_code,
            "FindCoordinator",
            group,
            resp.error_message.as_deref(),
        )?;
        let node = resp.node_id.0;
        self.nodes
            .borrow_mut()
            .insert(node, format!("{}:{}", resp.host, resp.port));
        self.coordinators
            .borrow_mut()
            .insert(group.to_owned(), node);
        Ok(node)
    }

    /// Forgets the coordinator of `group` (after NOT_COORDINATOR and the like).
    pub fn invalidate_coordinator(&self, group: &str) {
        self.coordinators.borrow_mut().remove(group);
    }

    async fn coordinator_connection(&self, group: &str) -> Result<Rc<Connection>> {
        let cached = self.coordinators.borrow().get(group).copied();
        let node = match cached {
            Some(n) => n,
            None => self.find_coordinator(group).await?,
        };
        self.node_connection(node).await
    }

    fn coordinator_check(&self, r: Result<()>, group: &str) -> Result<()> {
        if let Err(e) = &r
            && matches!(
                e.kafka_code(),
                Some(codes::NOT_COORDINATOR | codes::COORDINATOR_NOT_AVAILABLE)
            )
        {
            self.invalidate_coordinator(group);
        }
        r
    }

    /// Joins `group` with the given protocols ((name, metadata)); `member_id` is "" for a
    /// new member. A MEMBER_ID_REQUIRED answer (v4+) is followed by one rejoin with the id it
    /// carries. Waits as long as the coordinator's rebalance takes.
    pub async fn join_group(
        &self,
        group: &str,
        member_id: &str,
        session_timeout_ms: i32,
        rebalance_timeout_ms: i32,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
    ) -> Result<JoinedGroup> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<JoinGroupRequest>(JOIN_GROUP_VERSION_CAP)?;
        let mut member = member_id.to_owned();
        for _ in 0..2 {
            let mut req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb(group)))
                .with_session_timeout_ms(session_timeout_ms)
                .with_member_id(sb(&member))
                .with_protocol_type(sb(protocol_type))
                .with_protocols(
                    protocols
                        .iter()
                        .map(|(n, m)| {
                            JoinGroupRequestProtocol::default()
                                .with_name(sb(n))
                                .with_metadata(m.clone())
                        })
                        .collect(),
                );
            if v >= 1 {
                req.rebalance_timeout_ms = rebalance_timeout_ms;
            }
            let resp = conn.request(&req, v).await?;
            if resp.error_code == codes::MEMBER_ID_REQUIRED && member.is_empty() {
                member = resp.member_id.to_string();
                continue;
            }
            self.coordinator_check(group_err(resp.error_code, "JoinGroup", group, None), group)?;
            return Ok(JoinedGroup {
                generation: resp.generation_id,
                member_id: resp.member_id.to_string(),
                leader: resp.leader.to_string(),
                protocol_name: resp.protocol_name.as_ref().map(|p| p.to_string()),
                members: resp
                    .members
                    .iter()
                    .map(|m| GroupMember {
                        member_id: m.member_id.to_string(),
                        metadata: m.metadata.clone(),
                    })
                    .collect(),
            });
        }
        Err(ClientError::Kafka {
            code: codes::MEMBER_ID_REQUIRED,
            context: format!("JoinGroup {group}: member id required twice"),
            message: None,
        })
    }

    /// SyncGroup: the leader passes every member's assignment, followers pass none. Returns
    /// this member's assignment bytes.
    #[allow(clippy::too_many_arguments)]
    pub async fn sync_group(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        protocol_type: &str,
        protocol_name: &str,
        assignments: &[(String, Bytes)],
    ) -> Result<Bytes> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<SyncGroupRequest>(SYNC_GROUP_VERSION_CAP)?;
        let mut req = SyncGroupRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_generation_id(generation)
            .with_member_id(sb(member_id))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(m))
                            .with_assignment(a.clone())
                    })
                    .collect(),
            );
        if v >= 5 {
            req.protocol_type = Some(sb(protocol_type));
            req.protocol_name = Some(sb(protocol_name));
        }
        let resp = conn.request(&req, v).await?;
        self.coordinator_check(group_err(resp.error_code, "SyncGroup", group, None), group)?;
        Ok(resp.assignment)
    }

    /// Heartbeat. Errors to act on: 27 REBALANCE_IN_PROGRESS, 22 ILLEGAL_GENERATION, 25
    /// UNKNOWN_MEMBER_ID (rejoin).
    pub async fn heartbeat(&self, group: &str, generation: i32, member_id: &str) -> Result<()> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<HeartbeatRequest>(HEARTBEAT_VERSION_CAP)?;
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_generation_id(generation)
            .with_member_id(sb(member_id));
        let resp = conn.request(&req, v).await?;
        self.coordinator_check(group_err(resp.error_code, "Heartbeat", group, None), group)
    }

    /// Leaves the group.
    pub async fn leave_group(&self, group: &str, member_id: &str) -> Result<()> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<LeaveGroupRequest>(LEAVE_GROUP_VERSION_CAP)?;
        let mut req = LeaveGroupRequest::default().with_group_id(GroupId(sb(group)));
        if v >= 3 {
            req.members = vec![MemberIdentity::default().with_member_id(sb(member_id))];
        } else {
            req.member_id = sb(member_id);
        }
        let resp = conn.request(&req, v).await?;
        self.coordinator_check(group_err(resp.error_code, "LeaveGroup", group, None), group)?;
        for m in &resp.members {
            group_err(m.error_code, "LeaveGroup member of", group, None)?;
        }
        Ok(())
    }

    /// Commits offsets ((topic, partition, next offset to read)) for a member of generation
    /// `generation` (-1 and "" for a consumer without group management). The first
    /// partition error, if any, is returned.
    pub async fn offset_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        offsets: &[(String, i32, i64)],
    ) -> Result<()> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<OffsetCommitRequest>(OFFSET_COMMIT_VERSION_CAP)?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for (t, p, o) in offsets {
            let part = OffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            match topics.iter_mut().find(|x| x.name.0.as_str() == t.as_str()) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(sb(t)))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let mut req = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(topics);
        if v >= 1 {
            req.generation_id_or_member_epoch = generation;
            req.member_id = sb(member_id);
        }
        if (2..=4).contains(&v) {
            req.retention_time_ms = -1;
        }
        let resp = conn.request(&req, v).await?;
        for t in &resp.topics {
            for p in &t.partitions {
                self.coordinator_check(
                    check_code(
                        p.error_code,
                        || format!("OffsetCommit {group} {}/{}", t.name.0, p.partition_index),
                        None,
                    ),
                    group,
                )?;
            }
        }
        Ok(())
    }

    /// Fetches committed offsets of `group` for the given (topic, partitions), or for every
    /// partition it has committed when `topics` is None. Retry on Kafka 14
    /// COORDINATOR_LOAD_IN_PROGRESS.
    pub async fn offset_fetch(
        &self,
        group: &str,
        topics: Option<&[(&str, &[i32])]>,
    ) -> Result<Vec<CommittedPartition>> {
        let conn = self.coordinator_connection(group).await?;
        let v = conn.version_for::<OffsetFetchRequest>(OFFSET_FETCH_VERSION_CAP)?;
        if topics.is_none() && v < 2 {
            return Err(ClientError::InvalidArgument(
                "OffsetFetch of all topics needs v2+".into(),
            ));
        }
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(sb(t)))
                            .with_partition_indexes(ps.to_vec())
                    })
                    .collect()
            }));
        let resp = conn.request(&req, v).await?;
        if v >= 2 {
            self.coordinator_check(
                group_err(resp.error_code, "OffsetFetch", group, None),
                group,
            )?;
        }
        let mut out = Vec::new();
        for t in &resp.topics {
            let topic = t.name.0.to_string();
            for p in &t.partitions {
                out.push(CommittedPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    offset: check_code(
                        p.error_code,
                        || format!("OffsetFetch {group} {topic}/{}", p.partition_index),
                        None,
                    )
                    .map(|_| p.committed_offset),
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the consumer-protocol framing round-trips and starts with the version, as Java
    // clients expect.
    #[test]
    fn consumer_protocol_round_trips() {
        let s = encode_subscription(&["a".into(), "b".into()]).unwrap();
        assert_eq!(&s[..2], &SUBSCRIPTION_VERSION.to_be_bytes());
        assert_eq!(decode_subscription(s).unwrap(), vec!["a", "b"]);
        let mut a = Assignment::new();
        a.insert("t".into(), vec![0, 1]);
        let b = encode_assignment(&a).unwrap();
        assert_eq!(&b[..2], &ASSIGNMENT_VERSION.to_be_bytes());
        assert_eq!(decode_assignment(b).unwrap(), a);
        assert!(decode_assignment(Bytes::new()).unwrap().is_empty());
    }

    // Proves the range assignor gives contiguous ranges, the extra ones to the first members
    // by id, and an empty assignment to members beyond the partition count.
    #[test]
    fn range_assignor_matches_kafka() {
        let t = vec!["t".to_string()];
        let members = vec![
            ("m2".to_string(), t.clone()),
            ("m1".to_string(), t.clone()),
            ("m3".to_string(), t.clone()),
        ];
        let parts = BTreeMap::from([("t".to_string(), 5)]);
        let a = range_assign(&members, &parts);
        assert_eq!(a["m1"]["t"], vec![0, 1]);
        assert_eq!(a["m2"]["t"], vec![2, 3]);
        assert_eq!(a["m3"]["t"], vec![4]);
        let parts = BTreeMap::from([("t".to_string(), 2)]);
        let a = range_assign(&members, &parts);
        assert!(a["m3"].is_empty());
    }
}
