//! `cargo xtask sync-binaries`: downloads the pinned upstream files of the runtime binaries,
//! extracts and stages them, and writes the binaries fragment.
//!
//! Reads `manifests/binaries.toml` (`config`) and the existing fragment; downloads each upstream
//! file once into the download cache `{cache}/downloads/{sha256}` ([`crate::downloads`]: the
//! library's `Downloader`, with resume, retries, digest checked while writing); extracts the named member of a `.tgz` or of a Debian
//! package's data archive while streaming (`extract`) or takes the file as is; writes `{output}/{name}/{safe_version}/{arch}/{name}`
//! (0755) and the fragment, each atomically. A binary already staged with the digest the fragment
//! records is skipped without any download. With `--pin`, missing digests are downloaded,
//! computed and written into the config file first.

mod config;
mod extract;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch, Binary, FileEntry};
use xshell::Shell;

use crate::downloads::DownloadCache;
use crate::layout::Staging;
use crate::{binaries, flags, util};
use config::{Config, Format, Source};

/// The config file, relative to the repository root.
const DEFAULT_CONFIG_PATH: &str = "manifests/binaries.toml";

/// A binary to stage this run: its spec, arch and source, the verified upstream file, and its
/// path relative to the output directory.
type Pending<'a> = (&'a config::BinarySpec, Arch, &'a Source, PathBuf, String);

/// The staged files of this run by (name, arch): their sha256 and size.
type Staged = BTreeMap<(String, Arch), (String, u64)>;

impl flags::SyncBinaries {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        let request = Request {
            config: self
                .config
                .unwrap_or_else(|| util::project_root().join(DEFAULT_CONFIG_PATH)),
            arches: if self.arch.is_empty() {
                Arch::ALL.to_vec()
            } else {
                self.arch.iter().map(|a| Arch::from(*a)).collect()
            },
            staging: match self.binaries_json {
                Some(fragment) => Staging {
                    dir: self.output,
                    fragment,
                },
                None => Staging::in_dir(self.output),
            },
            pin: self.pin,
        };
        sync(&request)?;
        Ok(())
    }
}

/// What one `sync-binaries` run does: which config, which arches, where to stage.
pub struct Request {
    /// `manifests/binaries.toml`, or upstream's `upstream.toml`.
    pub config: PathBuf,
    pub arches: Vec<Arch>,
    /// Where the binaries are staged and listed (`dist/bin`, `dist/bin/binaries.json`).
    pub staging: Staging,
    /// Resolve and write the digests of unpinned entries first.
    pub pin: bool,
}

/// What a run wrote: the fragment and how many binaries it lists.
pub struct SyncOutputs {
    pub fragment: PathBuf,
    pub binaries: usize,
}

/// Fetches, verifies and stages the binaries `request` selects, and writes their fragment.
pub fn sync(request: &Request) -> Result<SyncOutputs> {
    let config_path = &request.config;
    let origin = config_path.display().to_string();
    let text = std::fs::read_to_string(config_path).with_context(|| format!("reading {origin}"))?;
    let mut config = config::parse(&text, &origin)?;
    let arches = &request.arches;
    let cache = DownloadCache::new();

    if request.pin {
        config = pin(config_path, &text, &config, arches, &cache)?;
    }
    require_pinned(&config, arches, &origin)?;

    let fragment_path = &request.staging.fragment;
    let previous = binaries::read_fragment_or_empty(fragment_path)?;
    let (mut staged, pending) = fetch_unstaged(&config, arches, &previous, &request.staging.dir, &cache)?;
    stage_all(&request.staging.dir, pending, &mut staged)?;

    let fragment = fragment_entries(&config, &previous, &staged);
    binaries::write_fragment(fragment_path, &fragment)?;
    eprintln!(
        "sync-binaries: {} binaries under {}; fragment {}",
        fragment.len(),
        request.staging.dir.display(),
        fragment_path.display()
    );
    Ok(SyncOutputs {
        fragment: fragment_path.clone(),
        binaries: fragment.len(),
    })
}

