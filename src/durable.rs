//! Small files that must be replaced atomically and durably: the controller's metadata
//! snapshot, the group offsets snapshot, the producer-id block marks.
//!
//! Runs on: a blocking thread (`spawn_blocking`) or start-up code; these are std file calls.

use std::io::Write;
use std::path::Path;

/// Replaces `dir/name` with `bytes` so that after a crash the file holds either the old or
/// the new contents, never a mix: write `name.tmp`, fsync it, rename over `name`, fsync the
/// directory (so the rename itself is durable). Creates `dir` when missing.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", dir.join(name).display());
    std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("create temp file for", e))?;
    f.write_all(bytes).map_err(|e| io("write", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| io("rename into", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync the directory of", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The file is replaced whole, the temp file is gone, and a missing directory is created.
    #[test]
    fn replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        write_atomic(&sub, "f", b"one").unwrap();
        write_atomic(&sub, "f", b"second").unwrap();
        assert_eq!(std::fs::read(sub.join("f")).unwrap(), b"second");
        assert!(!sub.join("f.tmp").exists());
    }
}
