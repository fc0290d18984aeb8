//! `cargo xtask publish`, `keygen` and `verify-published` against a real S3-compatible server
//! (`rclone serve s3` on loopback) with nginx serving the same directory as the CDN, on two-arch
//! releases made by the real `release` and `merge-manifest` commands.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use boot_assets::asset_manager::AssetManager;
use boot_assets::{cdn, Arch, Manifest};

use crate::live;
use crate::publish_support::{build_release, keygen, Cdn, GhStandin, Nginx, FIXTURE_BINARIES};
use crate::support::{require_tool, run_fails, run_ok, sha256_file, sha256_hex, xtask};

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn publish_signs_uploads_verifies_then_points_latest_and_republish_uploads_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), "0.2.0", 0, None);

    // A dry run changes nothing, anywhere.
    let output = run_ok(cdn.publish(&dist, "0.2.0", &keys).arg("--dry-run"));
    let log = stderr_of(&output);
    assert!(log.contains("would upload asset/v0.2.0/manifest.json"), "{log}");
    assert!(log.contains("latest.json now names 0.2.0"), "{log}");
    assert!(cdn.snapshot().is_empty(), "a dry run wrote {:?}", cdn.snapshot());
    assert!(!dist.join("manifest.json.minisig").exists());

    let output = run_ok(&mut cdn.publish(&dist, "0.2.0", &keys));
    let log = stderr_of(&output);
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
    let signed = work.path().join("signed-latest");
    std::fs::create_dir_all(&signed).unwrap();
    std::fs::write(signed.join("latest.json"), cdn.object(cdn::LATEST_PATH).unwrap()).unwrap();
    std::fs::write(
        signed.join("latest.json.minisig"),
        cdn.object("latest.json.minisig").expect("latest.json.minisig"),
    )
    .unwrap();
    let minisign = crate::support::require_tool("minisign");
    let checked = run_ok(
        std::process::Command::new(minisign)
            .arg("-V")
            .arg("-p")
            .arg(&keys.public)
            .arg("-m")
            .arg(signed.join("latest.json")),
    );
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("boot-assets latest.json v0.2.0"),
        "{checked:?}"
    );

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
    require_tool("minisign");
    let signed = work.path().join("from-cdn");
    std::fs::create_dir_all(&signed).unwrap();
    std::fs::write(
        signed.join("manifest.json"),
        cdn.object("asset/v0.2.0/manifest.json").unwrap(),
    )
    .unwrap();
    std::fs::write(
        signed.join("manifest.json.minisig"),
        cdn.object("asset/v0.2.0/manifest.json.minisig").unwrap(),
    )
    .unwrap();
    let output = run_ok(
        std::process::Command::new("minisign")
            .arg("-V")
            .arg("-p")
            .arg(&keys.public)
            .arg("-m")
            .arg(signed.join("manifest.json")),
    );
    let said = String::from_utf8_lossy(&output.stdout);
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
    let output = run_ok(&mut cdn.publish(&dist, "0.2.0", &keys));
    let log = stderr_of(&output);
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
    let output = run_ok(&mut cdn.publish(&dist, "0.2.0", &keys));
    assert!(stderr_of(&output).contains("publish: sign latest.json (version 0.2.0) into latest.json.minisig"));
    assert_eq!(cdn.object(cdn::LATEST_PATH).unwrap(), latest_before);
    run_ok(&mut cdn.verify_published(&["--version", "latest"], &keys.public));
}

#[test]
fn different_bytes_under_a_published_version_are_refused_and_change_nothing() {
    let work = tempfile::tempdir().unwrap();
    let mut cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("a"), "0.2.0", 0, None);
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
    let output = run_ok(&mut cdn.publish(&dist, "0.2.0", &keys));
    let log = stderr_of(&output);
    assert!(log.contains("publish: 0 object(s) to upload"), "{log}");
    assert!(
        log.contains("publish: asset/v0.2.0/x86_64/kernel has no sha256 metadata: downloaded it to hash it"),
        "{log}"
    );
    assert_eq!(cdn.snapshot(), before);
}

