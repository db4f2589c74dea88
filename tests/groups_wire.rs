//! Black-box tests of consumer groups and committed offsets over the wire: each starts the
//! real binary (with a short group.initial.rebalance.delay.ms) and speaks the group APIs.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const DELAY_FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "100"];
const SESSION_MS: i32 = 6000;
/// Bound of retries while the coordinator loads after a start.
const LOAD_WAIT: Duration = Duration::from_secs(20);

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

struct Cluster {
    broker: Broker,
    _dir: tempfile::TempDir,
}

fn start(cores: usize) -> Cluster {
    let dir = tmpdir();
    let broker = Broker::start_in(dir.path(), cores, DELAY_FLAGS);
    create_topics(&broker);
    Cluster { broker, _dir: dir }
}

/// The topics the tests commit offsets for ("t", "t1", "t2", two partitions each): Kafka
/// answers a commit for a partition that does not exist with UNKNOWN_TOPIC_OR_PARTITION.
fn create_topics(broker: &Broker) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(
            ["t", "t1", "t2"]
                .iter()
                .map(|n| {
                    CreatableTopic::default()
                        .with_name(TopicName(s(n)))
                        .with_num_partitions(2)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    let r = broker.connect().request(&req, 7);
    assert!(r.topics.iter().all(|t| t.error_code == 0), "create topics");
}

fn coordinator(broker: &Broker, group: &str) -> i32 {
    let mut c = broker.connect();
    let r = c.request(
        &FindCoordinatorRequest::default()
            .with_key(s(group))
            .with_key_type(0),
        3,
    );
    assert_eq!(r.error_code, 0);
    r.node_id.0
}

fn coord_conn(broker: &Broker, group: &str) -> Conn {
    broker.connect_node(coordinator(broker, group) as usize)
}

fn join_req(
    group: &str,
    member: &str,
    protocol_type: &str,
    protos: &[(&str, &[u8])],
) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s(protocol_type))
        .with_protocols(
            protos
                .iter()
                .map(|(n, m)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(n))
                        .with_metadata(Bytes::copy_from_slice(m))
                })
                .collect(),
        )
}

/// JoinGroup v7, following MEMBER_ID_REQUIRED once and retrying while the coordinator loads.
fn join(conn: &mut Conn, group: &str, member: &str) -> JoinGroupResponse {
    let deadline = Instant::now() + LOAD_WAIT;
    let mut member = member.to_string();
    loop {
        let r = conn.request(&join_req(group, &member, "consumer", &[("range", b"m")]), 7);
        match r.error_code {
            79 => member = r.member_id.to_string(),
            14 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => return r,
        }
    }
}

fn sync(
    conn: &mut Conn,
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    conn.request(&sync_req(group, member, generation, assignments), 5)
}

fn sync_req(
    group: &str,
    member: &str,
    generation: i32,
    assignments: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

fn heartbeat(conn: &mut Conn, group: &str, member: &str, generation: i32) -> i16 {
    conn.request(
        &HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(generation)
            .with_member_id(s(member)),
        4,
    )
    .error_code
}

fn commit(
    conn: &mut Conn,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64, &str)],
) -> OffsetCommitResponse {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for (t, p, o, m) in offsets {
        let part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(Some(s(m)));
        match topics.iter_mut().find(|x| x.name.0.as_str() == *t) {
            Some(x) => x.partitions.push(part),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(t)))
                    .with_partitions(vec![part]),
            ),
        }
    }
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics);
    conn.request(&req, 8)
}

/// OffsetFetch v7 (null topics = all partitions); retries while the coordinator loads.
fn fetch_offsets(
    conn: &mut Conn,
    group: &str,
    topics: Option<&[(&str, &[i32])]>,
) -> OffsetFetchResponse {
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(t)))
                        .with_partition_indexes(ps.to_vec())
                })
                .collect()
        }));
    let deadline = Instant::now() + LOAD_WAIT;
    loop {
        let r = conn.request(&req, 7);
        if r.error_code == 14 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return r;
    }
}

