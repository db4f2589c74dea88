//! Fetch sessions (KIP-227): a consumer or follower of many partitions opens a session
//! with a full fetch, then sends only what changed (new fetch offsets, added partitions,
//! forgotten ones) and is answered only the partitions with something new (records, a
//! high watermark, last stable offset or log start offset that moved, an error).
//!
//! Runs on: one shard each. Every shard is its own Kafka node, clients fetch a partition
//! from its leader's node, so each shard keeps the sessions of the fetches it answers in
//! its own `FetchSessions` (no sharing, no lock). Pure bookkeeping: no I/O here.
//!
//! Epochs as Kafka's `FetchMetadata`: epoch -1 is a sessionless full fetch (closing the
//! named session, if any); epoch 0 is a full fetch that closes the named session and opens
//! a new one (answered with its id, or 0 when the cache has no room); any other epoch is
//! an incremental fetch in the named session, which must expect exactly that epoch
//! (FETCH_SESSION_ID_NOT_FOUND / INVALID_FETCH_SESSION_EPOCH otherwise).
//!
//! Bounded as Kafka's cache: `FETCH_SESSION_CACHE_SLOTS` sessions per node; a new session
//! takes the slot of one unused for `FETCH_SESSION_EVICTION` or, failing that, of a
//! smaller consumer session (followers' sessions are kept first), else gets none. And,
//! beyond Kafka, `FETCH_SESSION_PARTITIONS_MAX` cached partitions per node: a session that
//! would grow past it is closed (FETCH_SESSION_ID_NOT_FOUND) and its client fetches in
//! full.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::error;

/// Sessions one node keeps (Kafka's max.incremental.fetch.session.cache.slots).
pub const FETCH_SESSION_CACHE_SLOTS: usize = 1000;
/// Idle time after which a session may be evicted for a new one (Kafka's
/// min.incremental.fetch.session.eviction.ms).
pub const FETCH_SESSION_EVICTION: Duration = Duration::from_millis(120_000);
/// Partitions cached over all sessions of one node (about 100 bytes each: ~20 MiB).
pub const FETCH_SESSION_PARTITIONS_MAX: usize = 200_000;
/// The epoch of a full fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a sessionless full fetch (or one that closes its session).
pub const FINAL_EPOCH: i32 = -1;

/// (topic, partition).
pub type Key = (String, i32);

/// What the client asks of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    pub fetch_offset: i64,
    pub max_bytes: usize,
    pub leader_epoch: i32,
    pub last_fetched_epoch: i32,
}

/// What the client was last told of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl Seen {
    /// Nothing told yet: the next answer includes the partition.
    pub const NOTHING: Seen = Seen {
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
    };
}

/// One partition's answer, as the session compares it with what was last told.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub seen: Seen,
    pub has_records: bool,
    pub error_code: i16,
    /// A follower told to truncate.
    pub diverging: bool,
}

struct Cached {
    key: Key,
    ask: Ask,
    seen: Seen,
}

struct Session {
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
    follower: bool,
    /// In reading order: partitions that returned records move to the end, so that
    /// the others come first in the next response (Kafka's fairness rule).
    parts: Vec<Cached>,
    index: HashMap<Key, usize>,
    last_used: Instant,
}

impl Session {
    fn reindex(&mut self) {
        self.index = self
            .parts
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key.clone(), i))
            .collect();
    }
}

/// How one Fetch request is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Every requested partition, answered in full, no session.
    Sessionless,
    /// Every requested partition, answered in full; a session is opened at the answer.
    Full,
    /// The session's partitions; the answer carries the changed ones only.
    Incremental { id: i32 },
}

/// The fetch sessions of one node.
pub struct FetchSessions {
    sessions: HashMap<i32, Session>,
    /// Partitions cached over all sessions.
    cached: usize,
    /// State of the id generator (splitmix64).
    rng: u64,
}

impl Default for FetchSessions {
    fn default() -> Self {
        Self::new(0)
    }
}

/// Kafka's nextEpoch: wraps to 1 (0 and -1 are reserved).
fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

