//! One shard: the state a single core owns (its partitions, its copy of the metadata, its
//! router ends, its producer-id block) and the operations on it.
//!
//! Runs on: every shard, each on its own executor thread. Shared inside the shard through
//! `Rc`; nothing here is reachable from another core except through `router` calls.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use glommio::sync::Semaphore;

use crate::config::{BrokerConfig, REQUEST_MEMORY_PER_SHARD_MAX_BYTES};
use crate::controller::Controller;
use crate::metadata::{ClusterMeta, host_of, node_id, partition_dir, shard_of};
use crate::replication::Replica;
use crate::router::{Router, RouterError};
use crate::sync::Notify;
use crate::topic_config;

/// The partitions of one topic that this shard has open.
struct LocalTopic {
    id: [u8; 16],
    partitions: HashMap<i32, Rc<Replica>>,
}

pub struct Shard {
    pub id: usize,
    /// Number of shards in this process.
    pub count: usize,
    pub config: Arc<BrokerConfig>,
    /// Every client listener of this host with the advertised port of each shard (node id
    /// = host id x 1024 + shard), as registered with the controller.
    pub nodes: Arc<Vec<crate::metadata::ListenerMeta>>,
    pub store: Rc<shards::Store>,
    pub router: Router,
    pub controller: Option<Rc<Controller>>,
    /// Woken on every append, so long-poll fetches re-check at once.
    pub data_arrived: Notify,
    /// Set once at shutdown; connections stop reading new requests.
    pub shutting_down: Cell<bool>,
    pub shutdown: Notify,
    /// Bytes of request frames held by this shard's connections.
    pub request_memory: Rc<Semaphore>,
    pub connections: Cell<usize>,
    /// TLS of this shard's SSL and SASL_SSL listeners, by listener index (each listener
    /// has its own ssl.client.auth): its own rustls configs (the session cache rustls
    /// keeps behind a lock is touched by this core alone), with the
    /// `tls::TLS_GENERATION` they were built at (SIGHUP reloads).
    tls: RefCell<(u64, Vec<Option<futures_rustls::TlsAcceptor>>)>,
    /// This shard's security of its connections to other hosts (`config.inter_broker`),
    /// built on first use and again after a SIGHUP, with the generation it was built at.
    inter_broker: RefCell<Option<(u64, crate::client::security::Security)>>,
    /// Recent SASL authentication failures per client address (throttles guessing).
    pub auth_failures: crate::sasl::FailureThrottle,
    meta: RefCell<Arc<ClusterMeta>>,
    logs: RefCell<HashMap<String, LocalTopic>>,
    /// Serialises metadata application (opening partitions awaits).
    applying: Semaphore,
    /// Set after the first metadata is applied: only then does the shard accept clients.
    meta_ready: Cell<bool>,
    meta_applied: Notify,
    /// A partition this shard should have open is not (its open failed): the reopen task
    /// (`reopen_partitions`) applies the metadata again.
    open_failed: Cell<bool>,
    producer_ids: ProducerIds,
    pub groups: crate::groups::Coordinator,
    /// The transaction coordinator for the `__transaction_state` partitions led here.
    pub txns: crate::txn::TxnCoordinator,
    /// The fetch sessions (KIP-227) of this node's Fetch requests.
    pub fetch_sessions: RefCell<crate::fetch_session::FetchSessions>,
    /// Follower fetchers of this shard, one per leader node.
    pub fetchers: crate::replication::fetcher::Fetchers,
    /// Set by the controller thread while this host cannot reach the quorum leader (read
    /// with one atomic load; no lock): leaders here of replicated partitions stand down.
    isolated: Arc<AtomicBool>,
    /// This shard's counters and histograms (`metrics`).
    pub metrics: crate::metrics::ShardMetrics,
}

/// One TLS acceptor per listener (`None` on non-TLS listeners), each with the listener's
/// own ssl.client.auth. Reads the certificate files.
pub fn tls_acceptors(
    config: &BrokerConfig,
) -> Result<Vec<Option<futures_rustls::TlsAcceptor>>, String> {
    config
        .listeners
        .iter()
        .map(|l| match &config.tls {
            Some(t) if l.protocol.is_tls() => crate::tls::server_config(&t.for_listener(l))
                .map(|c| Some(futures_rustls::TlsAcceptor::from(c))),
            _ => Ok(None),
        })
        .collect()
}

