//! `cargo xtask setup`: installs the host packages a job needs, from `manifests/host-packages.toml`.
//!
//! Reads the package lists, asks dpkg and pip what is already there, and installs only what is
//! missing (apt-get as root; otherwise it prints the line to run). `dist` and `test` call it first,
//! so a fresh Debian machine needs nothing but those commands.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

use crate::flags::{self, Job};
use crate::tools::ToolEntry;
use crate::util;

/// The package lists, relative to the repository root.
pub const HOST_PACKAGES_PATH: &str = "manifests/host-packages.toml";

/// What dpkg-query prints for an installed package.
const DPKG_INSTALLED: &str = "install ok installed";

/// `manifests/host-packages.toml`: the package lists per job, and which package provides each tool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostPackages {
    pub apt: BTreeMap<String, Vec<String>>,
    pub pip: BTreeMap<String, Vec<String>>,
    /// tool → the package of the lists above that provides it (read by `tools`).
    pub tools: BTreeMap<String, ToolEntry>,
}

/// Reads and parses `manifests/host-packages.toml`.
pub fn read_host_packages() -> Result<HostPackages> {
    let path = util::project_root().join(HOST_PACKAGES_PATH);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The package name of a list entry, without its `/suite` or pip version pin.
pub fn package_name(entry: &str) -> &str {
    entry.split(['/', '=', '<', '>', '~']).next().unwrap_or(entry)
}

impl flags::Setup {
    pub fn run(self, sh: &Shell) -> Result<()> {
        ensure_host_packages(sh, self.job)
    }
}

/// Installs whatever `job` needs that is not installed yet.
pub fn ensure_host_packages(sh: &Shell, job: Job) -> Result<()> {
    let lists = read_host_packages()?;
    let jobs: &[&str] = match job {
        Job::Release => &["release"],
        Job::Test => &["release", "test"],
    };
    let apt: Vec<&String> = jobs
        .iter()
        .flat_map(|j| lists.apt.get(*j).into_iter().flatten())
        .collect();
    let pip: Vec<&String> = jobs
        .iter()
        .flat_map(|j| lists.pip.get(*j).into_iter().flatten())
        .collect();
    ensure_apt(sh, &apt)?;
    ensure_pip(sh, &pip)
}

fn ensure_apt(sh: &Shell, packages: &[&String]) -> Result<()> {
    let mut missing = Vec::new();
    for entry in packages {
        let name = package_name(entry);
        let format = "-f=${Status}";
        let status = cmd!(sh, "dpkg-query -W {format} {name}")
            .quiet()
            .ignore_stderr()
            .ignore_status()
            .read()?;
        if status.trim() != DPKG_INSTALLED {
            missing.push(entry.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // Suite-pinned entries go along with any install, so apt can resolve against them.
    let mut install: Vec<&str> = packages
        .iter()
        .filter(|p| p.contains('/'))
        .map(|p| p.as_str())
        .collect();
    install.extend(missing.iter().filter(|p| !p.contains('/')));
    if !is_root() {
        bail!(
            "missing host packages: {}; install them with `sudo apt-get install -y {}`",
            missing.join(" "),
            install.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    cmd!(sh, "apt-get update -q")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()?;
    let listed = install.join(" ");
    cmd!(
        sh,
        "apt-get install -y -q --no-install-recommends --allow-downgrades {install...}"
    )
    .env("DEBIAN_FRONTEND", "noninteractive")
    .run()
    .with_context(|| format!("apt-get install {listed}"))?;
    Ok(())
}

fn ensure_pip(sh: &Shell, packages: &[&String]) -> Result<()> {
    let mut missing = Vec::new();
    for requirement in packages {
        let name = package_name(requirement);
        if cmd!(sh, "python3 -m pip show -q {name}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_err()
        {
            missing.push(requirement.as_str());
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let listed = missing.join(" ");
    eprintln!("setup: pip installing {listed}");
    cmd!(sh, "python3 -m pip install -q {missing...}")
        .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .run()
        .with_context(|| format!("pip install {listed}"))?;
    Ok(())
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::fs::read_to_string("/proc/self/status")
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_package_lists_parse() {
        let lists = read_host_packages().unwrap();
        assert!(lists.apt["release"].iter().any(|p| p == "erofs-utils"));
        assert!(lists.apt.contains_key("test") && lists.pip.contains_key("test"));
    }
}
