//! Worker threads: each runs one glommio executor, pinned to its CPU (core_affinity), with
//! its own `Client` and the producers and consumers assigned to it. Stats are recorded per
//! thread and shipped to the main thread once per second over a std channel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};
use osprey_client::{
    Acks, Client, ClientConfig, Compression, FetchOptions, FetchPosition, OffsetSpec,
    ProducerRecord, Security, decode_records, encode_batch,
};

use crate::pacing::{Pacer, next_wake_ns, sleep_until, yield_to_reactor};
use crate::stats::{Stats, record_ns};
use crate::workload::{KeyDistribution, Workload};

/// How long consumers keep reading after the producers stopped, at most.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Messages generated per producer loop turn before yielding.
const GENERATE_CHUNK: u64 = 1024;
/// Distinct error texts kept per thread; more are counted under "other".
const ERROR_KINDS_MAX: usize = 32;
/// Each executor's io_uring registered memory (glommio-notes: fits the default memlock).
const IO_MEMORY_BYTES: usize = 1 << 20;

/// One producer's assignment.
#[derive(Debug, Clone)]
pub struct ProducerPlan {
    /// Global producer index.
    pub id: u32,
    /// Topic it writes.
    pub topic: String,
    /// Partition count of the topic.
    pub partitions: u32,
    /// Its share of the rate, msg/s (0 = unpaced).
    pub rate: f64,
}

/// One consumer's assignment.
#[derive(Debug, Clone)]
pub struct ConsumerPlan {
    /// Global consumer index.
    pub id: u32,
    /// Topic it reads.
    pub topic: String,
    /// Partitions assigned to it (in a group: all of the topic's, the group assigns).
    pub partitions: Vec<i32>,
    /// The consumer group it is a member of, if the workload uses groups.
    pub group: Option<Arc<GroupPlan>>,
}

/// One consumer group (one subscription).
#[derive(Debug)]
pub struct GroupPlan {
    /// Group id.
    pub id: String,
    /// Members not yet done draining; members leave only when it reaches 0, so the end of
    /// the run causes no rebalance.
    pub draining: AtomicU32,
}

/// What one worker thread runs.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    /// Thread index.
    pub index: usize,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Producers.
    pub producers: Vec<ProducerPlan>,
    /// Consumers.
    pub consumers: Vec<ConsumerPlan>,
}

/// State shared by the main thread and all workers.
pub struct SharedRun {
    /// Setup done by everyone (workers + main).
    pub ready: Barrier,
    /// Start time published by main between the two barriers.
    pub go: Barrier,
    /// (monotonic start, wall-clock ns at start).
    pub start: OnceLock<(Instant, u64)>,
    /// Producers still running, over all threads.
    pub producers_running: AtomicU32,
}

/// Messages from workers to main.
pub enum Report {
    /// One second of stats, ending at run-relative `tick_end_ns`.
    Interval {
        /// Thread index.
        thread: usize,
        /// End of the interval, ns since start.
        tick_end_ns: u64,
        /// The interval's stats.
        stats: Box<Stats>,
        /// CPU time the thread used in the interval, ns (`getrusage(RUSAGE_THREAD)`).
        cpu_ns: u64,
        /// Time the thread waited for a CPU in the interval, ns (run queue).
        wait_ns: u64,
        /// Wall time the interval spanned on the thread, ns.
        span_ns: u64,
    },
    /// The thread finished; `stats` holds the rest since the last interval.
    Done {
        /// Thread index.
        thread: usize,
        /// Remaining stats.
        stats: Box<Stats>,
    },
    /// The thread could not set up or run.
    Failed {
        /// Thread index.
        thread: usize,
        /// Why.
        error: String,
    },
}

#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    wall_ns: u64,
}

impl Clock {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

struct Params {
    message_size: usize,
    acks: Acks,
    compression: Compression,
    linger_ns: u64,
    batch_size_bytes: usize,
    buffer_bytes: usize,
    keys: KeyDistribution,
    fetch: FetchOptions,
    end_ns: u64,
    filler: Bytes,
    request_timeout_ms: i32,
    in_flight: usize,
}

/// Spawns a worker thread. It always reaches both barriers, even when its setup fails, so a
/// failure cannot hang the run.
pub fn spawn(
    plan: ThreadPlan,
    bootstrap: String,
    security: Security,
    workload: Workload,
    shared: Arc<SharedRun>,
    tx: Sender<Report>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("loadgen-{}", plan.index))
        .spawn(move || {
            if let Some(cpu) = plan.cpu
                && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
            {
                log::warn!("could not pin thread {} to cpu {cpu}", plan.index);
            }
            let index = plan.index;
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(IO_MEMORY_BYTES)
                .spin_before_park(Duration::from_micros(50))
                .name(&format!("loadgen-{index}"))
                .make();
            match ex {
                Ok(ex) => ex.run(thread_main(plan, bootstrap, security, workload, shared, tx)),
                Err(e) => {
                    let _ = tx.send(Report::Failed {
                        thread: index,
                        error: format!("executor: {e}"),
                    });
                    shared.ready.wait();
                    shared.go.wait();
                }
            }
        })
}

