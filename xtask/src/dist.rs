//! `cargo xtask dist`: the main job. Stages the runtime binaries, builds and assembles a release
//! for every arch, then merges the per-arch manifests into `dist/manifest.json`.
//!
//! Installs the host packages it needs first (`setup`), then runs `sync-binaries` (from
//! `--binaries-config`, default `manifests/binaries.toml`) and, with `--fex-source`, `fex` into
//! `{output_dir}/bin` and its fragment `{output_dir}/bin/binaries.json` (or takes an existing
//! fragment with `--binaries-json`, or none with `--no-binaries`), then `release` per arch (which
//! builds the kernel and rootfs unless `--kernel`/`--rootfs ARCH=PATH` gives them) and
//! `merge-manifest`. Writes under `{output_dir}`, plus FEX's CMake work tree in `build/fex`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use xshell::Shell;

use crate::flags::{self, ArchFlag, Job};
use crate::{fex, layout, merge_manifest, release, setup, sync_binaries, util};

/// The binaries config used when neither `--binaries-config` nor another source is given.
const DEFAULT_BINARIES_CONFIG: &str = "manifests/binaries.toml";

/// `ARCH=PATH` values of a repeatable flag, one path per arch.
pub fn per_arch_paths(flag: &str, values: &[String]) -> Result<BTreeMap<Arch, PathBuf>> {
    let mut paths = BTreeMap::new();
    for value in values {
        let (arch, path) = value.split_once('=').filter(|(_, p)| !p.is_empty()).with_context(|| {
            format!("--{flag} {value:?}: expected ARCH=PATH, e.g. --{flag} arm64=build/arm64/{flag}")
        })?;
        let arch: Arch = match arch {
            "arm64" => Arch::Arm64,
            "x86_64" => Arch::X86_64,
            other => bail!("--{flag} {value:?}: unknown arch {other:?} (expected arm64 or x86_64)"),
        };
        if paths.insert(arch, PathBuf::from(path)).is_some() {
            bail!("--{flag}: {} given twice", arch.as_str());
        }
    }
    Ok(paths)
}

impl flags::Dist {
    pub fn run(self, sh: &Shell) -> Result<()> {
        setup::ensure_host_packages(sh, Job::Release)?;
        let arches = if self.arch.is_empty() {
            vec![ArchFlag::Arm64, ArchFlag::X86_64]
        } else {
            self.arch.clone()
        };
        let kernels = per_arch_paths("kernel", &self.kernels)?;
        let rootfs = per_arch_paths("rootfs", &self.rootfs)?;
        for (flag, given) in [("kernel", &kernels), ("rootfs", &rootfs)] {
            if let Some(arch) = given.keys().find(|a| !arches.iter().any(|f| Arch::from(*f) == **a)) {
                bail!(
                    "--{flag} {}=…: that arch is not among the arches to build",
                    arch.as_str()
                );
            }
        }
        if self.fex_source.is_some() && !arches.contains(&ArchFlag::Arm64) {
            bail!("--fex-source: FEX runs on arm64 only, and arm64 is not among the arches to build");
        }

        let binaries_json = self.stage_binaries(sh, &arches)?;
        let mut manifests = Vec::new();
        for arch in arches.into_iter().map(Arch::from) {
            let request = release::Request {
                version: self.version.clone(),
                arch,
                kernel: kernels.get(&arch).cloned(),
                rootfs: rootfs.get(&arch).cloned(),
                kernel_version: None,
                source: self.source.clone(),
                binaries_json: binaries_json.clone(),
                kernel_cmdline: None,
                unverified_rootfs: self.unverified_rootfs,
                output_dir: self.output_dir.clone(),
            };
            manifests.push(release::run(sh, &request)?.manifest);
        }
        merge_manifest::run(&manifests, &layout::unified_manifest(&self.output_dir))?;
        Ok(())
    }

    /// Runs sync-binaries (and fex) into `{output_dir}/bin`; the fragment the releases embed.
    fn stage_binaries(&self, sh: &Shell, arches: &[ArchFlag]) -> Result<Option<PathBuf>> {
        if self.no_binaries {
            eprintln!("dist: --no-binaries: the manifests list no runtime binaries");
            return Ok(None);
        }
        if let Some(fragment) = &self.binaries_json {
            eprintln!("dist: runtime binaries from {}", fragment.display());
            return Ok(Some(fragment.clone()));
        }
        let staging = layout::binaries_staging(&self.output_dir);
        let config = self
            .binaries_config
            .clone()
            .unwrap_or_else(|| util::project_root().join(DEFAULT_BINARIES_CONFIG));
        eprintln!("dist: runtime binaries from {} (sync-binaries)", config.display());
        let synced = sync_binaries::sync(&sync_binaries::Request {
            config: config.clone(),
            arches: arches.iter().map(|&a| a.into()).collect(),
            staging: staging.clone(),
            pin: false,
        })
        .with_context(|| format!("dist: staging the runtime binaries of {}", config.display()))?;
        eprintln!("dist: {} runtime binaries staged", synced.binaries);
        let fragment = synced.fragment;
        if let Some(source) = &self.fex_source {
            let built = fex::build(
                sh,
                &fex::Request::local(source.clone(), self.fex_patches_dir.clone(), staging),
            )
            .with_context(|| format!("dist: building FEX from {}", source.display()))?;
            eprintln!(
                "dist: FEX {} from {} staged as {}",
                built.version,
                source.display(),
                built.staged.display()
            );
        } else {
            eprintln!("dist: no --fex-source: the release carries no FEX (the release workflow builds it on arm64)");
        }
        Ok(Some(fragment))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_arch_paths_are_arch_equals_path_once_per_arch() {
        let paths = per_arch_paths("kernel", &["arm64=a/k".into(), "x86_64=b/k".into()]).unwrap();
        assert_eq!(paths[&Arch::Arm64], PathBuf::from("a/k"));
        assert_eq!(paths[&Arch::X86_64], PathBuf::from("b/k"));
        let err = per_arch_paths("rootfs", &["a/k".into()]).unwrap_err().to_string();
        assert!(err.contains("--rootfs \"a/k\": expected ARCH=PATH"), "{err}");
        let err = per_arch_paths("kernel", &["amd64=k".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown arch \"amd64\""), "{err}");
        let err = per_arch_paths("kernel", &["arm64=a".into(), "arm64=b".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--kernel: arm64 given twice"), "{err}");
    }
}
