//! Private apt state for one Debian suite and architecture: package lists, an empty dpkg
//! status, its own archive cache, a generated `sources.list` and `manifests/templates/apt.conf`,
//! all under `{cache}/debian/apt/{suite}-{deb_arch}/`. The host's apt configuration is only read
//! (for the archive addresses, see [`super::suite`]); nothing is installed.
//!
//! Resolves names to lock entries (candidates, dependency closures, source packages) and
//! downloads exactly the locked versions; the digests are checked by [`super::fetch`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::lock::{is_sha256_hex, LockedPackage, LockedSource, SourceFile};
use super::suite::{self, Suite};
use crate::util;

/// Where the private apt states live, below the cache directory.
const APT_STATE_SUBDIR: &str = "debian/apt";
/// Upstream signatures of source tarballs: the archive these machines reach does not serve them,
/// and nothing is built from them (the tarballs themselves are pinned by SHA-256), so locks
/// leave them out and the unpacked `.dsc` copy does not list them ([`super::source`]).
pub const SIGNATURE_SUFFIX: &str = ".asc";
/// The private apt configuration read after the host's (no host hooks, no unneeded index
/// targets), relative to the repository root.
const PRIVATE_APT_CONF_PATH: &str = "manifests/templates/apt.conf";

/// Private apt state for one suite and Debian architecture.
pub struct Apt {
    suite: Suite,
    deb_arch: String,
    root: PathBuf,
    /// The Debian archive's address (its pool serves files the lists may have dropped).
    archive: String,
}

impl Apt {
    /// The apt state of `suite` for `deb_arch` under the cache directory, created when missing;
    /// its sources list is written from the host's Debian archives every time.
    pub fn new(sh: &Shell, suite: Suite, deb_arch: &str) -> Result<Apt> {
        let root = util::cache_dir()
            .join(APT_STATE_SUBDIR)
            .join(format!("{suite}-{deb_arch}"));
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let status = root.join("state/status");
        if !status.exists() {
            std::fs::write(&status, b"").with_context(|| format!("creating {}", status.display()))?;
        }
        let conf = util::project_root().join(PRIVATE_APT_CONF_PATH);
        let conf_text = std::fs::read(&conf).with_context(|| format!("reading {}", conf.display()))?;
        util::write_atomic(&root.join("apt.conf"), &conf_text)?;
        let archives = suite::host_archives(sh)?;
        let sources = suite::render_sources(suite, &archives, deb_arch);
        util::write_atomic(&root.join("sources.list"), sources.as_bytes())?;
        Ok(Apt {
            suite,
            deb_arch: deb_arch.to_owned(),
            root,
            archive: archives.main,
        })
    }

    /// The `-o` options that point apt at the private state, sources and target arch.
    fn options(&self) -> Vec<String> {
        let state = self.root.join("state");
        let settings = [
            ("APT::Architecture", self.deb_arch.clone()),
            ("APT::Architectures", self.deb_arch.clone()),
            ("Dir::State", state.display().to_string()),
            ("Dir::State::status", state.join("status").display().to_string()),
            ("Dir::Cache", self.root.join("cache").display().to_string()),
            (
                "Dir::Etc::SourceList",
                self.root.join("sources.list").display().to_string(),
            ),
            ("Dir::Etc::SourceParts", "/dev/null".to_owned()),
            // Root downloads straight into our directories; this silences the sandbox warning.
            ("APT::Sandbox::User", "root".to_owned()),
        ];
        let private_conf = ["-c".to_owned(), self.root.join("apt.conf").display().to_string()];
        private_conf
            .into_iter()
            .chain(
                settings
                    .iter()
                    .flat_map(|(key, value)| ["-o".to_owned(), format!("{key}={value}")]),
            )
            .collect()
    }

    /// `suite/deb_arch`, how messages name this state.
    fn describe(&self) -> String {
        format!("{}/{}", self.suite, self.deb_arch)
    }