/// (topic, partition, offset, metadata) of an OffsetFetch answer, sorted.
fn offsets_of(r: &OffsetFetchResponse) -> Vec<(String, i32, i64, String)> {
    let mut out: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

fn describe(
    conn: &mut Conn,
    group: &str,
    version: i16,
) -> describe_groups_response::DescribedGroup {
    let r = conn.request(
        &DescribeGroupsRequest::default().with_groups(vec![gid(group)]),
        version,
    );
    r.groups.into_iter().next().unwrap()
}

// Two members: the first forms generation 1 alone; a second join starts a rebalance that the
// first learns of through REBALANCE_IN_PROGRESS on heartbeat; both rejoin into generation 2,
// the leader gets both members' metadata and its assignment reaches the other member through
// SyncGroup; stale generations and unknown member ids are refused.
#[test]
fn two_members_join_sync_heartbeat_and_generation_bump() {
    let c = start(1);
    let g = "g-two";
    let mut a = coord_conn(&c.broker, g);
    let mut b = coord_conn(&c.broker, g);
    let ja = join(&mut a, g, "");
    assert_eq!(ja.error_code, 0);
    assert_eq!(ja.generation_id, 1);
    assert_eq!(ja.leader, ja.member_id, "the only member leads");
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    let ma = ja.member_id.to_string();
    let sa = sync(&mut a, g, &ma, 1, &[(&ma, b"all-to-a")]);
    assert_eq!(sa.error_code, 0);
    assert_eq!(&sa.assignment[..], b"all-to-a");
    assert_eq!(heartbeat(&mut a, g, &ma, 1), 0);

    // B joins (gets its id first, then its join waits for A to rejoin).
    let first = b.request(&join_req(g, "", "consumer", &[("range", b"mb")]), 7);
    assert_eq!(first.error_code, 79);
    let mb = first.member_id.to_string();
    let (corr_b, frame) = b.encode_request(&join_req(g, &mb, "consumer", &[("range", b"mb")]), 7);
    b.send_raw(&frame);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let code = heartbeat(&mut a, g, &ma, 1);
        if code == 27 {
            break;
        }
        assert_eq!(code, 0);
        assert!(
            Instant::now() < deadline,
            "heartbeat never reported the rebalance"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ja2 = join(&mut a, g, &ma);
    let jb2 = b.read_response::<JoinGroupRequest>(corr_b, 7);
    assert_eq!((ja2.error_code, jb2.error_code), (0, 0));
    assert_eq!(ja2.generation_id, 2);
    assert_eq!(jb2.generation_id, 2);
    assert_eq!(ja2.leader.as_str(), ma, "the leader stays");
    assert_eq!(ja2.members.len(), 2, "the leader sees every member");
    assert!(jb2.members.is_empty(), "followers get no member list");
    let meta_b = ja2
        .members
        .iter()
        .find(|m| m.member_id.as_str() == mb)
        .unwrap();
    assert_eq!(&meta_b.metadata[..], b"mb");

    // B's sync waits for the leader's assignment.
    let (corr_sb, frame) = b.encode_request(&sync_req(g, &mb, 2, &[]), 5);
    b.send_raw(&frame);
    let sa2 = sync(&mut a, g, &ma, 2, &[(&ma, b"p0"), (&mb, b"p1")]);
    let sb2 = b.read_response::<SyncGroupRequest>(corr_sb, 5);
    assert_eq!((sa2.error_code, sb2.error_code), (0, 0));
    assert_eq!(&sa2.assignment[..], b"p0");
    assert_eq!(&sb2.assignment[..], b"p1");
    assert_eq!(heartbeat(&mut b, g, &mb, 2), 0);
    assert_eq!(heartbeat(&mut a, g, &ma, 1), 22, "ILLEGAL_GENERATION");
    assert_eq!(heartbeat(&mut a, g, "nobody", 2), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(sync(&mut a, g, &ma, 1, &[]).error_code, 22);
    // A commit from a member of the current generation is accepted, a stale one is not.
    assert_eq!(
        commit(&mut a, g, 2, &ma, &[("t", 0, 5, "")]).topics[0].partitions[0].error_code,
        0
    );
    assert_eq!(
        commit(&mut a, g, 1, &ma, &[("t", 0, 6, "")]).topics[0].partitions[0].error_code,
        22
    );
    assert_eq!(
        commit(&mut a, g, 2, "nobody", &[("t", 0, 6, "")]).topics[0].partitions[0].error_code,
        25
    );
}

// JoinGroup v4+ with an empty member id answers MEMBER_ID_REQUIRED with an id to use; the
// rejoin with it succeeds. v3 (before KIP-394) gets an id and a generation in one go. Bad
// session timeouts and a mismatching protocol type are refused with Kafka's codes.
#[test]
fn member_id_required_and_join_errors() {
    let c = start(1);
    let g = "g-req";
    let mut conn = coord_conn(&c.broker, g);
    let deadline = Instant::now() + LOAD_WAIT;
    let first = loop {
        let r = conn.request(&join_req(g, "", "consumer", &[("range", b"m")]), 4);
        if r.error_code != 14 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    assert!(!first.member_id.is_empty());
    let second = conn.request(
        &join_req(g, &first.member_id, "consumer", &[("range", b"m")]),
        4,
    );
    assert_eq!(second.error_code, 0);
    assert_eq!(second.member_id, first.member_id);
    assert_eq!(second.generation_id, 1);

    let old = conn.request(&join_req("g-v3", "", "consumer", &[("range", b"m")]), 3);
    assert_eq!(old.error_code, 0);
    assert!(!old.member_id.is_empty());

    let mut bad = join_req("g-bad", "", "consumer", &[("range", b"m")]);
    bad.session_timeout_ms = 100;
    assert_eq!(
        conn.request(&bad, 7).error_code,
        26,
        "INVALID_SESSION_TIMEOUT"
    );
    // A different protocol type than the group's members speak.
    let r = conn.request(&join_req(g, "", "connect", &[("range", b"m")]), 3);
    assert_eq!(r.error_code, 23, "INCONSISTENT_GROUP_PROTOCOL");
    // No protocol in common with the current members.
    let r = conn.request(&join_req(g, "", "consumer", &[("sticky", b"m")]), 3);
    assert_eq!(r.error_code, 23);
    // Rejoin with an id the group never issued.
    let r = conn.request(&join_req(g, "made-up", "consumer", &[("range", b"m")]), 5);
    assert_eq!(r.error_code, 25, "UNKNOWN_MEMBER_ID");
    let r = conn.request(&join_req("", "", "consumer", &[("range", b"m")]), 5);
    assert_eq!(r.error_code, 24, "INVALID_GROUP_ID");
}

// A member that stops heartbeating is removed after its session timeout (6 s, Kafka's
// minimum): the remaining member sees REBALANCE_IN_PROGRESS, rejoins alone into the next
// generation, and DescribeGroups lists only it.
#[test]
fn session_timeout_expiry_removes_a_member() {
    let c = start(1);
    let g = "g-session";
    let mut a = coord_conn(&c.broker, g);
    let mut b = coord_conn(&c.broker, g);
    let ja = join(&mut a, g, "");
    let ma = ja.member_id.to_string();
    assert_eq!(sync(&mut a, g, &ma, 1, &[]).error_code, 0);
    let first = b.request(&join_req(g, "", "consumer", &[("range", b"mb")]), 7);
    let mb = first.member_id.to_string();
    let (corr_b, frame) = b.encode_request(&join_req(g, &mb, "consumer", &[("range", b"mb")]), 7);
    b.send_raw(&frame);
    std::thread::sleep(Duration::from_millis(300));
    let ja2 = join(&mut a, g, &ma);
    let jb2 = b.read_response::<JoinGroupRequest>(corr_b, 7);
    assert_eq!((ja2.generation_id, jb2.generation_id), (2, 2));
    let (corr_sb, frame) = b.encode_request(&sync_req(g, &mb, 2, &[]), 5);
    b.send_raw(&frame);
    assert_eq!(sync(&mut a, g, &ma, 2, &[]).error_code, 0);
    assert_eq!(
        b.read_response::<SyncGroupRequest>(corr_sb, 5).error_code,
        0
    );
    // Only A heartbeats from now on.
    let started = Instant::now();
    let mut saw_rebalance = false;
    while started.elapsed() < Duration::from_secs(15) {
        match heartbeat(&mut a, g, &ma, 2) {
            0 => std::thread::sleep(Duration::from_millis(500)),
            27 => {
                saw_rebalance = true;
                break;
            }
            other => panic!("unexpected heartbeat error {other}"),
        }
    }
    assert!(saw_rebalance, "B's expiry never started a rebalance");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "B expired too early"
    );
    let ja3 = join(&mut a, g, &ma);
    assert_eq!(ja3.error_code, 0);
    assert_eq!(ja3.generation_id, 3);
    assert_eq!(ja3.members.len(), 1);
    assert_eq!(
        heartbeat(&mut b, g, &mb, 2),
        25,
        "the expired member is unknown"
    );
    assert_eq!(sync(&mut a, g, &ma, 3, &[]).error_code, 0);
    let d = describe(&mut a, g, 5);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.members.len(), 1);
}

// With 2 shards, every group request sent to the shard that does not coordinate the group
// gets NOT_COORDINATOR; FindCoordinator (also the batched v4 form) names the right one, and
// the transaction key type is refused.
#[test]
fn not_coordinator_on_the_wrong_shard() {
    let c = start(2);
    // Two groups coordinated by different shards.
    let mut names = Vec::new();
    for i in 0.. {
        let g = format!("g-nc-{i}");
        let node = coordinator(&c.broker, &g);
        if !names.iter().any(|(_, n)| *n == node) {
            names.push((g, node));
        }
        if names.len() == 2 {
            break;
        }
    }
    let mut boot = c.broker.connect();
    let batched = boot.request(
        &FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(names.iter().map(|(g, _)| s(g)).collect()),
        4,
    );
    for (coord, (g, node)) in batched.coordinators.iter().zip(&names) {
        assert_eq!(coord.key.as_str(), g);
        assert_eq!(coord.node_id.0, *node);
        assert_eq!(coord.error_code, 0);
        assert_eq!(coord.port as u16, c.broker.nodes[*node as usize].port());
    }
    let txn = boot.request(
        &FindCoordinatorRequest::default()
            .with_key(s("txn"))
            .with_key_type(1),
        3,
    );
    assert_eq!(txn.error_code, 0, "a transaction coordinator is named");
    assert!(c.broker.nodes.iter().any(|n| n.port() == txn.port as u16));
    // Share groups (key type 2) are not served: a non-retriable error.
    let share = boot.request(
        &FindCoordinatorRequest::default()
            .with_key(s("share"))
            .with_key_type(2),
        3,
    );
    assert_eq!(share.error_code, 42);

    for (g, node) in &names {
        let wrong = 1 - *node as usize;
        let mut conn = c.broker.connect_node(wrong);
        let r = conn.request(&join_req(g, "", "consumer", &[("range", b"m")]), 7);
        assert_eq!(r.error_code, 16, "JoinGroup to the wrong shard");
        assert_eq!(heartbeat(&mut conn, g, "m", 1), 16);
        let r = conn.request(&sync_req(g, "m", 1, &[]), 5);
        assert_eq!(r.error_code, 16);
        let r = commit(&mut conn, g, -1, "", &[("t", 0, 1, "")]);
        assert_eq!(r.topics[0].partitions[0].error_code, 16);
        let r = conn.request(&OffsetFetchRequest::default().with_group_id(gid(g)), 7);
        assert_eq!(r.error_code, 16);
        assert_eq!(describe(&mut conn, g, 5).error_code, 16);
        // The right shard serves the same requests.
        let mut right = c.broker.connect_node(*node as usize);
        assert_eq!(join(&mut right, g, "").error_code, 0);
    }
}

// Simple-consumer commits (generation -1, no member id) are stored with their metadata and
// come back from OffsetFetch for listed partitions, for all partitions (null topics) and in
// the v8 batched form; unknown partitions read -1; oversized metadata fails only its own
// partition.
#[test]
fn offset_commit_fetch_roundtrip() {
    let c = start(1);
    let g = "g-offsets";
    let mut conn = coord_conn(&c.broker, g);
    fetch_offsets(&mut conn, g, None); // waits out the coordinator load
    let big = "x".repeat(5000);
    let r = commit(
        &mut conn,
        g,
        -1,
        "",
        &[
            ("t1", 0, 10, "m0"),
            ("t1", 1, 11, ""),
            ("t2", 0, 20, "two"),
            ("t2", 1, 21, &big),
        ],
    );
    let codes: Vec<i16> = r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    assert_eq!(
        codes,
        vec![0, 0, 0, 12],
        "OFFSET_METADATA_TOO_LARGE only for the big one"
    );
    let all = fetch_offsets(&mut conn, g, None);
    assert_eq!(all.error_code, 0);
    assert_eq!(
        offsets_of(&all),
        vec![
            ("t1".into(), 0, 10, "m0".into()),
            ("t1".into(), 1, 11, "".into()),
            ("t2".into(), 0, 20, "two".into()),
        ]
    );
    let some = fetch_offsets(&mut conn, g, Some(&[("t1", &[1, 7])]));
    assert_eq!(
        offsets_of(&some),
        vec![
            ("t1".into(), 1, 11, "".into()),
            ("t1".into(), 7, -1, "".into())
        ]
    );
    // A later commit overwrites.
    commit(&mut conn, g, -1, "", &[("t1", 0, 15, "later")]);
    let v1 = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(gid(g))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t1")))
                    .with_partition_indexes(vec![0]),
            ])),
        1,
    );
    assert_eq!(v1.topics[0].partitions[0].committed_offset, 15);
    assert_eq!(
        v1.topics[0].partitions[0].metadata.as_deref(),
        Some("later")
    );
    // v8: several groups in one request, one of them unknown.
    let v8 = conn.request(
        &OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid(g))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("t2")))
                        .with_partition_indexes(vec![0]),
                ])),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("g-none"))
                .with_topics(None),
        ]),
        8,
    );
    assert_eq!(v8.groups.len(), 2);
    assert_eq!(v8.groups[0].topics[0].partitions[0].committed_offset, 20);
    assert_eq!(
        v8.groups[0].topics[0].partitions[0].metadata.as_deref(),
        Some("two")
    );
    assert!(v8.groups[1].topics.is_empty() || v8.groups[1].error_code != 0);
    // A group with generation >= 0 that does not exist refuses the commit.
    let r = commit(&mut conn, "g-ghost", 3, "m", &[("t1", 0, 1, "")]);
    assert_eq!(r.topics[0].partitions[0].error_code, 22);
}

