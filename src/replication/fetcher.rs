//! Follower fetchers: one task per (this follower shard, leader node) pair, carrying every
//! partition this shard follows from that node in one Fetch request, as Kafka's replica
//! fetcher threads do. Each answer's batches are appended with the leader's offsets and
//! fsync'ed before the next Fetch reports the new log end, so the leader counts a follower
//! as having data only once it is on the follower's disk.
//!
//! Runs on: the follower's shard. The set of partitions of a fetcher changes when the shard
//! applies metadata (`Fetchers::reconcile`); a fetcher with no partitions left stops.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};

use crate::client::ClientError;
use crate::client::conn::Connection;
use crate::handlers::str_bytes;
use crate::protocol::error;
use crate::shard::Shard;

/// Fetch version the followers speak (flexible, names topics by name, has leader epochs).
const REPLICA_FETCH_VERSION: i16 = 12;
/// How long the leader may hold a follower's fetch when it has nothing new.
const REPLICA_FETCH_MAX_WAIT_MS: i32 = 500;
/// Kafka's replica.fetch.max.bytes and replica.fetch.response.max.bytes defaults.
const REPLICA_FETCH_PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const REPLICA_FETCH_RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
/// Pause after an error before the next attempt (connect, fetch, or a partition error).
const REPLICA_FETCH_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between attempts refused for security (authentication, TLS,
/// authorization): the pause doubles from `REPLICA_FETCH_BACKOFF` up to this, since such a
/// refusal lasts until an operator fixes the configuration.
const REPLICA_FETCH_SECURITY_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One fetcher's partitions and its stop flag.
struct FetcherSet {
    partitions: RefCell<BTreeSet<(String, i32)>>,
    stopped: Cell<bool>,
}

/// The fetchers of one shard, by leader node.
#[derive(Default)]
pub struct Fetchers {
    by_leader: RefCell<HashMap<i32, Rc<FetcherSet>>>,
}

impl Fetchers {
    /// Makes the fetchers match `wanted` (leader node -> partitions this shard follows).
    pub fn reconcile(&self, shard: &Rc<Shard>, wanted: HashMap<i32, BTreeSet<(String, i32)>>) {
        let mut by = self.by_leader.borrow_mut();
        by.retain(|leader, set| {
            let keep = wanted.contains_key(leader);
            if !keep {
                set.stopped.set(true);
            }
            keep
        });
        for (leader, parts) in wanted {
            match by.get(&leader) {
                Some(set) => *set.partitions.borrow_mut() = parts,
                None => {
                    let set = Rc::new(FetcherSet {
                        partitions: RefCell::new(parts),
                        stopped: Cell::new(false),
                    });
                    by.insert(leader, set.clone());
                    glommio::spawn_local(run(shard.clone(), leader, set)).detach();
                }
            }
        }
    }

    pub fn stop_all(&self) {
        for set in self.by_leader.borrow_mut().drain().map(|(_, s)| s) {
            set.stopped.set(true);
        }
    }
}

/// A failure worth an operator's attention: security refusals (authentication, TLS,
/// authorization) never heal by retrying, unlike a leader that is restarting.
fn is_security_error(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Authentication { .. } | ClientError::Tls { .. }
    ) || matches!(e, ClientError::Kafka { code, .. } if is_security_code(*code))
}

fn is_security_code(code: i16) -> bool {
    [
        error::TOPIC_AUTHORIZATION_FAILED,
        error::CLUSTER_AUTHORIZATION_FAILED,
        error::SASL_AUTHENTICATION_FAILED,
    ]
    .contains(&code)
}

/// Security refusals of one fetcher since its last good fetch: logged at warn once per
/// distinct message (one line per attempt would flood), and the pause before the next
/// attempt, doubling up to `REPLICA_FETCH_SECURITY_BACKOFF_MAX`.
#[derive(Default)]
struct Complaints {
    last: Option<String>,
    backoff: Option<Duration>,
}

impl Complaints {
    /// Records a refusal; returns how long to wait before trying again.
    fn security(&mut self, me: i32, leader: i32, what: String) -> Duration {
        if self.last.as_deref() != Some(what.as_str()) {
            log::warn!("node {me}: replication from leader node {leader} refused: {what}");
            self.last = Some(what);
        }
        let next = self.backoff.map_or(REPLICA_FETCH_BACKOFF, |b| {
            (b * 2).min(REPLICA_FETCH_SECURITY_BACKOFF_MAX)
        });
        self.backoff = Some(next);
        next
    }

    fn clear(&mut self) {
        self.last = None;
        self.backoff = None;
    }
}