#[derive(Debug)]
pub enum LookupError {
    UnknownTopicOrPartition,
    /// Another shard of this host owns it: forward there.
    NotLocal(usize),
    /// Its leader is a node of another host: the client asked the wrong broker
    /// (NOT_LEADER_OR_FOLLOWER; its metadata is stale).
    OtherHost(i32),
}

/// Where a partition's leader runs, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Owner {
    /// A shard of this host.
    Shard(usize),
    /// A node of another host.
    OtherHost(i32),
    /// No replica can lead it now (every in-sync replica is fenced).
    Offline,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        count: usize,
        config: Arc<BrokerConfig>,
        nodes: Arc<Vec<crate::metadata::ListenerMeta>>,
        store: Rc<shards::Store>,
        router: Router,
        controller: Option<Rc<Controller>>,
        isolated: Arc<AtomicBool>,
        tls: Vec<Option<futures_rustls::TlsAcceptor>>,
    ) -> Shard {
        let producer_ids = ProducerIds::new();
        let groups = crate::groups::Coordinator::new(id, &config);
        Shard {
            id,
            count,
            config,
            nodes,
            store,
            router,
            controller,
            data_arrived: Notify::new(),
            shutting_down: Cell::new(false),
            shutdown: Notify::new(),
            request_memory: Rc::new(Semaphore::new(REQUEST_MEMORY_PER_SHARD_MAX_BYTES)),
            connections: Cell::new(0),
            auth_failures: Default::default(),
            tls: RefCell::new((crate::tls::TLS_GENERATION.load(Ordering::SeqCst), tls)),
            inter_broker: RefCell::new(None),
            meta: RefCell::new(Arc::new(ClusterMeta::default())),
            logs: RefCell::new(HashMap::new()),
            applying: Semaphore::new(1),
            meta_ready: Cell::new(false),
            meta_applied: Notify::new(),
            open_failed: Cell::new(false),
            producer_ids,
            groups,
            txns: crate::txn::TxnCoordinator::new(),
            fetch_sessions: RefCell::new(crate::fetch_session::FetchSessions::new(id as u64)),
            fetchers: Default::default(),
            isolated,
            metrics: Default::default(),
        }
    }

    /// The TLS acceptor of listener `listener` (an index into `config.listeners`), rebuilt
    /// from the certificate files first when a SIGHUP came since it was built (a failed
    /// reload keeps the previous certificates). The files are read synchronously, once per
    /// reload.
    pub fn tls_acceptor(&self, listener: usize) -> Option<futures_rustls::TlsAcceptor> {
        let generation = crate::tls::TLS_GENERATION.load(Ordering::SeqCst);
        let mut cur = self.tls.borrow_mut();
        let (built, acceptors) = &mut *cur;
        if *built != generation {
            *built = generation;
            match tls_acceptors(&self.config) {
                Ok(fresh) => {
                    *acceptors = fresh;
                    log::info!("shard {}: TLS certificates reloaded", self.id);
                }
                Err(e) => log::error!(
                    "shard {}: TLS reload failed, keeping the previous certificates: {e}",
                    self.id
                ),
            }
        }
        acceptors.get(listener).cloned().flatten()
    }

    /// The client settings of this host's connections to other hosts (follower fetchers,
    /// transaction markers): the inter-broker listener's protocol, the broker's SASL user,
    /// the CA and its own certificate. Built on this shard at first use and after each
    /// SIGHUP (start-up checked the files; a failed rebuild keeps the previous settings).
    pub fn inter_broker_client(&self, client_id: String) -> crate::client::ClientConfig {
        let generation = crate::tls::TLS_GENERATION.load(Ordering::SeqCst);
        let mut cur = self.inter_broker.borrow_mut();
        if cur.as_ref().is_none_or(|(g, _)| *g != generation) {
            match self.config.inter_broker.security() {
                Ok(s) => *cur = Some((generation, s)),
                Err(e) => {
                    log::error!(
                        "shard {}: inter-broker security ({}): {e}",
                        self.id,
                        self.config.inter_broker.listener
                    );
                    if let Some((g, _)) = cur.as_mut() {
                        *g = generation;
                    }
                }
            }
        }
        crate::client::ClientConfig {
            client_id,
            request_timeout: std::time::Duration::from_secs(10),
            connect_timeout: std::time::Duration::from_secs(2),
            // With no settings at all (files gone since start-up), PLAINTEXT would be
            // refused by a secured listener anyway; never an unsecured fallback that works.
            security: cur.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
            ..Default::default()
        }
    }

    /// "host:port" of node `node` on the inter-broker listener, from this shard's metadata;
    /// `None` when the node's host is unknown or does not serve that listener.
    pub fn inter_broker_addr(&self, node: i32) -> Option<String> {
        let meta = self.meta();
        let b = meta.brokers.get(&crate::metadata::host_of(node))?;
        let (host, ports) = b.endpoint(&self.config.inter_broker.listener)?;
        let port = ports.get(crate::metadata::shard_of(node))?;
        Some(format!("{host}:{port}"))
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    /// Runs `f` on shard `to`: directly when that is this shard, else through the router.
    pub async fn call<T, F, Fut>(self: &Rc<Self>, to: usize, f: F) -> Result<T, RouterError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if to == self.id {
            Ok(f(self.clone()).await)
        } else {
            self.router.call_remote(to, f).await
        }
    }

    /// The controller (shard 0 only).
    pub fn controller(&self) -> &Rc<Controller> {
        match &self.controller {
            Some(c) => c,
            None => unreachable!("controller call routed to shard {} instead of 0", self.id),
        }
    }

    /// True while this host is cut off from the controller quorum's leader.
    pub fn isolated(&self) -> bool {
        self.isolated.load(Ordering::Relaxed)
    }

    /// A partition this shard leads, or where to forward. A host cut off from the quorum
    /// leader does not lead replicated partitions (the quorum has elected others, or is
    /// about to): clients get NOT_LEADER_OR_FOLLOWER and look elsewhere.
    pub fn partition(&self, topic: &str, partition: i32) -> Result<Rc<Replica>, LookupError> {
        if let Some(r) = self.replica(topic, partition)
            && r.is_leader()
        {
            if r.replication_factor() > 1 && self.isolated() {
                return Err(LookupError::OtherHost(-1));
            }
            return Ok(r);
        }
        match self.owner(topic, partition) {
            Some(Owner::Shard(owner)) if owner != self.id => Err(LookupError::NotLocal(owner)),
            Some(Owner::OtherHost(node)) => Err(LookupError::OtherHost(node)),
            Some(Owner::Offline) => Err(LookupError::OtherHost(-1)),
            // Led here but not open (still opening, or failed to open): unknown for now.
            _ => Err(LookupError::UnknownTopicOrPartition),
        }
    }

    /// The replica of a partition this shard holds, whatever its role.
    pub fn replica(&self, topic: &str, partition: i32) -> Option<Rc<Replica>> {
        self.logs
            .borrow()
            .get(topic)
            .and_then(|t| t.partitions.get(&partition))
            .cloned()
    }

    /// Where the leader of a partition runs, `None` for an unknown topic or partition.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<Owner> {
        let leader = self.meta.borrow().leader(topic, partition)?;
        Some(if leader < 0 {
            Owner::Offline
        } else if host_of(leader) == self.config.node_id {
            Owner::Shard(shard_of(leader))
        } else {
            Owner::OtherHost(leader)
        })
    }

    /// This shard's node id in the cluster.
    pub fn node_id(&self) -> i32 {
        node_id(self.config.node_id, self.id)
    }

    /// Sends new metadata to every shard (including this one) and waits until all applied it.
    pub async fn broadcast_meta(self: &Rc<Self>, meta: Arc<ClusterMeta>) {
        let mut tasks = Vec::new();
        for to in 0..self.count {
            let meta = meta.clone();
            let me = self.clone();
            tasks.push(glommio::spawn_local(async move {
                me.call(to, move |s| async move { s.apply_meta(meta).await })
                    .await
            }));
        }
        for (to, t) in tasks.into_iter().enumerate() {
            if let Err(e) = t.await {
                log::error!("metadata broadcast to shard {to} failed: {e}");
            }
        }
    }

    /// Adopts new metadata: opens partitions newly owned here, deletes the files of deleted
    /// topics, pushes changed configs to open partitions.
    pub async fn apply_meta(self: &Rc<Self>, meta: Arc<ClusterMeta>) {
        let Ok(_permit) = self.applying.acquire_permit(1).await else {
            return;
        };
        if meta.epoch < self.meta.borrow().epoch {
            return;
        }
        *self.meta.borrow_mut() = meta.clone();
        let me = self.node_id();
        // 1. Partitions to drop: topic gone, recreated under a new id, or moved away
        //    (deleted when no replica stays on this host).
        let mut to_delete = Vec::new();
        {
            let mut logs = self.logs.borrow_mut();
            logs.retain(|name, local| match meta.topic(name) {
                Some(t) if t.id == local.id => {
                    local.partitions.retain(|p, r| {
                        let placed = t.partitions.get(*p as usize);
                        let pm = placed.filter(|pm| pm.replicas.contains(&me));
                        if let Some(pm) = pm {
                            r.log
                                .set_config(topic_config::log_config(&t.configs, &self.config));
                            r.apply(pm);
                        } else if !placed.is_some_and(|pm| {
                            pm.replicas.iter().any(|n| host_of(*n) == host_of(me))
                        }) {
                            // Reassigned away from this host (Kafka's StopReplica with
                            // delete): its files go. A replica that only changed shards
                            // on this host keeps the directory the other shard opens.
                            to_delete.push(r.log.clone());
                        }
                        pm.is_some()
                    });
                    true
                }
                _ => {
                    to_delete.extend(local.partitions.drain().map(|(_, r)| r.log.clone()));
                    false
                }
            });
        }
        for p in to_delete {
            if let Err(e) = p.delete().await {
                log::error!("shard {}: could not delete partition files: {e}", self.id);
            }
        }
        // 2. Partitions to open.
        self.open_failed.set(false);
        for t in meta.topics.values() {
            for (p, pm) in t.partitions.iter().enumerate() {
                let p = p as i32;
                if !pm.replicas.contains(&me) {
                    continue;
                }
                let open = self
                    .logs
                    .borrow()
                    .get(&t.name)
                    .is_some_and(|l| l.partitions.contains_key(&p));
                if open {
                    continue;
                }
                let dir = partition_dir(&self.config.data_dir, &t.name, p);
                match partition_dir_owner(&dir) {
                    DirOwner::Nobody => {}
                    DirOwner::Topic(id) if id == t.id => {}
                    DirOwner::Topic(old) => {
                        // An earlier topic of this name, deleted while its files stayed (a
                        // crash between the quorum's commit and the delete's rename): its
                        // data must never come back as the new topic's.
                        log::warn!(
                            "shard {}: {} holds deleted topic {} (now {}); removing it",
                            self.id,
                            dir.display(),
                            crate::handlers::uuid(old),
                            crate::handlers::uuid(t.id)
                        );
                        if let Err(e) = shards::discard_dir(&dir) {
                            log::error!("shard {}: cannot remove {}: {e}", self.id, dir.display());
                            self.open_failed.set(true);
                            continue;
                        }
                    }
                    DirOwner::Unreadable(e) => {
                        log::error!(
                            "shard {}: partition {}-{} not opened: {e}",
                            self.id,
                            t.name,
                            p
                        );
                        continue;
                    }
                }
                let cfg = topic_config::log_config(&t.configs, &self.config);
                match self.store.open_partition(dir.clone(), cfg).await {
                    Ok(part) => {
                        if let Err(e) = write_partition_owner(&dir, t.id).await {
                            log::error!(
                                "shard {}: partition {}-{} not opened: {e}",
                                self.id,
                                t.name,
                                p
                            );
                            if let Err(e) = part.close().await {
                                log::warn!("shard {}: closing {}: {e}", self.id, dir.display());
                            }
                            self.open_failed.set(true);
                            continue;
                        }
                        let r = Replica::new(t.name.clone(), p, part, me, pm);
                        let mut logs = self.logs.borrow_mut();
                        let local = logs.entry(t.name.clone()).or_insert_with(|| LocalTopic {
                            id: t.id,
                            partitions: HashMap::new(),
                        });
                        local.partitions.insert(p, r);
                    }
                    Err(e) => {
                        log::error!(
                            "shard {}: cannot open partition {}-{} in {}: {e}",
                            self.id,
                            t.name,
                            p,
                            dir.display()
                        );
                        self.open_failed.set(true);
                    }
                }
            }
        }
        // 3. Followers fetch from their leaders: one fetcher per leader node.
        let mut wanted: HashMap<i32, BTreeSet<(String, i32)>> = HashMap::new();
        for (name, t) in self.logs.borrow().iter() {
            for (p, r) in &t.partitions {
                if let Some(leader) = r.following() {
                    wanted.entry(leader).or_default().insert((name.clone(), *p));
                }
            }
        }
        self.fetchers.reconcile(self, wanted);
        // Offsets partitions led here now are loaded, those no longer led dropped.
        self.groups.on_meta(self, &meta);
        self.txns.on_meta(self, &meta);
        // Long-polls re-check: an ISR or leadership change may move the watermark (acks=all
        // waiters are woken by `Replica::apply` itself).
        self.data_arrived.notify_all();
        self.meta_ready.set(true);
        self.meta_applied.notify_all();
    }

    /// True while the shard serves clients: its first metadata is applied, it is not
    /// shutting down, and its host is not cut off from the controller quorum.
    pub fn serving(&self) -> bool {
        self.meta_ready.get() && !self.shutting_down.get() && !self.isolated()
    }

    /// Reopens what a failure closed, as a restart would, every PARTITION_REOPEN_INTERVAL_MS
    /// until shutdown: single-replica partitions a failed write stopped (ENOSPC past the
    /// disk-free reserve, EIO) are let go and opened again from disk (recovered to their
    /// last whole written batch; readers already ended there, see
    /// `shards::Partition::failed`), and partitions whose open failed are tried again.
    /// Replicated partitions stay stopped: their followers hold the data and leadership
    /// moves through the controller, as Kafka takes a failed log directory offline.
    pub async fn reopen_partitions(self: Rc<Self>) {
        while !self.shutting_down.get() {
            glommio::timer::sleep(std::time::Duration::from_millis(
                crate::config::PARTITION_REOPEN_INTERVAL_MS,
            ))
            .await;
            let failed: Vec<(String, i32, Rc<Replica>)> = {
                let logs = self.logs.borrow();
                logs.iter()
                    .flat_map(|(name, t)| {
                        t.partitions
                            .iter()
                            .filter(|(_, r)| r.log.failed() && r.replication_factor() == 1)
                            .map(|(p, r)| (name.clone(), *p, r.clone()))
                    })
                    .collect()
            };
            if failed.is_empty() && !self.open_failed.get() {
                continue;
            }
            let Ok(_permit) = self.applying.acquire_permit(1).await else {
                return;
            };
            for (name, p, r) in failed {
                log::warn!(
                    "shard {}: reopening {name}-{p}, stopped by a failure: {}",
                    self.id,
                    r.log.stopped_reason().unwrap_or_default()
                );
                let removed = self.logs.borrow_mut().get_mut(&name).and_then(|t| {
                    t.partitions
                        .remove_entry(&p)
                        .filter(|(_, now)| Rc::ptr_eq(now, &r))
                });
                if removed.is_some() {
                    r.log.abandon().await;
                }
            }
            drop(_permit);
            let meta = self.meta();
            self.apply_meta(meta).await;
        }
    }

    /// Waits until the controller's first metadata has been applied here.
    pub async fn wait_meta_applied(&self) {
        while !self.meta_ready.get() {
            self.meta_applied.notified().await;
        }
    }

    /// The replicas this shard leads of partitions with more than one replica (the ones
    /// whose ISR it maintains); nothing is copied for the others.
    pub fn replicated_leaders(&self) -> Vec<(String, i32, Rc<Replica>)> {
        let logs = self.logs.borrow();
        let mut out = Vec::new();
        for (name, t) in logs.iter() {
            for (p, r) in &t.partitions {
                if r.replication_factor() > 1 && r.is_leader() {
                    out.push((name.clone(), *p, r.clone()));
                }
            }
        }
        out
    }

    /// Every partition open on this shard (for shutdown and stats).
    pub fn local_partitions(&self) -> Vec<(String, i32, Rc<Replica>)> {
        let logs = self.logs.borrow();
        let mut out = Vec::new();
        for (name, t) in logs.iter() {
            for (p, r) in &t.partitions {
                out.push((name.clone(), *p, r.clone()));
            }
        }
        out
    }
}