// DescribeGroups and ListGroups show a stable group with its member; DeleteGroups refuses a
// group with members (NON_EMPTY_GROUP), deletes it once the member left (batched LeaveGroup
// v3), and then reports GROUP_ID_NOT_FOUND; the deleted group's offsets are gone.
#[test]
fn describe_list_leave_delete() {
    let c = start(1);
    let g = "g-admin";
    let mut conn = coord_conn(&c.broker, g);
    let j = join(&mut conn, g, "");
    let m = j.member_id.to_string();
    assert_eq!(sync(&mut conn, g, &m, 1, &[(&m, b"asg")]).error_code, 0);
    assert_eq!(
        commit(&mut conn, g, 1, &m, &[("t", 0, 3, "")]).topics[0].partitions[0].error_code,
        0
    );
    let d = describe(&mut conn, g, 5);
    assert_eq!(d.error_code, 0);
    assert_eq!(d.group_state.as_str(), "Stable");
    assert_eq!(d.protocol_type.as_str(), "consumer");
    assert_eq!(d.protocol_data.as_str(), "range");
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id.as_str(), m);
    assert_eq!(d.members[0].client_id.as_str(), "osprey-test");
    assert_eq!(&d.members[0].member_assignment[..], b"asg");
    let l = conn.request(&ListGroupsRequest::default(), 4);
    let listed = l
        .groups
        .iter()
        .find(|x| x.group_id.as_str() == g)
        .expect("listed");
    assert_eq!(listed.group_state.as_str(), "Stable");
    assert_eq!(listed.protocol_type.as_str(), "consumer");
    let filtered = conn.request(
        &ListGroupsRequest::default().with_states_filter(vec![s("Empty")]),
        4,
    );
    assert!(filtered.groups.iter().all(|x| x.group_id.as_str() != g));

    let del = |conn: &mut Conn| {
        conn.request(
            &DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]),
            2,
        )
        .results[0]
            .error_code
    };
    assert_eq!(del(&mut conn), 68, "NON_EMPTY_GROUP");
    let leave = conn.request(
        &LeaveGroupRequest::default()
            .with_group_id(gid(g))
            .with_members(vec![
                MemberIdentity::default().with_member_id(s(&m)),
                MemberIdentity::default().with_member_id(s("nobody")),
            ]),
        3,
    );
    assert_eq!(leave.error_code, 0);
    assert_eq!(leave.members[0].error_code, 0);
    assert_eq!(leave.members[1].error_code, 25);
    assert_eq!(describe(&mut conn, g, 5).group_state.as_str(), "Empty");
    assert_eq!(del(&mut conn), 0);
    assert_eq!(del(&mut conn), 69, "GROUP_ID_NOT_FOUND");
    assert_eq!(describe(&mut conn, g, 5).group_state.as_str(), "Dead");
    assert_eq!(describe(&mut conn, g, 6).error_code, 69);
    assert!(offsets_of(&fetch_offsets(&mut conn, g, None)).is_empty());
}

