//! `cargo xtask test`: the full test suite, exactly as CI runs it.
//!
//! Installs the host packages the tests need (`setup`), then runs the formatting and lint checks
//! and `cargo test --workspace`, each with the sentence that says how to fix a failure. The boot
//! tests of the host's arch run under KVM when it works here (`BOOT_ASSETS_TEST_ACCEL=kvm`, read
//! by the e2e boot helpers), under TCG otherwise.

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::boot::kvm;
use crate::flags::{self, Job, TestAccel};
use crate::setup;

/// The variable the e2e boot helpers read: `kvm` boots guests of the host's arch with `--accel kvm`.
pub const TEST_ACCEL_ENV: &str = "BOOT_ASSETS_TEST_ACCEL";

/// `kvm` or `tcg` for the boot tests, printed with the reason.
fn choose_accel(wanted: TestAccel) -> Result<&'static str> {
    let preset = std::env::var(TEST_ACCEL_ENV).ok();
    let qemu = std::env::var_os("BOOT_ASSETS_QEMU").map(std::path::PathBuf::from);
    match (wanted, preset.as_deref()) {
        (TestAccel::Tcg, _) | (TestAccel::Auto, Some("tcg")) => {
            eprintln!("test: boot tests use TCG");
            Ok("tcg")
        }
        (TestAccel::Auto, Some(other)) if other != "kvm" => {
            bail!("{TEST_ACCEL_ENV}={other:?}: expected kvm or tcg (or unset it to probe)")
        }
        (TestAccel::Kvm, _) | (TestAccel::Auto, Some(_)) => match kvm::probe(qemu.as_deref()) {
            Ok(arch) => {
                eprintln!("test: boot tests of {} guests use KVM", arch.as_str());
                Ok("kvm")
            }
            Err(reason) => bail!("KVM was asked for but does not work here: {reason}"),
        },
        (TestAccel::Auto, None) => match kvm::probe(qemu.as_deref()) {
            Ok(arch) => {
                eprintln!("test: /dev/kvm works: boot tests of {} guests use KVM", arch.as_str());
                Ok("kvm")
            }
            Err(reason) => {
                eprintln!("test: boot tests use TCG (KVM unusable: {reason})");
                Ok("tcg")
            }
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
        let accel = choose_accel(self.accel)?;
        let filter = self.filter;
        cmd!(sh, "cargo test --workspace -- {filter...}")
            .env(TEST_ACCEL_ENV, accel)
            .run()
            .context("tests failed: see the failures above")?;
        Ok(())
    }
}