/// Producer ids: blocks of `PRODUCER_ID_BLOCK` ids allocated by the controller quorum
/// (Kafka's AllocateProducerIds), committed to its log before any id of a block is used, so
/// an id is never handed out twice, across shards, hosts and crashes (a block in use at a
/// crash is abandoned, not reused).
struct ProducerIds {
    next: Cell<i64>,
    reserved_end: Cell<i64>,
    reserving: Semaphore,
}

/// Ids per block taken from the quorum (one metadata record per block).
const PRODUCER_ID_BLOCK: i64 = 1000;

impl ProducerIds {
    fn new() -> Self {
        ProducerIds {
            next: Cell::new(0),
            reserved_end: Cell::new(0),
            reserving: Semaphore::new(1),
        }
    }
}

impl Shard {
    /// A producer id unique across the cluster.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, String> {
        let ids = &self.producer_ids;
        let Ok(_permit) = ids.reserving.acquire_permit(1).await else {
            return Err("shutting down".into());
        };
        if ids.next.get() >= ids.reserved_end.get() {
            let block = self
                .call(0, |s| async move {
                    s.controller()
                        .allocate_producer_ids(PRODUCER_ID_BLOCK)
                        .await
                })
                .await
                .map_err(|e| e.to_string())??;
            ids.next.set(block.0);
            ids.reserved_end.set(block.1);
        }
        let id = ids.next.get();
        ids.next.set(id + 1);
        Ok(id)
    }
}

