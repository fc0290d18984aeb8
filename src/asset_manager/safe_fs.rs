//! File access under the cache dir and the runtime bin dir that never follows or creates a link.
//!
//! Those directories may hold anything an attacker or a crash left behind. Every file below them
//! is reached relative to an open directory handle ([`Dir`]), one path component at a time, with
//! `O_NOFOLLOW`; new temporaries are created with `O_EXCL`; renames and removals are `renameat`
//! and `unlinkat` on the same handle. A symlink (or a FIFO, socket or device) found where a file
//! or directory of ours belongs is removed (the link itself, never its target) and reported
//! through the [`LinkReporter`]; the file it pointed to is never opened.
//!
//! Reads and writes only entries of the directories it was given.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::error::AssetError;

/// Called with the path of every link (or other non-regular entry) removed from a directory.
pub(crate) type LinkReporter = Arc<dyn Fn(&Path) + Send + Sync>;

/// Mode of directories created below the caller's directory.
const DIR_MODE: u32 = 0o755;

/// Prefix of the temporaries that [`Dir::write_atomic`] creates.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// Attempts at opening an entry whose planted link was just removed (it may be planted again).
const OPEN_ATTEMPTS: usize = 3;

/// Whether a write waits for the disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync the file before its rename and the directory after it.
    Now,
    /// Rename without waiting: what is read back in this boot is right, a crash may lose it.
    Deferred,
}

/// An open directory: every entry below it is opened relative to this handle.
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
    report: LinkReporter,
}

/// What `lstat` says about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Missing,
    Regular,
    Directory,
    /// A symlink, FIFO, socket or device: never ours.
    Foreign,
}

/// The identity and state of a regular file, as far as a verified record is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

