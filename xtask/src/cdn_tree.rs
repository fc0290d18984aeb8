//! `cargo xtask cdn-tree` and [`stage_cdn_tree`]: the release outputs laid out exactly as the
//! CDN serves them. `publish` uploads this tree; the e2e tests serve it with nginx.
//!
//! Reads `{dist}/manifest.json` (the unified manifest, and its `.minisig` when present), the
//! per-arch tarballs `{dist}/{arch}/boot-assets-{arch}-v{version}.tar.gz` and the staged binaries
//! `{dist}/bin/{name}/{safe_version}/{arch}/{name}`. Writes, under the output directory, every
//! object the manifest names at its manifest path, `asset/v{version}/manifest.json`, and
//! `latest.json` last. Each object is checked against the manifest digest before it is written,
//! and an object that already exists with other bytes is refused (published paths are immutable).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Latest};
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{archive, flags, layout, manifest_io, util};

impl flags::CdnTree {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let tree = stage_cdn_tree(&self.dist, &self.output)?;
        eprintln!(
            "cdn-tree: {} objects for version {} under {}",
            tree.objects.len(),
            tree.version,
            self.output.display()
        );
        Ok(())
    }
}

/// What [`stage_cdn_tree`] laid out.
#[derive(Debug)]
pub struct CdnTree {
    /// The asset version (also written to `latest.json`).
    pub version: String,
    /// Every object's path relative to the tree root, in the order written (`latest.json` last).
    pub objects: Vec<String>,
}

/// Lays out `dist` as a CDN tree under `out`; see the module docs.
pub fn stage_cdn_tree(dist: &Path, out: &Path) -> Result<CdnTree> {
    let manifest_file = layout::unified_manifest(dist);
    let manifest = manifest_io::read_unified_manifest(dist)?;
    let version = manifest.asset_version.clone();
    let mut objects = Vec::new();

    for (arch, target) in &manifest.targets {
        let tarball = layout::tarball(dist, &version, *arch);
        let members = archive::read_members_to_memory(&tarball, &[cdn::KERNEL_FILE, cdn::ROOTFS_FILE])
            .context("reading the release tarball (run `cargo xtask release` first)")?;
        for (member, entry_path, sha256) in [
            (cdn::KERNEL_FILE, &target.kernel.path, &target.kernel.sha256),
            (cdn::ROOTFS_FILE, &target.rootfs.path, &target.rootfs.sha256),
        ] {
            let bytes = &members[member];
            let label = format!("{member} in {}", tarball.display());
            check_digest(bytes, sha256, &label)?;
            put_object(out, entry_path, bytes, &label)?;
            objects.push(entry_path.clone());
        }
    }

    for binary in &manifest.binaries {
        for (arch, file) in &binary.targets {
            let staged = layout::staged_binary(dist, &binary.name, &binary.version, *arch);
            let bytes = std::fs::read(&staged).with_context(|| {
                format!(
                    "reading staged binary {} ({} {} for {arch}); stage it there before laying out the CDN tree",
                    staged.display(),
                    binary.name,
                    binary.version
                )
            })?;
            let label = staged.display().to_string();
            check_digest(&bytes, &file.sha256, &label)?;
            put_object(out, &file.path, &bytes, &label)?;
            objects.push(file.path.clone());
        }
    }

    let manifest_bytes =
        std::fs::read(&manifest_file).with_context(|| format!("reading {}", manifest_file.display()))?;
    let manifest_object = cdn::manifest_path(&version);
    put_object(
        out,
        &manifest_object,
        &manifest_bytes,
        &manifest_file.display().to_string(),
    )?;
    objects.push(manifest_object.clone());
    let signature_file = layout::manifest_signature(dist);
    if signature_file.is_file() {
        let signature =
            std::fs::read(&signature_file).with_context(|| format!("reading {}", signature_file.display()))?;
        let object = cdn::manifest_signature_path(&version);
        put_object(out, &object, &signature, &signature_file.display().to_string())?;
        objects.push(object);
    }

    // The pointer moves last, once every object it leads to is in place; unlike the objects it
    // is mutable, so it is simply replaced.
    let latest = Latest {
        version: version.clone(),
    };
    util::write_atomic(&out.join(cdn::LATEST_PATH), latest.to_json_pretty().as_bytes())?;
    objects.push(cdn::LATEST_PATH.to_owned());
    Ok(CdnTree { version, objects })
}

fn check_digest(bytes: &[u8], expected: &str, label: &str) -> Result<()> {
    let actual = format!("{:x}", Sha256::digest(bytes));
    if actual != expected {
        bail!("{label}: sha256 is {actual}, but the manifest says {expected}");
    }
    Ok(())
}

/// Writes one immutable object; the same bytes already there are fine, other bytes are not.
fn put_object(out: &Path, relative: &str, bytes: &[u8], source: &str) -> Result<PathBuf> {
    if let Some(problem) = boot_assets::manifest::relative_path_problem(relative) {
        bail!("object path {relative:?} from {source}: {problem}");
    }
    let path = out.join(relative);
    match std::fs::read(&path) {
        Ok(existing) if existing == bytes => return Ok(path),
        Ok(_) => bail!(
            "{} already exists with other bytes: published objects are immutable, so {source} needs a new version",
            path.display()
        ),
        Err(_) => {}
    }
    util::write_atomic(&path, bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_is_never_overwritten_with_other_bytes() {
        let out = tempfile::tempdir().unwrap();
        put_object(out.path(), "bin/x/1/arm64/x", b"one", "first").unwrap();
        put_object(out.path(), "bin/x/1/arm64/x", b"one", "again").unwrap();
        let err = put_object(out.path(), "bin/x/1/arm64/x", b"two", "second")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already exists with other bytes"), "{err}");
        assert!(err.contains("second needs a new version"), "{err}");
        let err = put_object(out.path(), "../x", b"x", "evil").unwrap_err().to_string();
        assert!(err.contains("has a `..` component"), "{err}");
    }

    #[test]
    fn digest_mismatch_names_both_digests() {
        let err = check_digest(b"abc", &"0".repeat(64), "kernel in t.tar.gz")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("kernel in t.tar.gz: sha256 is ba7816bf"), "{err}");
        assert!(err.contains(&format!("manifest says {}", "0".repeat(64))), "{err}");
    }
}
