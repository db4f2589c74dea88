//! The controller quorum (KRaft's role): the cluster metadata as a replicated log on
//! openraft, and the handle through which shards propose changes and follow the result.
//!
//! Runs on: a controller thread of its own per host (`osprey-controller`), with a
//! current-thread tokio runtime, beside the shard executors. openraft 0.9 is built on
//! tokio and wants `Send` storage and network objects; the metadata path is small and rare
//! (topic changes, registrations), so it runs where openraft runs best and reaches the
//! shards through runtime-agnostic channels: `ControllerHandle::propose` (a bounded tokio
//! mpsc plus a oneshot reply) and a `watch` of the latest applied `ClusterMeta`, which
//! shard 0 follows and broadcasts to every shard over the router. No shard ever blocks on
//! the controller thread, and it never touches shard state.
//!
//! Every host that names itself in `--controller-quorum-voters` is a voter; the others
//! (brokers only) send proposals to any voter and follow the metadata with long-polls. With
//! no voters given the host is a one-voter quorum of itself and opens no controller port.

pub mod rpc;
pub mod state;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metadata::ClusterMeta;
use rpc::{Peer, Request, Response};
use state::{MetaCommand, MetaReply};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The controller quorum's types: metadata commands in, `MetaReply` out.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaReply,
);

/// Proposals queued from the shards to the controller thread.
pub const CONTROLLER_REQUESTS_MAX: usize = 1024;
/// Connections the controller port serves at once (other controllers and hosts).
pub const CONTROLLER_CONNECTIONS_MAX: usize = 256;
/// How long one proposal keeps retrying through elections before it fails.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Forwards a proposal may take between voters before it fails.
const PROPOSE_HOPS_MAX: u8 = 3;
/// Pause between proposal attempts while there is no leader.
const PROPOSE_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Long-poll of a non-voter host for new metadata.
const WATCH_META_WAIT: Duration = Duration::from_secs(5);
/// Raft timing: heartbeats every 100 ms, elections after 0.6-1.2 s without one. Generous
/// for a 2-core machine shared by several hosts; failover of the metadata leader takes
/// about a second.
const RAFT_HEARTBEAT_MS: u64 = 100;
const RAFT_ELECTION_MIN_MS: u64 = 600;
const RAFT_ELECTION_MAX_MS: u64 = 1200;
/// How often the quorum leader looks for partitions to hand back to their preferred
/// leader (Kafka's leader.imbalance.check.interval.seconds, shorter).
const PREFERRED_LEADER_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Applied entries between snapshots (the log before a snapshot is purged).
const RAFT_LOGS_PER_SNAPSHOT: u64 = 1000;

/// What the controller thread needs at start.
pub struct ControllerOptions {
    /// This host's id (`--node-id`).
    pub node_id: NodeId,
    /// `--controller-quorum-voters`: id and controller address of each voter; empty for a
    /// one-host cluster (this host alone).
    pub voters: Vec<(NodeId, String)>,
    /// The bound controller listener (voters of a multi-host quorum only).
    pub listener: Option<std::net::TcpListener>,
    /// `<data>/controller/raft`.
    pub dir: PathBuf,
    /// Kafka's broker.session.timeout.ms: a host whose heartbeats stop this long is fenced.
    pub session_timeout: Duration,
    /// Kafka's auto.leader.rebalance.enable: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
}

enum Job {
    Propose {
        cmd: MetaCommand,
        reply: oneshot::Sender<Result<MetaReply, String>>,
    },
    DescribeQuorum {
        reply: oneshot::Sender<Result<QuorumInfo, String>>,
    },
}

/// DescribeQuorum's view of the metadata quorum, as its leader sees it (travels between
/// voters as JSON). Offsets are Raft log positions (index + 1, exclusive ends).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct QuorumInfo {
    pub leader_id: u64,
    /// The Raft term.
    pub leader_epoch: u64,
    /// End of the applied (committed) log.
    pub high_watermark: i64,
    pub voters: Vec<ReplicaInfo>,
    /// Hosts in the metadata that are not voters (they watch the metadata; their log
    /// position is not tracked: -1).
    pub observers: Vec<ReplicaInfo>,
    /// Each voter's controller address (`--controller-quorum-voters`).
    pub voter_addrs: Vec<(u64, String)>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReplicaInfo {
    pub id: u64,
    /// Log end as the leader last saw it replicated; -1 unknown.
    pub log_end_offset: i64,
    /// Wall-clock ms of the host's last heartbeat seen by the leader; -1 never.
    pub last_contact_ms: i64,
    /// `last_contact_ms` when its log end equals the leader's, else -1.
    pub last_caught_up_ms: i64,
}

