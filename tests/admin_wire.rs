//! Black-box tests of the admin APIs: AlterConfigs and IncrementalAlterConfigs (topic and
//! broker resources, through the controller quorum), DeleteRecords, OffsetDelete and
//! DescribeLogDirs. Each starts the real binary and speaks Kafka bytes.

mod common;

use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::records::Compression;

fn create_topic(conn: &mut Conn, topic: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    assert_eq!(conn.request(&req, 7).topics[0].error_code, 0);
}

fn leader(broker: &Broker, topic: &str, partition: i32) -> usize {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic))),
        ]))
        .with_allow_auto_topic_creation(false);
    let md = broker.connect().request(&req, 12);
    md.topics[0].partitions[partition as usize].leader_id.0 as usize
}

fn produce(conn: &mut Conn, topic: &str, partition: i32, n: usize) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(batch(n, 100, Compression::None))),
                ]),
        ]);
    let r = conn.request(&req, 9);
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    p.base_offset
}

/// The topic's configs as DescribeConfigs v4 reports them: (name, value, source).
fn topic_configs(conn: &mut Conn, topic: &str) -> Vec<(String, String, i8)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(s(topic)),
    ]);
    let r = conn.request(&req, 4);
    assert_eq!(r.results[0].error_code, 0);
    r.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                c.value.as_deref().unwrap_or("").to_string(),
                c.config_source,
            )
        })
        .collect()
}

fn config_of(conn: &mut Conn, topic: &str, key: &str) -> (String, i8) {
    topic_configs(conn, topic)
        .into_iter()
        .find(|(n, ..)| n == key)
        .map(|(_, v, src)| (v, src))
        .unwrap()
}

/// (resource type, resource name, [(config, operation, value)]) of IncrementalAlterConfigs.
type IncrementalResource<'a> = (i8, &'a str, Vec<(&'a str, i8, Option<&'a str>)>);
/// (resource type, resource name, [(config, value)]) of AlterConfigs.
type LegacyResource<'a> = (i8, &'a str, Vec<(&'a str, &'a str)>);

const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

