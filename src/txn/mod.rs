//! The transaction coordinator (KIP-98): transactional ids, their producer ids and epochs,
//! the partitions of each open transaction, and its completion with commit/abort markers
//! written to every partition of the transaction.
//!
//! Runs on: the shard leading the `__transaction_state` partition of a transactional id
//! (crc32c(id) % partitions, `internal_topic`), as Kafka's coordinator runs on that
//! partition's leader. Every state change is one record (the whole `TxnMeta`, rkyv)
//! appended there with acks=all before it is answered or acted on; loading a partition
//! replays its records (the last one per id wins).
//!
//! States as Kafka's: Empty -> Ongoing (AddPartitionsToTxn / AddOffsetsToTxn) ->
//! PrepareCommit | PrepareAbort (EndTxn, a timeout, or InitProducerId fencing an open
//! transaction) -> CompleteCommit | CompleteAbort once every partition has its marker.
//! While a change is being written, or markers are being written, requests for the id get
//! CONCURRENT_TRANSACTIONS and the client retries. Markers go to each partition's leader:
//! through the router to a shard of this host (`write_marker_local`), or as a
//! WriteTxnMarkers request to another host's node; `__consumer_offsets` partitions hand
//! theirs to the group coordinator, which applies or drops the transaction's offsets.
//! A coordinator that loads a partition finishes the transactions it finds prepared.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use crate::groups::group::now_ms;
use crate::internal_topic::{self, GATE_UNITS, Partitions};
use crate::metadata::{ClusterMeta, host_of, shard_of};
use crate::protocol::error as kerr;
use crate::shard::Shard;

