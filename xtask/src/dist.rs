//! `cargo xtask dist`: the main job. Builds and assembles a release for every arch, then merges
//! the per-arch manifests into `dist/manifest.json`.
//!
//! Installs the host packages it needs first (`setup`), then runs `release` per arch (which
//! builds the kernel and rootfs when not given) and `merge-manifest`.

use anyhow::Result;
use boot_assets::Arch;
use xshell::Shell;

use crate::flags::{self, ArchFlag, Job};
use crate::setup;

impl flags::Dist {
    pub fn run(self, sh: &Shell) -> Result<()> {
        setup::ensure_host_packages(sh, Job::Release)?;
        let arches = if self.arch.is_empty() {
            vec![ArchFlag::Arm64, ArchFlag::X86_64]
        } else {
            self.arch.clone()
        };
        let mut manifests = Vec::new();
        for arch in arches {
            flags::Release {
                version: self.version.clone(),
                arch,
                kernel: None,
                rootfs: None,
                kernel_version: None,
                source: self.source.clone(),
                binaries_json: self.binaries_json.clone(),
                kernel_cmdline: None,
                output_dir: self.output_dir.clone(),
            }
            .run(sh)?;
            manifests.push(
                self.output_dir
                    .join(Arch::from(arch).as_str())
                    .join(boot_assets::cdn::MANIFEST_FILE),
            );
        }
        flags::MergeManifest {
            inputs: manifests,
            output: self.output_dir.join(boot_assets::cdn::MANIFEST_FILE),
        }
        .run(sh)
    }
}