/// The shards' end of the controller thread. Clone and `Send`; its futures run on any
/// executor (glommio included).
#[derive(Clone)]
pub struct ControllerHandle {
    jobs: mpsc::Sender<Job>,
    meta: watch::Receiver<Arc<ClusterMeta>>,
    shutdown: Arc<tokio::sync::Notify>,
    /// Set at a controlled shutdown: this host stops heartbeating.
    leaving: Arc<AtomicBool>,
    /// Set while this host cannot reach the quorum leader (see `watch_isolation`).
    isolated: Arc<AtomicBool>,
    host_id: u32,
}

impl ControllerHandle {
    /// Applies `cmd` through the quorum; the reply says what each item did and the
    /// metadata epoch that includes it.
    pub async fn propose(&self, cmd: MetaCommand) -> Result<MetaReply, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Propose { cmd, reply: tx })
            .await
            .map_err(|_| "the controller has stopped".to_string())?;
        rx.await
            .map_err(|_| "the controller has stopped".to_string())?
    }

    /// DescribeQuorum: the quorum leader's view (asked of the leader when this host does
    /// not lead).
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::DescribeQuorum { reply: tx })
            .await
            .map_err(|_| "the controller has stopped".to_string())?;
        rx.await
            .map_err(|_| "the controller has stopped".to_string())?
    }

    /// The latest metadata applied on this host, and a receiver of every later version.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterMeta>> {
        self.meta.clone()
    }

    /// Kafka's controlled shutdown: stops this host's heartbeats and has the quorum fence
    /// it, which moves every leadership it holds to an in-sync replica on another host
    /// before its shards stop. Skipped on a one-host cluster (nowhere to move to).
    pub async fn controlled_shutdown(&self) -> Result<(), String> {
        let others = self
            .meta
            .borrow()
            .brokers
            .values()
            .any(|b| b.host_id != self.host_id && !b.fenced);
        if !others {
            return Ok(());
        }
        self.leaving.store(true, Ordering::SeqCst);
        self.propose(MetaCommand::FenceBroker {
            host_id: self.host_id,
            reason: "controlled shutdown".into(),
        })
        .await
        .map(|_| ())
    }

    /// The flag the shards read (an atomic, no lock): true while this host is cut off from
    /// the quorum leader.
    pub fn isolated(&self) -> Arc<AtomicBool> {
        self.isolated.clone()
    }

    /// Stops the controller thread (it finishes after its Raft node shut down).
    pub fn stop(&self) {
        self.shutdown.notify_one();
    }
}

struct Core {
    id: NodeId,
    raft: Option<Raft<TypeConfig>>,
    voters: Vec<(NodeId, String)>,
    meta: watch::Receiver<Arc<ClusterMeta>>,
    /// Last heartbeat seen from each host (every voter records them; the quorum leader
    /// acts on them). Controller thread only.
    heartbeats: std::sync::Mutex<HashMap<u32, Instant>>,
    session_timeout: Duration,
    auto_leader_rebalance: bool,
    leaving: Arc<AtomicBool>,
    /// Last time a heartbeat of this host reached the quorum leader (or this host led).
    leader_contact: std::sync::Mutex<Instant>,
}

impl Core {
    fn heard_from(&self, host: u32) {
        let mut h = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        h.insert(host, Instant::now());
    }

