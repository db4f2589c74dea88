//! Partition replication, Kafka's ISR protocol: each replica a shard holds is a `Replica`
//! (its log plus its role). The leader tracks every follower's fetch offset, keeps the high
//! watermark at the minimum over the ISR, releases acks=all producers once it passes their
//! batch, and asks the controller quorum to shrink or expand the ISR (AlterPartition).
//! Followers fetch from their leader (`fetcher`: one task per follower shard and leader
//! node, carrying all partitions of that pair in one Fetch) and append what they get with
//! the leader's offsets, fsync'ed before their next fetch reports the new offset.
//!
//! Runs on: the shard that holds the replica (leader or follower); roles change only when
//! the shard applies new metadata. A partition with one replica is its own ISR: its high
//! watermark is its log end, as before replication existed.

pub mod fetcher;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::metadata::PartitionMeta;
use crate::sync::Notify;

/// A follower's progress as the leader sees it (Kafka's `Replica` state on the leader).
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The offset of its last fetch: everything below is on its disk.
    fetch_offset: i64,
    /// Last time it was caught up (fetched at or past the leader's log end at the time of
    /// its previous fetch); it leaves the ISR after replica.lag.time.max.ms without one.
    caught_up_at: Instant,
    last_fetch_at: Instant,
    /// The leader's log end when that follower last fetched.
    leo_at_last_fetch: i64,
}

#[derive(Debug)]
pub struct LeaderState {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    followers: HashMap<i32, Progress>,
    /// An AlterPartition of this leader is on its way through the quorum.
    alter_in_flight: bool,
}

#[derive(Debug)]
pub enum Role {
    Leader(LeaderState),
    /// Following `leader` (-1: the partition has no leader now) at `leader_epoch`.
    Follower {
        leader: i32,
        leader_epoch: i32,
    },
}

/// One replica of a partition on this shard.
pub struct Replica {
    pub topic: String,
    pub partition: i32,
    pub log: Rc<shards::Partition>,
    /// This shard's node id.
    pub me: i32,
    role: RefCell<Role>,
    /// Number of replicas the partition has (1: no replication).
    replication_factor: Cell<usize>,
    hw: Cell<i64>,
    /// The log end when this replica last became leader: where its leader epoch starts.
    epoch_start: Cell<i64>,
    /// Woken whenever the high watermark moves (acks=all producers wait on it).
    pub hw_advanced: Notify,
    /// Traffic counters for metrics (this shard's tasks only).
    pub counters: ReplicaCounters,
}

/// Per-partition traffic, counted on the shard that holds the replica.
#[derive(Default)]
pub struct ReplicaCounters {
    /// Records appended by Produce (retries of stored batches not counted).
    pub messages_in: Cell<u64>,
    /// Record batch bytes appended by Produce.
    pub bytes_in: Cell<u64>,
    /// Record bytes answered to consumers by Fetch on this shard.
    pub fetch_bytes_consumer: Cell<u64>,
    /// Record bytes answered to follower replicas.
    pub fetch_bytes_follower: Cell<u64>,
}

/// Outcome of a follower's fetch as the leader records it.
pub enum FollowerFetch {
    /// Recorded; `true` when the high watermark moved.
    Recorded(bool),
    /// The node is not a replica of this partition.
    NotAReplica,
}

impl Replica {
    pub fn new(
        topic: String,
        partition: i32,
        log: Rc<shards::Partition>,
        me: i32,
        pm: &PartitionMeta,
    ) -> Rc<Replica> {
        let hw = log.log_start_offset();
        let r = Rc::new(Replica {
            topic,
            partition,
            log,
            me,
            role: RefCell::new(Role::Follower {
                leader: -1,
                leader_epoch: -1,
            }),
            replication_factor: Cell::new(pm.replicas.len()),
            hw: Cell::new(hw),
            epoch_start: Cell::new(-1),
            hw_advanced: Notify::new(),
            counters: ReplicaCounters::default(),
        });
        r.apply(pm);
        r
    }

