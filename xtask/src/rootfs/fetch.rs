//! Fetching package files with the host's own apt, for any target arch, without touching the
//! host's apt or dpkg configuration.
//!
//! Every apt call gets private per-arch state under `{cache}/rootfs/apt/{deb_arch}` (package
//! lists, an empty dpkg status, its own archive cache, `manifests/templates/apt.conf`); the
//! host's sources are only read.
//! Package files are kept in the download cache as `{cache}/downloads/{sha256}`
//! ([`crate::downloads`]) and their digest is checked against the lock every time, before
//! anything is unpacked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::lock::{is_sha256_hex, LockedPackage};
use crate::downloads::DownloadCache;
use crate::util;

/// Where the private apt state of each arch lives, below the cache directory.
const APT_STATE_SUBDIR: &str = "rootfs/apt";
/// The private apt configuration read after the host's (no host hooks, no unneeded index
/// targets), relative to the repository root.
const PRIVATE_APT_CONF_PATH: &str = "manifests/templates/apt.conf";

/// Private apt state for one Debian architecture.
pub struct Apt {
    deb_arch: String,
    root: PathBuf,
}

impl Apt {
    /// The apt state for `deb_arch` under the cache directory, created when missing.
    pub fn new(deb_arch: &str) -> Result<Apt> {
        let root = util::cache_dir().join(APT_STATE_SUBDIR).join(deb_arch);
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
        Ok(Apt {
            deb_arch: deb_arch.to_owned(),
            root,
        })
    }

    /// The `-o` options that point apt at the private state and the target arch.
    fn options(&self) -> Vec<String> {
        let state = self.root.join("state");
        let settings = [
            ("APT::Architecture", self.deb_arch.clone()),
            ("APT::Architectures", self.deb_arch.clone()),
            ("Dir::State", state.display().to_string()),
            ("Dir::State::status", state.join("status").display().to_string()),
            ("Dir::Cache", self.root.join("cache").display().to_string()),
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

    /// Refreshes the private package lists from the host's configured sources.
    pub fn update(&self, sh: &Shell) -> Result<()> {
        let options = self.options();
        eprintln!("apt: apt-get update ({})", self.deb_arch);
        run_captured(cmd!(sh, "apt-get {options...} -q update"))
            .with_context(|| format!("apt-get update for {} failed", self.deb_arch))
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
                        format!(
                            "package {name} is not available for {}: check its name in the recipe",
                            self.deb_arch
                        )
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
                locked_from_stanza(stanza, &self.deb_arch).with_context(|| format!("package {name}"))
            })
            .collect()
    }

    /// Downloads `name=version` for each entry into `dir` with one apt-get call.
    fn download(&self, sh: &Shell, entries: &[&LockedPackage], dir: &Path) -> Result<()> {
        let options = self.options();
        let specs: Vec<String> = entries
            .iter()
            .map(|entry| format!("{}={}", entry.name, entry.version))
            .collect();
        let _in_dir = sh.push_dir(dir);
        run_captured(cmd!(sh, "apt-get {options...} -q download {specs...}"))
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
pub fn locked_from_stanza(fields: &BTreeMap<String, String>, for_arch: &str) -> Result<LockedPackage> {
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
        version: field("Version")?,
        filename: pool_path.rsplit('/').next().unwrap_or(&pool_path).to_owned(),
        size: size
            .parse()
            .with_context(|| format!("the package index gives Size {size:?}"))?,
        sha256,
    })
}

/// The package files of `entries`, from the cache or downloaded, each verified against its
/// locked sha256 before it is returned.
/// `update_hint` is the command that refreshes the lock, quoted in errors.
pub fn fetch_locked(sh: &Shell, apt: &Apt, entries: &[LockedPackage], update_hint: &str) -> Result<Vec<Vec<u8>>> {
    let cache = DownloadCache::new();
    let missing: Vec<&LockedPackage> = entries
        .iter()
        .filter(|entry| !cache.path(&entry.sha256).exists())
        .collect();
    if !missing.is_empty() {
        download_into_cache(sh, apt, &missing, &cache, update_hint)?;
    }

    let mut files = Vec::new();
    for entry in entries {
        let path = cache.path(&entry.sha256);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading cached package file {} of {}", path.display(), entry.describe()))?;
        let actual = util::sha256_bytes(&bytes);
        if actual != entry.sha256 {
            bail!(
                "package {}: cached file {} has sha256 {actual}, but the lock says {}: the cache is corrupt or \
                 was tampered with; delete that file to download it again",
                entry.describe(),
                path.display(),
                entry.sha256
            );
        }
        files.push(bytes);
    }
    Ok(files)
}

