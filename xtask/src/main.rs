//! `cargo xtask <command>`: the boot-assets release pipeline.
//!
//! This file only dispatches: `flags.rs` holds the command line, and each command lives in the
//! module named after it (`merge-manifest` → `merge_manifest.rs`).

mod archive;
mod bench;
mod boot;
mod flags;
mod kernel;
mod kernel_version;
mod merge_manifest;
mod release;
mod schema;
#[allow(dead_code)] // Helpers shared by commands; not every command uses every one.
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let flags = flags::Xtask::parse();
    let result = xshell::Shell::new()
        .map_err(anyhow::Error::from)
        .and_then(|sh| run(flags, &sh));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: flags::Xtask, sh: &xshell::Shell) -> anyhow::Result<()> {
    match flags.command {
        flags::Command::Release(cmd) => cmd.run(sh),
        flags::Command::MergeManifest(cmd) => cmd.run(sh),
        flags::Command::Schema(cmd) => cmd.run(sh),
        flags::Command::Kernel(cmd) => cmd.run(sh),
        flags::Command::Boot(cmd) => cmd.run(sh),
        flags::Command::Bench(cmd) => cmd.run(sh),
    }
}
