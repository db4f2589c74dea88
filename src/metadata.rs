//! The cluster metadata every shard reads: registered hosts and their nodes, topics, their
//! ids, partition placement (replicas, leader, leader epoch, ISR) and configs, with an
//! epoch. Immutable once built: the controller quorum's state machine makes a new one per
//! applied change (`cluster::state`).
//!
//! Runs on: built on the controller thread, read on every shard through its own `Arc` copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Node ids of one host: `host id x NODES_PER_HOST + shard`, stable across restarts and
/// unique across the cluster (a host never runs more than 256 shards).
pub const NODES_PER_HOST: i32 = 1024;

pub fn node_id(host: u32, shard: usize) -> i32 {
    host as i32 * NODES_PER_HOST + shard as i32
}

pub fn host_of(node: i32) -> u32 {
    (node / NODES_PER_HOST) as u32
}

pub fn shard_of(node: i32) -> usize {
    (node % NODES_PER_HOST) as usize
}

/// One partition's placement: replicas (node ids), the leader and its epoch, the ISR.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct PartitionMeta {
    /// Replica nodes; the first is the preferred leader.
    pub replicas: Vec<i32>,
    /// Leader node, -1 while no replica can lead (offline).
    pub leader: i32,
    /// Bumped on every leader change; batches carry the epoch of the leader that wrote them.
    pub leader_epoch: i32,
    /// In-sync replicas (the leader among them). Never empty: when the last member is
    /// fenced it stays, as Kafka keeps it, so that only it may lead again.
    pub isr: Vec<i32>,
    /// Bumped on every change of this partition (AlterPartition compares it).
    #[serde(default)]
    pub partition_epoch: i32,
    /// An ongoing reassignment (AlterPartitionReassignments): replicas being added (in
    /// `replicas`, catching up) and being removed (in `replicas` until every target replica
    /// is in the ISR). Both empty otherwise; `replicas` = target then removing, as Kafka.
    #[serde(default)]
    pub adding: Vec<i32>,
    #[serde(default)]
    pub removing: Vec<i32>,
}

/// A topic as the controller stores it.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (UUID bytes), fixed at creation.
    pub id: [u8; 16],
    /// Placement of each partition, indexed by partition number.
    pub partitions: Vec<PartitionMeta>,
    /// Topic-level config overrides (names as Kafka's).
    pub configs: BTreeMap<String, String>,
}

/// One `osprey serve` process (a host) as it registered with the controller quorum.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct BrokerMeta {
    /// `--node-id`: the host id; its shards are nodes `host x 1024 + shard`.
    pub host_id: u32,
    /// Random per process start: tells a restarted host from the one before it.
    pub incarnation: u64,
    /// Advertised host name for clients.
    pub host: String,
    /// Client port of each shard, indexed by shard.
    pub ports: Vec<u16>,
    /// The rack Metadata reports for each of its nodes (default `host-<id>`).
    pub rack: String,
    /// Every client listener of the host (Kafka's listener name, advertised host, port of
    /// each shard); `host` and `ports` above are the first one's. Empty in registrations
    /// from before listeners existed: then `host`/`ports` serve every listener name.
    #[serde(default)]
    pub listeners: Vec<ListenerMeta>,
    /// Fenced by the controller (missed heartbeats, or a controlled shutdown): it leads
    /// nothing and is left out of Metadata until it heartbeats or registers again.
    #[serde(default)]
    pub fenced: bool,
}

/// One client listener of a host as clients see it.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ListenerMeta {
    pub name: String,
    pub host: String,
    /// Advertised port of each shard, indexed by shard.
    pub ports: Vec<u16>,
}

impl BrokerMeta {
    pub fn nodes(&self) -> impl Iterator<Item = (i32, u16)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .map(|(s, port)| (node_id(self.host_id, s), *port))
    }

    /// Host and shard ports of the listener named `listener`; `None` when the host does
    /// not serve it (Kafka leaves such brokers out of the Metadata of that listener).
    pub fn endpoint(&self, listener: &str) -> Option<(&str, &[u16])> {
        if self.listeners.is_empty() {
            return Some((self.host.as_str(), self.ports.as_slice()));
        }
        self.listeners
            .iter()
            .find(|l| l.name == listener)
            .map(|l| (l.host.as_str(), l.ports.as_slice()))
    }
}

#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ClusterMeta {
    /// Bumped on every change; shards apply metadata only moving forward.
    pub epoch: u64,
    /// The cluster id (Kafka's), fixed when the quorum applies its first record.
    pub cluster_id: String,
    pub brokers: BTreeMap<u32, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// The first producer id not yet handed out in a block (cluster-wide, so two hosts
    /// never give two producers one id).
    #[serde(default)]
    pub next_producer_id: i64,
    /// SCRAM credentials: user -> mechanism name (`SCRAM-SHA-256`, `SCRAM-SHA-512`) ->
    /// the salted credential (never the password).
    #[serde(default)]
    pub scram: BTreeMap<String, BTreeMap<String, ScramCredential>>,
    /// The authorizer's ACLs (Kafka's AclBinding), each once.
    #[serde(default)]
    pub acls: Vec<AclBinding>,
}

