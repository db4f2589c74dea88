//! DescribeConfigs (key 32): topic configs (effective values, with their source), broker
//! configs and group configs (Kafka 4's consumer-group configs at their defaults; the
//! share-group ones are not reported, osprey has no share groups).
//!
//! Runs on: any shard, from its own copy of the metadata and the broker config.
//! Authorization (Kafka's): DESCRIBE_CONFIGS on the topic, on the cluster for broker
//! resources, on the group for group resources; a resource refused gets
//! TOPIC_/CLUSTER_/GROUP_AUTHORIZATION_FAILED and no configs, the others are answered
//! (in request order; Kafka lists the refused ones last, clients match by resource).

use std::rc::Rc;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_TOPIC};
use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::resource;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;
use crate::topic_config::{self, ConfigType, TOPIC_CONFIGS};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeConfigs,
    min_version: 1,
    max_version: 4,
};
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_GROUP: i8 = 32;
/// Kafka's ConfigResource types that are cluster-wide for authorization.
const RESOURCE_BROKER_LOGGER: i8 = 8;
const RESOURCE_CLIENT_METRICS: i8 = 16;

/// Kafka's authorization of a config resource (DescribeConfigs with DESCRIBE_CONFIGS,
/// AlterConfigs and IncrementalAlterConfigs with ALTER_CONFIGS): the error code when the
/// principal may not do `operation` on it, None when it may or when the resource type is
/// not one Kafka authorizes (the handler refuses it then).
pub fn config_resource_denied(
    shard: &Shard,
    session: &Session,
    operation: u8,
    resource_type: i8,
    name: &str,
) -> Option<i16> {
    let (acl_type, acl_name, code) = match resource_type {
        RESOURCE_TOPIC => (resource::TOPIC, name, error::TOPIC_AUTHORIZATION_FAILED),
        RESOURCE_BROKER | RESOURCE_BROKER_LOGGER | RESOURCE_CLIENT_METRICS => (
            resource::CLUSTER,
            crate::acl::CLUSTER_NAME,
            error::CLUSTER_AUTHORIZATION_FAILED,
        ),
        RESOURCE_GROUP => (resource::GROUP, name, error::GROUP_AUTHORIZATION_FAILED),
        _ => return None,
    };
    (!session.may(shard, operation, acl_type, acl_name)).then_some(code)
}

/// Kafka's message (`Errors.message`) of an authorization failure `config_resource_denied`
/// answers.
pub fn denied_message(code: i16) -> &'static str {
    match code {
        error::TOPIC_AUTHORIZATION_FAILED => "Topic authorization failed.",
        error::GROUP_AUTHORIZATION_FAILED => "Group authorization failed.",
        _ => "Cluster authorization failed.",
    }
}
/// config_source for a static broker setting (flags / config file).
const SOURCE_STATIC_BROKER: i8 = 4;

/// (name, value, type, doc) of every broker config osprey reports.
fn broker_configs(shard: &Shard) -> Vec<(&'static str, String, ConfigType, &'static str)> {
    let c = &shard.config;
    vec![
        (
            "node.id",
            shard.id.to_string(),
            ConfigType::Int,
            "This shard's node id.",
        ),
        (
            "log.dirs",
            c.data_dir.display().to_string(),
            ConfigType::String,
            "The data directory.",
        ),
        (
            "num.partitions",
            c.num_partitions.to_string(),
            ConfigType::Int,
            "Partitions of an auto-created topic.",
        ),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            ConfigType::Boolean,
            "Create unknown topics named in Metadata requests.",
        ),
        (
            "default.replication.factor",
            "1".into(),
            ConfigType::Int,
            "One copy per partition (no replication yet).",
        ),
        (
            "group.initial.rebalance.delay.ms",
            c.group_initial_rebalance_delay_ms.to_string(),
            ConfigType::Int,
            "Wait for more members before the first rebalance of an empty group.",
        ),
        (
            "offsets.retention.minutes",
            c.offsets_retention_minutes.to_string(),
            ConfigType::Int,
            "Committed offsets of empty groups expire after this.",
        ),
        (
            "socket.request.max.bytes",
            crate::protocol::REQUEST_FRAME_MAX_BYTES.to_string(),
            ConfigType::Int,
            "Largest request frame.",
        ),
        (
            "log.segment.bytes",
            c.log_segment_bytes.to_string(),
            ConfigType::Int,
            "Default segment.bytes.",
        ),
        (
            "log.retention.ms",
            c.log_retention_ms.to_string(),
            ConfigType::Long,
            "Default retention.ms.",
        ),
        (
            "log.flush.interval.ms",
            c.log_flush_interval_ms.to_string(),
            ConfigType::Long,
            "Default flush.ms.",
        ),
        (
            "log.cleaner.backoff.ms",
            c.log_cleaner_backoff_ms.to_string(),
            ConfigType::Long,
            "Pause between two passes of a shard's log cleaner.",
        ),
        (
            "log.cleaner.io.max.bytes.per.second",
            c.log_cleaner_io_max_bytes_per_second.to_string(),
            ConfigType::Double,
            "Log cleaner I/O bound per shard, bytes read plus written per second (0: none).",
        ),
        (
            "message.max.bytes",
            shards::LogConfig::default().max_message_bytes.to_string(),
            ConfigType::Int,
            "Default max.message.bytes.",
        ),
        (
            "max.connections",
            c.connections_max.to_string(),
            ConfigType::Int,
            "Connections per shard.",
        ),
    ]
}

