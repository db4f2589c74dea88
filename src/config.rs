//! Broker configuration: command-line flags, the optional config file, defaults and the
//! named limits every shard enforces.
//!
//! Runs on: the main thread at start-up; the resulting `BrokerConfig` is shared read-only
//! (`Arc`) by every shard.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Flags of `osprey serve`. Every flag can also be given in the config file as
/// `name = value` with the flag's long name (e.g. `data-dir = /var/lib/osprey`); flags win.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Data directory (default: ./osprey-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Bootstrap address HOST:PORT (default 127.0.0.1:9092). Shard i listens on PORT+1+i;
    /// with port 0 every listener takes a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Host name advertised to clients in Metadata (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Number of shards (cores) to run, at most the CPUs this process may use.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Optional config file of `name = value` lines.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kafka's num.partitions: partitions of an auto-created topic.
    #[arg(long)]
    pub num_partitions: Option<i32>,
    /// Kafka's auto.create.topics.enable (default true, as Kafka).
    #[arg(long)]
    pub auto_create_topics: Option<bool>,
    /// Kafka's group.initial.rebalance.delay.ms (default 3000).
    #[arg(long)]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Kafka's offsets.retention.minutes (default 10080 = 7 days).
    #[arg(long)]
    pub offsets_retention_minutes: Option<u64>,
    /// Kafka's offsets.topic.num.partitions: partitions of `__consumer_offsets` when it is
    /// created (default 16).
    #[arg(long)]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Kafka's offsets.topic.replication.factor (default 3, capped at the quorum's hosts).
    #[arg(long)]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Bytes appended to one `__consumer_offsets` partition after which its leader rewrites
    /// the current state and drops the older records (default 16 MiB).
    #[arg(long)]
    pub offsets_topic_rewrite_bytes: Option<u64>,
    /// Kafka's transaction.state.log.num.partitions: partitions of `__transaction_state`
    /// when it is created (default 16). Its replication factor is the offsets topic's.
    #[arg(long)]
    pub transaction_state_num_partitions: Option<i32>,
    /// Per-shard tail cache size in MiB (default 256).
    #[arg(long)]
    pub cache_mib: Option<usize>,
    /// Produce answers KAFKA_STORAGE_ERROR while the data directory's filesystem has less
    /// free space than this, in MiB (default 32); the partitions keep running and take
    /// writes again once space is freed. 0 turns the check off.
    #[arg(long)]
    pub disk_free_min_mib: Option<u64>,
    /// Maximum client connections per shard (default 10000).
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Default flush.ms for topics without their own.
    #[arg(long)]
    pub log_flush_interval_ms: Option<u64>,
    /// Default segment.bytes for topics without their own.
    #[arg(long)]
    pub log_segment_bytes: Option<u64>,
    /// Default retention.ms for topics without their own.
    #[arg(long)]
    pub log_retention_ms: Option<i64>,
    /// Kafka's log.cleaner.backoff.ms: pause between two passes of each shard's log
    /// cleaner over its compacted partitions (default 15000).
    #[arg(long)]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Kafka's log.cleaner.io.max.bytes.per.second, per shard: bytes the log cleaner reads
    /// plus writes per second (default 134217728 = 128 MiB/s; 0: unbounded).
    #[arg(long)]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// KRaft's node.id: this host's id in the cluster (default 0). Its shards are the
    /// Kafka nodes `node-id x 1024 + shard`.
    #[arg(long)]
    pub node_id: Option<u32>,
    /// KRaft's controller.quorum.voters: `ID@HOST:PORT,...`, the controller address of
    /// every voter host. Unset: a one-host cluster of this host alone.
    #[arg(long)]
    pub controller_quorum_voters: Option<String>,
    /// Address this host's controller listens on (default: its entry in the voters).
    #[arg(long)]
    pub controller_listen: Option<SocketAddr>,
    /// Kafka's broker.session.timeout.ms: a host silent this long is fenced and its
    /// leaderships move (default 9000).
    #[arg(long)]
    pub broker_session_timeout_ms: Option<u64>,
    /// Kafka's default.replication.factor for topics created without one (default 1).
    #[arg(long)]
    pub default_replication_factor: Option<i16>,
    /// Kafka's replica.lag.time.max.ms: a follower that has not caught up for this long
    /// leaves the ISR (default 30000).
    #[arg(long)]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Kafka's min.insync.replicas default for topics without their own (default 1).
    #[arg(long)]
    pub min_insync_replicas: Option<i32>,
    /// Admin HTTP address HOST:PORT serving GET /metrics (Prometheus) and GET /health
    /// (default 127.0.0.1:9644; with --listen on port 0, a free port). Port 0 picks a free
    /// port, printed in the ready line as admin=HOST:PORT.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// Requests read ahead of their responses on one connection.