/// One ACL as Kafka's AclBinding, with Kafka's codes (`acl::resource`, `acl::pattern`,
/// `protocol::acl::op`, `acl::permission`).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// Client IP address, or `*`.
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// What the server keeps of a SCRAM password (RFC 5802): salt, iterations, StoredKey and
/// ServerKey. Enough to verify a client's proof; not enough to impersonate the client.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub iterations: i32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ClusterMeta {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// Leader node of a partition, `None` for an unknown topic or partition.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.partition(topic, partition).map(|p| p.leader)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMeta> {
        let t = self.topics.get(topic)?;
        if partition < 0 {
            return None;
        }
        t.partitions.get(partition as usize)
    }

    /// True when the host of `node` is registered and not fenced.
    pub fn is_live(&self, node: i32) -> bool {
        self.brokers
            .get(&host_of(node))
            .is_some_and(|b| !b.fenced && shard_of(node) < b.ports.len())
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }

    /// Every node of every live (unfenced) host, ordered by node id: (node id, host,
    /// port, rack), with the host and port of the listener named `listener`.
    pub fn nodes_on(&self, listener: &str) -> Vec<(i32, &str, u16, &str)> {
        let mut out: Vec<_> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| b.endpoint(listener).map(|(host, ports)| (b, host, ports)))
            .flat_map(|(b, host, ports)| {
                ports
                    .iter()
                    .enumerate()
                    .map(move |(s, port)| (node_id(b.host_id, s), host, *port, b.rack.as_str()))
            })
            .collect();
        out.sort_by_key(|n| n.0);
        out
    }

    /// Every node of every live (unfenced) host, ordered by node id: (node id, host,
    /// port, rack) of the host's first listener.
    pub fn nodes(&self) -> Vec<(i32, &str, u16, &str)> {
        let mut out: Vec<_> = self
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .flat_map(|b| {
                b.nodes()
                    .map(move |(id, port)| (id, b.host.as_str(), port, b.rack.as_str()))
            })
            .collect();
        out.sort_by_key(|n| n.0);
        out
    }
}

/// Where a partition's files live: `<data>/topics/<topic>-<partition>`, independent of
/// which shard owns it, so a restart with another core count can reassign it.
pub fn partition_dir(
    data_dir: &std::path::Path,
    topic: &str,
    partition: i32,
) -> std::path::PathBuf {
    data_dir.join("topics").join(format!("{topic}-{partition}"))
}

/// Places `count` new partitions (starting at `first_partition`) with `rf` replicas each on
/// the given nodes (ordered by node id), spreading leaders round-robin from a per-topic
/// start so single-partition topics do not all land on one node. Replicas of one partition
/// go to distinct hosts: shards of one host share its disk and its partition directories
/// (`partition_dir`), so two replicas there would be one copy written twice. `None` when
/// there are fewer hosts than replicas.
pub fn place_partitions(
    topic: &str,
    first_partition: usize,
    count: usize,
    rf: usize,
    nodes: &[i32],
) -> Option<Vec<PartitionMeta>> {
    let mut hosts: Vec<u32> = nodes.iter().map(|n| host_of(*n)).collect();
    hosts.sort_unstable();
    hosts.dedup();
    if rf == 0 || hosts.len() < rf {
        return None;
    }
    // Interleave hosts: node order shard 0 of every host, then shard 1 of every host, ...
    // so consecutive leaders and a partition's consecutive replicas land on distinct hosts.
    let mut order: Vec<i32> = nodes.to_vec();
    order.sort_by_key(|n| (shard_of(*n), host_of(*n)));
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    let mut out = Vec::with_capacity(count);
    for p in first_partition..first_partition + count {
        let first = (start + p) % order.len();
        let mut replicas: Vec<i32> = Vec::with_capacity(rf);
        for k in 0..order.len() {
            if replicas.len() == rf {
                break;
            }
            let n = order[(first + k) % order.len()];
            if !replicas.iter().any(|r| host_of(*r) == host_of(n)) {
                replicas.push(n);
            }
        }
        out.push(PartitionMeta {
            leader: replicas[0],
            leader_epoch: 0,
            isr: replicas.clone(),
            replicas,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        });
    }
    Some(out)
}

/// A random (v4) UUID for a new topic id, from the kernel's random source.
pub fn new_topic_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    // getrandom(2) never fails for 16 bytes once the pool is initialised; if it did, fall
    // back to time-based bits, which are still unique enough for one broker's topic ids.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n != id.len() as isize {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        id = now.to_le_bytes();
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    // Leaders of one topic are spread evenly over every node of every host, and a
    // partition's replicas sit on distinct hosts.
    #[test]
    fn placement_spreads_over_hosts() {
        let nodes = vec![0, 1, 1024, 1025, 2048, 2049];
        let parts = place_partitions("t", 0, 12, 3, &nodes).unwrap();
        for n in &nodes {
            assert_eq!(parts.iter().filter(|p| p.leader == *n).count(), 2);
        }
        for p in &parts {
            let mut hosts: Vec<u32> = p.replicas.iter().map(|r| host_of(*r)).collect();
            hosts.sort();
            hosts.dedup();
            assert_eq!(hosts.len(), 3, "{p:?}");
        }
        // Two shards of one host are one failure domain (and one directory): RF 2 needs
        // two hosts.
        assert!(place_partitions("t", 0, 1, 2, &[0, 1]).is_none());
        assert_eq!(
            place_partitions("t", 0, 1, 1, &[0, 1]).unwrap()[0]
                .replicas
                .len(),
            1
        );
        let p = place_partitions("t", 0, 1, 2, &[0, 1, 1024]).unwrap();
        assert_ne!(host_of(p[0].replicas[0]), host_of(p[0].replicas[1]));
    }

    // Topic ids are distinct v4 UUIDs (never the all-zero "no id").
    #[test]
    fn topic_ids_are_random_v4() {
        let a = new_topic_id();
        let b = new_topic_id();
        assert_ne!(a, b);
        assert_ne!(a, [0; 16]);
        assert_eq!(a[6] >> 4, 4);
    }
}
