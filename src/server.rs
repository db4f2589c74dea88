//! Start-up and shutdown of the whole broker: host checks, the data-directory lock,
//! listening sockets, the router mesh, one pinned executor per shard, and the signal
//! handling that stops them all cleanly.
//!
//! Runs on: the main thread (`run`) and on every shard (`shard_main`). Every listener
//! (`--listeners`) has a bootstrap port served by shard 0 and one port per shard: shard i
//! serves its own advertised port of every listener.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::cluster::{ControllerHandle, ControllerOptions};
use crate::config::{BrokerConfig, ROUTER_CHANNEL_CAPACITY};
use crate::controller::Controller;
use crate::metadata::ListenerMeta;
use crate::router::{Router, RouterEnds};
use crate::runtime::{self, HostError};
use crate::shard::Shard;

/// How long shutdown waits for in-flight requests before closing the logs anyway.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(10);
/// How often shards look at the process-wide shutdown flag.
const SHUTDOWN_POLL_INTERVAL: Duration = Duration::from_millis(50);
const LISTEN_BACKLOG: i32 = 4096;

static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// How long start-up waits for a listening port that is still in use once the
/// data-directory lock is ours. A broker killed with SIGKILL leaves its listening sockets
/// in LISTEN after its death: each executor's io_uring holds its listener through the
/// accept in flight, and the kernel tears a dead process's rings down asynchronously
/// (a workqueue cancels the requests and drops their file references a little later).
/// SO_REUSEADDR does not help: Linux refuses to bind next to a socket in LISTEN state.
const BIND_RETRY_MAX: Duration = Duration::from_secs(10);
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// A failed step of `listen`, with the OS error.
struct ListenError {
    step: &'static str,
    err: std::io::Error,
}

/// Binds a listening socket ourselves: glommio's bind sets SO_REUSEPORT, which would let a
/// second broker silently share the port instead of failing. SO_REUSEPORT stays off (the
/// socket2 default); SO_REUSEADDR is on, so the accepted connections and TIME_WAIT
/// sockets a previous broker left on the port do not block the bind.
fn listen(addr: SocketAddr) -> Result<StdListener, ListenError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let step = |step: &'static str| move |err| ListenError { step, err };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(step("create socket for"))?;
    sock.set_reuse_address(true)
        .map_err(step("set SO_REUSEADDR on"))?;
    sock.bind(&addr.into()).map_err(step("bind"))?;
    sock.listen(LISTEN_BACKLOG).map_err(step("listen on"))?;
    sock.set_nonblocking(true).map_err(step("configure"))?;
    Ok(sock.into())
}

