//! The kernel build cache: one entry per cache key in `{cache}/kernel/{arch}-{key}/`, holding the
//! image, its final config, its release string, the build log and the SHA-256 of image and config.
//!
//! Reads and writes only below the kernel cache folder. An entry is staged in a temporary folder
//! and renamed into place whole, checked against its digests on every read (a corrupt one is
//! removed so it is rebuilt), and builds take the cache's lock file one at a time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use boot_assets::Arch;

use super::{copy_file, ArchRecipe, BuiltKernel, BUILD_LOG};
use crate::util;

/// Bumped whenever the build recipe changes in a way the other key inputs do not show.
const CACHE_FORMAT: &str = "boot-assets-kernel-cache-v2";

/// The one lock file that keeps kernel builds one at a time on a machine.
const BUILD_LOCK_FILE: &str = "build.lock";

/// The file inside a cache entry that is written last: its presence means the entry is complete.
const CACHED_IMAGE: &str = "kernel";

/// The final configuration inside a cache entry.
const CACHED_CONFIG: &str = "kernel.config";

/// The kernel release string (`6.1.192`) inside a cache entry.
const CACHED_RELEASE: &str = "kernel.release";

/// The SHA-256 of the entry's image and config (`sha256sum` format), checked on every hit.
const CACHED_DIGESTS: &str = "SHA256SUMS";

/// Everything a kernel build's bytes depend on.
pub struct CacheKeyInputs<'a> {
    pub arch: Arch,
    pub make_target: &'a str,
    /// The fragment files' contents, in merge order.
    pub fragment_texts: &'a [String],
    pub source_identity: &'a str,
    /// The first line of `{compiler} --version`.
    pub compiler_version: &'a str,
    /// The pinned `KBUILD_BUILD_TIMESTAMP`.
    pub timestamp: &'a str,
}

/// The text whose SHA-256 keys a cache entry (also written at the top of the build log).
pub fn cache_key_text(inputs: &CacheKeyInputs) -> String {
    let mut text = String::new();
    writeln!(
        text,
        "{CACHE_FORMAT}\narch={}\ntarget={}",
        inputs.arch, inputs.make_target
    )
    .unwrap();
    for fragment in inputs.fragment_texts {
        writeln!(text, "fragment={}", util::sha256_bytes(fragment.as_bytes())).unwrap();
    }
    writeln!(
        text,
        "source={}\ncompiler={}\ntimestamp={}",
        inputs.source_identity, inputs.compiler_version, inputs.timestamp
    )
    .unwrap();
    text
}

/// Takes the kernel cache's build lock, waiting (and saying so) while another build holds it.
pub(super) fn lock_cache(arch: Arch, kernel_cache: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(kernel_cache).with_context(|| format!("creating {}", kernel_cache.display()))?;
    let lock_path = kernel_cache.join(BUILD_LOCK_FILE);
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    if lock.try_lock().is_err() {
        eprintln!(
            "kernel {arch}: waiting for another kernel build to finish ({})",
            lock_path.display()
        );
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
    }
    Ok(lock)
}

/// A complete, intact cache entry, or `None` when it is absent. An entry whose image or config
/// no longer matches its recorded digests (or that has none) is reported and removed, so the
/// caller rebuilds it.
pub(super) fn read_entry(entry: &Path) -> Result<Option<BuiltKernel>> {
    let image = entry.join(CACHED_IMAGE);
    if !image.is_file() {
        return Ok(None);
    }
    let recorded = std::fs::read_to_string(entry.join(CACHED_DIGESTS)).unwrap_or_default();
    let actual = entry_digests(entry)?;
    if recorded != actual {
        eprintln!(
            "kernel: cache entry {} is corrupt (its image or config does not match {CACHED_DIGESTS}); \
             removing it and rebuilding",
            entry.display()
        );
        discard_entry(entry)?;
        return Ok(None);
    }
    let release_path = entry.join(CACHED_RELEASE);
    let release = std::fs::read_to_string(&release_path)
        .with_context(|| format!("reading {}", release_path.display()))?
        .trim()
        .to_owned();
    Ok(Some(BuiltKernel {
        image,
        config: entry.join(CACHED_CONFIG),
        release,
        cached: true,
    }))
}