    /// True when `apt-get update` has run for this state at least once.
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.root.join("state/lists"))
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .any(|entry| entry.file_name().to_string_lossy().contains("Packages"))
            })
            .unwrap_or(false)
    }

    /// Refreshes the private package lists (binary and source) of the suite.
    pub fn update(&self, sh: &Shell) -> Result<()> {
        let options = self.options();
        eprintln!("apt: apt-get update ({})", self.describe());
        run_captured(cmd!(sh, "apt-get {options...} -q update"))
            .with_context(|| format!("apt-get update for {} failed", self.describe()))
    }

    /// Runs `update` unless the lists are there already.
    pub fn ensure_lists(&self, sh: &Shell) -> Result<()> {
        if self.has_lists() {
            return Ok(());
        }
        self.update(sh)
    }

    /// The candidate version of each package, as lock entries in the order of `names`, with one
    /// apt-cache call; an unknown name is an error naming it.
    pub fn resolve_all(&self, sh: &Shell, names: &[String]) -> Result<Vec<LockedPackage>> {
        let options = self.options();
        let text = cmd!(sh, "apt-cache {options...} show --no-all-versions {names...}")
            .quiet()
            .ignore_stderr()
            .read();
        let Ok(text) = text else {
            // Find the name apt does not know, for the error.
            for name in names {
                let options = self.options();
                cmd!(sh, "apt-cache {options...} show --no-all-versions {name}")
                    .quiet()
                    .ignore_stderr()
                    .read()
                    .with_context(|| {
                        format!("package {name} is not available in {}: check its name", self.describe())
                    })?;
            }
            bail!("apt-cache show failed for {}", names.join(" "));
        };
        let stanzas: Vec<BTreeMap<String, String>> = text.split("\n\n").map(parse_stanza).collect();
        names
            .iter()
            .map(|name| {
                let stanza = stanzas
                    .iter()
                    .find(|fields| fields.get("Package") == Some(name))
                    .with_context(|| format!("apt-cache show printed no stanza for package {name}"))?;
                locked_from_stanza(stanza, self.suite, &self.deb_arch).with_context(|| format!("package {name}"))
            })
            .collect()
    }

    /// `names` and everything they depend on (not what they recommend), as apt would install them
    /// on an empty system, as lock entries sorted by name.
    #[allow(dead_code)] // its user, the container stack's Go build, lands with issue 21
    pub fn resolve_closure(&self, sh: &Shell, names: &[String]) -> Result<Vec<LockedPackage>> {
        let options = self.options();
        let plan = cmd!(sh, "apt-get {options...} -s --no-install-recommends install {names...}")
            .quiet()
            .read()
            .with_context(|| format!("resolving {} in {}", names.join(" "), self.describe()))?;
        let mut closure = installed_by_plan(&plan);
        closure.sort();
        self.resolve_all(sh, &closure)
    }

    /// The candidate source package `name` with the digest of each of its files.
    pub fn resolve_source(&self, sh: &Shell, name: &str) -> Result<LockedSource> {
        let options = self.options();
        let listing = cmd!(sh, "apt-get {options...} --print-uris --only-source source {name}")
            .env("LC_ALL", "C")
            .quiet()
            .ignore_stderr()
            .read()
            .with_context(|| format!("source package {name} is not available in {}", self.describe()))?;
        let files = source_files_from_uris(&listing)
            .with_context(|| format!("reading apt's file list of source package {name}"))?;
        let options = self.options();
        let versions = cmd!(sh, "apt-cache {options...} showsrc --only-source {name}")
            .quiet()
            .ignore_stderr()
            .read()
            .with_context(|| format!("apt-cache showsrc {name}"))?;
        let version = version_of_dsc(&versions, &files[0])
            .with_context(|| format!("apt-cache showsrc {name} lists no version with {}", files[0].filename))?;
        Ok(LockedSource {
            name: name.to_owned(),
            suite: self.suite.name().to_owned(),
            version,
            files,
        })
    }

    /// Source package `name` at exactly `version`, with the digest of each file: from the suite's
    /// lists while they carry that version, else from its `.dsc` in the archive's pool (a version
    /// the lists have moved past; the `.dsc` names every other file with its SHA-256).
    pub fn resolve_source_version(&self, sh: &Shell, name: &str, version: &str) -> Result<LockedSource> {
        let options = self.options();
        let spec = format!("{name}={version}");
        let listed = cmd!(sh, "apt-get {options...} --print-uris --only-source source {spec}")
            .env("LC_ALL", "C")
            .quiet()
            .ignore_stderr()
            .read();
        let files = match listed {
            Ok(listing) => source_files_from_uris(&listing)
                .with_context(|| format!("reading apt's file list of source package {spec}"))?,
            Err(_) => {
                let dsc_name = format!(
                    "{name}_{}.dsc",
                    version.split_once(':').map_or(version, |(_, rest)| rest)
                );
                let uri = suite::pool_uri(&self.archive, name, &dsc_name);
                eprintln!(
                    "apt: {spec} is not in the {} lists; reading its .dsc from the pool",
                    self.describe()
                );
                let cache = crate::downloads::DownloadCache::for_debian_archive();
                let sha256 = cache.fetch_unpinned(&uri).with_context(|| {
                    format!(
                        "source package {spec}: neither listed in {} nor served at {uri}",
                        self.describe()
                    )
                })?;
                let path = cache.path(&sha256);
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let dsc = SourceFile {
                    filename: dsc_name,
                    size: util::file_size(&path)?,
                    sha256,
                };
                source_files_from_dsc(dsc, &text).with_context(|| format!("reading {uri}"))?
            }
        };
        Ok(LockedSource {
            name: name.to_owned(),
            suite: self.suite.name().to_owned(),
            version: version.to_owned(),
            files,
        })
    }

    /// Where the archive's pool serves each file of `source` (file name → URI): for a locked
    /// version the lists no longer carry.
    pub fn pool_uris(&self, source: &LockedSource) -> BTreeMap<String, String> {
        source
            .files
            .iter()
            .map(|file| {
                let uri = suite::pool_uri(&self.archive, &source.name, &file.filename);
                (file.filename.clone(), uri)
            })
            .collect()
    }

    /// Downloads `name=version` of each binary entry into `dir` with one apt-get call.
    pub fn download(&self, sh: &Shell, entries: &[&LockedPackage], dir: &Path) -> Result<()> {
        let options = self.options();
        let specs: Vec<String> = entries
            .iter()
            .map(|entry| format!("{}={}", entry.name, entry.version))
            .collect();
        let _in_dir = sh.push_dir(dir);
        run_captured(cmd!(sh, "apt-get {options...} -q download {specs...}"))
    }

    /// Where the archive serves each file of a locked source package (file name → URI), as apt
    /// works it out from the suite's lists; a version the lists do not have is an error.
    pub fn source_uris(&self, sh: &Shell, source: &LockedSource) -> Result<BTreeMap<String, String>> {
        let options = self.options();
        let spec = format!("{}={}", source.name, source.version);
        let listing = cmd!(sh, "apt-get {options...} --print-uris --only-source source {spec}")
            .env("LC_ALL", "C")
            .quiet()
            .ignore_stderr()
            .read()
            .with_context(|| format!("{} is not in the {} lists", source.describe(), self.describe()))?;
        Ok(listing
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let uri = fields.next()?.strip_prefix('\'')?.strip_suffix('\'')?;
                Some((fields.next()?.to_owned(), uri.to_owned()))
            })
            .collect())
    }
}

