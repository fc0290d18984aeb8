//! The install lock: an advisory exclusive lock (`flock`) on a `.lock` file inside the directory
//! being installed into, so two processes preparing the same version take turns and neither
//! ever sees the other's half-written files.
//!
//! Reads and writes only the lock file itself; the lock is released when the guard is dropped
//! (closing the descriptor releases it, even if the process is killed).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::AssetError;

/// File name of the lock inside a locked directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// Holds the lock on one directory until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Creates `dir` if needed and waits until its lock is ours.
pub(crate) fn lock_dir(dir: &Path) -> Result<DirLock, AssetError> {
    let file = open_lock_file(dir)?;
    fs4::FileExt::lock(&file).map_err(AssetError::io("locking", lock_path(dir)))?;
    Ok(DirLock { _file: file })
}

/// Takes the lock on `dir` only if nobody holds it; `None` when another process does.
pub(crate) fn try_lock_dir(dir: &Path) -> Result<Option<DirLock>, AssetError> {
    let file = open_lock_file(dir)?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(DirLock { _file: file })),
        Err(fs4::TryLockError::WouldBlock) => Ok(None),
        Err(fs4::TryLockError::Error(source)) => Err(AssetError::Io {
            step: "locking",
            path: lock_path(dir),
            error: source,
        }),
    }
}

fn lock_path(dir: &Path) -> PathBuf {
    dir.join(LOCK_FILE)
}

fn open_lock_file(dir: &Path) -> Result<File, AssetError> {
    std::fs::create_dir_all(dir).map_err(AssetError::io("creating directory", dir))?;
    let path = lock_path(dir);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(AssetError::io("opening lock file", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_dir(dir.path()).unwrap();
        assert!(try_lock_dir(dir.path()).unwrap().is_none());
        drop(first);
        assert!(try_lock_dir(dir.path()).unwrap().is_some());
    }
}
