//! Parallel downloads, a `cargo xtask fetch` killed mid-download, and two processes fetching
//! into one cache at once.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::rootfs_requests;
use crate::cdn_fixture::{rootfs_path, Fixture, ROOTFS_BYTES, VERSION};

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