/// Runs a command quietly; on failure the error carries its stderr.
fn run_captured(command: xshell::Cmd<'_>) -> Result<()> {
    let output = command.quiet().ignore_status().output()?;
    if !output.status.success() {
        bail!(
            "{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(())
}

/// Parses one control stanza (`Field: value` lines, continuation lines start with a space).
pub fn parse_stanza(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            // `apt-cache show` may print more than one stanza; the first is the candidate.
            if !fields.is_empty() {
                break;
            }
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(key) = &last {
                let value: &mut String = fields.get_mut(key).expect("the key was inserted");
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.insert(key.trim().to_owned(), value.trim().to_owned());
            last = Some(key.trim().to_owned());
        }
    }
    fields
}

/// A lock entry from a Packages stanza.
pub fn locked_from_stanza(fields: &BTreeMap<String, String>, suite: Suite, for_arch: &str) -> Result<LockedPackage> {
    let field = |key: &str| -> Result<String> {
        fields
            .get(key)
            .cloned()
            .with_context(|| format!("the package index stanza has no {key} field"))
    };
    let pool_path = field("Filename")?;
    let sha256 = field("SHA256")?;
    anyhow::ensure!(is_sha256_hex(&sha256), "the package index gives SHA256 {sha256:?}");
    let size = field("Size")?;
    Ok(LockedPackage {
        name: field("Package")?,
        arch: field("Architecture")?,
        for_arch: for_arch.to_owned(),
        suite: suite.name().to_owned(),
        version: field("Version")?,
        filename: pool_path.rsplit('/').next().unwrap_or(&pool_path).to_owned(),
        size: size
            .parse()
            .with_context(|| format!("the package index gives Size {size:?}"))?,
        sha256,
    })
}

/// The packages an `apt-get -s install` plan installs (`Inst NAME (VERSION …)` lines).
#[allow(dead_code)] // read by `resolve_closure` only
fn installed_by_plan(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|line| line.strip_prefix("Inst "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_owned())
        .collect()
}

/// The files of `apt-get --print-uris source` (`'URI' NAME SIZE SHA256:HEX` lines), the `.dsc`
/// first, each once.
fn source_files_from_uris(listing: &str) -> Result<Vec<SourceFile>> {
    let mut files: Vec<SourceFile> = Vec::new();
    for line in listing.lines().filter(|line| line.starts_with('\'')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_uri, filename, size, digest] = fields[..] else {
            bail!("unexpected line {line:?}");
        };
        let sha256 = digest
            .strip_prefix("SHA256:")
            .filter(|hex| is_sha256_hex(hex))
            .with_context(|| format!("no SHA256 digest in {line:?}"))?;
        if filename.ends_with(SIGNATURE_SUFFIX) || files.iter().any(|file| file.filename == filename) {
            continue;
        }
        files.push(SourceFile {
            filename: filename.to_owned(),
            size: size.parse().with_context(|| format!("size in {line:?}"))?,
            sha256: sha256.to_owned(),
        });
    }
    let Some(dsc) = files.iter().position(|file| file.filename.ends_with(".dsc")) else {
        bail!("no .dsc among {} files", files.len());
    };
    let dsc = files.remove(dsc);
    files.insert(0, dsc);
    Ok(files)
}