fn incremental(
    conn: &mut Conn,
    resources: Vec<IncrementalResource>,
    validate_only: bool,
    version: i16,
) -> Vec<i16> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    let req = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(
            resources
                .into_iter()
                .map(|(kind, n, ops)| {
                    AlterConfigsResource::default()
                        .with_resource_type(kind)
                        .with_resource_name(s(n))
                        .with_configs(
                            ops.into_iter()
                                .map(|(k, op, v)| {
                                    AlterableConfig::default()
                                        .with_name(s(k))
                                        .with_config_operation(op)
                                        .with_value(v.map(s))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    conn.request(&req, version)
        .responses
        .iter()
        .map(|r| r.error_code)
        .collect()
}

fn legacy(conn: &mut Conn, resources: Vec<LegacyResource>, version: i16) -> Vec<i16> {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let req = AlterConfigsRequest::default().with_resources(
        resources
            .into_iter()
            .map(|(kind, n, cfgs)| {
                AlterConfigsResource::default()
                    .with_resource_type(kind)
                    .with_resource_name(s(n))
                    .with_configs(
                        cfgs.into_iter()
                            .map(|(k, v)| {
                                AlterableConfig::default()
                                    .with_name(s(k))
                                    .with_value(Some(s(v)))
                            })
                            .collect(),
                    )
            })
            .collect(),
    );
    conn.request(&req, version)
        .responses
        .iter()
        .map(|r| r.error_code)
        .collect()
}

// IncrementalAlterConfigs and AlterConfigs change topic configs through the quorum (the
// next DescribeConfigs, on any node, shows them as DYNAMIC_TOPIC_CONFIG), validate_only
// changes nothing, bad values are INVALID_CONFIG with nothing applied, and broker
// resources (osprey has no dynamic broker configs) are INVALID_REQUEST.
#[test]
fn alter_configs_through_the_quorum() {
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    create_topic(&mut conn, "ac", 2);
    let (_, src) = config_of(&mut conn, "ac", "retention.ms");
    assert_eq!(src, DEFAULT_CONFIG);
    for version in [0, 1] {
        // validate_only: accepted, not applied.
        let r = incremental(
            &mut conn,
            vec![(2, "ac", vec![("retention.ms", 0, Some("1234"))])],
            true,
            version,
        );
        assert_eq!(r, vec![0]);
        assert_eq!(config_of(&mut conn, "ac", "retention.ms").1, DEFAULT_CONFIG);
    }
    let r = incremental(
        &mut conn,
        vec![
            (
                2,
                "ac",
                vec![
                    ("retention.ms", 0, Some("1234")),
                    ("segment.bytes", 0, Some("1048576")),
                ],
            ),
            (2, "nope", vec![("retention.ms", 0, Some("1"))]),
            (2, "ac2", vec![]),
        ],
        false,
        1,
    );
    assert_eq!(r, vec![0, 3, 3]);
    // Every node (shard) sees it at once.
    for node in 0..2 {
        let mut c = broker.connect_node(node);
        assert_eq!(
            config_of(&mut c, "ac", "retention.ms"),
            ("1234".into(), DYNAMIC_TOPIC_CONFIG)
        );
    }
    // Bad value, unknown name, APPEND on a non-list config, unknown op: nothing applied.
    let bad = incremental(
        &mut conn,
        vec![(
            2,
            "ac",
            vec![
                ("retention.ms", 0, Some("5")),
                ("segment.bytes", 0, Some("x")),
            ],
        )],
        false,
        1,
    );
    assert_eq!(bad, vec![40]);
    assert_eq!(config_of(&mut conn, "ac", "retention.ms").0, "1234");
    assert_eq!(
        incremental(
            &mut conn,
            vec![(2, "ac", vec![("no.such", 0, Some("1"))])],
            false,
            1
        ),
        vec![40]
    );
    assert_eq!(
        incremental(
            &mut conn,
            vec![(2, "ac", vec![("retention.ms", 2, Some("1"))])],
            false,
            1
        ),
        vec![40]
    );
    assert_eq!(
        incremental(
            &mut conn,
            vec![(2, "ac", vec![("retention.ms", 9, Some("1"))])],
            false,
            1
        ),
        vec![42]
    );
    // SET without a value, the same key twice, the same resource twice: INVALID_REQUEST.
    assert_eq!(
        incremental(
            &mut conn,
            vec![(2, "ac", vec![("retention.ms", 0, None)])],
            false,
            1
        ),
        vec![42]
    );
    assert_eq!(
        incremental(
            &mut conn,
            vec![(
                2,
                "ac",
                vec![("retention.ms", 0, Some("1")), ("retention.ms", 1, None)]
            )],
            false,
            1
        ),
        vec![42]
    );
    assert_eq!(
        incremental(
            &mut conn,
            vec![(2, "ac", vec![]), (2, "ac", vec![])],
            false,
            1
        ),
        vec![42, 42]
    );
    // DELETE returns a config to its default; APPEND on the list config cleanup.policy.
    assert_eq!(
        incremental(
            &mut conn,
            vec![(
                2,
                "ac",
                vec![
                    ("retention.ms", 1, None),
                    ("cleanup.policy", 2, Some("delete"))
                ]
            )],
            false,
            0
        ),
        vec![0]
    );
    assert_eq!(config_of(&mut conn, "ac", "retention.ms").1, DEFAULT_CONFIG);
    assert_eq!(
        config_of(&mut conn, "ac", "cleanup.policy"),
        ("delete".into(), DYNAMIC_TOPIC_CONFIG)
    );
    // The legacy API replaces every override: segment.bytes and cleanup.policy go.
    for version in [0, 1, 2] {
        assert_eq!(
            legacy(
                &mut conn,
                vec![(2, "ac", vec![("flush.ms", "500")])],
                version
            ),
            vec![0]
        );
    }
    let overrides: Vec<String> = topic_configs(&mut conn, "ac")
        .into_iter()
        .filter(|(.., src)| *src == DYNAMIC_TOPIC_CONFIG)
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(overrides, vec!["flush.ms".to_string()]);
    assert_eq!(
        legacy(&mut conn, vec![(2, "ac", vec![("flush.ms", "-5")])], 2),
        vec![40]
    );
    // Broker resources: nothing is dynamic; an empty change is fine; another host's node
    // and other resource types are INVALID_REQUEST.
    assert_eq!(
        incremental(
            &mut conn,
            vec![
                (4, "0", vec![("log.retention.ms", 0, Some("1"))]),
                (4, "", vec![]),
                (4, "5000", vec![]),
                (8, "0", vec![("root", 0, Some("DEBUG"))]),
            ],
            false,
            1
        ),
        vec![42, 0, 42, 42]
    );
    assert_eq!(
        legacy(&mut conn, vec![(4, "1", vec![("num.partitions", "3")])], 1),
        vec![42]
    );
}

fn delete_records(conn: &mut Conn, topic: &str, offsets: &[(i32, i64)]) -> Vec<(i16, i64)> {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let req = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(topic))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            DeleteRecordsPartition::default()
                                .with_partition_index(*p)
                                .with_offset(*o)
                        })
                        .collect(),
                ),
        ]);
    conn.request(&req, 2).topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.low_watermark))
        .collect()
}

