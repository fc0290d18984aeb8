//! The AssetManager's fault suite: one test per fault, each against the fault-injecting server,
//! each asserting the end state (installed and verified, or a clear error) and that no corrupt
//! file ever sits at a final path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boot_assets::asset_manager::AssetError;
use boot_assets::cdn;

use crate::cdn_fixture::{kernel_path, rootfs_path, Fixture, ARCH, ROOTFS_BYTES, VERSION};
use crate::fault_server::{Fault, Request};
use crate::support;
use crate::support::sha256_hex;

/// Where the faults below cut the rootfs body.
const CUT_AT: usize = 700_000;

fn rootfs_requests(fixture: &Fixture) -> Vec<Option<u64>> {
    fixture
        .server
        .requests_for(&rootfs_path())
        .into_iter()
        .map(|r| r.range_from)
        .collect()
}

fn resumed_from(requests: &[Option<u64>]) -> u64 {
    requests[1].expect("the second request resumes with a Range header")
}

#[test]
fn connection_reset_mid_body_resumes() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests.len(), 2, "{requests:?}");
    let resumed = resumed_from(&requests);
    assert!(resumed > 0 && resumed <= CUT_AT as u64, "resumed from {resumed}");
    assert!(fixture.partial_files().is_empty());
}

#[test]
fn body_shorter_than_content_length_resumes() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ShortBody(CUT_AT));
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests, vec![None, Some(CUT_AT as u64)]);
}

#[test]
fn wrong_bytes_once_restart_from_scratch() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::WrongBytes);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(rootfs_requests(&fixture), vec![None, None]);
}

#[test]
fn wrong_bytes_twice_fail_naming_object_and_digests() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::WrongBytes);
    let error = fixture.manager().prepare().unwrap_err();
    let mut wrong = fixture.rootfs.clone();
    wrong[ROOTFS_BYTES / 2] ^= 0xff;
    let expected = sha256_hex(&fixture.rootfs);
    let actual = sha256_hex(&wrong);
    assert_eq!(
        error.to_string(),
        format!(
            "rootfs from {}/{}: sha256 mismatch: expected {expected}, got {actual}",
            fixture.server.url(),
            rootfs_path()
        )
    );
    assert_eq!(rootfs_requests(&fixture).len(), 2, "one retry from scratch, then fail");
    assert!(!fixture.version_dir().join(cdn::ROOTFS_FILE).exists());
    assert!(fixture.partial_files().is_empty(), "a mismatching download is deleted");
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn not_found_names_the_url_and_is_not_retried() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::Status(404));
    let error = fixture.manager().prepare().unwrap_err();
    assert!(matches!(error, AssetError::HttpStatus { status: 404, .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("GET {}/{}: HTTP status 404", fixture.server.url(), rootfs_path())
    );
    assert_eq!(rootfs_requests(&fixture).len(), 1);
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn server_errors_are_retried_until_success() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::Status(500));
    fixture.server.fault_once(&rootfs_path(), Fault::Status(503));
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(rootfs_requests(&fixture).len(), 3);
}

#[test]
fn server_errors_give_up_after_the_retries() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::Status(503));
    let error = fixture.builder().retries(2).build().unwrap().prepare().unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("HTTP status 503 (gave up after 3 attempt(s))"),
        "{error}"
    );
    assert_eq!(rootfs_requests(&fixture).len(), 3);
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn stalled_body_times_out_instead_of_hanging() {
    let fixture = Fixture::new();
    fixture.server.fault_always(&rootfs_path(), Fault::StallAfter(CUT_AT));
    let manager = fixture
        .builder()
        .read_timeout(Duration::from_millis(700))
        .retries(1)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = manager.prepare().unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, AssetError::Transfer { attempts: 2, .. }), "{error:?}");
    assert!(error.to_string().to_lowercase().contains("timeout"), "{error}");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    fixture.assert_no_corrupt_final_file();

    // What did arrive is kept, and the next prepare resumes from it.
    assert_eq!(fixture.partial_files().len(), 1);
    fixture.server.heal();
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert!(rootfs_requests(&fixture).last().unwrap().is_some());
}