/// Binds every listening socket the broker serves, in order, each through `listen`. A port
/// still in use is retried every `BIND_RETRY_INTERVAL` until `retry_max` after the first
/// attempt (one deadline for all of them): holding the data-directory lock (`_lock`) proves
/// the previous broker on this data directory is dead (the kernel drops a flock when the
/// process dies), so a port in use is most likely its listener waiting for its io_uring
/// teardown. A live process keeps its port, and this start then fails after `retry_max`.
/// Every listener the broker ever opens (bootstrap, shard ports, later ones) must be bound
/// here, so that a supervisor's immediate restart after kill -9 works on all of them.
fn bind_listeners(
    _lock: &DataDirLock,
    addrs: &[SocketAddr],
    retry_max: Duration,
) -> Result<Vec<StdListener>, HostError> {
    let start = Instant::now();
    let deadline = start + retry_max;
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let mut waited = false;
        let listener = loop {
            match listen(addr) {
                Ok(l) => break l,
                Err(e)
                    if e.err.kind() == std::io::ErrorKind::AddrInUse
                        && Instant::now() < deadline =>
                {
                    if !waited {
                        log::warn!(
                            "{addr} is still in use; retrying for up to {retry_max:?} (the previous \
                             broker on this data directory is dead, and a killed broker's listening \
                             sockets stay open until the kernel has torn down its io_uring rings)"
                        );
                        waited = true;
                    }
                    std::thread::sleep(BIND_RETRY_INTERVAL);
                }
                Err(ListenError { step, err }) => {
                    let hint = if err.kind() == std::io::ErrorKind::AddrInUse {
                        format!(
                            " (still in use after {:?}: another process, maybe another osprey, \
                             is listening there: stop it or pick another --listen port)",
                            start.elapsed()
                        )
                    } else {
                        String::new()
                    };
                    return Err(HostError(format!("cannot {step} {addr}: {err}{hint}")));
                }
            }
        };
        if waited {
            log::info!("bound {addr} after {:?}", start.elapsed());
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// An exclusive flock on `<data>/.lock`, held for the life of the process so two brokers
/// never write one data directory. flock belongs to the open file description: the kernel
/// drops it when the last descriptor closes, which a process's death does at once (the
/// descriptor is close-on-exec and never handed to io_uring, so nothing outlives the
/// process holding it). Holding one is what allows `bind_listeners` to wait for ports.
struct DataDirLock {
    _file: std::fs::File,
}

fn lock_data_dir(dir: &Path) -> Result<DataDirLock, HostError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        HostError(format!(
            "cannot create data directory {}: {e}",
            dir.display()
        ))
    })?;
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| HostError(format!("cannot open {}: {e}", path.display())))?;
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    if rc != 0 {
        return Err(HostError(format!(
            "data directory {} is in use by another osprey process (lock {} is held)",
            dir.display(),
            path.display()
        )));
    }
    Ok(DataDirLock { _file: f })
}

