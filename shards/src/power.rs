//! Power-loss simulation for tests: a journal of every file operation the storage makes
//! (DMA writes and their completions, fdatasyncs, segment creations, small files replaced
//! by rename, directory fsyncs), recorded through the `FaultInjector` hook, and the crash
//! images a power cut at any point of that journal may leave on disk.
//!
//! The model of the disk (what survives a power cut at journal position `T`):
//! - a write is durable if it went through an O_DSYNC descriptor and completed by `T`, or
//!   if a fdatasync of its file was issued after it completed and itself completed by `T`;
//!   a durable write is in the image whole;
//! - any other write issued by `T` may be lost, kept whole, kept as a prefix of its 512-byte
//!   sectors, or kept with its last kept sector torn (a prefix of that sector new, the rest
//!   old); each write is decided on its own, so a later write may survive an earlier lost
//!   one (reordering). Writes are applied in issue order over an all-zero file, so what a
//!   lost sector shows is what earlier surviving writes left there;
//! - a segment file created after the last directory fsync done by `T` may be missing;
//! - a small file (producer snapshot, leader-epoch checkpoint, log start checkpoint,
//!   indexes) shows the last version renamed in before the last directory fsync done by `T`
//!   (or none), or any version renamed in after it by `T`; a version whose data was not
//!   fdatasync'ed before its rename (the indexes) may show empty or cut short.
//!
//! Used from one shard only (the store's executor); pure apart from `write_image`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sector size the model tears at, in bytes (a disk's atomic unit).
pub const SECTOR_BYTES: usize = 512;

/// What one write put into its file.
#[derive(Debug, Clone)]
enum Data {
    Bytes(Vec<u8>),
    Zeros(usize),
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Bytes(b) => b.len(),
            Data::Zeros(n) => *n,
        }
    }
}

#[derive(Debug, Clone)]
struct Write {
    path: PathBuf,
    pos: u64,
    data: Data,
    dsync: bool,
    issued: u64,
    completed: Option<u64>,
}

#[derive(Debug, Clone)]
struct Sync {
    path: PathBuf,
    issued: u64,
    completed: Option<u64>,
}

#[derive(Debug, Clone)]
struct Version {
    bytes: Vec<u8>,
    /// The data was fdatasync'ed before the rename.
    data_synced: bool,
    renamed: u64,
}

/// The journal of one run (see the module docs). Positions are a counter of events.
#[derive(Debug, Default)]
pub struct PowerJournal {
    now: u64,
    writes: Vec<Write>,
    syncs: Vec<Sync>,
    created: BTreeMap<PathBuf, u64>,
    small: BTreeMap<PathBuf, Vec<Version>>,
    dir_syncs: Vec<(PathBuf, u64)>,
}

/// What a crash image kept and tore, for the report of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImageStats {
    pub writes_durable: u64,
    pub writes_lost: u64,
    pub writes_whole: u64,
    pub writes_prefix: u64,
    pub writes_torn: u64,
    pub files_missing: u64,
    pub small_files_older: u64,
    pub small_files_torn: u64,
}

impl ImageStats {
    pub fn add(&mut self, o: &ImageStats) {
        self.writes_durable += o.writes_durable;
        self.writes_lost += o.writes_lost;
        self.writes_whole += o.writes_whole;
        self.writes_prefix += o.writes_prefix;
        self.writes_torn += o.writes_torn;
        self.files_missing += o.files_missing;
        self.small_files_older += o.small_files_older;
        self.small_files_torn += o.small_files_torn;
    }
}

