//! `cargo xtask bench <what>`: measurements that print a table, one module per benchmark.

mod boot;
mod fetch;

use anyhow::Result;
use xshell::Shell;

use crate::flags;

impl flags::Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        match self.command {
            flags::BenchCommand::Fetch(cmd) => cmd.run(sh),
            flags::BenchCommand::Boot(cmd) => cmd.run(sh),
        }
    }
}
