//! `cargo xtask verify-published`, and [`verify_published`], which `publish` runs before it moves
//! `latest.json`: install a published release from its CDN exactly as a user's runtime would.
//!
//! Reads the CDN (latest.json when asked for `latest`, the manifest and its signature, every
//! kernel, rootfs and binary) through the AssetManager, with the trusted public key; writes only
//! into a temporary directory, removed afterwards. With `--boot`, boots each arch's downloaded
//! kernel and rootfs, with its downloaded runtime binaries in the share, via `cargo xtask boot`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use boot_assets::asset_manager::{AssetError, AssetManager};
use boot_assets::{cdn, Arch, Manifest};
use xshell::{cmd, Shell};

use crate::flags;
use crate::signing;

impl flags::VerifyPublished {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let (public_key, _) = signing::read_public_key(&self.public_key)?;
        let verified = verify_published(
            sh,
            &self.published.cdn,
            &self.published.version,
            self.arch.map(Arch::from),
            &public_key,
            self.boot,
        )?;
        eprintln!(
            "verify-published: {} v{} is consumable: {} verified (manifest sha256 {})",
            self.published.cdn,
            verified.version,
            verified
                .arches
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            verified.manifest_sha256
        );
        Ok(())
    }
}

/// What [`verify_published`] proved.
#[derive(Debug)]
pub struct Verified {
    /// The version installed (resolved from latest.json when asked for `latest`).
    pub version: String,
    /// The sha256 of the manifest bytes the CDN served (and whose signature verified).
    pub manifest_sha256: String,
    /// The arches installed, kernel, rootfs and binaries each.
    pub arches: Vec<Arch>,
    /// How many binary files were installed over all arches.
    pub binary_files: usize,
}

/// Installs `version` (or `latest`) from `cdn` for `only_arch` or every arch of its manifest,
/// with every runtime binary, into a fresh temporary cache, trusting only `public_key`; boots
/// each arch when `boot` is set.
pub fn verify_published(
    sh: &Shell,
    cdn_url: &str,
    version: &str,
    only_arch: Option<Arch>,
    public_key: &minisign::PublicKey,
    boot: bool,
) -> Result<Verified> {
    let work = tempfile::tempdir().context("creating a temporary directory to install into")?;
    let key_line = public_key.to_base64();
    let mut version = version.to_owned();
    let mut verified = Vec::new();
    let mut manifest = None;
    let mut binary_files = 0;
    let candidates: Vec<Arch> = match only_arch {
        Some(arch) => vec![arch],
        None => Arch::ALL.to_vec(),
    };
    for arch in candidates {
        let manager = AssetManager::builder(cdn_url)
            .version(&version)
            .arch(arch)
            .cache_dir(work.path().join("boot"))
            .trusted_public_key(key_line.clone())
            .build()
            .with_context(|| format!("verifying {cdn_url}: bad settings"))?;
        // Every arch verifies the same version, even if latest.json moves meanwhile.
        version = manager
            .resolve_version()
            .with_context(|| format!("resolving version {version:?} at {cdn_url}"))?;
        let assets = match manager.prepare() {
            Ok(assets) => assets,
            Err(AssetError::MissingArch { .. }) if only_arch.is_none() => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("installing {arch} boot assets of v{version} from {cdn_url}"))
            }
        };
        let bin_dir = work.path().join("runtime").join(arch.as_str()).join("bin");
        let installed = manager
            .prepare_binaries(&bin_dir)
            .with_context(|| format!("installing the {arch} runtime binaries of v{version} from {cdn_url}"))?;
        eprintln!(
            "verify-published: {arch}: kernel, rootfs and {} binaries downloaded, digests and signature verified",
            installed.len()
        );
        binary_files += installed.len();
        if boot {
            boot_arch(
                sh,
                arch,
                &assets.kernel,
                &assets.rootfs,
                &assets.kernel_cmdline,
                &bin_dir,
            )?;
        }
        manifest = Some(assets.manifest);
        verified.push(arch);
    }
    let Some(manifest) = manifest else {
        bail!("{cdn_url}: the manifest of v{version} has no arch this tool knows");
    };
    if only_arch.is_none() {
        check_every_arch_verified(cdn_url, &version, &manifest, &verified)?;
    }
    let manifest_file = work.path().join("boot").join(&version).join(cdn::MANIFEST_FILE);
    let manifest_sha256 = crate::util::sha256_file(&manifest_file)?;
    Ok(Verified {
        version,
        manifest_sha256,
        arches: verified,
        binary_files,
    })
}

/// Every arch the manifest lists must have been installed when no single arch was asked for.
fn check_every_arch_verified(cdn_url: &str, version: &str, manifest: &Manifest, verified: &[Arch]) -> Result<()> {
    let missed: Vec<String> = manifest
        .targets
        .keys()
        .filter(|arch| !verified.contains(arch))
        .map(ToString::to_string)
        .collect();
    if !missed.is_empty() {
        bail!(
            "{cdn_url}: v{version} lists arches that were not verified: {}",
            missed.join(", ")
        );
    }
    Ok(())
}

/// Boots one arch's downloaded kernel and rootfs with `cargo xtask boot` (the boot suite's
/// command: QEMU, the share with the runtime binaries, console checks, a clean power-off).
fn boot_arch(sh: &Shell, arch: Arch, kernel: &Path, rootfs: &Path, cmdline: &str, bin_dir: &Path) -> Result<()> {
    let xtask = std::env::current_exe().context("finding the running xtask binary")?;
    let arch_name = arch.as_str();
    eprintln!("verify-published: {arch}: booting the downloaded kernel and rootfs");
    cmd!(
        sh,
        "{xtask} boot --arch {arch_name} --kernel {kernel} --rootfs {rootfs} --cmdline {cmdline} --runtime-bin {bin_dir}"
    )
    .run()
    .with_context(|| format!("booting the published {arch} kernel and rootfs (`cargo xtask boot`)"))
}