#[test]
fn resume_answered_with_200_restarts_from_zero() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture.server.fault_once(&rootfs_path(), Fault::IgnoreRange);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests.len(), 2);
    assert!(requests[1].is_some(), "the second request asked for a range");
    let served = fixture.server.bytes_served(&rootfs_path());
    assert_eq!(served, (CUT_AT + ROOTFS_BYTES) as u64, "the 200 body was taken whole");
}

/// A cut download whose resume request is answered with `answer`: the client asks for the rest,
/// refuses the answer, and downloads the file again from zero.
fn resume_refused_restarts_from_zero(answer: Fault) {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture.server.fault_once(&rootfs_path(), answer);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[1].is_some() && requests[2].is_none(), "{requests:?}");
}

#[test]
fn range_not_satisfiable_restarts_from_zero() {
    resume_refused_restarts_from_zero(Fault::RangeNotSatisfiable);
}

#[test]
fn content_range_not_matching_the_request_restarts_from_zero() {
    resume_refused_restarts_from_zero(Fault::WrongContentRange);
}

#[test]
fn redirect_loop_is_refused_naming_the_url() {
    let fixture = Fixture::new();
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo(format!("/{}", rootfs_path())));
    let error = fixture.manager().prepare().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "GET {}/{}: more than 5 redirects (a redirect loop?)",
            fixture.server.url(),
            rootfs_path()
        )
    );
    assert_eq!(rootfs_requests(&fixture).len(), 6, "the loop is cut, not retried");
    fixture.assert_no_corrupt_final_file();
}

#[test]
fn a_redirect_is_followed_with_its_range() {
    let fixture = Fixture::new();
    fixture.server.put("mirror/rootfs", fixture.rootfs.clone());
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo("/mirror/rootfs".into()));
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let mirror = fixture.server.requests_for("mirror/rootfs");
    assert_eq!(mirror.len(), 1);
    assert!(mirror[0].range_from.is_some(), "the Range header survives the redirect");
}

#[test]
fn warm_prepare_makes_no_request_and_works_offline() {
    let fixture = Fixture::new();
    let first = fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let before = fixture.server.requests().len();
    let second = fixture.manager().prepare().unwrap();
    assert_eq!(
        fixture.server.requests().len(),
        before,
        "a warm prepare fetched something"
    );
    assert_eq!(first.kernel, second.kernel);
    assert_eq!(second.kernel_cmdline, ARCH.default_kernel_cmdline());

    // With the server gone, the verified cache is all it needs.
    let Fixture { server, cache, .. } = fixture;
    let url = server.url();
    drop(server);
    let offline = boot_assets::AssetManager::builder(url)
        .version(VERSION)
        .arch(ARCH)
        .cache_dir(cache.path())
        .retries(0)
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(offline.rootfs, cache.path().join(VERSION).join(cdn::ROOTFS_FILE));
}

#[test]
fn cached_file_altered_on_disk_is_refetched() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let rootfs = fixture.version_dir().join(cdn::ROOTFS_FILE);
    std::thread::sleep(Duration::from_millis(20));
    let mut altered = fixture.rootfs.clone();
    altered[10] ^= 1;
    std::fs::write(&rootfs, &altered).unwrap();

    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(
        rootfs_requests(&fixture).len(),
        2,
        "the altered rootfs was fetched again"
    );
    assert_eq!(
        fixture.server.requests_for(&kernel_path()).len(),
        1,
        "the kernel was not"
    );
}

#[test]
fn manifest_path_with_dotdot_is_refused_before_any_request() {
    let fixture = Fixture::new();
    let text = fixture
        .manifest
        .to_json_pretty()
        .replace(&rootfs_path(), "asset/../../../etc/passwd");
    fixture.serve_manifest_text(&text);
    let error = fixture.manager().prepare().unwrap_err().to_string();
    assert!(
        error.contains("targets.x86_64.rootfs.path: \"asset/../../../etc/passwd\" has a `..` component"),
        "{error}"
    );
    let requested: Vec<String> = fixture.server.requests().into_iter().map(|r: Request| r.path).collect();
    assert_eq!(requested, vec![format!("/{}", cdn::manifest_path(VERSION))]);
    assert!(
        !fixture.version_dir().join(cdn::MANIFEST_FILE).exists(),
        "a refused manifest is not kept"
    );
}