    fn leader_contact(&self) {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn since_leader_contact(&self) -> Duration {
        self.leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    fn last_heard(&self, host: u32) -> Option<Instant> {
        let h = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        h.get(&host).copied()
    }

    /// Leads the quorum and a majority acknowledged it recently (an openraft leader cut
    /// off from the others keeps believing it leads until it hears of a newer term).
    fn leads_with_quorum(&self) -> bool {
        let Some(raft) = &self.raft else {
            return false;
        };
        let metrics = raft.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(self.id) {
            return false;
        }
        self.voters.len() == 1
            || m.millis_since_quorum_ack
                .is_some_and(|ms| u128::from(ms) < self.session_timeout.as_millis() / 2)
    }
}

/// Starts the controller thread. Returns once the Raft node is running (not necessarily
/// with a leader yet: proposals wait for one).
pub fn start(
    opts: ControllerOptions,
) -> Result<(ControllerHandle, std::thread::JoinHandle<()>), String> {
    let (meta_tx, meta_rx) = watch::channel(Arc::new(ClusterMeta::default()));
    let meta_tx = Arc::new(meta_tx);
    let (jobs_tx, jobs_rx) = mpsc::channel(CONTROLLER_REQUESTS_MAX);
    let shutdown = Arc::new(tokio::sync::Notify::new());
    let leaving = Arc::new(AtomicBool::new(false));
    let isolated = Arc::new(AtomicBool::new(false));
    let handle = ControllerHandle {
        isolated: isolated.clone(),
        jobs: jobs_tx,
        meta: meta_rx.clone(),
        shutdown: shutdown.clone(),
        leaving: leaving.clone(),
        host_id: opts.node_id as u32,
    };
    let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let thread = std::thread::Builder::new()
        .name("osprey-controller".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(format!("controller runtime: {e}")));
                    return;
                }
            };
            rt.block_on(run(
                opts, meta_tx, meta_rx, jobs_rx, shutdown, leaving, isolated, started_tx,
            ));
        })
        .map_err(|e| format!("cannot start the controller thread: {e}"))?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok((handle, thread)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the controller thread exited during start-up".into()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    opts: ControllerOptions,
    meta_tx: Arc<watch::Sender<Arc<ClusterMeta>>>,
    meta_rx: watch::Receiver<Arc<ClusterMeta>>,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: Arc<tokio::sync::Notify>,
    leaving: Arc<AtomicBool>,
    isolated: Arc<AtomicBool>,
    started: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let single = opts.voters.is_empty();
    let voters: Vec<(NodeId, String)> = if single {
        vec![(opts.node_id, String::new())]
    } else {
        opts.voters.clone()
    };
    let is_voter = voters.iter().any(|(id, _)| *id == opts.node_id);
    let raft = if is_voter {
        match start_raft(&opts, &voters, meta_tx.clone()).await {
            Ok(r) => Some(r),
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        }
    } else {
        None
    };
    let core = Arc::new(Core {
        id: opts.node_id,
        raft,
        voters,
        meta: meta_rx,
        heartbeats: std::sync::Mutex::new(HashMap::new()),
        session_timeout: opts.session_timeout,
        auto_leader_rebalance: opts.auto_leader_rebalance,
        leaving,
        leader_contact: std::sync::Mutex::new(Instant::now()),
    });
    tokio::spawn(watch_isolation(core.clone(), isolated));
    if let Some(l) = opts.listener {
        let listener = match l
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(l))
        {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send(Err(format!("controller listener: {e}")));
                return;
            }
        };
        tokio::spawn(serve(core.clone(), listener));
    }
    if !is_voter {
        tokio::spawn(follow_meta(core.clone(), meta_tx.clone()));
    }
    if let Some(raft) = &core.raft {
        tokio::spawn(log_leader_changes(raft.metrics()));
        tokio::spawn(watch_liveness(core.clone()));
    }
    for (id, addr) in core.voters.clone() {
        tokio::spawn(heartbeat(core.clone(), opts.node_id as u32, id, addr));
    }
    let _ = started.send(Ok(()));
    let proposals = Arc::new(tokio::sync::Semaphore::new(CONTROLLER_REQUESTS_MAX));
    loop {
        tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { break };
                // At most CONTROLLER_REQUESTS_MAX requests in flight: past that the shards
                // wait on the bounded job channel.
                let Ok(permit) = proposals.clone().acquire_owned().await else { break };
                let core = core.clone();
                tokio::spawn(async move {
                    match job {
                        Job::Propose { cmd, reply } => {
                            let _ = reply.send(propose(&core, cmd, 0).await);
                        }
                        Job::DescribeQuorum { reply } => {
                            let _ = reply.send(describe_quorum(&core, 0).await);
                        }
                    }
                    drop(permit);
                });
            }
            _ = shutdown.notified() => break,
        }
    }
    if let Some(raft) = &core.raft
        && let Err(e) = raft.shutdown().await
    {
        log::warn!("controller: raft shutdown: {e}");
    }
}

