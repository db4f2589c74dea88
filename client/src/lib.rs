//! The project's one small async Kafka client, used by `loadgen` and the broker's admin CLI.
//! Runs on one glommio executor (any core): a `Client` holds `Rc`s and per-executor tasks and
//! is not `Send`; create one per executor.
//!
//! A `Client` keeps one `Connection` per broker node (requests pipelined, in-flight bounded),
//! negotiates versions with ApiVersions (the highest both sides support, capped where a newer
//! version would need topic ids), and caches the partition -> leader map from Metadata.
//! Producing builds record batch v2 with `kafka_protocol::records` (`batch.rs`).
//!
//! Invariant: no `RefCell` borrow is held across an `.await`.

pub mod admin;
pub mod batch;
pub mod conn;
pub mod decode;
pub mod error;
pub mod group;
pub mod scram;
pub mod security;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

pub use admin::{
    ClusterDescription, ConfigChange, ConfigEntry, GroupDescription, ListedGroup,
    MemberDescription, NodeInfo, ReplicaSize, config_source_name,
};
pub use batch::{
    ProducerIdentity, ProducerRecord, count_records, decode_records, encode_batch, encode_batch_as,
    parse_compression,
};
pub use conn::{ApiRange, Connection, FRAME_MAX_BYTES};
pub use error::{ClientError, Result, kafka_error_name};
pub use group::{
    Assignment, CONSUMER_PROTOCOL_TYPE, CommittedPartition, GroupMember, JoinedGroup,
    RANGE_ASSIGNOR, decode_assignment, decode_subscription, encode_assignment, encode_subscription,
    range_assign,
};
pub use kafka_protocol::records::{Compression, Record};
pub use security::{SaslMechanism, SaslSettings, Security, SecurityProtocol, TlsFiles};

use error::check_code;

// Version caps: the client fills topic names, not topic ids, so it stays below the versions
// that switch to topic ids (Produce 13, Fetch 13).
const PRODUCE_VERSION_CAP: i16 = 12;
const FETCH_VERSION_CAP: i16 = 12;
const METADATA_VERSION_CAP: i16 = 12;
const LIST_OFFSETS_VERSION_CAP: i16 = 10;
const CREATE_TOPICS_VERSION_CAP: i16 = 7;
const DELETE_TOPICS_VERSION_CAP: i16 = 6;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent as client_id in every request header.
    pub client_id: String,
    /// Requests in flight per connection (the pipelining depth).
    pub in_flight_max: usize,
    /// How long a request may wait for its answer.
    pub request_timeout: Duration,
    /// How long a TCP connect may take (and, apart, the TLS handshake and the SASL
    /// exchange each).
    pub connect_timeout: Duration,
    /// TLS and SASL, applied to every connection the client opens (default PLAINTEXT).
    pub security: Security,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            client_id: "osprey-client".into(),
            in_flight_max: 16,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            security: Security::default(),
        }
    }
}

/// The producer acknowledgement mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer.
    None,
    /// acks=1: the leader wrote it.
    Leader,
    /// acks=-1 (all): fully committed.
    All,
}

impl Acks {
    /// Parses 0, 1, -1 or all.
    pub fn parse(s: &str) -> Result<Acks> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "-1" | "all" => Ok(Acks::All),
            other => Err(ClientError::InvalidArgument(format!("acks {other:?}"))),
        }
    }
    /// The wire value.
    pub fn code(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// How long `list_offsets` retries retriable answers.
const LIST_OFFSETS_RETRY_MAX: Duration = Duration::from_secs(10);

/// A broker node from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerNode {
    /// Node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
}

/// One partition from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// Partition index.
    pub partition: i32,
    /// Leader node id (-1: none).
    pub leader: i32,
    /// Replica node ids, the leader's preferred first.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Kafka error code for this partition.
    pub error_code: i16,
}

/// One topic from Metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Kafka error code for this topic (3 = unknown topic).
    pub error_code: i16,
    /// Partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// The answer to a Metadata request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// Brokers.
    pub brokers: Vec<BrokerNode>,
    /// Controller node id.
    pub controller_id: i32,
    /// Cluster id, if the broker has one.
    pub cluster_id: Option<String>,
    /// Topics.
    pub topics: Vec<TopicMetadata>,
}

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// Replication factor (-1: broker default).
    pub replication_factor: i16,
    /// Topic configs (Kafka names, e.g. retention.ms).
    pub configs: Vec<(String, String)>,
}