fn filler_bytes(n: usize) -> Bytes {
    // Pseudo-random so compression has no unrealistic advantage (OMB uses a random payload).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut b = BytesMut::with_capacity(n);
    while b.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.put_u8((x & 0xff) as u8);
    }
    b.freeze()
}

async fn thread_main(
    plan: ThreadPlan,
    bootstrap: String,
    security: Security,
    w: Workload,
    shared: Arc<SharedRun>,
    tx: Sender<Report>,
) {
    let cfg = ClientConfig {
        client_id: format!("loadgen-{}", plan.index),
        in_flight_max: w.in_flight_max,
        security,
        ..ClientConfig::default()
    };
    // Producers of this thread share one client; each consumer has its own, because a broker
    // serves the requests of one connection in order and a consumer's long-poll Fetch would
    // otherwise hold up the producers' Produce requests queued behind it.
    let setup = async {
        let client = Client::connect(&bootstrap, cfg.clone()).await?;
        let mut consumers = Vec::new();
        for c in &plan.consumers {
            let cc = Client::connect(&bootstrap, cfg.clone()).await?;
            let offs = cc
                .list_offsets(&c.topic, &c.partitions, OffsetSpec::Latest)
                .await?;
            let mut pos = Vec::new();
            for o in offs {
                pos.push(FetchPosition {
                    topic: c.topic.clone(),
                    partition: o.partition,
                    offset: o.offset?,
                });
            }
            let gc = match &c.group {
                Some(_) => Some(Client::connect(&bootstrap, cfg.clone()).await?),
                None => None,
            };
            consumers.push((cc, pos, gc));
        }
        // Warm the connections to every leader before the clock starts.
        for p in &plan.producers {
            for part in 0..p.partitions as i32 {
                let l = client.leader_for(&p.topic, part).await?;
                client.node_connection(l).await?;
            }
        }
        Ok::<_, osprey_client::ClientError>((client, consumers))
    }
    .await;
    shared.ready.wait();
    shared.go.wait();
    let (client, positions) = match setup {
        Ok(x) => x,
        Err(e) => {
            shared
                .producers_running
                .fetch_sub(plan.producers.len() as u32, Ordering::SeqCst);
            let _ = tx.send(Report::Failed {
                thread: plan.index,
                error: format!("setup: {e}"),
            });
            return;
        }
    };
    let Some(&(start, wall_ns)) = shared.start.get() else {
        let _ = tx.send(Report::Failed {
            thread: plan.index,
            error: "no start time".into(),
        });
        return;
    };
    let clock = Clock { start, wall_ns };
    let params = Rc::new(Params {
        message_size: w.message_size,
        acks: Acks::parse(&w.acks).unwrap_or(Acks::Leader),
        compression: osprey_client::parse_compression(&w.compression).unwrap_or(Compression::None),
        linger_ns: (w.linger_ms * 1e6) as u64,
        batch_size_bytes: w.batch_size_bytes,
        buffer_bytes: w.producer_buffer_bytes,
        keys: w.key_distributor,
        fetch: FetchOptions {
            max_wait_ms: w.fetch_max_wait_ms,
            min_bytes: 1,
            ..FetchOptions::default()
        },
        end_ns: ((w.warmup_duration_s + w.test_duration_s) * 1e9) as u64,
        filler: filler_bytes(w.message_size),
        request_timeout_ms: 30_000,
        in_flight: w.in_flight_max.max(1),
    });
    let client = Rc::new(client);
    let stats = Rc::new(RefCell::new(Stats::default()));
    let running = Rc::new(Cell::new(plan.producers.len() + plan.consumers.len()));
    let mut tasks = Vec::new();
    for p in plan.producers.clone() {
        let (client, stats, params, running, shared) = (
            client.clone(),
            stats.clone(),
            params.clone(),
            running.clone(),
            shared.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            producer(&client, &p, &params, &stats, clock).await;
            shared.producers_running.fetch_sub(1, Ordering::SeqCst);
            running.set(running.get() - 1);
        }));
    }
    for (c, (cclient, pos, gclient)) in plan.consumers.clone().into_iter().zip(positions) {
        let (client, stats, params, running, shared) = (
            Rc::new(cclient),
            stats.clone(),
            params.clone(),
            running.clone(),
            shared.clone(),
        );
        tasks.push(glommio::spawn_local(async move {
            match gclient {
                Some(g) => {
                    group_consumer(
                        &client,
                        Rc::new(g),
                        &c,
                        pos,
                        &params,
                        &stats,
                        clock,
                        &shared,
                    )
                    .await
                }
                None => consumer(&client, &c, pos, &params, &stats, clock, &shared).await,
            }
            running.set(running.get() - 1);
        }));
    }
    // The reporter: one interval per second, aligned to the run start, with the thread's
    // own CPU time in it (the thread is busy only while its actors run).
    let mut tick = 1u64;
    let mut cpu_last = crate::cpu::thread_cpu_ns();
    let mut wait_last = crate::cpu::thread_run_delay_ns();
    let mut at_last = clock.now_ns();
    while running.get() > 0 {
        let due = tick * 1_000_000_000;
        let now = clock.now_ns();
        if now < due {
            // Short sleeps so the thread notices its actors finishing.
            glommio::timer::sleep(Duration::from_nanos((due - now).min(50_000_000))).await;
            continue;
        }
        let s = stats.borrow_mut().take();
        let (cpu, wait, at) = (
            crate::cpu::thread_cpu_ns(),
            crate::cpu::thread_run_delay_ns(),
            clock.now_ns(),
        );
        let _ = tx.send(Report::Interval {
            thread: plan.index,
            tick_end_ns: due,
            stats: Box::new(s),
            cpu_ns: cpu.saturating_sub(cpu_last),
            wait_ns: wait.saturating_sub(wait_last),
            span_ns: at.saturating_sub(at_last),
        });
        (cpu_last, wait_last, at_last) = (cpu, wait, at);
        tick += 1;
    }
    for t in tasks {
        t.await;
    }
    let s = stats.borrow_mut().take();
    let _ = tx.send(Report::Done {
        thread: plan.index,
        stats: Box::new(s),
    });
}

