//! The cluster metadata every shard reads: topics, their ids, partition -> shard map and
//! configs, with an epoch. Immutable once built; the controller makes a new one per change.
//!
//! Runs on: built on shard 0 (controller), read on every shard through its own `Arc` copy.

use std::collections::BTreeMap;

/// A topic as the controller stores it (and persists with rkyv).
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka topic id (UUID bytes), fixed at creation.
    pub id: [u8; 16],
    /// Owning shard of each partition, indexed by partition number.
    pub owners: Vec<u32>,
    /// Topic-level config overrides (names as Kafka's).
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ClusterMeta {
    /// Bumped on every change; shards apply metadata only moving forward.
    pub epoch: u64,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl ClusterMeta {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    /// Owning shard of a partition, `None` for an unknown topic or partition.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic)?;
        if partition < 0 {
            return None;
        }
        t.owners.get(partition as usize).map(|s| *s as usize)
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
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

/// Spreads a topic's partitions round-robin over shards, starting at a per-topic offset so
/// single-partition topics do not all land on shard 0.
pub fn assign_owners(topic: &str, first_partition: usize, count: usize, shards: usize) -> Vec<u32> {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    (first_partition..first_partition + count)
        .map(|p| ((start + p) % shards) as u32)
        .collect()
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

    // Partitions of one topic are spread evenly over shards.
    #[test]
    fn owners_are_spread() {
        let owners = assign_owners("t", 0, 8, 2);
        assert_eq!(owners.iter().filter(|o| **o == 0).count(), 4);
        assert!(owners.windows(2).all(|w| w[0] != w[1]));
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
