//! The controller quorum's state machine logic: the metadata commands and how each one
//! changes `ClusterMeta`. Pure and deterministic (every voter applies the same command to
//! the same state and gets the same result), so random choices (topic ids, the cluster id)
//! travel inside the command, made by its proposer.
//!
//! Runs on: the controller thread (applying committed entries), and in tests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{PARTITIONS_PER_TOPIC_MAX, TOPICS_MAX};
use crate::metadata::{
    BrokerMeta, ClusterMeta, PartitionMeta, TopicMeta, host_of, node_id, place_partitions, shard_of,
};
use crate::protocol::error;
use crate::topic_config;

/// Kafka's code for an AlterPartition whose partition epoch is stale (internal: only
/// leaders see it, and they retry with fresh metadata).
pub const INVALID_UPDATE_VERSION: i16 = 95;
/// Largest producer-id block one request may take.
pub const PRODUCER_ID_BLOCK_MAX: i64 = 1 << 20;
/// Kafka's INELIGIBLE_REPLICA: an AlterPartition adding a replica of a fenced host.
pub const INELIGIBLE_REPLICA: i16 = 107;
/// Kafka's FENCED_LEADER_EPOCH.
pub const FENCED_LEADER_EPOCH: i16 = 74;

/// A controller answer for one item: Kafka error code and message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicError {
    pub code: i16,
    pub message: String,
}

impl TopicError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

/// A topic to create, with everything random or broker-local already resolved by the
/// proposer (id, default partition count).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTopicCmd {
    pub name: String,
    pub id: [u8; 16],
    pub num_partitions: i32,
    /// -1: the default replication factor.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// One record of the metadata log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// A host (re)starts: its endpoints and shard count. Partitions on shards it no longer
    /// runs move to shards it does.
    RegisterBroker {
        broker: BrokerMeta,
        /// Taken as the cluster id if the cluster has none yet.
        cluster_id: String,
        /// Producer ids below this were handed out by the host before blocks came from
        /// the quorum (its old per-shard counters): never hand them out again.
        #[serde(default)]
        producer_ids_used_below: i64,
    },
    /// Kafka's AllocateProducerIds: a block of `count` producer ids for one shard.
    AllocateProducerIds {
        count: i64,
    },
    CreateTopics {
        topics: Vec<NewTopicCmd>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        requests: Vec<(String, i32)>,
        validate_only: bool,
    },
    /// Topics of a one-host broker from before the quorum existed (its `cluster.meta`
    /// snapshot), imported once; topics already known are kept as they are.
    Import {
        topics: Vec<TopicMeta>,
    },
    /// Kafka's AlterPartition: a partition leader changes its ISR, as a compare-and-set on
    /// (leader, leader epoch, partition epoch).
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// The host missed heartbeats for broker.session.timeout.ms, or shuts down in a
    /// controlled way: it leads nothing from now on and leaves every ISR it can leave.
    FenceBroker {
        host_id: u32,
        reason: String,
    },
    /// A fenced host heartbeats again: it may take leaderships and rejoin ISRs.
    UnfenceBroker {
        host_id: u32,
    },
    /// Moves leadership back to each partition's preferred (first) replica where that
    /// replica is in sync and live.
    ElectPreferred {
        partitions: Vec<(String, i32)>,
    },
    /// ElectLeaders (admin): preferred or unclean election for the listed partitions, or
    /// for every partition when `partitions` is `None`. One result per partition in
    /// `MetaReply::partitions` order (Kafka's codes: ELECTION_NOT_NEEDED,
    /// PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE,
    /// UNKNOWN_TOPIC_OR_PARTITION); asked for every partition, only partitions where an
    /// election was needed are answered, as Kafka's controller does.
    ElectLeaders {
        unclean: bool,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments: per partition, move its replicas to `target` (or cancel
    /// an ongoing move with `None`); one result each. A move completes (old replicas
    /// dropped, leadership moved onto the target) once every target replica is in the ISR.
    AlterReassignments {
        changes: Vec<ReassignChange>,
    },
    /// AlterConfigs / IncrementalAlterConfigs on topics: one change per topic, each applied
    /// (or refused) on its own, validated here with `topic_config::validate`.
    AlterTopicConfigs {
        changes: Vec<TopicConfigChange>,
        validate_only: bool,
    },
    /// AlterUserScramCredentials (and `osprey users create`): per user, credentials to
    /// set and mechanisms to delete, applied all or nothing per user, one result each.
    AlterScramCredentials {
        users: Vec<ScramUserChange>,
    },
    /// CreateAcls: each binding added unless already there.
    CreateAcls {
        acls: Vec<crate::metadata::AclBinding>,
    },
    /// DeleteAcls: the bindings the proposer matched against its filters, removed where
    /// still present.
    DeleteAcls {
        acls: Vec<crate::metadata::AclBinding>,
    },
}

/// The SCRAM credential changes asked for one user (already validated by the proposer:
/// known mechanisms, iterations in range, no duplicates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScramUserChange {
    pub user: String,
    /// (mechanism name, credential)
    pub upserts: Vec<(String, crate::metadata::ScramCredential)>,
    /// mechanism names
    pub deletions: Vec<String>,
}

/// One operation on one topic config (IncrementalAlterConfigs' SET, DELETE, APPEND,
/// SUBTRACT; APPEND and SUBTRACT only on list configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set(String),
    Delete,
    Append(String),
    Subtract(String),
}

/// The config changes asked for one topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicConfigChange {
    pub topic: String,
    /// AlterConfigs (the legacy API): the topic's configs become exactly the `Set` ones,
    /// every other override is removed.
    pub replace: bool,
    pub ops: Vec<(String, ConfigOp)>,
}

/// The result of applying one command: the metadata epoch it produced and one result per
/// item (topic, partition request), in request order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaReply {
    pub epoch: u64,
    pub results: Vec<Result<Option<TopicMeta>, TopicError>>,
    /// AllocateProducerIds: the block [start, end).
    #[serde(default)]
    pub producer_ids: Option<(i64, i64)>,
    /// ElectLeaders: the partition each of `results` is about.
    #[serde(default)]
    pub partitions: Vec<(String, i32)>,
}