impl Dir {
    /// Opens the caller's directory `path` (creating it and its parents): the caller chose it, so
    /// a link in that path is the caller's business. Everything below it is ours.
    pub(crate) fn open_root(path: &Path, report: LinkReporter) -> Result<Dir, AssetError> {
        std::fs::create_dir_all(path).map_err(AssetError::io("creating directory", path))?;
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| AssetError::io("opening directory", path)(e.into()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
            report,
        })
    }

    /// Opens the subdirectory `name` (one component), creating it when missing; a link or other
    /// foreign entry in its place is removed and reported first.
    pub(crate) fn subdir(&self, name: &str) -> Result<Dir, AssetError> {
        let path = self.join(name);
        for _ in 0..OPEN_ATTEMPTS {
            match self.kind(name)? {
                EntryKind::Foreign => self.remove_foreign(name)?,
                EntryKind::Regular => {
                    return Err(AssetError::io("opening directory", &path)(std::io::Error::other(
                        "a regular file is in the way where a directory belongs; remove it",
                    )))
                }
                EntryKind::Missing => match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(AssetError::io("creating directory", &path)(e.into())),
                },
                EntryKind::Directory => {}
            }
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => {
                    return Ok(Dir {
                        fd,
                        path,
                        report: self.report.clone(),
                    })
                }
                // Replaced by a link or a file between the check and the open: look again.
                Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT) => continue,
                Err(e) => return Err(AssetError::io("opening directory", &path)(e.into())),
            }
        }
        Err(AssetError::io("opening directory", &path)(std::io::Error::other(
            "something keeps replacing it with a link",
        )))
    }

    /// Opens the directory `relative` below this one, component by component (see [`Dir::subdir`]).
    pub(crate) fn subdir_path(&self, relative: &str) -> Result<Dir, AssetError> {
        let mut components = relative.split('/').filter(|c| !c.is_empty());
        let Some(first) = components.next() else {
            return self.try_clone();
        };
        let mut dir = self.subdir(first)?;
        for component in components {
            dir = dir.subdir(component)?;
        }
        Ok(dir)
    }

    fn try_clone(&self) -> Result<Dir, AssetError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(AssetError::io("duplicating the handle of", &self.path))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
            report: self.report.clone(),
        })
    }

    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `{dir}/{name}`, for messages.
    pub(crate) fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// What `name` is, without following a link.
    pub(crate) fn kind(&self, name: &str) -> Result<EntryKind, AssetError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(match FileType::from_raw_mode(stat.st_mode as _) {
                FileType::RegularFile => EntryKind::Regular,
                FileType::Directory => EntryKind::Directory,
                _ => EntryKind::Foreign,
            }),
            Err(Errno::NOENT) => Ok(EntryKind::Missing),
            Err(e) => Err(AssetError::io("reading metadata of", self.join(name))(e.into())),
        }
    }

    /// Removes a link or other foreign entry at `name` and reports it; a directory is an error
    /// (it is not ours to delete), a regular file is simply removed.
    pub(crate) fn remove_foreign(&self, name: &str) -> Result<(), AssetError> {
        let path = self.join(name);
        match self.kind(name)? {
            EntryKind::Missing => Ok(()),
            EntryKind::Directory => Err(AssetError::io("installing", &path)(std::io::Error::other(
                "a directory is in the way; remove it",
            ))),
            kind => {
                match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(AssetError::io("removing", &path)(e.into())),
                }
                if kind == EntryKind::Foreign {
                    (self.report)(&path);
                }
                Ok(())
            }
        }
    }

    /// Removes `name` if it exists (a link is removed as a link).
    pub(crate) fn remove(&self, name: &str) -> Result<(), AssetError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(AssetError::io("removing", self.join(name))(e.into())),
        }
    }

    /// Opens the existing regular file `name` (read-write when `write`), or `None` when there is
    /// none. A link or other foreign entry there is removed and reported, and counts as none.
    pub(crate) fn open_regular(&self, name: &str, write: bool) -> Result<Option<File>, AssetError> {
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        // NONBLOCK: opening a planted FIFO must not wait for a writer.
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        for _ in 0..OPEN_ATTEMPTS {
            match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
                Ok(fd) => {
                    let stat = rustix::fs::fstat(&fd)
                        .map_err(|e| AssetError::io("reading metadata of", self.join(name))(e.into()))?;
                    if FileType::from_raw_mode(stat.st_mode as _) == FileType::RegularFile {
                        clear_nonblock(&fd);
                        return Ok(Some(File::from(fd)));
                    }
                    drop(fd);
                    self.remove_foreign(name)?;
                    return Ok(None);
                }
                Err(Errno::NOENT) => return Ok(None),
                // A symlink (Linux: ELOOP; some BSDs: EMLINK).
                Err(Errno::LOOP | Errno::MLINK) => self.remove_foreign(name)?,
                Err(Errno::ISDIR) => return Err(AssetError::io("opening", self.join(name))(Errno::ISDIR.into())),
                Err(e) => return Err(AssetError::io("opening", self.join(name))(e.into())),
            }
        }
        Ok(None)
    }

    /// Opens `name` read-write, creating it when missing (for lock files): never through a link.
    pub(crate) fn open_or_create(&self, name: &str) -> Result<File, AssetError> {
        for _ in 0..OPEN_ATTEMPTS {
            if let Some(file) = self.open_regular(name, true)? {
                return Ok(file);
            }
            match self.create_new(name, 0o644) {
                Ok(file) => return Ok(file),
                Err(AssetError::Io { error, .. }) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(AssetError::io("opening", self.join(name))(std::io::Error::other(
            "something keeps replacing it",
        )))
    }

    /// Creates `name`, which must not exist (`O_EXCL`, so never through a link), read-write.
    pub(crate) fn create_new(&self, name: &str, mode: u32) -> Result<File, AssetError> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(mode as _))
            .map_err(|e| AssetError::io("creating", self.join(name))(e.into()))?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` within this directory (a link at `to` is replaced, not followed).
    pub(crate) fn rename(&self, from: &str, to: &str) -> Result<(), AssetError> {
        rustix::fs::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| AssetError::io("renaming into place", self.join(to))(e.into()))
    }

    /// Makes the renames in this directory durable (best effort).
    pub(crate) fn sync(&self) {
        let _ = rustix::fs::fsync(&self.fd);
    }

    /// The stamp of the regular file `name`, or `None` when it is missing or not a regular file.
    pub(crate) fn stamp(&self, name: &str) -> Option<Stamp> {
        let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        (FileType::from_raw_mode(stat.st_mode as _) == FileType::RegularFile).then(|| stamp_of(&stat))
    }

    /// Reads the regular file `name` if it exists and is at most `limit` bytes.
    pub(crate) fn read_small(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, AssetError> {
        let Some(file) = self.open_regular(name, false)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(AssetError::io("reading", self.join(name)))?;
        Ok((bytes.len() as u64 <= limit).then_some(bytes))
    }

    /// Writes `name` atomically: a fresh `O_EXCL` temporary beside it, mode, fsync (with
    /// [`Durability::Now`]), rename, fsync of the directory (likewise).
    pub(crate) fn write_atomic(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        durability: Durability,
    ) -> Result<(), AssetError> {
        let temp = format!("{TEMP_PREFIX}{name}-{:016x}", fastrand::u64(..));
        let mut file = self.create_new(&temp, mode)?;
        let written = file
            .write_all(bytes)
            .and_then(|()| set_mode(&file, mode))
            .and_then(|()| match durability {
                Durability::Now => file.sync_all(),
                Durability::Deferred => Ok(()),
            });
        drop(file);
        if let Err(error) = written {
            let _ = self.remove(&temp);
            return Err(AssetError::io("writing", self.join(&temp))(error));
        }
        // A link at `name` would only be replaced by the rename, but it is also reported.
        if self.kind(name)? == EntryKind::Foreign {
            self.remove_foreign(name)?;
        }
        self.rename(&temp, name).inspect_err(|_| {
            let _ = self.remove(&temp);
        })?;
        if durability == Durability::Now {
            self.sync();
        }
        Ok(())
    }
}

impl AsFd for Dir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[allow(clippy::unnecessary_cast)] // The field types differ between Linux and macOS.
fn stamp_of(stat: &rustix::fs::Stat) -> Stamp {
    Stamp {
        size: stat.st_size as u64,
        mtime_ns: stat.st_mtime as i128 * 1_000_000_000 + stat.st_mtime_nsec as i128,
        ctime_ns: stat.st_ctime as i128 * 1_000_000_000 + stat.st_ctime_nsec as i128,
        inode: stat.st_ino as u64,
        device: stat.st_dev as u64,
    }
}

/// Sets the mode of an open file (never of what a path points to).
pub(crate) fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    rustix::fs::fchmod(file, Mode::from_raw_mode(mode as _)).map_err(Into::into)
}

/// The mode bits of an open file.
pub(crate) fn mode_of(file: &File) -> std::io::Result<u32> {
    Ok(rustix::fs::fstat(file)?.st_mode as u32 & 0o7777)
}

/// Regular files ignore O_NONBLOCK, but clear it anyway so reads behave the usual way.
fn clear_nonblock(fd: &OwnedFd) {
    if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, flags - OFlags::NONBLOCK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn dir_with_reports(path: &Path) -> (Dir, Arc<Mutex<Vec<PathBuf>>>) {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let dir = Dir::open_root(
            path,
            Arc::new(move |p: &Path| seen.lock().unwrap().push(p.to_path_buf())),
        )
        .unwrap();
        (dir, reports)
    }

    #[test]
    fn a_planted_link_is_removed_reported_and_its_target_untouched() {
        let root = tempfile::tempdir().unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (dir, reports) = dir_with_reports(&root.path().join("cache"));
        std::os::unix::fs::symlink(&victim, dir.join("file")).unwrap();

        assert!(dir.open_regular("file", true).unwrap().is_none());
        assert_eq!(*reports.lock().unwrap(), vec![dir.join("file")]);
        assert_eq!(dir.kind("file").unwrap(), EntryKind::Missing);

        std::os::unix::fs::symlink(&victim, dir.join("lock")).unwrap();
        dir.open_or_create("lock").unwrap();
        assert_eq!(dir.kind("lock").unwrap(), EntryKind::Regular);

        std::os::unix::fs::symlink(&victim, dir.join("record")).unwrap();
        dir.write_atomic("record", b"new", 0o644, Durability::Now).unwrap();
        assert_eq!(std::fs::read(dir.join("record")).unwrap(), b"new");
        assert!(dir.stamp("record").is_some());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn a_linked_subdirectory_is_replaced_by_a_real_one() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let (dir, reports) = dir_with_reports(&root.path().join("cache"));
        std::os::unix::fs::symlink(&elsewhere, dir.join("1.0.0")).unwrap();
        let version = dir.subdir_path("1.0.0/inner").unwrap();
        version.write_atomic("x", b"1", 0o644, Durability::Now).unwrap();
        assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none());
        assert_eq!(reports.lock().unwrap().len(), 1);
        assert!(std::fs::symlink_metadata(dir.join("1.0.0")).unwrap().is_dir());
    }

    #[test]
    fn create_new_refuses_an_existing_entry() {
        let root = tempfile::tempdir().unwrap();
        let (dir, _) = dir_with_reports(root.path());
        dir.create_new("t", 0o600).unwrap();
        let err = dir.create_new("t", 0o600).unwrap_err();
        assert!(matches!(err, AssetError::Io { ref error, .. } if error.kind() == std::io::ErrorKind::AlreadyExists));
    }
}
