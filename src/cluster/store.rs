//! Durable storage of the controller quorum: the Raft log, the vote and the state machine
//! (the cluster metadata) with its snapshots, in `<data>/controller/raft/`.
//!
//! Runs on: the controller thread only (plain blocking file I/O on its own thread; the
//! metadata log is small and off the data path). openraft reads the log through a reader
//! object separate from the writer, so the log state is shared between the two behind one
//! `Arc<Mutex>`; no shard ever touches it.
//!
//! Files: `log` holds records `[len u32][crc32c u32][JSON entry]` appended and fdatasync'ed
//! before openraft hears they are flushed; a torn or corrupt tail is cut at open. `vote`,
//! `purged` and `snapshot` are small files replaced atomically (`durable::write_atomic`).
//! `committed` is a hint written without fsync: a stale value is only lower, which is safe.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::state::{self, MetaReply};
use super::{NodeId, TypeConfig};
use crate::metadata::ClusterMeta;

/// Largest log record accepted when reading the log back (a corrupt length ends the log).
const LOG_RECORD_MAX_BYTES: usize = 64 * 1024 * 1024;
const RECORD_HEADER_BYTES: usize = 8;

type SErr = StorageError<NodeId>;

fn io_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, e: impl ToString) -> SErr {
    StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}

/// Runs blocking file I/O on the runtime's blocking pool, off the controller thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("blocking task: {e}")))
}

fn write_small(dir: &Path, name: &str, value: &impl Serialize) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    crate::durable::write_atomic(dir, name, &bytes)
}

fn read_small<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Result<Option<T>, String> {
    match std::fs::read(dir.join(name)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", dir.join(name).display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", dir.join(name).display())),
    }
}

