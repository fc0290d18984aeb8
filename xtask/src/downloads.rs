//! The one download cache of the pipeline: every file xtask downloads is kept as
//! `{cache}/downloads/{sha256}`. A file named by URL is fetched with the library's
//! [`Downloader`] (resume, retries, digest checked while writing, atomic rename); a package file
//! apt downloaded is moved in by [`DownloadCache::adopt`] once its digest is known.
//!
//! Reads the cache and the network (or, for a `file://` URL, the local file); writes only files
//! named by their digest into the cache directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use boot_assets::asset_manager::Downloader;
use boot_assets::AssetError;

use crate::util;

/// Folder of the download cache inside the cache directory; files are named by their sha256.
const DOWNLOAD_CACHE_DIR: &str = "downloads";

/// Mode of a cached file (data, not yet a staged program).
const CACHED_FILE_MODE: u32 = 0o644;

/// The URL scheme of a local file, copied (and verified) instead of downloaded.
const FILE_URL_PREFIX: &str = "file://";

/// The download cache and the downloader that fills it.
pub struct DownloadCache {
    dir: PathBuf,
    downloader: Downloader,
}

impl DownloadCache {
    /// `{cache}/downloads`, filled by a downloader with the library's defaults.
    pub fn new() -> DownloadCache {
        DownloadCache {
            dir: util::cache_dir().join(DOWNLOAD_CACHE_DIR),
            downloader: Downloader::new(),
        }
    }

    /// `{cache}/downloads`, filled from the Debian archive, which serves plain http: every file
    /// is checked against its pinned sha256 while it is written, so the transport need not be.
    pub fn for_debian_archive() -> DownloadCache {
        DownloadCache {
            dir: util::cache_dir().join(DOWNLOAD_CACHE_DIR),
            downloader: Downloader::with_options(true, std::sync::Arc::new(|_: &_| {})),
        }
    }

    /// Where the file with `sha256` is (or would be) kept.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// The cached file of `sha256`, downloaded from `url` first when it is not there yet (or no
    /// longer has that digest). `object` names the file in errors; a digest mismatch is an
    /// [`AssetError::DigestMismatch`] inside the error.
    pub fn fetch(&self, object: &str, url: &str, sha256: &str) -> Result<PathBuf> {
        let cached = self.path(sha256);
        if cached.is_file() && util::sha256_file(&cached)? == sha256 {
            return Ok(cached);
        }
        self.create_dir()?;
        match url.strip_prefix(FILE_URL_PREFIX) {
            Some(local) => copy_verified(object, url, Path::new(local), sha256, &cached)?,
            None => self
                .downloader
                .download(object, url, sha256, &cached, CACHED_FILE_MODE)
                .with_context(|| format!("downloading {object} from {url}"))?,
        }
        Ok(cached)
    }

    /// Downloads `url`, whose digest is not known yet, into the cache and returns its sha256.
    pub fn fetch_unpinned(&self, url: &str) -> Result<String> {
        self.create_dir()?;
        self.downloader
            .download_unpinned(url, &self.dir, CACHED_FILE_MODE)
            .with_context(|| format!("downloading {url}"))
    }

    /// Moves `file` (on the same file system, e.g. from [`DownloadCache::scratch_dir`]) into
    /// the cache as the file of `sha256`, its digest.
    pub fn adopt(&self, file: &Path, sha256: &str) -> Result<PathBuf> {
        let cached = self.path(sha256);
        std::fs::rename(file, &cached).with_context(|| format!("moving {} to {}", file.display(), cached.display()))?;
        Ok(cached)
    }

    /// A temporary directory inside the cache, for a tool that downloads on its own (apt).
    pub fn scratch_dir(&self) -> Result<tempfile::TempDir> {
        self.create_dir()?;
        tempfile::tempdir_in(&self.dir)
            .with_context(|| format!("creating a download directory in {}", self.dir.display()))
    }

    fn create_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))
    }
}

/// Copies a `file://` source into the cache as `target` if it hashes to `sha256`.
fn copy_verified(object: &str, url: &str, source: &Path, sha256: &str, target: &Path) -> Result<()> {
    let bytes = std::fs::read(source).with_context(|| format!("reading {object} from {url}"))?;
    let actual = util::sha256_bytes(&bytes);
    if actual != sha256 {
        return Err(AssetError::DigestMismatch {
            object: object.to_owned(),
            url: url.to_owned(),
            expected: sha256.to_owned(),
            actual,
        }
        .into());
    }
    util::write_atomic(target, &bytes)
}

/// The digest of what `url` gave, when `error` is a digest mismatch.
pub fn mismatched_digest(error: &anyhow::Error) -> Option<&str> {
    error
        .chain()
        .find_map(|cause| match cause.downcast_ref::<AssetError>() {
            Some(AssetError::DigestMismatch { actual, .. }) => Some(actual.as_str()),
            _ => None,
        })
}
