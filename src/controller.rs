//! The shards' side of the controller quorum (`cluster`): turns CreateTopics,
//! DeleteTopics, CreatePartitions and topic config changes (AlterConfigs,
//! IncrementalAlterConfigs) into metadata commands, proposes them through the
//! quorum and answers once this host's shards run with the metadata that includes them.
//! At start-up it imports a one-host broker's pre-quorum snapshot (`cluster.meta`), registers
//! this host, and then follows every metadata change the quorum applies, broadcasting each
//! to all shards.
//!
//! Runs on: shard 0 only. Other shards reach it through the router.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use crate::cluster::ControllerHandle;
pub use crate::cluster::state::TopicError;
use crate::cluster::state::{
    MetaCommand, MetaReply, NewTopicCmd, TopicConfigChange, single_replica,
};
use crate::metadata::{BrokerMeta, TopicMeta, new_topic_id, node_id};
use crate::protocol::error;
use crate::shard::Shard;
use crate::sync::Notify;

const SNAPSHOT_FILE: &str = "cluster.meta";
const SNAPSHOT_MAGIC: &[u8; 8] = b"OSPYMETA";
const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// magic(8) + format(4) + crc32c(4) + payload length(8)
const SNAPSHOT_HEADER_BYTES: usize = 24;
/// Longest wait for this host's shards to apply metadata the quorum already committed.
const LOCAL_APPLY_WAIT_MAX: Duration = Duration::from_secs(10);
/// Pause between registration attempts while the quorum has no leader.
const REGISTER_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// A topic of a one-host broker from before the controller quorum (format 1 of
/// `controller/cluster.meta`): partition i lived on shard `owners[i]`.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LegacyTopicMeta {
    pub name: String,
    pub id: [u8; 16],
    pub owners: Vec<u32>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LegacyClusterMeta {
    pub epoch: u64,
    pub topics: BTreeMap<String, LegacyTopicMeta>,
}

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's num.partitions.
    pub num_partitions: i32,
    /// -1: the default replication factor.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

pub struct Controller {
    handle: ControllerHandle,
    /// Highest metadata epoch every shard of this host has applied.
    published: Cell<u64>,
    published_changed: Notify,
}

#[derive(Debug)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SnapshotError {}

#[cfg(test)]
fn encode_snapshot(meta: &LegacyClusterMeta) -> Result<Vec<u8>, SnapshotError> {
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

fn decode_snapshot(bytes: &[u8]) -> Result<LegacyClusterMeta, SnapshotError> {
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
    rkyv::from_bytes::<LegacyClusterMeta, rkyv::rancor::Error>(&aligned)
        .map_err(|e| SnapshotError(format!("decode snapshot: {e}")))
}

/// Reads a pre-quorum snapshot, if this data directory has one.
pub fn read_snapshot(dir: &Path) -> Result<Option<LegacyClusterMeta>, SnapshotError> {
    match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(bytes) => decode_snapshot(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SnapshotError(format!(
            "read snapshot in {}: {e}",
            dir.display()
        ))),
    }
}

/// The legacy topics as placed on this host's nodes (one replica each).
pub fn import_topics(legacy: &LegacyClusterMeta, host: u32) -> Vec<TopicMeta> {
    legacy
        .topics
        .values()
        .map(|t| TopicMeta {
            name: t.name.clone(),
            id: t.id,
            partitions: t
                .owners
                .iter()
                .map(|o| single_replica(node_id(host, *o as usize)))
                .collect(),
            configs: t.configs.clone(),
        })
        .collect()
}

/// Every item answered with the same error (the proposal itself failed).
fn all_failed<T>(items: usize, e: &TopicError) -> Vec<Result<T, TopicError>> {
    (0..items).map(|_| Err(e.clone())).collect()
}

impl Controller {
    pub fn new(handle: ControllerHandle) -> Controller {
        Controller {
            handle,
            published: Cell::new(0),
            published_changed: Notify::new(),
        }
    }

    /// Proposes `cmd` and waits until this host's shards run with its result, so a client
    /// that created a topic here sees it in the next Metadata.
    async fn submit(&self, cmd: MetaCommand) -> Result<MetaReply, TopicError> {
        let reply = self.handle.propose(cmd).await.map_err(|e| {
            log::warn!("controller: proposal failed: {e}");
            TopicError::new(error::REQUEST_TIMED_OUT, e)
        })?;
        let waited = glommio::timer::timeout(LOCAL_APPLY_WAIT_MAX, async {
            while self.published.get() < reply.epoch {
                self.published_changed.notified().await;
            }
            Ok(())
        })
        .await;
        if waited.is_err() {
            log::warn!(
                "controller: epoch {} committed but not applied here after {LOCAL_APPLY_WAIT_MAX:?}",
                reply.epoch
            );
        }
        Ok(reply)
    }