pub const INFLIGHT_REQUESTS_PER_CONNECTION_MAX: usize = 32;
/// Bytes of request frames and of Fetch response records (read, not yet written) a shard
/// holds at once across all connections; a reader waits for room before allocating a
/// frame, a Fetch takes only what is free (see `handlers::fetch`).
pub const REQUEST_MEMORY_PER_SHARD_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Record bytes of Fetch responses one connection holds at once (read and not yet written
/// to the socket): a client that pipelines fetches and does not read their answers waits
/// here instead of taking the shard's memory. One largest response fits.
pub const FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX: u64 = 64 << 20;
const _: () = assert!(
    FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX
        >= crate::handlers::fetch::FETCH_RESPONSE_MAX_BYTES as u64
);
const _: () = assert!(FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX < REQUEST_MEMORY_PER_SHARD_MAX_BYTES);
/// How often a shard reopens partitions a failure stopped or could not open
/// (`Shard::reopen_partitions`).
pub const PARTITION_REOPEN_INTERVAL_MS: u64 = 1000;
/// Capacity of each per-pair cross-shard channel (router); >= 1024 per glommio-notes.
pub const ROUTER_CHANNEL_CAPACITY: usize = 1024;
/// Topics the controller accepts.
pub const TOPICS_MAX: usize = 10_000;
/// Partitions one topic may have.
pub const PARTITIONS_PER_TOPIC_MAX: i32 = 10_000;
/// Longest Fetch max_wait_ms honoured.
/// Partitions `__consumer_offsets` may be created with (Kafka bounds it by num partitions).
pub const OFFSETS_TOPIC_PARTITIONS_MAX: i32 = 1_000;
/// Smallest `--offsets-topic-rewrite-bytes` (a rewrite per commit would never end).
pub const OFFSETS_TOPIC_REWRITE_BYTES_MIN: u64 = 4096;
pub const FETCH_MAX_WAIT_CAP_MS: u64 = 30_000;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This host's id (`--node-id`).
    pub node_id: u32,
    /// The controller quorum's voters (empty: this host alone).
    pub voters: Vec<(u64, String)>,
    /// Where this host's controller listens (voters of a multi-host quorum).
    pub controller_listen: Option<SocketAddr>,
    pub broker_session_timeout_ms: u64,
    pub default_replication_factor: i16,
    pub replica_lag_time_max_ms: u64,
    pub min_insync_replicas: i32,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise: String,
    pub cores: Option<usize>,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub group_initial_rebalance_delay_ms: u64,
    pub offsets_retention_minutes: u64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_rewrite_bytes: u64,
    pub transaction_state_num_partitions: i32,
    pub cache_bytes: usize,
    pub disk_free_min_bytes: u64,
    pub connections_max: usize,
    pub log_flush_interval_ms: u64,
    pub log_segment_bytes: u64,
    pub log_retention_ms: i64,
    /// The admin HTTP address (`admin`).
    pub admin_listen: SocketAddr,
    pub log_cleaner_backoff_ms: u64,
    pub log_cleaner_io_max_bytes_per_second: u64,
}

/// Redpanda's admin API port, where /metrics and /health are served by default.
pub const ADMIN_PORT_DEFAULT: u16 = 9644;

#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

fn parse_file(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(ConfigError(format!(
                "{}:{}: expected `name = value`",
                path.display(),
                n + 1
            )));
        };
        let v = v.trim().trim_matches('"');
        out.push((k.trim().replace(['.', '_'], "-"), v.to_string()));
    }
    Ok(out)
}

fn parse_value<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| ConfigError(format!("config `{key}`: cannot parse `{v}`")))
}