#[test]
fn wrong_schema_version_and_missing_arch_are_clear_errors() {
    let fixture = Fixture::new();
    let text = fixture
        .manifest
        .to_json_pretty()
        .replace("\"schema_version\": 1", "\"schema_version\": 2");
    fixture.serve_manifest_text(&text);
    let error = fixture.manager().prepare().unwrap_err().to_string();
    assert!(
        error.contains("schema_version: is 2 but must equal the major component"),
        "{error}"
    );

    let fixture = Fixture::new();
    let error = fixture
        .builder()
        .arch(boot_assets::Arch::Arm64)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "manifest of version 1.2.3 has no target for arm64 (it has: x86_64)"
    );
    assert_eq!(rootfs_requests(&fixture).len(), 0);
}

#[test]
fn latest_is_resolved_and_assets_download_in_parallel() {
    let fixture = Fixture::new();
    // Slow enough that the kernel (300 KiB) is still on the wire when the rootfs starts.
    fixture.server.throttle(Some(2 * 1024 * 1024));
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = events.clone();
    let prepared = fixture
        .builder()
        .version("latest")
        .progress(move |p| seen.lock().unwrap().push((p.name.to_owned(), p.phase)))
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(prepared.version, VERSION);
    fixture.assert_installed();
    let events = events.lock().unwrap();
    use boot_assets::asset_manager::Phase;
    let position = |name: &str, phase: Phase| events.iter().position(|e| e.0 == name && e.1 == phase).unwrap();
    assert!(
        position("rootfs", Phase::Downloading) < position("kernel", Phase::Ready),
        "the rootfs started only after the kernel was done: {events:?}"
    );
}