// A static member (group.instance.id) that restarts and rejoins with an empty member id
// takes over its old entry without a rebalance (same generation); its old member id is then
// fenced (FENCED_INSTANCE_ID).
#[test]
fn static_member_rejoin_without_rebalance_and_fencing() {
    let c = start(1);
    let g = "g-static";
    let mut conn = coord_conn(&c.broker, g);
    let static_join = |conn: &mut Conn| {
        let deadline = Instant::now() + LOAD_WAIT;
        loop {
            let r = conn.request(
                &join_req(g, "", "consumer", &[("range", b"m")])
                    .with_group_instance_id(Some(s("instance-1"))),
                7,
            );
            if r.error_code != 14 || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = static_join(&mut conn);
    assert_eq!(
        first.error_code, 0,
        "static members need no MEMBER_ID_REQUIRED round"
    );
    assert_eq!(first.generation_id, 1);
    let old = first.member_id.to_string();
    assert_eq!(sync(&mut conn, g, &old, 1, &[(&old, b"a")]).error_code, 0);
    let again = static_join(&mut conn);
    assert_eq!(again.error_code, 0);
    assert_eq!(
        again.generation_id, 1,
        "no rebalance for a returning static member"
    );
    let new = again.member_id.to_string();
    assert_ne!(new, old);
    let hb = conn.request(
        &HeartbeatRequest::default()
            .with_group_id(gid(g))
            .with_generation_id(1)
            .with_member_id(s(&old))
            .with_group_instance_id(Some(s("instance-1"))),
        4,
    );
    assert_eq!(hb.error_code, 82, "FENCED_INSTANCE_ID");
    let sy = sync(&mut conn, g, &new, 1, &[]);
    assert_eq!(sy.error_code, 0);
    assert_eq!(&sy.assignment[..], b"a", "the assignment carries over");
    assert_eq!(describe(&mut conn, g, 5).members.len(), 1);
}

// Acknowledged commits survive kill -9, also when the shard count changes between runs
// (2 -> 1 -> 2 shards: groups move to another shard and back) and are still served by the
// group's new coordinator.
#[test]
fn committed_offsets_survive_kill_9_and_shard_count_changes() {
    let dir = tmpdir();
    let mut broker = Broker::start_in(dir.path(), 2, DELAY_FLAGS);
    create_topics(&broker);
    let groups: Vec<String> = (0..6).map(|i| format!("g-durable-{i}")).collect();
    let mut nodes = std::collections::HashSet::new();
    for (i, g) in groups.iter().enumerate() {
        nodes.insert(coordinator(&broker, g));
        let mut conn = coord_conn(&broker, g);
        fetch_offsets(&mut conn, g, None);
        let r = commit(
            &mut conn,
            g,
            -1,
            "",
            &[("t", 0, 100 + i as i64, "meta"), ("t", 1, 7, "")],
        );
        assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
    }
    assert_eq!(nodes.len(), 2, "the groups spread over both shards");
    let check = |broker: &Broker, delta: i64| {
        for (i, g) in groups.iter().enumerate() {
            let mut conn = coord_conn(broker, g);
            let r = fetch_offsets(&mut conn, g, None);
            assert_eq!(r.error_code, 0);
            assert_eq!(
                offsets_of(&r),
                vec![
                    ("t".into(), 0, 100 + i as i64 + delta, "meta".into()),
                    ("t".into(), 1, 7, "".into()),
                ],
                "group {g}"
            );
        }
    };
    broker.kill();
    let mut broker = Broker::start_in(dir.path(), 2, DELAY_FLAGS);
    check(&broker, 0);
    broker.kill();
    let mut broker1 = Broker::start_in(dir.path(), 1, DELAY_FLAGS);
    check(&broker1, 0);
    for (i, g) in groups.iter().enumerate() {
        let mut conn = coord_conn(&broker1, g);
        commit(&mut conn, g, -1, "", &[("t", 0, 1100 + i as i64, "meta")]);
    }
    broker1.kill();
    let broker2 = Broker::start_in(dir.path(), 2, DELAY_FLAGS);
    check(&broker2, 1000);
    drop(broker);
}

// With the default relative data directory (the README's start command) the group
// coordinator loads and offsets are committed and fetched back.
#[test]
fn default_relative_data_dir_serves_offset_commits() {
    let broker = Broker::start_default_dir(1);
    create_topics(&broker);
    let g = "g-rel";
    let mut conn = coord_conn(&broker, g);
    assert_eq!(fetch_offsets(&mut conn, g, None).error_code, 0);
    let r = commit(&mut conn, g, -1, "", &[("t", 0, 42, "m")]);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    assert_eq!(
        offsets_of(&fetch_offsets(&mut conn, g, None)),
        vec![("t".into(), 0, 42, "m".into())]
    );
}

// Offsets committed before the offsets topic existed (a per-shard snapshot under
// groups/shard-<k>/, also of a shard that no longer runs) are written into
// __consumer_offsets when their partitions load, the old directories go, and the offsets
// are still there after a kill -9 and restart.
#[test]
fn offsets_from_before_the_offsets_topic_are_imported() {
    use osprey::groups::offsets::{self, CommittedOffset, GroupOffsets, OffsetEntry, Snapshot};
    let dir = tmpdir();
    let legacy = |shard: usize, group: &str, offset: i64| {
        let snap = Snapshot {
            log_gen: 0,
            groups: vec![GroupOffsets {
                group: group.into(),
                deleted_stamp: 0,
                offsets: vec![OffsetEntry {
                    topic: "t".into(),
                    partition: 1,
                    value: CommittedOffset {
                        offset,
                        leader_epoch: -1,
                        metadata: "old".into(),
                        commit_ms: 1,
                        stamp: (3 << offsets::STAMP_SEQ_BITS) | 9,
                    },
                }],
            }],
        };
        let d = offsets::shard_dir(dir.path(), shard);
        std::fs::create_dir_all(&d).unwrap();
        offsets::write_snapshot(&d, &offsets::encode_snapshot(&snap).unwrap()).unwrap();
        d
    };
    let dirs = [legacy(0, "g-old-a", 555), legacy(3, "g-old-b", 777)];
    let mut broker = Broker::start_in(dir.path(), 2, DELAY_FLAGS);
    create_topics(&broker);
    let check = |broker: &Broker| {
        for (g, o) in [("g-old-a", 555), ("g-old-b", 777)] {
            let mut conn = coord_conn(broker, g);
            let r = fetch_offsets(&mut conn, g, None);
            assert_eq!(r.error_code, 0);
            assert_eq!(
                offsets_of(&r),
                vec![("t".into(), 1, o, "old".into())],
                "{g}"
            );
        }
    };
    check(&broker);
    let deadline = Instant::now() + LOAD_WAIT;
    while dirs.iter().any(|d| d.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "legacy directories removed"
    );
    // A commit now gets a stamp above the imported ones: it wins after a restart.
    let mut conn = coord_conn(&broker, "g-old-a");
    commit(&mut conn, "g-old-a", -1, "", &[("t", 1, 556, "new")]);
    broker.kill();
    let broker = Broker::start_in(dir.path(), 2, DELAY_FLAGS);
    let mut conn = coord_conn(&broker, "g-old-a");
    let r = fetch_offsets(&mut conn, "g-old-a", None);
    assert_eq!(offsets_of(&r), vec![("t".into(), 1, 556, "new".into())]);
    let mut conn = coord_conn(&broker, "g-old-b");
    let r = fetch_offsets(&mut conn, "g-old-b", None);
    assert_eq!(offsets_of(&r), vec![("t".into(), 1, 777, "old".into())]);
}

// The offsets topic is kept short: past --offsets-topic-rewrite-bytes of commits a
// partition's leader re-appends the current state and raises the log start past the old
// records; every group's latest offsets survive that and a kill -9 and restart.
#[test]
fn offsets_topic_is_rewritten_and_trimmed() {
    let dir = tmpdir();
    let flags = [DELAY_FLAGS, &["--offsets-topic-rewrite-bytes", "8192"]].concat();
    let mut broker = Broker::start_in(dir.path(), 1, &flags);
    create_topics(&broker);
    let groups: Vec<String> = (0..4).map(|i| format!("g-rw-{i}")).collect();
    let meta = "m".repeat(1000);
    let rounds = 60;
    for round in 0..rounds {
        for g in &groups {
            let mut conn = coord_conn(&broker, g);
            let r = commit(
                &mut conn,
                g,
                -1,
                "",
                &[("t", 0, round, &meta), ("t", 1, 1, "")],
            );
            assert!(r.topics[0].partitions.iter().all(|p| p.error_code == 0));
        }
    }
    // Every partition that took commits had its log start raised.
    let mut parts: Vec<i32> = groups
        .iter()
        .map(|g| osprey::groups::offsets_partition(g, 16))
        .collect();
    parts.sort();
    parts.dedup();
    let earliest = |broker: &Broker, p: i32| -> i64 {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let mut conn = leader_conn(broker, "__consumer_offsets", p);
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("__consumer_offsets"))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(-2),
                    ]),
            ]);
        let r = conn.request(&req, 4);
        assert_eq!(r.topics[0].partitions[0].error_code, 0);
        r.topics[0].partitions[0].offset
    };
    let deadline = Instant::now() + LOAD_WAIT;
    while parts.iter().any(|p| earliest(&broker, *p) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &parts {
        assert!(earliest(&broker, *p) > 0, "partition {p} trimmed");
    }
    let check = |broker: &Broker| {
        for g in &groups {
            let mut conn = coord_conn(broker, g);
            let r = fetch_offsets(&mut conn, g, None);
            assert_eq!(r.error_code, 0);
            assert_eq!(
                offsets_of(&r),
                vec![
                    ("t".into(), 0, rounds - 1, meta.clone()),
                    ("t".into(), 1, 1, "".into())
                ],
                "{g}"
            );
        }
    };
    check(&broker);
    broker.kill();
    let broker = Broker::start_in(dir.path(), 1, &flags);
    check(&broker);
}