async fn run(shard: Rc<Shard>, leader: i32, set: Rc<FetcherSet>) {
    let me = shard.node_id();
    log::info!(
        "node {me}: fetcher for leader node {leader} started (listener {})",
        shard.config.inter_broker.listener
    );
    let mut conn: Option<Connection> = None;
    let mut complaints = Complaints::default();
    while !set.stopped.get() && !shard.shutting_down.get() {
        let parts: Vec<(String, i32)> = set.partitions.borrow().iter().cloned().collect();
        if conn.as_ref().is_none_or(|c| !c.is_alive()) {
            conn = None;
            let Some(addr) = shard.inter_broker_addr(leader) else {
                glommio::timer::sleep(REPLICA_FETCH_BACKOFF).await;
                continue;
            };
            let config = shard.inter_broker_client(format!("osprey-replica-{me}"));
            match Connection::connect(&addr, &config).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let pause = if is_security_error(&e) {
                        complaints.security(me, leader, format!("{addr}: {e}"))
                    } else {
                        log::debug!("node {me}: cannot reach leader node {leader} at {addr}: {e}");
                        REPLICA_FETCH_BACKOFF
                    };
                    glommio::timer::sleep(pause).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        // One Fetch for every partition followed from this leader, each from its log end.
        let mut replicas = Vec::with_capacity(parts.len());
        let mut by_topic: HashMap<String, Vec<FetchPartition>> = HashMap::new();
        for (topic, p) in &parts {
            let Some(r) = shard.replica(topic, *p) else {
                continue;
            };
            if r.following() != Some(leader) {
                continue;
            }
            by_topic.entry(topic.clone()).or_default().push(
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(r.leader_epoch())
                    .with_fetch_offset(r.log.log_end_offset())
                    .with_last_fetched_epoch(r.log.leader_epochs().last().map_or(-1, |e| e.0))
                    .with_log_start_offset(r.log.log_start_offset())
                    .with_partition_max_bytes(REPLICA_FETCH_PARTITION_MAX_BYTES),
            );
            replicas.push(r);
        }
        if replicas.is_empty() {
            glommio::timer::sleep(REPLICA_FETCH_BACKOFF).await;
            continue;
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(me))
            .with_max_wait_ms(REPLICA_FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(REPLICA_FETCH_RESPONSE_MAX_BYTES)
            .with_session_epoch(-1)
            .with_topics(
                by_topic
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(TopicName(str_bytes(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = match c.request(&req, REPLICA_FETCH_VERSION).await {
            Ok(r) => r,
            Err(e) => {
                let pause = if is_security_error(&e) {
                    complaints.security(me, leader, e.to_string())
                } else {
                    log::debug!("node {me}: fetch from leader node {leader}: {e}");
                    REPLICA_FETCH_BACKOFF
                };
                conn = None;
                glommio::timer::sleep(pause).await;
                continue;
            }
        };
        let mut backoff = false;
        let mut refused = None;
        for t in resp.responses {
            let topic = t.topic.0.to_string();
            for p in t.partitions {
                let Some(r) = shard.replica(&topic, p.partition_index) else {
                    continue;
                };
                if is_security_code(p.error_code) {
                    refused = Some(format!(
                        "{topic}-{}: {}",
                        p.partition_index,
                        crate::client::kafka_error_name(p.error_code)
                    ));
                    continue;
                }
                if p.error_code != error::NONE {
                    log::debug!(
                        "node {me}: fetch {topic}-{} from node {leader}: error {}",
                        p.partition_index,
                        p.error_code
                    );
                    backoff = true;
                    continue;
                }
                // The leader says our log diverges from its own after (epoch, end offset):
                // cut our tail there (Kafka's truncation on DivergingEpoch), then fetch on.
                let diverging = &p.diverging_epoch;
                if diverging.epoch >= 0 || diverging.end_offset >= 0 {
                    // Where our copy of that epoch ends, or the leader's, whichever is first
                    // (Kafka's truncation point; the same rule whether or not we have the
                    // leader's epoch).
                    let (_, own_end) = r.log.end_offset_for_epoch(diverging.epoch);
                    let target = diverging.end_offset.min(own_end).max(0);
                    log::info!(
                        "node {me}: {topic}-{}: log diverges from leader node {leader} after epoch {} offset {}; truncating {} -> {target}",
                        p.partition_index,
                        diverging.epoch,
                        diverging.end_offset,
                        r.log.log_end_offset()
                    );
                    if let Err(e) = r.log.truncate_to(target).await {
                        log::error!(
                            "node {me}: {topic}-{}: truncation failed: {e}",
                            p.partition_index
                        );
                        backoff = true;
                    }
                    continue;
                }
                if let Some(records) = p.records.filter(|b| !b.is_empty()) {
                    let appended = r
                        .log
                        .append_with(
                            records,
                            shards::Durability::Fsync,
                            shards::AppendMode::Follower,
                        )
                        .await;
                    if let Err(e) = appended {
                        log::warn!(
                            "node {me}: {topic}-{}: replica append failed: {e}",
                            p.partition_index
                        );
                        backoff = true;
                        continue;
                    }
                    shard.data_arrived.notify_all();
                }
                r.follower_hw(p.high_watermark);
                // The leader's log start (DeleteRecords, retention) bounds this replica's,
                // as in Kafka: raised here too, never past what this replica holds.
                let start = p.log_start_offset.min(p.high_watermark);
                if start > r.log.log_start_offset()
                    && let Err(e) = r.log.delete_records_before(start).await
                {
                    log::warn!(
                        "node {me}: {topic}-{}: raising the log start to {start}: {e}",
                        p.partition_index
                    );
                }
            }
        }
        if let Some(what) = refused {
            glommio::timer::sleep(complaints.security(me, leader, what)).await;
        } else if backoff {
            glommio::timer::sleep(REPLICA_FETCH_BACKOFF).await;
        } else {
            complaints.clear();
        }
    }
    log::info!("node {me}: fetcher for leader node {leader} stopped");
}
