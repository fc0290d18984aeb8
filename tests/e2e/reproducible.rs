//! Reproducibility: two releases from the same inputs and SOURCE_DATE_EPOCH, in different
//! directories, at different times, with different umasks, give byte-identical outputs (the
//! rootfs with its dm-verity hash tree included).

use std::path::Path;

use boot_assets::{cdn, Arch};

use crate::fixtures::write_fixture_inputs;
use crate::support::{run_ok, xtask_binary};

/// Runs `cargo xtask release` under a given umask (through `sh`, which owns the umask builtin).
fn release_with_umask(dist: &Path, inputs: &Path, arch: Arch, umask: &str) {
    let (kernel, rootfs) = write_fixture_inputs(inputs, arch);
    run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$@\""))
            .arg("sh")
            .arg(xtask_binary())
            .args(["release", "--version", "1.4.0-rc.1", "--arch", arch.as_str()])
            .arg("--kernel")
            .arg(kernel)
            .arg("--rootfs")
            .arg(rootfs)
            .arg("--output-dir")
            .arg(dist)
            .current_dir(inputs)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
}

#[test]
fn same_inputs_give_identical_bytes() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    for arch in Arch::ALL {
        release_with_umask(&first.path().join("a/dist"), &first.path().join("a/in"), arch, "022");
        // A different second on the clock, so any leaked wall-clock time would show.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        release_with_umask(
            &second.path().join("deeper/path/dist"),
            &second.path().join("b/in"),
            arch,
            "077",
        );

        let name = cdn::tarball_name("1.4.0-rc.1", arch);
        for file in [name.clone(), format!("{name}.sha256"), "manifest.json".into()] {
            let a = std::fs::read(first.path().join("a/dist").join(arch.as_str()).join(&file)).unwrap();
            let b = std::fs::read(second.path().join("deeper/path/dist").join(arch.as_str()).join(&file)).unwrap();
            assert!(a == b, "{arch}/{file} differs between the two builds");
        }
        // The compared rootfs carries its dm-verity hash tree (the manifest records its root).
        let manifest = std::fs::read(first.path().join("a/dist").join(arch.as_str()).join("manifest.json")).unwrap();
        let manifest = boot_assets::Manifest::from_json_validated(&manifest).unwrap();
        assert!(
            manifest.targets[&arch].rootfs_verity_root_hash.is_some(),
            "{arch}: no verified root"
        );
    }
}
