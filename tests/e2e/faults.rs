//! The AssetManager's fault suite: one test per fault, each against the fault-injecting server,
//! each asserting the end state (installed and verified, or a clear error) and that no corrupt
//! file ever sits at a final path.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boot_assets::asset_manager::AssetError;
use boot_assets::cdn;

use crate::cdn_fixture::{kernel_path, rootfs_path, sha256, Fixture, ARCH, ROOTFS_BYTES, VERSION};
use crate::fault_server::{Fault, Request};
use crate::support;

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
    let expected = sha256(&fixture.rootfs);
    let actual = sha256(&wrong);
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

#[test]
fn range_not_satisfiable_restarts_from_zero() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture.server.fault_once(&rootfs_path(), Fault::RangeNotSatisfiable);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[1].is_some() && requests[2].is_none(), "{requests:?}");
}

#[test]
fn content_range_not_matching_the_request_restarts_from_zero() {
    let fixture = Fixture::new();
    fixture.server.fault_once(&rootfs_path(), Fault::ResetAfter(CUT_AT));
    fixture.server.fault_once(&rootfs_path(), Fault::WrongContentRange);
    fixture.manager().prepare().unwrap();
    fixture.assert_installed();
    let requests = rootfs_requests(&fixture);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[1].is_some() && requests[2].is_none(), "{requests:?}");
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
    let mut command = support::xtask();
    command
        .args([
            "fetch",
            "--quiet",
            "--cdn",
            &fixture.server.url(),
            "--version",
            VERSION,
            "--arch",
        ])
        .arg(ARCH.as_str())
        .arg("--dest")
        .arg(fixture.cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
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