fn earliest(conn: &mut Conn, topic: &str, partition: i32) -> i64 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(-2),
                ]),
        ]);
    let r = conn.request(&req, 7);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    r.topics[0].partitions[0].offset
}

fn fetch_error(conn: &mut Conn, topic: &str, offset: i64) -> (i16, i64) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let r = conn.request(&req, 11);
    let p = &r.responses[0].partitions[0];
    (p.error_code, p.log_start_offset)
}

// DeleteRecords raises the log start offset (ListOffsets earliest and Fetch follow it; a
// fetch below it is OFFSET_OUT_OF_RANGE), -1 means the high watermark, beyond it is
// OFFSET_OUT_OF_RANGE, a request on another node is forwarded to the leader's shard, and
// the new start survives a restart.
#[test]
fn delete_records_raises_the_log_start() {
    let dir = tmpdir();
    let mut broker = Broker::start_in(dir.path(), 2, &[]);
    create_topic(&mut broker.connect(), "dr", 1);
    let node = leader(&broker, "dr", 0);
    let mut conn = broker.connect_node(node);
    for _ in 0..5 {
        produce(&mut conn, "dr", 0, 10);
    }
    assert_eq!(delete_records(&mut conn, "dr", &[(0, 51)]), vec![(1, -1)]);
    assert_eq!(delete_records(&mut conn, "dr", &[(0, -7)]), vec![(1, -1)]);
    assert_eq!(delete_records(&mut conn, "dr", &[(0, 25)]), vec![(0, 25)]);
    assert_eq!(earliest(&mut conn, "dr", 0), 25);
    assert_eq!(fetch_error(&mut conn, "dr", 10).0, 1);
    assert_eq!(fetch_error(&mut conn, "dr", 25), (0, 25));
    // A lower offset changes nothing; through the other node it is forwarded.
    let mut other = broker.connect_node(1 - node);
    assert_eq!(delete_records(&mut other, "dr", &[(0, 3)]), vec![(0, 25)]);
    assert_eq!(
        delete_records(&mut other, "dr", &[(0, -1), (7, 1)]),
        vec![(0, 50), (3, -1)]
    );
    assert_eq!(earliest(&mut conn, "dr", 0), 50);
    broker.stop();
    let broker = Broker::start_in(dir.path(), 2, &[]);
    let node = leader(&broker, "dr", 0);
    let mut conn = broker.connect_node(node);
    assert_eq!(earliest(&mut conn, "dr", 0), 50);
    assert_eq!(produce(&mut conn, "dr", 0, 1), 50);
    assert_eq!(fetch_error(&mut conn, "dr", 49).0, 1);
}