impl BrokerConfig {
    pub fn from_args(args: &ServeArgs) -> Result<BrokerConfig, ConfigError> {
        let mut a = args.clone();
        if let Some(path) = &args.config {
            // File values fill only what the flags left unset.
            for (k, v) in parse_file(path)? {
                match k.as_str() {
                    "data-dir" => a.data_dir = a.data_dir.or(Some(PathBuf::from(v))),
                    "listen" => a.listen = a.listen.or(Some(parse_value(&k, &v)?)),
                    "advertise" => a.advertise = a.advertise.or(Some(v)),
                    "cores" => a.cores = a.cores.or(Some(parse_value(&k, &v)?)),
                    "num-partitions" => {
                        a.num_partitions = a.num_partitions.or(Some(parse_value(&k, &v)?))
                    }
                    "auto-create-topics" | "auto-create-topics-enable" => {
                        a.auto_create_topics = a.auto_create_topics.or(Some(parse_value(&k, &v)?))
                    }
                    "group-initial-rebalance-delay-ms" => {
                        a.group_initial_rebalance_delay_ms = a
                            .group_initial_rebalance_delay_ms
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "offsets-retention-minutes" => {
                        a.offsets_retention_minutes =
                            a.offsets_retention_minutes.or(Some(parse_value(&k, &v)?))
                    }
                    "offsets-topic-num-partitions" => {
                        a.offsets_topic_num_partitions = a
                            .offsets_topic_num_partitions
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "offsets-topic-replication-factor" => {
                        a.offsets_topic_replication_factor = a
                            .offsets_topic_replication_factor
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "offsets-topic-rewrite-bytes" => {
                        a.offsets_topic_rewrite_bytes =
                            a.offsets_topic_rewrite_bytes.or(Some(parse_value(&k, &v)?))
                    }
                    "transaction-state-num-partitions" | "transaction-state-log-num-partitions" => {
                        a.transaction_state_num_partitions = a
                            .transaction_state_num_partitions
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "cache-mib" => a.cache_mib = a.cache_mib.or(Some(parse_value(&k, &v)?)),
                    "disk-free-min-mib" => {
                        a.disk_free_min_mib = a.disk_free_min_mib.or(Some(parse_value(&k, &v)?))
                    }
                    "connections-max" => {
                        a.connections_max = a.connections_max.or(Some(parse_value(&k, &v)?))
                    }
                    "log-flush-interval-ms" => {
                        a.log_flush_interval_ms =
                            a.log_flush_interval_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "log-segment-bytes" => {
                        a.log_segment_bytes = a.log_segment_bytes.or(Some(parse_value(&k, &v)?))
                    }
                    "log-retention-ms" => {
                        a.log_retention_ms = a.log_retention_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "log-cleaner-io-max-bytes-per-second" => {
                        a.log_cleaner_io_max_bytes_per_second = a
                            .log_cleaner_io_max_bytes_per_second
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "log-cleaner-backoff-ms" => {
                        a.log_cleaner_backoff_ms =
                            a.log_cleaner_backoff_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "node-id" => a.node_id = a.node_id.or(Some(parse_value(&k, &v)?)),
                    "controller-quorum-voters" => {
                        a.controller_quorum_voters = a.controller_quorum_voters.or(Some(v))
                    }
                    "broker-session-timeout-ms" => {
                        a.broker_session_timeout_ms =
                            a.broker_session_timeout_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "default-replication-factor" => {
                        a.default_replication_factor =
                            a.default_replication_factor.or(Some(parse_value(&k, &v)?))
                    }
                    "replica-lag-time-max-ms" => {
                        a.replica_lag_time_max_ms =
                            a.replica_lag_time_max_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "min-insync-replicas" => {
                        a.min_insync_replicas = a.min_insync_replicas.or(Some(parse_value(&k, &v)?))
                    }
                    "admin-listen" => {
                        a.admin_listen = a.admin_listen.or(Some(parse_value(&k, &v)?))
                    }
                    "controller-listen" => {
                        a.controller_listen = a.controller_listen.or(Some(parse_value(&k, &v)?))
                    }
                    _ => {
                        return Err(ConfigError(format!(
                            "{}: unknown setting `{k}`",
                            path.display()
                        )));
                    }
                }
            }
        }
        let listen = a
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092)));
        let advertise = a.advertise.unwrap_or_else(|| match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) if ip.is_unspecified() => "::1".to_string(),
            ip => ip.to_string(),
        });
        let num_partitions = a.num_partitions.unwrap_or(1);
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&num_partitions) {
            return Err(ConfigError(format!(
                "num-partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}"
            )));
        }
        if a.cores == Some(0) {
            return Err(ConfigError("--cores must be at least 1".into()));
        }
        let node_id = a.node_id.unwrap_or(0);
        if node_id as i32 > i32::MAX / crate::metadata::NODES_PER_HOST - 1 {
            return Err(ConfigError(format!("--node-id {node_id} is too large")));
        }
        let voters = match &a.controller_quorum_voters {
            Some(v) => crate::cluster::parse_voters(v).map_err(ConfigError)?,
            None => Vec::new(),
        };
        let controller_listen = match a.controller_listen {
            Some(l) => Some(l),
            None => match voters.iter().find(|(id, _)| *id == node_id as u64) {
                Some((_, addr)) => Some(addr.parse().map_err(|_| {
                    ConfigError(format!(
                        "controller address `{addr}` of node {node_id} is not IP:PORT; give --controller-listen"
                    ))
                })?),
                None => None,
            },
        };
        let default_replication_factor = a.default_replication_factor.unwrap_or(1);
        if default_replication_factor < 1 {
            return Err(ConfigError(
                "default-replication-factor must be at least 1".into(),
            ));
        }
        let min_insync_replicas = a.min_insync_replicas.unwrap_or(1);
        if min_insync_replicas < 1 {
            return Err(ConfigError("min-insync-replicas must be at least 1".into()));
        }
        // A broker on free ports (tests, several brokers on one host) takes a free admin
        // port too, instead of all of them contending for the default one.
        let admin_listen = a.admin_listen.unwrap_or_else(|| {
            let port = if listen.port() == 0 {
                0
            } else {
                ADMIN_PORT_DEFAULT
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        });
        Ok(BrokerConfig {
            admin_listen,
            broker_session_timeout_ms: a.broker_session_timeout_ms.unwrap_or(9000).max(100),
            default_replication_factor,
            replica_lag_time_max_ms: a.replica_lag_time_max_ms.unwrap_or(30_000).max(100),
            min_insync_replicas,
            node_id,
            voters,
            controller_listen,
            data_dir: a.data_dir.unwrap_or_else(|| PathBuf::from("osprey-data")),
            listen,
            advertise,
            cores: a.cores,
            num_partitions,
            auto_create_topics: a.auto_create_topics.unwrap_or(true),
            group_initial_rebalance_delay_ms: a.group_initial_rebalance_delay_ms.unwrap_or(3000),
            offsets_retention_minutes: a.offsets_retention_minutes.unwrap_or(7 * 24 * 60),
            offsets_topic_num_partitions: a
                .offsets_topic_num_partitions
                .unwrap_or(crate::groups::OFFSETS_TOPIC_PARTITIONS_DEFAULT)
                .clamp(1, OFFSETS_TOPIC_PARTITIONS_MAX),
            offsets_topic_replication_factor: a
                .offsets_topic_replication_factor
                .unwrap_or(crate::groups::OFFSETS_TOPIC_REPLICATION_FACTOR_DEFAULT)
                .max(1),
            offsets_topic_rewrite_bytes: a
                .offsets_topic_rewrite_bytes
                .unwrap_or(crate::groups::REWRITE_INTERVAL_LOG_BYTES)
                .max(OFFSETS_TOPIC_REWRITE_BYTES_MIN),
            transaction_state_num_partitions: a
                .transaction_state_num_partitions
                .unwrap_or(crate::txn::TXN_TOPIC_PARTITIONS_DEFAULT)
                .clamp(1, OFFSETS_TOPIC_PARTITIONS_MAX),
            cache_bytes: a.cache_mib.unwrap_or(256) * 1024 * 1024,
            disk_free_min_bytes: a
                .disk_free_min_mib
                .map_or(shards::DISK_FREE_MIN_BYTES_DEFAULT, |m| {
                    m.saturating_mul(1 << 20)
                }),
            connections_max: a.connections_max.unwrap_or(10_000),
            log_flush_interval_ms: a.log_flush_interval_ms.unwrap_or(1000),
            log_segment_bytes: a.log_segment_bytes.unwrap_or(1 << 30),
            log_retention_ms: a.log_retention_ms.unwrap_or(7 * 24 * 3600 * 1000),
            log_cleaner_backoff_ms: a
                .log_cleaner_backoff_ms
                .unwrap_or(shards::CLEANER_BACKOFF_DEFAULT_MS)
                .max(1),
            log_cleaner_io_max_bytes_per_second: a
                .log_cleaner_io_max_bytes_per_second
                .unwrap_or(shards::CLEANER_IO_DEFAULT_BYTES_PER_SEC),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // With no flags the broker gets Kafka-like defaults on 127.0.0.1:9092 under ./osprey-data.
    #[test]
    fn defaults_work_without_flags() {
        let c = BrokerConfig::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092".parse::<SocketAddr>().unwrap());
        assert_eq!(c.advertise, "127.0.0.1");
        assert_eq!(c.data_dir, PathBuf::from("osprey-data"));
        assert!(c.auto_create_topics);
        assert_eq!(c.group_initial_rebalance_delay_ms, 3000);
        assert_eq!(
            c.admin_listen,
            "127.0.0.1:9644".parse::<SocketAddr>().unwrap()
        );
        let any = ServeArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let c = BrokerConfig::from_args(&any).unwrap();
        assert_eq!(c.admin_listen.port(), 0);
    }

    // The config file fills unset values, flags override it, and unknown keys are refused.
    #[test]
    fn config_file_and_flag_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("osprey.conf");
        std::fs::write(
            &path,
            "# c\ndata-dir = /tmp/x\ncores = 1\nnum.partitions = 3\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            cores: Some(2),
            ..Default::default()
        };
        let c = BrokerConfig::from_args(&args).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.cores, Some(2));
        assert_eq!(c.num_partitions, 3);
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(BrokerConfig::from_args(&args).is_err());
    }
}
