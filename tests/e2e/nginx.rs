//! A real nginx (Debian's) serving one directory on a free loopback port, started and stopped
//! by the test: its own config, pid file, logs and temp paths live in a temporary directory,
//! and the access log lets a test count the requests it received.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{project_root, require_tool, run_ok};

/// How long a test waits for nginx to log the requests it has answered.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The config template xtask's own nginx (`xtask/src/nginx.rs`) renders too.
const CONFIG_TEMPLATE_PATH: &str = "manifests/templates/nginx.conf";

/// The running server; stopped (SIGTERM to the pid it wrote) when dropped.
pub struct Nginx {
    state_dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx serving `root` on 127.0.0.1.
    pub fn start(root: &Path) -> Nginx {
        let nginx = require_tool("nginx");
        let state_dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let state = state_dir.path().display().to_string();
        // The template xtask's benchmark nginx uses, with an access log (`requests` counts it)
        // and nginx's default of no sendfile.
        let template = std::fs::read_to_string(project_root().join(CONFIG_TEMPLATE_PATH)).unwrap();
        let config = [
            ("@STATE@", state.clone()),
            ("@PORT@", port.to_string()),
            ("@ROOT@", root.display().to_string()),
            ("@ACCESS_LOG@", format!("{state}/access.log")),
            ("@SENDFILE@", "off".to_owned()),
            ("@LIMIT_RATE@", "0".to_owned()),
        ]
        .iter()
        .fold(template, |text, (placeholder, value)| text.replace(placeholder, value));
        assert!(
            !config.contains('@'),
            "{CONFIG_TEMPLATE_PATH}: a placeholder is left:\n{config}"
        );
        let config_path = state_dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        run_ok(Command::new(nginx).arg("-c").arg(&config_path));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { state_dir, port }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (at most [`LOG_WAIT`]) until the access log has a `GET` of every one of `paths`
    /// (relative to the root), and returns the request lines then. nginx writes a request's
    /// line after the response is sent, so a client can be done before its line is there.
    pub fn wait_for_requests(&self, paths: &[String]) -> Vec<String> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let requests = self.requests();
            let missing: Vec<&String> = paths
                .iter()
                .filter(|path| !requests.iter().any(|line| line.starts_with(&format!("GET /{path} "))))
                .collect();
            if missing.is_empty() {
                return requests;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never logged {missing:?}; it logged {requests:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The request lines logged so far, e.g. `GET /latest.json HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.state_dir.path().join("access.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split('"').nth(1).map(str::to_owned))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(self.state_dir.path().join("nginx.pid"))
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok());
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the pid this nginx wrote; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}