fn note_error(stats: &RefCell<Stats>, e: &dyn std::fmt::Display, n: u64, publish: bool) {
    let mut s = stats.borrow_mut();
    let mut text = e.to_string();
    if s.error_kinds.len() >= ERROR_KINDS_MAX && !s.error_kinds.contains_key(&text) {
        text = "other".into();
    }
    s.error(&text, n, publish);
}

/// One message waiting in a batch: (intended ns, handed-to-client ns).
type Meta = (u64, u64);

#[derive(Default)]
struct Acc {
    metas: Vec<Meta>,
    keys: Vec<Option<Bytes>>,
}

struct Xorshift(u64);
impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn producer(
    client: &Rc<Client>,
    plan: &ProducerPlan,
    params: &Rc<Params>,
    stats: &Rc<RefCell<Stats>>,
    clock: Clock,
) {
    let pacer = Pacer::new(plan.rate, 0);
    let parts = plan.partitions.max(1) as usize;
    let budget = Rc::new(Semaphore::new(params.buffer_bytes as u64));
    let size = params.message_size;
    let mut accs: Vec<Acc> = (0..parts).map(|_| Acc::default()).collect();
    let mut sticky = plan.id as usize % parts;
    let mut rr = plan.id as usize % parts;
    let mut rng =
        Xorshift(0x2545_F491_4F6C_DD1D ^ (u64::from(plan.id) + 1).wrapping_mul(0x9E37_79B9));
    let mut i = 0u64;
    let per_batch = (params.batch_size_bytes / size).max(1);
    let (ready_tx, ready_rx) = local_channel::new_unbounded();
    let sender = glommio::spawn_local(sender(
        client.clone(),
        plan.topic.clone(),
        params.clone(),
        stats.clone(),
        budget.clone(),
        clock,
        ready_rx,
    ));
    let flush = |p: usize, acc: &mut Acc| {
        if acc.metas.is_empty() {
            return;
        }
        let metas = std::mem::take(&mut acc.metas);
        let keys = std::mem::take(&mut acc.keys);
        let ready = encode_ready(plan, params, stats, clock, p as i32, metas, keys);
        if ready_tx.try_send(ready).is_err() {
            log::warn!("producer {}: sender stopped", plan.id);
        }
    };
    'run: loop {
        let now = clock.now_ns();
        let due = pacer.due_count(now);
        let mut made = 0u64;
        while i < due && made < GENERATE_CHUNK {
            let intended = pacer.intended_ns(i).unwrap_or_else(|| clock.now_ns());
            if intended >= params.end_ns {
                break 'run;
            }
            if !budget.try_acquire(size as u64).unwrap_or(false) {
                // The buffer is full: push out what is waiting, then block like Kafka's
                // send() does; the time blocked shows up as publish delay.
                for (p, acc) in accs.iter_mut().enumerate() {
                    flush(p, acc);
                }
                if budget.acquire(size as u64).await.is_err() {
                    break 'run;
                }
            }
            let sent = clock.now_ns();
            let (p, key) = match params.keys {
                KeyDistribution::NoKey => (sticky, None),
                KeyDistribution::RandomNano => {
                    let k = rng.next();
                    (
                        (k % parts as u64) as usize,
                        Some(Bytes::copy_from_slice(&k.to_be_bytes())),
                    )
                }
                KeyDistribution::KeyRoundRobin => {
                    rr = (rr + 1) % parts;
                    (rr, Some(Bytes::copy_from_slice(&(rr as u64).to_be_bytes())))
                }
            };
            accs[p].metas.push((intended, sent));
            accs[p].keys.push(key);
            if accs[p].metas.len() >= per_batch {
                flush(p, &mut accs[p]);
                if p == sticky {
                    sticky = (sticky + 1) % parts;
                }
            }
            i += 1;
            made += 1;
        }
        if made >= GENERATE_CHUNK {
            // Behind schedule (or unpaced): let the reactor send and receive, then go on.
            yield_to_reactor().await;
            continue;
        }
        // Every message due by `now` exists now; stop only after that, so the count of
        // messages is exactly rate x duration.
        if now >= params.end_ns {
            break;
        }
        // Linger: a batch goes out when its first message has waited linger_ns.
        let now = clock.now_ns();
        let mut linger_deadline: Option<u64> = None;
        for (p, acc) in accs.iter_mut().enumerate() {
            if let Some(&(_, first_sent)) = acc.metas.first() {
                let deadline = first_sent + params.linger_ns;
                if now >= deadline {
                    flush(p, acc);
                    if p == sticky {
                        sticky = (sticky + 1) % parts;
                    }
                } else {
                    linger_deadline = Some(linger_deadline.map_or(deadline, |d| d.min(deadline)));
                }
            }
        }
        match pacer.intended_ns(i) {
            // Sleep on the timer, never busy-yield (see `pacing`): the executor's reactor
            // must run while the producer waits, or batches and acks wait with it.
            Some(next) => {
                let now = clock.now_ns();
                sleep_until(now, next_wake_ns(now, next, linger_deadline, params.end_ns)).await;
            }
            // Unpaced: go on once the reactor has run, while the buffer has room.
            None => yield_to_reactor().await,
        }
    }
    for (p, acc) in accs.iter_mut().enumerate() {
        flush(p, acc);
    }
    drop(ready_tx);
    sender.await;
    // Wait for every outstanding batch to be answered (bounded: requests time out).
    let deadline = clock.now_ns() + DRAIN_TIMEOUT.as_nanos() as u64;
    while budget.available() < params.buffer_bytes as u64 && clock.now_ns() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// One partition's encoded batch, waiting for the sender.