fn download_into_cache(
    sh: &Shell,
    apt: &Apt,
    missing: &[&LockedPackage],
    cache: &DownloadCache,
    update_hint: &str,
) -> Result<()> {
    let download_dir = cache.scratch_dir()?;
    let names: Vec<String> = missing.iter().map(|entry| entry.describe()).collect();
    eprintln!("apt: downloading {} package files: {}", missing.len(), names.join(", "));
    if !apt.has_lists() {
        apt.update(sh)?;
    }
    if let Err(first) = apt.download(sh, missing, download_dir.path()) {
        // The lists may predate the locked versions: refresh them once and retry.
        eprintln!("apt: apt-get download failed ({first:#}); refreshing the package lists and retrying");
        apt.update(sh)?;
        apt.download(sh, missing, download_dir.path()).with_context(|| {
            format!(
                "cannot download the locked package files {} with apt-get: if the archive no longer has \
                 these versions, run `{update_hint}`",
                names.join(", ")
            )
        })?;
    }

    // apt names files after their version (with an escaped epoch); match them by digest instead.
    let mut by_digest: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut downloaded: Vec<String> = Vec::new();
    for item in std::fs::read_dir(download_dir.path()).context("listing downloaded package files")? {
        let path = item?.path();
        let digest = util::sha256_file(&path)?;
        downloaded.push(format!(
            "{} (sha256 {digest})",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        by_digest.insert(digest, path);
    }
    for entry in missing {
        let Some(path) = by_digest.get(&entry.sha256) else {
            bail!(
                "package {}: apt-get downloaded no file with the locked sha256 {} (got: {}); the lock entry \
                 is wrong or the archive changed: run `{update_hint}` and review the diff",
                entry.describe(),
                entry.sha256,
                downloaded.join(", ")
            );
        };
        cache.adopt(path, &entry.sha256)?;
    }
    Ok(())
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
        let entry = locked_from_stanza(&fields, "arm64").unwrap();
        assert_eq!(entry.version, "1:6.1-1");
        assert_eq!(entry.filename, "ethtool_6.1-1_arm64.deb");
        assert_eq!(entry.size, 190644);
        assert_eq!(entry.describe(), "ethtool 1:6.1-1 (arm64)");
    }

    #[test]
    fn apt_options_keep_every_state_path_private() {
        let apt = Apt {
            deb_arch: "arm64".into(),
            root: PathBuf::from("/cache/rootfs/apt/arm64"),
        };
        let options = apt.options().join(" ");
        assert_eq!(
            options,
            "-c /cache/rootfs/apt/arm64/apt.conf -o APT::Architecture=arm64 -o APT::Architectures=arm64 \
             -o Dir::State=/cache/rootfs/apt/arm64/state -o Dir::State::status=/cache/rootfs/apt/arm64/state/status \
             -o Dir::Cache=/cache/rootfs/apt/arm64/cache -o APT::Sandbox::User=root"
        );
        let conf = std::fs::read_to_string(util::project_root().join(PRIVATE_APT_CONF_PATH)).unwrap();
        assert!(conf.contains("\n#clear APT::Update::Post-Invoke-Success;\n"), "{conf}");
    }

    #[test]
    fn a_stanza_without_digest_is_refused() {
        let fields = parse_stanza("Package: x\nVersion: 1\nArchitecture: all\nFilename: pool/x.deb\nSize: 1\n");
        assert_eq!(
            locked_from_stanza(&fields, "amd64").unwrap_err().to_string(),
            "the package index stanza has no SHA256 field"
        );
    }
}
