//! CDN object layout: the relative path of every published object, per the contract.
//!
//! Pure functions over values; nothing here touches the network or the disk.
//! `asset/v{version}/…` holds the boot assets, `bin/{name}/{safe_version}/{arch}/{name}` the
//! runtime binaries, and `latest.json` names the newest published asset version.

use crate::manifest::Arch;

/// The pointer to the newest published asset version; it is written last.
pub const LATEST_PATH: &str = "latest.json";

/// File name of the kernel image, in tarballs, on the CDN and in the install cache.
pub const KERNEL_FILE: &str = "kernel";

/// File name of the root filesystem image.
pub const ROOTFS_FILE: &str = "rootfs.erofs";

/// File name of a manifest.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Suffix of a minisign signature: the signature of `{path}` is `{path}.minisig`.
pub const SIGNATURE_SUFFIX: &str = ".minisig";

/// The folder of one asset version: `asset/v{version}`.
pub fn asset_dir(version: &str) -> String {
    format!("asset/v{version}")
}

/// The unified manifest of one version: `asset/v{version}/manifest.json`.
pub fn manifest_path(version: &str) -> String {
    format!("{}/{MANIFEST_FILE}", asset_dir(version))
}

/// The minisign signature beside a signed object, file or URL: `{path}.minisig`.
pub fn signature_path(path: &str) -> String {
    format!("{path}{SIGNATURE_SUFFIX}")
}

/// The signature of the unified manifest of one version: `asset/v{version}/manifest.json.minisig`.
pub fn manifest_signature_path(version: &str) -> String {
    signature_path(&manifest_path(version))
}

/// The kernel of one version and arch: `asset/v{version}/{arch}/kernel`.
pub fn kernel_path(version: &str, arch: Arch) -> String {
    format!("{}/{arch}/{KERNEL_FILE}", asset_dir(version))
}

/// The rootfs of one version and arch: `asset/v{version}/{arch}/rootfs.erofs`.
pub fn rootfs_path(version: &str, arch: Arch) -> String {
    format!("{}/{arch}/{ROOTFS_FILE}", asset_dir(version))
}

/// A version made safe for an object key: `+` (semver build metadata) becomes `-`.
pub fn safe_version(version: &str) -> String {
    version.replace('+', "-")
}

/// The folder that holds every runtime binary on the CDN.
pub const BINARIES_DIR: &str = "bin";

/// A runtime binary: `bin/{name}/{safe_version}/{arch}/{name}`.
pub fn binary_path(name: &str, version: &str, arch: Arch) -> String {
    format!("{BINARIES_DIR}/{}", binary_relative_path(name, version, arch))
}

/// A runtime binary below the binaries folder: `{name}/{safe_version}/{arch}/{name}`, the layout
/// of a staging directory such as `dist/bin`.
pub fn binary_relative_path(name: &str, version: &str, arch: Arch) -> String {
    format!("{name}/{}/{arch}/{name}", safe_version(version))
}

/// The release tarball's file name: `boot-assets-{arch}-v{version}.tar.gz`.
pub fn tarball_name(version: &str, arch: Arch) -> String {
    format!("boot-assets-{arch}-v{version}.tar.gz")
}

/// Joins a CDN base URL and a relative object path with exactly one `/` between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_contract() {
        assert_eq!(manifest_path("0.2.0"), "asset/v0.2.0/manifest.json");
        assert_eq!(kernel_path("0.2.0", Arch::Arm64), "asset/v0.2.0/arm64/kernel");
        assert_eq!(rootfs_path("0.2.0", Arch::X86_64), "asset/v0.2.0/x86_64/rootfs.erofs");
        assert_eq!(
            binary_path("dockerd", "27.5.1", Arch::Arm64),
            "bin/dockerd/27.5.1/arm64/dockerd"
        );
        assert_eq!(tarball_name("0.2.0", Arch::X86_64), "boot-assets-x86_64-v0.2.0.tar.gz");
        assert_eq!(manifest_signature_path("0.2.0"), "asset/v0.2.0/manifest.json.minisig");
        assert_eq!(signature_path(LATEST_PATH), "latest.json.minisig");
    }

    #[test]
    fn safe_version_replaces_plus() {
        assert_eq!(safe_version("1.0.0+build.5"), "1.0.0-build.5");
        assert_eq!(
            binary_path("FEX", "2508+abc", Arch::Arm64),
            "bin/FEX/2508-abc/arm64/FEX"
        );
    }

    #[test]
    fn join_url_has_one_slash() {
        assert_eq!(join_url("http://h/cdn/", "/latest.json"), "http://h/cdn/latest.json");
        assert_eq!(
            join_url("http://h", "asset/v1/manifest.json"),
            "http://h/asset/v1/manifest.json"
        );
    }
}
