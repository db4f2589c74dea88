//! The controller: owner of the cluster metadata (topics, partition -> shard map, topic
//! configs). It persists every change atomically before broadcasting it to all shards.
//!
//! Runs on: shard 0 only. Other shards reach it through the router. Changes are serialised
//! by one permit, so two CreateTopics never interleave between "persist" and "broadcast".

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use crate::config::{PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX};
use crate::metadata::{ClusterMeta, TopicMeta, assign_owners, new_topic_id};
use crate::protocol::error;
use crate::shard::Shard;
use crate::topic_config;

const SNAPSHOT_FILE: &str = "cluster.meta";
const SNAPSHOT_MAGIC: &[u8; 8] = b"OSPYMETA";
const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// magic(8) + format(4) + crc32c(4) + payload length(8)
const SNAPSHOT_HEADER_BYTES: usize = 24;

/// A controller answer for one topic: Kafka error code and message.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: i16,
    pub message: String,
}

impl TopicError {
    fn new(code: i16, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's num.partitions.
    pub num_partitions: i32,
    /// -1 or 1: osprey keeps one copy (no replication yet).
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

pub struct Controller {
    dir: PathBuf,
    meta: RefCell<Arc<ClusterMeta>>,
    changes: Semaphore,
}

#[derive(Debug)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SnapshotError {}

fn encode_snapshot(meta: &ClusterMeta) -> Result<Vec<u8>, SnapshotError> {
    let payload = rkyv::to_bytes::<rkyv::rancor::Error>(meta)
        .map_err(|e| SnapshotError(format!("serialise metadata: {e}")))?;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> Result<ClusterMeta, SnapshotError> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(SnapshotError("not an osprey metadata snapshot".into()));
    }
    let format = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if format != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError(format!("unknown snapshot format {format}")));
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(bytes[16..24].try_into().unwrap_or_default()) as usize;
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if payload.len() != len || crc32c::crc32c(payload) != crc {
        return Err(SnapshotError("snapshot length or checksum mismatch".into()));
    }
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(len);
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<ClusterMeta, rkyv::rancor::Error>(&aligned)
        .map_err(|e| SnapshotError(format!("decode snapshot: {e}")))
}

/// Writes the snapshot atomically (`durable::write_atomic`).
pub fn write_snapshot(dir: &Path, meta: &ClusterMeta) -> Result<(), SnapshotError> {
    let bytes = encode_snapshot(meta)?;
    crate::durable::write_atomic(dir, SNAPSHOT_FILE, &bytes).map_err(SnapshotError)
}

pub fn read_snapshot(dir: &Path) -> Result<Option<ClusterMeta>, SnapshotError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => decode_snapshot(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SnapshotError(format!(
            "read snapshot in {}: {e}",
            dir.display()
        ))),
    }
}

/// The answer to every item of a change asked while the controller is shutting down.
fn shutting_down<T>(items: usize) -> Vec<Result<T, TopicError>> {
    (0..items)
        .map(|_| {
            Err(TopicError::new(
                error::NOT_CONTROLLER,
                "controller is shutting down",
            ))
        })
        .collect()
}