/// One partition of an AlterPartitionReassignments request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReassignChange {
    pub topic: String,
    pub partition: i32,
    /// The new replica list (first = preferred leader); `None` cancels.
    pub target: Option<Vec<i32>>,
    /// v1's allow_replication_factor_change (v0: true).
    pub allow_rf_change: bool,
}

fn live_hosts(meta: &ClusterMeta) -> usize {
    meta.brokers.values().filter(|b| !b.fenced).count()
}

fn all_nodes(meta: &ClusterMeta) -> Vec<i32> {
    meta.nodes().into_iter().map(|n| n.0).collect()
}

pub fn apply(meta: &mut ClusterMeta, cmd: MetaCommand) -> MetaReply {
    let mut changed = false;
    let mut block = None;
    let mut elected = Vec::new();
    let results = match cmd {
        MetaCommand::RegisterBroker {
            broker,
            cluster_id,
            producer_ids_used_below,
        } => {
            if meta.cluster_id.is_empty() {
                meta.cluster_id = cluster_id;
            }
            meta.next_producer_id = meta.next_producer_id.max(producer_ids_used_below);
            reassign_vanished_shards(meta, &broker);
            meta.brokers.insert(broker.host_id, broker);
            // A host that registers is live: partitions waiting for one of its replicas
            // get their leader back.
            elect_all(meta);
            changed = true;
            Vec::new()
        }
        MetaCommand::CreateTopics {
            topics,
            validate_only,
        } => {
            let mut out = Vec::with_capacity(topics.len());
            for t in topics {
                let r = plan_topic(meta, t);
                if let Ok(tm) = &r
                    && !validate_only
                {
                    meta.topics.insert(tm.name.clone(), tm.clone());
                    changed = true;
                }
                out.push(r.map(Some));
            }
            out
        }
        MetaCommand::DeleteTopics { names } => names
            .into_iter()
            .map(|name| match meta.topics.remove(&name) {
                Some(t) => {
                    changed = true;
                    Ok(Some(t))
                }
                None => Err(TopicError::new(
                    error::UNKNOWN_TOPIC_OR_PARTITION,
                    "This server does not host this topic-partition.",
                )),
            })
            .collect(),
        MetaCommand::CreatePartitions {
            requests,
            validate_only,
        } => {
            let nodes = all_nodes(meta);
            let mut out = Vec::with_capacity(requests.len());
            for (name, count) in requests {
                let Some(t) = meta.topics.get_mut(&name) else {
                    out.push(Err(TopicError::new(
                        error::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic '{name}' does not exist."),
                    )));
                    continue;
                };
                let current = t.partitions.len() as i32;
                if count <= current || count > PARTITIONS_PER_TOPIC_MAX {
                    out.push(Err(TopicError::new(
                        error::INVALID_PARTITIONS,
                        format!("Topic '{name}' has {current} partitions; the new count must be larger and at most {PARTITIONS_PER_TOPIC_MAX}, got {count}"),
                    )));
                    continue;
                }
                let rf = t.partitions.first().map(|p| p.replicas.len()).unwrap_or(1);
                let Some(more) = place_partitions(
                    &name,
                    current as usize,
                    (count - current) as usize,
                    rf,
                    &nodes,
                ) else {
                    out.push(Err(TopicError::new(
                        error::INVALID_REPLICATION_FACTOR,
                        format!(
                            "{} live hosts cannot hold {rf} replicas (one per host)",
                            live_hosts(meta)
                        ),
                    )));
                    continue;
                };
                if !validate_only {
                    t.partitions.extend(more);
                    changed = true;
                }
                out.push(Ok(None));
            }
            out
        }
        MetaCommand::AllocateProducerIds { count } => {
            let count = count.clamp(1, PRODUCER_ID_BLOCK_MAX);
            let start = meta.next_producer_id;
            meta.next_producer_id = start.saturating_add(count);
            block = Some((start, meta.next_producer_id));
            changed = true;
            Vec::new()
        }
        MetaCommand::AlterPartition {
            topic,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        } => {
            let live: Vec<i32> = all_nodes(meta);
            let r = match meta
                .topics
                .get_mut(&topic)
                .and_then(|t| t.partitions.get_mut(partition.max(0) as usize))
            {
                None => Err(TopicError::new(
                    error::UNKNOWN_TOPIC_OR_PARTITION,
                    "no such partition",
                )),
                Some(p) if p.leader != leader || p.leader_epoch != leader_epoch => Err(
                    TopicError::new(FENCED_LEADER_EPOCH, "not the current leader and epoch"),
                ),
                Some(p) if p.partition_epoch != partition_epoch => Err(TopicError::new(
                    INVALID_UPDATE_VERSION,
                    "stale partition epoch",
                )),
                Some(p) if isr.iter().any(|r| !p.isr.contains(r) && !live.contains(r)) => {
                    Err(TopicError::new(
                        INELIGIBLE_REPLICA,
                        "a replica on a fenced host cannot join the ISR",
                    ))
                }
                Some(p) => {
                    // Only replicas, each once, never empty, always with the leader in it.
                    let asked = isr;
                    let mut isr: Vec<i32> = Vec::with_capacity(asked.len());
                    for r in asked {
                        if p.replicas.contains(&r) && !isr.contains(&r) {
                            isr.push(r);
                        }
                    }
                    if !isr.contains(&leader) {
                        isr.insert(0, leader);
                    }
                    if isr != p.isr {
                        p.isr = isr;
                        p.partition_epoch += 1;
                        changed = true;
                    }
                    let live: std::collections::BTreeSet<i32> = live.iter().copied().collect();
                    if complete_reassignment(p, &live) {
                        changed = true;
                    }
                    Ok(None)
                }
            };
            vec![r]
        }
        MetaCommand::FenceBroker { host_id, reason } => {
            if let Some(b) = meta.brokers.get_mut(&host_id)
                && !b.fenced
            {
                b.fenced = true;
                log::info!("controller: fencing host {host_id}: {reason}");
                elect_all(meta);
                changed = true;
            }
            Vec::new()
        }
        MetaCommand::UnfenceBroker { host_id } => {
            if let Some(b) = meta.brokers.get_mut(&host_id)
                && b.fenced
            {
                b.fenced = false;
                log::info!("controller: host {host_id} is live again");
                elect_all(meta);
                changed = true;
            }
            Vec::new()
        }
        MetaCommand::ElectPreferred { partitions } => {
            let live: Vec<i32> = all_nodes(meta);
            for (topic, p) in partitions {
                if let Some(pm) = meta
                    .topics
                    .get_mut(&topic)
                    .and_then(|t| t.partitions.get_mut(p.max(0) as usize))
                {
                    let pref = pm.replicas[0];
                    if pm.leader != pref && pm.isr.contains(&pref) && live.contains(&pref) {
                        pm.leader = pref;
                        pm.leader_epoch += 1;
                        pm.partition_epoch += 1;
                        changed = true;
                    }
                }
            }
            Vec::new()
        }
        MetaCommand::ElectLeaders {
            unclean,
            partitions,
        } => {
            let live: std::collections::BTreeSet<i32> = all_nodes(meta).into_iter().collect();
            let all = partitions.is_none();
            let asked = partitions.unwrap_or_else(|| {
                meta.topics
                    .values()
                    .flat_map(|t| (0..t.partitions.len() as i32).map(|p| (t.name.clone(), p)))
                    .collect()
            });
            let mut out = Vec::with_capacity(asked.len());
            for (topic, p) in asked {
                let r = elect_one(meta, &live, &topic, p, unclean);
                if r.is_ok() {
                    changed = true;
                }
                if all && matches!(&r, Err(e) if e.code == error::ELECTION_NOT_NEEDED) {
                    continue;
                }
                elected.push((topic, p));
                out.push(r.map(|()| None));
            }
            out
        }
        MetaCommand::AlterReassignments { changes } => {
            let live: std::collections::BTreeSet<i32> = all_nodes(meta).into_iter().collect();
            let registered: std::collections::BTreeSet<i32> = meta
                .brokers
                .values()
                .flat_map(|b| b.nodes().map(|n| n.0))
                .collect();
            let mut out = Vec::with_capacity(changes.len());
            for c in changes {
                let r = reassign(meta, &registered, &live, &c);
                if r == Ok(true) {
                    changed = true;
                }
                out.push(r.map(|_| None));
            }
            out
        }
        MetaCommand::Import { topics } => {
            for t in topics {
                if !meta.topics.contains_key(&t.name) {
                    meta.topics.insert(t.name.clone(), t);
                    changed = true;
                }
            }
            Vec::new()
        }
        MetaCommand::AlterTopicConfigs {
            changes,
            validate_only,
        } => {
            let mut out = Vec::with_capacity(changes.len());
            for c in changes {
                let r = match meta.topics.get(&c.topic) {
                    None => Err(TopicError::new(
                        error::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic '{}' does not exist.", c.topic),
                    )),
                    Some(t) => altered_configs(&t.configs, &c),
                };
                match r {
                    Ok(new) => {
                        if !validate_only
                            && let Some(t) = meta.topics.get_mut(&c.topic)
                            && t.configs != new
                        {
                            t.configs = new;
                            changed = true;
                        }
                        out.push(Ok(None));
                    }
                    Err(e) => out.push(Err(e)),
                }
            }
            out
        }
        MetaCommand::CreateAcls { acls } => acls
            .into_iter()
            .map(|a| {
                if !meta.acls.contains(&a) {
                    meta.acls.push(a);
                    changed = true;
                }
                Ok(None)
            })
            .collect(),
        MetaCommand::DeleteAcls { acls } => {
            let before = meta.acls.len();
            meta.acls.retain(|a| !acls.contains(a));
            changed = meta.acls.len() != before;
            vec![Ok(None)]
        }
        MetaCommand::AlterScramCredentials { users } => {
            let mut out = Vec::with_capacity(users.len());
            for u in users {
                let existing = meta.scram.get(&u.user);
                if let Some(missing) = u
                    .deletions
                    .iter()
                    .find(|m| !existing.is_some_and(|e| e.contains_key(*m)))
                {
                    out.push(Err(TopicError::new(
                        error::RESOURCE_NOT_FOUND,
                        format!(
                            "Attempt to delete a user credential that does not exist ({missing})"
                        ),
                    )));
                    continue;
                }
                let entry = meta.scram.entry(u.user.clone()).or_default();
                for m in &u.deletions {
                    entry.remove(m);
                }
                for (m, c) in u.upserts {
                    entry.insert(m, c);
                }
                if entry.is_empty() {
                    meta.scram.remove(&u.user);
                }
                changed = true;
                out.push(Ok(None));
            }
            out
        }
    };
    if changed {
        meta.epoch += 1;
    }
    MetaReply {
        epoch: meta.epoch,
        results,
        producer_ids: block,
        partitions: elected,
    }
}

