//! `cargo xtask fetch-packages`: the package files a lock pins, fetched and verified, into a
//! directory.
//!
//! Reads a lock in the format of `manifests/rootfs.lock`; fetches its binary package files with
//! the Debian service ([`crate::debian`]: private apt state per suite and arch), each checked
//! against the locked sha256 and kept in the download cache; writes `{output}/{filename}`
//! atomically. The container tests serve the files it writes as their package mirror.

use anyhow::{Context, Result};
use xshell::Shell;

use crate::debian::{self, Lock};
use crate::{flags, util};

impl flags::FetchPackages {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let lock = Lock::load(&self.lock, false)?;
        let hint = format!("re-resolve {} as its header says", self.lock.display());
        std::fs::create_dir_all(&self.output).with_context(|| format!("creating {}", self.output.display()))?;
        let files = debian::fetch_locked(sh, &lock.packages, &hint)?;
        for (entry, bytes) in lock.packages.iter().zip(files) {
            util::write_atomic(&self.output.join(&entry.filename), &bytes)?;
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