/// splitmix64: a small seeded generator, reproducible from the seed alone.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl PowerJournal {
    /// The current position: a crash "now" keeps exactly what is durable at it.
    pub fn now(&self) -> u64 {
        self.now
    }

    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// A DMA write is issued; the returned id marks its completion.
    pub fn write_issued(&mut self, path: &Path, pos: u64, bytes: &[u8], dsync: bool) -> usize {
        let data = if bytes.iter().all(|&b| b == 0) {
            Data::Zeros(bytes.len())
        } else {
            Data::Bytes(bytes.to_vec())
        };
        let issued = self.tick();
        self.writes.push(Write {
            path: path.to_path_buf(),
            pos,
            data,
            dsync,
            issued,
            completed: None,
        });
        self.writes.len() - 1
    }

    pub fn write_completed(&mut self, id: usize) {
        let t = self.tick();
        if let Some(w) = self.writes.get_mut(id) {
            w.completed = Some(t);
        }
    }

    pub fn sync_issued(&mut self, path: &Path) -> usize {
        let issued = self.tick();
        self.syncs.push(Sync {
            path: path.to_path_buf(),
            issued,
            completed: None,
        });
        self.syncs.len() - 1
    }

    pub fn sync_completed(&mut self, id: usize) {
        let t = self.tick();
        if let Some(s) = self.syncs.get_mut(id) {
            s.completed = Some(t);
        }
    }

    /// A segment file was created (its directory entry is durable after the next
    /// directory fsync).
    pub fn file_created(&mut self, path: &Path) {
        let t = self.tick();
        self.created.entry(path.to_path_buf()).or_insert(t);
    }

    /// A small file was replaced by rename with `bytes`.
    pub fn file_renamed(&mut self, path: &Path, bytes: Vec<u8>, data_synced: bool) {
        let renamed = self.tick();
        self.small
            .entry(path.to_path_buf())
            .or_default()
            .push(Version {
                bytes,
                data_synced,
                renamed,
            });
    }

    /// A directory fsync completed.
    pub fn dir_synced(&mut self, dir: &Path) {
        let t = self.tick();
        self.dir_syncs.push((dir.to_path_buf(), t));
    }

    fn last_dir_sync(&self, dir: &Path, at: u64) -> u64 {
        self.dir_syncs
            .iter()
            .filter(|(d, t)| d == dir && *t <= at)
            .map(|&(_, t)| t)
            .max()
            .unwrap_or(0)
    }

    fn durable(&self, w: &Write, at: u64) -> bool {
        let Some(done) = w.completed.filter(|&c| c <= at) else {
            return false;
        };
        w.dsync
            || self.syncs.iter().any(|s| {
                s.path == w.path && s.issued > done && s.completed.is_some_and(|c| c <= at)
            })
    }

    /// Writes into `out` (a directory, created) the files of directory `dir` as a power cut
    /// at position `at` may leave them, the choices drawn from `rng`.
    pub fn write_image(
        &self,
        dir: &Path,
        at: u64,
        rng: &mut Rng,
        out: &Path,
    ) -> std::io::Result<ImageStats> {
        let mut st = ImageStats::default();
        std::fs::create_dir_all(out)?;
        let dir_synced = self.last_dir_sync(dir, at);
        let mut files: BTreeMap<&Path, Vec<u8>> = BTreeMap::new();
        for (path, &t) in &self.created {
            if path.parent() != Some(dir) || t > at {
                continue;
            }
            if t > dir_synced && rng.below(3) == 0 {
                st.files_missing += 1;
                continue;
            }
            files.insert(path, Vec::new());
        }
        for w in self.writes.iter().filter(|w| w.issued <= at) {
            let Some(file) = files.get_mut(w.path.as_path()) else {
                continue;
            };
            let len = w.data.len();
            let keep = if self.durable(w, at) {
                st.writes_durable += 1;
                len
            } else {
                match rng.below(4) {
                    0 => {
                        st.writes_lost += 1;
                        0
                    }
                    1 => {
                        st.writes_whole += 1;
                        len
                    }
                    2 => {
                        st.writes_prefix += 1;
                        rng.below((len / SECTOR_BYTES) as u64) as usize * SECTOR_BYTES
                    }
                    _ => {
                        st.writes_torn += 1;
                        let sectors = rng.below((len / SECTOR_BYTES) as u64) as usize;
                        sectors * SECTOR_BYTES + 1 + rng.below(SECTOR_BYTES as u64 - 1) as usize
                    }
                }
            };
            let pos = w.pos as usize;
            if file.len() < pos + len {
                file.resize(pos + len, 0);
            }
            match &w.data {
                Data::Bytes(b) => file[pos..pos + keep].copy_from_slice(&b[..keep]),
                Data::Zeros(_) => file[pos..pos + keep].fill(0),
            }
        }
        for (path, bytes) in files {
            if let Some(name) = path.file_name() {
                std::fs::write(out.join(name), bytes)?;
            }
        }
        for (path, versions) in &self.small {
            if path.parent() != Some(dir) {
                continue;
            }
            let Some(name) = path.file_name() else {
                continue;
            };
            // The durable binding, then every later rename by `at`.
            let base = versions.iter().rposition(|v| v.renamed <= dir_synced);
            let newest = versions.iter().rposition(|v| v.renamed <= at);
            let Some(newest) = newest else { continue };
            let lowest = base.map_or(0, |b| b as u64);
            // One more choice below the first candidate: no file at all (no durable one yet).
            let pick = lowest + rng.below(newest as u64 + 1 - lowest + u64::from(base.is_none()));
            if base.is_none() && pick == newest as u64 + 1 {
                st.small_files_older += 1;
                continue;
            }
            if pick < newest as u64 {
                st.small_files_older += 1;
            }
            let v = &versions[pick as usize];
            let bytes = if v.data_synced || rng.below(2) == 0 {
                &v.bytes[..]
            } else {
                st.small_files_torn += 1;
                &v.bytes[..rng.below(v.bytes.len() as u64 + 1) as usize]
            };
            std::fs::write(out.join(name), bytes)?;
        }
        Ok(st)
    }
}