    /// Start-up on shard 0: imports pre-quorum topics, registers this host, then follows
    /// the quorum's metadata (broadcasting each version to every shard) until shutdown.
    /// Returns once the first metadata including this host is applied everywhere.
    pub async fn start(self: &Rc<Self>, shard: &Rc<Shard>) -> Result<(), String> {
        {
            let me = self.clone();
            let shard = shard.clone();
            glommio::spawn_local(async move { me.follow(&shard).await }).detach();
        }
        let config = &shard.config;
        let legacy_dir = config.data_dir.join("controller");
        if let Some(legacy) = read_snapshot(&legacy_dir).map_err(|e| e.to_string())? {
            let topics = import_topics(&legacy, config.node_id);
            log::info!(
                "controller: importing {} topics from the pre-quorum snapshot",
                topics.len()
            );
            self.register_until_done(MetaCommand::Import { topics }, shard)
                .await?;
            let from = legacy_dir.join(SNAPSHOT_FILE);
            let to = legacy_dir.join("cluster.meta.imported");
            std::fs::rename(&from, &to).map_err(|e| format!("rename {}: {e}", from.display()))?;
        }
        // SCRAM users made with `osprey users create --data-dir` before this start.
        if let Some(users) = crate::sasl::read_bootstrap(&legacy_dir)? {
            let n = users.len();
            self.register_until_done(MetaCommand::AlterScramCredentials { users }, shard)
                .await?;
            let path = legacy_dir.join(crate::sasl::BOOTSTRAP_FILE);
            std::fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
            log::info!("controller: created the SCRAM credentials of {n} bootstrap users");
        }
        let broker = BrokerMeta {
            host_id: config.node_id,
            incarnation: u64::from_le_bytes(new_topic_id()[..8].try_into().unwrap_or_default()),
            host: shard.nodes[0].host.clone(),
            ports: shard.nodes[0].ports.clone(),
            listeners: shard.nodes.as_ref().clone(),
            rack: format!("host-{}", config.node_id),
            fenced: false,
        };
        let cluster_id = crate::handlers::uuid(new_topic_id()).simple().to_string();
        let producer_ids_used_below =
            crate::shard::legacy_producer_ids_end(&config.data_dir.join("producer-ids"));
        self.register_until_done(
            MetaCommand::RegisterBroker {
                broker,
                cluster_id,
                producer_ids_used_below,
            },
            shard,
        )
        .await
    }