/// Blocks SIGINT/SIGTERM/SIGHUP in this thread (and so in every executor thread spawned after),
/// so only the main thread receives them, through `sigtimedwait`.
fn block_signals() -> libc::sigset_t {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

enum ShardEvent {
    Ready,
    Failed(usize, String),
}

/// Runs the broker until SIGINT/SIGTERM; returns after a clean shutdown.
pub fn run(mut config: BrokerConfig) -> Result<(), HostError> {
    // Every path below the data directory is absolute from here on: log lines name the
    // real place, and glommio opens directories relative to fd -1 (a relative path fails
    // with EBADF), so the storage needs absolute paths anyway.
    config.data_dir = std::path::absolute(&config.data_dir).map_err(|e| {
        HostError(format!(
            "cannot resolve data directory {}: {e}",
            config.data_dir.display()
        ))
    })?;
    runtime::check_io_uring()?;
    let cpus = runtime::choose_cpus(config.cores)?;
    let n = cpus.len();
    if n > 256 {
        return Err(HostError(format!(
            "{n} shards requested; osprey supports at most 256"
        )));
    }
    let io_memory = runtime::io_memory_for(n)?;
    let lock = lock_data_dir(&config.data_dir)?;
    crate::ops::startup_checks(&config.data_dir, &cpus);
    if let Ok(p) = std::path::absolute(&config.iotune_file) {
        config.iotune_file = p;
    }
    crate::ops::apply_iotune(&mut config);
    // Directories a crash left half-deleted (renamed to `-delete`, files not all removed)
    // go before any partition opens: nothing may ever read them again.
    match shards::remove_deleted_dirs(&config.data_dir) {
        Ok(removed) => {
            for d in removed {
                log::info!("removed half-deleted directory {}", d.display());
            }
        }
        Err(e) => {
            return Err(HostError(format!(
                "cannot remove half-deleted directories: {e}"
            )));
        }
    }

    // Per listener: its bootstrap address, then shard i on its port + 1 + i (every one on
    // a free port when the bootstrap port is 0).
    let per_listener = n + 1;
    let mut addrs = Vec::with_capacity(config.listeners.len() * per_listener + 1);
    for l in &config.listeners {
        addrs.push(l.addr);
        for i in 0..n {
            let port = if l.addr.port() == 0 {
                0
            } else {
                l.addr.port().checked_add(1 + i as u16).ok_or_else(|| {
                    HostError(format!("shard port for listener {} overflows", l.name))
                })?
            };
            addrs.push(SocketAddr::new(l.addr.ip(), port));
        }
    }
    // Last, the controller port of a voter in a multi-host quorum: a host restarted after
    // kill -9 must get it back as it gets its client ports.
    let controller_addr = config
        .controller_listen
        .filter(|_| !config.voters.is_empty());
    if let Some(addr) = controller_addr {
        addrs.push(addr);
    }
    // Last of all, the admin HTTP port (served by shard 0).
    addrs.push(config.admin_listen);
    let mut bound = bind_listeners(&lock, &addrs, BIND_RETRY_MAX)?;
    let admin_listener = bound
        .pop()
        .ok_or_else(|| HostError("admin listener missing".into()))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| HostError(e.to_string()))?;
    let controller_listener = match controller_addr {
        Some(_) => bound.pop(),
        None => None,
    };
    // bound[l * per_listener] is listener l's bootstrap, then its shard ports.
    let port_of = |l: &StdListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut bootstraps = Vec::with_capacity(config.listeners.len());
    let mut nodes = Vec::with_capacity(config.listeners.len());
    for (li, l) in config.listeners.iter().enumerate() {
        let base = li * per_listener;
        let addr = bound[base]
            .local_addr()
            .map_err(|e| HostError(e.to_string()))?;
        bootstraps.push((l.name.clone(), addr));
        let ports = (0..n)
            .map(|i| match l.advertise_port {
                Some(p) => p.saturating_add(1 + i as u16),
                None => port_of(&bound[base + 1 + i]),
            })
            .collect();
        nodes.push(ListenerMeta {
            name: l.name.clone(),
            host: l.advertise_host.clone(),
            ports,
        });
    }
    let bootstrap_addr = bootstraps[0].1;
    let nodes = Arc::new(nodes);
    let config = Arc::new(config);
    let signals = block_signals();
    // The controller wire's TLS is in place before its thread connects or accepts.
    if config.controller_tls {
        let t = config
            .tls
            .as_ref()
            .ok_or_else(|| HostError("--controller-tls needs --tls-cert and --tls-key".into()))?;
        crate::cluster::rpc::set_tls(crate::cluster::rpc::tls_from(t).map_err(HostError)?);
    }
    // The controller thread starts after the signal mask is set, so it never takes
    // SIGINT/SIGTERM either.
    let (controller_handle, controller_thread) = crate::cluster::start(ControllerOptions {
        node_id: config.node_id as u64,
        voters: config.voters.clone(),
        listener: controller_listener,
        dir: config.data_dir.join("controller").join("raft"),
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        auto_leader_rebalance: config.auto_leader_rebalance_enable,
    })
    .map_err(HostError)?;

    let (events_tx, events_rx) = mpsc::channel();
    let mut ends: Vec<Option<RouterEnds>> = crate::router::mesh(n, ROUTER_CHANNEL_CAPACITY)
        .into_iter()
        .map(Some)
        .collect();
    let mut admin_fd = Some(admin_listener.into_raw_fd());
    let mut handles = Vec::new();
    for (i, cpu) in cpus.iter().enumerate() {
        // Shard i serves its own port of every listener; shard 0 also the bootstraps.
        let mut fds: Vec<(RawFd, usize)> = Vec::new();
        for li in 0..config.listeners.len() {
            let base = li * per_listener;
            let mut take = |idx: usize| -> Result<(), HostError> {
                let fd = bound[idx]
                    .try_clone()
                    .map_err(|e| HostError(e.to_string()))?
                    .into_raw_fd();
                fds.push((fd, li));
                Ok(())
            };
            take(base + 1 + i)?;
            if i == 0 {
                take(base)?;
            }
        }
        let admin = if i == 0 { admin_fd.take() } else { None };
        let ends = ends[i]
            .take()
            .ok_or_else(|| HostError("router ends taken twice".into()))?;
        let config = config.clone();
        let nodes = nodes.clone();
        let events = events_tx.clone();
        let controller = (i == 0).then(|| controller_handle.clone());
        let isolated = controller_handle.isolated();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(*cpu))
            .name(&format!("shard-{i}"))
            .io_memory(io_memory)
            .spin_before_park(runtime::SPIN_BEFORE_PARK)
            .spawn(move || async move {
                let result = shard_main(
                    i,
                    n,
                    config,
                    controller,
                    isolated,
                    nodes,
                    ends,
                    fds,
                    admin,
                    events.clone(),
                )
                .await;
                if let Err(e) = &result {
                    let _ = events.send(ShardEvent::Failed(i, e.clone()));
                }
                result
            })
            .map_err(|e| HostError(format!("cannot start shard {i} on CPU {cpu}: {e}")))?;
        handles.push(handle);
    }
    drop(events_tx);
    drop(bound);

    // Wait for every shard to be ready (or one to fail), watching for signals meanwhile.
    let mut ready = 0;
    let mut failure = None;
    let mut signalled = false;
    while ready < n && failure.is_none() && !signalled {
        match events_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(ShardEvent::Ready) => ready += 1,
            Ok(ShardEvent::Failed(i, e)) => failure = Some(format!("shard {i}: {e}")),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                signalled = poll_signal(&signals, Duration::ZERO)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                failure = Some("shards exited during start-up".into())
            }
        }
    }
    if failure.is_none() && !signalled {
        let ports: Vec<String> = nodes[0].ports.iter().map(|p| p.to_string()).collect();
        let listeners: Vec<String> = bootstraps
            .iter()
            .map(|(name, addr)| format!("{name}={addr}"))
            .collect();
        log::info!(
            "osprey ready: bootstrap {bootstrap_addr}, {n} shards on CPUs {cpus:?}, shard ports [{}], admin http://{admin_addr}/metrics, data dir {}",
            ports.join(", "),
            config.data_dir.display()
        );
        // A machine-readable line on stdout for scripts and tests that use --listen :0:
        // the first listener's bootstrap and shard ports, then every listener's bootstrap.
        println!(
            "osprey ready bootstrap={bootstrap_addr} nodes={} listeners={} admin={admin_addr}",
            ports.join(","),
            listeners.join(",")
        );
        loop {
            if poll_signal(&signals, Duration::from_millis(100)) {
                break;
            }
            match events_rx.try_recv() {
                Ok(ShardEvent::Failed(i, e)) => {
                    failure = Some(format!("shard {i}: {e}"));
                    break;
                }
                Ok(ShardEvent::Ready) | Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
    }
    log::info!("shutting down");
    if failure.is_none() {
        controlled_shutdown(&controller_handle);
    }
    SHUTDOWN.store(true, Ordering::SeqCst);
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(format!("shard {i}: {e}"))),
            Err(e) => failure = failure.or(Some(format!("shard {i} crashed: {e}"))),
        }
    }
    controller_handle.stop();
    if controller_thread.join().is_err() {
        failure = failure.or(Some("the controller thread crashed".into()));
    }
    match failure {
        Some(e) => Err(HostError(e)),
        None => {
            log::info!("osprey stopped cleanly");
            Ok(())
        }
    }
}