/// The replicas a partition had before its ongoing reassignment (its replicas without
/// those being added), in order.
pub fn original_replicas(p: &PartitionMeta) -> Vec<i32> {
    p.replicas
        .iter()
        .copied()
        .filter(|r| !p.adding.contains(r))
        .collect()
}

/// One partition of an AlterPartitionReassignments request (Kafka's
/// ReplicationControlManager rules and codes). `Ok(true)` when the partition changed.
fn reassign(
    meta: &mut ClusterMeta,
    registered: &std::collections::BTreeSet<i32>,
    live: &std::collections::BTreeSet<i32>,
    c: &ReassignChange,
) -> Result<bool, TopicError> {
    let invalid = |m: String| Err(TopicError::new(error::INVALID_REPLICA_ASSIGNMENT, m));
    let Some(p) = meta.topics.get_mut(&c.topic).and_then(|t| {
        usize::try_from(c.partition)
            .ok()
            .and_then(|i| t.partitions.get_mut(i))
    }) else {
        return Err(TopicError::new(
            error::UNKNOWN_TOPIC_OR_PARTITION,
            format!("No such partition {}-{}", c.topic, c.partition),
        ));
    };
    let original = original_replicas(p);
    let Some(target) = &c.target else {
        // Cancel: back to the original replicas.
        if p.adding.is_empty() && p.removing.is_empty() {
            return Err(TopicError::new(
                error::NO_REASSIGNMENT_IN_PROGRESS,
                format!(
                    "No reassignment is in progress for partition {}-{}",
                    c.topic, c.partition
                ),
            ));
        }
        let isr: Vec<i32> = p
            .isr
            .iter()
            .copied()
            .filter(|r| original.contains(r))
            .collect();
        if isr.is_empty() {
            return invalid(format!(
                "cannot cancel the reassignment of {}-{}: no original replica is in sync",
                c.topic, c.partition
            ));
        }
        p.replicas = original;
        p.isr = isr;
        p.adding.clear();
        p.removing.clear();
        if !p.replicas.contains(&p.leader) {
            p.leader = pick_leader(&p.replicas, &p.isr, live);
            p.leader_epoch += 1;
        }
        p.partition_epoch += 1;
        return Ok(true);
    };
    if target.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    for (i, r) in target.iter().enumerate() {
        if target[..i].contains(r) {
            return invalid(format!(
                "The manual partition assignment includes the broker {r} more than once."
            ));
        }
        if !registered.contains(r) {
            return invalid(format!(
                "The manual partition assignment includes broker {r}, but no such broker is registered."
            ));
        }
        if target[..i].iter().any(|o| host_of(*o) == host_of(*r)) {
            return invalid(format!(
                "brokers {r} and {} are shards of one host (they share its data directory)",
                target
                    .iter()
                    .find(|o| host_of(**o) == host_of(*r))
                    .copied()
                    .unwrap_or(*r)
            ));
        }
        if let Some(o) = original
            .iter()
            .find(|o| **o != *r && host_of(**o) == host_of(*r))
        {
            return invalid(format!(
                "broker {r} would replace broker {o} on the same host: a replica cannot move between shards of one host"
            ));
        }
    }
    if !c.allow_rf_change && target.len() != original.len() {
        return Err(TopicError::new(
            error::INVALID_REPLICATION_FACTOR,
            format!(
                "The replication factor is changed from {} to {} but allowReplicationFactorChange is false",
                original.len(),
                target.len()
            ),
        ));
    }
    if *target == original && p.adding.is_empty() && p.removing.is_empty() {
        return Ok(false);
    }
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let mut replicas = target.clone();
    replicas.extend(removing.iter().copied());
    // A replica being added by an earlier, replaced reassignment leaves the ISR with it.
    let mut isr: Vec<i32> = p
        .isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        isr = p.isr.clone();
    }
    p.replicas = replicas;
    p.isr = isr;
    p.adding = adding;
    p.removing = removing;
    p.partition_epoch += 1;
    complete_reassignment(p, live);
    Ok(true)
}