/// The internal topic of transaction state (Kafka's name).
pub const TXN_TOPIC: &str = "__transaction_state";
/// Kafka's transaction.state.log.num.partitions is 50; 16 as the offsets topic here.
pub const TXN_TOPIC_PARTITIONS_DEFAULT: i32 = 16;
/// Kafka's transaction.max.timeout.ms default: longer transaction timeouts are refused.
pub const TXN_TIMEOUT_MAX_MS: i32 = 900_000;
/// Partitions one transaction may touch.
pub const TXN_PARTITIONS_MAX: usize = 10_000;
/// Transactional ids one shard coordinates (new ones beyond get COORDINATOR_NOT_AVAILABLE).
pub const TXNS_PER_SHARD_MAX: usize = 100_000;
/// Largest transaction-state record (the topic's max.message.bytes).
const TXN_RECORD_MAX_BYTES: usize = 1 << 20;
/// Segment size of the transaction-state topic.
const TXN_TOPIC_SEGMENT_BYTES: u64 = 16 << 20;
/// How long a state change waits for the in-sync replicas.
const TXN_APPEND_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Period of the check for transactions past their timeout (Kafka's
/// transaction.abort.timed.out.transaction.cleanup.interval.ms is 10 s).
const TXN_TIMEOUT_CHECK_INTERVAL: Duration = Duration::from_millis(1_000);
/// Pause before retrying markers that could not be written.
const MARKER_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between marker attempts another host refused for security (SASL, TLS,
/// authorization): doubling from `MARKER_RETRY_BACKOFF`, since such a refusal lasts until
/// an operator fixes the configuration.
const MARKER_SECURITY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Appended bytes of one partition after which its state is rewritten and trimmed.
const TXN_REWRITE_BYTES: u64 = 16 << 20;
/// Kafka's transactional.id.expiration.ms default (7 days): ids with no open transaction
/// and no request for this long are removed (`expire_ids`).
pub const TXN_ID_EXPIRATION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Longest period of the expiration check (Kafka's
/// transaction.remove.expired.transaction.cleanup.interval.ms default); a shorter
/// transactional.id.expiration.ms checks as often as it expires (at least every
/// `TXN_TIMEOUT_CHECK_INTERVAL`).
const TXN_ID_EXPIRATION_CHECK_MAX_MS: u64 = 3_600_000;
/// Ids one expiration pass removes before yielding to requests.
const TXN_ID_EXPIRATIONS_PER_PASS_MAX: usize = 1_000;
/// How long a partition leader waits for a remote coordinator's verification (KIP-890).
const VERIFY_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Kafka's coordinator error codes used here.
pub const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
pub const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
pub const CONCURRENT_TRANSACTIONS: i16 = 51;
pub const INVALID_TXN_STATE: i16 = 48;
pub const OPERATION_NOT_ATTEMPTED: i16 = 55;
pub const PRODUCER_FENCED: i16 = 90;
pub const NETWORK_EXCEPTION: i16 = 13;

/// PRODUCER_FENCED as a client of `version` knows it: versions below `fenced_since`
/// (KIP-588) get INVALID_PRODUCER_EPOCH instead.
pub fn fenced_for(code: i16, version: i16, fenced_since: i16) -> i16 {
    if code == PRODUCER_FENCED && version < fenced_since {
        kerr::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Kafka's Dead: the record removing an expired transactional id (a tombstone); never
    /// in the coordinator's map. Last, so the stored variants keep their numbers.
    Dead,
}

impl TxnState {
    /// Kafka's names (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }
}

/// One transactional id's state: what each record of the topic holds.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TxnMeta {
    pub txn_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Partitions of the open (or completing) transaction, sorted.
    pub partitions: Vec<(String, i32)>,
    /// When the open transaction began (ms since the epoch), -1 when none is open.
    pub start_ms: i64,
    pub update_ms: i64,
}

fn encode(meta: &TxnMeta) -> Result<Bytes, String> {
    let value =
        rkyv::to_bytes::<rkyv::rancor::Error>(meta).map_err(|e| format!("serialise: {e}"))?;
    internal_topic::encode_value(&value)
}

fn decode(batch: &[u8]) -> Result<Vec<TxnMeta>, String> {
    let mut out = Vec::new();
    for v in internal_topic::decode_values(batch)? {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(v.len());
        aligned.extend_from_slice(&v);
        out.push(
            rkyv::from_bytes::<TxnMeta, rkyv::rancor::Error>(&aligned)
                .map_err(|e| format!("decode transaction state: {e}"))?,
        );
    }
    Ok(out)
}

/// Per shard: the transactional ids of the `__transaction_state` partitions it leads.
pub struct TxnCoordinator {
    pub parts: Partitions,
    pub txns: RefCell<HashMap<String, TxnMeta>>,
    /// Ids with a state change or markers in flight (requests get CONCURRENT_TRANSACTIONS).
    busy: RefCell<HashSet<String>>,
    /// This shard's connections to other hosts' coordinators for KIP-890 verifications
    /// (`remote_verify`), by address: a verification is one request on a negotiated
    /// connection, not a connect per produce. Never borrowed across an await.
    verify_connections: RefCell<HashMap<String, Rc<crate::client::conn::Connection>>>,
}

impl Default for TxnCoordinator {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks an id busy for the lifetime of the guard.
struct Busy<'a> {
    co: &'a TxnCoordinator,
    id: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.co.busy.borrow_mut().remove(&self.id);
    }
}

impl TxnCoordinator {
    pub fn new() -> Self {
        TxnCoordinator {
            parts: Partitions::new(TXN_TOPIC),
            txns: RefCell::new(HashMap::new()),
            busy: RefCell::new(HashSet::new()),
            verify_connections: RefCell::new(HashMap::new()),
        }
    }

    fn try_busy(&self, id: &str) -> Option<Busy<'_>> {
        if !self.busy.borrow_mut().insert(id.to_string()) {
            return None;
        }
        Some(Busy {
            co: self,
            id: id.to_string(),
        })
    }

    /// Asks the controller quorum for the transaction-state topic.
    pub fn request_topic(&self, shard: &Rc<Shard>) {
        let cfg = &shard.config;
        self.parts.request_topic(
            shard,
            cfg.transaction_state_num_partitions,
            cfg.offsets_topic_replication_factor,
            internal_topic::topic_configs(TXN_TOPIC_SEGMENT_BYTES, TXN_RECORD_MAX_BYTES),
        );
    }

    /// Starts the timeout checker.
    pub fn start(&self, shard: &Rc<Shard>) {
        glommio::spawn_local(timeouts(shard.clone())).detach();
    }

    /// After each metadata apply: loads newly led partitions, drops the others.
    pub fn on_meta(&self, shard: &Rc<Shard>, meta: &ClusterMeta) {
        let r = self.parts.reconcile(shard, meta);
        for p in r.dropped {
            let n = r.partitions;
            self.txns
                .borrow_mut()
                .retain(|id, _| n > 0 && internal_topic::partition_for(id, n) != p);
            log::info!("shard {}: no longer coordinating {TXN_TOPIC}-{p}", shard.id);
        }
        for (p, epoch, _) in r.to_load {
            let s = shard.clone();
            glommio::spawn_local(async move {
                if let Err(e) = load_partition(&s, p, epoch).await {
                    log::error!("shard {}: loading {TXN_TOPIC}-{p} failed: {e}", s.id);
                }
            })
            .detach();
        }
    }

    /// Writes `meta` (acks=all) and adopts it.
    async fn persist(&self, shard: &Rc<Shard>, meta: TxnMeta) -> Result<(), i16> {
        let batch = encode(&meta).map_err(|e| {
            log::error!("transaction state of {}: {e}", meta.txn_id);
            kerr::UNKNOWN_SERVER_ERROR
        })?;
        let len = batch.len() as u64;
        let (p, epoch, gate) = self.parts.loaded_part(shard, &meta.txn_id)?;
        {
            let _permit = gate
                .acquire_permit(1)
                .await
                .map_err(|_| kerr::NOT_COORDINATOR)?;
            if !self.parts.still_loaded(p, epoch) {
                return Err(kerr::NOT_COORDINATOR);
            }
            internal_topic::append(shard, TXN_TOPIC, p, batch, TXN_APPEND_TIMEOUT)
                .await
                .map_err(|(code, _)| code)?;
            if !self.parts.still_loaded(p, epoch) {
                return Err(kerr::NOT_COORDINATOR);
            }
        }
        if meta.state == TxnState::Dead {
            self.txns.borrow_mut().remove(&meta.txn_id);
        } else {
            self.txns.borrow_mut().insert(meta.txn_id.clone(), meta);
        }
        if self.parts.appended(p, len, TXN_REWRITE_BYTES) {
            let s = shard.clone();
            glommio::spawn_local(async move {
                let bytes = match rewrite(&s, p, epoch).await {
                    Ok(b) => b,
                    Err(e) => {
                        log::warn!("shard {}: rewriting {TXN_TOPIC}-{p}: {e}", s.id);
                        None
                    }
                };
                s.txns.parts.rewritten(p, bytes);
            })
            .detach();
        }
        Ok(())
    }

    /// InitProducerId with a transactional id (on its coordinator): a new producer id, or
    /// the id's producer with its epoch bumped (fencing older instances). An open
    /// transaction is aborted first (the client retries meanwhile).
    pub async fn init_producer_id(
        &self,
        shard: &Rc<Shard>,
        txn_id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), i16> {
        let code = self.parts.check(shard, txn_id);
        if code != kerr::NONE {
            return Err(code);
        }
        if timeout_ms <= 0 || timeout_ms > TXN_TIMEOUT_MAX_MS {
            return Err(INVALID_TRANSACTION_TIMEOUT);
        }
        let Some(busy) = self.try_busy(txn_id) else {
            return Err(CONCURRENT_TRANSACTIONS);
        };
        let current = self.txns.borrow().get(txn_id).cloned();
        let now = now_ms();
        let next = match current {
            None => {
                if self.txns.borrow().len() >= TXNS_PER_SHARD_MAX {
                    return Err(kerr::COORDINATOR_NOT_AVAILABLE);
                }
                let pid = shard.allocate_producer_id().await.map_err(|e| {
                    log::error!("cannot allocate a producer id: {e}");
                    kerr::COORDINATOR_NOT_AVAILABLE
                })?;
                TxnMeta {
                    txn_id: txn_id.to_string(),
                    producer_id: pid,
                    producer_epoch: 0,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: Vec::new(),
                    start_ms: -1,
                    update_ms: now,
                }
            }
            Some(m) => {
                // KIP-360: a producer that names its id and epoch must be the current one.
                if let Some((pid, epoch)) = expected
                    && (pid != m.producer_id || epoch != m.producer_epoch)
                {
                    return Err(PRODUCER_FENCED);
                }
                match m.state {
                    TxnState::PrepareCommit | TxnState::PrepareAbort => {
                        return Err(CONCURRENT_TRANSACTIONS);
                    }
                    TxnState::Ongoing => {
                        // Fence the open transaction's producer and abort it; the client's
                        // retry gets the new epoch once the markers are written.
                        let fenced = self.bump(shard, m, TxnState::PrepareAbort).await?;
                        self.persist(shard, fenced.clone()).await?;
                        drop(busy);
                        spawn_complete(shard, fenced);
                        return Err(CONCURRENT_TRANSACTIONS);
                    }
                    _ => {
                        let mut n = self.bump(shard, m, TxnState::Empty).await?;
                        n.timeout_ms = timeout_ms;
                        n.partitions.clear();
                        n.start_ms = -1;
                        n
                    }
                }
            }
        };
        self.persist(shard, next.clone()).await?;
        Ok((next.producer_id, next.producer_epoch))
    }

    /// `m` with its epoch bumped (a new producer id once the epoch is exhausted) and `state`.
    async fn bump(
        &self,
        shard: &Rc<Shard>,
        mut m: TxnMeta,
        state: TxnState,
    ) -> Result<TxnMeta, i16> {
        match m.producer_epoch.checked_add(1) {
            Some(e) if e < i16::MAX => m.producer_epoch = e,
            _ if state == TxnState::Empty => {
                m.producer_id = shard
                    .allocate_producer_id()
                    .await
                    .map_err(|_| kerr::COORDINATOR_NOT_AVAILABLE)?;
                m.producer_epoch = 0;
            }
            // An exhausted epoch cannot fence by a bump: abort with it as it is.
            _ => {}
        }
        m.state = state;
        m.update_ms = now_ms();
        Ok(m)
    }

    /// The id's state when `producer_id`/`epoch` are its current producer, else the error.
    fn current(&self, txn_id: &str, producer_id: i64, epoch: i16) -> Result<TxnMeta, i16> {
        let Some(m) = self.txns.borrow().get(txn_id).cloned() else {
            return Err(INVALID_PRODUCER_ID_MAPPING);
        };
        if m.producer_id != producer_id {
            return Err(INVALID_PRODUCER_ID_MAPPING);
        }
        if m.producer_epoch != epoch {
            return Err(PRODUCER_FENCED);
        }
        Ok(m)
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the partitions join the open transaction.
    pub async fn add_partitions(
        &self,
        shard: &Rc<Shard>,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), i16> {
        let code = self.parts.check(shard, txn_id);
        if code != kerr::NONE {
            return Err(code);
        }
        let Some(_busy) = self.try_busy(txn_id) else {
            return Err(CONCURRENT_TRANSACTIONS);
        };
        let mut m = self.current(txn_id, producer_id, epoch)?;
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(CONCURRENT_TRANSACTIONS);
        }
        let known = m.state == TxnState::Ongoing
            && partitions
                .iter()
                .all(|p| m.partitions.binary_search(p).is_ok());
        if known {
            return Ok(());
        }
        if m.state != TxnState::Ongoing {
            m.partitions.clear();
            m.start_ms = now_ms();
        }
        for p in partitions {
            if let Err(at) = m.partitions.binary_search(p) {
                m.partitions.insert(at, p.clone());
            }
        }
        if m.partitions.len() > TXN_PARTITIONS_MAX {
            return Err(kerr::INVALID_REQUEST);
        }
        m.state = TxnState::Ongoing;
        m.update_ms = now_ms();
        self.persist(shard, m).await
    }

    /// KIP-890 part 1 (AddPartitionsToTxn with VerifyOnly): for each partition, NONE when it
    /// is in the producer's open transaction, else INVALID_TXN_STATE (Kafka 3.6's answer;
    /// 3.8+ answers TRANSACTION_ABORTABLE, which brokers turn into INVALID_TXN_STATE for
    /// the Produce versions served here). Only durable state is consulted: partitions join
    /// `txns` after their record is on the in-sync replicas. Nothing is written.
    pub fn verify(
        &self,
        shard: &Rc<Shard>,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<i16> {
        let all = |code| vec![code; partitions.len()];
        if txn_id.is_empty() {
            return all(kerr::INVALID_REQUEST);
        }
        let code = self.parts.check(shard, txn_id);
        if code != kerr::NONE {
            return all(code);
        }
        let m = match self.current(txn_id, producer_id, epoch) {
            Ok(m) => m,
            Err(code) => return all(code),
        };
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return all(CONCURRENT_TRANSACTIONS);
        }
        partitions
            .iter()
            .map(|p| {
                if m.state == TxnState::Ongoing && m.partitions.binary_search(p).is_ok() {
                    kerr::NONE
                } else {
                    INVALID_TXN_STATE
                }
            })
            .collect()
    }

    /// EndTxn: prepares the commit or abort (durable before the answer), then writes the
    /// markers and completes in the background.
    pub async fn end_txn(
        &self,
        shard: &Rc<Shard>,
        txn_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<(), i16> {
        let code = self.parts.check(shard, txn_id);
        if code != kerr::NONE {
            return Err(code);
        }
        let Some(busy) = self.try_busy(txn_id) else {
            return Err(CONCURRENT_TRANSACTIONS);
        };
        let mut m = self.current(txn_id, producer_id, epoch)?;
        match (m.state, commit) {
            (TxnState::Ongoing, _) => {
                m.state = if commit {
                    TxnState::PrepareCommit
                } else {
                    TxnState::PrepareAbort
                };
                m.update_ms = now_ms();
                self.persist(shard, m.clone()).await?;
                drop(busy);
                spawn_complete(shard, m);
                Ok(())
            }
            // A retry of an EndTxn that completed.
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(CONCURRENT_TRANSACTIONS)
            }
            // Nothing was added: nothing to end (the producer may begin another).
            (TxnState::Empty, _) if !commit => Ok(()),
            _ => Err(INVALID_TXN_STATE),
        }
    }
}

/// Finishes a prepared transaction in the background.
fn spawn_complete(shard: &Rc<Shard>, m: TxnMeta) {
    let s = shard.clone();
    glommio::spawn_local(async move { complete(&s, m).await }).detach();
}

/// Writes the markers of a prepared transaction to every partition (retrying until each
/// has it, its topic is gone, or this shard stops coordinating the id), then records the
/// completion.
async fn complete(shard: &Rc<Shard>, m: TxnMeta) {
    let co = &shard.txns;
    let busy = loop {
        if let Some(b) = co.try_busy(&m.txn_id) {
            break b;
        }
        if shard.shutting_down.get() {
            return;
        }
        glommio::timer::sleep(MARKER_RETRY_BACKOFF).await;
    };
    let commit = m.state == TxnState::PrepareCommit;
    let mut left = m.partitions.clone();
    // Half the first pause, so the first refusal waits `MARKER_RETRY_BACKOFF`.
    let mut pause = MARKER_RETRY_BACKOFF / 2;
    while !left.is_empty() {
        if shard.shutting_down.get() || co.parts.check(shard, &m.txn_id) != kerr::NONE {
            return;
        }
        let coordinator_epoch = shard
            .meta()
            .topic(TXN_TOPIC)
            .and_then(|t| {
                t.partitions
                    .get(internal_topic::partition_for(&m.txn_id, t.partitions.len()) as usize)
            })
            .map_or(0, |pm| pm.leader_epoch);
        let (failed, refused) = write_markers(shard, &m, commit, coordinator_epoch, &left).await;
        left = failed;
        pause = if refused {
            (pause * 2).min(MARKER_SECURITY_BACKOFF_MAX)
        } else {
            MARKER_RETRY_BACKOFF / 2
        };
        if !left.is_empty() {
            glommio::timer::sleep(pause.max(MARKER_RETRY_BACKOFF)).await;
        }
    }
    let mut done = m;
    done.state = if commit {
        TxnState::CompleteCommit
    } else {
        TxnState::CompleteAbort
    };
    done.partitions.clear();
    done.start_ms = -1;
    done.update_ms = now_ms();
    let id = done.txn_id.clone();
    if let Err(code) = co.persist(shard, done).await {
        log::warn!("transaction {id}: completion not recorded (error {code}); retried on load");
    }
    drop(busy);
}

/// Writes one marker to each of `partitions`; returns those that must be retried.
async fn write_markers(
    shard: &Rc<Shard>,
    m: &TxnMeta,
    commit: bool,
    coordinator_epoch: i32,
    partitions: &[(String, i32)],
) -> (Vec<(String, i32)>, bool) {
    let meta = shard.meta();
    let mut retry = Vec::new();
    let mut refused = false;
    let mut by_node: HashMap<i32, Vec<(String, i32)>> = HashMap::new();
    for (t, p) in partitions {
        match meta.partition(t, *p) {
            // The topic is gone: nothing left to mark.
            None => {}
            Some(pm) if pm.leader < 0 => retry.push((t.clone(), *p)),
            Some(pm) => by_node.entry(pm.leader).or_default().push((t.clone(), *p)),
        }
    }
    drop(meta);
    for (node, parts) in by_node {
        let results: Vec<((String, i32), i16)> = if host_of(node) == shard.config.node_id {
            let mut out = Vec::new();
            for (t, p) in parts {
                let (tt, pid, epoch) = (t.clone(), m.producer_id, m.producer_epoch);
                let code = shard
                    .call(shard_of(node), move |s| async move {
                        write_marker_local(&s, &tt, p, pid, epoch, commit, coordinator_epoch).await
                    })
                    .await
                    .unwrap_or(kerr::NOT_LEADER_OR_FOLLOWER);
                out.push(((t, p), code));
            }
            out
        } else {
            remote_markers(shard, node, m, commit, coordinator_epoch, parts).await
        };
        for (tp, code) in results {
            match code {
                kerr::NONE | kerr::UNKNOWN_TOPIC_OR_PARTITION => {}
                kerr::SASL_AUTHENTICATION_FAILED | kerr::CLUSTER_AUTHORIZATION_FAILED => {
                    refused = true;
                    retry.push(tp);
                }
                _ => {
                    log::debug!(
                        "transaction {}: marker for {}-{} failed with {code}; retrying",
                        m.txn_id,
                        tp.0,
                        tp.1
                    );
                    retry.push(tp);
                }
            }
        }
    }
    (retry, refused)
}

/// WriteTxnMarkers to a node of another host.
async fn remote_markers(
    shard: &Rc<Shard>,
    node: i32,
    m: &TxnMeta,
    commit: bool,
    coordinator_epoch: i32,
    parts: Vec<(String, i32)>,
) -> Vec<((String, i32), i16)> {
    use kafka_protocol::messages::write_txn_markers_request::{
        WritableTxnMarker, WritableTxnMarkerTopic,
    };
    use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
    let failed =
        |parts: &[(String, i32)], code| parts.iter().map(|tp| (tp.clone(), code)).collect();
    let Some(addr) = shard.inter_broker_addr(node) else {
        return failed(&parts, kerr::NOT_LEADER_OR_FOLLOWER);
    };
    let config = shard.inter_broker_client(format!("osprey-txn-coordinator-{}", shard.node_id()));
    let conn = match crate::client::conn::Connection::connect(&addr, &config).await {
        Ok(c) => c,
        Err(
            e @ (crate::client::ClientError::Authentication { .. }
            | crate::client::ClientError::Tls { .. }),
        ) => {
            // Retried with a growing pause until it works: an operator must fix the
            // credentials or certificates.
            log::warn!("transaction markers: node {node} at {addr} refused this broker: {e}");
            return failed(&parts, kerr::SASL_AUTHENTICATION_FAILED);
        }
        Err(e) => {
            log::debug!("transaction markers: cannot reach node {node} at {addr}: {e}");
            return failed(&parts, kerr::NOT_LEADER_OR_FOLLOWER);
        }
    };
    let topics: Vec<WritableTxnMarkerTopic> = by_topic(&parts)
        .into_iter()
        .map(|(t, ps)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(crate::handlers::str_bytes(t)))
                .with_partition_indexes(ps)
        })
        .collect();
    let req = WriteTxnMarkersRequest::default().with_markers(vec![
        WritableTxnMarker::default()
            .with_producer_id(ProducerId(m.producer_id))
            .with_producer_epoch(m.producer_epoch)
            .with_transaction_result(commit)
            .with_coordinator_epoch(coordinator_epoch)
            .with_topics(topics),
    ]);
    match conn.request(&req, 1).await {
        Ok(resp) => {
            let mut out = Vec::new();
            for r in resp.markers {
                for t in r.topics {
                    for p in t.partitions {
                        out.push(((t.name.0.to_string(), p.partition_index), p.error_code));
                    }
                }
            }
            out
        }
        Err(e) => {
            log::debug!("transaction markers to node {node}: {e}");
            failed(&parts, kerr::NOT_LEADER_OR_FOLLOWER)
        }
    }
}