    /// Adopts the partition's placement from newly applied metadata.
    pub fn apply(&self, pm: &PartitionMeta) {
        self.replication_factor.set(pm.replicas.len());
        self.bound_cleaning();
        let now = Instant::now();
        let mut role = self.role.borrow_mut();
        if pm.leader == self.me {
            match &mut *role {
                Role::Leader(l) if l.leader_epoch == pm.leader_epoch => {
                    l.partition_epoch = pm.partition_epoch;
                    l.replicas = pm.replicas.clone();
                    l.isr = pm.isr.clone();
                    l.alter_in_flight = false;
                    // A reassignment adds replicas (each gets a full lag window to show up)
                    // and removes them under the same leader epoch.
                    l.followers.retain(|r, _| pm.replicas.contains(r));
                    for r in pm.replicas.iter().filter(|r| **r != self.me) {
                        l.followers.entry(*r).or_insert(Progress {
                            fetch_offset: -1,
                            caught_up_at: now,
                            last_fetch_at: now,
                            leo_at_last_fetch: -1,
                        });
                    }
                }
                _ => {
                    // A new leadership: every follower gets a full lag window to show up.
                    let followers = pm
                        .replicas
                        .iter()
                        .filter(|r| **r != self.me)
                        .map(|r| {
                            (
                                *r,
                                Progress {
                                    fetch_offset: -1,
                                    caught_up_at: now,
                                    last_fetch_at: now,
                                    leo_at_last_fetch: -1,
                                },
                            )
                        })
                        .collect();
                    log::info!(
                        "{}-{}: leader on node {} at epoch {}, ISR {:?}",
                        self.topic,
                        self.partition,
                        self.me,
                        pm.leader_epoch,
                        pm.isr
                    );
                    self.epoch_start.set(self.log.log_end_offset());
                    *role = Role::Leader(LeaderState {
                        leader_epoch: pm.leader_epoch,
                        partition_epoch: pm.partition_epoch,
                        replicas: pm.replicas.clone(),
                        isr: pm.isr.clone(),
                        followers,
                        alter_in_flight: false,
                    });
                }
            }
        } else {
            *role = Role::Follower {
                leader: pm.leader,
                leader_epoch: pm.leader_epoch,
            };
        }
        drop(role);
        self.advance_hw();
        // acks=all waiters re-check: leadership or the ISR may have changed.
        self.hw_advanced.notify_all();
    }

    /// Replicas the partition has (1: not replicated).
    pub fn replication_factor(&self) -> usize {
        self.replication_factor.get()
    }

