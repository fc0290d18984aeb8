//! A throwaway nginx serving one directory on a free loopback port, for benchmarks: started
//! with its own config in a temporary directory and stopped (by the pid it wrote) when dropped.
//!
//! Reads the config template `manifests/templates/nginx.conf` (shared with the e2e suite's
//! nginx) and serves one directory; writes its config, pid file and error log into a temporary
//! directory.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The config template, relative to the repository root; each `@NAME@` is replaced.
pub const CONFIG_TEMPLATE_PATH: &str = "manifests/templates/nginx.conf";

/// How long nginx gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running nginx; stopped on drop.
pub struct Nginx {
    state_dir: tempfile::TempDir,
    /// The loopback port it listens on.
    pub port: u16,
}

impl Nginx {
    /// Starts nginx serving `root` at `http://127.0.0.1:{port}/`, each connection limited to
    /// `limit_rate` bytes per second (0: no limit; nginx's `limit_rate`).
    pub fn start(sh: &Shell, root: &Path, limit_rate: u64) -> Result<Nginx> {
        let state_dir = tempfile::tempdir().context("creating a directory for the nginx config")?;
        let port = free_loopback_port()?;
        let config = render_config(state_dir.path(), port, root, limit_rate)?;
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

/// The template with this server's state directory, port and root; no access log (a benchmark
/// must not time the log writes), sendfile on.
fn render_config(state: &Path, port: u16, root: &Path, limit_rate: u64) -> Result<String> {
    let path = crate::util::project_root().join(CONFIG_TEMPLATE_PATH);
    let template = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let config = render(
        &template,
        &[
            ("STATE", &state.display().to_string()),
            ("PORT", &port.to_string()),
            ("ROOT", &root.display().to_string()),
            ("ACCESS_LOG", "off"),
            ("SENDFILE", "on"),
            ("LIMIT_RATE", &limit_rate.to_string()),
        ],
    );
    anyhow::ensure!(
        !config.contains('@'),
        "{}: a placeholder is left unreplaced",
        path.display()
    );
    Ok(config)
}

/// Replaces each `@NAME@` of `template` with its value.
fn render(template: &str, values: &[(&str, &str)]) -> String {
    values.iter().fold(template.to_owned(), |text, (name, value)| {
        text.replace(&format!("@{name}@"), value)
    })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_renders_every_placeholder() {
        let config = render_config(Path::new("/tmp/state"), 8080, Path::new("/srv/www"), 0).unwrap();
        assert!(config.contains("pid /tmp/state/nginx.pid;"), "{config}");
        assert!(
            config.contains("server { listen 127.0.0.1:8080; root /srv/www; }"),
            "{config}"
        );
        assert!(
            config.contains("access_log off;") && config.contains("sendfile on;"),
            "{config}"
        );
    }
}