impl FetchSessions {
    /// `seed` varies the session ids between nodes and runs.
    pub fn new(seed: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        FetchSessions {
            sessions: HashMap::new(),
            cached: 0,
            rng: nanos ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A fresh positive id not in use. Random, as Kafka's, so a client cannot guess
    /// another's session.
    fn new_id(&mut self) -> i32 {
        loop {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let id = (z as i32) & i32::MAX;
            if id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    fn remove(&mut self, id: i32) {
        if let Some(s) = self.sessions.remove(&id) {
            self.cached -= s.parts.len();
        }
    }

    /// Decides how a request is served. For an incremental fetch, applies its changes
    /// (partitions added or given new offsets, then the forgotten ones removed) and
    /// returns the session's partitions in reading order; otherwise returns `requested`.
    /// An error is the top-level error code of the answer.
    pub fn begin(
        &mut self,
        session_id: i32,
        epoch: i32,
        requested: Vec<(Key, Ask)>,
        forgotten: Vec<Key>,
        now: Instant,
    ) -> Result<(Context, Vec<(Key, Ask)>), i16> {
        if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
            if session_id != 0 {
                self.remove(session_id);
            }
            let ctx = if epoch == INITIAL_EPOCH {
                Context::Full
            } else {
                Context::Sessionless
            };
            return Ok((ctx, requested));
        }
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return Err(error::FETCH_SESSION_ID_NOT_FOUND);
        };
        if s.epoch != epoch {
            return Err(error::INVALID_FETCH_SESSION_EPOCH);
        }
        let before = s.parts.len();
        for (key, ask) in requested {
            match s.index.get(&key) {
                Some(&i) => s.parts[i].ask = ask,
                None => {
                    s.index.insert(key.clone(), s.parts.len());
                    s.parts.push(Cached {
                        key,
                        ask,
                        seen: Seen::NOTHING,
                    });
                }
            }
        }
        if !forgotten.is_empty() {
            s.parts.retain(|c| !forgotten.contains(&c.key));
            s.reindex();
        }
        let after = s.parts.len();
        self.cached = self.cached + after - before;
        if self.cached > FETCH_SESSION_PARTITIONS_MAX {
            self.remove(session_id);
            return Err(error::FETCH_SESSION_ID_NOT_FOUND);
        }
        let Some(s) = self.sessions.get_mut(&session_id) else {
            return Err(error::FETCH_SESSION_ID_NOT_FOUND);
        };
        s.epoch = next_epoch(epoch);
        s.last_used = now;
        let parts = s.parts.iter().map(|c| (c.key.clone(), c.ask)).collect();
        Ok((Context::Incremental { id: session_id }, parts))
    }

    /// A slot for a new session of `size` partitions, evicting one if that is allowed.
    fn make_room(&mut self, size: usize, follower: bool, now: Instant) -> bool {
        let fits = |cached: usize| cached + size <= FETCH_SESSION_PARTITIONS_MAX;
        if !fits(0) {
            // Larger than the whole cache: evicting would not make room.
            return false;
        }
        if self.sessions.len() < FETCH_SESSION_CACHE_SLOTS && fits(self.cached) {
            return true;
        }
        // The least recently used session, if idle long enough; else the smallest consumer
        // session, if the new one is a follower's or larger.
        let stale = self
            .sessions
            .iter()
            .min_by_key(|(_, s)| s.last_used)
            .filter(|(_, s)| now.duration_since(s.last_used) >= FETCH_SESSION_EVICTION)
            .map(|(id, _)| *id);
        let victim = stale.or_else(|| {
            self.sessions
                .iter()
                .filter(|(_, s)| !s.follower && (follower || s.parts.len() < size))
                .min_by_key(|(_, s)| (s.parts.len(), s.last_used))
                .map(|(id, _)| *id)
        });
        match victim {
            Some(id) => {
                self.remove(id);
                self.sessions.len() < FETCH_SESSION_CACHE_SLOTS && fits(self.cached)
            }
            None => false,
        }
    }

    /// Records what the answer tells the client and picks what it carries: `answered`
    /// is one entry per partition of `begin`'s list, in that order. Returns the session
    /// id to answer with and, per partition, whether the answer includes it.
    pub fn finish(
        &mut self,
        ctx: Context,
        follower: bool,
        parts: &[(Key, Ask)],
        answered: &[Answered],
        now: Instant,
    ) -> (i32, Vec<bool>) {
        debug_assert_eq!(parts.len(), answered.len());
        match ctx {
            Context::Sessionless => (0, vec![true; parts.len()]),
            Context::Full => {
                if parts.is_empty() || !self.make_room(parts.len(), follower, now) {
                    return (0, vec![true; parts.len()]);
                }
                let id = self.new_id();
                let mut s = Session {
                    epoch: next_epoch(INITIAL_EPOCH),
                    follower,
                    parts: parts
                        .iter()
                        .zip(answered)
                        .map(|((key, ask), a)| Cached {
                            key: key.clone(),
                            ask: *ask,
                            seen: told(a),
                        })
                        .collect(),
                    index: HashMap::new(),
                    last_used: now,
                };
                s.reindex();
                self.cached += s.parts.len();
                self.sessions.insert(id, s);
                (id, vec![true; parts.len()])
            }
            Context::Incremental { id } => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    // Closed meanwhile (evicted, or reset by another request): tell all.
                    return (id, vec![true; parts.len()]);
                };
                let mut include = Vec::with_capacity(parts.len());
                let mut with_records = Vec::new();
                for ((key, _), a) in parts.iter().zip(answered) {
                    let Some(&i) = s.index.get(key) else {
                        include.push(true);
                        continue;
                    };
                    let c = &mut s.parts[i];
                    let must = a.has_records
                        || a.error_code != error::NONE
                        || a.diverging
                        || a.seen != c.seen;
                    c.seen = told(a);
                    if a.has_records {
                        with_records.push(i);
                    }
                    include.push(must);
                }
                if !with_records.is_empty() {
                    // Stable move of the partitions that returned records to the end.
                    let mut moved = vec![false; s.parts.len()];
                    for i in with_records {
                        moved[i] = true;
                    }
                    let old = std::mem::take(&mut s.parts);
                    let (front, back): (Vec<_>, Vec<_>) =
                        old.into_iter().enumerate().partition(|(i, _)| !moved[*i]);
                    s.parts = front.into_iter().chain(back).map(|(_, c)| c).collect();
                    s.reindex();
                }
                (id, include)
            }
        }
    }
}

