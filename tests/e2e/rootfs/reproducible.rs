//! Reproducibility: two cold builds in different directories give the same image and SBOM (for
//! x86_64 with every tool compiled again in the second one's own tool cache), and `release`
//! without `--rootfs` builds that same image itself (and ships it with its hash tree).

use super::{builds_lock, cold_build_with, first_builds, warm_cache_copy, xtask_on_cache_copy, ARCHES};
use boot_assets::{cdn, Arch};

use crate::boot_support::Assets;
use crate::support::{project_root, run_ok, sha256_file, sha256_hex};

#[test]
fn two_cold_builds_in_different_directories_are_identical() {
    for (arch, _, _) in ARCHES {
        let first = &first_builds()[arch];
        // The x86_64 tools are compiled again from source in another directory; the arm64 ones
        // (the same scripts, cross-compiled) come from the shared tool cache, to keep CI's time.
        let second = cold_build_with(arch, arch == "arm64");
        assert_ne!(first.cache, second.cache);
        assert_eq!(
            sha256_file(&first.image),
            sha256_file(&second.image),
            "{arch} image digests differ"
        );
        assert_eq!(
            sha256_file(&first.sbom),
            sha256_file(&second.sbom),
            "{arch} SBOM digests differ"
        );
    }
}

/// `release` without `--rootfs` builds `build/{arch}/rootfs.erofs` itself and ships it.
#[test]
fn release_without_rootfs_builds_the_image_first() {
    let dir = warm_cache_copy();
    let kernel = dir.path().join("kernel");
    std::fs::write(&kernel, b"not a real kernel").unwrap();
    let dist = dir.path().join("dist");
    {
        let _guard = builds_lock();
        run_ok(
            xtask_on_cache_copy(dir.path())
                .args([
                    "release",
                    "--version",
                    "0.2.0",
                    "--arch",
                    "x86_64",
                    "--kernel-version",
                    "6.1.0",
                ])
                .arg("--kernel")
                .arg(&kernel)
                .arg("--output-dir")
                .arg(&dist),
        );
    }
    let built = project_root().join("build/x86_64/rootfs.erofs");
    assert_eq!(sha256_file(&built), sha256_file(&first_builds()["x86_64"].image));
    // It ships that image followed by its dm-verity hash tree, and the manifest names that file.
    let tarball = dist.join("x86_64").join(cdn::tarball_name("0.2.0", Arch::X86_64));
    let (_, shipped) = crate::boot_support::kernel_and_rootfs(&Assets::Tarball(tarball), dir.path());
    let shipped_bytes = std::fs::read(&shipped).unwrap();
    assert!(shipped_bytes.starts_with(&std::fs::read(&built).unwrap()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dist.join("x86_64/manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["targets"]["x86_64"]["rootfs"]["sha256"],
        sha256_hex(&shipped_bytes)
    );
}