/// File in a partition directory naming the topic it belongs to by id (Kafka's
/// `partition.metadata`): `version: 0` and `topic_id: <uuid>` lines. Topic ids are never
/// reused, so a directory naming another id than the topic's belongs to a deleted topic.
pub const PARTITION_METADATA_FILE: &str = "partition.metadata";

/// Whose data a partition directory holds.
#[derive(Debug, PartialEq)]
enum DirOwner {
    /// No directory or no `partition.metadata`: a new partition, or a directory from before
    /// the file existed (nothing was appended to a directory of this version without it).
    Nobody,
    Topic([u8; 16]),
    /// A `partition.metadata` that does not parse: left for the operator, never guessed.
    Unreadable(String),
}

fn partition_dir_owner(dir: &std::path::Path) -> DirOwner {
    let path = dir.join(PARTITION_METADATA_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return DirOwner::Nobody,
        Err(e) => return DirOwner::Unreadable(format!("reading {}: {e}", path.display())),
    };
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("topic_id: "))
        .and_then(|v| uuid::Uuid::try_parse(v.trim()).ok())
        .filter(|_| text.lines().next() == Some("version: 0"));
    match id {
        Some(id) => DirOwner::Topic(id.into_bytes()),
        None => DirOwner::Unreadable(format!("{} does not parse", path.display())),
    }
}