fn commit(conn: &mut Conn, group: &str, offsets: &[(&str, i32, i64)]) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(s(""))
        .with_topics(
            offsets
                .iter()
                .map(|(t, p, o)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(name(t))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                                .with_committed_leader_epoch(-1),
                        ])
                })
                .collect(),
        );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = conn.request(&req, 8);
        let codes: Vec<i16> = r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect();
        if codes.contains(&14) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
        return;
    }
}

fn committed(conn: &mut Conn, group: &str) -> Vec<(String, i32, i64)> {
    let r = conn.request(
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None),
        7,
    );
    assert_eq!(r.error_code, 0);
    let mut out: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
        })
        .filter(|x| x.2 >= 0)
        .collect();
    out.sort();
    out
}

fn offset_delete(conn: &mut Conn, group: &str, parts: &[(&str, i32)]) -> (i16, Vec<i16>) {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let req = OffsetDeleteRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(
            parts
                .iter()
                .map(|(t, p)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(name(t))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(*p),
                        ])
                })
                .collect(),
        );
    let r = conn.request(&req, 0);
    (
        r.error_code,
        r.topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
            .collect(),
    )
}

// OffsetDelete on an empty group removes exactly the named partitions' offsets (durably:
// still gone after a restart); unknown partitions are UNKNOWN_TOPIC_OR_PARTITION, an
// unknown group GROUP_ID_NOT_FOUND, another node NOT_COORDINATOR.
#[test]
fn offset_delete_on_an_empty_group() {
    let dir = tmpdir();
    let mut broker = Broker::start_in(dir.path(), 2, &[]);
    create_topic(&mut broker.connect(), "od", 2);
    let mut conn = coord_conn(&broker, "g-od");
    commit(&mut conn, "g-od", &[("od", 0, 5), ("od", 1, 7)]);
    assert_eq!(
        offset_delete(&mut conn, "g-od", &[("od", 0), ("od", 9), ("nope", 0)]),
        (0, vec![0, 3, 3])
    );
    assert_eq!(committed(&mut conn, "g-od"), vec![("od".into(), 1, 7)]);
    assert_eq!(
        offset_delete(&mut conn, "no-such-group", &[("od", 0)]).0,
        69
    );
    let coord = {
        let r = broker.connect().request(
            &FindCoordinatorRequest::default()
                .with_key(s("g-od"))
                .with_key_type(0),
            3,
        );
        r.node_id.0 as usize
    };
    let mut other = broker.connect_node(1 - coord);
    assert_eq!(offset_delete(&mut other, "g-od", &[("od", 1)]).0, 16);
    broker.stop();
    let broker = Broker::start_in(dir.path(), 2, &[]);
    let mut conn = coord_conn(&broker, "g-od");
    // Wait out COORDINATOR_LOAD_IN_PROGRESS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while offset_delete(&mut conn, "g-od", &[]).0 == 14 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(committed(&mut conn, "g-od"), vec![("od".into(), 1, 7)]);
}

// DescribeLogDirs answers one log dir (the data directory) per node with the replicas
// that node holds and their sizes; a topic filter narrows it.
#[test]
fn describe_log_dirs_lists_each_nodes_replicas() {
    let dir = tmpdir();
    let broker = Broker::start_in(dir.path(), 2, &[]);
    create_topic(&mut broker.connect(), "ld", 4);
    let node = leader(&broker, "ld", 0);
    produce(&mut broker.connect_node(node), "ld", 0, 20);
    let mut seen = Vec::new();
    for n in 0..2 {
        let mut c = broker.connect_node(n);
        for version in [1, 4] {
            let r = c.request(
                &DescribeLogDirsRequest::default().with_topics(None),
                version,
            );
            assert_eq!(r.results.len(), 1);
            let d = &r.results[0];
            assert_eq!(d.error_code, 0);
            assert_eq!(
                std::path::Path::new(d.log_dir.as_str()),
                std::path::absolute(dir.path()).unwrap()
            );
            if version == 4 {
                assert!(d.total_bytes > 0 && d.usable_bytes > 0);
            }
            for t in d.topics.iter().filter(|t| t.name.0.as_str() == "ld") {
                for p in &t.partitions {
                    if version == 4 {
                        seen.push((p.partition_index, n));
                    }
                    if p.partition_index == 0 {
                        assert!(p.partition_size > 0);
                    }
                }
            }
        }
    }
    seen.sort();
    let expected: Vec<(i32, usize)> = (0..4).map(|p| (p, leader(&broker, "ld", p))).collect();
    assert_eq!(seen, expected);
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
        DescribableLogDirTopic::default()
            .with_topic(name("ld"))
            .with_partitions(vec![0]),
    ]));
    let r = broker.connect_node(node).request(&req, 2);
    let topics: Vec<(String, Vec<i32>)> = r.results[0]
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    assert_eq!(topics, vec![("ld".to_string(), vec![0])]);
}