struct Ready {
    partition: i32,
    metas: Vec<Meta>,
    batch: osprey_client::Result<Bytes>,
}

/// Builds and encodes one partition's batch.
fn encode_ready(
    plan: &ProducerPlan,
    params: &Params,
    stats: &RefCell<Stats>,
    clock: Clock,
    partition: i32,
    metas: Vec<Meta>,
    keys: Vec<Option<Bytes>>,
) -> Ready {
    let size = params.message_size;
    let n = metas.len();
    // One allocation for all values of the batch; each value starts with the wall-clock
    // nanosecond intended send time (end-to-end latency), then producer id and sequence.
    let mut values = BytesMut::with_capacity(n * size);
    for (seq, (intended, _)) in metas.iter().enumerate() {
        values.put_u64(clock.wall_ns + intended);
        values.put_u32(plan.id);
        values.put_u32(seq as u32);
        values.extend_from_slice(&params.filler[..size - 16]);
    }
    let mut values = values.freeze();
    let records: Vec<ProducerRecord> = keys
        .into_iter()
        .map(|key| ProducerRecord {
            key,
            value: Some(values.split_to(size)),
            headers: Vec::new(),
        })
        .collect();
    stats.borrow_mut().sent += n as u64;
    let ts_ms = ((clock.wall_ns + clock.now_ns()) / 1_000_000) as i64;
    Ready {
        partition,
        metas,
        batch: encode_batch(&records, params.compression, ts_ms),
    }
}