/// `cargo xtask fetch` against the fixture, as a child process.
fn fetch_process(fixture: &Fixture) -> Command {
    let mut command = fixture.fetch_command(fixture.cache.path());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn wait_ok(child: Child) {
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "xtask fetch failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn sigkill_mid_download_then_rerun_resumes() {
    let fixture = Fixture::new();
    fixture.server.throttle(Some(1024 * 1024));
    let mut child = fetch_process(&fixture).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fixture.server.bytes_served(&rootfs_path()) < 600_000 {
        assert!(Instant::now() < deadline, "the download never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no destructor, no cleanup, exactly like a crash or a power cut of the process.
    child.kill().unwrap();
    child.wait().unwrap();
    let first_run = fixture.server.bytes_served(&rootfs_path());
    assert!((first_run as usize) < ROOTFS_BYTES, "killed too late to show anything");
    assert_eq!(fixture.partial_files().len(), 1, "the partial download is kept");
    fixture.assert_no_corrupt_final_file();

    fixture.server.throttle(None);
    wait_ok(fetch_process(&fixture).spawn().unwrap());
    fixture.assert_installed();
    let second_run = fixture.server.bytes_served(&rootfs_path()) - first_run;
    assert!(
        (second_run as usize) < ROOTFS_BYTES,
        "the re-run fetched {second_run} bytes, the whole rootfs is {ROOTFS_BYTES}: it did not resume"
    );
    let last = rootfs_requests(&fixture).last().copied().unwrap();
    assert!(last.is_some(), "the re-run asked for a range");
}

#[test]
fn two_processes_at_once_both_succeed_with_one_download() {
    let fixture = Fixture::new();
    fixture.server.throttle(Some(8 * 1024 * 1024));
    let first = fetch_process(&fixture).spawn().unwrap();
    let second = fetch_process(&fixture).spawn().unwrap();
    wait_ok(first);
    wait_ok(second);
    fixture.assert_installed();
    // The lock made the second wait, and it then found everything verified.
    assert_eq!(fixture.server.bytes_served(&rootfs_path()), ROOTFS_BYTES as u64);
    assert!(fixture.partial_files().is_empty());
}

// ---- A hostile cache directory (issue 11, items 3, 5, 6) ----

/// Collects every `RemovedLink` report of a manager.
fn removed_links() -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    impl Fn(&boot_assets::asset_manager::Progress<'_>) + Send + Sync + 'static,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let callback = move |p: &boot_assets::asset_manager::Progress<'_>| {
        if p.phase == boot_assets::asset_manager::Phase::RemovedLink {
            sink.lock().unwrap().push(p.name.to_owned());
        }
    };
    (seen, callback)
}

fn is_regular_file(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

#[test]
fn planted_links_at_every_path_the_client_writes_are_removed_and_never_followed() {
    let mut fixture = Fixture::new();
    fixture.add_binaries(&[
        ("dockerd", None, b"#!/bin/sh\necho dockerd\n"),
        ("docker-init", Some("libexec/docker"), b"init"),
    ]);
    let home = tempfile::tempdir().unwrap();
    let victim = home.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let version_dir = fixture.version_dir();
    let bin_dir = home.path().join("runtime/bin");
    std::fs::create_dir_all(&version_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::create_dir_all(home.path().join("runtime/libexec")).unwrap();
    let rootfs_sha = sha256_hex(&fixture.rootfs);
    let planted = [
        version_dir.join(".lock"),
        version_dir.join(format!(".partial-rootfs.erofs.{rootfs_sha}")),
        version_dir.join(".rootfs.erofs.verified"),
        version_dir.join(cdn::ROOTFS_FILE),
        version_dir.join(cdn::KERNEL_FILE),
        version_dir.join(cdn::MANIFEST_FILE),
        fixture
            .cache
            .path()
            .join(boot_assets::asset_manager::LAST_RESOLVED_FILE),
        bin_dir.join(".lock"),
        bin_dir.join("dockerd"),
        home.path().join("runtime/libexec/docker"),
    ];
    for link in &planted {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    // A dangling link too: creating through it would create its target.
    let dangling_target = home.path().join("created-through-a-link");
    std::os::unix::fs::symlink(&dangling_target, bin_dir.join(".dockerd.verified")).unwrap();

    let (reports, callback) = removed_links();
    let manager = fixture.builder().version("latest").progress(callback).build().unwrap();
    manager.prepare().unwrap();
    manager.prepare_binaries(&bin_dir).unwrap();

    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"precious",
        "the link's target was written"
    );
    assert!(!dangling_target.exists(), "a dangling link's target was created");
    fixture.assert_installed();
    for file in [
        version_dir.join(cdn::ROOTFS_FILE),
        version_dir.join(cdn::KERNEL_FILE),
        version_dir.join(cdn::MANIFEST_FILE),
        bin_dir.join("dockerd"),
        home.path().join("runtime/libexec/docker/docker-init"),
    ] {
        assert!(is_regular_file(&file), "{} is not a regular file", file.display());
    }
    let reports = reports.lock().unwrap();
    for link in planted.iter().chain([&bin_dir.join(".dockerd.verified")]) {
        let link = link.display().to_string();
        assert!(
            reports.contains(&link),
            "{link} was not reported as removed: {reports:?}"
        );
    }
}

#[test]
fn a_linked_version_directory_is_replaced_and_its_target_left_alone() {
    let fixture = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), fixture.version_dir()).unwrap();
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert!(std::fs::symlink_metadata(fixture.version_dir()).unwrap().is_dir());
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "files went through the link"
    );
}

#[test]
fn binaries_with_identical_contents_install_from_one_download() {
    let mut fixture = Fixture::new();
    let same = crate::cdn_fixture::random_bytes(200_000);
    fixture.add_binaries(&[
        ("one", None, &same),
        ("two", None, &same),
        ("three", Some("libexec"), &same),
    ]);
    let home = tempfile::tempdir().unwrap();
    let bin_dir = home.path().join("runtime/bin");
    let installed = fixture.manager().prepare_binaries(&bin_dir).unwrap();
    assert_eq!(installed.len(), 3);
    for binary in &installed {
        assert!(
            std::fs::read(&binary.path).unwrap() == same,
            "{} differs",
            binary.path.display()
        );
        assert!(is_regular_file(&binary.path));
    }
    let requests: usize = ["one", "two", "three"]
        .iter()
        .map(|name| {
            fixture
                .server
                .requests_for(&cdn::binary_path(name, "1.0+b", ARCH))
                .len()
        })
        .sum();
    assert_eq!(requests, 1, "identical contents were downloaded more than once");
    let leftovers: Vec<_> = std::fs::read_dir(&bin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".partial-") || n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn in_place_edit_with_the_mtime_restored_is_refetched() {
    let fixture = Fixture::new();
    fixture.manager().prepare().unwrap();
    let rootfs = fixture.version_dir().join(cdn::ROOTFS_FILE);
    let before = std::fs::metadata(&rootfs).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let file = std::fs::OpenOptions::new().write(true).open(&rootfs).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[fixture.rootfs[10] ^ 1], 10).unwrap();
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = std::fs::metadata(&rootfs).unwrap();
    assert_eq!(after.modified().unwrap(), before.modified().unwrap());
    assert_eq!(after.len(), before.len());

    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    assert_eq!(
        rootfs_requests(&fixture).len(),
        2,
        "the edited rootfs was served as verified"
    );
}

// ---- Bounded time (item 4) ----

#[test]
fn trickling_server_is_abandoned_within_the_configured_bound() {
    let fixture = Fixture::new();
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::Trickle(CUT_AT, Duration::from_millis(200)));
    let (window, read_timeout, retries) = (Duration::from_secs(1), Duration::from_secs(2), 1);
    let manager = fixture
        .builder()
        .read_timeout(read_timeout)
        .min_transfer_rate(64 * 1024)
        .rate_window(window)
        .retries(retries)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = manager.prepare().unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, AssetError::Transfer { attempts: 2, .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains("slower than the minimum rate of 65536 bytes/s"),
        "{error}"
    );
    // The documented bound per attempt: connect + headers + window + one read, plus backoff.
    let bound = (retries + 1) * (window + read_timeout * 2) + Duration::from_secs(1);
    assert!(elapsed < bound, "took {elapsed:?}, the bound is {bound:?}");
    fixture.assert_no_corrupt_final_file();
}

