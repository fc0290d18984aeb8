//! `cargo xtask test`: the full test suite, exactly as CI runs it.
//!
//! Installs the host packages the tests need (`setup`), then runs the formatting and lint checks
//! and `cargo test --workspace`, each with the sentence that says how to fix a failure. The boot
//! tests of the host's arch run under KVM when the probe guests — a firmware, then the
//! pipeline's own kernel (built through the kernel cache) — actually ran under it here
//! (`BOOT_ASSETS_TEST_ACCEL=kvm`, read by the e2e boot helpers), under TCG otherwise.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use boot_assets::Arch;

use crate::boot::kvm;
use crate::flags::{self, Job, TestAccel};
use crate::{kernel, setup, util};

/// The variable the e2e boot helpers read: `kvm` boots guests of the host's arch with `--accel kvm`.
pub const TEST_ACCEL_ENV: &str = "BOOT_ASSETS_TEST_ACCEL";

/// `kvm` or `tcg` for the boot tests, printed with the reason.
fn choose_accel(sh: &Shell, wanted: TestAccel) -> Result<&'static str> {
    let preset = std::env::var(TEST_ACCEL_ENV).ok();
    let qemu = std::env::var_os("BOOT_ASSETS_QEMU").map(std::path::PathBuf::from);
    let probe = || {
        let arch = kvm::host_arch()?;
        let kernel = || {
            eprintln!("test: the probe firmware ran under KVM; building the {arch} kernel to probe with it");
            probe_kernel(sh, arch, None)
        };
        kvm::probe(qemu.as_deref(), arch, kernel).map(|()| arch)
    };
    let (accel, why) = decide_accel(wanted, preset.as_deref(), probe)?;
    eprintln!("test: {why}");
    Ok(accel)
}

/// The kernel the KVM probe boots: `given` (`--kernel`), else the pipeline's own for `arch`,
/// through the kernel cache (the boot tests build the same one).
fn probe_kernel(sh: &Shell, arch: Arch, given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(path) => util::require_file(path, "--kernel").map(|()| path.to_path_buf()),
        None => kernel::build(sh, &kernel::KernelRequest::for_arch(arch))
            .map(|built| built.image)
            .with_context(|| format!("building the {arch} kernel for the probe")),
    }
    .map_err(|e| format!("{e:#}"))
}

/// The accelerator for `wanted` with `preset` in the environment, and the sentence that says why;
/// `probe` runs a guest under KVM only when the choice depends on it.
fn decide_accel(
    wanted: TestAccel,
    preset: Option<&str>,
    probe: impl FnOnce() -> Result<Arch, String>,
) -> Result<(&'static str, String)> {
    match (wanted, preset) {
        (TestAccel::Tcg, _) | (TestAccel::Auto, Some("tcg")) => Ok(("tcg", "boot tests use TCG".to_owned())),
        (TestAccel::Auto, Some(other)) if other != "kvm" => {
            bail!("{TEST_ACCEL_ENV}={other:?}: expected kvm or tcg (or unset it to probe)")
        }
        (TestAccel::Kvm, _) | (TestAccel::Auto, Some(_)) => match probe() {
            Ok(arch) => Ok(("kvm", format!("boot tests of {} guests use KVM", arch.as_str()))),
            Err(reason) => bail!("KVM was asked for but does not work here: {reason}"),
        },
        (TestAccel::Auto, None) => match probe() {
            Ok(arch) => Ok((
                "kvm",
                format!(
                    "the probe firmware and kernel ran under KVM: boot tests of {} guests use KVM",
                    arch.as_str()
                ),
            )),
            Err(reason) => Ok(("tcg", format!("boot tests use TCG (KVM unusable: {reason})"))),
        },
    }
}

impl flags::Test {
    pub fn run(self, sh: &Shell) -> Result<()> {
        setup::ensure_host_packages(sh, Job::Test)?;
        let _root = sh.push_dir(crate::util::project_root());
        cmd!(sh, "cargo fmt --all -- --check")
            .run()
            .context("formatting differs: run `cargo fmt --all` and commit")?;
        cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings")
            .run()
            .context("clippy found problems: fix the warnings above")?;
        let accel = choose_accel(sh, self.accel)?;
        let filter = self.filter;
        cmd!(sh, "cargo test --workspace -- {filter...}")
            .env(TEST_ACCEL_ENV, accel)
            .run()
            .context("tests failed: see the failures above")?;
        Ok(())
    }
}

impl flags::ProbeKvm {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arch = match self.arch {
            Some(arch) => arch.into(),
            None => kvm::host_arch().map_err(anyhow::Error::msg)?,
        };
        let kernel = || probe_kernel(sh, arch, self.kernel.as_deref());
        let qemu = self.qemu.as_deref();
        if !self.tcg {
            kvm::probe(qemu, arch, kernel).map_err(anyhow::Error::msg)?;
            eprintln!("probe-kvm: the probe firmware and the {arch} kernel ran under KVM");
            return Ok(());
        }
        let took = kvm::probe_under_tcg(qemu, arch, kernel).map_err(anyhow::Error::msg)?;
        for (guest, took) in ["probe firmware", "kernel"].into_iter().zip(took) {
            eprintln!("probe-kvm: the {arch} {guest} ran to its marker under TCG in {took:.1?}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_tcg_with_the_probes_reason() {
        let (accel, why) = decide_accel(TestAccel::Auto, None, || Err("the guest did not run".into())).unwrap();
        assert_eq!(accel, "tcg");
        assert_eq!(why, "boot tests use TCG (KVM unusable: the guest did not run)");
        let (accel, why) = decide_accel(TestAccel::Auto, None, || Ok(Arch::X86_64)).unwrap();
        assert_eq!(
            (accel, why.as_str()),
            (
                "kvm",
                "the probe firmware and kernel ran under KVM: boot tests of x86_64 guests use KVM"
            )
        );
    }

    #[test]
    fn asked_for_accelerators_are_kept_or_refused() {
        let never = || -> Result<Arch, String> { panic!("no probe for TCG") };
        assert_eq!(decide_accel(TestAccel::Tcg, None, never).unwrap().0, "tcg");
        assert_eq!(decide_accel(TestAccel::Auto, Some("tcg"), never).unwrap().0, "tcg");
        let err = decide_accel(TestAccel::Kvm, None, || Err("no".into())).unwrap_err();
        assert_eq!(err.to_string(), "KVM was asked for but does not work here: no");
        let err = decide_accel(TestAccel::Auto, Some("fast"), never).unwrap_err();
        assert!(err.to_string().starts_with("BOOT_ASSETS_TEST_ACCEL=\"fast\""), "{err}");
    }
}
