//! `cargo xtask fetch-packages`: the package files a lock pins, fetched and verified, into a
//! directory.
//!
//! Reads a lock in the format of `manifests/rootfs.lock`; fetches its files per Debian arch with
//! the rootfs build's private apt state ([`crate::rootfs::fetch`]), each checked against the
//! locked sha256 and kept in the download cache; writes `{output}/{filename}` atomically. The
//! container tests serve the files it writes as their package mirror.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use xshell::Shell;

use crate::rootfs::fetch::{self, Apt};
use crate::rootfs::lock::{Lock, LockedPackage};
use crate::{flags, util};

impl flags::FetchPackages {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let lock = Lock::load(&self.lock, false)?;
        let hint = format!("re-resolve {} as its header says", self.lock.display());
        let mut by_arch: BTreeMap<&str, Vec<LockedPackage>> = BTreeMap::new();
        for package in &lock.packages {
            by_arch.entry(&package.for_arch).or_default().push(package.clone());
        }
        std::fs::create_dir_all(&self.output).with_context(|| format!("creating {}", self.output.display()))?;
        for (deb_arch, entries) in &by_arch {
            let files = fetch::fetch_locked(sh, &Apt::new(deb_arch)?, entries, &hint)?;
            for (entry, bytes) in entries.iter().zip(files) {
                util::write_atomic(&self.output.join(&entry.filename), &bytes)?;
            }
        }
        eprintln!(
            "fetch-packages: {} package files of {} in {}",
            lock.packages.len(),
            self.lock.display(),
            self.output.display()
        );
        Ok(())
    }
}