/// A producer's sender, like Kafka's Sender thread: it keeps at most `inFlight` Produce
/// requests outstanding, and when one may go it takes every batch that became ready
/// meanwhile, one per partition, into that one request (the rest wait for the next). A
/// request per batch would let `inFlight` cap one producer at `inFlight` batches per round
/// trip, whatever its rate.
async fn sender(
    client: Rc<Client>,
    topic: String,
    params: Rc<Params>,
    stats: Rc<RefCell<Stats>>,
    budget: Rc<Semaphore>,
    clock: Clock,
    ready: LocalReceiver<Ready>,
) {
    let window = Rc::new(Semaphore::new(params.in_flight as u64));
    let mut carry: std::collections::VecDeque<Ready> = std::collections::VecDeque::new();
    let mut open = true;
    loop {
        let first = match carry.pop_front() {
            Some(r) => r,
            None if open => match ready.recv().await {
                Some(r) => r,
                None => break,
            },
            None => break,
        };
        let Ok(permit) = window.acquire_static_permit(1).await else {
            break;
        };
        // Everything that became ready while waiting for the window goes along.
        let mut group = vec![first];
        while open {
            match futures_lite::future::poll_once(ready.recv()).await {
                Some(Some(r)) => {
                    if group.iter().any(|g| g.partition == r.partition) {
                        carry.push_back(r);
                    } else {
                        group.push(r);
                    }
                }
                Some(None) => open = false,
                None => break,
            }
        }
        let (client, topic, params, stats, budget) = (
            client.clone(),
            topic.clone(),
            params.clone(),
            stats.clone(),
            budget.clone(),
        );
        glommio::spawn_local(async move {
            send_group(&client, &topic, &params, &stats, &budget, clock, group).await;
            drop(permit);
        })
        .detach();
    }
    // Wait for the outstanding requests.
    let _ = window.acquire(params.in_flight as u64).await;
}

async fn send_group(
    client: &Client,
    topic: &str,
    params: &Params,
    stats: &RefCell<Stats>,
    budget: &Semaphore,
    clock: Clock,
    group: Vec<Ready>,
) {
    let size = params.message_size;
    let mut batches = Vec::with_capacity(group.len());
    let mut metas = Vec::with_capacity(group.len());
    for r in group {
        let n = r.metas.len();
        match r.batch {
            Ok(b) => {
                batches.push((r.partition, b));
                metas.push((r.partition, r.metas));
            }
            Err(e) => {
                note_error(stats, &e, n as u64, true);
                budget.signal((n * size) as u64);
            }
        }
    }
    if batches.is_empty() {
        return;
    }
    let res = client
        .produce_partitions(topic, batches, params.acks, params.request_timeout_ms)
        .await;
    let ack = clock.now_ns();
    for (partition, ms) in metas {
        let n = ms.len();
        let r = match &res {
            Ok(rs) => rs
                .iter()
                .find(|(p, _)| *p == partition)
                .map(|(_, r)| r.clone().map(|_| ()))
                .unwrap_or_else(|| {
                    Err(osprey_client::ClientError::Protocol(format!(
                        "no produce outcome for {topic}/{partition}"
                    )))
                }),
            Err(e) => Err(e.clone()),
        };
        match r {
            Ok(()) => {
                let mut s = stats.borrow_mut();
                for (intended, sent) in &ms {
                    record_ns(&mut s.publish, ack.saturating_sub(*intended));
                    record_ns(&mut s.publish_delay, sent.saturating_sub(*intended));
                }
                s.acked += n as u64;
                s.acked_bytes += (n * size) as u64;
            }
            Err(e) => note_error(stats, &e, n as u64, true),
        }
        budget.signal((n * size) as u64);
    }
}

async fn consumer(
    client: &Rc<Client>,
    plan: &ConsumerPlan,
    mut positions: Vec<FetchPosition>,
    params: &Rc<Params>,
    stats: &Rc<RefCell<Stats>>,
    clock: Clock,
    shared: &SharedRun,
) {
    let mut ends: Option<Vec<i64>> = None;
    let mut drain_deadline = u64::MAX;
    loop {
        if ends.is_none() && shared.producers_running.load(Ordering::SeqCst) == 0 {
            match client
                .list_offsets(&plan.topic, &plan.partitions, OffsetSpec::Latest)
                .await
            {
                Ok(offs) => {
                    let mut e = Vec::new();
                    for pos in &positions {
                        let end = offs
                            .iter()
                            .find(|o| o.partition == pos.partition)
                            .and_then(|o| o.offset.clone().ok())
                            .unwrap_or(pos.offset);
                        e.push(end);
                    }
                    ends = Some(e);
                }
                Err(e) => {
                    note_error(stats, &e, 1, false);
                    ends = Some(positions.iter().map(|p| p.offset).collect());
                }
            }
            drain_deadline = clock.now_ns() + DRAIN_TIMEOUT.as_nanos() as u64;
        }
        if let Some(e) = &ends {
            if positions.iter().zip(e).all(|(p, end)| p.offset >= *end) {
                break;
            }
            if clock.now_ns() > drain_deadline {
                let missing: i64 = positions
                    .iter()
                    .zip(e)
                    .map(|(p, end)| (end - p.offset).max(0))
                    .sum();
                note_error(
                    stats,
                    &format!("drain timeout: {missing} messages not consumed"),
                    missing as u64,
                    false,
                );
                break;
            }
        }
        fetch_once(client, &mut positions, params, stats, &clock).await;
    }
}

