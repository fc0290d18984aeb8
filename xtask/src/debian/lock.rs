//! Lock files of Debian inputs (`manifests/rootfs.lock`, `manifests/kernel/source.lock`, …):
//! the exact suite, version, file name, size and sha256 of every binary package file per Debian
//! architecture, and of every file of a source package (its `.dsc` first).
//!
//! Pure parsing, validation and rendering; the commands that re-resolve a lock write it through
//! `util::write_atomic`. A normal build reads it and resolves nothing new.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::suite::Suite;

/// One pinned binary package file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    /// Debian architecture of the package file (`arm64`, `amd64` or `all`).
    pub arch: String,
    /// Debian architecture of the image this entry was resolved for (`arm64`, `amd64`).
    pub for_arch: String,
    /// The Debian suite it was resolved in (`bookworm`, `trixie`, `sid`).
    pub suite: String,
    pub version: String,
    /// The archive's file name (the last component of its pool path).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

impl LockedPackage {
    /// `name version (arch)`, how errors name a package.
    pub fn describe(&self) -> String {
        format!("{} {} ({})", self.name, self.version, self.arch)
    }
}

/// One file of a source package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

/// One pinned source package: its `.dsc` (which names the digests of the rest, checked again by
/// `dpkg-source`) and every file it lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSource {
    pub name: String,
    pub suite: String,
    pub version: String,
    /// The `.dsc` first, then the tarballs (and signatures) it lists.
    pub files: Vec<SourceFile>,
}

impl LockedSource {
    /// `name version (source, suite)`, how errors name a source package.
    pub fn describe(&self) -> String {
        format!("{} {} (source, {})", self.name, self.version, self.suite)
    }

    /// The `.dsc` file.
    pub fn dsc(&self) -> &SourceFile {
        &self.files[0]
    }
}

/// The whole lock file: binary package files, then source packages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<LockedSource>,
}

impl Lock {
    /// Reads and validates a lock file; a missing file is an empty lock only when `allow_missing`.
    pub fn load(path: &Path, allow_missing: bool) -> Result<Lock> {
        match std::fs::read_to_string(path) {
            Ok(text) => Lock::parse(&text).with_context(|| format!("lock file {}", path.display())),
            Err(e) if allow_missing && e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(e) => Err(e).with_context(|| format!("reading lock file {}", path.display())),
        }
    }

    /// Parses and validates lock text.
    pub fn parse(text: &str) -> Result<Lock> {
        let lock: Lock = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let mut seen = BTreeSet::new();
        for package in &lock.packages {
            ensure!(
                seen.insert((package.for_arch.as_str(), package.name.as_str())),
                "package {} is locked twice for {}",
                package.name,
                package.for_arch
            );
            ensure!(
                is_sha256_hex(&package.sha256),
                "package {}: sha256 {:?} is not 64 lowercase hex digits",
                package.describe(),
                package.sha256
            );
            ensure!(
                !package.filename.contains('/') && package.filename.ends_with(".deb"),
                "package {}: filename {:?} is not a .deb file name",
                package.describe(),
                package.filename
            );
            Suite::parse(&package.suite).with_context(|| format!("package {}", package.describe()))?;
        }
        let mut seen = BTreeSet::new();
        for source in &lock.sources {
            ensure!(
                seen.insert(source.name.as_str()),
                "source package {} is locked twice",
                source.name
            );
            check_source(source).with_context(|| format!("source package {}", source.describe()))?;
        }
        Ok(lock)
    }

    /// The source package `name`; a missing one is an error that says how to add it.
    pub fn source(&self, name: &str, update_hint: &str) -> Result<&LockedSource> {
        self.sources
            .iter()
            .find(|source| source.name == name)
            .with_context(|| format!("the lock has no source package {name}: run `{update_hint}`"))
    }

    /// Replaces (or adds) the entry of one source package.
    pub fn replace_source(&mut self, source: LockedSource) {
        self.sources.retain(|old| old.name != source.name);
        self.sources.push(source);
    }

    /// The lock as text: `header` (comment lines), then binary entries sorted by image arch and
    /// name, then source packages sorted by name.
    pub fn render(&self, header: &str) -> String {
        let mut sorted = self.clone();
        sorted
            .packages
            .sort_by(|a, b| (&a.for_arch, &a.name).cmp(&(&b.for_arch, &b.name)));
        sorted.sources.sort_by(|a, b| a.name.cmp(&b.name));
        let body = toml::to_string(&sorted).expect("a lock always serializes");
        format!("{header}\n{body}")
    }

    /// The entries for `names` on one image arch, in the order of `names`; a missing entry is
    /// an error that says how to add it.
    pub fn entries_for(&self, deb_arch: &str, names: &[String], update_hint: &str) -> Result<Vec<LockedPackage>> {
        let mut entries = Vec::new();
        let mut missing = Vec::new();
        for name in names {
            match self
                .packages
                .iter()
                .find(|package| package.for_arch == deb_arch && &package.name == name)
            {
                Some(package) => entries.push(package.clone()),
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "the lock has no entry for {} on {deb_arch}: run `{update_hint}`",
                missing.join(", ")
            );
        }
        Ok(entries)
    }

    /// Entries of an image arch that the recipe no longer names.
    pub fn stale_entries(&self, deb_arch: &str, names: &[String]) -> Vec<String> {
        self.packages
            .iter()
            .filter(|package| package.for_arch == deb_arch && !names.contains(&package.name))
            .map(|package| package.name.clone())
            .collect()
    }

