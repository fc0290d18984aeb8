//! Locked Debian files (binary package files and source packages), from the download cache or
//! downloaded with the private apt state of their suite, each checked against its locked sha256
//! before it is handed out.
//!
//! Reads the lock entries given; writes only `{cache}/downloads/{sha256}` ([`DownloadCache`]).
//! apt names files after versions (with an escaped epoch), so downloads are matched by digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::Shell;

use super::apt::Apt;
use super::lock::{LockedPackage, LockedSource};
use super::suite::Suite;
use crate::downloads::DownloadCache;
use crate::util;

/// The package files of `entries`, in their order, read into memory and verified.
/// `update_hint` is the command that refreshes the lock, quoted in errors.
pub fn fetch_locked(sh: &Shell, entries: &[LockedPackage], update_hint: &str) -> Result<Vec<Vec<u8>>> {
    let cache = download_missing(sh, entries, update_hint)?;
    let mut files = Vec::new();
    for entry in entries {
        let path = cache.path(&entry.sha256);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading cached package file {} of {}", path.display(), entry.describe()))?;
        check_digest(&package_name(entry), &path, &util::sha256_bytes(&bytes), &entry.sha256)?;
        files.push(bytes);
    }
    Ok(files)
}

/// The cached package files of `entries`, in their order, downloaded when missing and verified by
/// hashing (for tools that read the files themselves, such as `dpkg-deb`).
pub fn fetch_locked_files(sh: &Shell, entries: &[LockedPackage], update_hint: &str) -> Result<Vec<PathBuf>> {
    let cache = download_missing(sh, entries, update_hint)?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = cache.path(&entry.sha256);
        check_digest(&package_name(entry), &path, &util::sha256_file(&path)?, &entry.sha256)?;
        paths.push(path);
    }
    Ok(paths)
}

/// How errors name a package file.
fn package_name(entry: &LockedPackage) -> String {
    format!("package {}", entry.describe())
}

/// Downloads the entries the cache lacks, grouped by suite and image arch (one apt call each).
fn download_missing(sh: &Shell, entries: &[LockedPackage], update_hint: &str) -> Result<DownloadCache> {
    let cache = DownloadCache::new();
    let mut missing: BTreeMap<(&str, &str), Vec<&LockedPackage>> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| !cache.path(&entry.sha256).exists()) {
        missing
            .entry((entry.suite.as_str(), entry.for_arch.as_str()))
            .or_default()
            .push(entry);
    }
    for ((suite, deb_arch), group) in missing {
        let apt = Apt::new(sh, Suite::parse(suite)?, deb_arch)?;
        let wanted: Vec<(String, &str)> = group
            .iter()
            .map(|entry| (package_name(entry), entry.sha256.as_str()))
            .collect();
        download_into_cache(sh, &apt, &cache, &wanted, update_hint, |apt, dir| {
            apt.download(sh, &group, dir)
        })?;
    }
    Ok(cache)
}

/// The cached files of a source package (the `.dsc` first), downloaded when missing (one by one,
/// from where apt says the suite's archive has them, each checked against its locked sha256
/// while written) and verified.
pub fn fetch_source(sh: &Shell, source: &LockedSource, deb_arch: &str, update_hint: &str) -> Result<Vec<PathBuf>> {
    let cache = DownloadCache::for_debian_archive();
    if source.files.iter().any(|file| !cache.path(&file.sha256).exists()) {
        let apt = Apt::new(sh, Suite::parse(&source.suite)?, deb_arch)?;
        apt.ensure_lists(sh)?;
        let uris = match apt.source_uris(sh, source) {
            Ok(uris) => uris,
            // The lists may predate the locked version: refresh them once and ask again.
            Err(_) => {
                apt.update(sh)?;
                match apt.source_uris(sh, source) {
                    Ok(uris) => uris,
                    // The lists have moved past the locked version: its pool files may still be
                    // served, and each is checked against its locked digest.
                    Err(_) => apt.pool_uris(source),
                }
            }
        };
        eprintln!("apt: downloading {}", source.describe());
        for file in &source.files {
            let uri = uris.get(&file.filename).with_context(|| {
                format!(
                    "{}: the archive lists no {}: the lock is wrong or the archive changed; run `{update_hint}`",
                    source.describe(),
                    file.filename
                )
            })?;
            cache.fetch(&file.filename, uri, &file.sha256).with_context(|| {
                format!(
                    "{}: the archive no longer serves {}: run `{update_hint}`",
                    source.describe(),
                    file.filename
                )
            })?;
        }
    }
    let mut paths = Vec::new();
    for file in &source.files {
        let path = cache.path(&file.sha256);
        let what = format!("{} of {}", file.filename, source.describe());
        check_digest(&what, &path, &util::sha256_file(&path)?, &file.sha256)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Runs `download` into a scratch directory of the cache (refreshing the lists and retrying once
/// when it fails), then moves each wanted `(name, sha256)` file into the cache by its digest.
fn download_into_cache(
    sh: &Shell,
    apt: &Apt,
    cache: &DownloadCache,
    wanted: &[(String, &str)],
    update_hint: &str,
    download: impl Fn(&Apt, &Path) -> Result<()>,
) -> Result<()> {
    let download_dir = cache.scratch_dir()?;
    let names: Vec<&str> = wanted.iter().map(|(name, _)| name.as_str()).collect();
    // A Go build's closure is hundreds of packages: name the first few.
    const NAMED: usize = 8;
    let more = names.len().saturating_sub(NAMED);
    let named = names.iter().take(NAMED).copied().collect::<Vec<_>>().join(", ");
    match more {
        0 => eprintln!("apt: downloading {} files: {named}", names.len()),
        _ => eprintln!("apt: downloading {} files: {named} and {more} more", names.len()),
    }
    apt.ensure_lists(sh)?;
    if let Err(first) = download(apt, download_dir.path()) {
        // The lists may predate the locked versions: refresh them once and retry.
        eprintln!("apt: download failed ({first:#}); refreshing the package lists and retrying");
        apt.update(sh)?;
        download(apt, download_dir.path()).with_context(|| {
            format!(
                "cannot download the locked files {} with apt-get: if the archive no longer has these \
                 versions, run `{update_hint}`",
                names.join(", ")
            )
        })?;
    }
    let mut by_digest: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut downloaded: Vec<String> = Vec::new();
    for item in std::fs::read_dir(download_dir.path()).context("listing downloaded files")? {
        let path = item?.path();
        if !path.is_file() {
            continue;
        }
        let digest = util::sha256_file(&path)?;
        downloaded.push(format!(
            "{} (sha256 {digest})",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        by_digest.insert(digest, path);
    }
    for (name, sha256) in wanted {
        let Some(path) = by_digest.get(*sha256) else {
            bail!(
                "{name}: apt-get downloaded no file with the locked sha256 {sha256} (got: {}); the lock entry \
                 is wrong or the archive changed: run `{update_hint}` and review the diff",
                downloaded.join(", ")
            );
        };
        cache.adopt(path, sha256)?;
    }
    Ok(())
}

/// Fails unless a cached file has its locked digest.
fn check_digest(what: &str, path: &Path, actual: &str, locked: &str) -> Result<()> {
    if actual != locked {
        bail!(
            "{what}: cached file {} has sha256 {actual}, but the lock says {locked}: the cache is corrupt or was \
             tampered with; delete that file to download it again",
            path.display()
        );
    }
    Ok(())
}
