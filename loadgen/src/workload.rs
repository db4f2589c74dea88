//! Workload definitions in the OpenMessaging Benchmark's terms: named scenarios, a workload
//! file (key: value / key=value / flat JSON, OMB field names) and command-line overrides.
//! Main thread only.

use std::fmt::Write as _;

/// How producers pick a partition for each message (OMB's keyDistributor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// No key; a batch fills one partition, then the next (Kafka's sticky partitioner).
    NoKey,
    /// A random key per message; partition = hash(key).
    RandomNano,
    /// Keys cycle; each message goes to the next partition.
    KeyRoundRobin,
}

impl KeyDistribution {
    /// Parses OMB's names (NO_KEY, RANDOM_NANO, KEY_ROUND_ROBIN), case-insensitive.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().replace('-', "_").as_str() {
            "NO_KEY" | "NONE" => Ok(Self::NoKey),
            "RANDOM_NANO" | "RANDOM" => Ok(Self::RandomNano),
            "KEY_ROUND_ROBIN" | "ROUND_ROBIN" => Ok(Self::KeyRoundRobin),
            o => Err(format!("unknown keyDistributor {o:?}")),
        }
    }
    /// OMB's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoKey => "NO_KEY",
            Self::RandomNano => "RANDOM_NANO",
            Self::KeyRoundRobin => "KEY_ROUND_ROBIN",
        }
    }
}

/// One workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Scenario or file name.
    pub name: String,
    /// Number of topics.
    pub topics: u32,
    /// Partitions per topic.
    pub partitions_per_topic: u32,
    /// Message value size in bytes (>= 16: the first 8 carry the send timestamp).
    pub message_size: usize,
    /// Producers per topic.
    pub producers_per_topic: u32,
    /// Subscriptions per topic (0 = produce only). Each subscription reads every message.
    pub subscriptions_per_topic: u32,
    /// Consumers per subscription; they split the topic's partitions.
    pub consumer_per_subscription: u32,
    /// Total producer rate in msg/s over all producers; 0 = as fast as possible.
    pub producer_rate: f64,
    /// Measured duration, seconds.
    pub test_duration_s: f64,
    /// Warm-up before measuring, seconds.
    pub warmup_duration_s: f64,
    /// acks: 0, 1 or -1 (all).
    pub acks: String,
    /// Producer linger, milliseconds.
    pub linger_ms: f64,
    /// Producer batch size, bytes (a batch is sent when it reaches this size).
    pub batch_size_bytes: usize,
    /// none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// Key distribution.
    pub key_distributor: KeyDistribution,
    /// Unacknowledged bytes a producer may hold before it blocks (Kafka's buffer.memory).
    pub producer_buffer_bytes: usize,
    /// Requests in flight per connection.
    pub in_flight_max: usize,
    /// Consumer fetch max_wait_ms.
    pub fetch_max_wait_ms: i32,
    /// Each subscription is a consumer group (join/sync/heartbeat, range assignment, offset
    /// commits after every poll) instead of manual assignment. Not an OMB field.
    pub consumer_group: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "custom".into(),
            topics: 1,
            partitions_per_topic: 8,
            message_size: 1024,
            producers_per_topic: 1,
            subscriptions_per_topic: 1,
            consumer_per_subscription: 1,
            producer_rate: 10_000.0,
            test_duration_s: 30.0,
            warmup_duration_s: 5.0,
            acks: "1".into(),
            linger_ms: 1.0,
            batch_size_bytes: 128 << 10,
            compression: "none".into(),
            key_distributor: KeyDistribution::NoKey,
            producer_buffer_bytes: 32 << 20,
            in_flight_max: 5,
            fetch_max_wait_ms: 100,
            consumer_group: false,
        }
    }
}

/// Names of the built-in scenarios.
pub const SCENARIOS: &[&str] = &[
    "max-throughput",
    "fixed-rate-latency",
    "end-to-end",
    "smoke",
];

