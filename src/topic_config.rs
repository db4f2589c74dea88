//! Topic configs: the names Kafka uses, their validation, broker-level defaults, and the
//! translation into the storage engine's `shards::LogConfig`.
//!
//! Runs on: any shard (pure functions over the controller's metadata).

use std::collections::BTreeMap;

use crate::config::BrokerConfig;

/// Kafka's config types (DescribeConfigs v3+ `config_type`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

pub struct TopicConfigSpec {
    pub name: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// Values accepted for string configs (empty: any).
    pub allowed: &'static [&'static str],
    pub min: i64,
}

/// Largest value of min.cleanable.dirty.ratio (a fraction, as Kafka's [0, 1] range).
const DIRTY_RATIO_MAX: f64 = 1.0;

/// Every topic config osprey knows. Unknown names are refused with INVALID_CONFIG, as
/// Kafka does, so a typo is never silently ignored.
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    TopicConfigSpec {
        name: "cleanup.policy",
        kind: ConfigType::List,
        doc: "A list of `delete` (retention.ms / retention.bytes delete old segments) and `compact` (the log cleaner keeps the latest record per key).",
        allowed: &["delete", "compact"],
        min: 0,
    },
    TopicConfigSpec {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigType::Double,
        doc: "The log cleaner cleans a compacted log once dirty bytes / cleanable bytes reach this.",
        allowed: &[],
        min: 0,
    },
    TopicConfigSpec {
        name: "min.compaction.lag.ms",
        kind: ConfigType::Long,
        doc: "A record stays uncompacted at least this long.",
        allowed: &[],
        min: 0,
    },
    TopicConfigSpec {
        name: "max.compaction.lag.ms",
        kind: ConfigType::Long,
        doc: "A record stays uncompacted at most about this long, whatever the dirty ratio.",
        allowed: &[],
        min: 1,
    },
    TopicConfigSpec {
        name: "delete.retention.ms",
        kind: ConfigType::Long,
        doc: "Tombstones of a compacted log stay readable this long before the cleaner removes them.",
        allowed: &[],
        min: 0,
    },
    TopicConfigSpec {
        name: "compression.type",
        kind: ConfigType::String,
        doc: "Batches are stored as the producer compressed them.",
        allowed: &["producer"],
        min: 0,
    },
    TopicConfigSpec {
        name: "retention.ms",
        kind: ConfigType::Long,
        doc: "Delete segments older than this; -1 keeps them forever.",
        allowed: &[],
        min: -1,
    },
    TopicConfigSpec {
        name: "retention.bytes",
        kind: ConfigType::Long,
        doc: "Delete oldest segments beyond this size per partition; -1 unlimited.",
        allowed: &[],
        min: -1,
    },
    TopicConfigSpec {
        name: "segment.bytes",
        kind: ConfigType::Int,
        doc: "Roll to a new segment file at this size.",
        allowed: &[],
        min: 14,
    },
    TopicConfigSpec {
        name: "segment.ms",
        kind: ConfigType::Long,
        doc: "Roll to a new segment after this age.",
        allowed: &[],
        min: 1,
    },
    TopicConfigSpec {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        doc: "Largest record batch accepted.",
        allowed: &[],
        min: 0,
    },
    TopicConfigSpec {
        name: "flush.ms",
        kind: ConfigType::Long,
        doc: "Longest time appended data stays un-synced (acks=0/1 writes).",
        allowed: &[],
        min: 0,
    },
    TopicConfigSpec {
        name: "flush.messages",
        kind: ConfigType::Long,
        doc: "Most messages appended before a background sync.",
        allowed: &[],
        min: 1,
    },
    TopicConfigSpec {
        name: "write.caching",
        kind: ConfigType::Boolean,
        doc: "Redpanda's relaxation: when true, acks=all is acknowledged once written, before fdatasync.",
        allowed: &["true", "false"],
        min: 0,
    },
    TopicConfigSpec {
        name: "unclean.leader.election.enable",
        kind: ConfigType::Boolean,
        doc: "Elect an out-of-sync replica when no in-sync one is live (may lose acknowledged data).",
        allowed: &["true", "false"],
        min: 0,
    },
    TopicConfigSpec {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        doc: "acks=all needs at least this many in-sync replicas (else NOT_ENOUGH_REPLICAS).",
        allowed: &[],
        min: 1,
    },
    TopicConfigSpec {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps every batch with the broker's clock on append.",
        allowed: &["CreateTime", "LogAppendTime"],
        min: 0,
    },
];

pub fn spec(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|s| s.name == name)
}

/// Checks one name/value pair; the error text goes back in the Kafka error message.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(spec) = spec(name) else {
        return Err(format!("unknown topic config `{name}`"));
    };
    match spec.kind {
        ConfigType::List => {
            // Kafka: a comma-separated list, each item one of the allowed values. An empty
            // list is valid (cleanup.policy: no cleanup at all, as in Kafka).
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if !spec.allowed.contains(&item) {
                    return Err(format!(
                        "Invalid value {value} for configuration {name}: each item must be one of {:?}",
                        spec.allowed
                    ));
                }
            }
        }
        ConfigType::Double => {
            let v: f64 = value
                .trim()
                .parse()
                .map_err(|_| format!("`{name}` must be a number, got `{value}`"))?;
            if !(v >= spec.min as f64 && v <= DIRTY_RATIO_MAX) {
                return Err(format!(
                    "Invalid value {value} for configuration {name}: Value must be between {} and {DIRTY_RATIO_MAX}",
                    spec.min
                ));
            }
        }
        ConfigType::String | ConfigType::Boolean => {
            if !spec.allowed.is_empty() && !spec.allowed.contains(&value) {
                return Err(format!(
                    "`{name}` must be one of {:?}, got `{value}`",
                    spec.allowed
                ));
            }
        }
        ConfigType::Int | ConfigType::Long => {
            let v: i64 = value
                .parse()
                .map_err(|_| format!("`{name}` must be an integer, got `{value}`"))?;
            if v < spec.min {
                return Err(format!("`{name}` must be >= {}, got {v}", spec.min));
            }
            if spec.kind == ConfigType::Int && v > i32::MAX as i64 {
                return Err(format!("`{name}` must fit in an int, got {v}"));
            }
        }
    }
    Ok(())
}