/// The `SHA256SUMS` text of an entry's image and config, as they are now.
fn entry_digests(entry: &Path) -> Result<String> {
    let mut text = String::new();
    for name in [CACHED_IMAGE, CACHED_CONFIG] {
        let path = entry.join(name);
        let digest = util::sha256_file(&path).with_context(|| format!("hashing {}", path.display()))?;
        writeln!(text, "{digest}  {name}").expect("writing to a String");
    }
    Ok(text)
}

/// Moves a broken entry aside (so no reader sees it half-deleted), then deletes it.
fn discard_entry(entry: &Path) -> Result<()> {
    let parent = entry.parent().context("a cache entry has a parent directory")?;
    let aside = tempfile::Builder::new()
        .prefix(".discarded-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a directory in {}", parent.display()))?;
    let target = aside.path().join("entry");
    std::fs::rename(entry, &target).with_context(|| format!("moving {} aside", entry.display()))?;
    // Dropping `aside` deletes it with the entry inside.
    Ok(())
}

/// Copies the image, config, log and release into a staging directory with their digests,
/// then renames it into place as the cache entry.
pub(super) fn store_entry(
    kernel_cache: &Path,
    entry: &Path,
    work: &Path,
    recipe: &ArchRecipe,
    release: &str,
) -> Result<()> {
    let staging = tempfile::tempdir_in(kernel_cache)
        .with_context(|| format!("creating a staging directory in {}", kernel_cache.display()))?;
    copy_file(&work.join(".config"), &staging.path().join(CACHED_CONFIG))?;
    copy_file(&work.join(BUILD_LOG), &staging.path().join(BUILD_LOG))?;
    std::fs::write(staging.path().join(CACHED_RELEASE), release).context("writing kernel.release")?;
    copy_file(&work.join(recipe.image), &staging.path().join(CACHED_IMAGE))?;
    let digests = entry_digests(staging.path())?;
    std::fs::write(staging.path().join(CACHED_DIGESTS), digests).context("writing the entry's SHA256SUMS")?;
    let staged = staging.keep();
    std::fs::rename(&staged, entry).with_context(|| format!("moving {} to {}", staged.display(), entry.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cache_key_input_changes_the_key() {
        let fragments = ["CONFIG_A=y\n".to_owned(), "CONFIG_B=y\n".to_owned()];
        let base = CacheKeyInputs {
            arch: Arch::X86_64,
            make_target: "bzImage",
            fragment_texts: &fragments,
            source_identity: "tarball-sha256:aa",
            compiler_version: "gcc (Debian 12.2.0-14) 12.2.0",
            timestamp: "1970-01-01T00:00:00Z",
        };
        let key = |inputs: &CacheKeyInputs| util::sha256_bytes(cache_key_text(inputs).as_bytes());
        let original = key(&base);
        assert_eq!(original, key(&CacheKeyInputs { ..base }), "the key is deterministic");
        let changed_fragment = ["CONFIG_A=y\n".to_owned(), "CONFIG_B=n\n".to_owned()];
        let variants = [
            CacheKeyInputs {
                arch: Arch::Arm64,
                ..base
            },
            CacheKeyInputs {
                fragment_texts: &changed_fragment,
                ..base
            },
            CacheKeyInputs {
                source_identity: "tarball-sha256:bb",
                ..base
            },
            CacheKeyInputs {
                compiler_version: "gcc (Debian 13.1.0) 13.1.0",
                ..base
            },
            CacheKeyInputs {
                timestamp: "2026-01-01T00:00:00Z",
                ..base
            },
        ];
        for variant in &variants {
            assert_ne!(key(variant), original);
        }
    }
}