/// Refuses a selected source without a pinned digest, saying how to pin it.
fn require_pinned(config: &Config, arches: &[Arch], origin: &str) -> Result<()> {
    let unpinned: Vec<String> = selected(config, arches)
        .filter(|(_, _, source)| source.format != Format::Stack && source.sha256.is_empty())
        .map(|(binary, arch, _)| format!("{} ({arch})", binary.name))
        .collect();
    if !unpinned.is_empty() {
        bail!(
            "{origin}: no sha256 pinned for {}; run `cargo xtask sync-binaries --pin` to download the upstream \
             files and write their digests into the file (then review the diff), or run the pin-binaries \
             workflow (.github/workflows/pin-binaries.yml), which opens a pull request with them",
            unpinned.join(", ")
        );
    }
    Ok(())
}

/// The binaries already staged with the digest the fragment records (no download), and the
/// verified upstream files of all the others.
fn fetch_unstaged<'a>(
    config: &'a Config,
    arches: &'a [Arch],
    previous: &[Binary],
    output: &Path,
    cache: &DownloadCache,
) -> Result<(Staged, Vec<Pending<'a>>)> {
    let mut staged = Staged::new();
    let mut pending = Vec::new();
    for (binary, arch, source) in selected(config, arches) {
        let relative = cdn::binary_relative_path(&binary.name, &binary.version, arch);
        if let Some(digest) = already_staged(previous, binary, arch, &output.join(&relative))? {
            eprintln!(
                "sync-binaries: {} ({arch}) {} is already staged",
                binary.name, binary.version
            );
            let size = util::file_size(&output.join(&relative))?;
            staged.insert((binary.name.clone(), arch), (digest, size));
            continue;
        }
        let upstream = match source.format {
            Format::Stack => crate::stack::built_output(&Shell::new()?, &binary.name, arch)
                .with_context(|| format!("{} ({arch}): building the container stack", binary.name))?,
            _ => fetch_upstream(cache, &binary.name, arch, source)?,
        };
        pending.push((binary, arch, source, upstream, relative));
    }
    Ok((staged, pending))
}

/// Extracts everything into a staging folder first, so a failure leaves the output as it was,
/// then moves each file into place under `output`.
fn stage_all(output: &Path, pending: Vec<Pending<'_>>, staged: &mut Staged) -> Result<()> {
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging =
        tempfile::tempdir_in(parent).with_context(|| format!("creating a staging folder in {}", parent.display()))?;
    let mut ready = Vec::new();
    for (binary, arch, source, upstream, relative) in pending {
        let target = staging.path().join(&relative);
        let digest = match (source.format, &source.extract) {
            (Format::Tgz, Some(member)) => extract::extract_member(&upstream, member, &target)
                .with_context(|| format!("{} ({arch})", binary.name))?,
            (Format::Deb, Some(member)) => extract::extract_deb_member(&upstream, member, &target)
                .with_context(|| format!("{} ({arch})", binary.name))?,
            _ => copy_executable(&upstream, &target)?,
        };
        eprintln!("sync-binaries: staged {} ({arch}) {}", binary.name, binary.version);
        staged.insert((binary.name.clone(), arch), (digest, util::file_size(&target)?));
        ready.push((target, output.join(&relative)));
    }
    for (from, to) in ready {
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::rename(&from, &to).with_context(|| format!("moving {} into place", to.display()))?;
    }
    Ok(())
}

/// Every (binary, arch, source) of the selected arches, in file order.
fn selected<'a>(
    config: &'a Config,
    arches: &'a [Arch],
) -> impl Iterator<Item = (&'a config::BinarySpec, Arch, &'a Source)> {
    config.binaries.iter().flat_map(move |binary| {
        binary
            .source
            .iter()
            .filter(|(arch, _)| arches.contains(arch))
            .map(move |(arch, source)| (binary, *arch, source))
    })
}