#[test]
fn an_older_version_never_moves_latest_back() {
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let newer = build_release(&work.path().join("new"), "0.3.0", 0, None);
    let older = build_release(&work.path().join("old"), "0.2.0", 1, None);
    run_ok(&mut cdn.publish(&newer, "0.3.0", &keys));
    assert_eq!(cdn.latest().as_deref(), Some("0.3.0"));

    let output = run_ok(&mut cdn.publish(&older, "0.2.0", &keys));
    let log = stderr_of(&output);
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
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), "0.2.0", 0, None);
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
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let first = build_release(&work.path().join("first"), "0.1.0", 0, None);
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

    let output = run_ok(&mut cdn.publish(&second, "0.2.0", &keys));
    let log = stderr_of(&output);
    assert!(
        log.contains("skip asset/v0.2.0/arm64/kernel"),
        "the re-run redid finished uploads:\n{log}"
    );
    assert!(log.contains("publish: upload asset/v0.2.0/arm64/rootfs.erofs"), "{log}");
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites() {
    let work = tempfile::tempdir().unwrap();
    let keys = keygen(work.path());
    let mode = std::fs::metadata(&keys.secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let public = std::fs::read_to_string(&keys.public).unwrap();
    assert!(public.starts_with("untrusted comment: minisign public key"), "{public}");
    let output = run_fails(
        xtask()
            .arg("keygen")
            .arg("--output")
            .arg(keys.secret.with_extension("")),
    );
    assert!(
        output.contains("already exists: keygen never overwrites a key"),
        "{output}"
    );
    assert_eq!(std::fs::read_to_string(&keys.public).unwrap(), public);
}

#[test]
fn the_signing_key_comes_from_the_environment_and_is_never_printed() {
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), "0.2.0", 0, None);
    let secret = std::fs::read_to_string(&keys.secret).unwrap();
    let secret_line = secret.lines().nth(1).unwrap().to_owned();

    // A CDN URL users could not download from is refused before anything is uploaded.
    let err = run_fails(&mut cdn.publish_via(&dist, "0.2.0", &keys, "http://cdn.example.com"));
    assert!(
        err.contains("--cdn http://cdn.example.com: refusing plain-http URL"),
        "{err}"
    );
    assert!(cdn.snapshot().is_empty());

    // Without any key, nothing is uploaded and the error says how to give one.
    let err = run_fails(&mut cdn.publish_unsigned(&dist, "0.2.0", &keys, &cdn.url()));
    assert!(
        err.contains("no signing key: pass --signing-key FILE or put the key file's text in BOOT_ASSETS_SIGNING_KEY"),
        "{err}"
    );
    assert!(cdn.snapshot().is_empty());

    let output = run_ok(
        cdn.publish_unsigned(&dist, "0.2.0", &keys, &cdn.url())
            .env("BOOT_ASSETS_SIGNING_KEY", &secret),
    );
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), stderr_of(&output));
    assert!(!printed.contains(&secret_line), "the secret key was printed");
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
}

#[test]
fn github_release_goes_through_gh_with_exact_calls_and_reruns_skip_existing_assets() {
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), "0.2.0", 0, None);
    let gh = GhStandin::new();
    let repo = "example-owner/boot-assets";
    let run = |gh: &GhStandin| {
        let mut command = cdn.publish(&dist, "0.2.0", &keys);
        command.args(["--github-release", "--github-repo", repo, "--github-target", "0123abc"]);
        gh.apply(&mut command);
        run_ok(&mut command)
    };
    run(&gh);
    let d = |p: &str| dist.join(p).display().to_string();
    let notes_sha = sha256_file(&dist.join("manifest.json"));
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert_eq!(calls[0], ["--version"]);
    assert_eq!(
        calls[1],
        [
            "release",
            "view",
            "v0.2.0",
            "--repo",
            repo,
            "--json",
            "tagName,isPrerelease,assets"
        ]
    );
    assert_eq!(
        &calls[2][..7],
        [
            "release",
            "create",
            "v0.2.0",
            "--repo",
            repo,
            "--title",
            "boot-assets v0.2.0"
        ]
    );
    assert_eq!(calls[2][7], "--notes");
    assert!(calls[2][8].contains(&notes_sha), "{}", calls[2][8]);
    assert_eq!(&calls[2][9..], ["--target", "0123abc"], "no --prerelease for 0.2.0");
    assert_eq!(
        calls[3],
        [
            "release".to_owned(),
            "upload".into(),
            "v0.2.0".into(),
            "--repo".into(),
            repo.into(),
            d("arm64/boot-assets-arm64-v0.2.0.tar.gz"),
            d("arm64/boot-assets-arm64-v0.2.0.tar.gz.sha256"),
            d("x86_64/boot-assets-x86_64-v0.2.0.tar.gz"),
            d("x86_64/boot-assets-x86_64-v0.2.0.tar.gz.sha256"),
            d("manifest.json"),
            d("manifest.json.minisig"),
        ]
    );
    let assets = gh.assets_dir(repo, "v0.2.0");
    assert_eq!(std::fs::read_dir(&assets).unwrap().count(), 6);
    assert_eq!(
        std::fs::read(assets.join("manifest.json.minisig")).unwrap(),
        cdn.object("asset/v0.2.0/manifest.json.minisig").unwrap()
    );

    // A re-run looks, finds every asset, and uploads none.
    run(&gh);
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1][1], "view");

    // An interrupted upload left one asset out: only that one goes up.
    std::fs::remove_file(assets.join("manifest.json")).unwrap();
    run(&gh);
    let calls = gh.take_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(
        calls[2],
        ["release", "upload", "v0.2.0", "--repo", repo, &d("manifest.json")]
    );

    // A pre-release becomes a GitHub pre-release, and users following latest.json never get it.
    let rc = build_release(&work.path().join("rc"), "0.3.0-rc.1", 0, None);
    let mut command = cdn.publish(&rc, "0.3.0-rc.1", &keys);
    command.args(["--github-release", "--github-repo", repo]);
    gh.apply(&mut command);
    let log = stderr_of(&run_ok(&mut command));
    assert!(
        log.contains("latest.json is left alone: 0.3.0-rc.1 is a pre-release"),
        "{log}"
    );
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
    let calls = gh.take_calls();
    assert_eq!(calls[2][..3], ["release", "create", "v0.3.0-rc.1"]);
    assert_eq!(calls[2].last().unwrap(), "--prerelease", "{calls:?}");
}