/// The node coordinating transactional id `id` (FindCoordinator key type 1), retried
/// while the transaction-state topic is created and loaded.
fn txn_coordinator(broker: &Broker, id: &str) -> usize {
    for _ in 0..200 {
        let r = broker.connect().request(
            &FindCoordinatorRequest::default()
                .with_key(s(id))
                .with_key_type(1),
            3,
        );
        if r.error_code == 0 {
            return r.node_id.0 as usize;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no transaction coordinator for {id}");
}

// Proves DescribeTransactions' error paths as Kafka: the coordinator of an id it never saw
// answers TRANSACTIONAL_ID_NOT_FOUND, any other node NOT_COORDINATOR; ListTransactions
// returns unknown state filters and lists nothing for them; DescribeProducers answers
// UNKNOWN_TOPIC_OR_PARTITION for a missing partition and an empty list for a partition
// with no producers.
#[test]
fn transaction_admin_error_paths() {
    let broker = Broker::start(2);
    let id = "never-used-txn";
    let coord = txn_coordinator(&broker, id);
    let other = 1 - coord;
    let req =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let mut deadline = 0;
    let code = loop {
        let r = broker.connect_node(coord).request(&req, 0);
        let code = r.transaction_states[0].error_code;
        deadline += 1;
        if code != 14 || deadline > 200 {
            break code;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(code, 105, "TRANSACTIONAL_ID_NOT_FOUND on the coordinator");
    let r = broker.connect_node(other).request(&req, 0);
    assert_eq!(
        r.transaction_states[0].error_code, 16,
        "NOT_COORDINATOR elsewhere"
    );

    let r = broker.connect_node(coord).request(
        &ListTransactionsRequest::default().with_state_filters(vec![s("Bogus")]),
        1,
    );
    assert_eq!(r.error_code, 0);
    assert_eq!(r.unknown_state_filters, vec![s("Bogus")]);
    assert!(r.transaction_states.is_empty());

    let mut conn = broker.connect();
    create_topic(&mut conn, "dp", 1);
    let mut leader = broker.connect_node(leader(&broker, "dp", 0));
    let r = leader.request(
        &DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(name("dp"))
                .with_partition_indexes(vec![0, 5]),
        ]),
        0,
    );
    let parts = &r.topics[0].partitions;
    assert_eq!(
        (parts[0].error_code, parts[0].active_producers.len()),
        (0, 0)
    );
    assert_eq!(parts[1].error_code, 3);
}

/// One DescribeTopicPartitions page: (topic, error, partitions) and the next cursor.
type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

fn describe_partitions(
    conn: &mut Conn,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> Page {
    use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    let r = conn.request(&req, 0);
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let n = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            let ps = t.partitions.iter().map(|p| p.partition_index).collect();
            (n, t.error_code, ps)
        })
        .collect();
    let next = r
        .next_cursor
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    (topics, next)
}

// Proves DescribeTopicPartitions pages as KIP-966: topics sorted by name, at most the
// requested partitions per answer, a cursor naming where the next page starts (inside a
// topic or at the next one), unknown topics answered UNKNOWN_TOPIC_OR_PARTITION, and a
// cursor on a topic not asked for refused with INVALID_REQUEST.
#[test]
fn describe_topic_partitions_pages_with_a_cursor() {
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    create_topic(&mut conn, "dtp-a", 3);
    create_topic(&mut conn, "dtp-b", 2);
    let topics = ["dtp-b", "dtp-a", "dtp-zz"];
    let page = describe_partitions(&mut conn, &topics, 2, None);
    assert_eq!(
        page,
        (
            vec![("dtp-a".into(), 0, vec![0, 1])],
            Some(("dtp-a".into(), 2))
        )
    );
    let page = describe_partitions(&mut conn, &topics, 2, Some(("dtp-a", 2)));
    assert_eq!(
        page,
        (
            vec![("dtp-a".into(), 0, vec![2]), ("dtp-b".into(), 0, vec![0])],
            Some(("dtp-b".into(), 1))
        )
    );
    let page = describe_partitions(&mut conn, &topics, 2, Some(("dtp-b", 1)));
    assert_eq!(
        page,
        (
            vec![("dtp-b".into(), 0, vec![1]), ("dtp-zz".into(), 3, vec![])],
            None
        )
    );
    // Without a limit problem: everything in one answer.
    let page = describe_partitions(&mut conn, &["dtp-a", "dtp-b"], 2000, None);
    assert_eq!(
        page,
        (
            vec![
                ("dtp-a".into(), 0, vec![0, 1, 2]),
                ("dtp-b".into(), 0, vec![0, 1])
            ],
            None
        )
    );
    let page = describe_partitions(&mut conn, &["dtp-a"], 10, Some(("dtp-b", 0)));
    assert_eq!(page, (vec![("dtp-a".into(), 42, vec![])], None));
}

// ElectLeaders on one host (every partition led by its only, preferred replica): asked for
// every partition (null), nothing needed an election and nothing is listed; asked for
// partitions, each answers ELECTION_NOT_NEEDED (preferred, v0 and v2; unclean: the leader
// is alive) and an unknown one UNKNOWN_TOPIC_OR_PARTITION; an unknown election type is
// INVALID_REQUEST at the top level.
#[test]
fn elect_leaders_answers_per_partition() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    create_topic(&mut conn, "el", 3);
    let all = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(10_000);
    let r = conn.request(&all, 2);
    assert_eq!(r.error_code, 0);
    assert!(r.replica_election_results.is_empty(), "{r:?}");
    let asked = |t: i8| {
        ElectLeadersRequest::default()
            .with_election_type(t)
            .with_timeout_ms(10_000)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default()
                    .with_topic(name("el"))
                    .with_partitions(vec![0, 1, 2, 3]),
                TopicPartitions::default()
                    .with_topic(name("nope"))
                    .with_partitions(vec![0]),
            ]))
    };
    for (t, v) in [(0, 0), (0, 2), (1, 1), (1, 2)] {
        let r = conn.request(&asked(t), v);
        assert_eq!(r.error_code, 0, "type {t} v{v}");
        let codes: Vec<(String, i32, i16)> = r
            .replica_election_results
            .iter()
            .flat_map(|t| {
                t.partition_result
                    .iter()
                    .map(|p| (t.topic.0.to_string(), p.partition_id, p.error_code))
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ("el".into(), 0, 84),
                ("el".into(), 1, 84),
                ("el".into(), 2, 84),
                ("el".into(), 3, 3),
                ("nope".into(), 0, 3),
            ],
            "type {t} v{v}"
        );
    }
    let r = conn.request(&asked(5), 2);
    assert_eq!(r.error_code, 42);
    assert!(
        r.replica_election_results
            .iter()
            .flat_map(|t| &t.partition_result)
            .all(|p| p.error_code == 42)
    );
}

