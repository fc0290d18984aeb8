//! `cargo xtask test`: the full test suite, exactly as CI runs it.
//!
//! Installs the host packages the tests need (`setup`), then runs the formatting and lint checks
//! and `cargo test --workspace`, each with the sentence that says how to fix a failure.

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::flags::{self, Job};
use crate::setup;

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
        let filter = self.filter;
        cmd!(sh, "cargo test --workspace -- {filter...}")
            .run()
            .context("tests failed: see the failures above")?;
        Ok(())
    }
}
