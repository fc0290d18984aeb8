//! Bounded time: a stalled or trickling server is abandoned within the configured bound, and a
//! certificate error is not retried.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use boot_assets::asset_manager::{AssetError, AssetManager};

use super::{rootfs_requests, CUT_AT};
use crate::cdn_fixture::{rootfs_path, Fixture, ARCH, VERSION};
use crate::fault_server::Fault;
use crate::support;

/// Prepares with `manager`, which must fail after two transfer attempts; returns the error and
/// how long the prepare took.
fn failed_in_two_attempts(manager: &AssetManager) -> (AssetError, Duration) {
    let started = Instant::now();
    let error = manager.prepare().unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, AssetError::Transfer { attempts: 2, .. }), "{error:?}");
    (error, elapsed)
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
    let (error, elapsed) = failed_in_two_attempts(&manager);
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
    let (error, elapsed) = failed_in_two_attempts(&manager);
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