async fn start_raft(
    opts: &ControllerOptions,
    voters: &[(NodeId, String)],
    meta_tx: Arc<watch::Sender<Arc<ClusterMeta>>>,
) -> Result<Raft<TypeConfig>, String> {
    let config = openraft::Config {
        cluster_name: "osprey".into(),
        heartbeat_interval: RAFT_HEARTBEAT_MS,
        election_timeout_min: RAFT_ELECTION_MIN_MS,
        election_timeout_max: RAFT_ELECTION_MAX_MS,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(RAFT_LOGS_PER_SNAPSHOT),
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("raft config: {e}"))?;
    let log_store = store::LogStore::open(&opts.dir)?;
    let pristine = log_store.is_pristine();
    let sm = store::StateMachineStore::open(&opts.dir, meta_tx)?;
    let raft = Raft::new(opts.node_id, Arc::new(config), rpc::Network, log_store, sm)
        .await
        .map_err(|e| format!("cannot start the controller's raft node: {e}"))?;
    if pristine {
        // Every voter initialises with the same membership; openraft makes that one log
        // entry, identical on all of them, so any subset may start first.
        let members: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        if let Err(e) = raft.initialize(members).await {
            log::info!("controller: quorum already initialised ({e})");
        }
    }
    log::info!(
        "controller: raft node {} started, voters {:?}",
        opts.node_id,
        voters.iter().map(|v| v.0).collect::<Vec<_>>()
    );
    Ok(raft)
}

/// Applies `cmd` through the quorum: on the leader directly, else forwarded to the leader
/// (or, from a host that is not a voter, to any voter), retrying through elections until
/// `PROPOSE_TIMEOUT`.
async fn propose(core: &Arc<Core>, cmd: MetaCommand, hops: u8) -> Result<MetaReply, String> {
    let deadline = Instant::now() + PROPOSE_TIMEOUT;
    let mut next_voter = 0usize;
    loop {
        let attempt: Result<MetaReply, String> = match &core.raft {
            Some(raft) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, raft.client_write(cmd.clone())).await {
                    Ok(Ok(resp)) => return Ok(resp.data),
                    Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                        match f.leader_node {
                            Some(node) if hops < PROPOSE_HOPS_MAX && !node.addr.is_empty() => {
                                forward(&node.addr, &cmd, hops + 1, left).await
                            }
                            _ => Err("no controller leader yet".to_string()),
                        }
                    }
                    Ok(Err(e)) => Err(format!("controller: {e}")),
                    Err(_) => Err("controller write timed out".to_string()),
                }
            }
            None => {
                let (_, addr) = &core.voters[next_voter % core.voters.len()];
                next_voter += 1;
                let left = deadline.saturating_duration_since(Instant::now());
                forward(addr, &cmd, hops + 1, left).await
            }
        };
        match attempt {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                log::debug!("controller: proposal not applied yet: {e}");
                tokio::time::sleep(PROPOSE_RETRY_INTERVAL).await;
            }
        }
    }
}

/// The quorum as its leader sees it: from this host's Raft metrics when it leads, else
/// asked of the leader (or, from a host that is not a voter, of a voter).
async fn describe_quorum(core: &Arc<Core>, hops: u8) -> Result<QuorumInfo, String> {
    let leader = match &core.raft {
        Some(raft) => {
            let m = raft.metrics().borrow().clone();
            match m.current_leader {
                Some(l) if l == core.id => return Ok(local_quorum(core, &m)),
                Some(l) => core.voters.iter().find(|v| v.0 == l).map(|v| v.1.clone()),
                None => None,
            }
        }
        None => core.voters.first().map(|v| v.1.clone()),
    };
    let Some(addr) = leader else {
        return Err("no controller leader yet".into());
    };
    if hops >= PROPOSE_HOPS_MAX {
        return Err("the quorum leader moved while asking it".into());
    }
    let mut peer = Peer::new(&addr);
    match peer
        .call(&Request::DescribeQuorum { hops: hops + 1 }, PROPOSE_TIMEOUT)
        .await
    {
        Ok(Response::Quorum(r)) => r,
        Ok(_) => Err(format!("controller {addr}: unexpected answer")),
        Err(e) => Err(format!("controller {addr}: {e}")),
    }
}