/// Finishes `p`'s reassignment once every target replica is in the ISR: the replicas
/// being removed leave (replicas and ISR), and a leader among them hands over to the first
/// in-sync target replica that is live. Returns whether it changed anything.
pub fn complete_reassignment(
    p: &mut PartitionMeta,
    live: &std::collections::BTreeSet<i32>,
) -> bool {
    if p.adding.is_empty() && p.removing.is_empty() {
        return false;
    }
    let target: Vec<i32> = p
        .replicas
        .iter()
        .copied()
        .filter(|r| !p.removing.contains(r))
        .collect();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return false;
    }
    p.isr.retain(|r| target.contains(r));
    if !target.contains(&p.leader) {
        p.leader = pick_leader(&target, &p.isr, live);
        p.leader_epoch += 1;
    }
    p.replicas = target;
    p.adding.clear();
    p.removing.clear();
    p.partition_epoch += 1;
    true
}

/// The first of `replicas` in the ISR and live; else the first in the ISR; -1 if none.
fn pick_leader(replicas: &[i32], isr: &[i32], live: &std::collections::BTreeSet<i32>) -> i32 {
    replicas
        .iter()
        .copied()
        .find(|r| isr.contains(r) && live.contains(r))
        .or_else(|| replicas.iter().copied().find(|r| isr.contains(r)))
        .unwrap_or(-1)
}

