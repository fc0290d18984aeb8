//! `cargo xtask kernel --url URL --sha256 HEX`: a prebuilt kernel, verified before use.
//!
//! Downloads the image with curl into `{cache}/kernel/prebuilt/{sha256}/kernel` (through a
//! temporary file), checks its SHA-256 against the pinned digest, and only then keeps it; a
//! second run with the same digest uses the cached file without downloading.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use boot_assets::manifest::is_sha256_hex;
use xshell::{cmd, Shell};

use crate::util;

/// The image file inside a prebuilt cache entry.
const PREBUILT_IMAGE: &str = "kernel";

/// Fetches `url`, verifies it against `sha256` and returns the cached, verified file.
pub fn fetch(sh: &Shell, url: &str, sha256: &str) -> Result<PathBuf> {
    if !is_sha256_hex(sha256) {
        bail!("--sha256 {sha256:?} is not 64 lowercase hex digits");
    }
    let dir = util::cache_dir().join("kernel").join("prebuilt").join(sha256);
    let image = dir.join(PREBUILT_IMAGE);
    if image.is_file() && util::sha256_file(&image)? == sha256 {
        return Ok(image);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = tempfile::NamedTempFile::new_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let target = download.path();
    eprintln!("kernel: downloading {url}");
    cmd!(
        sh,
        "curl --fail --location --silent --show-error --output {target} {url}"
    )
    .quiet()
    .run()
    .with_context(|| format!("downloading the kernel from {url}"))?;
    let actual = util::sha256_file(target)?;
    if actual != sha256 {
        bail!("the kernel downloaded from {url} has sha256 {actual}, but --sha256 says {sha256}: refusing it");
    }
    download
        .persist(&image)
        .with_context(|| format!("keeping the verified kernel as {}", image.display()))?;
    Ok(image)
}