/// One Fetch for `positions`: counts what arrived and advances the positions; errors are
/// counted (and briefly backed off from), never hidden. Returns the records absorbed.
async fn fetch_once(
    client: &Rc<Client>,
    positions: &mut [FetchPosition],
    params: &Rc<Params>,
    stats: &RefCell<Stats>,
    clock: &Clock,
) -> u64 {
    match client.fetch(positions, &params.fetch).await {
        Ok(parts) => {
            let now_wall = clock.wall_ns + clock.now_ns();
            let mut got = 0;
            for part in parts {
                if let Err(e) = &part.error {
                    note_error(stats, e, 1, false);
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                let Some(pos) = positions
                    .iter_mut()
                    .find(|p| p.partition == part.partition && p.topic == part.topic)
                else {
                    continue;
                };
                got += absorb(stats, pos, part.records, now_wall);
            }
            got
        }
        Err(e) => {
            note_error(stats, &e, 1, false);
            glommio::timer::sleep(Duration::from_millis(100)).await;
            0
        }
    }
}

/// Counts the records of one fetched partition from `pos` on and advances `pos`; returns
/// how many were new.
fn absorb(stats: &RefCell<Stats>, pos: &mut FetchPosition, records: Bytes, now_wall: u64) -> u64 {
    match decode_records(records) {
        Ok(recs) => {
            let mut s = stats.borrow_mut();
            let mut n = 0;
            for r in recs {
                // A batch may start before the requested offset.
                if r.offset < pos.offset {
                    continue;
                }
                pos.offset = r.offset + 1;
                n += 1;
                let v = r.value.as_deref().unwrap_or(&[]);
                s.consumed += 1;
                s.consumed_bytes += v.len() as u64;
                if v.len() >= 8 {
                    let ts = u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8]));
                    record_ns(&mut s.end_to_end, now_wall.saturating_sub(ts));
                }
            }
            n
        }
        Err(e) => {
            note_error(stats, &e, 1, false);
            0
        }
    }
}

/// Group session timeout: the coordinator drops a member silent this long.
const GROUP_SESSION_TIMEOUT_MS: i32 = 10_000;
/// How long the coordinator waits for members to rejoin in a rebalance.
const GROUP_REBALANCE_TIMEOUT_MS: i32 = 10_000;
/// Heartbeat period.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Asynchronous commits in flight per member; a poll finding this many skips its commit
/// (the next one carries the newer offsets anyway).
const COMMITS_IN_FLIGHT_MAX: usize = 4;
/// How long a member keeps trying to join before it gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// A member's state shared with its heartbeat and commit tasks.
struct Membership {
    group: String,
    member_id: RefCell<String>,
    generation: Cell<i32>,
    /// Joined and synced: heartbeats and commits are valid.
    stable: Cell<bool>,
    /// A heartbeat or commit said the group rebalances (or forgot us): rejoin.
    rejoin: Cell<bool>,
    stop: Cell<bool>,
    commits_in_flight: Cell<usize>,
}

fn needs_rejoin(e: &osprey_client::ClientError) -> bool {
    use osprey_client::group::codes;
    matches!(
        e.kafka_code(),
        Some(codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION | codes::UNKNOWN_MEMBER_ID)
    )
}

fn on_group_error(m: &Membership, e: &osprey_client::ClientError) {
    if needs_rejoin(e) {
        if e.kafka_code() == Some(osprey_client::group::codes::UNKNOWN_MEMBER_ID) {
            m.member_id.borrow_mut().clear();
        }
        m.rejoin.set(true);
    }
}

fn offsets_of(positions: &[FetchPosition]) -> Vec<(String, i32, i64)> {
    positions
        .iter()
        .map(|p| (p.topic.clone(), p.partition, p.offset))
        .collect()
}

/// commitAsync: fires an OffsetCommit without waiting for it (bounded in flight).
fn commit_async(
    g: &Rc<Client>,
    m: &Rc<Membership>,
    stats: &Rc<RefCell<Stats>>,
    offsets: Vec<(String, i32, i64)>,
) {
    if m.commits_in_flight.get() >= COMMITS_IN_FLIGHT_MAX || offsets.is_empty() {
        return;
    }
    m.commits_in_flight.set(m.commits_in_flight.get() + 1);
    let (g, m, stats) = (g.clone(), m.clone(), stats.clone());
    glommio::spawn_local(async move {
        let generation = m.generation.get();
        let member = m.member_id.borrow().clone();
        let r = g
            .offset_commit(&m.group, generation, &member, &offsets)
            .await;
        record_commit(&m, &stats, r);
        m.commits_in_flight.set(m.commits_in_flight.get() - 1);
    })
    .detach();
}

fn record_commit(m: &Membership, stats: &RefCell<Stats>, r: osprey_client::Result<()>) {
    match r {
        Ok(()) => stats.borrow_mut().commits += 1,
        Err(e) => {
            on_group_error(m, &e);
            stats.borrow_mut().commit_errors += 1;
            note_error(stats, &format!("commit: {e}"), 1, false);
        }
    }
}