/// KIP-890 part 1, the partition leader's side: asks the coordinator of `txn_id` whether
/// each of `partitions` is in the producer's open transaction; one code per partition
/// (Kafka's coordinator codes, NETWORK_EXCEPTION when it could not be asked). The
/// coordinator is a shard of this host (through the router) or another host's node
/// (AddPartitionsToTxn v4+ with VerifyOnly, one request for all the partitions).
pub async fn verify_partitions(
    shard: &Rc<Shard>,
    txn_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Vec<i16> {
    let all = |code| vec![code; partitions.len()];
    let node = {
        let meta = shard.meta();
        meta.topic(TXN_TOPIC).and_then(|t| {
            t.partitions
                .get(internal_topic::partition_for(txn_id, t.partitions.len()) as usize)
                .map(|pm| pm.leader)
        })
    };
    let Some(node) = node.filter(|n| *n >= 0) else {
        return all(kerr::COORDINATOR_NOT_AVAILABLE);
    };
    if host_of(node) == shard.config.node_id {
        let n = partitions.len();
        let id = txn_id.to_string();
        return shard
            .call(shard_of(node), move |s| async move {
                s.txns.verify(&s, &id, producer_id, epoch, &partitions)
            })
            .await
            .unwrap_or_else(|_| vec![NETWORK_EXCEPTION; n]);
    }
    match glommio::timer::timeout(VERIFY_TIMEOUT, async {
        Ok(remote_verify(shard, node, txn_id, producer_id, epoch, &partitions).await)
    })
    .await
    {
        Ok(codes) => codes,
        Err(_) => all(NETWORK_EXCEPTION),
    }
}

/// Partitions grouped by topic, topics in first-seen order (the shape of the marker and
/// verification requests).
fn by_topic(parts: &[(String, i32)]) -> Vec<(String, Vec<i32>)> {
    let mut out: Vec<(String, Vec<i32>)> = Vec::new();
    for (t, p) in parts {
        match out.iter_mut().find(|(name, _)| name == t) {
            Some((_, ps)) => ps.push(*p),
            None => out.push((t.clone(), vec![*p])),
        }
    }
    out
}

/// Connections a shard keeps to other hosts' coordinators for verifications (one per
/// node address; a dead one is replaced).
const VERIFY_CONNECTIONS_MAX: usize = 256;

/// A live connection to `addr` for verifications, reused or made.
async fn verify_connection(
    shard: &Rc<Shard>,
    addr: &str,
) -> Result<Rc<crate::client::conn::Connection>, String> {
    let conns = &shard.txns.verify_connections;
    if let Some(c) = conns.borrow().get(addr).cloned()
        && c.is_alive()
    {
        return Ok(c);
    }
    // The inter-broker listener's security, as follower fetchers and markers use.
    let config = crate::client::ClientConfig {
        request_timeout: VERIFY_TIMEOUT,
        ..shard.inter_broker_client(format!("osprey-txn-verify-{}", shard.node_id()))
    };
    let c = Rc::new(
        crate::client::conn::Connection::connect(addr, &config)
            .await
            .map_err(|e| e.to_string())?,
    );
    let mut m = conns.borrow_mut();
    m.retain(|_, c| c.is_alive());
    if m.len() < VERIFY_CONNECTIONS_MAX {
        m.insert(addr.to_string(), c.clone());
    }
    Ok(c)
}

/// AddPartitionsToTxn v4+ (VerifyOnly) to the coordinator's node on another host.
async fn remote_verify(
    shard: &Rc<Shard>,
    node: i32,
    txn_id: &str,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
) -> Vec<i16> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId,
    };
    let all = |code| vec![code; partitions.len()];
    let Some(addr) = shard.inter_broker_addr(node) else {
        return all(kerr::COORDINATOR_NOT_AVAILABLE);
    };
    let conn = match verify_connection(shard, &addr).await {
        Ok(c) => c,
        Err(e) => {
            log::debug!("transaction verification: cannot reach node {node} at {addr}: {e}");
            return all(NETWORK_EXCEPTION);
        }
    };
    let Ok(version) = conn.version_for::<AddPartitionsToTxnRequest>(5) else {
        // As Kafka: a coordinator that cannot verify lets the produce through.
        return all(kerr::NONE);
    };
    if version < 4 {
        return all(kerr::NONE);
    }
    let topics: Vec<AddPartitionsToTxnTopic> = by_topic(partitions)
        .into_iter()
        .map(|(t, ps)| {
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(crate::handlers::str_bytes(t)))
                .with_partitions(ps)
        })
        .collect();
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(crate::handlers::str_bytes(txn_id)))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(topics),
    ]);
    let resp = match conn.request(&req, version).await {
        Ok(r) => r,
        Err(e) => {
            log::debug!("transaction verification with node {node}: {e}");
            return all(NETWORK_EXCEPTION);
        }
    };
    if resp.error_code != kerr::NONE {
        // As Kafka: the producer is not told about the brokers' own authorization.
        return all(if resp.error_code == kerr::CLUSTER_AUTHORIZATION_FAILED {
            INVALID_TXN_STATE
        } else {
            resp.error_code
        });
    }
    let mut out = all(NETWORK_EXCEPTION);
    for r in resp.results_by_transaction {
        for t in r.topic_results {
            for p in t.results_by_partition {
                if let Some(i) = partitions
                    .iter()
                    .position(|(tn, pn)| tn == t.name.0.as_str() && *pn == p.partition_index)
                {
                    out[i] = p.partition_error_code;
                }
            }
        }
    }
    out
}

