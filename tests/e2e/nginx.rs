//! A real nginx (Debian's) serving one directory on a free loopback port, started and stopped
//! by the test: its own config, pid file, logs and temp paths live in a temporary directory,
//! and the access log lets a test count the requests it received.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{require_tool, run_ok};

/// The running server; stopped (SIGTERM to the pid it wrote) when dropped.
pub struct Nginx {
    state_dir: tempfile::TempDir,
    port: u16,
}

impl Nginx {
    /// Starts nginx serving `root` on 127.0.0.1.
    pub fn start(root: &Path) -> Nginx {
        let nginx = require_tool("nginx", "apt-get install -y nginx");
        let state_dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let state = state_dir.path().display();
        // `user root` because workers would otherwise run as nobody and could not read a 0700
        // temporary directory; `daemon on` so the command returns once it is listening.
        let config = format!(
            "user root;\ndaemon on;\nworker_processes 1;\npid {state}/nginx.pid;\nerror_log {state}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {state}/access.log;\n  default_type application/octet-stream;\n\
               client_body_temp_path {state}/body;\n  proxy_temp_path {state}/proxy;\n\
               fastcgi_temp_path {state}/fastcgi;\n  uwsgi_temp_path {state}/uwsgi;\n  scgi_temp_path {state}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
            root = root.display()
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