impl Workload {
    /// A named scenario.
    pub fn scenario(name: &str) -> Result<Workload, String> {
        let base = Workload {
            name: name.into(),
            ..Workload::default()
        };
        Ok(match name {
            // OMB's common shape scaled to 2 vCPUs: as fast as the broker takes it.
            "max-throughput" => Workload {
                partitions_per_topic: 16,
                producers_per_topic: 2,
                producer_rate: 0.0,
                acks: "1".into(),
                linger_ms: 5.0,
                batch_size_bytes: 256 << 10,
                ..base
            },
            // A fixed, moderate rate; what matters is the latency distribution.
            "fixed-rate-latency" => Workload {
                producer_rate: 10_000.0,
                acks: "-1".into(),
                linger_ms: 1.0,
                batch_size_bytes: 16 << 10,
                ..base
            },
            // One partition, low rate, no batching delay: produce -> consume latency.
            "end-to-end" => Workload {
                partitions_per_topic: 1,
                producer_rate: 1_000.0,
                acks: "-1".into(),
                linger_ms: 0.0,
                batch_size_bytes: 16 << 10,
                fetch_max_wait_ms: 500,
                ..base
            },
            // Seconds-long check that everything flows (used by the tests).
            "smoke" => Workload {
                partitions_per_topic: 2,
                message_size: 256,
                producer_rate: 2_000.0,
                test_duration_s: 2.0,
                warmup_duration_s: 0.0,
                ..base
            },
            o => {
                return Err(format!(
                    "unknown scenario {o:?} (known: {})",
                    SCENARIOS.join(", ")
                ));
            }
        })
    }

