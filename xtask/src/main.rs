//! `cargo xtask <command>`: the boot-assets release pipeline.
//!
//! This file only dispatches: `flags.rs` holds the command line, and each command lives in the
//! module named after it (`merge-manifest` → `merge_manifest.rs`).

mod arch_facts;
mod archive;
mod bench;
mod binaries;
mod boot;
mod build_cache;
mod cdn_tree;
mod debian;
mod dist;
mod downloads;
mod elf;
mod fetch;
mod fetch_packages;
mod fex;
mod flags;
mod kernel;
mod kernel_version;
mod keygen;
mod layout;
mod manifest_io;
mod merge_manifest;
mod nginx;
mod publish;
mod release;
mod rootfs;
mod schema;
mod setup;
mod signing;
mod stack;
mod sync_binaries;
mod test;
mod tools;
mod util;
mod verify_published;
mod verity;

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
        flags::Command::Dist(cmd) => cmd.run(sh),
        flags::Command::Release(cmd) => cmd.run(sh),
        flags::Command::MergeManifest(cmd) => cmd.run(sh),
        flags::Command::Schema(cmd) => cmd.run(sh),
        flags::Command::Setup(cmd) => cmd.run(sh),
        flags::Command::Test(cmd) => cmd.run(sh),
        flags::Command::Fex(cmd) => cmd.run(sh),
        flags::Command::Fetch(cmd) => cmd.run(sh),
        flags::Command::FetchPackages(cmd) => cmd.run(sh),
        flags::Command::CdnTree(cmd) => cmd.run(sh),
        flags::Command::Bench(cmd) => cmd.run(sh),
        flags::Command::Publish(cmd) => cmd.run(sh),
        flags::Command::Keygen(cmd) => cmd.run(sh),
        flags::Command::VerifyPublished(cmd) => cmd.run(sh),
        flags::Command::Rootfs(cmd) => cmd.run(sh),
        flags::Command::SyncBinaries(cmd) => cmd.run(sh),
        flags::Command::Stack(cmd) => cmd.run(sh),
        flags::Command::Kernel(cmd) => cmd.run(sh),
        flags::Command::Boot(cmd) => cmd.run(sh),
        flags::Command::ProbeKvm(cmd) => cmd.run(sh),
    }
}