// DescribeQuorum on one host (a quorum of one voter): v0-v2 name this host the leader with
// its log end at the high watermark; v2 lists no controller endpoint (a one-host
// controller has no listener); a partition other
// than `__cluster_metadata`-0 is UNKNOWN_TOPIC_OR_PARTITION.
#[test]
fn describe_quorum_of_one_host() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let broker = Broker::start(2);
    let mut conn = broker.connect();
    let ask = |topic: &str, partition: i32| {
        DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(name(topic))
                .with_partitions(vec![
                    PartitionData::default().with_partition_index(partition),
                ]),
        ])
    };
    for v in 0..=2 {
        let r = conn.request(&ask("__cluster_metadata", 0), v);
        assert_eq!(r.error_code, 0, "v{v}");
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0, "v{v}");
        assert_eq!(p.current_voters.len(), 1, "v{v}: {p:?}");
        let me = &p.current_voters[0];
        assert_eq!(me.replica_id, p.leader_id);
        assert!(p.leader_epoch >= 1 && p.high_watermark > 0, "{p:?}");
        assert_eq!(me.log_end_offset, p.high_watermark, "{p:?}");
        if v >= 1 {
            assert!(me.last_fetch_timestamp > 0, "{p:?}");
        }
        if v == 2 {
            assert_eq!(p.error_message, None);
            assert!(r.nodes.is_empty(), "{r:?}");
        }
    }
    let r = conn.request(&ask("other", 0), 1);
    assert_eq!(r.topics[0].partitions[0].error_code, 3);
    let r = conn.request(&ask("__cluster_metadata", 1), 1);
    assert_eq!(r.topics[0].partitions[0].error_code, 3);
}