/// What the session remembers of an answer: an error forgets the offsets, so the
/// partition is sent again once the error is gone (as Kafka).
fn told(a: &Answered) -> Seen {
    if a.error_code != error::NONE {
        Seen::NOTHING
    } else {
        a.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(offset: i64) -> Ask {
        Ask {
            fetch_offset: offset,
            max_bytes: 1 << 20,
            leader_epoch: -1,
            last_fetched_epoch: -1,
        }
    }

    fn key(t: &str, p: i32) -> Key {
        (t.to_string(), p)
    }

    fn quiet(hw: i64) -> Answered {
        Answered {
            seen: Seen {
                high_watermark: hw,
                last_stable_offset: hw,
                log_start_offset: 0,
            },
            has_records: false,
            error_code: 0,
            diverging: false,
        }
    }

    // Proves the epoch rules and the change detection: a full fetch opens a session
    // (epoch 1 next), an incremental one with a wrong epoch or id is refused, unchanged
    // partitions are left out, a moved high watermark, records or an error bring them
    // back, records move a partition to the end, forgotten partitions leave, epoch -1
    // closes the session.
    #[test]
    fn session_lifecycle() {
        let now = Instant::now();
        let mut c = FetchSessions::new(1);
        let req = vec![(key("a", 0), ask(0)), (key("a", 1), ask(0))];
        let (ctx, parts) = c.begin(0, 0, req, vec![], now).unwrap();
        assert_eq!(ctx, Context::Full);
        let (id, inc) = c.finish(ctx, false, &parts, &[quiet(5), quiet(0)], now);
        assert!(id > 0);
        assert_eq!(inc, vec![true, true]);

        assert_eq!(
            c.begin(id, 2, vec![], vec![], now).unwrap_err(),
            error::INVALID_FETCH_SESSION_EPOCH
        );
        assert_eq!(
            c.begin(id + 1, 1, vec![], vec![], now).unwrap_err(),
            error::FETCH_SESSION_ID_NOT_FOUND
        );
        let (ctx, parts) = c.begin(id, 1, vec![], vec![], now).unwrap();
        assert_eq!(ctx, Context::Incremental { id });
        assert_eq!(parts.len(), 2);
        let (_, inc) = c.finish(ctx, false, &parts, &[quiet(5), quiet(3)], now);
        assert_eq!(inc, vec![false, true]);

        // Records on a-0 (its offset moved): included and moved to the end.
        let (ctx, parts) = c
            .begin(id, 2, vec![(key("a", 0), ask(5))], vec![], now)
            .unwrap();
        assert_eq!(parts[0], (key("a", 0), ask(5)));
        let mut rec = quiet(5);
        rec.has_records = true;
        let (_, inc) = c.finish(ctx, false, &parts, &[rec, quiet(3)], now);
        assert_eq!(inc, vec![true, false]);
        let (ctx, parts) = c.begin(id, 3, vec![], vec![], now).unwrap();
        assert_eq!(parts[0].0, key("a", 1));
        let mut err = quiet(-1);
        err.error_code = error::NOT_LEADER_OR_FOLLOWER;
        let (_, inc) = c.finish(ctx, false, &parts, &[err, quiet(5)], now);
        assert_eq!(inc, vec![true, false]);
        // After an error the partition is sent again even with the offsets it had.
        let (ctx, parts) = c
            .begin(id, 4, vec![(key("b", 0), ask(0))], vec![key("a", 0)], now)
            .unwrap();
        assert_eq!(
            parts.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
            vec![key("a", 1), key("b", 0)]
        );
        let (_, inc) = c.finish(ctx, false, &parts, &[quiet(3), quiet(0)], now);
        assert_eq!(inc, vec![true, true]);

        let (ctx, _) = c.begin(id, FINAL_EPOCH, vec![], vec![], now).unwrap();
        assert_eq!(ctx, Context::Sessionless);
        assert!(c.is_empty());
        assert_eq!(c.cached, 0);
    }

    // Proves the cache bound: a full cache refuses a new session unless one is idle for
    // the eviction time or a smaller consumer session can make way.
    #[test]
    fn cache_is_bounded_with_eviction() {
        let t0 = Instant::now();
        let mut c = FetchSessions::new(2);
        let open = |c: &mut FetchSessions, n: usize, follower: bool, now: Instant| {
            let req: Vec<_> = (0..n as i32).map(|p| (key("t", p), ask(0))).collect();
            let (ctx, parts) = c.begin(0, 0, req, vec![], now).unwrap();
            let answered = vec![quiet(0); parts.len()];
            c.finish(ctx, follower, &parts, &answered, now).0
        };
        for _ in 0..FETCH_SESSION_CACHE_SLOTS - 1 {
            assert!(open(&mut c, 2, true, t0) > 0);
        }
        assert!(open(&mut c, 1, false, t0) > 0);
        assert_eq!(c.len(), FETCH_SESSION_CACHE_SLOTS);
        // A larger consumer session displaces the smaller consumer one at once.
        assert!(open(&mut c, 3, false, t0) > 0);
        assert_eq!(c.cached, (FETCH_SESSION_CACHE_SLOTS - 1) * 2 + 3);
        // Nothing smaller to displace, nothing idle: no session, the fetch is still
        // answered in full.
        assert_eq!(open(&mut c, 2, false, t0), 0);
        assert_eq!(c.len(), FETCH_SESSION_CACHE_SLOTS);
        // A session larger than the whole partition bound evicts nobody.
        assert_eq!(open(&mut c, FETCH_SESSION_PARTITIONS_MAX + 1, false, t0), 0);
        assert_eq!(c.len(), FETCH_SESSION_CACHE_SLOTS);
        // Once one is idle long enough it makes way, even a follower's.
        let later = t0 + FETCH_SESSION_EVICTION;
        assert!(open(&mut c, 1, false, later) > 0);
        assert_eq!(c.len(), FETCH_SESSION_CACHE_SLOTS);
    }
}
