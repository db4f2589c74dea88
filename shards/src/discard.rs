//! Removing a partition directory so that a crash part-way never leaves data that a later
//! partition of the same name could recover (Kafka's `.deleted` rename): the directory is
//! first renamed to `<name>.<unique>-delete` and the rename made durable, and only then are
//! its files removed. A crash after the rename leaves a directory no partition ever opens;
//! start-up removes such leftovers (`remove_deleted_dirs`) before any partition opens.
//!
//! Runs on: any core or start-up code; plain std file calls (deletes are rare and off the
//! data path).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::StorageError;

/// Ends the name of a directory being deleted. Partition directories end in `-<number>`
/// (topic names cannot contain `/`), the groups' offsets logs in `log-<number>`, so a live
/// directory never ends in it.
pub const DELETED_DIR_SUFFIX: &str = "-delete";

/// How deep under the data directory `remove_deleted_dirs` looks: `topics/<dir>` (depth 2)
/// and `groups/shard-N/log-G` (depth 3).
pub const DELETED_DIR_SEARCH_DEPTH_MAX: usize = 3;

/// Makes renamed names unique within the process (with the time and the pid across
/// processes), so deleting a partition twice never meets an earlier leftover.
static DELETE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// True when `name` is one `discard_dir` gave: `<name>.<hex>-delete`.
pub fn is_deleted_dir_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(DELETED_DIR_SUFFIX) else {
        return false;
    };
    match stem.rsplit_once('.') {
        Some((base, tag)) => {
            !base.is_empty() && !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_hexdigit())
        }
        None => false,
    }
}

/// The name `dir` is renamed to before its files are removed.
fn deleted_name(dir: &Path) -> Option<PathBuf> {
    let name = dir.file_name()?.to_str()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = DELETE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag = format!("{:x}{nanos:016x}{n:x}", std::process::id());
    Some(dir.with_file_name(format!("{name}.{tag}{DELETED_DIR_SUFFIX}")))
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync dir", dir, e))
}

/// Removes the directory `dir` and everything in it, crash-safely: rename to a
/// `-delete` name, fsync the parent (the rename is durable before any file goes), remove.
/// A missing `dir` is not an error (deleted already).
pub fn discard_dir(dir: &Path) -> Result<(), StorageError> {
    let Some(doomed) = deleted_name(dir) else {
        return Err(StorageError::io(
            "name deleted dir",
            dir,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    };
    match std::fs::rename(dir, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("rename for delete", dir, e)),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    remove_tree(&doomed)
}

fn remove_tree(dir: &Path) -> Result<(), StorageError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove dir", dir, e)),
    }
}

/// Removes every directory `discard_dir` left half-deleted (a crash between its rename and
/// its removal) under `root`, down to `DELETED_DIR_SEARCH_DEPTH_MAX` levels; returns the
/// directories removed. For start-up, before any partition under `root` is opened. A
/// missing `root` has nothing to remove.
pub fn remove_deleted_dirs(root: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut removed = Vec::new();
    walk(root, DELETED_DIR_SEARCH_DEPTH_MAX, &mut removed)?;
    Ok(removed)
}

fn walk(dir: &Path, depth: usize, removed: &mut Vec<PathBuf>) -> Result<(), StorageError> {
    if depth == 0 {
        return Ok(());
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io("list dir", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list dir", dir, e))?;
        let is_dir = entry
            .file_type()
            .map_err(|e| StorageError::io("stat", entry.path(), e))?
            .is_dir();
        if !is_dir {
            continue;
        }
        let path = entry.path();
        if entry.file_name().to_str().is_some_and(is_deleted_dir_name) {
            remove_tree(&path)?;
            removed.push(path);
        } else {
            walk(&path, depth - 1, removed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only names discard_dir gives count as deleted: live partition and offsets-log
    // directories, and topic names that merely contain "-delete", do not.
    #[test]
    fn deleted_names() {
        let d = deleted_name(Path::new("/x/topics/orders-3")).unwrap();
        let n = d.file_name().unwrap().to_str().unwrap();
        assert!(n.starts_with("orders-3.") && is_deleted_dir_name(n), "{n}");
        assert_ne!(
            deleted_name(Path::new("/x/a-0")),
            deleted_name(Path::new("/x/a-0"))
        );
        for live in [
            "orders-3",
            "log-12",
            "a-delete-0",
            "a.b-delete-7",
            "x-delete",
            ".ab-delete",
        ] {
            assert!(!is_deleted_dir_name(live), "{live}");
        }
        assert!(!is_deleted_dir_name("t-0.zz-delete"));
    }

    // discard_dir removes the tree and leaves no renamed copy; a crash after the rename
    // (simulated by renaming by hand) leaves a directory remove_deleted_dirs finds at any
    // depth up to its bound, while live directories stay.
    #[test]
    fn discard_and_sweep() {
        let root = tempfile::tempdir().unwrap();
        let topics = root.path().join("topics");
        let live = topics.join("t-0");
        std::fs::create_dir_all(&live).unwrap();
        std::fs::write(live.join("00000000000000000000.log"), b"data").unwrap();
        discard_dir(&live).unwrap();
        assert_eq!(std::fs::read_dir(&topics).unwrap().count(), 0);
        discard_dir(&live).unwrap(); // gone already: fine

        let keep = topics.join("t-1");
        std::fs::create_dir_all(&keep).unwrap();
        let half = deleted_name(&topics.join("t-0")).unwrap();
        std::fs::create_dir_all(&half).unwrap();
        std::fs::write(half.join("00000000000000000000.log"), b"old").unwrap();
        let deep = deleted_name(&root.path().join("groups/shard-0/log-3")).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        let removed = remove_deleted_dirs(root.path()).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!half.exists() && !deep.exists() && keep.exists());
        assert!(
            remove_deleted_dirs(&root.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