/// A connection to `addr` (a SASL_PLAINTEXT listener) logged in with SASL/PLAIN.
fn sasl_plain(addr: std::net::SocketAddr, user: &str, password: &str) -> Conn {
    let mut c = Conn::connect(addr);
    let hs = c.request(
        &SaslHandshakeRequest::default().with_mechanism(s("PLAIN")),
        1,
    );
    assert_eq!(hs.error_code, 0);
    let token = format!("\0{user}\0{password}");
    let auth = c.request(
        &SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from(token)),
        2,
    );
    assert_eq!(auth.error_code, 0, "SASL/PLAIN login of {user}");
    c
}

// Proves the admin APIs Kafka authorizes per resource answer error codes per resource and
// keep the connection open: User:ANONYMOUS (the PLAINTEXT listener) may READ topic `w-ok`
// (READ implies DESCRIBE) and has nothing on `w-no` nor on the cluster; DescribeLogDirs
// answers CLUSTER_AUTHORIZATION_FAILED (v4; no dirs in v1), DescribeProducers and
// OffsetForLeaderEpoch TOPIC_AUTHORIZATION_FAILED for `w-no` only, DescribeTopicPartitions
// hides `w-no` from "all topics" and refuses it by name, and the authorized-operations
// fields are the principal's own (0 for the cluster without DESCRIBE). The super user
// (User:admin over SASL) gets every answer and every operation.
#[test]
fn admin_apis_authorize_per_resource_on_the_wire() {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::describe_producers_request::TopicRequest as ProducersTopic;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    const TAF: i16 = 29;
    const CAF: i16 = 31;
    // Kafka's AclOperation codes READ 3 and DESCRIBE 8; the cluster supports 5, 7-12.
    let bits = |ops: &[i32]| ops.iter().fold(0i32, |v, o| v | (1 << o));
    let dir = tmpdir();
    let users = dir.path().join("users");
    std::fs::write(&users, "admin = admin-pw\n").unwrap();
    let data = dir.path().join("data");
    let broker = Broker::start_in(
        &data,
        1,
        &[
            "--listeners",
            "SASL_PLAINTEXT://127.0.0.1:0",
            "--sasl-plain-users",
            users.to_str().unwrap(),
            "--authorizer",
            "acl",
            "--super-users",
            "User:admin",
        ],
    );
    let mut admin = sasl_plain(broker.listeners["SASL_PLAINTEXT"], "admin", "admin-pw");
    create_topic(&mut admin, "w-ok", 1);
    create_topic(&mut admin, "w-no", 1);
    let acl = AclCreation::default()
        .with_resource_type(2)
        .with_resource_name(s("w-ok"))
        .with_resource_pattern_type(3)
        .with_principal(s("User:ANONYMOUS"))
        .with_host(s("*"))
        .with_operation(3)
        .with_permission_type(3);
    let r = admin.request(&CreateAclsRequest::default().with_creations(vec![acl]), 3);
    assert_eq!(r.results[0].error_code, 0);
    let mut anon = broker.connect();

    // DescribeLogDirs: DESCRIBE on the cluster.
    let all_dirs = DescribeLogDirsRequest::default().with_topics(None);
    let r = anon.request(&all_dirs, 4);
    assert_eq!((r.error_code, r.results.len()), (CAF, 0));
    assert_eq!(anon.request(&all_dirs, 1).results.len(), 0);
    let r = admin.request(&all_dirs, 4);
    assert_eq!((r.error_code, r.results.len()), (0, 1));

    // DescribeProducers: READ on the topic, per partition.
    let req = DescribeProducersRequest::default().with_topics(
        ["w-ok", "w-no"]
            .iter()
            .map(|t| {
                ProducersTopic::default()
                    .with_name(name(t))
                    .with_partition_indexes(vec![0])
            })
            .collect(),
    );
    let codes = |r: &DescribeProducersResponse| -> Vec<i16> {
        r.topics
            .iter()
            .map(|t| t.partitions[0].error_code)
            .collect()
    };
    assert_eq!(codes(&anon.request(&req, 0)), vec![0, TAF]);
    assert_eq!(codes(&admin.request(&req, 0)), vec![0, 0]);

    // OffsetForLeaderEpoch: DESCRIBE on the topic (or CLUSTER_ACTION, the super user's).
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            ["w-ok", "w-no"]
                .iter()
                .map(|t| {
                    OffsetForLeaderTopic::default()
                        .with_topic(name(t))
                        .with_partitions(vec![
                            OffsetForLeaderPartition::default()
                                .with_current_leader_epoch(-1)
                                .with_leader_epoch(0),
                        ])
                })
                .collect(),
        );
    let codes = |r: &OffsetForLeaderEpochResponse| -> Vec<i16> {
        r.topics
            .iter()
            .map(|t| t.partitions[0].error_code)
            .collect()
    };
    assert_eq!(codes(&anon.request(&req, 4)), vec![0, TAF]);
    assert_eq!(codes(&admin.request(&req, 4)), vec![0, 0]);

    // DescribeTopicPartitions: as Metadata, hidden from "all", refused by name (no id).
    let (topics, _) = describe_partitions(&mut anon, &[], 100, None);
    assert_eq!(topics, vec![("w-ok".to_string(), 0, vec![0])]);
    let (topics, _) = describe_partitions(&mut anon, &["w-no", "w-ok"], 100, None);
    assert_eq!(
        topics,
        vec![
            ("w-ok".to_string(), 0, vec![0]),
            ("w-no".to_string(), TAF, vec![])
        ]
    );
    let (topics, _) = describe_partitions(&mut admin, &[], 100, None);
    assert_eq!(topics.len(), 2);

    // Authorized operations: the principal's own.
    let md = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("w-ok"))),
        ]))
        .with_include_cluster_authorized_operations(true)
        .with_include_topic_authorized_operations(true);
    let r = anon.request(&md, 10);
    assert_eq!(r.topics[0].topic_authorized_operations, bits(&[3, 8]));
    assert_eq!(r.cluster_authorized_operations, 0);
    let r = admin.request(&md, 10);
    assert_eq!(r.topics[0].topic_authorized_operations, 3576);
    assert_eq!(r.cluster_authorized_operations, 8096);
    let dc = DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let r = anon.request(&dc, 0);
    assert_eq!((r.error_code, r.cluster_authorized_operations), (0, 0));
    assert_eq!(admin.request(&dc, 0).cluster_authorized_operations, 8096);

    // Every refusal was an answer: the connection still serves requests.
    assert_eq!(
        anon.request(&ApiVersionsRequest::default(), 3).error_code,
        0
    );
}
