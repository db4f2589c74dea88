//! Black-box tests of the admin APIs: AlterConfigs and IncrementalAlterConfigs (topic and
//! broker resources, through the controller quorum). Each starts the real binary and speaks
//! Kafka bytes.

mod common;

use common::*;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn name(v: &str) -> TopicName {
    TopicName(s(v))
}

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