/// A real TLS server (`openssl s_server`) on loopback with a self-signed certificate that no
/// client trusts; killed when dropped.
struct UntrustedTlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl UntrustedTlsServer {
    fn start() -> UntrustedTlsServer {
        let openssl = support::require_tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        support::run_ok(
            Command::new(&openssl)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&openssl)
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(port.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        UntrustedTlsServer { child, port, _dir: dir }
    }
}

impl Drop for UntrustedTlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn certificate_errors_are_not_retried() {
    let server = UntrustedTlsServer::start();
    let cache = tempfile::tempdir().unwrap();
    let backoff = Duration::from_secs(1);
    let started = Instant::now();
    let error = boot_assets::AssetManager::builder(format!("https://127.0.0.1:{}", server.port))
        .version(VERSION)
        .arch(ARCH)
        .cache_dir(cache.path())
        .retries(3)
        .retry_backoff(backoff)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, AssetError::Tls { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.contains("TLS error (not retried)") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
    assert!(elapsed < backoff, "took {elapsed:?}: the handshake was retried");
}

// ---- latest.json: offline warm start, rollback, replay (items 7, 8) ----

#[test]
fn offline_latest_uses_the_last_fully_verified_version_and_says_so() {
    let fixture = Fixture::new();
    let first = fixture.builder().version("latest").build().unwrap().prepare().unwrap();
    assert_eq!(first.offline_fallback, None);
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let before = fixture.server.requests().len();
    let offline = fixture
        .builder()
        .version("latest")
        .retries(0)
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(offline.version, VERSION);
    let reason = offline.offline_fallback.expect("the fallback is reported");
    assert!(reason.contains("latest.json") && reason.contains("503"), "{reason}");
    let after: Vec<String> = fixture.server.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        after,
        vec![format!("/{}", cdn::LATEST_PATH)],
        "only latest.json was asked for"
    );

