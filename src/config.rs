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
    /// Kafka's listeners: `NAME://HOST:PORT,...`, each with its own bootstrap port PORT
    /// and shard i on PORT+1+i. With `--listen` too, that address is one more listener
    /// named PLAINTEXT. Default: `PLAINTEXT://` the `--listen` address.
    #[arg(long)]
    pub listeners: Option<String>,
    /// Kafka's listener.security.protocol.map: `NAME:PROTOCOL,...` (PLAINTEXT, SSL,
    /// SASL_PLAINTEXT, SASL_SSL). Names equal to a protocol map to it by default.
    #[arg(long)]
    pub listener_security_protocol_map: Option<String>,
    /// Kafka's advertised.listeners: `NAME://HOST[:PORT],...`, what Metadata tells clients
    /// of that listener (default: the listener's own address, or `--advertise`). A PORT
    /// other than 0 advertises shard i at PORT+1+i (port forwarding).
    #[arg(long)]
    pub advertised_listeners: Option<String>,
    /// Kafka's sasl.enabled.mechanisms on SASL listeners: PLAIN, SCRAM-SHA-256,
    /// SCRAM-SHA-512 (default: both SCRAM ones, and PLAIN when --sasl-plain-users is given).
    #[arg(long)]
    pub sasl_enabled_mechanisms: Option<String>,
    /// Kafka's connections.max.reauth.ms: SASL sessions last this long, then the client
    /// re-authenticates on its connection (KIP-368) or it is closed (default 0: forever).
    #[arg(long)]
    pub connections_max_reauth_ms: Option<u64>,
    /// PLAIN's users: a file of `name = password` lines (read at start-up).
    #[arg(long)]
    pub sasl_plain_users: Option<PathBuf>,
    /// Kafka's authorizer.class.name: `acl` turns on the ACL authorizer (CreateAcls...);
    /// without it every request is allowed, as today.
    #[arg(long)]
    pub authorizer: Option<String>,
    /// Kafka's super.users: `User:admin;User:ops`, allowed everything by the authorizer.
    #[arg(long)]
    pub super_users: Option<String>,
    /// Kafka's allow.everyone.if.no.acl.found (default false): a resource no ACL names is
    /// open to everyone.
    #[arg(long)]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Server certificate chain (PEM) of SSL and SASL_SSL listeners.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Kafka's ssl.client.auth: none (default), requested or required. A client
    /// certificate's subject becomes the principal on SSL listeners.
    #[arg(long)]
    pub ssl_client_auth: Option<String>,
    /// Kafka's listener.name.<name>.ssl.client.auth, per listener: `NAME=none|requested|
    /// required,...`; listeners not named take `--ssl-client-auth`. In the config file also
    /// as `listener.name.<name>.ssl.client.auth = required`.
    #[arg(long)]
    pub listener_ssl_client_auth: Option<String>,
    /// Kafka's inter.broker.listener.name: the listener of other hosts this host's
    /// follower fetchers and transaction markers connect to, with its security protocol
    /// (default: the first listener).
    #[arg(long)]
    pub inter_broker_listener_name: Option<String>,
    /// Kafka's sasl.mechanism.inter.broker.protocol on a SASL inter-broker listener:
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default: the first of
    /// --sasl-enabled-mechanisms; Kafka's default GSSAPI is not supported).
    #[arg(long)]
    pub sasl_mechanism_inter_broker_protocol: Option<String>,
    /// The broker's own SASL credentials on a SASL inter-broker listener: a properties file
    /// with `username=` and `password=` (or `sasl.username`/`sasl.password`, or
    /// `sasl.jaas.config`), like the CLI's --command-config. Read at start-up.
    #[arg(long)]
    pub inter_broker_credentials: Option<PathBuf>,
    /// Mutual TLS on the controller quorum's wire (`--controller-listen` and connections
    /// to the voters): each host presents `--tls-cert` and accepts only peers whose
    /// certificate chains to `--tls-ca` (default false: plain TCP). Kafka's equivalent is
    /// an SSL controller listener. Every host of the cluster must agree.
    #[arg(long)]
    pub controller_tls: Option<bool>,
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
    /// Kafka's group.consumer.session.timeout.ms (default 45000): a consumer-protocol
    /// member not heard from for this long is removed from its group.
    #[arg(long)]
    pub group_consumer_session_timeout_ms: Option<u64>,
    /// Kafka's group.consumer.heartbeat.interval.ms (default 5000): how often
    /// consumer-protocol members are told to heartbeat.
    #[arg(long)]
    pub group_consumer_heartbeat_interval_ms: Option<u64>,
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
    /// Kafka's transaction.partition.verification.enable (KIP-890 part 1, default true):
    /// a partition's leader asks the transaction coordinator before it appends a
    /// producer's first transactional batch there.
    #[arg(long)]
    pub transaction_partition_verification_enable: Option<bool>,
    /// Kafka's transactional.id.expiration.ms (default 604800000 = 7 days): a
    /// transactional id with no open transaction and no request for this long is removed.
    #[arg(long)]
    pub transactional_id_expiration_ms: Option<u64>,
    /// Tail cache size in MiB, shared out over the shards (at least 16 MiB each). Default:
    /// derived from iotune.json when there is one, else 256.
    #[arg(long)]
    pub cache_mib: Option<usize>,
    /// Largest write round of a partition, KiB (clamped to 4 KiB..8 MiB). Default: derived
    /// from iotune.json when there is one, else 512.
    #[arg(long)]
    pub write_round_max_kib: Option<usize>,
    /// Concurrent DMA writes per shard (clamped to 1..64). Default: derived from
    /// iotune.json when there is one, else 8.
    #[arg(long)]
    pub inflight_writes_max: Option<usize>,
    /// The disk measurement `osprey iotune` wrote, which sizes the write rounds, in-flight
    /// writes and cache that no flag sets (default: DATA_DIR/iotune.json).
    #[arg(long)]
    pub iotune_file: Option<PathBuf>,
    /// Produce answers KAFKA_STORAGE_ERROR while the data directory's filesystem has less
    /// free space than this, in MiB (default 32); the partitions keep running and take
    /// writes again once space is freed. 0 turns the check off.
    #[arg(long)]
    pub disk_free_min_mib: Option<u64>,
    /// Maximum client connections per shard (default 10000).
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// Membership memory one shard's consumer groups may hold (member ids, protocol
    /// metadata, assignments), in bytes (default 268435456 = 256 MiB); members beyond get
    /// GROUP_MAX_SIZE_REACHED.
    #[arg(long)]
    pub group_membership_max_bytes: Option<u64>,
    /// The longest a request frame may take to arrive once its first byte has (length
    /// prefix and body), in ms (default 30000, Kafka's request.timeout.ms): a client that
    /// trickles a frame in (slowloris) is closed then, its request memory freed.
    #[arg(long)]
    pub frame_read_timeout_ms: Option<u64>,
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
    /// Kafka's auto.leader.rebalance.enable: the controller moves leadership back to each
    /// partition's preferred replica once it is in sync again (default true; with false,
    /// only ElectLeaders / `kafka-leader-election.sh` does).
    #[arg(long)]
    pub auto_leader_rebalance_enable: Option<bool>,
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
    pub auto_leader_rebalance_enable: bool,
    pub default_replication_factor: i16,
    pub replica_lag_time_max_ms: u64,
    pub min_insync_replicas: i32,
    pub data_dir: PathBuf,
    /// The first listener's bind address and advertised host (what `--listen` and
    /// `--advertise` name when no `--listeners` is given).
    pub listen: SocketAddr,
    pub advertise: String,
    /// Every client listener, the first one the default; never empty.
    pub listeners: Vec<Listener>,
    /// SASL mechanisms offered on SASL listeners, in Kafka's names.
    pub sasl_mechanisms: Vec<String>,
    pub sasl_plain_users: crate::sasl::PlainUsers,
    /// KIP-368 session lifetime of SASL connections; 0 = no re-authentication.
    pub connections_max_reauth_ms: u64,
    /// The ACL authorizer's settings; `None`: no authorizer, everything allowed.
    pub authorizer: Option<crate::acl::AuthorizerConfig>,
    /// TLS material of SSL and SASL_SSL listeners (checked at start-up); its `client_auth`
    /// is `--ssl-client-auth`, each listener's own is `Listener::ssl_client_auth`.
    pub tls: Option<crate::tls::TlsSettings>,
    /// How this host connects to other hosts (follower fetchers, transaction markers).
    pub inter_broker: InterBroker,
    /// Mutual TLS on the controller wire (`--controller-tls`).
    pub controller_tls: bool,
    pub cores: Option<usize>,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_consumer_session_timeout_ms: u64,
    pub group_consumer_heartbeat_interval_ms: u64,
    pub offsets_retention_minutes: u64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    pub offsets_topic_rewrite_bytes: u64,
    pub transaction_state_num_partitions: i32,
    pub transaction_partition_verification_enable: bool,
    pub transactional_id_expiration_ms: u64,
    /// Tail cache over all shards, bytes.
    pub cache_bytes: usize,
    /// Largest write round of a partition and the queued bytes the next round waits for
    /// (`shards::StoreConfig::round_max_bytes`, `round_min_bytes`).
    pub write_round_max_bytes: usize,
    pub write_round_min_bytes: usize,
    /// Concurrent DMA writes per shard (`shards::StoreConfig::inflight_writes_max`).
    pub inflight_writes_max: usize,
    /// Where `serve` reads iotune's measurement (`ops::apply_iotune`).
    pub iotune_file: PathBuf,
    /// Which of the sizes above a flag or the config file set: iotune.json never
    /// overrides those.
    pub sizes_set: SizesSet,
    pub disk_free_min_bytes: u64,
    pub connections_max: usize,
    pub frame_read_timeout_ms: u64,
    pub group_membership_max_bytes: u64,
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
/// `--data-dir` default (also `osprey iotune`'s default directory, so that both name the
/// same iotune.json).
pub const DATA_DIR_DEFAULT: &str = "osprey-data";
/// `--cache-mib` default when no iotune.json sizes it.
pub const CACHE_MIB_DEFAULT: usize = 256;
/// `--inflight-writes-max` default when no iotune.json sizes it.
pub const INFLIGHT_WRITES_DEFAULT: usize = 8;