    /// Replaces every entry of one image arch.
    pub fn replace_arch(&mut self, deb_arch: &str, entries: Vec<LockedPackage>) {
        self.packages.retain(|package| package.for_arch != deb_arch);
        self.packages.extend(entries);
    }
}

/// A source entry names a suite, starts with its `.dsc`, and pins every file by a digest.
fn check_source(source: &LockedSource) -> Result<()> {
    Suite::parse(&source.suite)?;
    ensure!(
        source.files.first().is_some_and(|file| file.filename.ends_with(".dsc")),
        "the first file must be the .dsc"
    );
    for file in &source.files {
        ensure!(
            !file.filename.contains('/') && !file.filename.is_empty(),
            "file name {:?} is not a plain file name",
            file.filename
        );
        ensure!(
            is_sha256_hex(&file.sha256),
            "{}: sha256 {:?} is not 64 lowercase hex digits",
            file.filename,
            file.sha256
        );
    }
    Ok(())
}

/// 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header the tests render with.
    const TEST_HEADER: &str = "# Generated by `cargo xtask rootfs --arch <arch> --update-lock`\n";

    fn entry(name: &str, for_arch: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            arch: for_arch.into(),
            for_arch: for_arch.into(),
            suite: "bookworm".into(),
            version: "1.0-1".into(),
            filename: format!("{name}_1.0-1_{for_arch}.deb"),
            size: 10,
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn render_then_parse_round_trips_in_sorted_order() {
        let lock = Lock {
            packages: vec![
                entry("zlib1g", "arm64"),
                entry("busybox-static", "amd64"),
                entry("libc6", "arm64"),
            ],
            sources: vec![],
        };
        let text = lock.render(TEST_HEADER);
        assert!(text.starts_with("# Generated by `cargo xtask rootfs"));
        let parsed = Lock::parse(&text).unwrap();
        let order: Vec<_> = parsed.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(order, ["busybox-static", "libc6", "zlib1g"]);
    }

    #[test]
    fn missing_and_stale_entries_are_reported() {
        let mut lock = Lock {
            packages: vec![entry("libc6", "arm64"), entry("old", "arm64")],
            sources: vec![],
        };
        let names = vec!["libc6".to_owned(), "socat".to_owned()];
        let err = lock
            .entries_for("arm64", &names, "cargo xtask rootfs --arch arm64 --update-lock")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the lock has no entry for socat on arm64: run `cargo xtask rootfs --arch arm64 --update-lock`"
        );
        assert_eq!(lock.stale_entries("arm64", &names), ["old"]);
        lock.replace_arch("arm64", vec![entry("socat", "arm64")]);
        assert_eq!(lock.packages.len(), 1);
    }

    #[test]
    fn bad_digests_and_duplicates_are_refused() {
        let mut bad = entry("libc6", "arm64");
        bad.sha256 = "XYZ".into();
        let text = Lock {
            packages: vec![bad],
            sources: vec![],
        }
        .render(TEST_HEADER);
        assert_eq!(
            Lock::parse(&text).unwrap_err().to_string(),
            "package libc6 1.0-1 (arm64): sha256 \"XYZ\" is not 64 lowercase hex digits"
        );
        let text = Lock {
            packages: vec![entry("libc6", "arm64"), entry("libc6", "arm64")],
            sources: vec![],
        }
        .render(TEST_HEADER);
        assert_eq!(
            Lock::parse(&text).unwrap_err().to_string(),
            "package libc6 is locked twice for arm64"
        );
    }

    fn source(files: &[&str]) -> LockedSource {
        LockedSource {
            name: "e2fsprogs".into(),
            suite: "trixie".into(),
            version: "1.47.2-3".into(),
            files: files
                .iter()
                .map(|name| SourceFile {
                    filename: (*name).into(),
                    size: 1,
                    sha256: "cd".repeat(32),
                })
                .collect(),
        }
    }

    #[test]
    fn source_entries_round_trip_and_must_start_with_their_dsc() {
        let lock = Lock {
            packages: vec![entry("libc6", "arm64")],
            sources: vec![source(&["e2fsprogs_1.47.2-3.dsc", "e2fsprogs_1.47.2.orig.tar.gz"])],
        };
        let parsed = Lock::parse(&lock.render(TEST_HEADER)).unwrap();
        assert_eq!(parsed, lock);
        assert_eq!(
            parsed.source("e2fsprogs", "fix it").unwrap().dsc().filename,
            "e2fsprogs_1.47.2-3.dsc"
        );
        assert_eq!(
            parsed.source("socat", "run `x`").unwrap_err().to_string(),
            "the lock has no source package socat: run `run `x``"
        );
        let bad = Lock {
            packages: vec![],
            sources: vec![source(&["e2fsprogs_1.47.2.orig.tar.gz"])],
        };
        assert_eq!(
            format!("{:#}", Lock::parse(&bad.render(TEST_HEADER)).unwrap_err()),
            "source package e2fsprogs 1.47.2-3 (source, trixie): the first file must be the .dsc"
        );
    }

    #[test]
    fn an_unknown_suite_is_refused_naming_the_package() {
        let mut odd = entry("libc6", "arm64");
        odd.suite = "jessie".into();
        let text = Lock {
            packages: vec![odd],
            sources: vec![],
        }
        .render(TEST_HEADER);
        assert_eq!(
            format!("{:#}", Lock::parse(&text).unwrap_err()),
            "package libc6 1.0-1 (arm64): unknown Debian suite \"jessie\": use one of bookworm, trixie, sid"
        );
    }
}