fn encode_record(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + json.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Parses records from the start of `bytes`: (entry, file offset) pairs and the length of
/// the valid prefix.
fn decode_records(bytes: &[u8]) -> (Vec<(Entry<TypeConfig>, u64)>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= RECORD_HEADER_BYTES {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap_or_default());
        let body_start = pos + RECORD_HEADER_BYTES;
        if len > LOG_RECORD_MAX_BYTES || bytes.len() - body_start < len {
            break;
        }
        let body = &bytes[body_start..body_start + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(entry) = serde_json::from_slice::<Entry<TypeConfig>>(body) else {
            break;
        };
        out.push((entry, pos as u64));
        pos = body_start + len;
    }
    (out, pos)
}

struct LogInner {
    dir: PathBuf,
    file: File,
    /// Entries by index, with the file offset of their record.
    entries: BTreeMap<u64, (Entry<TypeConfig>, u64)>,
    end: u64,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The Raft log and vote (openraft's `RaftLogStorage`), and its reader.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    pub fn open(dir: &Path) -> Result<LogStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("log");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (records, valid) = decode_records(&bytes);
        if valid < bytes.len() {
            log::warn!(
                "controller log {}: cutting {} bytes of torn or corrupt tail",
                path.display(),
                bytes.len() - valid
            );
            file.set_len(valid as u64)
                .and_then(|_| file.sync_data())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let last_purged: Option<LogId<NodeId>> = read_small(dir, "purged")?;
        let mut entries = BTreeMap::new();
        for (e, off) in records {
            if last_purged.is_some_and(|p| e.log_id.index <= p.index) {
                continue;
            }
            entries.insert(e.log_id.index, (e, off));
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                entries,
                end: valid as u64,
                last_purged,
                vote: read_small(dir, "vote")?,
                committed: read_small(dir, "committed").unwrap_or(None),
            })),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        // A panic while holding the lock is a bug that already stopped the controller.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when nothing was ever stored: the node has never been initialised.
    pub fn is_pristine(&self) -> bool {
        let g = self.lock();
        g.entries.is_empty() && g.last_purged.is_none() && g.vote.is_none()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let g = self.lock();
        Ok(g.entries
            .range(range)
            .map(|(_, (e, _))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let g = self.lock();
        let last = g
            .entries
            .values()
            .next_back()
            .map(|(e, _)| e.log_id)
            .or(g.last_purged);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let dir = self.lock().dir.clone();
        let v = *vote;
        blocking(move || write_small(&dir, "vote", &v))
            .await
            .map_err(|e| io_err(ErrorSubject::Vote, ErrorVerb::Write, e))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        let mut g = self.lock();
        g.committed = committed;
        // A hint only (see the module doc): no fsync.
        let tmp = g.dir.join("committed.tmp");
        let bytes = serde_json::to_vec(&committed).unwrap_or_default();
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, g.dir.join("committed"));
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Encode under the lock, write and fdatasync off the controller thread (a slow disk
        // must not stall heartbeats and Raft RPCs), publish the entries once durable.
        let (file, end, buf, added) = {
            let g = self.lock();
            let mut buf = Vec::new();
            let mut added = Vec::new();
            for e in entries {
                let off = g.end + buf.len() as u64;
                let rec = encode_record(&e)
                    .map_err(|m| io_err(ErrorSubject::Logs, ErrorVerb::Write, m))?;
                buf.extend_from_slice(&rec);
                added.push((e, off));
            }
            let file = g
                .file
                .try_clone()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            (file, g.end, buf, added)
        };
        let len = buf.len() as u64;
        let result = blocking(move || {
            let mut f = file;
            f.seek(SeekFrom::Start(end))
                .and_then(|_| f.write_all(&buf))
                .and_then(|_| f.sync_data())
                .map_err(|e| e.to_string())
        })
        .await;
        if let Err(msg) = result {
            callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
            return Err(io_err(ErrorSubject::Logs, ErrorVerb::Write, msg));
        }
        let mut g = self.lock();
        g.end = end + len;
        for (e, off) in added {
            g.entries.insert(e.log_id.index, (e, off));
        }
        drop(g);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let (file, off) = {
            let mut g = self.lock();
            let Some(off) = g
                .entries
                .range(log_id.index..)
                .next()
                .map(|(_, (_, off))| *off)
            else {
                return Ok(());
            };
            // Readers stop seeing the cut entries before the file shrinks.
            g.entries.retain(|i, _| *i < log_id.index);
            g.end = off;
            let file = g
                .file
                .try_clone()
                .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            (file, off)
        };
        blocking(move || {
            file.set_len(off)
                .and_then(|_| file.sync_data())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        // Rare (after a snapshot) and small: done under the lock, on a blocking thread.
        let me = self.clone();
        blocking(move || me.purge_sync(log_id))
            .await
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl LogStore {
    fn purge_sync(&self, log_id: LogId<NodeId>) -> Result<(), String> {
        let mut g = self.lock();
        write_small(&g.dir, "purged", &log_id).map_err(|e| format!("write purged mark: {e}"))?;
        g.last_purged = Some(log_id);
        g.entries.retain(|i, _| *i > log_id.index);
        // Rewrite the log without the purged prefix (atomically), then append to it.
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for (e, _) in g.entries.values() {
            offsets.push((e.log_id.index, buf.len() as u64));
            buf.extend_from_slice(&encode_record(e).map_err(|m| format!("encode: {m}"))?);
        }
        let dir = g.dir.clone();
        crate::durable::write_atomic(&dir, "log", &buf).map_err(|e| format!("rewrite log: {e}"))?;
        g.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("log"))
            .map_err(|e| format!("rewrite log: {e}"))?;
        g.end = buf.len() as u64;
        for (i, off) in offsets {
            if let Some(slot) = g.entries.get_mut(&i) {
                slot.1 = off;
            }
        }
        Ok(())
    }
}

/// What a snapshot holds: the whole state machine.
#[derive(Serialize, Deserialize, Clone)]
struct SmState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    meta: ClusterMeta,
}

#[derive(Serialize, Deserialize, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

struct SmInner {
    dir: PathBuf,
    state: SmState,
    snapshot: Option<StoredSnapshot>,
}

/// The state machine (openraft's `RaftStateMachine`): applies committed metadata commands
/// to `ClusterMeta` and publishes every new version on `published`.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
    published: Arc<watch::Sender<Arc<ClusterMeta>>>,
}

impl StateMachineStore {
    pub fn open(
        dir: &Path,
        published: Arc<watch::Sender<Arc<ClusterMeta>>>,
    ) -> Result<StateMachineStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let snapshot: Option<StoredSnapshot> = read_small(dir, "snapshot")?;
        let state = match &snapshot {
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| format!("snapshot: {e}"))?,
            None => SmState {
                last_applied: None,
                membership: StoredMembership::default(),
                meta: ClusterMeta::default(),
            },
        };
        if state.last_applied.is_some() {
            published.send_replace(Arc::new(state.meta.clone()));
        }
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_path_buf(),
                state,
                snapshot,
            })),
            published,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (stored, meta, data, dir) = {
            let g = self.lock();
            let data = serde_json::to_vec(&g.state)
                .map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            let last = g.state.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: g.state.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    last.map(|l| l.leader_id.term).unwrap_or(0),
                    last.map(|l| l.index).unwrap_or(0)
                ),
            };
            let stored = StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            };
            (stored, meta, data, g.dir.clone())
        };
        let to_write = stored.clone();
        blocking(move || write_small(&dir, "snapshot", &to_write))
            .await
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        self.lock().snapshot = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        SErr,
    > {
        let g = self.lock();
        Ok((g.state.last_applied, g.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut g = self.lock();
        let mut replies = Vec::new();
        let before = g.state.meta.epoch;
        for e in entries {
            g.state.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => replies.push(MetaReply {
                    epoch: g.state.meta.epoch,
                    ..Default::default()
                }),
                EntryPayload::Normal(cmd) => replies.push(state::apply(&mut g.state.meta, cmd)),
                EntryPayload::Membership(m) => {
                    g.state.membership = StoredMembership::new(Some(e.log_id), m);
                    replies.push(MetaReply {
                        epoch: g.state.meta.epoch,
                        ..Default::default()
                    });
                }
            }
        }
        if g.state.meta.epoch != before || self.published.borrow().epoch != g.state.meta.epoch {
            self.published.send_replace(Arc::new(g.state.meta.clone()));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let state: SmState = serde_json::from_slice(&data).map_err(|e| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        })?;
        let mut g = self.lock();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        write_small(&g.dir, "snapshot", &stored)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        g.snapshot = Some(stored);
        g.state = state;
        self.published.send_replace(Arc::new(g.state.meta.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let g = self.lock();
        Ok(g.snapshot.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Box::new(Cursor::new(s.data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Records survive a reopen; a torn tail is cut at the last whole record.
    #[test]
    fn log_records_recover_up_to_a_torn_tail() {
        let e = |i: u64| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 0), i),
            payload: EntryPayload::Blank,
        };
        let mut bytes = Vec::new();
        for i in 1..=3 {
            bytes.extend(encode_record(&e(i)).unwrap());
        }
        let whole = bytes.len();
        bytes.extend(&encode_record(&e(4)).unwrap()[..10]);
        let (recs, valid) = decode_records(&bytes);
        assert_eq!(recs.len(), 3);
        assert_eq!(valid, whole);
        bytes[whole - 1] ^= 0xff;
        assert_eq!(decode_records(&bytes).0.len(), 2);
    }
}