/// One partition of an ElectLeaders request (Kafka's ReplicationControlManager rules):
/// preferred moves leadership to the first replica when it is live and in sync; unclean
/// gives a leaderless partition a leader, from the live ISR first, else any live replica
/// (the ISR then shrinks to it). `Ok` means the leader changed.
fn elect_one(
    meta: &mut ClusterMeta,
    live: &std::collections::BTreeSet<i32>,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Result<(), TopicError> {
    let Some(pm) = meta.topics.get_mut(topic).and_then(|t| {
        usize::try_from(partition)
            .ok()
            .and_then(|p| t.partitions.get_mut(p))
    }) else {
        return Err(TopicError::new(
            error::UNKNOWN_TOPIC_OR_PARTITION,
            format!("No such partition {topic}-{partition}"),
        ));
    };
    let has_leader = pm.leader >= 0 && live.contains(&pm.leader);
    let new = if unclean {
        if has_leader {
            return Err(TopicError::new(
                error::ELECTION_NOT_NEEDED,
                "Leader election not needed for topic partition.",
            ));
        }
        let in_sync = pm
            .replicas
            .iter()
            .copied()
            .find(|r| live.contains(r) && pm.isr.contains(r));
        match in_sync.or_else(|| pm.replicas.iter().copied().find(|r| live.contains(r))) {
            Some(n) => n,
            None => {
                return Err(TopicError::new(
                    error::ELIGIBLE_LEADERS_NOT_AVAILABLE,
                    "Unable to find any live replica for the partition.",
                ));
            }
        }
    } else {
        let Some(&pref) = pm.replicas.first() else {
            return Err(TopicError::new(
                error::PREFERRED_LEADER_NOT_AVAILABLE,
                "The partition has no replicas.",
            ));
        };
        if pm.leader == pref {
            return Err(TopicError::new(
                error::ELECTION_NOT_NEEDED,
                "Leader election not needed for topic partition.",
            ));
        }
        if !(pm.isr.contains(&pref) && live.contains(&pref)) {
            return Err(TopicError::new(
                error::PREFERRED_LEADER_NOT_AVAILABLE,
                format!(
                    "Failed to elect leader for partition {topic}-{partition} under strategy PreferredReplicaPartitionLeaderElectionStrategy"
                ),
            ));
        }
        pref
    };
    if !pm.isr.contains(&new) {
        // Unclean: the new leader's log is the truth from now on.
        pm.isr = vec![new];
    }
    pm.leader = new;
    pm.leader_epoch += 1;
    pm.partition_epoch += 1;
    Ok(())
}

/// Topic configs whose values are lists (comma-separated), the only ones APPEND and
/// SUBTRACT apply to.
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

/// A topic's configs after one change, or why the change is refused (nothing applied).
fn altered_configs(
    current: &BTreeMap<String, String>,
    c: &TopicConfigChange,
) -> Result<BTreeMap<String, String>, TopicError> {
    let invalid = |m: String| TopicError::new(error::INVALID_CONFIG, m);
    let mut new = if c.replace {
        BTreeMap::new()
    } else {
        current.clone()
    };
    for (name, op) in &c.ops {
        if topic_config::spec(name).is_none() {
            return Err(invalid(format!("Unknown topic config name: {name}")));
        }
        let list = |v: Option<&String>| -> Vec<String> {
            v.map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        match op {
            ConfigOp::Set(v) => {
                new.insert(name.clone(), v.clone());
            }
            ConfigOp::Delete => {
                new.remove(name);
            }
            ConfigOp::Append(_) | ConfigOp::Subtract(_)
                if !LIST_CONFIGS.contains(&name.as_str()) =>
            {
                return Err(invalid(format!(
                    "Config value append/subtract is not allowed for config key: {name}"
                )));
            }
            ConfigOp::Append(v) => {
                let mut items = list(new.get(name));
                for x in list(Some(v)) {
                    if !items.contains(&x) {
                        items.push(x);
                    }
                }
                new.insert(name.clone(), items.join(","));
            }
            ConfigOp::Subtract(v) => {
                let drop = list(Some(v));
                let items: Vec<String> = list(new.get(name))
                    .into_iter()
                    .filter(|x| !drop.contains(x))
                    .collect();
                new.insert(name.clone(), items.join(","));
            }
        }
    }
    for (name, value) in &new {
        if current.get(name) != Some(value) {
            topic_config::validate(name, value).map_err(invalid)?;
        }
    }
    Ok(new)
}

/// After a host was fenced or came back: every partition whose leader is not live gets a
/// new one from its ISR (clean election; from any live replica only where the topic sets
/// unclean.leader.election.enable=true), and fenced replicas leave the ISR (never the
/// last member). Leader changes bump the leader epoch; every change bumps the partition
/// epoch.
fn elect_all(meta: &mut ClusterMeta) {
    let live: std::collections::BTreeSet<i32> = all_nodes(meta).into_iter().collect();
    for t in meta.topics.values_mut() {
        let unclean = t
            .configs
            .get("unclean.leader.election.enable")
            .is_some_and(|v| v == "true");
        for p in t.partitions.iter_mut() {
            let before = p.clone();
            let live_isr: Vec<i32> = p.isr.iter().copied().filter(|r| live.contains(r)).collect();
            if !live_isr.is_empty() {
                p.isr = live_isr;
            }
            if !live.contains(&p.leader) {
                let clean = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| live.contains(r) && p.isr.contains(r));
                let new = clean.or_else(|| {
                    unclean
                        .then(|| p.replicas.iter().copied().find(|r| live.contains(r)))
                        .flatten()
                });
                match new {
                    Some(n) => {
                        if !p.isr.contains(&n) {
                            // Unclean: the new leader's log is the truth from now on.
                            p.isr = vec![n];
                        }
                        p.leader = n;
                    }
                    None => p.leader = -1,
                }
                if p.leader != before.leader {
                    p.leader_epoch += 1;
                }
            }
            if *p != before {
                p.partition_epoch += 1;
            }
        }
    }
}

/// A host that restarts with fewer shards: replicas on its vanished shards move to shards
/// it runs (the partition directories are named by topic and partition, not by shard, so
/// the files stay where they are).
fn reassign_vanished_shards(meta: &mut ClusterMeta, broker: &BrokerMeta) {
    let shards = broker.ports.len();
    if shards == 0 {
        return;
    }
    let mut moved = 0;
    for t in meta.topics.values_mut() {
        let start = crc32c::crc32c(t.name.as_bytes()) as usize;
        for (p, part) in t.partitions.iter_mut().enumerate() {
            let mut replicas = part.replicas.clone();
            for i in 0..replicas.len() {
                let r = replicas[i];
                if host_of(r) != broker.host_id || shard_of(r) < shards {
                    continue;
                }
                let new = (0..shards)
                    .map(|k| node_id(broker.host_id, (start + p + k) % shards))
                    .find(|n| !replicas.contains(n));
                if let Some(n) = new {
                    replicas[i] = n;
                    if part.leader == r {
                        part.leader = n;
                        part.leader_epoch += 1;
                    }
                    moved += 1;
                }
            }
            part.isr = part
                .isr
                .iter()
                .map(|r| {
                    part.replicas
                        .iter()
                        .position(|x| x == r)
                        .map(|i| replicas[i])
                        .unwrap_or(*r)
                })
                .collect();
            part.replicas = replicas;
        }
    }
    if moved > 0 {
        log::info!(
            "host {} runs {shards} shards now: {moved} replicas moved to its running shards",
            broker.host_id
        );
    }
}

fn plan_topic(meta: &ClusterMeta, t: NewTopicCmd) -> Result<TopicMeta, TopicError> {
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
            format!("the cluster holds its maximum of {TOPICS_MAX} topics"),
        ));
    }
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&t.num_partitions) {
        return Err(TopicError::new(
            error::INVALID_PARTITIONS,
            format!(
                "Number of partitions must be 1..={PARTITIONS_PER_TOPIC_MAX}, got {}",
                t.num_partitions
            ),
        ));
    }
    let rf = if t.replication_factor == -1 {
        1
    } else {
        t.replication_factor
    };
    if rf < 1 {
        return Err(TopicError::new(
            error::INVALID_REPLICATION_FACTOR,
            format!("Replication factor must be larger than 0, got {rf}"),
        ));
    }
    for (k, v) in &t.configs {
        topic_config::validate(k, v).map_err(|m| TopicError::new(error::INVALID_CONFIG, m))?;
    }
    let nodes = all_nodes(meta);
    let partitions = place_partitions(&t.name, 0, t.num_partitions as usize, rf as usize, &nodes)
        .ok_or_else(|| {
        TopicError::new(
            error::INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor: {rf} larger than available hosts: {} (replicas go to distinct hosts: the shards of a host share its disk).",
                live_hosts(meta)
            ),
        )
    })?;
    Ok(TopicMeta {
        name: t.name,
        id: t.id,
        partitions,
        configs: t.configs,
    })
}

