//! publish refuses a bad dist before the first upload (with or without `--github-release`),
//! and bounds every rclone call by a time limit, failing with what was and was not uploaded.
//! Before, a stale sidecar was read only in the GitHub step, after every object and
//! latest.json had gone up, and never without `--github-release`; and a dead endpoint held a
//! single `rclone copyto` for minutes.

use std::time::{Duration, Instant};

use boot_assets::cdn;

use crate::publish_support::{build_release, publish_setup};
use crate::support::{run_fails, sha256_hex};

#[test]
fn a_stale_sidecar_stops_publish_before_the_first_upload() {
    let (_work, cdn, keys, dist) = publish_setup("0.2.0");
    let sidecar = dist.join("x86_64/boot-assets-x86_64-v0.2.0.tar.gz.sha256");
    let stale = format!(
        "{}  boot-assets-x86_64-v0.2.0.tar.gz\n",
        sha256_hex(b"an older tarball")
    );
    std::fs::write(&sidecar, stale).unwrap();
    let stderr = run_fails(&mut cdn.publish(&dist, "0.2.0", &keys));
    assert!(
        stderr.contains("is not consistent, so nothing was uploaded")
            && stderr.contains(&format!("{} says", sidecar.display())),
        "{stderr}"
    );
    assert!(cdn.snapshot().is_empty(), "uploaded {:?}", cdn.snapshot());
}

#[test]
fn a_per_arch_manifest_that_disagrees_with_the_unified_one_stops_publish_before_the_first_upload() {
    let (_work, cdn, keys, dist) = publish_setup("0.2.0");
    let arch_manifest = dist.join("arm64/manifest.json");
    let text = std::fs::read_to_string(&arch_manifest).unwrap();
    let unified = boot_assets::Manifest::from_json(&std::fs::read(dist.join("manifest.json")).unwrap()).unwrap();
    let kernel_sha = &unified.targets[&boot_assets::Arch::Arm64].kernel.sha256;
    std::fs::write(&arch_manifest, text.replace(kernel_sha.as_str(), &"0".repeat(64))).unwrap();
    let stderr = run_fails(&mut cdn.publish(&dist, "0.2.0", &keys));
    for problem in [
        "its manifest.json differs from".to_owned(),
        format!(
            "dist/manifest.json and {} disagree on the arm64 target",
            arch_manifest.display()
        ),
    ] {
        assert!(stderr.contains(&problem), "missing {problem:?} in:\n{stderr}");
    }
    assert!(cdn.snapshot().is_empty(), "uploaded {:?}", cdn.snapshot());
}

#[test]
fn an_rclone_call_past_its_time_limit_stops_publish_saying_what_was_and_was_not_uploaded() {
    let (work, cdn, keys, _first) = publish_setup("0.1.0");
    // 4 MiB rootfs images uploaded at 1 MiB/s: each upload needs about 4 s.
    let release = build_release(&work.path().join("slow"), "0.2.0", 1, Some(4 << 20));
    let started = Instant::now();
    let stderr = run_fails(
        cdn.publish(&release, "0.2.0", &keys)
            .env("RCLONE_BWLIMIT", "1M")
            .args(["--rclone-timeout-secs", "2"]),
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        stderr.contains("uploading ") && stderr.contains("rclone did not finish within 2 s (--rclone-timeout-secs)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("publish stopped; uploaded in this run: asset/v0.2.0/arm64/kernel")
            && stderr.contains("not uploaded: asset/v0.2.0/arm64/rootfs.erofs"),
        "{stderr}"
    );
    assert!(stderr.contains("latest.json was not touched"), "{stderr}");
    assert!(cdn.object(cdn::LATEST_PATH).is_none());
    assert!(cdn.object("asset/v0.2.0/manifest.json").is_none());
}