/// The digest of a binary the fragment already records at this version and path, when the
/// staged file still has it.
fn already_staged(
    previous: &[Binary],
    binary: &config::BinarySpec,
    arch: Arch,
    staged: &Path,
) -> Result<Option<String>> {
    let recorded = previous
        .iter()
        .find(|b| b.name == binary.name && b.version == binary.version && b.install_dir == binary.install_dir)
        .and_then(|b| b.targets.get(&arch));
    match recorded {
        Some(entry) if staged.is_file() && util::sha256_file(staged)? == entry.sha256 => Ok(Some(entry.sha256.clone())),
        _ => Ok(None),
    }
}

/// The verified upstream file in the download cache, downloaded when it is not there yet.
fn fetch_upstream(cache: &DownloadCache, name: &str, arch: Arch, source: &Source) -> Result<PathBuf> {
    if !cache.path(&source.sha256).is_file() {
        eprintln!("sync-binaries: downloading {}", source.url);
    }
    cache
        .fetch(&format!("{name} ({arch}) upstream file"), &source.url, &source.sha256)
        .with_context(|| format!("{name} ({arch}): fetching the pinned upstream file"))
}

/// Copies a direct-binary download to `target` (0755, atomically) and returns its sha256.
fn copy_executable(from: &Path, target: &Path) -> Result<String> {
    let mut source = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    extract::write_executable(&mut source, target)
}

/// The fragment after this run: each configured binary with the files staged now, plus the files
/// of other arches the previous fragment recorded for the same version.
fn fragment_entries(config: &Config, previous: &[Binary], staged: &Staged) -> Vec<Binary> {
    let mut entries: Vec<Binary> = previous
        .iter()
        .filter(|b| !config.binaries.iter().any(|spec| spec.name == b.name))
        .cloned()
        .collect();
    for spec in &config.binaries {
        let mut targets: BTreeMap<Arch, FileEntry> = previous
            .iter()
            .find(|b| b.name == spec.name && b.version == spec.version && b.install_dir == spec.install_dir)
            .map(|b| b.targets.clone())
            .unwrap_or_default();
        for ((name, arch), (sha256, size)) in staged {
            if *name == spec.name {
                targets.insert(
                    *arch,
                    FileEntry {
                        path: cdn::binary_path(name, &spec.version, *arch),
                        sha256: sha256.clone(),
                        size: Some(*size),
                    },
                );
            }
        }
        if !targets.is_empty() {
            entries.push(Binary {
                name: spec.name.clone(),
                version: spec.version.clone(),
                install_dir: spec.install_dir.clone(),
                targets,
            });
        }
    }
    entries
}

/// Downloads every selected source that has no digest yet, writes the digests into the config
/// file (keeping its comments), and returns the pinned config.
fn pin(path: &Path, text: &str, config: &Config, arches: &[Arch], cache: &DownloadCache) -> Result<Config> {
    let mut by_url: BTreeMap<&str, String> = BTreeMap::new();
    let mut digests = BTreeMap::new();
    for (binary, arch, source) in
        selected(config, arches).filter(|(_, _, s)| s.format != Format::Stack && s.sha256.is_empty())
    {
        let digest = match by_url.get(source.url.as_str()) {
            Some(digest) => digest.clone(),
            None => {
                eprintln!("sync-binaries: --pin: downloading {}", source.url);
                // Only `--pin` downloads a file whose digest is not known yet, once per upstream
                // file, on a maintainer's machine.
                let digest = cache.fetch_unpinned(&source.url)?;
                by_url.insert(&source.url, digest.clone());
                digest
            }
        };
        digests.insert((binary.name.clone(), arch), digest);
    }
    if digests.is_empty() {
        eprintln!("sync-binaries: --pin: every selected source already has a digest");
        return Ok(config.clone());
    }
    let pinned = config::pin_digests(text, &digests)?;
    util::write_atomic(path, pinned.as_bytes())?;
    eprintln!(
        "sync-binaries: --pin wrote {} digest(s) into {}; review and commit the diff",
        digests.len(),
        path.display()
    );
    config::parse(&pinned, &path.display().to_string())
}
