//! `cargo xtask bench boot`: boots each arch N times and prints the median kernel start →
//! /sbin/init and /sbin/init → agent times.
//!
//! Reads build/{arch}/kernel (building it when missing, through the kernel cache) and
//! build/{arch}/rootfs.erofs (made by `cargo xtask rootfs`), and the agent fixture
//! tests/fixtures/agent/hello-agent.sh; writes nothing but the report on stdout.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use boot_assets::{cdn, Arch};
use xshell::Shell;

use crate::boot::qemu::{self, Accel, VmSpec};
use crate::{boot, flags, kernel, util};

/// The agent every benchmark boot runs: it prints one line and powers off.
const BENCH_AGENT: &str = "tests/fixtures/agent/hello-agent.sh";

impl flags::BenchBoot {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arches: Vec<Arch> = if self.arch.is_empty() {
            vec![Arch::Arm64, Arch::X86_64]
        } else {
            self.arch.iter().map(|&a| a.into()).collect()
        };
        if (self.kernel.is_some() || self.rootfs.is_some()) && arches.len() != 1 {
            bail!("--kernel and --rootfs name one arch's files: pass exactly one --arch with them");
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let mut report = Vec::new();
        for arch in arches {
            let kernel = match &self.kernel {
                Some(path) => path.clone(),
                None => kernel::build(sh, &kernel::KernelRequest::for_arch(arch))?.image,
            };
            let rootfs = self
                .rootfs
                .clone()
                .unwrap_or_else(|| util::build_dir().join(arch.as_str()).join(cdn::ROOTFS_FILE));
            if !rootfs.is_file() {
                bail!(
                    "{} is missing: build it with `cargo xtask rootfs --arch {arch}` or pass --rootfs",
                    rootfs.display()
                );
            }
            let share = tempfile::tempdir().context("creating the share directory")?;
            boot::prepare_share(share.path(), Some(&util::project_root().join(BENCH_AGENT)), None, &[])?;
            let mut to_init = Vec::new();
            let mut to_agent = Vec::new();
            for run_index in 1..=self.runs {
                let spec = VmSpec {
                    arch,
                    accel: Accel::Tcg,
                    qemu: self.qemu.clone(),
                    kernel: kernel.clone(),
                    rootfs: rootfs.clone(),
                    cmdline: arch.default_kernel_cmdline().to_owned(),
                    share: share.path().to_path_buf(),
                    timeout: Duration::from_secs(self.timeout),
                    stream_console: false,
                    forward_stdin: false,
                };
                let run = qemu::run_vm(&spec)?;
                boot::verdict(&run, self.timeout).with_context(|| format!("{arch} boot {run_index}"))?;
                let found = &run.milestones;
                let (Some(init), Some(agent)) = (found.kernel_to_init, found.init_to_agent()) else {
                    bail!(
                        "{arch} boot {run_index}: the console shows no init hand-over or no agent line:\n{}",
                        boot::console::tail(&run.lines, 30)
                    );
                };
                eprintln!(
                    "bench boot {arch} {run_index}/{}: kernel → init {:.3} s, init → agent {:.3} s, total {:.2} s",
                    self.runs,
                    init.as_secs_f64(),
                    agent.as_secs_f64(),
                    run.ended_at.as_secs_f64()
                );
                to_init.push(init);
                to_agent.push(agent);
            }
            report.push((arch, median(&mut to_init), median(&mut to_agent)));
        }
        println!("arch     runs  kernel start → /sbin/init  /sbin/init → agent");
        for (arch, init, agent) in report {
            println!(
                "{:<8} {:>4}  {:>22.3} s  {:>16.3} s",
                arch.as_str(),
                self.runs,
                init.as_secs_f64(),
                agent.as_secs_f64()
            );
        }
        Ok(())
    }
}

/// The median of a non-empty list (the lower middle one for an even count).
fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[(values.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&mut [ms(4), ms(1), ms(3), ms(2)]), ms(2));
    }

    #[test]
    fn the_bench_agent_exists() {
        assert!(util::project_root().join(BENCH_AGENT).is_file());
    }
}