    pub fn is_leader(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leader(_))
    }

    /// The leader epoch this replica knows (as leader or follower).
    pub fn leader_epoch(&self) -> i32 {
        match &*self.role.borrow() {
            Role::Leader(l) => l.leader_epoch,
            Role::Follower { leader_epoch, .. } => *leader_epoch,
        }
    }

    /// The node this replica follows (None when it leads or there is no leader).
    pub fn following(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Follower { leader, .. } if *leader >= 0 => Some(*leader),
            _ => None,
        }
    }

    /// ISR size as the leader sees it (1 for an unreplicated partition).
    pub fn isr_len(&self) -> usize {
        match &*self.role.borrow() {
            Role::Leader(l) => l.isr.len(),
            Role::Follower { .. } => 0,
        }
    }

    /// The log cleaner of a replicated partition only cleans below the high watermark (as
    /// Kafka's): records above it may still be truncated away, and a record removed for a
    /// later one of its key must never lose that later one.
    fn bound_cleaning(&self) {
        let bound = if self.replication_factor.get() <= 1 {
            i64::MAX
        } else {
            self.hw.get()
        };
        self.log.set_cleanable_end(bound);
    }

    /// What consumers may read up to: the high watermark (the log end for a partition
    /// with a single replica).
    pub fn high_watermark(&self) -> i64 {
        if self.replication_factor.get() <= 1 {
            return self.log.high_watermark();
        }
        self.hw
            .get()
            .clamp(self.log.log_start_offset(), self.log.log_end_offset())
    }

    /// Leader: the high watermark is the lowest log end over the ISR (the leader's own log
    /// end included). It never moves back.
    fn advance_hw(&self) {
        let new = {
            let role = self.role.borrow();
            let Role::Leader(l) = &*role else {
                return;
            };
            let mut hw = self.log.log_end_offset();
            for r in l.isr.iter().filter(|r| **r != self.me) {
                match l.followers.get(r) {
                    Some(p) if p.fetch_offset >= 0 => hw = hw.min(p.fetch_offset),
                    // An ISR member not heard from yet holds the watermark where it is.
                    _ => hw = hw.min(self.hw.get()),
                }
            }
            hw
        };
        if new > self.hw.get() {
            self.hw.set(new);
            self.bound_cleaning();
            self.hw_advanced.notify_all();
        }
    }

    /// Leader, after a local append: with the leader alone in the ISR the watermark follows
    /// its log end at once.
    pub fn appended(&self) {
        self.advance_hw();
    }

    /// Leader: a follower fetched at `fetch_offset` (so it has everything below on disk).
    pub fn follower_fetched(&self, node: i32, fetch_offset: i64) -> FollowerFetch {
        let leo = self.log.log_end_offset();
        let now = Instant::now();
        {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                return FollowerFetch::NotAReplica;
            };
            let Some(p) = l.followers.get_mut(&node) else {
                return FollowerFetch::NotAReplica;
            };
            if fetch_offset >= leo {
                p.caught_up_at = now;
            } else if p.leo_at_last_fetch >= 0 && fetch_offset >= p.leo_at_last_fetch {
                p.caught_up_at = p.caught_up_at.max(p.last_fetch_at);
            }
            p.fetch_offset = fetch_offset;
            p.last_fetch_at = now;
            p.leo_at_last_fetch = leo;
        }
        let before = self.hw.get();
        self.advance_hw();
        FollowerFetch::Recorded(self.hw.get() != before)
    }

    /// Follower: the leader's high watermark from a fetch answer (never past what we have).
    pub fn follower_hw(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log.log_end_offset());
        if hw > self.hw.get() {
            self.hw.set(hw);
            self.bound_cleaning();
            self.hw_advanced.notify_all();
        }
    }

    /// Leader: the ISR it should have now, if that differs from the current one and no
    /// change is in flight: members that were not caught up for `lag_max` leave, live
    /// replicas (`live`: not on a fenced host) that fetched up to the high watermark join. Returns (leader epoch, partition epoch,
    /// new ISR) and marks the change as in flight.
    pub fn isr_change(
        &self,
        lag_max: Duration,
        live: impl Fn(i32) -> bool,
    ) -> Option<(i32, i32, Vec<i32>)> {
        let hw = self.high_watermark();
        let now = Instant::now();
        let mut role = self.role.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        if l.alter_in_flight || l.replicas.len() <= 1 {
            return None;
        }
        let mut isr: Vec<i32> = Vec::with_capacity(l.replicas.len());
        for r in &l.replicas {
            if *r == self.me {
                isr.push(*r);
                continue;
            }
            let Some(p) = l.followers.get(r) else {
                continue;
            };
            let keep = l.isr.contains(r) && now.duration_since(p.caught_up_at) <= lag_max;
            // Kafka's conditions to rejoin: fetching now (not a stale record from before a
            // restart), up to the high watermark, and past the start of this leader's epoch
            // (so whatever diverged was truncated first).
            let join = !l.isr.contains(r)
                && live(*r)
                && p.fetch_offset >= 0
                && p.fetch_offset >= hw
                && p.fetch_offset >= self.epoch_start.get()
                && now.duration_since(p.last_fetch_at) <= lag_max / 2;
            if keep || join {
                isr.push(*r);
            }
        }
        let mut current = l.isr.clone();
        current.sort_unstable();
        let mut want = isr.clone();
        want.sort_unstable();
        if current == want {
            return None;
        }
        l.alter_in_flight = true;
        Some((l.leader_epoch, l.partition_epoch, isr))
    }

    /// Leader: the AlterPartition failed (stale epochs); a later check retries.
    pub fn isr_change_failed(&self) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.alter_in_flight = false;
        }
    }

    /// Kafka's answer to "where does `epoch` end in this log" (OffsetForLeaderEpoch and
    /// the DivergingEpoch check), on the leader: the largest epoch <= `epoch` and where it
    /// ends (the next epoch's start, or the log end for the current one); for an epoch below
    /// the first known, that epoch and the first known start; (-1, -1) above the current
    /// one. The leader's current epoch counts from where it took over, as Kafka assigns it
    /// at election, even before it appended anything. `None` when neither the log nor the
    /// leadership knows an epoch (data from before leader epochs were stamped).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        let leo = self.log.log_end_offset();
        let current = match &*self.role.borrow() {
            Role::Leader(l) if l.leader_epoch >= 0 => {
                Some((l.leader_epoch, self.epoch_start.get()))
            }
            _ => None,
        };
        let epochs = self.log.leader_epochs();
        if let Some((cur, start)) = current {
            if epoch > cur {
                return Some((-1, -1));
            }
            if epoch == cur {
                return Some((cur, leo));
            }
            // Epochs before the current one, each ending where the next begins; the last
            // of them ends where the current leadership began.
            let older: Vec<(i32, i64)> = epochs.iter().copied().filter(|(x, _)| *x < cur).collect();
            return Some(match older.iter().rposition(|(x, _)| *x <= epoch) {
                None => (epoch, older.first().map_or(start, |f| f.1)),
                Some(i) => (older[i].0, older.get(i + 1).map_or(start, |n| n.1)),
            });
        }
        let (&(first, first_start), &(latest, _)) = (epochs.first()?, epochs.last()?);
        Some(if epoch > latest {
            (-1, -1)
        } else if epoch < first {
            (epoch, first_start)
        } else {
            self.log.end_offset_for_epoch(epoch)
        })
    }

    /// Waits until the high watermark reaches `offset` (acks=all), the replica stops
    /// leading (or `stand_down` says so: the host lost the quorum), or `timeout` passes.
    /// True when reached.
    pub async fn wait_hw(
        &self,
        offset: i64,
        timeout: Duration,
        stand_down: impl Fn() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let wake = self.hw_advanced.notified();
            if self.high_watermark() >= offset {
                return true;
            }
            if !self.is_leader() || stand_down() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Also re-check now and then: `stand_down` (the host losing the quorum) is set
            // by the controller thread, which wakes nothing here.
            let wait = (deadline - now).min(Duration::from_millis(100));
            futures_lite::future::or(wake, glommio::timer::sleep(wait)).await;
        }
    }
}