/// Longest wait for the controller quorum to move this host's leaderships away at
/// shutdown; past it the host stops anyway and the session timeout does the rest.
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration::from_secs(10);

/// Kafka's controlled shutdown, before the shards stop serving: the quorum fences this
/// host, moving its leaderships to in-sync replicas elsewhere, so clients fail over at
/// once instead of after broker.session.timeout.ms.
fn controlled_shutdown(handle: &ControllerHandle) {
    let (tx, rx) = mpsc::channel();
    let h = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("osprey-shutdown".into())
        .spawn(move || {
            let _ = tx.send(futures_lite::future::block_on(h.controlled_shutdown()));
        });
    if spawned.is_err() {
        return;
    }
    match rx.recv_timeout(CONTROLLED_SHUTDOWN_MAX) {
        Ok(Ok(())) => log::info!("controlled shutdown: leaderships moved off this host"),
        Ok(Err(e)) => log::warn!("controlled shutdown not completed: {e}"),
        Err(_) => log::warn!(
            "controlled shutdown not completed after {CONTROLLED_SHUTDOWN_MAX:?}; stopping anyway"
        ),
    }
}

fn poll_signal(set: &libc::sigset_t, wait: Duration) -> bool {
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    if sig == libc::SIGHUP {
        // Reload TLS material: each shard rebuilds its rustls config from the files at
        // its next TLS connection (one atomic bump; no shard is interrupted).
        crate::tls::TLS_GENERATION.fetch_add(1, Ordering::SeqCst);
        log::info!("SIGHUP: TLS certificates are reloaded from their files");
        false
    } else if sig > 0 {
        log::info!("received signal {sig}");
        true
    } else {
        false
    }
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    id: usize,
    count: usize,
    config: Arc<BrokerConfig>,
    controller: Option<ControllerHandle>,
    isolated: Arc<std::sync::atomic::AtomicBool>,
    nodes: Arc<Vec<ListenerMeta>>,
    ends: RouterEnds,
    listener_fds: Vec<(RawFd, usize)>,
    admin_fd: Option<RawFd>,
    events: mpsc::Sender<ShardEvent>,
) -> Result<(), String> {
    // Take ownership of the fds first so an early error still closes them.
    let listeners: Vec<(TcpListener, usize)> = listener_fds
        .into_iter()
        .map(|(fd, li)| (unsafe { TcpListener::from_raw_fd(fd) }, li))
        .collect();
    let admin_listener = admin_fd.map(|fd| unsafe { TcpListener::from_raw_fd(fd) });
    let (router, receivers) = Router::connect(id, ends).await;
    let store = shards::Store::new(shards::StoreConfig {
        cache_max_bytes: (config.cache_bytes / count).max(16 << 20),
        round_max_bytes: config.write_round_max_bytes,
        round_min_bytes: config.write_round_min_bytes,
        inflight_writes_max: config.inflight_writes_max,
        disk_free_min_bytes: config.disk_free_min_bytes,
        cleaner_backoff_ms: config.log_cleaner_backoff_ms,
        cleaner_io_max_bytes_per_sec: config.log_cleaner_io_max_bytes_per_second,
        ..Default::default()
    });
    // The log cleaner and the key check of compacted topics read compressed batches
    // through the broker's bounded decompressor, and the cleaner compresses cleaned
    // batches again with their codec (the storage has no codecs).
    store.set_decompressor(Rc::new(crate::codec::decompress));
    store.set_compressor(Rc::new(crate::codec::compress));
    let controller = controller.map(|h| Rc::new(Controller::new(h)));
    let tls = crate::shard::tls_acceptors(&config)?;
    let shard = Rc::new(Shard::new(
        id,
        count,
        config.clone(),
        nodes,
        store.clone(),
        router,
        controller,
        isolated,
        tls,
    ));
    for (peer, rx) in receivers {
        glommio::spawn_local(Router::serve_peer(shard.clone(), peer, rx)).detach();
    }
    store.start_background();
    // The admin port serves from here on, before the shards serve clients: /health answers
    // 503 while start-up (e.g. waiting for the controller quorum) is not done.
    let admin_task =
        admin_listener.map(|l| glommio::spawn_local(crate::admin::serve(shard.clone(), l)));
    if id == 0 {
        // Registers this host with the controller quorum and applies the metadata on every
        // shard (opening each partition on its owner: recovery) before any shard accepts
        // clients.
        shard.controller().start(&shard).await?;
    }
    shard.wait_meta_applied().await;
    shard.groups.start(&shard).await;
    shard.txns.start(&shard);
    glommio::spawn_local(crate::replication::maintain_isr(shard.clone())).detach();
    glommio::spawn_local(shard.clone().reopen_partitions()).detach();
    let mut accept_tasks = Vec::new();
    for (l, li) in listeners {
        accept_tasks.push(glommio::spawn_local(accept_loop(shard.clone(), l, li)));
    }
    accept_tasks.extend(admin_task);
    let _ = events.send(ShardEvent::Ready);

    while !SHUTDOWN.load(Ordering::SeqCst) {
        glommio::timer::sleep(SHUTDOWN_POLL_INTERVAL).await;
    }
    shard.shutting_down.set(true);
    shard.shutdown.notify_all();
    shard.fetchers.stop_all();
    for t in accept_tasks {
        t.await;
    }
    let deadline = Instant::now() + SHUTDOWN_DRAIN_MAX;
    while shard.connections.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if shard.connections.get() > 0 {
        log::warn!(
            "shard {id}: {} connections still busy after {SHUTDOWN_DRAIN_MAX:?}; closing anyway",
            shard.connections.get()
        );
    }
    let closed = store.close_all().await;
    shard.router.close();
    closed.map_err(|e| format!("closing logs: {e}"))
}