/// The per-topic outcome of CreateTopics/DeleteTopics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    /// Topic name.
    pub name: String,
    /// `Ok` or the Kafka error (e.g. code 36 TOPIC_ALREADY_EXISTS).
    pub result: std::result::Result<(), ClientError>,
}

/// A partition position to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset wanted.
    pub offset: i64,
}

/// Fetch long-poll parameters.
#[derive(Debug, Clone, Copy)]
pub struct FetchOptions {
    /// How long the broker may wait for `min_bytes`.
    pub max_wait_ms: i32,
    /// Answer as soon as this many bytes are available.
    pub min_bytes: i32,
    /// Response size limit.
    pub max_bytes: i32,
    /// Per-partition size limit.
    pub partition_max_bytes: i32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
        }
    }
}

/// The data fetched for one partition.
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// `Ok` or the partition's Kafka error.
    pub error: std::result::Result<(), ClientError>,
    /// High watermark.
    pub high_watermark: i64,
    /// Raw record batches (decode with `decode_records`).
    pub records: Bytes,
}

/// Which offset ListOffsets should return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset with timestamp >= this (ms).
    Timestamp(i64),
}

/// The answer of ListOffsets for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Partition.
    pub partition: i32,
    /// `Ok(offset)` or the partition's Kafka error.
    pub offset: std::result::Result<i64, ClientError>,
}

/// What a produce call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// The offset given to the batch's first record; `None` with acks=0.
    pub base_offset: Option<i64>,
}

/// A Kafka client for one executor.
pub struct Client {
    config: ClientConfig,
    bootstrap: Vec<String>,
    bootstrap_conn: RefCell<Option<Rc<Connection>>>,
    conns: RefCell<HashMap<i32, Rc<Connection>>>,
    nodes: RefCell<HashMap<i32, String>>,
    leaders: RefCell<HashMap<(String, i32), i32>>,
    controller_id: Cell<i32>,
    coordinators: RefCell<HashMap<String, i32>>,
}

