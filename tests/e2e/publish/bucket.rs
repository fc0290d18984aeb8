//! Publishing into the bucket: sign, upload immutably, verify from the CDN, then move
//! `latest.json` forward (never back, never before verification), and a publish killed mid-upload.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use boot_assets::asset_manager::AssetManager;
use boot_assets::{cdn, Arch, Manifest};

use crate::live;
use crate::publish_support::{
    build_release, keygen, minisign_verify, publish_setup, stderr_of, Cdn, Nginx, FIXTURE_BINARIES,
};
use crate::support::{run_fails, run_ok, sha256_file, sha256_hex};

#[test]
fn publish_signs_uploads_verifies_then_points_latest_and_republish_uploads_nothing() {
    let (work, mut cdn, keys, dist) = publish_setup("0.2.0");

    // A dry run changes nothing, anywhere.
    let output = run_ok(cdn.publish(&dist, "0.2.0", &keys).arg("--dry-run"));
    let log = stderr_of(&output);
    assert!(log.contains("would upload asset/v0.2.0/manifest.json"), "{log}");
    assert!(log.contains("latest.json now names 0.2.0"), "{log}");
    assert!(cdn.snapshot().is_empty(), "a dry run wrote {:?}", cdn.snapshot());
    assert!(!dist.join("manifest.json.minisig").exists());

    let log = cdn.publish_log(&dist, "0.2.0", &keys);
    // 2 kernels + 2 rootfs + 3 binary files + manifest + signature.
    assert!(
        log.contains("publish: 9 object(s) to upload, 0 already published"),
        "{log}"
    );
    let upload_order: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("publish: upload "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(upload_order.len(), 9, "{log}");
    assert_eq!(
        upload_order[7], "asset/v0.2.0/manifest.json",
        "manifest after the data: {upload_order:?}"
    );
    assert_eq!(
        upload_order[8], "asset/v0.2.0/manifest.json.minisig",
        "signature last: {upload_order:?}"
    );
    let verified_at = log.find("publish: verified v0.2.0").expect("verification ran");
    let latest_at = log.find("latest.json now names 0.2.0").expect("latest moved");
    assert!(verified_at < latest_at, "latest.json moved before verification:\n{log}");
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
    // latest.json is signed too, and the real minisign CLI agrees.
    let said = minisign_verify(
        &work.path().join("signed-latest"),
        "latest.json",
        &cdn.object(cdn::LATEST_PATH).unwrap(),
        &cdn.object("latest.json.minisig").expect("latest.json.minisig"),
        &keys.public,
    );
    assert!(said.contains("boot-assets latest.json v0.2.0"), "{said}");

    // Every published object is the release's bytes.
    let manifest = Manifest::from_json_validated(&std::fs::read(dist.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        cdn.object("asset/v0.2.0/manifest.json").unwrap(),
        std::fs::read(dist.join("manifest.json")).unwrap()
    );
    for target in manifest.targets.values() {
        for entry in [&target.kernel.path, &target.rootfs.path] {
            let sha = if entry == &target.kernel.path {
                &target.kernel.sha256
            } else {
                &target.rootfs.sha256
            };
            assert_eq!(&sha256_hex(&cdn.object(entry).unwrap()), sha, "{entry}");
        }
    }
    assert!(cdn.object("bin/FEX/2508-fixture/arm64/FEX").is_some());

    // The signature, made with keygen's key, verifies with Debian's minisign.
    let said = minisign_verify(
        &work.path().join("from-cdn"),
        "manifest.json",
        &cdn.object("asset/v0.2.0/manifest.json").unwrap(),
        &cdn.object("asset/v0.2.0/manifest.json.minisig").unwrap(),
        &keys.public,
    );
    assert!(said.contains("Signature and comment signature verified"), "{said}");
    assert!(
        said.contains("Trusted comment: boot-assets manifest v0.2.0 sha256:"),
        "{said}"
    );
    // The same signature was kept in dist/ for the GitHub release.
    assert_eq!(
        std::fs::read(dist.join("manifest.json.minisig")).unwrap(),
        cdn.object("asset/v0.2.0/manifest.json.minisig").unwrap()
    );

    // A user's AssetManager installs every arch and every binary from the CDN, signature checked.
    let install = work.path().join("install");
    for arch in Arch::ALL {
        let manager = AssetManager::builder(cdn.url())
            .arch(arch)
            .cache_dir(install.join("boot"))
            .trusted_public_key(std::fs::read_to_string(&keys.public).unwrap())
            .build()
            .unwrap();
        let assets = manager.prepare().unwrap();
        assert_eq!(assets.version, "0.2.0");
        assert_eq!(sha256_file(&assets.kernel), manifest.targets[&arch].kernel.sha256);
        let bin = install.join(arch.as_str()).join("bin");
        let installed = manager.prepare_binaries(&bin).unwrap();
        let expected = FIXTURE_BINARIES
            .iter()
            .filter(|(_, _, arches)| arches.contains(&arch))
            .count();
        assert_eq!(installed.len(), expected, "{arch}: {installed:?}");
        for binary in installed {
            assert_eq!(
                std::fs::metadata(&binary.path).unwrap().permissions().mode() & 0o777,
                0o755
            );
        }
    }
    // The live test's check, pointed at this CDN.
    live::check_published(&cdn.url(), None, Arch::X86_64, true, Some(&keys.public));

    // verify-published, for anyone: passes with the right key, fails with another one.
    run_ok(&mut cdn.verify_published(&["--version", "latest"], &keys.public));
    let other = keygen(&work.path().join("other"));
    let err = run_fails(&mut cdn.verify_published(&["--arch", "arm64"], &other.public));
    assert!(
        err.contains("signature of") && err.contains("not signed by any of the 1 trusted key(s)"),
        "{err}"
    );

    // Publishing the same release again uploads nothing and rewrites nothing.
    let before = cdn.snapshot();
    let log = cdn.publish_log(&dist, "0.2.0", &keys);
    assert!(
        log.contains("publish: 0 object(s) to upload, 9 already published"),
        "{log}"
    );
    assert!(!log.contains("publish: upload "), "{log}");
    assert!(log.contains("latest.json already names 0.2.0"), "{log}");
    assert_eq!(cdn.snapshot(), before, "a re-publish changed the bucket");

    // A pointer published before latest.json was signed gets its signature on the next run,
    // without latest.json itself being rewritten.
    let latest_before = cdn.object(cdn::LATEST_PATH).unwrap();
    std::fs::remove_file(cdn.s3.bucket_dir().join("latest.json.minisig")).unwrap();
    // A restarted server sees the directory as it is now (it caches what it listed).
    cdn.restart_s3();
    let log = cdn.publish_log(&dist, "0.2.0", &keys);
    assert!(log.contains("publish: sign latest.json (version 0.2.0) into latest.json.minisig"));
    assert_eq!(cdn.object(cdn::LATEST_PATH).unwrap(), latest_before);
    run_ok(&mut cdn.verify_published(&["--version", "latest"], &keys.public));
}

#[test]
fn different_bytes_under_a_published_version_are_refused_and_change_nothing() {
    let (work, mut cdn, keys, dist) = publish_setup("0.2.0");
    run_ok(&mut cdn.publish(&dist, "0.2.0", &keys));
    let before = cdn.snapshot();

    // Same version, same sizes, other rootfs bytes.
    let changed = build_release(&work.path().join("b"), "0.2.0", 1, None);
    let rootfs = "asset/v0.2.0/arm64/rootfs.erofs";
    let check_refused = |cdn: &Cdn| {
        let err = run_fails(&mut cdn.publish(&changed, "0.2.0", &keys));
        assert!(
            err.contains(&format!("{rootfs} is already published with other content")),
            "{err}"
        );
        assert_eq!(cdn.snapshot(), before, "a refused publish changed the bucket");
    };
    check_refused(&cdn);

    // The server forgets the sha256 metadata when it restarts: then the objects are downloaded
    // and hashed, and the outcome is the same.
    cdn.restart_s3();
    check_refused(&cdn);
    let log = cdn.publish_log(&dist, "0.2.0", &keys);
    assert!(log.contains("publish: 0 object(s) to upload"), "{log}");
    assert!(
        log.contains("publish: asset/v0.2.0/x86_64/kernel has no sha256 metadata: downloaded it to hash it"),
        "{log}"
    );
    assert_eq!(cdn.snapshot(), before);
}

#[test]
fn an_older_version_never_moves_latest_back() {
    let (work, cdn, keys, newer) = publish_setup("0.3.0");
    let older = build_release(&work.path().join("old"), "0.2.0", 1, None);
    run_ok(&mut cdn.publish(&newer, "0.3.0", &keys));
    assert_eq!(cdn.latest().as_deref(), Some("0.3.0"));

    let log = cdn.publish_log(&older, "0.2.0", &keys);
    assert!(
        log.contains("latest.json stays at 0.3.0: it never moves back to the older 0.2.0"),
        "{log}"
    );
    assert_eq!(cdn.latest().as_deref(), Some("0.3.0"));
    // The older release itself is published and verified.
    assert!(log.contains("publish: verified v0.2.0"), "{log}");
    assert!(cdn.object("asset/v0.2.0/manifest.json.minisig").is_some());
}

#[test]
fn a_release_the_cdn_does_not_serve_never_becomes_latest() {
    let (_work, cdn, keys, dist) = publish_setup("0.2.0");
    // A CDN URL that serves something else than the bucket (a misconfigured origin).
    let elsewhere = tempfile::tempdir().unwrap();
    let wrong_cdn = Nginx::start(elsewhere.path());
    let err = run_fails(&mut cdn.publish_via(&dist, "0.2.0", &keys, &wrong_cdn.url()));
    assert!(
        err.contains(&format!(
            "verifying v0.2.0 from {} (latest.json was not touched)",
            wrong_cdn.url()
        )),
        "{err}"
    );
    assert!(err.contains("HTTP status 404"), "{err}");
    assert!(
        cdn.object("asset/v0.2.0/manifest.json").is_some(),
        "the objects were uploaded"
    );
    assert_eq!(cdn.latest(), None, "latest.json was written before verification passed");
}

#[test]
fn sigkill_during_upload_leaves_latest_alone_and_the_rerun_completes() {
    let (work, cdn, keys, first) = publish_setup("0.1.0");
    run_ok(&mut cdn.publish(&first, "0.1.0", &keys));
    let latest_before = cdn.object(cdn::LATEST_PATH).unwrap();

    // 4 MiB rootfs images uploaded at 1 MiB/s: the kill lands mid-transfer.
    let second = build_release(&work.path().join("second"), "0.2.0", 1, Some(4 << 20));
    let mut command = cdn.publish(&second, "0.2.0", &keys);
    command
        .env("RCLONE_BWLIMIT", "1M")
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    for line in stderr.lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("publish: upload asset/v0.2.0/arm64/rootfs.erofs") {
            std::thread::sleep(Duration::from_millis(1500));
            // SAFETY: kill(2) on the process group of the child this test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "publish was not killed:\n{}", seen.join("\n"));
    // Give the S3 server a moment to notice the dropped connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while cdn.object("asset/v0.2.0/arm64/rootfs.erofs").is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        cdn.object(cdn::LATEST_PATH).unwrap(),
        latest_before,
        "latest.json changed"
    );
    assert!(
        cdn.object("asset/v0.2.0/manifest.json").is_none(),
        "the manifest went up before its objects"
    );
    assert!(
        cdn.object("asset/v0.2.0/arm64/rootfs.erofs").is_none(),
        "a partial object is visible at its final path"
    );

    let log = cdn.publish_log(&second, "0.2.0", &keys);
    assert!(
        log.contains("skip asset/v0.2.0/arm64/kernel"),
        "the re-run redid finished uploads:\n{log}"
    );
    assert!(log.contains("publish: upload asset/v0.2.0/arm64/rootfs.erofs"), "{log}");
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
}