/// commitSync after waiting for the asynchronous ones (before a rejoin and at the end).
async fn commit_sync(
    g: &Client,
    m: &Membership,
    stats: &RefCell<Stats>,
    positions: &[FetchPosition],
) {
    let deadline = Instant::now() + Duration::from_secs(35);
    while m.commits_in_flight.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    if positions.is_empty() {
        return;
    }
    let member = m.member_id.borrow().clone();
    let r = g
        .offset_commit(
            &m.group,
            m.generation.get(),
            &member,
            &offsets_of(positions),
        )
        .await;
    record_commit(m, stats, r);
}

/// Joins (or rejoins) the group and returns this member's partitions of `plan.topic`. The
/// leader computes a range assignment over the topic's partitions.
async fn join_and_sync(
    g: &Client,
    m: &Membership,
    plan: &ConsumerPlan,
) -> osprey_client::Result<Vec<i32>> {
    use osprey_client::group::codes;
    use osprey_client::{
        CONSUMER_PROTOCOL_TYPE, RANGE_ASSIGNOR, decode_assignment, decode_subscription,
        encode_assignment, encode_subscription, range_assign,
    };
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let meta = encode_subscription(std::slice::from_ref(&plan.topic))?;
    let protocols = [(RANGE_ASSIGNOR.to_string(), meta)];
    loop {
        let member = m.member_id.borrow().clone();
        let res = async {
            let j = g
                .join_group(
                    &m.group,
                    &member,
                    GROUP_SESSION_TIMEOUT_MS,
                    GROUP_REBALANCE_TIMEOUT_MS,
                    CONSUMER_PROTOCOL_TYPE,
                    &protocols,
                )
                .await?;
            *m.member_id.borrow_mut() = j.member_id.clone();
            let mut assignments = Vec::new();
            if j.is_leader() {
                let members: Vec<(String, Vec<String>)> = j
                    .members
                    .iter()
                    .map(|x| {
                        (
                            x.member_id.clone(),
                            decode_subscription(x.metadata.clone()).unwrap_or_default(),
                        )
                    })
                    .collect();
                let parts = std::collections::BTreeMap::from([(
                    plan.topic.clone(),
                    plan.partitions.len() as i32,
                )]);
                for (mid, a) in range_assign(&members, &parts) {
                    assignments.push((mid, encode_assignment(&a)?));
                }
            }
            let proto = j
                .protocol_name
                .clone()
                .unwrap_or_else(|| RANGE_ASSIGNOR.to_string());
            let a = g
                .sync_group(
                    &m.group,
                    j.generation,
                    &j.member_id,
                    CONSUMER_PROTOCOL_TYPE,
                    &proto,
                    &assignments,
                )
                .await?;
            let mine = decode_assignment(a)?;
            Ok::<_, osprey_client::ClientError>((
                j.generation,
                mine.get(&plan.topic).cloned().unwrap_or_default(),
            ))
        }
        .await;
        match res {
            Ok((generation, parts)) => {
                m.generation.set(generation);
                return Ok(parts);
            }
            Err(e) if Instant::now() < deadline => match e.kafka_code() {
                Some(codes::UNKNOWN_MEMBER_ID) => m.member_id.borrow_mut().clear(),
                Some(codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION) => {}
                Some(
                    codes::COORDINATOR_LOAD_IN_PROGRESS
                    | codes::COORDINATOR_NOT_AVAILABLE
                    | codes::NOT_COORDINATOR,
                ) => glommio::timer::sleep(Duration::from_millis(100)).await,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// A consumer-group member: join, range assignment by the leader, fetch from the committed
/// offset (else the end offset listed at setup), heartbeat every second, commit after every
/// poll (asynchronously, bounded), commit synchronously before rejoining and at the end,
/// then leave once every member of the group has drained.
#[allow(clippy::too_many_arguments)]
async fn group_consumer(
    client: &Rc<Client>,
    g: Rc<Client>,
    plan: &ConsumerPlan,
    start: Vec<FetchPosition>,
    params: &Rc<Params>,
    stats: &Rc<RefCell<Stats>>,
    clock: Clock,
    shared: &SharedRun,
) {
    let Some(gp) = plan.group.clone() else {
        return;
    };
    let m = Rc::new(Membership {
        group: gp.id.clone(),
        member_id: RefCell::new(String::new()),
        generation: Cell::new(-1),
        stable: Cell::new(false),
        rejoin: Cell::new(false),
        stop: Cell::new(false),
        commits_in_flight: Cell::new(0),
    });
    let hb = {
        let (g, m, stats) = (g.clone(), m.clone(), stats.clone());
        glommio::spawn_local(async move {
            let mut last = Instant::now();
            while !m.stop.get() {
                // Short naps so the task ends soon after the member stops.
                glommio::timer::sleep(Duration::from_millis(100)).await;
                if last.elapsed() < HEARTBEAT_INTERVAL {
                    continue;
                }
                last = Instant::now();
                if m.stop.get() || !m.stable.get() || m.rejoin.get() {
                    continue;
                }
                let member = m.member_id.borrow().clone();
                if let Err(e) = g.heartbeat(&m.group, m.generation.get(), &member).await {
                    if needs_rejoin(&e) {
                        on_group_error(&m, &e);
                    } else {
                        note_error(&stats, &format!("heartbeat: {e}"), 1, false);
                    }
                }
            }
        })
    };
    let mut joined_once = false;
    let mut positions: Vec<FetchPosition> = Vec::new();
    let mut ends: Option<Vec<FetchPosition>> = None;
    let mut drain_deadline = u64::MAX;
    let mut done_counted = false;
    loop {
        if !m.stable.get() || m.rejoin.get() {
            // An UNKNOWN_MEMBER_ID answer cleared the id: such a commit could only fail.
            if m.stable.get() && !m.member_id.borrow().is_empty() {
                commit_sync(&g, &m, stats, &positions).await;
            }
            m.stable.set(false);
            m.rejoin.set(false);
            let parts = match join_and_sync(&g, &m, plan).await {
                Ok(p) => p,
                Err(e) => {
                    note_error(stats, &format!("join group: {e}"), 1, false);
                    break;
                }
            };
            if joined_once {
                stats.borrow_mut().rebalances += 1;
            }
            joined_once = true;
            let committed = if parts.is_empty() {
                Ok(Vec::new())
            } else {
                g.offset_fetch(&m.group, Some(&[(plan.topic.as_str(), &parts[..])]))
                    .await
            };
            let committed = match committed {
                Ok(c) => c,
                Err(e) => {
                    note_error(stats, &format!("offset fetch: {e}"), 1, false);
                    // Rejoin without committing: nothing was read under this assignment.
                    positions.clear();
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            positions = parts
                .iter()
                .map(|&p| {
                    let c = committed
                        .iter()
                        .find(|c| c.partition == p)
                        .and_then(|c| c.offset.clone().ok())
                        .filter(|&o| o >= 0);
                    let s = start.iter().find(|s| s.partition == p).map(|s| s.offset);
                    FetchPosition {
                        topic: plan.topic.clone(),
                        partition: p,
                        offset: c.or(s).unwrap_or(0),
                    }
                })
                .collect();
            m.stable.set(true);
            continue;
        }
        if ends.is_none() && shared.producers_running.load(Ordering::SeqCst) == 0 {
            ends = Some(
                match client
                    .list_offsets(&plan.topic, &plan.partitions, OffsetSpec::Latest)
                    .await
                {
                    Ok(offs) => offs
                        .into_iter()
                        .filter_map(|o| {
                            Some(FetchPosition {
                                topic: plan.topic.clone(),
                                partition: o.partition,
                                offset: o.offset.ok()?,
                            })
                        })
                        .collect(),
                    Err(e) => {
                        note_error(stats, &e, 1, false);
                        Vec::new()
                    }
                },
            );
            drain_deadline = clock.now_ns() + DRAIN_TIMEOUT.as_nanos() as u64;
        }
        if let Some(e) = &ends {
            let end_of = |p: &FetchPosition| {
                e.iter()
                    .find(|x| x.partition == p.partition)
                    .map_or(p.offset, |x| x.offset)
            };
            let missing: i64 = positions
                .iter()
                .map(|p| (end_of(p) - p.offset).max(0))
                .sum();
            if missing == 0 {
                if !done_counted {
                    done_counted = true;
                    gp.draining.fetch_sub(1, Ordering::SeqCst);
                }
                // Stay in the group (heartbeating) until every member is done, so nobody's
                // leaving moves partitions during the drain.
                if gp.draining.load(Ordering::SeqCst) == 0 || clock.now_ns() > drain_deadline {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
            if clock.now_ns() > drain_deadline {
                note_error(
                    stats,
                    &format!("drain timeout: {missing} messages not consumed"),
                    missing as u64,
                    false,
                );
                break;
            }
        }
        if positions.is_empty() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let got = fetch_once(client, &mut positions, params, stats, &clock).await;
        // Like OMB's consumers: commitAsync after every poll that returned records.
        if got > 0 && !m.rejoin.get() {
            commit_async(&g, &m, stats, offsets_of(&positions));
        }
    }
    if !done_counted {
        gp.draining.fetch_sub(1, Ordering::SeqCst);
    }
    if m.stable.get() && !m.rejoin.get() {
        commit_sync(&g, &m, stats, &positions).await;
    }
    m.stop.set(true);
    let member = m.member_id.borrow().clone();
    if !member.is_empty()
        && let Err(e) = g.leave_group(&m.group, &member).await
    {
        note_error(stats, &format!("leave group: {e}"), 1, false);
    }
    hb.await;
}