/// The fields of a `.dsc`: a signed one starts with the PGP armour header, and its one stanza
/// starts at `Format:`.
pub fn dsc_fields(text: &str) -> BTreeMap<String, String> {
    let body = match text.find("\nFormat:") {
        Some(at) if !text.starts_with("Format:") => &text[at + 1..],
        _ => text,
    };
    parse_stanza(body)
}

/// The files of a source package from its `.dsc` (the `Checksums-Sha256` field): `dsc` first,
/// upstream signatures left out.
fn source_files_from_dsc(dsc: SourceFile, text: &str) -> Result<Vec<SourceFile>> {
    let fields = dsc_fields(text);
    let listing = fields
        .get("Checksums-Sha256")
        .context("the .dsc has no Checksums-Sha256 field")?;
    let mut files = vec![dsc];
    for line in listing.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let [sha256, size, filename] = line.split_whitespace().collect::<Vec<_>>()[..] else {
            bail!("unexpected Checksums-Sha256 line {line:?}");
        };
        if !is_sha256_hex(sha256) {
            bail!("no SHA-256 digest in {line:?}");
        }
        if filename.ends_with(SIGNATURE_SUFFIX) {
            continue;
        }
        files.push(SourceFile {
            filename: filename.to_owned(),
            size: size.parse().with_context(|| format!("size in {line:?}"))?,
            sha256: sha256.to_owned(),
        });
    }
    Ok(files)
}

