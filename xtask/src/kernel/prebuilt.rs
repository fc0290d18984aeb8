//! `cargo xtask kernel --url URL --sha256 HEX`: a prebuilt kernel, verified before use.
//!
//! Downloads the image into the download cache (`{cache}/downloads/{sha256}`, see
//! [`crate::downloads`]), which keeps it only once its SHA-256 matches the pinned digest; a
//! second run with the same digest uses the cached file without downloading.

use std::path::PathBuf;

use anyhow::{bail, Result};
use boot_assets::manifest::is_sha256_hex;

use crate::downloads::{self, DownloadCache};

/// Fetches `url`, verifies it against `sha256` and returns the cached, verified file.
pub fn fetch(url: &str, sha256: &str) -> Result<PathBuf> {
    if !is_sha256_hex(sha256) {
        bail!("--sha256 {sha256:?} is not 64 lowercase hex digits");
    }
    let cache = DownloadCache::new();
    if !cache.path(sha256).is_file() {
        eprintln!("kernel: downloading {url}");
    }
    match cache.fetch("the kernel", url, sha256) {
        Ok(image) => Ok(image),
        Err(error) => match downloads::mismatched_digest(&error) {
            Some(actual) => {
                bail!("the kernel downloaded from {url} has sha256 {actual}, but --sha256 says {sha256}: refusing it")
            }
            None => Err(error.context(format!("downloading the kernel from {url}"))),
        },
    }
}