/// The value a topic gets when it sets nothing, from the broker's own settings.
pub fn default_value(name: &str, broker: &BrokerConfig) -> String {
    let log = shards::LogConfig::default();
    match name {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "retention.ms" => broker.log_retention_ms.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "segment.bytes" => broker.log_segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        "flush.ms" => broker.log_flush_interval_ms.to_string(),
        "flush.messages" => log.flush_messages.to_string(),
        "write.caching" => "false".into(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "unclean.leader.election.enable" => "false".into(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.cleanable.dirty.ratio" => log.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => log.min_compaction_lag_ms.to_string(),
        "max.compaction.lag.ms" => log.max_compaction_lag_ms.to_string(),
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        _ => String::new(),
    }
}

/// Effective value: the topic's own, else the broker default.
pub fn effective(configs: &BTreeMap<String, String>, name: &str, broker: &BrokerConfig) -> String {
    configs
        .get(name)
        .cloned()
        .unwrap_or_else(|| default_value(name, broker))
}

fn num<T: std::str::FromStr>(
    configs: &BTreeMap<String, String>,
    name: &str,
    broker: &BrokerConfig,
    fallback: T,
) -> T {
    effective(configs, name, broker).parse().unwrap_or(fallback)
}

/// min.insync.replicas in effect for a topic.
pub fn min_insync_replicas(configs: &BTreeMap<String, String>, broker: &BrokerConfig) -> usize {
    num(configs, "min.insync.replicas", broker, 1i64).max(1) as usize
}

/// The storage engine's view of a topic's configs.
pub fn log_config(configs: &BTreeMap<String, String>, broker: &BrokerConfig) -> shards::LogConfig {
    let d = shards::LogConfig::default();
    shards::LogConfig {
        segment_bytes: num(configs, "segment.bytes", broker, d.segment_bytes),
        segment_ms: num(configs, "segment.ms", broker, d.segment_ms),
        retention_ms: num(configs, "retention.ms", broker, d.retention_ms),
        retention_bytes: num(configs, "retention.bytes", broker, d.retention_bytes),
        max_message_bytes: num(configs, "max.message.bytes", broker, d.max_message_bytes),
        flush_ms: num(configs, "flush.ms", broker, d.flush_ms),
        flush_messages: num(configs, "flush.messages", broker, d.flush_messages),
        log_append_time: effective(configs, "message.timestamp.type", broker) == "LogAppendTime",
        cleanup_delete: has_policy(configs, broker, "delete"),
        cleanup_compact: has_policy(configs, broker, "compact"),
        min_cleanable_dirty_ratio: num(
            configs,
            "min.cleanable.dirty.ratio",
            broker,
            d.min_cleanable_dirty_ratio,
        ),
        min_compaction_lag_ms: num(
            configs,
            "min.compaction.lag.ms",
            broker,
            d.min_compaction_lag_ms,
        ),
        max_compaction_lag_ms: num(
            configs,
            "max.compaction.lag.ms",
            broker,
            d.max_compaction_lag_ms,
        ),
        delete_retention_ms: num(
            configs,
            "delete.retention.ms",
            broker,
            d.delete_retention_ms,
        ),
    }
}

/// Whether the topic's cleanup.policy list holds `policy`.
pub fn has_policy(configs: &BTreeMap<String, String>, broker: &BrokerConfig, policy: &str) -> bool {
    effective(configs, "cleanup.policy", broker)
        .split(',')
        .any(|p| p.trim() == policy)
}

/// Whether acks=all waits for fdatasync on this topic (the default) or only for the write.
pub fn acks_all_durability(
    configs: &BTreeMap<String, String>,
    broker: &BrokerConfig,
) -> shards::Durability {
    if effective(configs, "write.caching", broker) == "true" {
        shards::Durability::Written
    } else {
        shards::Durability::Fsync
    }
}

/// Kafka's rule for topic names: 1..=249 characters of [a-zA-Z0-9._-], not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "topic name length must be 1..=249, got {}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be `.` or `..`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!(
            "topic name `{name}` has an illegal character {c:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known configs validate by type and range; unknown names and bad values are refused.
    #[test]
    fn validation() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("segment.bytes", "abc").is_err());
        assert!(validate("cleanup.policy", "compact").is_ok());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "delete, compact").is_ok());
        assert!(validate("cleanup.policy", "compacted").is_err());
        assert!(validate("cleanup.policy", "").is_ok());
        assert!(validate("cleanup.policy", "delete,bogus").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "0.01").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1").is_ok());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "-0.1").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "NaN").is_err());
        assert!(validate("delete.retention.ms", "0").is_ok());
        assert!(validate("delete.retention.ms", "-1").is_err());
        assert!(validate("max.compaction.lag.ms", "0").is_err());
        assert!(validate("min.compaction.lag.ms", "0").is_ok());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("write.caching", "true").is_ok());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("message.timestamp.type", "CreateTime").is_ok());
        assert!(validate("message.timestamp.type", "logappendtime").is_err());
    }

    // Topic names follow Kafka's legal character set and length.
    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
