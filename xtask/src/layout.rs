//! The release and build layout on disk: where every command finds and puts its files.
//!
//! Pure functions over paths; nothing here touches the disk. The release outputs live under a
//! dist directory (`dist/` by default): `{arch}/boot-assets-{arch}-v{version}.tar.gz`, its
//! `.sha256` sidecar and the per-arch `manifest.json`, the unified `manifest.json` and its
//! `.minisig`, and the staged runtime binaries under `bin/`. Build products live under `build/`:
//! `build/{arch}/rootfs.erofs`. The names shared with the CDN (`kernel`, `rootfs.erofs`,
//! `manifest.json`, the tarball's and the binaries' names) come from the library's `cdn` module.

use std::path::{Path, PathBuf};

use boot_assets::{cdn, Arch};

use crate::util;

/// Suffix of a tarball's `sha256sum` sidecar: `{tarball}.sha256`.
const SIDECAR_SUFFIX: &str = ".sha256";

/// The fragment that lists the staged runtime binaries, inside their [`Staging`] directory.
const BINARIES_FRAGMENT_FILE: &str = "binaries.json";

/// One arch's release folder: `{dist}/{arch}`.
pub fn arch_dir(dist: &Path, arch: Arch) -> PathBuf {
    dist.join(arch.as_str())
}

/// One arch's release tarball: `{dist}/{arch}/boot-assets-{arch}-v{version}.tar.gz`.
pub fn tarball(dist: &Path, version: &str, arch: Arch) -> PathBuf {
    arch_dir(dist, arch).join(cdn::tarball_name(version, arch))
}

/// The file name of a tarball's sidecar: `{tarball_name}.sha256`.
pub fn sidecar_name(tarball_name: &str) -> String {
    format!("{tarball_name}{SIDECAR_SUFFIX}")
}

/// One arch's tarball sidecar: `{dist}/{arch}/boot-assets-{arch}-v{version}.tar.gz.sha256`.
pub fn sidecar(dist: &Path, version: &str, arch: Arch) -> PathBuf {
    arch_dir(dist, arch).join(sidecar_name(&cdn::tarball_name(version, arch)))
}

/// One arch's manifest (the same bytes as inside its tarball): `{dist}/{arch}/manifest.json`.
pub fn arch_manifest(dist: &Path, arch: Arch) -> PathBuf {
    arch_dir(dist, arch).join(cdn::MANIFEST_FILE)
}

/// The unified manifest that `merge-manifest` writes: `{dist}/manifest.json`.
pub fn unified_manifest(dist: &Path) -> PathBuf {
    dist.join(cdn::MANIFEST_FILE)
}

/// The unified manifest's signature that `publish` writes: `{dist}/manifest.json.minisig`.
pub fn manifest_signature(dist: &Path) -> PathBuf {
    dist.join(cdn::signature_path(cdn::MANIFEST_FILE))
}

/// Where runtime binaries are staged, and the fragment that lists them.
#[derive(Debug, Clone)]
pub struct Staging {
    /// `{dir}/{name}/{safe_version}/{arch}/{name}` for each binary.
    pub dir: PathBuf,
    /// The binaries fragment (`{dir}/binaries.json` unless asked otherwise).
    pub fragment: PathBuf,
}

impl Staging {
    /// `dir`, with the fragment at its usual place inside it.
    pub fn in_dir(dir: PathBuf) -> Staging {
        Staging {
            fragment: dir.join(BINARIES_FRAGMENT_FILE),
            dir,
        }
    }
}

/// The runtime binaries of a release: staged in `{dist}/bin`, listed in `{dist}/bin/binaries.json`.
pub fn binaries_staging(dist: &Path) -> Staging {
    Staging::in_dir(dist.join(cdn::BINARIES_DIR))
}

/// One staged runtime binary: `{dist}/bin/{name}/{safe_version}/{arch}/{name}`, the CDN path
/// below the dist directory.
pub fn staged_binary(dist: &Path, name: &str, version: &str, arch: Arch) -> PathBuf {
    dist.join(cdn::binary_path(name, version, arch))
}

/// The rootfs image that `cargo xtask rootfs` builds by default: `build/{arch}/rootfs.erofs`.
pub fn built_rootfs(arch: Arch) -> PathBuf {
    util::build_dir().join(arch.as_str()).join(cdn::ROOTFS_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_paths_follow_the_contract() {
        let dist = Path::new("dist");
        assert_eq!(
            tarball(dist, "0.2.0", Arch::Arm64),
            Path::new("dist/arm64/boot-assets-arm64-v0.2.0.tar.gz")
        );
        assert_eq!(
            sidecar(dist, "0.2.0", Arch::X86_64),
            Path::new("dist/x86_64/boot-assets-x86_64-v0.2.0.tar.gz.sha256")
        );
        assert_eq!(arch_manifest(dist, Arch::Arm64), Path::new("dist/arm64/manifest.json"));
        assert_eq!(unified_manifest(dist), Path::new("dist/manifest.json"));
        assert_eq!(manifest_signature(dist), Path::new("dist/manifest.json.minisig"));
        let staging = binaries_staging(dist);
        assert_eq!(staging.dir, Path::new("dist/bin"));
        assert_eq!(staging.fragment, Path::new("dist/bin/binaries.json"));
        assert_eq!(
            staged_binary(dist, "FEX", "2508+abc", Arch::Arm64),
            Path::new("dist/bin/FEX/2508-abc/arm64/FEX")
        );
    }

    #[test]
    fn the_built_rootfs_is_under_build() {
        assert!(built_rootfs(Arch::X86_64).ends_with("build/x86_64/rootfs.erofs"));
    }
}