    // Not fully verified any more: no fallback, the fetch error is the answer.
    std::fs::remove_file(fixture.version_dir().join(cdn::ROOTFS_FILE)).unwrap();
    let error = fixture
        .builder()
        .version("latest")
        .retries(0)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    assert!(
        matches!(error, AssetError::Transfer { .. } | AssetError::HttpStatus { .. }),
        "{error:?}"
    );
}

/// Serves `latest.json` naming `version`, signed by `pair`; returns (bytes, signature).
fn serve_signed_latest(
    fixture: &Fixture,
    pair: &crate::signature::KeyPair,
    version: &str,
    scratch: &std::path::Path,
) -> (String, String) {
    let latest = boot_assets::Latest {
        version: version.into(),
    }
    .to_json_pretty();
    let signature = crate::signature::sign(pair, latest.as_bytes(), scratch);
    fixture.server.put(cdn::LATEST_PATH, latest.clone());
    fixture
        .server
        .put(&cdn::signature_path(cdn::LATEST_PATH), signature.clone());
    (latest, signature)
}

fn signed_manifest(fixture: &Fixture, pair: &crate::signature::KeyPair, scratch: &std::path::Path) {
    let manifest = fixture.manifest.to_json_pretty();
    let signature = crate::signature::sign(pair, manifest.as_bytes(), scratch);
    fixture.server.put(&cdn::manifest_signature_path(VERSION), signature);
}

/// A fixture whose manifest is signed by a fresh `release` key pair: the scratch dir holding the
/// keys, the pair, the public key text a client trusts, and the fixture.
fn signed_fixture() -> (tempfile::TempDir, crate::signature::KeyPair, String, Fixture) {
    let scratch = tempfile::tempdir().unwrap();
    let pair = crate::signature::key_pair(scratch.path(), "release");
    let key = std::fs::read_to_string(&pair.public).unwrap();
    let fixture = Fixture::new();
    signed_manifest(&fixture, &pair, scratch.path());
    (scratch, pair, key, fixture)
}

#[test]
fn a_signed_latest_json_moving_back_or_replayed_is_refused_naming_both_versions() {
    let (scratch, pair, key, fixture) = signed_fixture();
    let with_key = || fixture.builder().version("latest").trusted_public_key(key.clone());

    // An older release was current once; the client saw it.
    let (old_latest, old_signature) = serve_signed_latest(&fixture, &pair, "1.0.0", scratch.path());
    assert_eq!(with_key().build().unwrap().resolve_version().unwrap(), "1.0.0");
    // Then the new one, fully installed.
    serve_signed_latest(&fixture, &pair, VERSION, scratch.path());
    with_key().build().unwrap().prepare().unwrap();

    // A replay of the old, validly signed latest.json is refused before anything is fetched.
    fixture.server.put(cdn::LATEST_PATH, old_latest);
    fixture
        .server
        .put(&cdn::signature_path(cdn::LATEST_PATH), old_signature);
    let error = with_key().build().unwrap().prepare().unwrap_err();
    assert!(matches!(error, AssetError::Rollback { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}/latest.json names version 1.0.0, lower than version {VERSION} verified before: refusing to roll \
             back (a replayed or stale latest.json?)",
            fixture.server.url()
        )
    );

    // A freshly signed latest.json that moves back is refused the same way.
    serve_signed_latest(&fixture, &pair, "1.2.2", scratch.path());
    let error = with_key().build().unwrap().prepare().unwrap_err().to_string();
    assert!(
        error.contains("names version 1.2.2, lower than version 1.2.3"),
        "{error}"
    );

    // A latest.json whose signature does not match it is refused too.
    fixture.server.put(
        cdn::LATEST_PATH,
        boot_assets::Latest {
            version: "9.9.9".into(),
        }
        .to_json_pretty(),
    );
    let error = with_key().build().unwrap().prepare().unwrap_err();
    assert!(matches!(error, AssetError::Signature { .. }), "{error:?}");
}

#[test]
fn offline_fallback_with_a_key_needs_a_signed_resolution() {
    let (scratch, pair, key, fixture) = signed_fixture();
    // Resolved without a key: not good enough for a client that trusts one.
    fixture.builder().version("latest").build().unwrap().prepare().unwrap();
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let keyed = || {
        fixture
            .builder()
            .version("latest")
            .retries(0)
            .trusted_public_key(key.clone())
    };
    assert!(keyed().build().unwrap().prepare().is_err());

    fixture.server.heal();
    serve_signed_latest(&fixture, &pair, VERSION, scratch.path());
    keyed().build().unwrap().prepare().unwrap();
    fixture.server.fault_always(cdn::LATEST_PATH, Fault::Status(503));
    let offline = keyed().build().unwrap().prepare().unwrap();
    assert!(offline.offline_fallback.is_some());
}

// ---- Pinned manifest digest (item 9) ----

#[test]
fn a_wrong_pinned_manifest_digest_is_refused_before_the_manifest_is_used() {
    let fixture = Fixture::new();
    let actual = sha256_hex(fixture.manifest.to_json_pretty().as_bytes());
    let wrong = "0".repeat(64);
    let error = fixture
        .builder()
        .expected_manifest_sha256(&wrong)
        .build()
        .unwrap()
        .prepare()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}/{}: the manifest's sha256 is {actual}, not the pinned {wrong}; refusing to use it",
            fixture.server.url(),
            cdn::manifest_path(VERSION)
        )
    );
    assert!(rootfs_requests(&fixture).is_empty());
    assert!(!fixture.version_dir().join(cdn::MANIFEST_FILE).exists());

    fixture
        .builder()
        .expected_manifest_sha256(&actual)
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    fixture.assert_installed();
    // A cached manifest that no longer has the pinned digest is not used: it is fetched again.
    let cached = fixture.version_dir().join(cdn::MANIFEST_FILE);
    let mut edited = std::fs::read_to_string(&cached).unwrap();
    edited.push(' ');
    std::fs::write(&cached, edited).unwrap();
    let before = fixture.server.requests_for(&cdn::manifest_path(VERSION)).len();
    fixture
        .builder()
        .expected_manifest_sha256(&actual)
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    assert_eq!(
        fixture.server.requests_for(&cdn::manifest_path(VERSION)).len(),
        before + 1
    );
}

