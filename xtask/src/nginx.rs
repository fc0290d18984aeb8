//! A throwaway nginx serving one directory on a free loopback port, for benchmarks: started
//! with its own config in a temporary directory and stopped (by the pid it wrote) when dropped.
//!
//! Reads nothing but the served directory; writes its config, pid file and error log into a
//! temporary directory.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// How long nginx gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; stopped on drop.
pub struct Nginx {
    state_dir: tempfile::TempDir,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx serving `root` at `http://127.0.0.1:{port}/`.
    pub fn start(sh: &Shell, root: &Path) -> Result<Nginx> {
        let state_dir = tempfile::tempdir().context("creating a directory for the nginx config")?;
        let port = free_loopback_port()?;
        let state = state_dir.path().display().to_string();
        let config = format!(
            "user root;\ndaemon on;\nworker_processes 1;\npid {state}/nginx.pid;\nerror_log {state}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  default_type application/octet-stream;\n\
               client_body_temp_path {state}/body;\n  proxy_temp_path {state}/proxy;\n\
               fastcgi_temp_path {state}/fastcgi;\n  uwsgi_temp_path {state}/uwsgi;\n  scgi_temp_path {state}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
            root = root.display()
        );
        let config_path = state_dir.path().join("nginx.conf");
        std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
        let nginx = crate::tools::require("nginx")?;
        cmd!(sh, "{nginx} -c {config_path}")
            .quiet()
            .run()
            .context("starting nginx")?;
        let nginx = Nginx { state_dir, port };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The base URL it serves.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid_file = self.state_dir.path().join("nginx.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid this nginx wrote; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}
