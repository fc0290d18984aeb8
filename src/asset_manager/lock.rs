//! The install lock: an advisory exclusive lock (`flock`) on a `.lock` file inside the directory
//! being installed into, so two processes preparing the same version take turns and neither
//! ever sees the other's half-written files.
//!
//! Reads and writes only the lock file itself, opened through the directory handle without
//! following a link (a planted `.lock` link is removed and reported, its target never created);
//! the lock is released when the guard is dropped (closing the descriptor releases it, even if
//! the process is killed).

use std::fs::File;

use super::error::AssetError;
use super::safe_fs::Dir;

/// File name of the lock inside a locked directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// Holds the lock on one directory until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Waits until the lock of `dir` is ours.
pub(crate) fn lock_dir(dir: &Dir) -> Result<DirLock, AssetError> {
    let file = dir.open_or_create(LOCK_FILE)?;
    fs4::FileExt::lock(&file).map_err(AssetError::io("locking", dir.join(LOCK_FILE)))?;
    Ok(DirLock { _file: file })
}

/// Takes the lock on `dir` only if nobody holds it; `None` when another process does.
pub(crate) fn try_lock_dir(dir: &Dir) -> Result<Option<DirLock>, AssetError> {
    let file = dir.open_or_create(LOCK_FILE)?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(DirLock { _file: file })),
        Err(fs4::TryLockError::WouldBlock) => Ok(None),
        Err(fs4::TryLockError::Error(source)) => Err(AssetError::Io {
            step: "locking",
            path: dir.join(LOCK_FILE),
            error: source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    #[test]
    fn second_lock_waits_for_the_first() {
        let temp = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(temp.path(), Arc::new(|_: &Path| {})).unwrap();
        let first = lock_dir(&dir).unwrap();
        assert!(try_lock_dir(&dir).unwrap().is_none());
        drop(first);
        assert!(try_lock_dir(&dir).unwrap().is_some());
    }
}