/// (name, default, doc) of the group configs Kafka 4 has for consumer groups, at its
/// defaults (group.consumer.session.timeout.ms / group.consumer.heartbeat.interval.ms).
/// Reported read-only: AlterConfigs refuses group resources, so a group cannot override them.
const GROUP_CONFIGS: &[(&str, &str, &str)] = &[
    (
        "consumer.session.timeout.ms",
        "45000",
        "The timeout to detect client failures when using the consumer group protocol.",
    ),
    (
        "consumer.heartbeat.interval.ms",
        "5000",
        "The heartbeat interval given to the members of a consumer group.",
    ),
];

fn wanted(keys: &Option<Vec<kafka_protocol::protocol::StrBytes>>, name: &str) -> bool {
    keys.as_ref()
        .is_none_or(|k| k.is_empty() || k.iter().any(|k| k.as_str() == name))
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeConfigsRequest = req.decode()?;
    let meta = shard.meta();
    let mut results = Vec::new();
    for r in body.resources {
        let name = r.resource_name.to_string();
        let mut out = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entry =
            |n: &str, v: String, source: i8, kind: ConfigType, doc: &str, read_only: bool| {
                let mut e = DescribeConfigsResourceResult::default()
                    .with_name(str_bytes(n))
                    .with_value(Some(str_bytes(v.clone())))
                    .with_read_only(read_only)
                    .with_config_source(source)
                    .with_config_type(kind as i8);
                if body.include_documentation {
                    e = e.with_documentation(Some(str_bytes(doc)));
                }
                if body.include_synonyms {
                    e = e.with_synonyms(vec![
                        DescribeConfigsSynonym::default()
                            .with_name(str_bytes(n))
                            .with_value(Some(str_bytes(v)))
                            .with_source(source),
                    ]);
                }
                e
            };
        let denied = config_resource_denied(
            shard,
            session,
            crate::protocol::acl::op::DESCRIBE_CONFIGS,
            r.resource_type,
            &name,
        );
        if let Some(code) = denied {
            results.push(
                out.with_error_code(code)
                    .with_error_message(Some(str_bytes(denied_message(code)))),
            );
            continue;
        }
        match r.resource_type {
            RESOURCE_TOPIC => match meta.topic(&name) {
                Some(t) => {
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .filter(|s| wanted(&r.configuration_keys, s.name))
                        .map(|s| {
                            let source = if t.configs.contains_key(s.name) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            entry(
                                s.name,
                                topic_config::effective(&t.configs, s.name, &shard.config),
                                source,
                                s.kind,
                                s.doc,
                                false,
                            )
                        })
                        .collect();
                    out = out.with_error_code(error::NONE).with_configs(configs);
                }
                None => {
                    out = out
                        .with_error_code(error::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_error_message(Some(str_bytes(format!(
                            "Topic '{name}' does not exist."
                        ))));
                }
            },
            RESOURCE_BROKER => {
                // Any node of this host (its configs are the host's); another host's
                // nodes are answered by that host.
                let node_ok = name.is_empty()
                    || name.parse::<i32>().is_ok_and(|n| {
                        n >= 0
                            && crate::metadata::host_of(n) == shard.config.node_id
                            && crate::metadata::shard_of(n) < shard.count
                    });
                if node_ok {
                    let configs = broker_configs(shard)
                        .into_iter()
                        .filter(|(n, ..)| wanted(&r.configuration_keys, n))
                        .map(|(n, v, kind, doc)| entry(n, v, SOURCE_STATIC_BROKER, kind, doc, true))
                        .collect();
                    out = out.with_error_code(error::NONE).with_configs(configs);
                } else {
                    out = out
                        .with_error_code(error::INVALID_REQUEST)
                        .with_error_message(Some(str_bytes(format!("no broker node `{name}`"))));
                }
            }
            RESOURCE_GROUP if name.is_empty() => {
                out = out
                    .with_error_code(error::INVALID_REQUEST)
                    .with_error_message(Some(str_bytes("group name must not be empty")));
            }
            // Kafka answers any group name (configs exist before the group does).
            RESOURCE_GROUP => {
                let configs = GROUP_CONFIGS
                    .iter()
                    .filter(|(n, ..)| wanted(&r.configuration_keys, n))
                    .map(|(n, v, doc)| {
                        entry(n, v.to_string(), SOURCE_DEFAULT, ConfigType::Int, doc, true)
                    })
                    .collect();
                out = out.with_error_code(error::NONE).with_configs(configs);
            }
            other => {
                out = out
                    .with_error_code(error::INVALID_REQUEST)
                    .with_error_message(Some(str_bytes(format!(
                        "resource type {other} is not supported"
                    ))));
            }
        }
        results.push(out);
    }
    let resp = DescribeConfigsResponse::default().with_results(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