// ---- The consumer group protocol (KIP-848) ----

/// Topic name -> id, from Metadata v12.
fn topic_ids(conn: &mut Conn) -> std::collections::HashMap<String, uuid::Uuid> {
    let md = conn.request(&MetadataRequest::default().with_topics(None), 12);
    md.topics
        .iter()
        .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.topic_id)))
        .collect()
}

type Owned = Vec<(uuid::Uuid, Vec<i32>)>;

/// ConsumerGroupHeartbeat v1; retries while the coordinator loads.
fn cg_heartbeat(
    conn: &mut Conn,
    group: &str,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
    owned: Option<&Owned>,
) -> ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(if epoch == 0 { 30_000 } else { -1 })
        .with_subscribed_topic_names(topics.map(|t| t.iter().map(|n| TopicName(s(n))).collect()))
        .with_topic_partitions(owned.map(|o| {
            o.iter()
                .map(|(id, ps)| {
                    TopicPartitions::default()
                        .with_topic_id(*id)
                        .with_partitions(ps.clone())
                })
                .collect()
        }));
    let deadline = Instant::now() + LOAD_WAIT;
    loop {
        let r = conn.request(&req, 1);
        if r.error_code == 14 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return r;
    }
}

fn assigned(r: &ConsumerGroupHeartbeatResponse) -> Option<Owned> {
    r.assignment.as_ref().map(|a| {
        a.topic_partitions
            .iter()
            .map(|t| (t.topic_id, t.partitions.clone()))
            .collect()
    })
}

