//! Small helpers every command shares: the repository root, SOURCE_DATE_EPOCH, streaming
//! SHA-256 of files, and atomic writes with the path in the error.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Read buffer for hashing files: large enough that SHA-256, not syscalls, is the limit.
const HASH_BUFFER_BYTES: usize = 1 << 20;

/// The repository root (the workspace that holds `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives inside the repository")
        .to_path_buf()
}

/// Where expensive, deterministic outputs (kernel builds, package files) are cached between runs:
/// `$BOOT_ASSETS_CACHE_DIR`, else `$XDG_CACHE_HOME/boot-assets`, else `~/.cache/boot-assets`.
/// Entries inside are keyed by a hash of all their inputs, so a stale entry is never reused.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOOT_ASSETS_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("boot-assets");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("boot-assets")
}

/// Where intermediate build outputs go by default: `build/` in the repository.
pub fn build_dir() -> PathBuf {
    project_root().join("build")
}

/// `SOURCE_DATE_EPOCH` as seconds, `None` when unset; a malformed value is an error.
pub fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => text.trim().parse::<u64>().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={text:?} is not a whole number of seconds since 1970-01-01 UTC")
        }),
        Err(_) => Ok(None),
    }
}

/// Seconds since the epoch now, for `built_at` when SOURCE_DATE_EPOCH is unset.
pub fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The length of a file in bytes; the error names the file.
pub fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

/// SHA-256 of a file as 64 lowercase hex digits, read in large chunks.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        let read = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// SHA-256 of bytes as 64 lowercase hex digits.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Writes a file atomically (temporary file beside it, then rename), creating its directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    boot_assets::fsutil::write_atomic(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes an executable atomically: like [`write_atomic`], then mode 0755 before the rename.
pub fn write_executable_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    }
    boot_assets::fsutil::write_atomic_with(path, |file| {
        file.write_all(bytes)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o755))
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// A regular file that must exist, or an error naming the flag that supplied it.
pub fn require_file(path: &Path, flag: &str) -> Result<()> {
    let metadata = std::fs::metadata(path).with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    anyhow::ensure!(metadata.is_file(), "{flag} {}: is not a regular file", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_bytes(b"abc"));
    }

    #[test]
    fn missing_file_names_flag_and_path() {
        let err = require_file(Path::new("/no/such/kernel"), "--kernel").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("--kernel /no/such/kernel: cannot read it"),
            "{err:#}"
        );
    }
}