/// The Produce answer for a partition whose verification failed with a coordinator's
/// `code` (Kafka's ReplicaManager translation): retriable coordinator trouble becomes
/// NOT_ENOUGH_REPLICAS (old clients retry it without a metadata refresh), a fenced producer
/// INVALID_PRODUCER_EPOCH.
pub fn produce_error_of_verification(code: i16) -> (i16, Option<String>) {
    match code {
        INVALID_TXN_STATE => (
            code,
            Some("Partition was not added to the transaction".into()),
        ),
        NETWORK_EXCEPTION
        | kerr::COORDINATOR_LOAD_IN_PROGRESS
        | kerr::COORDINATOR_NOT_AVAILABLE
        | kerr::NOT_COORDINATOR
        | CONCURRENT_TRANSACTIONS => (
            kerr::NOT_ENOUGH_REPLICAS,
            Some(format!(
                "Unable to verify the partition has been added to the transaction. Underlying error: {code}"
            )),
        ),
        PRODUCER_FENCED => (kerr::INVALID_PRODUCER_EPOCH, None),
        other => (other, None),
    }
}

/// Writes one commit/abort marker to a partition this shard leads (acks=all); for an
/// offsets partition, the group coordinator applies or drops the transaction's offsets.
pub async fn write_marker_local(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> i16 {
    if topic == crate::groups::OFFSETS_TOPIC {
        return shard
            .groups
            .complete_txn(shard, partition, producer_id, commit)
            .await;
    }
    let r = match shard.partition(topic, partition) {
        Ok(r) => r,
        Err(crate::shard::LookupError::UnknownTopicOrPartition) => {
            return kerr::UNKNOWN_TOPIC_OR_PARTITION;
        }
        Err(_) => return kerr::NOT_LEADER_OR_FOLLOWER,
    };
    // A partition the producer never wrote in this transaction needs no marker; a
    // verification of its first batch that raced with this end is void (KIP-890).
    if r.log.ongoing_txn(producer_id).is_none() {
        r.log.clear_txn_verification(producer_id);
        return kerr::NONE;
    }
    let kind = if commit {
        shards::batch::CONTROL_COMMIT
    } else {
        shards::batch::CONTROL_ABORT
    };
    let batch = shards::batch::control_batch(
        producer_id,
        producer_epoch,
        kind,
        coordinator_epoch,
        now_ms(),
    );
    let res = crate::handlers::produce::append_marker(
        shard.clone(),
        topic.to_string(),
        partition,
        Bytes::from(batch),
        TXN_APPEND_TIMEOUT,
    )
    .await;
    res.error_code
}

/// Loads one `__transaction_state` partition this shard became the leader of, then
/// finishes the transactions it finds prepared.
async fn load_partition(shard: &Rc<Shard>, p: i32, epoch: i32) -> Result<(), String> {
    let co = &shard.txns;
    let Some(gate) = co.parts.gate(p, epoch) else {
        return Ok(());
    };
    let all = gate
        .acquire_permit(GATE_UNITS)
        .await
        .map_err(|e| e.to_string())?;
    let Some(r) = shard.replica(TXN_TOPIC, p) else {
        return Ok(());
    };
    let mut map: HashMap<String, TxnMeta> = HashMap::new();
    let bytes = internal_topic::replay(&r.log, |batch| {
        for m in decode(batch)? {
            if m.state == TxnState::Dead {
                map.remove(&m.txn_id);
            } else {
                map.insert(m.txn_id.clone(), m);
            }
        }
        Ok(())
    })
    .await?;
    if !co.parts.is_registered(p, epoch) {
        return Ok(());
    }
    let prepared: Vec<TxnMeta> = map
        .values()
        .filter(|m| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
        .cloned()
        .collect();
    let n = map.len();
    co.txns.borrow_mut().extend(map);
    let rewrite_due = co.parts.mark_loaded(p, epoch, bytes, TXN_REWRITE_BYTES);
    drop(all);
    log::info!(
        "shard {}: coordinating {TXN_TOPIC}-{p} (leader epoch {epoch}): {n} transactional ids, {} to complete",
        shard.id,
        prepared.len()
    );
    for m in prepared {
        spawn_complete(shard, m);
    }
    if rewrite_due {
        let bytes = rewrite(shard, p, epoch).await.unwrap_or(None);
        co.parts.rewritten(p, bytes);
    }
    Ok(())
}

/// Re-appends every id's current state, then raises the log start past the old records.
async fn rewrite(shard: &Rc<Shard>, p: i32, epoch: i32) -> Result<Option<u64>, String> {
    let co = &shard.txns;
    let Some(gate) = co.parts.gate(p, epoch) else {
        return Ok(None);
    };
    let _all = gate
        .acquire_permit(GATE_UNITS)
        .await
        .map_err(|e| e.to_string())?;
    let Some(r) = shard.replica(TXN_TOPIC, p) else {
        return Ok(None);
    };
    let n = shard
        .meta()
        .topic(TXN_TOPIC)
        .map_or(0, |t| t.partitions.len());
    let state: Vec<TxnMeta> = co
        .txns
        .borrow()
        .values()
        .filter(|m| internal_topic::partition_for(&m.txn_id, n) == p)
        .cloned()
        .collect();
    let start = r.log.log_end_offset();
    let mut bytes = 0u64;
    for m in &state {
        let batch = encode(m)?;
        bytes += batch.len() as u64;
        internal_topic::append(shard, TXN_TOPIC, p, batch, TXN_APPEND_TIMEOUT)
            .await
            .map_err(|(code, why)| format!("error {code}: {why}"))?;
    }
    if !co.parts.still_loaded(p, epoch) {
        return Ok(None);
    }
    r.log
        .delete_records_before(start)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

/// Aborts open transactions past their timeout, bumping the epoch (Kafka fences the
/// producer of a timed-out transaction so its late writes are refused), and removes
/// transactional ids idle past transactional.id.expiration.ms (`expire_ids`).
async fn timeouts(shard: Rc<Shard>) {
    let expiration_ms = shard.config.transactional_id_expiration_ms;
    let expiration_check_ms = expiration_ms.min(TXN_ID_EXPIRATION_CHECK_MAX_MS) as i64;
    let mut next_expiration_check = now_ms() + expiration_check_ms;
    while !shard.shutting_down.get() {
        glommio::timer::sleep(TXN_TIMEOUT_CHECK_INTERVAL).await;
        let now = now_ms();
        if now >= next_expiration_check {
            next_expiration_check = now + expiration_check_ms;
            expire_ids(&shard, expiration_ms).await;
        }
        let expired: Vec<TxnMeta> = shard
            .txns
            .txns
            .borrow()
            .values()
            .filter(|m| {
                m.state == TxnState::Ongoing
                    && m.start_ms >= 0
                    && now - m.start_ms > i64::from(m.timeout_ms)
            })
            .cloned()
            .collect();
        for m in expired {
            let co = &shard.txns;
            if co.parts.check(&shard, &m.txn_id) != kerr::NONE {
                continue;
            }
            let Some(busy) = co.try_busy(&m.txn_id) else {
                continue;
            };
            // Still the same open transaction?
            if co.txns.borrow().get(&m.txn_id) != Some(&m) {
                continue;
            }
            log::info!(
                "transaction {} timed out after {} ms: aborting",
                m.txn_id,
                m.timeout_ms
            );
            let Ok(aborting) = co.bump(&shard, m, TxnState::PrepareAbort).await else {
                continue;
            };
            if co.persist(&shard, aborting.clone()).await.is_ok() {
                drop(busy);
                spawn_complete(&shard, aborting);
            }
        }
    }
}

/// Kafka's transactional id expiration: an id with no transaction open or completing
/// (Empty, CompleteCommit, CompleteAbort) whose state last changed more than
/// `expiration_ms` ago is removed with a Dead record (a tombstone), written acks=all
/// before the id leaves the map, so a coordinator that loads the partition later agrees.
/// A later InitProducerId for it starts over with a new producer id. At most
/// `TXN_ID_EXPIRATIONS_PER_PASS_MAX` ids per pass.
async fn expire_ids(shard: &Rc<Shard>, expiration_ms: u64) {
    let co = &shard.txns;
    let cutoff = now_ms().saturating_sub(expiration_ms.min(i64::MAX as u64) as i64);
    let idle = |m: &TxnMeta| {
        matches!(
            m.state,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
        ) && m.update_ms <= cutoff
    };
    let expired: Vec<TxnMeta> = co
        .txns
        .borrow()
        .values()
        .filter(|m| idle(m))
        .take(TXN_ID_EXPIRATIONS_PER_PASS_MAX)
        .cloned()
        .collect();
    for m in expired {
        if co.parts.check(shard, &m.txn_id) != kerr::NONE {
            continue;
        }
        let Some(_busy) = co.try_busy(&m.txn_id) else {
            continue;
        };
        // Still the same idle state (no request changed it meanwhile)?
        if co.txns.borrow().get(&m.txn_id) != Some(&m) {
            continue;
        }
        let id = m.txn_id.clone();
        let mut dead = m;
        dead.state = TxnState::Dead;
        dead.partitions.clear();
        dead.start_ms = -1;
        dead.update_ms = now_ms();
        match co.persist(shard, dead).await {
            Ok(()) => log::info!(
                "transactional id {id} expired after {expiration_ms} ms without use: removed"
            ),
            Err(code) => {
                log::warn!("transactional id {id}: expiration not recorded (error {code})")
            }
        }
    }
}
