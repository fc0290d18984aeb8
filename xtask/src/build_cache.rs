//! A cache of expensive, deterministic outputs (unpacked roots, tools built from source),
//! one folder per key: `{cache}/{kind}/{sha256 of the key text}/`.
//!
//! The key text names every input; an entry is built into a temporary folder beside it and renamed
//! into place whole, with the key text and (for [`Verify::Digests`]) the SHA-256 of every file it
//! holds, which every hit checks: a damaged entry is reported, removed and built again. Builds of
//! one kind take that kind's lock file one at a time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::util;

/// The key text inside an entry; an entry without it is incomplete.
const KEY_FILE: &str = ".key";

/// The digests of an entry's files (`sha256sum` format, paths relative to the entry).
const DIGESTS_FILE: &str = ".sha256sums";

/// The lock file of a kind.
const LOCK_FILE: &str = ".lock";

/// How a hit is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every file against its recorded SHA-256 (outputs that ship).
    Digests,
    /// Only that the entry is complete (large inputs unpacked from verified files).
    Complete,
}

/// The entry of `key_text` under `{cache}/{kind}/`, built by `build` (which fills the folder it
/// is given) when it is missing or damaged. Prints one line saying which.
pub fn cached(kind: &str, key_text: &str, verify: Verify, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    cached_in(&util::cache_dir().join(kind), key_text, verify, build)
}

/// [`cached`] with the kind's folder given.
fn cached_in(base: &Path, key_text: &str, verify: Verify, build: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let kind = base.display();
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    let entry = base.join(&util::sha256_bytes(key_text.as_bytes())[..32]);
    let _lock = lock(base)?;
    if is_intact(&entry, key_text, verify)? {
        eprintln!("cache: hit {}", entry.display());
        return Ok(entry);
    }
    let staging = tempfile::tempdir_in(base).with_context(|| format!("creating a folder in {kind}"))?;
    let out = staging.path().join("entry");
    std::fs::create_dir(&out).with_context(|| format!("creating {}", out.display()))?;
    build(&out)?;
    if verify == Verify::Digests {
        util::write_atomic(&out.join(DIGESTS_FILE), digests_of(&out)?.as_bytes())?;
    }
    util::write_atomic(&out.join(KEY_FILE), key_text.as_bytes())?;
    std::fs::rename(&out, &entry).with_context(|| format!("moving the new entry to {}", entry.display()))?;
    eprintln!("cache: stored {}", entry.display());
    Ok(entry)
}

/// Takes the kind's lock, waiting (and saying so) while another build holds it.
fn lock(base: &Path) -> Result<std::fs::File> {
    let path = base.join(LOCK_FILE);
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!("cache: waiting for another build to finish ({})", path.display());
        file.lock().with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// True when `entry` is complete, has `key_text` and (with digests) every file still matches;
/// an entry that fails a check is reported and removed.
fn is_intact(entry: &Path, key_text: &str, verify: Verify) -> Result<bool> {
    let Ok(recorded) = std::fs::read_to_string(entry.join(KEY_FILE)) else {
        if entry.exists() {
            remove_entry(entry, "it is incomplete")?;
        }
        return Ok(false);
    };
    if recorded != key_text {
        bail!(
            "cache entry {} holds another key (a hash collision or a hand edit): remove it",
            entry.display()
        );
    }
    if verify == Verify::Digests {
        let recorded = std::fs::read_to_string(entry.join(DIGESTS_FILE)).unwrap_or_default();
        if recorded != digests_of(entry)? {
            remove_entry(entry, "its files no longer match their recorded SHA-256")?;
            return Ok(false);
        }
    }
    Ok(true)
}

fn remove_entry(entry: &Path, why: &str) -> Result<()> {
    eprintln!("cache: removing {} ({why}); building it again", entry.display());
    std::fs::remove_dir_all(entry).with_context(|| format!("removing {}", entry.display()))
}

/// `sha256  path` lines of every regular file below `dir` but the cache's own, sorted by path.
fn digests_of(dir: &Path) -> Result<String> {
    let mut text = String::new();
    for item in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let item = item.with_context(|| format!("reading {}", dir.display()))?;
        let relative = item.path().strip_prefix(dir).expect("walkdir stays below its root");
        let name = relative.to_string_lossy();
        if !item.file_type().is_file() || name == KEY_FILE || name == DIGESTS_FILE {
            continue;
        }
        writeln!(text, "{}  {name}", util::sha256_file(item.path())?).expect("writing to a String");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_built_once_and_rebuilt_when_damaged() {
        let cache = tempfile::tempdir().unwrap();
        let base = cache.path().join("test-kind");
        let builds = std::cell::Cell::new(0);
        let build = |dir: &Path| {
            builds.set(builds.get() + 1);
            std::fs::write(dir.join("tool"), b"bytes").map_err(Into::into)
        };
        let first = cached_in(&base, "key 1", Verify::Digests, build).unwrap();
        let second = cached_in(&base, "key 1", Verify::Digests, build).unwrap();
        assert_eq!((first.clone(), builds.get()), (second, 1));
        std::fs::write(first.join("tool"), b"other").unwrap();
        let third = cached_in(&base, "key 1", Verify::Digests, build).unwrap();
        assert_eq!(
            (std::fs::read(third.join("tool")).unwrap(), builds.get()),
            (b"bytes".to_vec(), 2)
        );
        let other = cached_in(&base, "key 2", Verify::Complete, build).unwrap();
        assert_ne!(other, first);
    }
}