// ---- Messages (item 10) ----

#[test]
fn a_refused_redirect_names_both_urls_and_why() {
    let fixture = Fixture::new();
    fixture
        .server
        .fault_always(&rootfs_path(), Fault::RedirectTo("http://mirror.example/rootfs".into()));
    let error = fixture.manager().prepare().unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "GET {}/{}: refusing the redirect to http://mirror.example/rootfs: the target is plain http to a host \
             that is not loopback (insecure http is not allowed)",
            fixture.server.url(),
            rootfs_path()
        )
    );
    assert_eq!(rootfs_requests(&fixture).len(), 1, "a refused redirect is not retried");
}

#[test]
fn an_unusable_install_dir_is_named_as_the_local_directory() {
    let mut fixture = Fixture::new();
    fixture.add_binaries(&[("docker-init", Some("libexec/docker"), b"init")]);
    let home = tempfile::tempdir().unwrap();
    let runtime = home.path().join("runtime");
    let bin_dir = runtime.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    // A regular file of the user's where the install dir's first component belongs.
    std::fs::write(runtime.join("libexec"), b"not a directory").unwrap();
    let error = fixture.manager().prepare_binaries(&bin_dir).unwrap_err();
    assert!(matches!(error, AssetError::InstallDir { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "binary docker-init: cannot use the local directory {} (install_dir \"libexec/docker\", relative to the \
             parent of the runtime bin dir): opening directory {}: a regular file is in the way where a directory \
             belongs; remove it",
            runtime.join("libexec/docker").display(),
            runtime.join("libexec").display()
        )
    );
    assert_eq!(std::fs::read(runtime.join("libexec")).unwrap(), b"not a directory");
}

#[test]
fn duplicate_arch_keys_in_a_served_manifest_are_refused() {
    let fixture = Fixture::new();
    let text = fixture.manifest.to_json_pretty();
    let start = text.find("\"x86_64\": {").unwrap();
    let end = text[start..].find("\n    }").unwrap() + start + "\n    }".len();
    let target = text[start..end].to_owned();
    fixture.serve_manifest_text(&text.replacen(&target, &format!("{target},\n    {target}"), 1));
    let error = fixture.manager().prepare().unwrap_err().to_string();
    assert!(
        error.contains("duplicate arch key `x86_64`: each arch may appear only once"),
        "{error}"
    );
    assert!(rootfs_requests(&fixture).is_empty());
}
