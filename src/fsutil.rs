//! Atomic file writes: the bytes go to a temporary file in the target's own directory, are
//! flushed to disk, and the file is renamed over the target, so a reader sees either the old
//! file or the whole new one, never a half-written one.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file beside it, fsync, rename).
///
/// The file gets mode 0644 on Unix, whatever the process umask, so outputs do not depend on
/// who built them.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes))
}

/// Creates `path` atomically from whatever `fill` writes into the temporary file.
///
/// The file starts with mode 0644; `fill` may set another mode before it is renamed into place.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| with_path(e, "creating a temporary file in", dir))?;
    // The default mode first, so that `fill` may still choose another (0755 for programs).
    set_mode_0644(temp.as_file())?;
    fill(temp.as_file_mut()).map_err(|e| with_path(e, "writing", temp.path()))?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .map_err(|e| with_path(e.error, "renaming into place", path))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode_0644(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_mode_0644(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Keeps the error kind but puts the path and the step into the message.
fn with_path(error: std::io::Error, step: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{step} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory in which `name` was written once with [`write_atomic`].
    fn written_once(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join(name);
        write_atomic(&target, bytes).unwrap();
        (dir, target)
    }

    #[test]
    fn replaces_whole_file_and_leaves_no_temporaries() {
        let (dir, target) = written_once("out.json", b"first");
        write_atomic(&target, b"second").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);
    }

    #[test]
    fn failed_fill_leaves_target_untouched() {
        let (dir, target) = written_once("out", b"old");
        let err = write_atomic_with(&target, |_| Err(std::io::Error::other("boom"))).unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directory_names_it() {
        let err = write_atomic(Path::new("/nonexistent-dir-xyz/out"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir-xyz"), "{err}");
    }
}