/// Accepts the connections of one listening socket of listener `listener` (an index into
/// `BrokerConfig::listeners`).
async fn accept_loop(shard: Rc<Shard>, socket: TcpListener, listener: usize) {
    loop {
        let accepted = futures_lite::future::or(async { Some(socket.accept().await) }, async {
            shard.shutdown.notified().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        if shard.shutting_down.get() {
            return;
        }
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                log::warn!("shard {}: accept failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        if shard.connections.get() >= shard.config.connections_max {
            log::warn!(
                "shard {}: refusing connection from {peer}: {} connections is the limit (connections-max)",
                shard.id,
                shard.config.connections_max
            );
            crate::metrics::add(&shard.metrics.connections_refused, 1);
            continue;
        }
        crate::metrics::add(&shard.metrics.connections_accepted, 1);
        shard.connections.set(shard.connections.get() + 1);
        let s = shard.clone();
        glommio::spawn_local(async move {
            crate::connection::serve(s.clone(), stream, peer, listener).await;
            s.connections.set(s.connections.get() - 1);
        })
        .detach();
    }
}

/// Default data directory relative to the working directory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("osprey-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock() -> (tempfile::TempDir, DataDirLock) {
        let dir = tempfile::tempdir().unwrap();
        let lock = lock_data_dir(dir.path()).unwrap();
        (dir, lock)
    }

    // The listeners never set SO_REUSEPORT, so a second broker cannot share a live
    // broker's port: its bind fails (after the retry window) instead.
    #[test]
    fn a_live_listener_keeps_its_port() {
        let (_dir, lock) = lock();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = bind_listeners(&lock, &[any], Duration::ZERO).unwrap();
        let addr = first[0].local_addr().unwrap();
        let sock = socket2::SockRef::from(&first[0]);
        assert!(!sock.reuse_port().unwrap());
        assert!(sock.reuse_address().unwrap());
        let t = Instant::now();
        let err = bind_listeners(&lock, &[addr], Duration::from_millis(200))
            .expect_err("a second bind on a live listener's port fails");
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(err.0.contains("still in use after"), "{err}");
    }

    // A port that is freed while start-up waits is bound as soon as it is free, and the
    // ports after it within the same deadline.
    #[test]
    fn bind_waits_for_a_port_being_released() {
        let (_dir, lock) = lock();
        let held = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let bound = bind_listeners(&lock, &[addr, any], Duration::from_secs(10)).unwrap();
        assert_eq!(bound[0].local_addr().unwrap(), addr);
        assert_eq!(bound.len(), 2);
        releaser.join().unwrap();
    }
}
