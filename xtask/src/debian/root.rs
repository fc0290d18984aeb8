//! A private root: the data of a set of locked binary packages unpacked into one folder with
//! `dpkg-deb -x` (no package database, no maintainer scripts), for tools and libraries a build
//! uses in place (a Go toolchain and its `golang-*-dev` sources, static libraries and headers).
//!
//! Reads the verified package files ([`super::fetch::fetch_locked_files`]); writes one
//! [`crate::build_cache`] entry `{cache}/debian/roots/{key}/`, keyed by every package's digest.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use super::fetch::fetch_locked_files;
use super::lock::LockedPackage;
use crate::build_cache::{self, Verify};

/// The cache kind of private roots.
const ROOTS_KIND: &str = "debian/roots";

/// Bumped when the way a root is unpacked changes.
const ROOT_FORMAT: &str = "boot-assets-debian-root-v1";

/// The root holding every package of `entries`, unpacked in name order; built once per set.
pub fn private_root(sh: &Shell, entries: &[LockedPackage], update_hint: &str) -> Result<PathBuf> {
    let mut sorted: Vec<&LockedPackage> = entries.iter().collect();
    sorted.sort_by(|a, b| (&a.name, &a.for_arch).cmp(&(&b.name, &b.for_arch)));
    let mut key = format!("{ROOT_FORMAT}\n");
    for entry in &sorted {
        writeln!(key, "{} {} {} {}", entry.name, entry.arch, entry.version, entry.sha256).expect("writing to a String");
    }
    crate::tools::require("dpkg-deb")?;
    let files = fetch_locked_files(sh, entries, update_hint)?;
    build_cache::cached(ROOTS_KIND, &key, Verify::Complete, |dir| {
        eprintln!("debian: unpacking {} packages into a private root", sorted.len());
        for (entry, file) in entries.iter().zip(&files) {
            cmd!(sh, "dpkg-deb -x {file} {dir}")
                .quiet()
                .run()
                .with_context(|| format!("unpacking package {}", entry.describe()))?;
        }
        Ok(())
    })
}