    /// Proposes a start-up command until it is applied (the quorum may still be forming:
    /// other hosts starting), logging while it waits.
    async fn register_until_done(&self, cmd: MetaCommand, shard: &Rc<Shard>) -> Result<(), String> {
        let mut tries = 0u32;
        loop {
            if shard.shutting_down.get() {
                return Err("shutting down".into());
            }
            match self.submit(cmd.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tries += 1;
                    log::warn!(
                        "controller: waiting for the controller quorum (attempt {tries}): {}",
                        e.message
                    );
                    glommio::timer::sleep(REGISTER_RETRY_INTERVAL).await;
                }
            }
        }
    }

    async fn follow(&self, shard: &Rc<Shard>) {
        let mut rx = self.handle.watch();
        loop {
            let meta = rx.borrow_and_update().clone();
            if meta.epoch > self.published.get() {
                shard.broadcast_meta(meta.clone()).await;
                self.published.set(meta.epoch);
                self.published_changed.notify_all();
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<TopicMeta, TopicError>> {
        let n = topics.len();
        let cmd = MetaCommand::CreateTopics {
            topics: topics
                .into_iter()
                .map(|t| NewTopicCmd {
                    name: t.name,
                    id: new_topic_id(),
                    num_partitions: if t.num_partitions == -1 {
                        shard.config.num_partitions
                    } else {
                        t.num_partitions
                    },
                    replication_factor: if t.replication_factor == -1 {
                        shard.config.default_replication_factor
                    } else {
                        t.replication_factor
                    },
                    configs: t.configs,
                })
                .collect(),
            validate_only,
        };
        self.submit_for_topics(cmd, n).await
    }

    pub async fn delete_topics(
        &self,
        _shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<TopicMeta, TopicError>> {
        let n = names.len();
        self.submit_for_topics(MetaCommand::DeleteTopics { names }, n)
            .await
    }

    /// Proposes a command answered per topic; every item fails alike when the proposal does.
    async fn submit_for_topics(
        &self,
        cmd: MetaCommand,
        items: usize,
    ) -> Vec<Result<TopicMeta, TopicError>> {
        match self.submit(cmd).await {
            Ok(r) => r
                .results
                .into_iter()
                .map(|r| {
                    r.and_then(|t| {
                        t.ok_or_else(|| {
                            TopicError::new(error::INVALID_REQUEST, "no topic in reply")
                        })
                    })
                })
                .collect(),
            Err(e) => all_failed(items, &e),
        }
    }

    /// A block of `count` producer ids, unique across the cluster (Kafka's
    /// AllocateProducerIds), committed through the quorum before any id of it is used.
    pub async fn allocate_producer_ids(&self, count: i64) -> Result<(i64, i64), String> {
        let reply = self
            .handle
            .propose(MetaCommand::AllocateProducerIds { count })
            .await?;
        reply
            .producer_ids
            .ok_or_else(|| "the quorum answered no producer-id block".to_string())
    }

    /// Kafka's AlterPartition from a partition leader on this host.
    pub async fn alter_partition(
        &self,
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> Result<(), TopicError> {
        let cmd = MetaCommand::AlterPartition {
            topic,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        };
        let reply = self.submit(cmd).await?;
        reply
            .results
            .into_iter()
            .next()
            .unwrap_or(Ok(None))
            .map(|_| ())
    }

    /// AlterConfigs / IncrementalAlterConfigs on topics: one result per change, in order.
    pub async fn alter_topic_configs(
        &self,
        changes: Vec<TopicConfigChange>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let n = changes.len();
        let cmd = MetaCommand::AlterTopicConfigs {
            changes,
            validate_only,
        };
        match self.submit(cmd).await {
            Ok(r) => r.results.into_iter().map(|r| r.map(|_| ())).collect(),
            Err(e) => all_failed(n, &e),
        }
    }

    /// AlterUserScramCredentials: one result per user, in order.
    pub async fn alter_scram(
        &self,
        users: Vec<crate::cluster::state::ScramUserChange>,
    ) -> Vec<Result<(), TopicError>> {
        let n = users.len();
        match self
            .submit(MetaCommand::AlterScramCredentials { users })
            .await
        {
            Ok(r) => r.results.into_iter().map(|r| r.map(|_| ())).collect(),
            Err(e) => all_failed(n, &e),
        }
    }

    /// CreateAcls / DeleteAcls through the quorum.
    pub async fn alter_acls(
        &self,
        create: bool,
        acls: Vec<crate::metadata::AclBinding>,
    ) -> Result<(), TopicError> {
        let cmd = if create {
            MetaCommand::CreateAcls { acls }
        } else {
            MetaCommand::DeleteAcls { acls }
        };
        self.submit(cmd).await.map(|_| ())
    }

    /// AlterPartitionReassignments: one result per change.
    pub async fn alter_reassignments(
        &self,
        changes: Vec<crate::cluster::state::ReassignChange>,
    ) -> Vec<Result<(), TopicError>> {
        let n = changes.len();
        match self
            .submit(MetaCommand::AlterReassignments { changes })
            .await
        {
            Ok(r) => r.results.into_iter().map(|r| r.map(|_| ())).collect(),
            Err(e) => all_failed(n, &e),
        }
    }

    /// DescribeQuorum: the metadata quorum as its leader sees it.
    pub async fn describe_quorum(&self) -> Result<crate::cluster::QuorumInfo, String> {
        self.handle.describe_quorum().await
    }

    /// ElectLeaders: one result per partition answered (see `MetaCommand::ElectLeaders`).
    pub async fn elect_leaders(
        &self,
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    ) -> Result<Vec<((String, i32), Result<(), TopicError>)>, TopicError> {
        let reply = self
            .submit(MetaCommand::ElectLeaders {
                unclean,
                partitions,
            })
            .await?;
        Ok(reply
            .partitions
            .into_iter()
            .zip(reply.results.into_iter().map(|r| r.map(|_| ())))
            .collect())
    }

    pub async fn create_partitions(
        &self,
        _shard: &Rc<Shard>,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), TopicError>> {
        let n = requests.len();
        let cmd = MetaCommand::CreatePartitions {
            requests,
            validate_only,
        };
        match self.submit(cmd).await {
            Ok(r) => r.results.into_iter().map(|r| r.map(|_| ())).collect(),
            Err(e) => all_failed(n, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LegacyClusterMeta {
        let mut m = LegacyClusterMeta {
            epoch: 3,
            ..Default::default()
        };
        m.topics.insert(
            "a".into(),
            LegacyTopicMeta {
                name: "a".into(),
                id: [1; 16],
                owners: vec![0, 1, 0],
                configs: [("retention.ms".to_string(), "10".to_string())].into(),
            },
        );
        m
    }

    // A pre-quorum snapshot reads back exactly and imports onto this host's nodes.
    #[test]
    fn legacy_snapshot_imports() {
        let dir = tempfile::tempdir().unwrap();
        crate::durable::write_atomic(
            dir.path(),
            SNAPSHOT_FILE,
            &encode_snapshot(&sample()).unwrap(),
        )
        .unwrap();
        let legacy = read_snapshot(dir.path()).unwrap().unwrap();
        assert_eq!(legacy, sample());
        let topics = import_topics(&legacy, 2);
        let leaders: Vec<i32> = topics[0].partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders, vec![2048, 2049, 2048]);
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
}