/// `cargo xtask publish --remote {remote}` with the remote defined only by rclone's own
/// `RCLONE_CONFIG_{NAME}_*` variables (no config file, no BOOT_ASSETS_S3_ENDPOINT).
fn publish_to_env_remote(
    cdn: &Cdn,
    dist: &std::path::Path,
    keys: &crate::publish_support::Keys,
    env_name: &str,
    remote: &str,
) -> std::process::Command {
    use crate::publish_support::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
    let mut command = xtask();
    command
        .args(["publish", "--version", "0.2.0", "--remote", remote])
        .arg("--dist")
        .arg(dist)
        .args(["--cdn", &cdn.url()])
        .arg("--public-key")
        .arg(&keys.public)
        .arg("--signing-key")
        .arg(&keys.secret)
        .env("RCLONE_CONFIG", "/dev/null")
        .env(format!("RCLONE_CONFIG_{env_name}_TYPE"), "s3")
        .env(format!("RCLONE_CONFIG_{env_name}_PROVIDER"), "Other")
        .env(format!("RCLONE_CONFIG_{env_name}_ENV_AUTH"), "true")
        .env(format!("RCLONE_CONFIG_{env_name}_ENDPOINT"), cdn.s3.endpoint())
        .env(format!("RCLONE_CONFIG_{env_name}_FORCE_PATH_STYLE"), "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env_remove("BOOT_ASSETS_S3_ENDPOINT")
        .env_remove("BOOT_ASSETS_SIGNING_KEY")
        .env_remove("RCLONE_BWLIMIT");
    command
}

#[test]
fn a_remote_rclone_defines_from_its_environment_is_accepted_in_any_letter_case() {
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), "0.2.0", 0, None);
    let bucket = crate::publish_support::BUCKET;

    // rclone lists this remote as `mixedcase:` yet resolves `MixedCase:` to it; publish asks rclone.
    let listed = run_ok(
        std::process::Command::new("rclone")
            .arg("listremotes")
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_MIXEDCASE_TYPE", "s3"),
    );
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "mixedcase:");

    // A name rclone does not know fails with rclone's own reason and how to define it; nothing is uploaded.
    let err = run_fails(&mut publish_to_env_remote(
        &cdn,
        &dist,
        &keys,
        "MIXEDCASE",
        &format!("Other:{bucket}"),
    ));
    assert!(
        err.contains("--remote Other:boot-assets: rclone does not know a remote named \"Other\" (Failed to backend: didn't find section in config file (\"Other\"))"),
        "{err}"
    );
    assert!(err.contains("RCLONE_CONFIG_OTHER_TYPE"), "{err}");
    assert!(cdn.snapshot().is_empty());

    let output = run_ok(&mut publish_to_env_remote(
        &cdn,
        &dist,
        &keys,
        "MIXEDCASE",
        &format!("MixedCase:{bucket}"),
    ));
    assert!(
        stderr_of(&output).contains("publish: verified v0.2.0"),
        "{}",
        stderr_of(&output)
    );
    assert_eq!(cdn.latest().as_deref(), Some("0.2.0"));
    assert!(cdn.object("asset/v0.2.0/manifest.json.minisig").is_some());
}