/// The `Version` of the `apt-cache showsrc` stanza whose checksums name `dsc`.
fn version_of_dsc(showsrc: &str, dsc: &SourceFile) -> Option<String> {
    showsrc
        .split("\n\n")
        .filter(|stanza| stanza.contains(&dsc.sha256))
        .find_map(|stanza| parse_stanza(stanza).get("Version").cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANZA: &str = "\
Package: ethtool
Version: 1:6.1-1
Installed-Size: 712
Maintainer: Debian Kernel Team <debian-kernel@lists.debian.org>
Architecture: arm64
Depends: libc6 (>= 2.34), libmnl0 (>= 1.0.3-4~)
Description: display or change Ethernet device settings
 ethtool can be used to query and change settings
Filename: pool/main/e/ethtool/ethtool_6.1-1_arm64.deb
Size: 190644
SHA256: 97f0047507194da0fe2519f2f607b606f8796f2ef53a810da39825b542008f47

Package: ethtool
Version: 1:6.0-1
";

    #[test]
    fn parses_the_candidate_stanza_into_a_lock_entry() {
        let fields = parse_stanza(STANZA);
        assert_eq!(
            fields["Description"],
            "display or change Ethernet device settings\nethtool can be used to query and change settings"
        );
        let entry = locked_from_stanza(&fields, Suite::parse("bookworm").unwrap(), "arm64").unwrap();
        assert_eq!(entry.version, "1:6.1-1");
        assert_eq!(entry.filename, "ethtool_6.1-1_arm64.deb");
        assert_eq!(entry.size, 190644);
        assert_eq!(entry.describe(), "ethtool 1:6.1-1 (arm64)");
    }

    #[test]
    fn apt_options_keep_every_state_path_private() {
        let apt = Apt {
            suite: Suite::parse("trixie").unwrap(),
            deb_arch: "arm64".into(),
            root: PathBuf::from("/c/trixie-arm64"),
            archive: "http://mirror.invalid/debian/".into(),
        };
        let options = apt.options().join(" ");
        assert_eq!(
            options,
            "-c /c/trixie-arm64/apt.conf -o APT::Architecture=arm64 -o APT::Architectures=arm64 \
             -o Dir::State=/c/trixie-arm64/state -o Dir::State::status=/c/trixie-arm64/state/status \
             -o Dir::Cache=/c/trixie-arm64/cache -o Dir::Etc::SourceList=/c/trixie-arm64/sources.list \
             -o Dir::Etc::SourceParts=/dev/null -o APT::Sandbox::User=root"
        );
        let conf = std::fs::read_to_string(util::project_root().join(PRIVATE_APT_CONF_PATH)).unwrap();
        assert!(conf.contains("\n#clear APT::Update::Post-Invoke-Success;\n"), "{conf}");
    }

    #[test]
    fn a_source_the_lists_dropped_is_looked_up_in_the_pool() {
        let apt = Apt {
            suite: Suite::parse("sid").unwrap(),
            deb_arch: "amd64".into(),
            root: PathBuf::from("/c/sid-amd64"),
            archive: "http://mirror.invalid/debian/".into(),
        };
        let file = |filename: &str| SourceFile {
            filename: filename.into(),
            size: 1,
            sha256: "ab".repeat(32),
        };
        let source = LockedSource {
            name: "containerd".into(),
            suite: "sid".into(),
            version: "2.1.9+ds1-1".into(),
            files: vec![
                file("containerd_2.1.9+ds1-1.dsc"),
                file("containerd_2.1.9+ds1.orig.tar.xz"),
            ],
        };
        let uris = apt.pool_uris(&source);
        assert_eq!(
            uris["containerd_2.1.9+ds1.orig.tar.xz"],
            "http://mirror.invalid/debian/pool/main/c/containerd/containerd_2.1.9+ds1.orig.tar.xz"
        );
        assert_eq!(uris.len(), 2);
    }

    #[test]
    fn a_stanza_without_digest_is_refused() {
        let fields = parse_stanza("Package: x\nVersion: 1\nArchitecture: all\nFilename: pool/x.deb\nSize: 1\n");
        assert_eq!(
            locked_from_stanza(&fields, Suite::parse("sid").unwrap(), "amd64")
                .unwrap_err()
                .to_string(),
            "the package index stanza has no SHA256 field"
        );
    }

    #[test]
    fn an_install_plan_names_every_package_it_installs() {
        let plan = "NOTE: simulation\nInst libc6 (2.41-12 Debian:13.8/stable [arm64])\n\
                    Inst golang-1.24-go:amd64 (1.24.4-1 Debian:13.8/stable [amd64])\nConf libc6 (2.41-12)\n";
        assert_eq!(installed_by_plan(plan), ["libc6", "golang-1.24-go"]);
    }

    #[test]
    fn source_files_come_from_a_signed_dsc_without_signatures() {
        let dsc = SourceFile {
            filename: "tini_0.19.0-1.dsc".into(),
            size: 9,
            sha256: "aa".repeat(32),
        };
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nFormat: 3.0 (quilt)\nSource: tini\n\
             Checksums-Sha256:\n {} 12 tini_0.19.0.orig.tar.gz\n {} 3 tini_0.19.0.orig.tar.gz.asc\n\
             \x20{} 7 tini_0.19.0-1.debian.tar.xz\n\n-----BEGIN PGP SIGNATURE-----\n",
            "bb".repeat(32),
            "cc".repeat(32),
            "dd".repeat(32)
        );
        let files = source_files_from_dsc(dsc, &text).unwrap();
        let names: Vec<&str> = files.iter().map(|file| file.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "tini_0.19.0-1.dsc",
                "tini_0.19.0.orig.tar.gz",
                "tini_0.19.0-1.debian.tar.xz"
            ]
        );
        assert_eq!(files[1].size, 12);
        assert!(source_files_from_dsc(files[0].clone(), "Format: 3.0\n").is_err());
    }

    #[test]
    fn source_files_come_from_print_uris_with_the_dsc_first() {
        let digest = |c: &str| c.repeat(64);
        let listing = format!(
            "Need to get 10.1 MB of source archives.\n\
             'http://mirror.invalid/e2fsprogs_1.47.2.orig.tar.gz' e2fsprogs_1.47.2.orig.tar.gz 9996725 SHA256:{}\n\
             'http://mirror.invalid/e2fsprogs_1.47.2-3.dsc' e2fsprogs_1.47.2-3.dsc 3035 SHA256:{}\n\
             'http://mirror.invalid/e2fsprogs_1.47.2.orig.tar.gz' e2fsprogs_1.47.2.orig.tar.gz 9996725 SHA256:{}\n\
             'http://mirror.invalid/e2fsprogs_1.47.2.orig.tar.gz.asc' e2fsprogs_1.47.2.orig.tar.gz.asc 488 SHA256:{}\n",
            digest("a"),
            digest("b"),
            digest("a"),
            digest("c")
        );
        let files = source_files_from_uris(&listing).unwrap();
        let names: Vec<&str> = files.iter().map(|file| file.filename.as_str()).collect();
        assert_eq!(
            names,
            ["e2fsprogs_1.47.2-3.dsc", "e2fsprogs_1.47.2.orig.tar.gz"],
            "no .asc"
        );
        let showsrc = format!(
            "Package: e2fsprogs\nVersion: 1.47.2-3\nChecksums-Sha256:\n {} 3035 x.dsc\n",
            digest("b")
        );
        assert_eq!(version_of_dsc(&showsrc, &files[0]).as_deref(), Some("1.47.2-3"));
        let bad = "'http://mirror.invalid/x.dsc' x.dsc 1 MD5:00\n";
        assert!(source_files_from_uris(bad)
            .unwrap_err()
            .to_string()
            .contains("no SHA256 digest"));
    }
}