    /// Applies one `key`/`value` setting (OMB names; also our own).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim().trim_matches('"').trim_matches('\'');
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{key}: not a number: {v:?}"))
        };
        let int = |v: &str| {
            num(v).and_then(|n| {
                if n >= 0.0 && n.fract() == 0.0 {
                    Ok(n as u64)
                } else {
                    Err(format!("{key}: not a non-negative integer: {v:?}"))
                }
            })
        };
        match key.trim() {
            "name" => self.name = v.into(),
            "topics" => self.topics = int(v)? as u32,
            "partitionsPerTopic" => self.partitions_per_topic = int(v)? as u32,
            "messageSize" => self.message_size = int(v)? as usize,
            "producersPerTopic" => self.producers_per_topic = int(v)? as u32,
            "subscriptionsPerTopic" => self.subscriptions_per_topic = int(v)? as u32,
            "consumerPerSubscription" => self.consumer_per_subscription = int(v)? as u32,
            "producerRate" => self.producer_rate = num(v)?,
            "testDurationMinutes" => self.test_duration_s = num(v)? * 60.0,
            "testDurationSeconds" => self.test_duration_s = num(v)?,
            "warmupDurationMinutes" => self.warmup_duration_s = num(v)? * 60.0,
            "warmupDurationSeconds" => self.warmup_duration_s = num(v)?,
            "acks" => self.acks = v.into(),
            "lingerMs" | "linger.ms" => self.linger_ms = num(v)?,
            "batchSize" | "batch.size" => self.batch_size_bytes = int(v)? as usize,
            "compression" | "compression.type" => self.compression = v.into(),
            "keyDistributor" => self.key_distributor = KeyDistribution::parse(v)?,
            "producerBufferBytes" | "buffer.memory" => {
                self.producer_buffer_bytes = int(v)? as usize
            }
            "inFlight" | "max.in.flight.requests.per.connection" => {
                self.in_flight_max = int(v)? as usize
            }
            "fetchMaxWaitMs" | "fetch.max.wait.ms" => self.fetch_max_wait_ms = int(v)? as i32,
            "consumerGroup" => {
                self.consumer_group = match v {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    o => return Err(format!("{key}: expected true or false, got {o:?}")),
                }
            }
            // OMB fields that have no meaning here are accepted and ignored.
            "consumerBacklogSizeGB" | "payloadFile" | "useRandomizedPayloads" => {}
            other => return Err(format!("unknown workload field {other:?}")),
        }
        Ok(())
    }

    /// Parses a workload file: `key: value` (YAML-ish), `key=value`, or a flat JSON object.
    pub fn parse_file(text: &str, base: Workload) -> Result<Workload, String> {
        let mut w = base;
        // Flatten a JSON object into lines: split on commas outside quotes is not needed for
        // the flat, numeric/string-only objects OMB uses.
        let flat = text.replace(['{', '}'], "\n").replace(',', "\n");
        for (n, raw) in flat.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line == "---" {
                continue;
            }
            let (k, v) = line
                .split_once(':')
                .or_else(|| line.split_once('='))
                .ok_or_else(|| format!("line {}: expected key: value, got {line:?}", n + 1))?;
            let k = k.trim().trim_matches('"');
            w.set(k, v).map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        Ok(w)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.topics == 0 || self.partitions_per_topic == 0 {
            return Err("topics and partitionsPerTopic must be >= 1".into());
        }
        if self.producers_per_topic == 0 {
            return Err("producersPerTopic must be >= 1".into());
        }
        if self.message_size < 16 {
            return Err("messageSize must be >= 16 (the timestamp lives in the payload)".into());
        }
        if self.test_duration_s <= 0.0 || self.warmup_duration_s < 0.0 {
            return Err("testDuration must be > 0, warmup >= 0".into());
        }
        if self.subscriptions_per_topic > 0 && self.consumer_per_subscription == 0 {
            return Err("consumerPerSubscription must be >= 1 with a subscription".into());
        }
        if self.producer_rate < 0.0 || !self.producer_rate.is_finite() {
            return Err("producerRate must be >= 0".into());
        }
        osprey_client::Acks::parse(&self.acks).map_err(|e| e.to_string())?;
        osprey_client::parse_compression(&self.compression).map_err(|e| e.to_string())?;
        if self.batch_size_bytes < self.message_size {
            return Err("batchSize must be >= messageSize".into());
        }
        if self.producer_buffer_bytes < self.batch_size_bytes {
            return Err("producerBufferBytes must be >= batchSize".into());
        }
        Ok(())
    }

    /// Total producers.
    pub fn producers(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    /// Total consumers.
    pub fn consumers(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumer_per_subscription
    }

    /// The workload as OMB-named JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "topics": self.topics,
            "partitionsPerTopic": self.partitions_per_topic,
            "messageSize": self.message_size,
            "producersPerTopic": self.producers_per_topic,
            "subscriptionsPerTopic": self.subscriptions_per_topic,
            "consumerPerSubscription": self.consumer_per_subscription,
            "producerRate": self.producer_rate,
            "testDurationMinutes": self.test_duration_s / 60.0,
            "warmupDurationMinutes": self.warmup_duration_s / 60.0,
            "keyDistributor": self.key_distributor.name(),
            "acks": self.acks,
            "lingerMs": self.linger_ms,
            "batchSize": self.batch_size_bytes,
            "compression": self.compression,
            "producerBufferBytes": self.producer_buffer_bytes,
            "inFlight": self.in_flight_max,
            "fetchMaxWaitMs": self.fetch_max_wait_ms,
            "consumerGroup": self.consumer_group,
        })
    }

    /// One line for humans.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{}: {} topic(s) x {} partitions, {} B msgs, {} producer(s), {} consumer(s), rate {}, {}s (+{}s warm-up), acks={}, linger={}ms, batch={}B, compression={}, keys={}{}",
            self.name,
            self.topics,
            self.partitions_per_topic,
            self.message_size,
            self.producers(),
            self.consumers(),
            if self.producer_rate > 0.0 {
                format!("{} msg/s", self.producer_rate)
            } else {
                "max".into()
            },
            self.test_duration_s,
            self.warmup_duration_s,
            self.acks,
            self.linger_ms,
            self.batch_size_bytes,
            self.compression,
            self.key_distributor.name(),
            if self.consumer_group {
                ", consumer groups"
            } else {
                ""
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the three file syntaxes set the same OMB fields, and unknown fields are refused.
    #[test]
    fn file_formats_agree() {
        let yaml = "topics: 2\npartitionsPerTopic: 4\nmessageSize: 512 # bytes\nproducerRate: 5000\ntestDurationMinutes: 0.5\nkeyDistributor: RANDOM_NANO\n";
        let kv = "topics=2\npartitionsPerTopic=4\nmessageSize=512\nproducerRate=5000\ntestDurationMinutes=0.5\nkeyDistributor=RANDOM_NANO\n";
        let json = r#"{"topics": 2, "partitionsPerTopic": 4, "messageSize": 512, "producerRate": 5000, "testDurationMinutes": 0.5, "keyDistributor": "RANDOM_NANO"}"#;
        let a = Workload::parse_file(yaml, Workload::default()).unwrap();
        let b = Workload::parse_file(kv, Workload::default()).unwrap();
        let c = Workload::parse_file(json, Workload::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.test_duration_s, 30.0);
        assert_eq!(a.key_distributor, KeyDistribution::RandomNano);
        assert!(Workload::parse_file("bogus: 1", Workload::default()).is_err());
        assert!(!a.consumer_group);
        let g = Workload::parse_file("consumerGroup: true", Workload::default()).unwrap();
        assert!(g.consumer_group);
        assert!(Workload::parse_file("consumerGroup: maybe", Workload::default()).is_err());
        for s in SCENARIOS {
            Workload::scenario(s).unwrap().validate().unwrap();
        }
    }
}
