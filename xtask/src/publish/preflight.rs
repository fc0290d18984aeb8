//! Publish's first check, before the bucket or GitHub is touched: every file publish will
//! upload or reference agrees with every record of it. With or without `--github-release`:
//!
//! - each tarball has the digest its `.sha256` sidecar names, under the name it names;
//! - the `manifest.json` inside each tarball is byte for byte `dist/{arch}/manifest.json`;
//! - each arch's kernel and rootfs (inside the tarball) have the sha256 and size both the
//!   per-arch and the unified manifest give, and the two manifests agree on the whole target;
//! - each staged binary has the sha256 and size the unified manifest gives, and the per-arch
//!   manifest lists the same file for its arch.
//!
//! Reads `dist/` only; writes nothing. Every disagreement is listed, not only the first.

use std::path::Path;

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch, FileEntry, Manifest};

use crate::{archive, layout, manifest_io, util};

/// Checks `dist/` against `manifest` (the unified one); the error lists every problem.
pub fn check_dist(dist: &Path, manifest: &Manifest) -> Result<()> {
    let mut problems = Vec::new();
    for arch in manifest.targets.keys() {
        if let Err(error) = check_arch(dist, manifest, *arch, &mut problems) {
            problems.push(format!("{error:#}"));
        }
    }
    for binary in &manifest.binaries {
        for (arch, file) in &binary.targets {
            let staged = layout::staged_binary(dist, &binary.name, &binary.version, *arch);
            let label = format!("{} ({} {} for {arch})", staged.display(), binary.name, binary.version);
            match std::fs::read(&staged) {
                Ok(bytes) => check_bytes(&label, &bytes, file, "dist/manifest.json", &mut problems),
                Err(error) => problems.push(format!("{label}: cannot read it: {error}")),
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} is not consistent, so nothing was uploaded (rebuild the release or fix the files):\n  - {}",
            dist.display(),
            problems.join("\n  - ")
        );
    }
    Ok(())
}

/// The checks of one arch: sidecar, the tarball's manifest, kernel and rootfs, binaries.
fn check_arch(dist: &Path, unified: &Manifest, arch: Arch, problems: &mut Vec<String>) -> Result<()> {
    let version = &unified.asset_version;
    let tarball = layout::tarball(dist, version, arch);
    if let Err(error) = check_sidecar(&tarball, &layout::sidecar(dist, version, arch)) {
        problems.push(format!("{error:#}"));
    }
    let arch_manifest_path = layout::arch_manifest(dist, arch);
    let arch_manifest_bytes =
        std::fs::read(&arch_manifest_path).with_context(|| format!("reading {}", arch_manifest_path.display()))?;
    let arch_manifest = manifest_io::read_manifest(&arch_manifest_path)?;
    let members = archive::read_members_to_memory(&tarball, &[cdn::MANIFEST_FILE, cdn::KERNEL_FILE, cdn::ROOTFS_FILE])
        .with_context(|| format!("reading {}", tarball.display()))?;
    let tarball_label = tarball.display().to_string();
    if members[cdn::MANIFEST_FILE] != arch_manifest_bytes {
        problems.push(format!(
            "{tarball_label}: its manifest.json differs from {}",
            arch_manifest_path.display()
        ));
    }
    let (Some(target), Some(arch_target)) = (unified.targets.get(&arch), arch_manifest.targets.get(&arch)) else {
        bail!("{}: has no target for {arch}", arch_manifest_path.display());
    };
    if target != arch_target {
        problems.push(format!(
            "dist/manifest.json and {} disagree on the {arch} target",
            arch_manifest_path.display()
        ));
    }
    for (member, entry) in [
        (
            cdn::KERNEL_FILE,
            FileEntry {
                path: target.kernel.path.clone(),
                sha256: target.kernel.sha256.clone(),
                size: target.kernel.size,
            },
        ),
        (cdn::ROOTFS_FILE, target.rootfs.clone()),
    ] {
        let label = format!("{member} in {tarball_label}");
        check_bytes(&label, &members[member], &entry, "the manifests", problems);
    }
    for binary in Manifest::binaries_for(&arch_manifest.binaries, arch) {
        let unified_entry = unified
            .binaries
            .iter()
            .find(|b| b.name == binary.name && b.version == binary.version)
            .and_then(|b| b.targets.get(&arch));
        if unified_entry != binary.targets.get(&arch) {
            problems.push(format!(
                "{}: binary {} {} for {arch} is not the one dist/manifest.json lists",
                arch_manifest_path.display(),
                binary.name,
                binary.version
            ));
        }
    }
    Ok(())
}

/// Compares bytes with a manifest entry's sha256 and size (`source` names the manifest).
fn check_bytes(label: &str, bytes: &[u8], entry: &FileEntry, source: &str, problems: &mut Vec<String>) {
    let actual = util::sha256_bytes(bytes);
    if actual != entry.sha256 {
        problems.push(format!(
            "{label}: sha256 is {actual}, but {source} say(s) {}",
            entry.sha256
        ));
    }
    if let Some(size) = entry.size.filter(|&size| size != bytes.len() as u64) {
        problems.push(format!("{label}: {} bytes, but {source} say(s) {size}", bytes.len()));
    }
}

/// A sidecar must name its tarball and hold its digest, or users who check it would reject
/// the release.
pub fn check_sidecar(tarball: &Path, sidecar: &Path) -> Result<()> {
    let text = std::fs::read_to_string(sidecar).with_context(|| format!("reading {}", sidecar.display()))?;
    let (sha256, name) = boot_assets::sidecar::parse(&text).with_context(|| format!("{}", sidecar.display()))?;
    let file_name = tarball
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let actual = util::sha256_file(tarball)?;
    if name != file_name || sha256 != actual {
        bail!(
            "{} says {sha256}  {name}, but {} has sha256 {actual}: rebuild the release",
            sidecar.display(),
            tarball.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_sidecar_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tarball = dir.path().join("t.tar.gz");
        let sidecar = dir.path().join("t.tar.gz.sha256");
        std::fs::write(&tarball, b"abc").unwrap();
        std::fs::write(
            &sidecar,
            boot_assets::sidecar::format(&util::sha256_bytes(b"abc"), "t.tar.gz"),
        )
        .unwrap();
        check_sidecar(&tarball, &sidecar).unwrap();
        std::fs::write(&tarball, b"abd").unwrap();
        let err = check_sidecar(&tarball, &sidecar).unwrap_err().to_string();
        assert!(err.contains("rebuild the release"), "{err}");
    }

    #[test]
    fn bytes_are_checked_for_digest_and_size() {
        let entry = FileEntry {
            path: "asset/v1.0.0/x86_64/kernel".into(),
            sha256: util::sha256_bytes(b"abc"),
            size: Some(4),
        };
        let mut problems = Vec::new();
        check_bytes("kernel", b"abc", &entry, "the manifests", &mut problems);
        assert_eq!(problems, vec!["kernel: 3 bytes, but the manifests say(s) 4".to_owned()]);
    }
}