/// Longest pause between two ISR checks of a shard's leader replicas: a follower that
/// caught up joins the ISR within about this long.
const ISR_CHECK_INTERVAL_MAX: Duration = Duration::from_millis(250);

/// Per shard, until shutdown: every leader replica here whose ISR should change (a member
/// lagging for replica.lag.time.max.ms, a replica caught up to the high watermark) asks the
/// controller quorum for the change (AlterPartition, compare-and-set on its epochs).
pub async fn maintain_isr(shard: Rc<crate::shard::Shard>) {
    let lag = Duration::from_millis(shard.config.replica_lag_time_max_ms);
    let tick = (lag / 4).min(ISR_CHECK_INTERVAL_MAX);
    let me = shard.node_id();
    while !shard.shutting_down.get() {
        glommio::timer::sleep(tick).await;
        let meta = shard.meta();
        for (topic, partition, r) in shard.replicated_leaders() {
            let Some((leader_epoch, partition_epoch, isr)) = r.isr_change(lag, |n| meta.is_live(n))
            else {
                continue;
            };
            log::info!("{topic}-{partition}: asking to change the ISR to {isr:?}");
            let t = topic.clone();
            let result = shard
                .call(0, move |s| async move {
                    s.controller()
                        .alter_partition(t, partition, me, leader_epoch, partition_epoch, isr)
                        .await
                })
                .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    log::info!("{topic}-{partition}: ISR change refused: {}", e.message);
                    r.isr_change_failed();
                }
                Err(e) => {
                    log::warn!("{topic}-{partition}: ISR change not sent: {e}");
                    r.isr_change_failed();
                }
            }
        }
    }
}
