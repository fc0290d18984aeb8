//! `publish --boot` and `verify-published --boot` with the real kernel and rootfs of both arches
//! (built by `cargo xtask kernel` / `cargo xtask rootfs`, cached): each arch is downloaded from
//! the CDN and booted under QEMU (TCG) before latest.json moves.
//!
//! Needs the kernel-boot and rootfs branches (their commands and `boot_support`).

use boot_assets::Arch;

use crate::boot_support;
use crate::publish_support::{keygen, Cdn};
use crate::support::{merge_manifests, release_command, run_ok};

#[test]
fn publish_with_boot_boots_every_arch_downloaded_from_the_cdn() {
    let _one_boot_at_a_time = boot_support::boot_lock();
    let work = tempfile::tempdir().unwrap();
    let dist = work.path().join("dist");
    for arch in Arch::ALL {
        boot_support::require_qemu(arch);
        let (kernel, rootfs) = boot_support::build_assets(arch);
        run_ok(&mut release_command("0.9.0", arch, &kernel, &rootfs, &dist));
    }
    merge_manifests(&dist, &Arch::ALL);
    let cdn = Cdn::start();
    let keys = keygen(work.path());

    let output = run_ok(cdn.publish(&dist, "0.9.0", &keys).arg("--boot"));
    let log = String::from_utf8_lossy(&output.stderr);
    for arch in Arch::ALL {
        assert!(
            log.contains(&format!(
                "verify-published: {arch}: booting the downloaded kernel and rootfs"
            )),
            "{log}"
        );
        assert!(
            log.contains(&format!("boot {arch}: QEMU ended after")) && log.contains("(guest powered off)"),
            "{log}"
        );
    }
    let booted_at = log.rfind("(guest powered off)").unwrap();
    let latest_at = log.find("latest.json now names 0.9.0").expect("latest moved");
    assert!(booted_at < latest_at, "latest.json moved before the boots:\n{log}");

    run_ok(&mut cdn.verify_published(&["--arch", "x86_64", "--boot"], &keys.public));
}