fn local_quorum(core: &Core, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> QuorumInfo {
    let now = Instant::now();
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let contact = |host: u64| -> i64 {
        if host == core.id {
            return wall_ms;
        }
        core.last_heard(host as u32)
            .map_or(-1, |h| wall_ms - now.duration_since(h).as_millis() as i64)
    };
    let leader_end = m.last_log_index.map_or(0, |i| i as i64 + 1);
    let end_of = |id: u64| -> i64 {
        if id == core.id {
            return leader_end;
        }
        m.replication
            .as_ref()
            .and_then(|r| r.get(&id).copied())
            .flatten()
            .map_or(-1, |l| l.index as i64 + 1)
    };
    let voter_ids: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let voters = voter_ids
        .iter()
        .map(|&id| {
            let end = end_of(id);
            let last = contact(id);
            ReplicaInfo {
                id,
                log_end_offset: end,
                last_contact_ms: last,
                last_caught_up_ms: if end == leader_end { last } else { -1 },
            }
        })
        .collect();
    let observers = core
        .meta
        .borrow()
        .brokers
        .keys()
        .map(|&h| u64::from(h))
        .filter(|h| !voter_ids.contains(h))
        .map(|id| ReplicaInfo {
            id,
            log_end_offset: -1,
            last_contact_ms: contact(id),
            last_caught_up_ms: -1,
        })
        .collect();
    QuorumInfo {
        leader_id: core.id,
        leader_epoch: m.current_term,
        high_watermark: m.last_applied.map_or(0, |l| l.index as i64 + 1),
        voters,
        observers,
        voter_addrs: core.voters.clone(),
    }
}

async fn forward(
    addr: &str,
    cmd: &MetaCommand,
    hops: u8,
    timeout: Duration,
) -> Result<MetaReply, String> {
    let mut peer = Peer::new(addr);
    let req = Request::Propose {
        cmd: cmd.clone(),
        hops,
    };
    match peer.call(&req, timeout).await {
        Ok(Response::Propose(r)) => r,
        Ok(_) => Err(format!("controller {addr}: unexpected answer")),
        Err(e) => Err(format!("controller {addr}: {e}")),
    }
}

/// This host's heartbeats to one voter, every quarter of the session timeout, until a
/// controlled shutdown stops them.
async fn heartbeat(core: Arc<Core>, host_id: u32, voter: NodeId, addr: String) {
    let interval = (core.session_timeout / 4).max(Duration::from_millis(50));
    let mut peer = Peer::new(addr);
    loop {
        if !core.leaving.load(Ordering::SeqCst) {
            if voter == core.id {
                core.heard_from(host_id);
                if core.leads_with_quorum() {
                    core.leader_contact();
                }
            } else if let Ok(Response::HeartbeatAck(true)) =
                peer.call(&Request::Heartbeat { host_id }, interval).await
            {
                core.leader_contact();
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Marks this host isolated once it has not reached the quorum leader for a whole session
/// timeout (the quorum has fenced it by then, or is about to): its shards then stop
/// acting as leaders of replicated partitions, so clients fail over to the new leaders
/// instead of waiting on a leader that can no longer acknowledge anything.
async fn watch_isolation(core: Arc<Core>, isolated: Arc<AtomicBool>) {
    let tick = (core.session_timeout / 8).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(tick).await;
        let silent = core.since_leader_contact();
        let now_isolated = silent > core.session_timeout;
        if now_isolated != isolated.load(Ordering::SeqCst) {
            if now_isolated {
                log::warn!(
                    "controller: no contact with the quorum leader for {} ms: this host stops leading replicated partitions",
                    silent.as_millis()
                );
            } else {
                log::info!("controller: in contact with the quorum leader again");
            }
            isolated.store(now_isolated, Ordering::SeqCst);
        }
    }
}

/// On the quorum leader: fences hosts whose heartbeats stopped for the session timeout,
/// unfences fenced hosts that heartbeat again, and moves leadership back to preferred
/// replicas that are in sync again. A new leader gives every host a full session from
/// its election before fencing anyone.
async fn watch_liveness(core: Arc<Core>) {
    let tick = (core.session_timeout / 8).max(Duration::from_millis(50));
    let mut leader_since: Option<Instant> = None;
    let mut last_preferred = Instant::now();
    // When this leader first saw each fenced host fenced.
    let mut fenced_seen: HashMap<u32, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(tick).await;
        if !core.leads_with_quorum() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let meta = core.meta.borrow().clone();
        let now = Instant::now();
        fenced_seen.retain(|h, _| meta.brokers.get(h).is_some_and(|b| b.fenced));
        for b in meta.brokers.values() {
            let heard = core.last_heard(b.host_id);
            let seen = heard.map_or(since, |h| h.max(since));
            let cmd = if !b.fenced && now.duration_since(seen) > core.session_timeout {
                Some(MetaCommand::FenceBroker {
                    host_id: b.host_id,
                    reason: format!(
                        "no heartbeat for {} ms (broker.session.timeout.ms)",
                        now.duration_since(seen).as_millis()
                    ),
                })
            } else if b.fenced
                && heard.is_some_and(|h| {
                    // Only heartbeats sent after the fence count (a host in a controlled
                    // shutdown stops heartbeating before it asks to be fenced).
                    let fenced_at = *fenced_seen.entry(b.host_id).or_insert(now);
                    h > fenced_at + core.session_timeout / 4
                        && now.duration_since(h) < core.session_timeout / 2
                })
            {
                Some(MetaCommand::UnfenceBroker { host_id: b.host_id })
            } else {
                None
            };
            if let Some(cmd) = cmd
                && let Err(e) = propose(&core, cmd, 0).await
            {
                log::warn!(
                    "controller: liveness change for host {} not applied: {e}",
                    b.host_id
                );
            }
        }
        if core.auto_leader_rebalance
            && now.duration_since(last_preferred) >= PREFERRED_LEADER_CHECK_INTERVAL
        {
            last_preferred = now;
            let live: std::collections::BTreeSet<i32> =
                meta.nodes().into_iter().map(|n| n.0).collect();
            let partitions: Vec<(String, i32)> = meta
                .topics
                .values()
                .flat_map(|t| {
                    let live = &live;
                    t.partitions.iter().enumerate().filter_map(move |(i, p)| {
                        let pref = p.replicas[0];
                        (p.leader != pref && p.isr.contains(&pref) && live.contains(&pref))
                            .then(|| (t.name.clone(), i as i32))
                    })
                })
                .collect();
            if !partitions.is_empty()
                && let Err(e) = propose(&core, MetaCommand::ElectPreferred { partitions }, 0).await
            {
                log::warn!("controller: preferred leader election not applied: {e}");
            }
        }
    }
}

/// One log line per change of the quorum's leader (operators and tests read it).
async fn log_leader_changes(
    mut metrics: watch::Receiver<openraft::RaftMetrics<NodeId, BasicNode>>,
) {
    let mut last = None;
    loop {
        let (leader, term) = {
            let m = metrics.borrow_and_update();
            (m.current_leader, m.current_term)
        };
        if leader != last {
            match leader {
                Some(l) => log::info!("controller: quorum leader is node {l} (term {term})"),
                None => log::info!("controller: quorum has no leader (term {term})"),
            }
            last = leader;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A host that is not a voter: keeps its metadata current by long-polls to the voters.
async fn follow_meta(core: Arc<Core>, meta_tx: Arc<watch::Sender<Arc<ClusterMeta>>>) {
    let mut i = 0usize;
    loop {
        let (_, addr) = &core.voters[i % core.voters.len()];
        let mut peer = Peer::new(addr.clone());
        loop {
            let after = meta_tx.borrow().epoch;
            let req = Request::WatchMeta {
                after_epoch: after,
                wait_ms: WATCH_META_WAIT.as_millis() as u64,
            };
            match peer.call(&req, WATCH_META_WAIT * 2).await {
                Ok(Response::Meta(m)) if m.epoch > after => {
                    meta_tx.send_replace(Arc::new(*m));
                }
                Ok(_) => {}
                Err(e) => {
                    log::debug!("controller: metadata watch on {addr}: {e}");
                    break;
                }
            }
        }
        i += 1;
        tokio::time::sleep(PROPOSE_RETRY_INTERVAL).await;
    }
}

async fn serve(core: Arc<Core>, listener: tokio::net::TcpListener) {
    let connections = Arc::new(tokio::sync::Semaphore::new(CONTROLLER_CONNECTIONS_MAX));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("controller: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            log::warn!(
                "controller: refusing a connection from {peer}: {CONTROLLER_CONNECTIONS_MAX} is the limit"
            );
            continue;
        };
        let core = core.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let mut stream: rpc::BoxStream = match rpc::tls() {
                None => Box::new(stream),
                Some(t) => {
                    match tokio::time::timeout(rpc::TLS_ACCEPT_TIMEOUT, t.acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(s)) => Box::new(s),
                        Ok(Err(e)) => {
                            log::warn!("controller: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            log::warn!(
                                "controller: TLS handshake with {peer} not done within {:?}",
                                rpc::TLS_ACCEPT_TIMEOUT
                            );
                            return;
                        }
                    }
                }
            };
            loop {
                let req: Request = match rpc::read_frame(&mut stream).await {
                    Ok(r) => r,
                    Err(e) => {
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            log::debug!("controller: connection from {peer}: {e}");
                        }
                        return;
                    }
                };
                let resp = answer(&core, req).await;
                if rpc::write_frame(&mut stream, &resp).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn answer(core: &Arc<Core>, req: Request) -> Response {
    let no_raft = || RaftError::Fatal(openraft::error::Fatal::Stopped);
    match req {
        Request::AppendEntries(r) => Response::AppendEntries(match &core.raft {
            Some(raft) => raft.append_entries(r).await,
            None => Err(no_raft()),
        }),
        Request::Vote(r) => Response::Vote(match &core.raft {
            Some(raft) => raft.vote(r).await,
            None => Err(no_raft()),
        }),
        Request::InstallSnapshot(r) => Response::InstallSnapshot(match &core.raft {
            Some(raft) => raft.install_snapshot(r).await,
            None => Err(RaftError::Fatal(openraft::error::Fatal::Stopped)),
        }),
        Request::Propose { cmd, hops } => Response::Propose(propose(core, cmd, hops).await),
        Request::DescribeQuorum { hops } => Response::Quorum(describe_quorum(core, hops).await),
        Request::Heartbeat { host_id } => {
            core.heard_from(host_id);
            Response::HeartbeatAck(core.leads_with_quorum())
        }
        Request::WatchMeta {
            after_epoch,
            wait_ms,
        } => {
            let mut rx = core.meta.clone();
            let wait = Duration::from_millis(wait_ms.min(WATCH_META_WAIT.as_millis() as u64));
            let _ = tokio::time::timeout(wait, async {
                while rx.borrow_and_update().epoch <= after_epoch {
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
            let meta = (**core.meta.borrow()).clone();
            Response::Meta(Box::new(meta))
        }
    }
}

/// Parses `--controller-quorum-voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(s: &str) -> Result<Vec<(NodeId, String)>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) = item
            .split_once('@')
            .ok_or_else(|| format!("controller voter `{item}`: expected ID@HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .map_err(|_| format!("controller voter `{item}`: `{id}` is not a node id"))?;
        if !addr.contains(':') {
            return Err(format!("controller voter `{item}`: expected ID@HOST:PORT"));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(format!("controller voter id {id} appears twice"));
        }
        out.push((id, addr.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The KRaft voter list parses, and malformed items are refused with a reason.
    #[test]
    fn voters_parse() {
        let v = parse_voters("1@127.0.0.1:9190, 2@h:9191").unwrap();
        assert_eq!(v, vec![(1, "127.0.0.1:9190".into()), (2, "h:9191".into())]);
        assert!(parse_voters("1@a:1,1@b:2").is_err());
        assert!(parse_voters("x@a:1").is_err());
        assert!(parse_voters("1-a:1").is_err());
    }
}