/// Which write-path and cache sizes a flag (or the config file) set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SizesSet {
    pub cache: bool,
    pub write_round: bool,
    pub inflight_writes: bool,
}
/// Kafka's security protocols of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Clients must authenticate with SASL before anything but ApiVersions/SaslHandshake.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// The connection is wrapped in TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// One client listener: a bootstrap address (shard i on its port + 1 + i), its security
/// protocol, and what Metadata advertises to clients that connected through it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Kafka's listener name (upper case), e.g. `PLAINTEXT`, `SASL_SSL`, `INTERNAL`.
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    pub advertise_host: String,
    /// `Some(p)`: advertise the bootstrap as `p` and shard i as p+1+i instead of the bound
    /// ports.
    pub advertise_port: Option<u16>,
    /// Kafka's listener.name.<name>.ssl.client.auth (default `--ssl-client-auth`); used on
    /// SSL and SASL_SSL listeners only.
    pub ssl_client_auth: crate::tls::ClientAuth,
}

/// Kafka's inter-broker settings: which listener of the other hosts this host's own
/// connections go to, and how they are secured there.
#[derive(Clone, Debug, PartialEq)]
pub struct InterBroker {
    /// `--inter-broker-listener-name` (default: the first listener).
    pub listener: String,
    pub protocol: SecurityProtocol,
    /// The broker's SASL identity (SASL_* listeners only).
    pub sasl: Option<crate::client::security::SaslSettings>,
    /// The CA to trust and the broker's own certificate and key, presented when the other
    /// host asks for one (SSL and SASL_SSL listeners only).
    pub tls: Option<crate::client::security::TlsFiles>,
}