fn partition_owner_text(topic_id: [u8; 16]) -> String {
    format!(
        "version: 0\ntopic_id: {}\n",
        crate::handlers::uuid(topic_id).simple()
    )
}

/// Writes `partition.metadata` (atomically, durably) unless it already names `topic_id`.
/// Done right after the partition opens, before anything is appended to it.
async fn write_partition_owner(dir: &std::path::Path, topic_id: [u8; 16]) -> Result<(), String> {
    if partition_dir_owner(dir) == DirOwner::Topic(topic_id) {
        return Ok(());
    }
    let dir = dir.to_path_buf();
    let text = partition_owner_text(topic_id);
    glommio::executor()
        .spawn_blocking(move || {
            crate::durable::write_atomic(&dir, PARTITION_METADATA_FILE, text.as_bytes())
        })
        .await
}

/// Producer ids this host handed out before blocks came from the quorum (per-shard
/// counters persisted in `<data>/producer-ids/shard-N`, ids `(counter << 8) | shard`): the
/// first id above all of them, 0 when there are none.
pub fn legacy_producer_ids_end(dir: &std::path::Path) -> i64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut end = 0i64;
    for e in entries.flatten() {
        if let Ok(b) = std::fs::read(e.path())
            && let Ok(bytes) = <[u8; 8]>::try_from(b.as_slice())
        {
            let counter_end = u64::from_le_bytes(bytes).min(1 << 40) as i64;
            end = end.max((counter_end + 1) << 8);
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    // The first id the quorum may hand out lies above every id the old per-shard
    // counters reserved.
    // partition.metadata round-trips its topic id; a missing one is nobody's, a damaged
    // one is neither (never taken for the topic, never silently discarded).
    #[test]
    fn partition_owner_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(partition_dir_owner(dir.path()), DirOwner::Nobody);
        let id = [7u8; 16];
        let text = partition_owner_text(id);
        crate::durable::write_atomic(dir.path(), PARTITION_METADATA_FILE, text.as_bytes()).unwrap();
        assert_eq!(partition_dir_owner(dir.path()), DirOwner::Topic(id));
        std::fs::write(
            dir.path().join(PARTITION_METADATA_FILE),
            "version: 0\ntopic_id: zz\n",
        )
        .unwrap();
        assert!(matches!(
            partition_dir_owner(dir.path()),
            DirOwner::Unreadable(_)
        ));
    }

    #[test]
    fn legacy_producer_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_producer_ids_end(dir.path()), 0);
        std::fs::write(dir.path().join("shard-0"), 1024u64.to_le_bytes()).unwrap();
        std::fs::write(dir.path().join("shard-1"), 2048u64.to_le_bytes()).unwrap();
        let end = legacy_producer_ids_end(dir.path());
        // The largest old id: counter 2047 of shard 1.
        assert!(end > (2047 << 8) | 1);
    }
}