fn count(o: &Option<Owned>) -> usize {
    o.as_ref()
        .map_or(0, |o| o.iter().map(|(_, p)| p.len()).sum())
}

#[test]
fn consumer_protocol_reconciliation_order_and_error_codes() {
    let c = start(1);
    let g = "g-kip848";
    let mut conn = coord_conn(&c.broker, g);
    let ids = topic_ids(&mut conn);
    let subs: &[&str] = &["t", "t1"];
    // a alone: all four partitions at epoch 1.
    let a = cg_heartbeat(&mut conn, g, "a", 0, Some(subs), Some(&vec![]));
    assert_eq!((a.error_code, a.member_epoch), (0, 1));
    assert_eq!(a.heartbeat_interval_ms, 5000);
    let a_all = assigned(&a);
    assert_eq!(count(&a_all), 4);
    // b joins: epoch 2, but nothing until a revoked.
    let b = cg_heartbeat(&mut conn, g, "b", 0, Some(subs), Some(&vec![]));
    assert_eq!(
        (b.error_code, b.member_epoch, count(&assigned(&b))),
        (0, 2, 0)
    );
    let a2 = cg_heartbeat(&mut conn, g, "a", 1, None, a_all.as_ref());
    assert_eq!((a2.error_code, a2.member_epoch), (0, 1));
    let a_kept = assigned(&a2);
    assert_eq!(count(&a_kept), 2, "a is asked to give up two");
    let b2 = cg_heartbeat(&mut conn, g, "b", 2, None, Some(&vec![]));
    assert_eq!(
        count(&assigned(&b2)),
        0,
        "not before a acknowledged the revocation"
    );
    // a acknowledges (owns only what it kept): epoch 2; then b gets the other two.
    let a3 = cg_heartbeat(&mut conn, g, "a", 1, None, a_kept.as_ref());
    assert_eq!((a3.error_code, a3.member_epoch), (0, 2));
    let b3 = cg_heartbeat(&mut conn, g, "b", 2, None, Some(&vec![]));
    let b_got = assigned(&b3);
    assert_eq!(count(&b_got), 2);
    let flat = |o: &Option<Owned>| -> Vec<(uuid::Uuid, i32)> {
        o.iter()
            .flatten()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect()
    };
    assert!(flat(&a_kept).iter().all(|x| !flat(&b_got).contains(x)));
    assert!(ids.contains_key("t"));

    // Error codes.
    assert_eq!(
        cg_heartbeat(&mut conn, g, "a", 7, None, None).error_code,
        110
    );
    assert_eq!(
        cg_heartbeat(&mut conn, g, "zz", 3, None, None).error_code,
        25
    );
    assert_eq!(
        cg_heartbeat(&mut conn, g, "", 0, Some(subs), None).error_code,
        42
    );
    let bad_assignor = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid(g))
        .with_member_id(s("c"))
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_server_assignor(Some(s("nope")));
    assert_eq!(conn.request(&bad_assignor, 1).error_code, 112);
    // Commits carry the member epoch (v9): stale, current, and an old version.
    let stale = commit_v(&mut conn, g, 1, "a", 9);
    assert_eq!(stale, 113);
    assert_eq!(commit_v(&mut conn, g, 2, "a", 9), 0);
    assert_eq!(commit_v(&mut conn, g, 2, "a", 8), 35);
    assert_eq!(commit_v(&mut conn, g, 2, "nobody", 9), 25);
    // A classic member cannot join; DescribeGroups does not see a classic group.
    let j = conn.request(&join_req(g, "", "consumer", &[("range", b"m")]), 7);
    assert_eq!(j.error_code, 23);
    assert_eq!(describe(&mut conn, g, 6).error_code, 69);
    let d = conn.request(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(g)]),
        1,
    );
    let dg = &d.groups[0];
    assert_eq!(dg.error_code, 0);
    assert_eq!(dg.group_state.as_str(), "Stable");
    assert_eq!((dg.group_epoch, dg.assignment_epoch), (2, 2));
    assert_eq!(dg.assignor_name.as_str(), "uniform");
    assert_eq!(dg.members.len(), 2);
    let mut types = |t: &str| {
        conn.request(
            &ListGroupsRequest::default().with_types_filter(vec![s(t)]),
            5,
        )
        .groups
        .iter()
        .filter(|l| l.group_id.0.as_str() == g)
        .map(|l| l.group_type.to_string())
        .collect::<Vec<_>>()
    };
    assert_eq!(types("consumer"), vec!["consumer".to_string()]);
    assert!(types("classic").is_empty());
    let del = conn.request(
        &DeleteGroupsRequest::default().with_groups_names(vec![gid(g)]),
        2,
    );
    assert_eq!(del.results[0].error_code, 68);
    // OffsetFetch v9 names the member: checked against its epoch.
    let fetch = |conn: &mut Conn, member: Option<&str>, epoch: i32| {
        let r = conn.request(
            &OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(gid(g))
                    .with_member_id(member.map(s))
                    .with_member_epoch(epoch)
                    .with_topics(None),
            ]),
            9,
        );
        r.groups[0].error_code
    };
    assert_eq!(fetch(&mut conn, Some("a"), 2), 0);
    assert_eq!(fetch(&mut conn, Some("a"), 1), 113);
    assert_eq!(fetch(&mut conn, Some("nobody"), 2), 25);
    assert_eq!(fetch(&mut conn, None, -1), 0);
    // OffsetDelete of a topic the members subscribe to.
    let od = conn.request(
        &OffsetDeleteRequest::default()
            .with_group_id(gid(g))
            .with_topics(
                [offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default(),
                    ])]
                .into_iter()
                .collect(),
            ),
        0,
    );
    assert_eq!(od.error_code, 0);
    assert_eq!(od.topics[0].partitions[0].error_code, 86);
    // v0: a member joining without an id gets one from the coordinator.
    let v0 = conn.request(
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(gid("g-kip848-v0"))
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t2"))])),
        0,
    );
    assert_eq!(v0.error_code, 0);
    assert!(!v0.member_id.as_ref().unwrap().is_empty());
    assert_eq!(v0.member_epoch, 1);
    // Leaving.
    let left = cg_heartbeat(&mut conn, g, "a", -1, None, None);
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    assert_eq!(
        cg_heartbeat(&mut conn, g, "a", -1, None, None).error_code,
        25
    );
    // b takes everything once it reconciles (a left: its partitions are free).
    let b4 = cg_heartbeat(&mut conn, g, "b", 2, None, b_got.as_ref());
    assert_eq!(
        (b4.error_code, b4.member_epoch, count(&assigned(&b4))),
        (0, 3, 4)
    );

    // ConsumerGroupDescribe of a classic group, and a heartbeat into a live classic group.
    let classic = "g-classic-live";
    let mut cc = coord_conn(&c.broker, classic);
    assert_eq!(join(&mut cc, classic, "").error_code, 0);
    let d = cc.request(
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid(classic)]),
        0,
    );
    assert_eq!(d.groups[0].error_code, 69);
    assert_eq!(
        cg_heartbeat(&mut cc, classic, "x", 0, Some(subs), None).error_code,
        69
    );
}

/// OffsetCommit of `t`-0 at `version` with this member id and epoch: its error code.
fn commit_v(conn: &mut Conn, group: &str, epoch: i32, member: &str, version: i16) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(epoch)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)
                        .with_committed_leader_epoch(-1),
                ]),
        ]);
    conn.request(&req, version).topics[0].partitions[0].error_code
}