/// A partition placed on one node (the import of a one-host broker's topics).
pub fn single_replica(node: i32) -> PartitionMeta {
    PartitionMeta {
        replicas: vec![node],
        leader: node,
        leader_epoch: 0,
        isr: vec![node],
        partition_epoch: 0,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(host: u32, shards: usize) -> BrokerMeta {
        BrokerMeta {
            host_id: host,
            incarnation: 1,
            host: "127.0.0.1".into(),
            ports: (0..shards).map(|s| 9000 + s as u16).collect(),
            rack: format!("host-{host}"),
            listeners: Vec::new(),
            fenced: false,
        }
    }

    fn register(meta: &mut ClusterMeta, host: u32, shards: usize) {
        apply(
            meta,
            MetaCommand::RegisterBroker {
                broker: broker(host, shards),
                cluster_id: "c".into(),
                producer_ids_used_below: 0,
            },
        );
    }

    fn create(meta: &mut ClusterMeta, name: &str, partitions: i32) -> MetaReply {
        apply(
            meta,
            MetaCommand::CreateTopics {
                topics: vec![NewTopicCmd {
                    name: name.into(),
                    id: [7; 16],
                    num_partitions: partitions,
                    replication_factor: -1,
                    configs: BTreeMap::new(),
                }],
                validate_only: false,
            },
        )
    }

    // A topic's partitions land on every node of every registered host, and each apply
    // that changes something moves the epoch forward.
    #[test]
    fn topics_spread_over_every_host() {
        let mut m = ClusterMeta::default();
        for h in 1..=3 {
            register(&mut m, h, 2);
        }
        let epoch = m.epoch;
        let r = create(&mut m, "t", 12);
        assert!(r.results[0].is_ok());
        assert_eq!(r.epoch, epoch + 1);
        let mut leaders: Vec<i32> = m.topics["t"].partitions.iter().map(|p| p.leader).collect();
        leaders.sort();
        leaders.dedup();
        assert_eq!(leaders.len(), 6);
        // The same command on an existing topic is refused and changes nothing.
        let r = create(&mut m, "t", 1);
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::TOPIC_ALREADY_EXISTS
        );
        assert_eq!(r.epoch, epoch + 1);
    }

    // A host registering again with fewer shards moves its vanished shards' partitions
    // to shards it runs, and leaves other hosts' partitions alone.
    #[test]
    fn fewer_shards_reassigns_within_the_host() {
        let mut m = ClusterMeta::default();
        register(&mut m, 0, 4);
        register(&mut m, 1, 4);
        create(&mut m, "t", 16);
        let before = m.topics["t"].clone();
        register(&mut m, 0, 1);
        for (a, b) in before.partitions.iter().zip(&m.topics["t"].partitions) {
            if host_of(a.leader) == 0 {
                assert_eq!(b.leader, node_id(0, 0));
            } else {
                assert_eq!(a, b);
            }
            assert_eq!(b.replicas, vec![b.leader]);
            assert_eq!(b.isr, vec![b.leader]);
        }
    }

    fn create_rf(meta: &mut ClusterMeta, name: &str, partitions: i32, rf: i16) -> MetaReply {
        apply(
            meta,
            MetaCommand::CreateTopics {
                topics: vec![NewTopicCmd {
                    name: name.into(),
                    id: [9; 16],
                    num_partitions: partitions,
                    replication_factor: rf,
                    configs: BTreeMap::new(),
                }],
                validate_only: false,
            },
        )
    }

    // Producer-id blocks never overlap, and never reach below ids a host handed out
    // before blocks came from the quorum.
    #[test]
    fn producer_id_blocks_are_disjoint() {
        let mut m = ClusterMeta::default();
        apply(
            &mut m,
            MetaCommand::RegisterBroker {
                broker: broker(1, 1),
                cluster_id: "c".into(),
                producer_ids_used_below: 5000,
            },
        );
        let a = apply(&mut m, MetaCommand::AllocateProducerIds { count: 1000 })
            .producer_ids
            .unwrap();
        let b = apply(&mut m, MetaCommand::AllocateProducerIds { count: 1000 })
            .producer_ids
            .unwrap();
        assert_eq!(a, (5000, 6000));
        assert_eq!(b, (6000, 7000));
        // A host registering later with a lower mark moves nothing back.
        apply(
            &mut m,
            MetaCommand::RegisterBroker {
                broker: broker(2, 1),
                cluster_id: "c".into(),
                producer_ids_used_below: 10,
            },
        );
        let c = apply(&mut m, MetaCommand::AllocateProducerIds { count: 1 })
            .producer_ids
            .unwrap();
        assert_eq!(c, (7000, 7001));
    }

    // Replication factors up to the number of live hosts are accepted (one replica per
    // host); more is INVALID_REPLICATION_FACTOR, however many shards the hosts have.
    #[test]
    fn replication_factor_up_to_the_hosts() {
        let mut m = ClusterMeta::default();
        register(&mut m, 0, 2);
        let r = create_rf(&mut m, "two", 1, 2);
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::INVALID_REPLICATION_FACTOR
        );
        register(&mut m, 1, 2);
        assert!(create_rf(&mut m, "two", 1, 2).results[0].is_ok());
        let r = create_rf(&mut m, "three", 1, 3);
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::INVALID_REPLICATION_FACTOR
        );
    }

    // Fencing a host moves the leadership of its partitions to an in-sync replica on
    // another host with a new leader epoch, and takes it out of every ISR; when it comes
    // back the preferred leader can be restored once it is in sync again.
    #[test]
    fn fencing_elects_from_the_isr() {
        let mut m = ClusterMeta::default();
        for h in 1..=3 {
            register(&mut m, h, 1);
        }
        create_rf(&mut m, "t", 3, 3);
        let before = m.topics["t"].clone();
        apply(
            &mut m,
            MetaCommand::FenceBroker {
                host_id: 1,
                reason: "test".into(),
            },
        );
        for (a, b) in before.partitions.iter().zip(&m.topics["t"].partitions) {
            assert!(b.isr.iter().all(|r| host_of(*r) != 1), "{b:?}");
            assert_ne!(host_of(b.leader), 1);
            if host_of(a.leader) == 1 {
                assert_eq!(b.leader_epoch, a.leader_epoch + 1);
                assert!(a.isr.contains(&b.leader));
            } else {
                assert_eq!(b.leader, a.leader);
                assert_eq!(b.leader_epoch, a.leader_epoch);
            }
            assert!(b.partition_epoch > a.partition_epoch);
        }
        assert!(!m.nodes().iter().any(|n| host_of(n.0) == 1));
        apply(&mut m, MetaCommand::UnfenceBroker { host_id: 1 });
        // Back in sync (AlterPartition by the leader), then the preferred leader returns.
        let moved: Vec<(String, i32)> = (0..3).map(|p| ("t".to_string(), p)).collect();
        for p in 0..3 {
            let pm = m.topics["t"].partitions[p].clone();
            let r = apply(
                &mut m,
                MetaCommand::AlterPartition {
                    topic: "t".into(),
                    partition: p as i32,
                    leader: pm.leader,
                    leader_epoch: pm.leader_epoch,
                    partition_epoch: pm.partition_epoch,
                    isr: pm.replicas.clone(),
                },
            );
            assert!(r.results[0].is_ok());
            // A second, stale AlterPartition is refused.
            let stale = apply(
                &mut m,
                MetaCommand::AlterPartition {
                    topic: "t".into(),
                    partition: p as i32,
                    leader: pm.leader,
                    leader_epoch: pm.leader_epoch,
                    partition_epoch: pm.partition_epoch,
                    isr: vec![pm.leader],
                },
            );
            assert_eq!(
                stale.results[0].as_ref().unwrap_err().code,
                INVALID_UPDATE_VERSION
            );
        }
        apply(&mut m, MetaCommand::ElectPreferred { partitions: moved });
        for (a, b) in before.partitions.iter().zip(&m.topics["t"].partitions) {
            assert_eq!(b.leader, a.leader);
        }
    }

    fn alter(meta: &mut ClusterMeta, replace: bool, ops: Vec<(&str, ConfigOp)>) -> MetaReply {
        apply(
            meta,
            MetaCommand::AlterTopicConfigs {
                changes: vec![TopicConfigChange {
                    topic: "t".into(),
                    replace,
                    ops: ops.into_iter().map(|(n, o)| (n.to_string(), o)).collect(),
                }],
                validate_only: false,
            },
        )
    }

    // Config changes are validated as a whole (a bad value applies nothing), DELETE falls
    // back to the default, the legacy replace drops every override not named, and a
    // change that changes nothing does not move the epoch.
    #[test]
    fn alter_topic_configs() {
        let mut m = ClusterMeta::default();
        register(&mut m, 0, 1);
        create(&mut m, "t", 1);
        let e = m.epoch;
        let r = alter(
            &mut m,
            false,
            vec![
                ("retention.ms", ConfigOp::Set("1000".into())),
                ("segment.bytes", ConfigOp::Set("1048576".into())),
            ],
        );
        assert!(r.results[0].is_ok());
        assert_eq!(r.epoch, e + 1);
        assert_eq!(m.topics["t"].configs["retention.ms"], "1000");
        let r = alter(
            &mut m,
            false,
            vec![
                ("retention.ms", ConfigOp::Set("5".into())),
                ("segment.bytes", ConfigOp::Set("x".into())),
            ],
        );
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::INVALID_CONFIG
        );
        assert_eq!(m.topics["t"].configs["retention.ms"], "1000");
        let r = alter(&mut m, false, vec![("no.such", ConfigOp::Delete)]);
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::INVALID_CONFIG
        );
        let r = alter(
            &mut m,
            false,
            vec![("retention.ms", ConfigOp::Append("1".into()))],
        );
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::INVALID_CONFIG
        );
        let r = alter(&mut m, false, vec![("retention.ms", ConfigOp::Delete)]);
        assert_eq!(r.epoch, e + 2);
        assert!(!m.topics["t"].configs.contains_key("retention.ms"));
        let r = alter(&mut m, true, vec![("flush.ms", ConfigOp::Set("10".into()))]);
        assert_eq!(r.epoch, e + 3);
        assert_eq!(m.topics["t"].configs.len(), 1);
        let r = alter(&mut m, true, vec![("flush.ms", ConfigOp::Set("10".into()))]);
        assert_eq!(r.epoch, e + 3);
        let r = apply(
            &mut m,
            MetaCommand::AlterTopicConfigs {
                changes: vec![TopicConfigChange {
                    topic: "nope".into(),
                    replace: false,
                    ops: vec![],
                }],
                validate_only: false,
            },
        );
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::UNKNOWN_TOPIC_OR_PARTITION
        );
    }

    // With every ISR member fenced the partition goes offline (leader -1) rather than
    // elect an out-of-sync replica, unless the topic allows unclean election.
    #[test]
    fn no_unclean_election_by_default() {
        let mut m = ClusterMeta::default();
        for h in 1..=2 {
            register(&mut m, h, 1);
        }
        create_rf(&mut m, "t", 1, 2);
        let leader = m.topics["t"].partitions[0].leader;
        let follower = m.topics["t"].partitions[0].replicas[1];
        // The follower fell out of the ISR, then the leader's host is fenced.
        let pm = m.topics["t"].partitions[0].clone();
        apply(
            &mut m,
            MetaCommand::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader,
                leader_epoch: pm.leader_epoch,
                partition_epoch: pm.partition_epoch,
                isr: vec![leader],
            },
        );
        apply(
            &mut m,
            MetaCommand::FenceBroker {
                host_id: host_of(leader),
                reason: "test".into(),
            },
        );
        let pm = &m.topics["t"].partitions[0];
        assert_eq!(pm.leader, -1);
        assert_eq!(pm.isr, vec![leader]);
        // The old leader comes back: it leads again (it has everything acknowledged).
        apply(
            &mut m,
            MetaCommand::UnfenceBroker {
                host_id: host_of(leader),
            },
        );
        assert_eq!(m.topics["t"].partitions[0].leader, leader);
        assert_ne!(follower, leader);
    }

    // SCRAM credentials: upserts and deletions apply per user; deleting a credential
    // that does not exist fails that user alone and changes nothing for it.
    #[test]
    fn scram_credentials_per_user() {
        let mut meta = ClusterMeta::default();
        let cred = |n: u8| crate::metadata::ScramCredential {
            salt: vec![n],
            iterations: 4096,
            stored_key: vec![n; 32],
            server_key: vec![n; 32],
        };
        let r = apply(
            &mut meta,
            MetaCommand::AlterScramCredentials {
                users: vec![ScramUserChange {
                    user: "alice".into(),
                    upserts: vec![
                        ("SCRAM-SHA-256".into(), cred(1)),
                        ("SCRAM-SHA-512".into(), cred(2)),
                    ],
                    deletions: vec![],
                }],
            },
        );
        assert!(r.results[0].is_ok());
        assert_eq!(meta.scram["alice"].len(), 2);
        let epoch = meta.epoch;
        let r = apply(
            &mut meta,
            MetaCommand::AlterScramCredentials {
                users: vec![
                    ScramUserChange {
                        user: "bob".into(),
                        upserts: vec![],
                        deletions: vec!["SCRAM-SHA-256".into()],
                    },
                    ScramUserChange {
                        user: "alice".into(),
                        upserts: vec![],
                        deletions: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
                    },
                ],
            },
        );
        assert_eq!(
            r.results[0].as_ref().unwrap_err().code,
            error::RESOURCE_NOT_FOUND
        );
        assert!(r.results[1].is_ok());
        assert!(meta.scram.is_empty());
        assert_eq!(meta.epoch, epoch + 1);
    }

    fn move_to(m: &mut ClusterMeta, target: Option<Vec<i32>>, allow_rf_change: bool) -> MetaReply {
        apply(
            m,
            MetaCommand::AlterReassignments {
                changes: vec![ReassignChange {
                    topic: "t".into(),
                    partition: 0,
                    target,
                    allow_rf_change,
                }],
            },
        )
    }

    fn code(r: &MetaReply) -> i16 {
        r.results[0].as_ref().err().map_or(0, |e| e.code)
    }

    // A reassignment adds the target replicas at once and drops the old ones only when
    // every target replica is in the ISR; leadership then moves onto the target.
    #[test]
    fn reassignment_completes_when_the_target_is_in_sync() {
        let mut m = ClusterMeta::default();
        for h in 1..=3 {
            register(&mut m, h, 2);
        }
        create_rf(&mut m, "t", 1, 1);
        let old = m.topics["t"].partitions[0].clone();
        let from = old.leader;
        let to: Vec<i32> = (1..=3u32)
            .map(|h| node_id(h, 1))
            .filter(|n| host_of(*n) != host_of(from))
            .collect();
        assert_eq!(code(&move_to(&mut m, Some(to.clone()), true)), 0);
        let p = m.topics["t"].partitions[0].clone();
        assert_eq!(p.replicas, [to.clone(), vec![from]].concat());
        assert_eq!(
            (p.adding.clone(), p.removing.clone()),
            (to.clone(), vec![from])
        );
        assert_eq!((p.leader, p.isr.clone()), (from, vec![from]));
        // The first target replica catches up: not done yet.
        let alter = |m: &mut ClusterMeta, isr: Vec<i32>| {
            let p = m.topics["t"].partitions[0].clone();
            apply(
                m,
                MetaCommand::AlterPartition {
                    topic: "t".into(),
                    partition: 0,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                },
            )
        };
        assert_eq!(code(&alter(&mut m, vec![from, to[0]])), 0);
        assert_eq!(m.topics["t"].partitions[0].removing, vec![from]);
        assert_eq!(code(&alter(&mut m, vec![from, to[0], to[1]])), 0);
        let p = m.topics["t"].partitions[0].clone();
        assert_eq!(p.replicas, to);
        assert_eq!(p.isr, to);
        assert!(p.adding.is_empty() && p.removing.is_empty());
        assert_eq!(p.leader, to[0]);
        assert_eq!(p.leader_epoch, old.leader_epoch + 1);
        // Nothing in progress now: cancelling is NO_REASSIGNMENT_IN_PROGRESS.
        assert_eq!(
            code(&move_to(&mut m, None, true)),
            error::NO_REASSIGNMENT_IN_PROGRESS
        );
    }

    // Cancelling goes back to the original replicas; bad targets are refused with
    // Kafka's codes and change nothing.
    #[test]
    fn reassignment_cancel_and_refusals() {
        let mut m = ClusterMeta::default();
        for h in 1..=3 {
            register(&mut m, h, 2);
        }
        create_rf(&mut m, "t", 1, 2);
        let old = m.topics["t"].partitions[0].clone();
        let spare = (1..=3u32)
            .map(|h| node_id(h, 0))
            .find(|n| old.replicas.iter().all(|r| host_of(*r) != host_of(*n)))
            .unwrap();
        let epoch = m.epoch;
        for (target, want) in [
            (vec![], error::INVALID_REPLICA_ASSIGNMENT),
            (vec![spare, spare], error::INVALID_REPLICA_ASSIGNMENT),
            (vec![spare, 5000], error::INVALID_REPLICA_ASSIGNMENT),
            // Two shards of one host share its data directory.
            (vec![spare, spare + 1], error::INVALID_REPLICA_ASSIGNMENT),
            // A replica may not hop to another shard of its host.
            (
                vec![old.replicas[0] ^ 1, old.replicas[1]],
                error::INVALID_REPLICA_ASSIGNMENT,
            ),
        ] {
            assert_eq!(
                code(&move_to(&mut m, Some(target.clone()), true)),
                want,
                "{target:?}"
            );
        }
        assert_eq!(
            code(&move_to(&mut m, Some(vec![spare]), false)),
            error::INVALID_REPLICATION_FACTOR
        );
        assert_eq!(m.epoch, epoch);
        assert_eq!(m.topics["t"].partitions[0], old);
        let target = vec![spare, old.replicas[0]];
        assert_eq!(code(&move_to(&mut m, Some(target), false)), 0);
        assert_eq!(m.topics["t"].partitions[0].adding, vec![spare]);
        assert_eq!(code(&move_to(&mut m, None, true)), 0);
        let p = &m.topics["t"].partitions[0];
        assert_eq!(
            (&p.replicas, &p.isr, p.leader),
            (&old.replicas, &old.isr, old.leader)
        );
        assert!(p.adding.is_empty() && p.removing.is_empty());
    }
}