impl InterBroker {
    /// The client's security settings (reads the PEM files: once per shard and reload).
    pub fn security(&self) -> Result<crate::client::security::Security, String> {
        use crate::client::security::{Security, SecurityProtocol as P};
        let protocol = match self.protocol {
            SecurityProtocol::Plaintext => P::Plaintext,
            SecurityProtocol::Ssl => P::Ssl,
            SecurityProtocol::SaslPlaintext => P::SaslPlaintext,
            SecurityProtocol::SaslSsl => P::SaslSsl,
        };
        Security::build(
            protocol,
            self.sasl.clone(),
            &self.tls.clone().unwrap_or_default(),
        )
    }
}

/// The largest `--inter-broker-credentials` file read (bytes): a few lines.
pub const INTER_BROKER_CREDENTIALS_MAX_BYTES: u64 = 64 * 1024;

/// Reads `--inter-broker-credentials`: `username`/`password` (or Kafka client's
/// `sasl.username`/`sasl.password`, or `sasl.jaas.config`).
fn read_credentials(path: &Path) -> Result<(String, String), ConfigError> {
    let err = |why: String| {
        ConfigError(format!(
            "--inter-broker-credentials {}: {why}",
            path.display()
        ))
    };
    let len = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .len();
    if len > INTER_BROKER_CREDENTIALS_MAX_BYTES {
        return Err(err(format!(
            "larger than {INTER_BROKER_CREDENTIALS_MAX_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let props = crate::client::security::parse_properties(&text).map_err(err)?;
    let get = |k: &str| {
        props
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut user = get("username").or_else(|| get("sasl.username"));
    let mut pass = get("password").or_else(|| get("sasl.password"));
    if let Some(jaas) = get("sasl.jaas.config") {
        let (u, p) = crate::client::security::jaas_credentials(&jaas).map_err(err)?;
        user = user.or(u);
        pass = pass.or(p);
    }
    match (user, pass) {
        (Some(u), Some(p)) => Ok((u, p)),
        _ => Err(err("needs username= and password=".into())),
    }
}

/// The inter-broker settings. In a cluster (`cluster`: a controller quorum is configured),
/// a SASL inter-broker listener needs credentials and a mechanism the listener offers,
/// and the TLS files must load; a host without a quorum never connects to another, so only
/// the listener's name is checked there.
fn inter_broker(
    a: &ServeArgs,
    listeners: &[Listener],
    sasl_mechanisms: &[String],
    cluster: bool,
) -> Result<InterBroker, ConfigError> {
    let l = match &a.inter_broker_listener_name {
        None => &listeners[0],
        Some(n) => {
            let n = n.trim().to_ascii_uppercase();
            listeners.iter().find(|l| l.name == n).ok_or_else(|| {
                ConfigError(format!(
                    "inter-broker-listener-name {n} is not a listener ({})",
                    listeners
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?
        }
    };
    let mut sasl = None;
    if l.protocol.is_sasl() && cluster {
        let mechanism = match &a.sasl_mechanism_inter_broker_protocol {
            Some(m) => m.trim().to_ascii_uppercase(),
            None => sasl_mechanisms.first().cloned().unwrap_or_default(),
        };
        if !sasl_mechanisms.contains(&mechanism) {
            return Err(ConfigError(format!(
                "sasl-mechanism-inter-broker-protocol {mechanism} is not offered on listener {} (--sasl-enabled-mechanisms: {})",
                l.name,
                sasl_mechanisms.join(", ")
            )));
        }
        let mechanism = crate::client::security::SaslMechanism::parse(&mechanism).ok_or_else(|| {
            ConfigError(format!(
                "sasl-mechanism-inter-broker-protocol {mechanism}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ))
        })?;
        let Some(path) = &a.inter_broker_credentials else {
            return Err(ConfigError(format!(
                "the inter-broker listener {} is {}: give the broker's SASL user with --inter-broker-credentials FILE (username= and password=)",
                l.name,
                l.protocol.name()
            )));
        };
        let (username, password) = read_credentials(path)?;
        sasl = Some(crate::client::security::SaslSettings {
            mechanism,
            username,
            password,
        });
    }
    let tls = l
        .protocol
        .is_tls()
        .then(|| crate::client::security::TlsFiles {
            ca: a.tls_ca.clone(),
            cert: a.tls_cert.clone(),
            key: a.tls_key.clone(),
            skip_hostname_check: false,
        });
    let ib = InterBroker {
        listener: l.name.clone(),
        protocol: l.protocol,
        sasl,
        tls,
    };
    if cluster {
        // The CA and the broker's own certificate as a client: fail now, naming the file.
        ib.security()
            .map_err(|e| ConfigError(format!("inter-broker listener {}: {e}", l.name)))?;
    }
    Ok(ib)
}

/// `NAME=none|requested|required,...` (`--listener-ssl-client-auth`), names upper-cased.
fn parse_listener_client_auth(
    s: &str,
) -> Result<Vec<(String, crate::tls::ClientAuth)>, ConfigError> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, v) = entry.split_once(['=', ':']).ok_or_else(|| {
            ConfigError(format!(
                "listener-ssl-client-auth `{entry}` is not NAME=VALUE"
            ))
        })?;
        let auth = crate::tls::ClientAuth::parse(v.trim()).ok_or_else(|| {
            ConfigError(format!(
                "listener-ssl-client-auth `{entry}`: expected none, requested or required"
            ))
        })?;
        out.push((name.trim().to_ascii_uppercase(), auth));
    }
    Ok(out)
}

/// Listeners a host serves at most (each costs one port per shard plus a bootstrap port).
pub const LISTENERS_MAX: usize = 8;

/// `NAME://HOST:PORT` (HOST may be empty, meaning all interfaces as in Kafka, or an IPv6
/// address in brackets).
fn parse_endpoint(s: &str) -> Result<(String, String, u16), ConfigError> {
    let bad = || ConfigError(format!("listener `{s}` is not NAME://HOST:PORT"));
    let (name, rest) = s.trim().split_once("://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = name.trim().to_ascii_uppercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad());
    }
    Ok((name, host, port))
}

fn default_advertise(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => "::1".to_string(),
        ip => ip.to_string(),
    }
}

fn parse_listeners(a: &ServeArgs) -> Result<Vec<Listener>, ConfigError> {
    let mut map: Vec<(String, SecurityProtocol)> = Vec::new();
    if let Some(m) = &a.listener_security_protocol_map {
        for entry in m.split(',').filter(|e| !e.trim().is_empty()) {
            let (name, proto) = entry.trim().split_once(':').ok_or_else(|| {
                ConfigError(format!(
                    "security protocol map entry `{entry}` is not NAME:PROTOCOL"
                ))
            })?;
            let proto = SecurityProtocol::parse(proto.trim()).ok_or_else(|| {
                ConfigError(format!(
                    "unknown security protocol `{proto}` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)"
                ))
            })?;
            map.push((name.trim().to_ascii_uppercase(), proto));
        }
    }
    let protocol_of = |name: &str| {
        map.iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .or_else(|| SecurityProtocol::parse(name))
            .ok_or_else(|| {
                ConfigError(format!(
                    "listener {name} has no security protocol: add {name}:PROTOCOL to --listener-security-protocol-map"
                ))
            })
    };
    let mut out: Vec<Listener> = Vec::new();
    let plain = |addr: SocketAddr| Listener {
        name: "PLAINTEXT".into(),
        protocol: SecurityProtocol::Plaintext,
        addr,
        advertise_host: a
            .advertise
            .clone()
            .unwrap_or_else(|| default_advertise(addr.ip())),
        advertise_port: None,
        ssl_client_auth: crate::tls::ClientAuth::None,
    };
    if let Some(addr) = a.listen {
        out.push(plain(addr));
    }
    if let Some(ls) = &a.listeners {
        for entry in ls.split(',').filter(|e| !e.trim().is_empty()) {
            let (name, host, port) = parse_endpoint(entry)?;
            let ip: IpAddr = if host.is_empty() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                host.parse().map_err(|_| {
                    ConfigError(format!(
                        "listener `{entry}`: bind to an IP address (`{host}` is not one)"
                    ))
                })?
            };
            let addr = SocketAddr::new(ip, port);
            out.push(Listener {
                protocol: protocol_of(&name)?,
                name,
                addr,
                advertise_host: a.advertise.clone().unwrap_or_else(|| default_advertise(ip)),
                advertise_port: None,
                ssl_client_auth: crate::tls::ClientAuth::None,
            });
        }
    }
    if out.is_empty() {
        out.push(plain(SocketAddr::from(([127, 0, 0, 1], 9092))));
    }
    for (i, l) in out.iter().enumerate() {
        if out[..i].iter().any(|o| o.name == l.name) {
            return Err(ConfigError(format!(
                "listener name {} is used twice (--listen is the listener PLAINTEXT)",
                l.name
            )));
        }
    }
    if out.len() > LISTENERS_MAX {
        return Err(ConfigError(format!(
            "{} listeners; at most {LISTENERS_MAX}",
            out.len()
        )));
    }
    if let Some(adv) = &a.advertised_listeners {
        for entry in adv.split(',').filter(|e| !e.trim().is_empty()) {
            let with_port = if entry
                .trim()
                .rsplit_once("://")
                .is_some_and(|(_, r)| !r.contains(':') || r.ends_with(']'))
            {
                format!("{}:0", entry.trim())
            } else {
                entry.trim().to_string()
            };
            let (name, host, port) = parse_endpoint(&with_port)?;
            let l = out.iter_mut().find(|l| l.name == name).ok_or_else(|| {
                ConfigError(format!(
                    "advertised listener {name} is not among the listeners"
                ))
            })?;
            if !host.is_empty() {
                l.advertise_host = host;
            }
            l.advertise_port = (port != 0).then_some(port);
        }
    }
    Ok(out)
}

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
        // Per-listener client auth lines of the file, used when the flag is not given.
        let mut file_client_auth: Vec<String> = Vec::new();
        if let Some(path) = &args.config {
            // File values fill only what the flags left unset.
            for (k, v) in parse_file(path)? {
                match k.as_str() {
                    "data-dir" => a.data_dir = a.data_dir.or(Some(PathBuf::from(v))),
                    "listen" => a.listen = a.listen.or(Some(parse_value(&k, &v)?)),
                    "advertise" => a.advertise = a.advertise.or(Some(v)),
                    "listeners" => a.listeners = a.listeners.or(Some(v)),
                    "listener-security-protocol-map" => {
                        a.listener_security_protocol_map =
                            a.listener_security_protocol_map.or(Some(v))
                    }
                    "sasl-enabled-mechanisms" => {
                        a.sasl_enabled_mechanisms = a.sasl_enabled_mechanisms.or(Some(v))
                    }
                    "connections-max-reauth-ms" => {
                        a.connections_max_reauth_ms =
                            a.connections_max_reauth_ms.or(Some(parse_value(&k, &v)?))
                    }
                    "sasl-plain-users" => {
                        a.sasl_plain_users = a.sasl_plain_users.or(Some(PathBuf::from(v)))
                    }
                    "authorizer" | "authorizer-class-name" => {
                        a.authorizer = a.authorizer.or(Some(v))
                    }
                    "super-users" => a.super_users = a.super_users.or(Some(v)),
                    "allow-everyone-if-no-acl-found" => {
                        a.allow_everyone_if_no_acl_found = a
                            .allow_everyone_if_no_acl_found
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "tls-cert" => a.tls_cert = a.tls_cert.or(Some(PathBuf::from(v))),
                    "tls-key" => a.tls_key = a.tls_key.or(Some(PathBuf::from(v))),
                    "tls-ca" => a.tls_ca = a.tls_ca.or(Some(PathBuf::from(v))),
                    "ssl-client-auth" => a.ssl_client_auth = a.ssl_client_auth.or(Some(v)),
                    "listener-ssl-client-auth" => {
                        file_client_auth.push(v);
                    }
                    // Kafka's own form, one line per listener.
                    k if k.starts_with("listener-name-") && k.ends_with("-ssl-client-auth") => {
                        let name = &k["listener-name-".len()..k.len() - "-ssl-client-auth".len()];
                        file_client_auth.push(format!("{name}={v}"));
                    }
                    "inter-broker-listener-name" => {
                        a.inter_broker_listener_name = a.inter_broker_listener_name.or(Some(v))
                    }
                    "sasl-mechanism-inter-broker-protocol" => {
                        a.sasl_mechanism_inter_broker_protocol =
                            a.sasl_mechanism_inter_broker_protocol.or(Some(v))
                    }
                    "controller-tls" => {
                        a.controller_tls = a.controller_tls.or(Some(parse_value(&k, &v)?))
                    }
                    "inter-broker-credentials" => {
                        a.inter_broker_credentials =
                            a.inter_broker_credentials.or(Some(PathBuf::from(v)))
                    }
                    "advertised-listeners" => {
                        a.advertised_listeners = a.advertised_listeners.or(Some(v))
                    }
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
                    "group-consumer-session-timeout-ms" => {
                        a.group_consumer_session_timeout_ms = a
                            .group_consumer_session_timeout_ms
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "group-consumer-heartbeat-interval-ms" => {
                        a.group_consumer_heartbeat_interval_ms = a
                            .group_consumer_heartbeat_interval_ms
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
                    "transaction-partition-verification-enable" => {
                        a.transaction_partition_verification_enable = a
                            .transaction_partition_verification_enable
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "transactional-id-expiration-ms" => {
                        a.transactional_id_expiration_ms = a
                            .transactional_id_expiration_ms
                            .or(Some(parse_value(&k, &v)?))
                    }
                    "cache-mib" => a.cache_mib = a.cache_mib.or(Some(parse_value(&k, &v)?)),
                    "write-round-max-kib" => {
                        a.write_round_max_kib = a.write_round_max_kib.or(Some(parse_value(&k, &v)?))
                    }
                    "inflight-writes-max" => {
                        a.inflight_writes_max = a.inflight_writes_max.or(Some(parse_value(&k, &v)?))
                    }
                    "iotune-file" => a.iotune_file = a.iotune_file.or(Some(PathBuf::from(&v))),
                    "disk-free-min-mib" => {
                        a.disk_free_min_mib = a.disk_free_min_mib.or(Some(parse_value(&k, &v)?))
                    }
                    "connections-max" => {
                        a.connections_max = a.connections_max.or(Some(parse_value(&k, &v)?))
                    }
                    "group-membership-max-bytes" => {
                        a.group_membership_max_bytes =
                            a.group_membership_max_bytes.or(Some(parse_value(&k, &v)?))
                    }
                    "frame-read-timeout-ms" => {
                        a.frame_read_timeout_ms =
                            a.frame_read_timeout_ms.or(Some(parse_value(&k, &v)?))
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
                    "auto-leader-rebalance-enable" => {
                        a.auto_leader_rebalance_enable = a
                            .auto_leader_rebalance_enable
                            .or(Some(parse_value(&k, &v)?))
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
        if a.listener_ssl_client_auth.is_none() && !file_client_auth.is_empty() {
            a.listener_ssl_client_auth = Some(file_client_auth.join(","));
        }
        let mut listeners = parse_listeners(&a)?;
        let sasl_plain_users = match &a.sasl_plain_users {
            Some(path) => crate::sasl::PlainUsers::load(path).map_err(ConfigError)?,
            None => Default::default(),
        };
        let sasl_mechanisms: Vec<String> = match &a.sasl_enabled_mechanisms {
            Some(list) => list
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .collect(),
            None => {
                let mut m = vec!["SCRAM-SHA-256".to_string(), "SCRAM-SHA-512".to_string()];
                if a.sasl_plain_users.is_some() {
                    m.insert(0, crate::sasl::PLAIN.to_string());
                }
                m
            }
        };
        if let Some(bad) = sasl_mechanisms
            .iter()
            .find(|m| !crate::sasl::known_mechanism(m))
        {
            return Err(ConfigError(format!(
                "SASL mechanism {bad} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
            )));
        }
        let authorizer = match a.authorizer.as_deref() {
            None | Some("") | Some("none") => None,
            Some("acl") | Some("AclAuthorizer") | Some("StandardAuthorizer") => {
                Some(crate::acl::AuthorizerConfig {
                    super_users: a
                        .super_users
                        .iter()
                        .flat_map(|s| s.split(';'))
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                    allow_everyone_if_no_acl_found: a
                        .allow_everyone_if_no_acl_found
                        .unwrap_or(false),
                })
            }
            Some(other) => {
                return Err(ConfigError(format!(
                    "authorizer `{other}` is not known (acl)"
                )));
            }
        };
        let client_auth = match &a.ssl_client_auth {
            Some(v) => crate::tls::ClientAuth::parse(v).ok_or_else(|| {
                ConfigError(format!(
                    "ssl-client-auth `{v}`: expected none, requested or required"
                ))
            })?,
            None => crate::tls::ClientAuth::None,
        };
        for l in listeners.iter_mut() {
            l.ssl_client_auth = client_auth;
        }
        if let Some(list) = &a.listener_ssl_client_auth {
            for (name, auth) in parse_listener_client_auth(list)? {
                let l = listeners
                    .iter_mut()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "listener-ssl-client-auth names {name}, which is not a listener"
                        ))
                    })?;
                l.ssl_client_auth = auth;
            }
        }
        let tls = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
                ca: a.tls_ca.clone(),
                client_auth,
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError("--tls-cert and --tls-key go together".into()));
            }
        };
        if let Some(l) = listeners.iter().find(|l| l.protocol.is_tls()) {
            let Some(t) = &tls else {
                return Err(ConfigError(format!(
                    "listener {} ({}) needs --tls-cert and --tls-key",
                    l.name,
                    l.protocol.name()
                )));
            };
            // Fail at start-up, naming the file, rather than on the first client.
            for l in listeners.iter().filter(|l| l.protocol.is_tls()) {
                crate::tls::server_config(&t.for_listener(l))
                    .map_err(|e| ConfigError(format!("listener {}: {e}", l.name)))?;
            }
        }
        if sasl_mechanisms.iter().any(|m| m == crate::sasl::PLAIN) && a.sasl_plain_users.is_none() {
            return Err(ConfigError(
                "SASL mechanism PLAIN needs its users: --sasl-plain-users FILE".into(),
            ));
        }
        let listen = listeners[0].addr;
        let advertise = listeners[0].advertise_host.clone();
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
        // Any configured quorum may have other hosts (voters, or hosts that only follow it),
        // so only a host without one is alone for sure.
        let inter_broker = inter_broker(&a, &listeners, &sasl_mechanisms, !voters.is_empty())?;
        let controller_tls = a.controller_tls.unwrap_or(false);
        if controller_tls {
            let Some(t) = &tls else {
                return Err(ConfigError(
                    "--controller-tls needs --tls-cert, --tls-key and --tls-ca".into(),
                ));
            };
            crate::cluster::rpc::tls_from(t)
                .map_err(|e| ConfigError(format!("controller TLS: {e}")))?;
        }
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
        let data_dir = a
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
        let iotune_file = a
            .iotune_file
            .clone()
            .unwrap_or_else(|| data_dir.join(tuning::iotune::IOTUNE_RESULT_FILE));
        let write_round_max_bytes = a
            .write_round_max_kib
            .map_or(shards::ROUND_MAX_BYTES, |k| k.saturating_mul(1 << 10))
            .clamp(shards::ROUND_MAX_BYTES_FLOOR, shards::ROUND_MAX_BYTES_CAP);
        Ok(BrokerConfig {
            admin_listen,
            broker_session_timeout_ms: a.broker_session_timeout_ms.unwrap_or(9000).max(100),
            auto_leader_rebalance_enable: a.auto_leader_rebalance_enable.unwrap_or(true),
            default_replication_factor,
            replica_lag_time_max_ms: a.replica_lag_time_max_ms.unwrap_or(30_000).max(100),
            min_insync_replicas,
            node_id,
            voters,
            controller_listen,
            data_dir,
            listen,
            advertise,
            listeners,
            sasl_mechanisms,
            sasl_plain_users,
            connections_max_reauth_ms: a.connections_max_reauth_ms.unwrap_or(0),
            tls,
            inter_broker,
            controller_tls,
            authorizer,
            cores: a.cores,
            num_partitions,
            auto_create_topics: a.auto_create_topics.unwrap_or(true),
            group_initial_rebalance_delay_ms: a.group_initial_rebalance_delay_ms.unwrap_or(3000),
            group_consumer_session_timeout_ms: a
                .group_consumer_session_timeout_ms
                .unwrap_or(45_000)
                .clamp(1, i32::MAX as u64),
            group_consumer_heartbeat_interval_ms: a
                .group_consumer_heartbeat_interval_ms
                .unwrap_or(5_000)
                .clamp(1, i32::MAX as u64),
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
            transaction_partition_verification_enable: a
                .transaction_partition_verification_enable
                .unwrap_or(true),
            transactional_id_expiration_ms: a
                .transactional_id_expiration_ms
                .unwrap_or(crate::txn::TXN_ID_EXPIRATION_MS_DEFAULT)
                .max(1),
            cache_bytes: a
                .cache_mib
                .unwrap_or(CACHE_MIB_DEFAULT)
                .saturating_mul(1 << 20),
            write_round_max_bytes,
            write_round_min_bytes: (write_round_max_bytes / 2).max(shards::ROUND_MAX_BYTES_FLOOR),
            inflight_writes_max: a
                .inflight_writes_max
                .unwrap_or(INFLIGHT_WRITES_DEFAULT)
                .clamp(1, shards::INFLIGHT_WRITES_CAP),
            iotune_file,
            sizes_set: SizesSet {
                cache: a.cache_mib.is_some(),
                write_round: a.write_round_max_kib.is_some(),
                inflight_writes: a.inflight_writes_max.is_some(),
            },
            disk_free_min_bytes: a
                .disk_free_min_mib
                .map_or(shards::DISK_FREE_MIN_BYTES_DEFAULT, |m| {
                    m.saturating_mul(1 << 20)
                }),
            connections_max: a.connections_max.unwrap_or(10_000),
            frame_read_timeout_ms: a.frame_read_timeout_ms.unwrap_or(30_000).max(1),
            group_membership_max_bytes: a
                .group_membership_max_bytes
                .unwrap_or(crate::groups::GROUP_MEMBERSHIP_PER_SHARD_MAX_BYTES_DEFAULT),
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
        // iotune.json is looked for where `osprey iotune` writes it by default, and sizes
        // everything when no flag is given.
        assert_eq!(c.iotune_file, PathBuf::from("osprey-data/iotune.json"));
        assert_eq!(c.sizes_set, SizesSet::default());
        assert_eq!(c.write_round_max_bytes, shards::ROUND_MAX_BYTES);
        assert_eq!(c.inflight_writes_max, INFLIGHT_WRITES_DEFAULT);
        let flagged = BrokerConfig::from_args(&ServeArgs {
            write_round_max_kib: Some(1 << 20),
            inflight_writes_max: Some(0),
            cache_mib: Some(64),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(flagged.write_round_max_bytes, shards::ROUND_MAX_BYTES_CAP);
        assert_eq!(flagged.inflight_writes_max, 1);
        assert_eq!(
            flagged.sizes_set,
            SizesSet {
                cache: true,
                write_round: true,
                inflight_writes: true
            }
        );
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
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].name, "PLAINTEXT");
        assert_eq!(c.listeners[0].protocol, SecurityProtocol::Plaintext);
    }

    // Kafka's listener form: names map to protocols by the map or by their own name,
    // `--listen` stays the PLAINTEXT listener, advertised listeners replace the host (and
    // the port base when given), and a listener without a protocol is refused.
    #[test]
    fn listeners_in_kafkas_form() {
        let args = ServeArgs {
            listen: Some("127.0.0.1:9092".parse().unwrap()),
            listeners: Some("SASL_PLAINTEXT://0.0.0.0:9192, internal://127.0.0.1:9292".into()),
            listener_security_protocol_map: Some("INTERNAL:SASL_PLAINTEXT".into()),
            advertised_listeners: Some(
                "SASL_PLAINTEXT://broker.example:19192,INTERNAL://10.0.0.1".into(),
            ),
            ..Default::default()
        };
        let c = BrokerConfig::from_args(&args).unwrap();
        let names: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.protocol))
            .collect();
        assert_eq!(
            names,
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext),
                ("SASL_PLAINTEXT", SecurityProtocol::SaslPlaintext),
                ("INTERNAL", SecurityProtocol::SaslPlaintext)
            ]
        );
        assert_eq!(c.listeners[1].advertise_host, "broker.example");
        assert_eq!(c.listeners[1].advertise_port, Some(19192));
        assert_eq!(c.listeners[2].advertise_host, "10.0.0.1");
        assert_eq!(c.listeners[2].advertise_port, None);
        assert_eq!(c.listen, "127.0.0.1:9092".parse::<SocketAddr>().unwrap());
        let no_tls = ServeArgs {
            listeners: Some("SSL://127.0.0.1:9092".into()),
            ..Default::default()
        };
        assert!(
            BrokerConfig::from_args(&no_tls)
                .unwrap_err()
                .0
                .contains("--tls-cert")
        );
        let bad = ServeArgs {
            listeners: Some("CLIENT://127.0.0.1:9092".into()),
            ..Default::default()
        };
        assert!(BrokerConfig::from_args(&bad).is_err());
        let twice = ServeArgs {
            listen: Some("127.0.0.1:9092".parse().unwrap()),
            listeners: Some("PLAINTEXT://127.0.0.1:9093".into()),
            ..Default::default()
        };
        assert!(BrokerConfig::from_args(&twice).is_err());
    }

    const TWO_VOTERS: &str = "0@127.0.0.1:9300,1@127.0.0.1:9301";

    // Kafka's inter.broker.listener.name: the first listener by default; a named one (any
    // case) with its protocol; an unknown name is refused. In a cluster a SASL
    // inter-broker listener needs the broker's credentials (properties or JAAS form) and a
    // mechanism the listener offers (default: the first enabled one); a host without a quorum never
    // connects to another, so it starts without them as before.
    #[test]
    fn inter_broker_listener_and_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("broker.properties");
        std::fs::write(&creds, "username = broker\npassword = s3cret\n").unwrap();
        let plain = BrokerConfig::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(plain.inter_broker.listener, "PLAINTEXT");
        assert_eq!(plain.inter_broker.protocol, SecurityProtocol::Plaintext);
        assert!(plain.inter_broker.sasl.is_none() && plain.inter_broker.tls.is_none());
        let sasl_first = ServeArgs {
            listeners: Some("SASL_PLAINTEXT://127.0.0.1:9092".into()),
            ..Default::default()
        };
        // One host: nothing to connect to, no credentials needed.
        assert!(BrokerConfig::from_args(&sasl_first).is_ok());
        let cluster = ServeArgs {
            controller_quorum_voters: Some(TWO_VOTERS.into()),
            ..sasl_first.clone()
        };
        let err = BrokerConfig::from_args(&cluster).unwrap_err().0;
        assert!(err.contains("--inter-broker-credentials"), "{err}");
        let with_creds = ServeArgs {
            inter_broker_credentials: Some(creds.clone()),
            ..cluster.clone()
        };
        let c = BrokerConfig::from_args(&with_creds).unwrap();
        assert_eq!(c.inter_broker.listener, "SASL_PLAINTEXT");
        let sasl = c.inter_broker.sasl.clone().unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("broker", "s3cret")
        );
        assert_eq!(sasl.mechanism.name(), "SCRAM-SHA-256");
        assert!(!format!("{:?}", c.inter_broker).contains("s3cret"));
        let security = c.inter_broker.security().unwrap();
        assert!(security.protocol.is_sasl() && security.tls.is_none());
        // The mechanism must be one the listener offers.
        let plain_mech = ServeArgs {
            sasl_mechanism_inter_broker_protocol: Some("plain".into()),
            ..with_creds.clone()
        };
        let err = BrokerConfig::from_args(&plain_mech).unwrap_err().0;
        assert!(err.contains("not offered"), "{err}");
        let scram512 = ServeArgs {
            sasl_mechanism_inter_broker_protocol: Some("scram-sha-512".into()),
            ..with_creds.clone()
        };
        let c = BrokerConfig::from_args(&scram512).unwrap();
        assert_eq!(
            c.inter_broker.sasl.unwrap().mechanism.name(),
            "SCRAM-SHA-512"
        );
        // JAAS form, as in a Kafka client config.
        std::fs::write(
            &creds,
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"b\" password=\"p w\";\n",
        )
        .unwrap();
        let sasl = BrokerConfig::from_args(&with_creds)
            .unwrap()
            .inter_broker
            .sasl
            .unwrap();
        assert_eq!(
            (sasl.username.as_str(), sasl.password.as_str()),
            ("b", "p w")
        );
        std::fs::write(&creds, "username = broker\n").unwrap();
        let err = BrokerConfig::from_args(&with_creds).unwrap_err().0;
        assert!(err.contains("password"), "{err}");
        // A named inter-broker listener (here PLAINTEXT beside a SASL first listener).
        let named = ServeArgs {
            listeners: Some("SASL_PLAINTEXT://127.0.0.1:9092,internal://127.0.0.1:9192".into()),
            listener_security_protocol_map: Some("INTERNAL:PLAINTEXT".into()),
            inter_broker_listener_name: Some("internal".into()),
            controller_quorum_voters: Some(TWO_VOTERS.into()),
            ..Default::default()
        };
        let c = BrokerConfig::from_args(&named).unwrap();
        assert_eq!(c.inter_broker.listener, "INTERNAL");
        assert_eq!(c.inter_broker.protocol, SecurityProtocol::Plaintext);
        let unknown = ServeArgs {
            inter_broker_listener_name: Some("REPLICATION".into()),
            ..named
        };
        let err = BrokerConfig::from_args(&unknown).unwrap_err().0;
        assert!(err.contains("not a listener"), "{err}");
        // The config file takes Kafka's names.
        let file = dir.path().join("osprey.conf");
        std::fs::write(
            &file,
            format!(
                "listeners = SASL_PLAINTEXT://127.0.0.1:9092\ncontroller.quorum.voters = {TWO_VOTERS}\ninter.broker.listener.name = SASL_PLAINTEXT\nsasl.mechanism.inter.broker.protocol = SCRAM-SHA-512\ninter.broker.credentials = {}\n",
                creds.display()
            ),
        )
        .unwrap();
        std::fs::write(&creds, "sasl.username=u\nsasl.password=p\n").unwrap();
        let c = BrokerConfig::from_args(&ServeArgs {
            config: Some(file),
            ..Default::default()
        })
        .unwrap();
        let sasl = c.inter_broker.sasl.unwrap();
        assert_eq!(sasl.mechanism.name(), "SCRAM-SHA-512");
        assert_eq!(sasl.username, "u");
    }

    // Kafka's listener.name.<name>.ssl.client.auth: `--ssl-client-auth` for every listener,
    // overridden per listener by `--listener-ssl-client-auth` (or the file's Kafka form);
    // an unknown listener or value is refused. A TLS inter-broker listener trusts
    // `--tls-ca` and presents the broker's own certificate.
    #[test]
    fn per_listener_client_auth_and_tls_inter_broker() {
        use crate::tls::ClientAuth;
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let args = ServeArgs {
            listeners: Some("SSL://127.0.0.1:9092,INTERNAL://127.0.0.1:9192".into()),
            listener_security_protocol_map: Some("INTERNAL:SSL".into()),
            tls_cert: Some(cert_path.clone()),
            tls_key: Some(key_path.clone()),
            tls_ca: Some(cert_path.clone()),
            ssl_client_auth: Some("requested".into()),
            listener_ssl_client_auth: Some("internal=required".into()),
            inter_broker_listener_name: Some("INTERNAL".into()),
            controller_quorum_voters: Some(TWO_VOTERS.into()),
            ..Default::default()
        };
        let c = BrokerConfig::from_args(&args).unwrap();
        let auth: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.ssl_client_auth))
            .collect();
        assert_eq!(
            auth,
            [
                ("SSL", ClientAuth::Requested),
                ("INTERNAL", ClientAuth::Required)
            ]
        );
        let tls = c.inter_broker.tls.clone().unwrap();
        assert_eq!(tls.ca.as_ref(), Some(&cert_path));
        assert_eq!(tls.cert.as_ref(), Some(&cert_path));
        assert_eq!(tls.key.as_ref(), Some(&key_path));
        assert!(c.inter_broker.security().unwrap().tls.is_some());
        let unknown = ServeArgs {
            listener_ssl_client_auth: Some("EXTERNAL=required".into()),
            ..args.clone()
        };
        assert!(
            BrokerConfig::from_args(&unknown)
                .unwrap_err()
                .0
                .contains("not a listener")
        );
        let bad = ServeArgs {
            listener_ssl_client_auth: Some("INTERNAL=always".into()),
            ..args.clone()
        };
        assert!(BrokerConfig::from_args(&bad).is_err());
        // Required client certificates need a CA to check them against.
        let no_ca = ServeArgs {
            tls_ca: None,
            ssl_client_auth: None,
            ..args.clone()
        };
        let err = BrokerConfig::from_args(&no_ca).unwrap_err().0;
        assert!(err.contains("INTERNAL"), "{err}");
        // Mutual TLS on the controller wire needs the CA; without TLS files it is refused.
        let c = BrokerConfig::from_args(&ServeArgs {
            controller_tls: Some(true),
            ..args.clone()
        })
        .unwrap();
        assert!(c.controller_tls);
        let err = BrokerConfig::from_args(&ServeArgs {
            controller_tls: Some(true),
            listener_ssl_client_auth: None,
            ssl_client_auth: None,
            tls_ca: None,
            ..args.clone()
        })
        .unwrap_err()
        .0;
        assert!(err.contains("--tls-ca"), "{err}");
        let err = BrokerConfig::from_args(&ServeArgs {
            controller_tls: Some(true),
            ..Default::default()
        })
        .unwrap_err()
        .0;
        assert!(err.contains("--controller-tls"), "{err}");
        // The file's Kafka form.
        let file = dir.path().join("osprey.conf");
        std::fs::write(&file, "listener.name.ssl.ssl.client.auth = none\n").unwrap();
        let c = BrokerConfig::from_args(&ServeArgs {
            config: Some(file),
            listener_ssl_client_auth: None,
            ..args
        })
        .unwrap();
        assert_eq!(c.listeners[0].ssl_client_auth, ClientAuth::None);
        assert_eq!(c.listeners[1].ssl_client_auth, ClientAuth::Requested);
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