impl Controller {
    /// Loads the persisted metadata (or starts empty) and reassigns partitions whose shard
    /// no longer exists because the broker now runs on fewer cores.
    pub fn load(dir: PathBuf, shards: usize) -> Result<Controller, SnapshotError> {
        let mut meta = read_snapshot(&dir)?.unwrap_or_default();
        let mut moved = 0;
        for t in meta.topics.values_mut() {
            for (p, owner) in t.owners.iter_mut().enumerate() {
                if *owner as usize >= shards {
                    *owner = assign_owners(&t.name, p, 1, shards)[0];
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            meta.epoch += 1;
            log::info!("reassigned {moved} partitions to the {shards} shards now running");
            write_snapshot(&dir, &meta)?;
        }
        log::info!(
            "controller loaded {} topics at epoch {} from {}",
            meta.topics.len(),
            meta.epoch,
            dir.display()
        );
        Ok(Controller {
            dir,
            meta: RefCell::new(Arc::new(meta)),
            changes: Semaphore::new(1),
        })
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    /// Persists `next` and broadcasts it to every shard, waiting until all applied it.
    async fn commit(&self, shard: &Rc<Shard>, next: ClusterMeta) -> Result<(), TopicError> {
        let dir = self.dir.clone();
        let to_write = next.clone();
        // Persisting is blocking file I/O: run it off the shard's reactor thread.
        let written = glommio::executor()
            .spawn_blocking(move || write_snapshot(&dir, &to_write))
            .await;
        if let Err(e) = written {
            log::error!("controller could not persist metadata: {e}");
            return Err(TopicError::new(error::KAFKA_STORAGE_ERROR, e.0));
        }
        let next = Arc::new(next);
        *self.meta.borrow_mut() = next.clone();
        shard.broadcast_meta(next).await;
        Ok(())
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, TopicError>> {
        let Ok(_permit) = self.changes.acquire_permit(1).await else {
            return shutting_down(topics.len());
        };
        let mut next = (*self.meta()).clone();
        let mut results = Vec::with_capacity(topics.len());
        let mut changed = false;
        for t in topics {
            let r = self.plan_topic(shard, &next, t);
            if let Ok(meta) = &r
                && !validate_only
            {
                next.topics.insert(meta.name.clone(), meta.clone());
                changed = true;
            }
            results.push(r);
        }
        if changed {
            next.epoch += 1;
            if let Err(e) = self.commit(shard, next).await {
                return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        }
        results
    }

    fn plan_topic(
        &self,
        shard: &Rc<Shard>,
        meta: &ClusterMeta,
        t: NewTopic,
    ) -> Result<TopicMeta, TopicError> {
        topic_config::validate_topic_name(&t.name)
            .map_err(|m| TopicError::new(error::INVALID_TOPIC_EXCEPTION, m))?;
        if meta.topics.contains_key(&t.name) {
            return Err(TopicError::new(
                error::TOPIC_ALREADY_EXISTS,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        if meta.topics.len() >= TOPICS_MAX {
            return Err(TopicError::new(
                error::INVALID_REQUEST,
                format!("the broker holds its maximum of {TOPICS_MAX} topics"),
            ));
        }
        let partitions = if t.num_partitions == -1 {
            shard.config.num_partitions
        } else {
            t.num_partitions
        };
        if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return Err(TopicError::new(
                error::INVALID_PARTITIONS,
                format!(
                    "Number of partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}, got {partitions}"
                ),
            ));
        }
        if !(t.replication_factor == -1 || t.replication_factor == 1) {
            return Err(TopicError::new(
                error::INVALID_REPLICATION_FACTOR,
                format!(
                    "Replication factor {} is larger than the 1 copy a single osprey node keeps",
                    t.replication_factor
                ),
            ));
        }
        for (k, v) in &t.configs {
            topic_config::validate(k, v).map_err(|m| TopicError::new(error::INVALID_CONFIG, m))?;
        }
        Ok(TopicMeta {
            owners: assign_owners(&t.name, 0, partitions as usize, shard.count),
            name: t.name,
            id: new_topic_id(),
            configs: t.configs,
        })
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<TopicMeta, TopicError>> {
        let Ok(_permit) = self.changes.acquire_permit(1).await else {
            return shutting_down(names.len());
        };
        let mut next = (*self.meta()).clone();
        let mut results = Vec::new();
        for name in names {
            match next.topics.remove(&name) {
                Some(t) => results.push(Ok(t)),
                None => results.push(Err(TopicError::new(
                    error::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.",
                ))),
            }
        }
        if results.iter().any(|r| r.is_ok()) {
            next.epoch += 1;
            if let Err(e) = self.commit(shard, next).await {
                return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        }
        results
    }

    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let Ok(_permit) = self.changes.acquire_permit(1).await else {
            return shutting_down(requests.len());
        };
        let mut next = (*self.meta()).clone();
        let mut results = Vec::new();
        let mut changed = false;
        for (name, count) in requests {
            let Some(t) = next.topics.get_mut(&name) else {
                results.push(Err(TopicError::new(
                    error::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("Topic '{name}' does not exist."),
                )));
                continue;
            };
            let current = t.owners.len() as i32;
            if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
                results.push(Err(TopicError::new(
                    error::INVALID_PARTITIONS,
                    format!("Topic '{name}' has {current} partitions; the new count must be larger and at most {PARTITIONS_PER_TOPIC_MAX}, got {count}"),
                )));
                continue;
            }
            if !validate_only {
                let more = assign_owners(
                    &name,
                    current as usize,
                    (count - current) as usize,
                    shard.count,
                );
                t.owners.extend(more);
                changed = true;
            }
            results.push(Ok(()));
        }
        if changed {
            next.epoch += 1;
            if let Err(e) = self.commit(shard, next).await {
                return results.into_iter().map(|r| r.and(Err(e.clone()))).collect();
            }
        }
        results
    }

    /// Makes sure `meta` is what every shard runs with (start-up).
    pub async fn publish(&self, shard: &Rc<Shard>) {
        shard.broadcast_meta(self.meta()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ClusterMeta {
        let mut m = ClusterMeta {
            epoch: 3,
            ..Default::default()
        };
        m.topics.insert(
            "a".into(),
            TopicMeta {
                name: "a".into(),
                id: [1; 16],
                owners: vec![0, 1, 0],
                configs: [("retention.ms".to_string(), "10".to_string())].into(),
            },
        );
        m
    }

    // The snapshot survives a write/read cycle exactly, through the atomic rename.
    #[test]
    fn snapshot_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), &sample()).unwrap();
        assert_eq!(read_snapshot(dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join("cluster.meta.tmp").exists());
    }

    // A flipped byte or a truncated file is detected, never half-loaded.
    #[test]
    fn corrupt_snapshot_is_refused() {
        let mut bytes = encode_snapshot(&sample()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode_snapshot(&bytes).is_err());
        assert!(decode_snapshot(&bytes[..10]).is_err());
    }

    // Loading with fewer shards moves partitions of vanished shards and persists that.
    #[test]
    fn load_reassigns_to_running_shards() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), &sample()).unwrap();
        let c = Controller::load(dir.path().to_path_buf(), 1).unwrap();
        assert!(c.meta().topics["a"].owners.iter().all(|o| *o == 0));
        assert_eq!(read_snapshot(dir.path()).unwrap().unwrap().epoch, 4);
    }
}
