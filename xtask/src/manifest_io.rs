//! Reading manifest files from disk: one place that reads, parses strictly and validates a
//! manifest, naming the file in every error.
//!
//! Reads `manifest.json` files (per-arch ones and the unified `{dist}/manifest.json`); writes
//! nothing. `merge-manifest`, `cdn-tree` and `publish` read their manifests through it.

use std::path::Path;

use anyhow::{Context, Result};
use boot_assets::Manifest;

use crate::layout;

/// Reads and validates one manifest file; errors name the file.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).with_context(|| format!("reading manifest {}", path.display()))?;
    let manifest = Manifest::from_json_strict(&bytes).with_context(|| format!("manifest {}", path.display()))?;
    manifest
        .validate_for_writing()
        .with_context(|| format!("manifest {}", path.display()))?;
    Ok(manifest)
}

/// Reads the unified manifest `{dist}/manifest.json`, saying how to make it when it is not there.
pub fn read_unified_manifest(dist: &Path) -> Result<Manifest> {
    let path = layout::unified_manifest(dist);
    read_manifest(&path)
        .with_context(|| format!("{} is the unified manifest (run merge-manifest first)", path.display()))
}