impl Client {
    /// Connects to the first reachable address of `bootstrap` ("host:port[,host:port...]").
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client> {
        let list: Vec<String> = bootstrap
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() {
            return Err(ClientError::InvalidArgument("empty bootstrap list".into()));
        }
        let client = Client {
            config,
            bootstrap: list,
            bootstrap_conn: RefCell::new(None),
            conns: RefCell::new(HashMap::new()),
            nodes: RefCell::new(HashMap::new()),
            leaders: RefCell::new(HashMap::new()),
            controller_id: Cell::new(-1),
            coordinators: RefCell::new(HashMap::new()),
        };
        client.any_connection().await?;
        Ok(client)
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A live connection to any broker: the bootstrap one, else reconnect.
    pub async fn any_connection(&self) -> Result<Rc<Connection>> {
        let existing = self.bootstrap_conn.borrow().clone();
        if let Some(c) = existing
            && c.is_alive()
        {
            return Ok(c);
        }
        let mut last = None;
        for addr in self.bootstrap.clone() {
            match Connection::connect(&addr, &self.config).await {
                Ok(c) => {
                    let c = Rc::new(c);
                    *self.bootstrap_conn.borrow_mut() = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::InvalidArgument("no bootstrap".into())))
    }

    /// The connection to node `node_id` (connecting if needed; the node must be known from
    /// Metadata).
    pub async fn node_connection(&self, node_id: i32) -> Result<Rc<Connection>> {
        let existing = self.conns.borrow().get(&node_id).cloned();
        if let Some(c) = existing
            && c.is_alive()
        {
            return Ok(c);
        }
        let addr = self.nodes.borrow().get(&node_id).cloned();
        let addr = match addr {
            Some(a) => a,
            None => {
                self.metadata(None).await?;
                self.nodes.borrow().get(&node_id).cloned().ok_or_else(|| {
                    ClientError::InvalidArgument(format!("unknown node id {node_id}"))
                })?
            }
        };
        let c = Rc::new(Connection::connect(&addr, &self.config).await?);
        self.conns.borrow_mut().insert(node_id, c.clone());
        Ok(c)
    }

    /// Fetches metadata for `topics` (None: all topics) and refreshes the node and leader maps.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<ClusterMetadata> {
        let conn = self.any_connection().await?;
        let v = conn.version_for::<MetadataRequest>(METADATA_VERSION_CAP)?;
        let mut req = MetadataRequest::default();
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string((*t).to_owned()))))
                })
                .collect()
        });
        if v >= 4 {
            req.allow_auto_topic_creation = false;
        }
        let resp = conn.request(&req, v).await?;
        let md = ClusterMetadata {
            brokers: resp
                .brokers
                .iter()
                .map(|b| BrokerNode {
                    node_id: b.node_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                })
                .collect(),
            controller_id: resp.controller_id.0,
            cluster_id: resp.cluster_id.as_ref().map(|c| c.to_string()),
            topics: resp
                .topics
                .iter()
                .map(|t| {
                    let mut partitions: Vec<PartitionMetadata> = t
                        .partitions
                        .iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition_index,
                            leader: p.leader_id.0,
                            replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                            isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                            error_code: p.error_code,
                        })
                        .collect();
                    partitions.sort_by_key(|p| p.partition);
                    TopicMetadata {
                        name: t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                        error_code: t.error_code,
                        partitions,
                    }
                })
                .collect(),
        };
        {
            let mut nodes = self.nodes.borrow_mut();
            for b in &md.brokers {
                nodes.insert(b.node_id, format!("{}:{}", b.host, b.port));
            }
            let mut leaders = self.leaders.borrow_mut();
            for t in &md.topics {
                for p in &t.partitions {
                    if p.leader >= 0 {
                        leaders.insert((t.name.clone(), p.partition), p.leader);
                    } else {
                        leaders.remove(&(t.name.clone(), p.partition));
                    }
                }
            }
        }
        self.controller_id.set(md.controller_id);
        Ok(md)
    }

    /// The leader node of a partition, from the cache or a Metadata refresh.
    pub async fn leader_for(&self, topic: &str, partition: i32) -> Result<i32> {
        let cached = self
            .leaders
            .borrow()
            .get(&(topic.to_owned(), partition))
            .copied();
        if let Some(l) = cached {
            return Ok(l);
        }
        self.metadata(Some(&[topic])).await?;
        self.leaders
            .borrow()
            .get(&(topic.to_owned(), partition))
            .copied()
            .ok_or_else(|| ClientError::NoLeader {
                topic: topic.to_owned(),
                partition,
            })
    }

    /// Forgets the cached leader of a partition (after NOT_LEADER and the like).
    pub fn invalidate_leader(&self, topic: &str, partition: i32) {
        self.leaders
            .borrow_mut()
            .remove(&(topic.to_owned(), partition));
    }

    async fn controller_connection(&self) -> Result<Rc<Connection>> {
        let id = self.controller_id.get();
        if id >= 0
            && let Ok(c) = self.node_connection(id).await
        {
            return Ok(c);
        }
        self.any_connection().await
    }

    /// Creates topics; per-topic errors (e.g. 36 TOPIC_ALREADY_EXISTS) are in the outcomes.
    pub async fn create_topics(
        &self,
        topics: &[NewTopic],
        timeout_ms: i32,
    ) -> Result<Vec<TopicOutcome>> {
        if self.controller_id.get() < 0 {
            self.metadata(Some(&[])).await?;
        }
        let conn = self.controller_connection().await?;
        let v = conn.version_for::<CreateTopicsRequest>(CREATE_TOPICS_VERSION_CAP)?;
        let mut req = CreateTopicsRequest::default();
        req.timeout_ms = timeout_ms;
        req.topics = topics
            .iter()
            .map(|t| {
                let mut ct = CreatableTopic::default();
                ct.name = TopicName(StrBytes::from_string(t.name.clone()));
                ct.num_partitions = t.partitions;
                ct.replication_factor = t.replication_factor;
                ct.configs = t
                    .configs
                    .iter()
                    .map(|(k, val)| {
                        kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(k.clone()))
                            .with_value(Some(StrBytes::from_string(val.clone())))
                    })
                    .collect();
                ct
            })
            .collect();
        let resp = conn.request(&req, v).await?;
        Ok(resp
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                TopicOutcome {
                    result: check_code(
                        t.error_code,
                        || format!("CreateTopics {name}"),
                        t.error_message.as_deref(),
                    ),
                    name,
                }
            })
            .collect())
    }

    /// Deletes topics by name.
    pub async fn delete_topics(
        &self,
        names: &[&str],
        timeout_ms: i32,
    ) -> Result<Vec<TopicOutcome>> {
        if self.controller_id.get() < 0 {
            self.metadata(Some(&[])).await?;
        }
        let conn = self.controller_connection().await?;
        let v = conn.version_for::<DeleteTopicsRequest>(DELETE_TOPICS_VERSION_CAP)?;
        let mut req = DeleteTopicsRequest::default();
        req.timeout_ms = timeout_ms;
        if v >= 6 {
            req.topics = names
                .iter()
                .map(|n| {
                    DeleteTopicState::default()
                        .with_name(Some(TopicName(StrBytes::from_string((*n).to_owned()))))
                })
                .collect();
        } else {
            req.topic_names = names
                .iter()
                .map(|n| TopicName(StrBytes::from_string((*n).to_owned())))
                .collect();
        }
        let resp = conn.request(&req, v).await?;
        Ok(resp
            .responses
            .iter()
            .map(|t| {
                let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                TopicOutcome {
                    result: check_code(
                        t.error_code,
                        || format!("DeleteTopics {name}"),
                        t.error_message.as_deref(),
                    ),
                    name,
                }
            })
            .collect())
    }

    /// Produces one encoded record batch (see `encode_batch`) to a partition's leader.
    /// Requests are pipelined: many `produce` futures may be awaited at once.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        batch: Bytes,
        acks: Acks,
        timeout_ms: i32,
    ) -> Result<ProduceAck> {
        let leader = self.leader_for(topic, partition).await?;
        let conn = self.node_connection(leader).await?;
        let v = conn.version_for::<ProduceRequest>(PRODUCE_VERSION_CAP)?;
        let mut req = ProduceRequest::default();
        req.acks = acks.code();
        req.timeout_ms = timeout_ms;
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_string(topic.to_owned()));
        td.partition_data = vec![
            PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch)),
        ];
        req.topic_data = vec![td];
        if acks == Acks::None {
            conn.send_no_response(&req, v).await?;
            return Ok(ProduceAck { base_offset: None });
        }
        let resp = conn.request(&req, v).await?;
        let p = resp
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                ClientError::Protocol(format!("produce response lacks {topic}/{partition}"))
            })?;
        let r = check_code(
            p.error_code,
            || format!("Produce {topic}/{partition}"),
            p.error_message.as_deref(),
        );
        if let Err(e) = &r
            && e.is_stale_metadata()
        {
            self.invalidate_leader(topic, partition);
        }
        r?;
        Ok(ProduceAck {
            base_offset: Some(p.base_offset),
        })
    }

    /// Produces one encoded batch to each of several partitions of `topic` with one Produce
    /// request per leader node (all in parallel), as Kafka's producers do: a request carries
    /// every partition's ready batch, so the in-flight window of a connection counts
    /// requests, not batches. Each partition may appear once. Returns each partition's
    /// outcome, in the order given; a failed request fails all of its partitions.
    pub async fn produce_partitions(
        &self,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: Acks,
        timeout_ms: i32,
    ) -> Result<Vec<(i32, Result<ProduceAck>)>> {
        let mut by_node: Vec<(i32, Vec<(i32, Bytes)>)> = Vec::new();
        for (p, b) in batches {
            let l = self.leader_for(topic, p).await?;
            match by_node.iter_mut().find(|(n, _)| *n == l) {
                Some((_, v)) => v.push((p, b)),
                None => by_node.push((l, vec![(p, b)])),
            }
        }
        let futs: Vec<_> = by_node
            .into_iter()
            .map(|(node, bs)| self.produce_to_node(node, topic, bs, acks, timeout_ms))
            .collect();
        Ok(join_all(futs).await.into_iter().flatten().collect())
    }

    async fn produce_to_node(
        &self,
        node: i32,
        topic: &str,
        batches: Vec<(i32, Bytes)>,
        acks: Acks,
        timeout_ms: i32,
    ) -> Vec<(i32, Result<ProduceAck>)> {
        let parts: Vec<i32> = batches.iter().map(|(p, _)| *p).collect();
        let fail_all = |e: ClientError| parts.iter().map(|&p| (p, Err(e.clone()))).collect();
        let conn = match self.node_connection(node).await {
            Ok(c) => c,
            Err(e) => return fail_all(e),
        };
        let v = match conn.version_for::<ProduceRequest>(PRODUCE_VERSION_CAP) {
            Ok(v) => v,
            Err(e) => return fail_all(e),
        };
        let mut req = ProduceRequest::default();
        req.acks = acks.code();
        req.timeout_ms = timeout_ms;
        let mut td = TopicProduceData::default();
        td.name = TopicName(StrBytes::from_string(topic.to_owned()));
        td.partition_data = batches
            .into_iter()
            .map(|(p, b)| {
                PartitionProduceData::default()
                    .with_index(p)
                    .with_records(Some(b))
            })
            .collect();
        req.topic_data = vec![td];
        if acks == Acks::None {
            return match conn.send_no_response(&req, v).await {
                Ok(()) => parts
                    .iter()
                    .map(|&p| (p, Ok(ProduceAck { base_offset: None })))
                    .collect(),
                Err(e) => fail_all(e),
            };
        }
        let resp = match conn.request(&req, v).await {
            Ok(r) => r,
            Err(e) => return fail_all(e),
        };
        parts
            .iter()
            .map(|&partition| {
                let r = resp
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == partition)
                    .ok_or_else(|| {
                        ClientError::Protocol(format!("produce response lacks {topic}/{partition}"))
                    })
                    .and_then(|p| {
                        check_code(
                            p.error_code,
                            || format!("Produce {topic}/{partition}"),
                            p.error_message.as_deref(),
                        )
                        .map(|()| ProduceAck {
                            base_offset: Some(p.base_offset),
                        })
                    });
                if let Err(e) = &r
                    && e.is_stale_metadata()
                {
                    self.invalidate_leader(topic, partition);
                }
                (partition, r)
            })
            .collect()
    }

    /// Fetches from several partitions: one request per leader node, all in parallel.
    pub async fn fetch(
        &self,
        positions: &[FetchPosition],
        opts: &FetchOptions,
    ) -> Result<Vec<FetchedPartition>> {
        let mut by_node: HashMap<i32, Vec<FetchPosition>> = HashMap::new();
        for p in positions {
            let l = self.leader_for(&p.topic, p.partition).await?;
            by_node.entry(l).or_default().push(p.clone());
        }
        let futs: Vec<_> = by_node
            .into_iter()
            .map(|(node, ps)| self.fetch_from_node(node, ps, *opts))
            .collect();
        let mut out = Vec::new();
        for r in join_all(futs).await {
            out.extend(r?);
        }
        Ok(out)
    }

    /// Fetches from partitions that all have `node` as leader.
    pub async fn fetch_from_node(
        &self,
        node: i32,
        positions: Vec<FetchPosition>,
        opts: FetchOptions,
    ) -> Result<Vec<FetchedPartition>> {
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<FetchRequest>(FETCH_VERSION_CAP)?;
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = opts.max_wait_ms;
        req.min_bytes = opts.min_bytes;
        req.max_bytes = opts.max_bytes;
        req.isolation_level = 0;
        req.session_id = 0;
        req.session_epoch = -1;
        let mut topics: Vec<FetchTopic> = Vec::new();
        for p in &positions {
            let part = FetchPartition::default()
                .with_partition(p.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(p.offset)
                .with_last_fetched_epoch(-1)
                .with_log_start_offset(-1)
                .with_partition_max_bytes(opts.partition_max_bytes);
            match topics.iter_mut().find(|t| t.topic.0.as_str() == p.topic) {
                Some(t) => t.partitions.push(part),
                None => {
                    let mut t = FetchTopic::default();
                    t.topic = TopicName(StrBytes::from_string(p.topic.clone()));
                    t.partitions = vec![part];
                    topics.push(t);
                }
            }
        }
        req.topics = topics;
        let resp = conn.request(&req, v).await?;
        check_code(resp.error_code, || "Fetch".into(), None)?;
        let mut out = Vec::new();
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let error = check_code(
                    p.error_code,
                    || format!("Fetch {topic}/{}", p.partition_index),
                    None,
                );
                if let Err(e) = &error
                    && e.is_stale_metadata()
                {
                    self.invalidate_leader(&topic, p.partition_index);
                }
                out.push(FetchedPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    error,
                    high_watermark: p.high_watermark,
                    records: p.records.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// Looks up offsets of partitions of one topic (each partition asked at its leader).
    /// Retriable answers (a leader that has not opened a just-created partition yet, or a
    /// leadership that just moved) are retried with fresh metadata for up to
    /// `LIST_OFFSETS_RETRY_MAX`, as Kafka's clients do.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<PartitionOffset>> {
        let deadline = std::time::Instant::now() + LIST_OFFSETS_RETRY_MAX;
        loop {
            let out = self.list_offsets_once(topic, partitions, spec).await?;
            let retriable = out.iter().any(|p| {
                p.offset
                    .as_ref()
                    .err()
                    .and_then(|e| e.kafka_code())
                    .is_some_and(|c| matches!(c, 3 | 5 | 6))
            });
            if !retriable || std::time::Instant::now() >= deadline {
                return Ok(out);
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
            let _ = self.metadata(Some(&[topic])).await;
        }
    }

    async fn list_offsets_once(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<PartitionOffset>> {
        let ts = match spec {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        };
        let mut by_node: HashMap<i32, Vec<i32>> = HashMap::new();
        for &p in partitions {
            by_node
                .entry(self.leader_for(topic, p).await?)
                .or_default()
                .push(p);
        }
        let mut out = Vec::new();
        for (node, parts) in by_node {
            let conn = self.node_connection(node).await?;
            let v = conn.version_for::<ListOffsetsRequest>(LIST_OFFSETS_VERSION_CAP)?;
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            req.isolation_level = 0;
            req.timeout_ms = self
                .config
                .request_timeout
                .as_millis()
                .min(i32::MAX as u128) as i32;
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_owned()));
            t.partitions = parts
                .iter()
                .map(|&p| {
                    ListOffsetsPartition::default()
                        .with_partition_index(p)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(ts)
                })
                .collect();
            req.topics = vec![t];
            let resp = conn.request(&req, v).await?;
            for t in resp.topics {
                for p in t.partitions {
                    out.push(PartitionOffset {
                        partition: p.partition_index,
                        offset: check_code(
                            p.error_code,
                            || format!("ListOffsets {topic}/{}", p.partition_index),
                            None,
                        )
                        .map(|_| p.offset),
                    });
                }
            }
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }

    /// The broker version ranges advertised on the bootstrap connection.
    pub async fn broker_versions(&self) -> Result<HashMap<i16, ApiRange>> {
        Ok(self.any_connection().await?.broker_versions())
    }
}

/// Awaits all futures concurrently on the current task (no spawning, no `'static` needed).
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    struct JoinAll<F: Future> {
        futs: Vec<Option<Pin<Box<F>>>>,
        outs: Vec<Option<F::Output>>,
    }
    // Nothing inside is ever pinned in place: the futures are boxed, outputs are plain values.
    impl<F: Future> Unpin for JoinAll<F> {}
    impl<F: Future> Future for JoinAll<F> {
        type Output = Vec<F::Output>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            // JoinAll is Unpin: it holds only Vecs (boxed futures and outputs).
            let this = self.get_mut();
            let mut all = true;
            for (f, o) in this.futs.iter_mut().zip(this.outs.iter_mut()) {
                if let Some(fut) = f {
                    match fut.as_mut().poll(cx) {
                        Poll::Ready(v) => {
                            *o = Some(v);
                            *f = None;
                        }
                        Poll::Pending => all = false,
                    }
                }
            }
            if all {
                Poll::Ready(this.outs.iter_mut().filter_map(Option::take).collect())
            } else {
                Poll::Pending
            }
        }
    }
    let n = futs.len();
    JoinAll {
        futs: futs.into_iter().map(|f| Some(Box::pin(f))).collect(),
        outs: (0..n).map(|_| None).collect(),
    }
    .await
}
