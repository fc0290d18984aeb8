//! `cargo xtask bench boot`: boots each arch N times and prints the median kernel start →
//! /sbin/init, /sbin/init → agent and kernel start → first container output times.
//!
//! Builds what it boots unless `--kernel`/`--rootfs` names it: the kernel through the kernel
//! cache (as `cargo xtask kernel` does) and the rootfs from the pinned recipe (as `cargo xtask
//! rootfs` does, into build/{arch}/rootfs.erofs). Reads the agent fixture
//! tests/fixtures/agent/container-agent.sh in its first-container-only mode, with runc from
//! `--runtime-bin` or from the package pinned in tests/fixtures/containers/packages.lock (fetched
//! with the rootfs build's private apt state and package cache) — or, with `--no-containers`,
//! tests/fixtures/agent/hello-agent.sh. Writes nothing but temporary files and the report on
//! stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use xshell::Shell;

use crate::boot::qemu::{self, Accel, VmSpec};
use crate::debian::{self, deb, Lock};
use crate::rootfs;
use crate::{boot, flags, kernel, util};

/// The agent of a `--no-containers` boot: it prints one line and powers off.
const BENCH_AGENT: &str = "tests/fixtures/agent/hello-agent.sh";

/// The agent of a container boot; the share file below makes it stop after one container.
const CONTAINER_AGENT: &str = "tests/fixtures/agent/container-agent.sh";

/// The share file that puts the container agent in its first-container-only mode.
const FIRST_CONTAINER_ONLY: &str = "test/first-container-only";

/// The container runtime packages pinned for the container tests and this benchmark.
const CONTAINER_PACKAGES_LOCK: &str = "tests/fixtures/containers/packages.lock";

/// The package and the path in it of the runc a container boot runs.
const RUNC_PACKAGE: &str = "runc";
const RUNC_IN_PACKAGE: &str = "usr/sbin/runc";

/// The medians of one arch (and one rootfs image).
struct ArchReport {
    arch: Arch,
    /// `new` or `baseline` with `--baseline-rootfs`, else empty.
    image: &'static str,
    to_init: Duration,
    to_agent: Duration,
    to_container: Option<Duration>,
}

impl flags::BenchBoot {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arches: Vec<Arch> = if self.arch.is_empty() {
            vec![Arch::Arm64, Arch::X86_64]
        } else {
            self.arch.iter().map(|&a| a.into()).collect()
        };
        let one_arch_files = self.kernel.is_some() || self.rootfs.is_some() || self.runtime_bin.is_some();
        if (one_arch_files || self.baseline_rootfs.is_some()) && arches.len() != 1 {
            bail!(
                "--kernel, --rootfs, --baseline-rootfs and --runtime-bin name one arch's files: pass exactly one \
                 --arch with them"
            );
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let mut report = Vec::new();
        for arch in arches {
            report.extend(self.bench_arch(sh, arch)?);
        }
        self.print_report(&report);
        Ok(())
    }

    /// Builds (or takes) what `arch` boots, then boots it `--runs` times (alternating with the
    /// baseline rootfs when one is given, so both see the same machine load).
    fn bench_arch(&self, sh: &Shell, arch: Arch) -> Result<Vec<ArchReport>> {
        let kernel = match &self.kernel {
            Some(path) => path.clone(),
            None => kernel::build(sh, &kernel::KernelRequest::for_arch(arch))?.image,
        };
        let rootfs = match &self.rootfs {
            Some(path) => {
                util::require_file(path, "--rootfs")?;
                path.clone()
            }
            None => rootfs::build(sh, &rootfs::BuildOptions::defaults(arch))?.image,
        };
        let mut images = vec![("", rootfs)];
        if let Some(baseline) = &self.baseline_rootfs {
            util::require_file(baseline, "--baseline-rootfs")?;
            images = vec![("new", images.remove(0).1), ("baseline", baseline.clone())];
        }
        let share = tempfile::tempdir().context("creating the share directory")?;
        let scratch = tempfile::tempdir().context("creating a temporary directory")?;
        self.prepare_share(sh, arch, share.path(), scratch.path())?;
        let mut times: Vec<[Vec<Duration>; 3]> = images.iter().map(|_| Default::default()).collect();
        for run_index in 1..=self.runs {
            for ((label, rootfs), [to_init, to_agent, to_container]) in images.iter().zip(&mut times) {
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
                    forward_tcp: None,
                };
                let (init, agent, container) = self.one_boot(&spec, run_index, label)?;
                to_init.push(init);
                to_agent.push(agent);
                to_container.extend(container);
            }
        }
        Ok(images
            .iter()
            .zip(&mut times)
            .map(|((label, _), [to_init, to_agent, to_container])| ArchReport {
                arch,
                image: label,
                to_init: median(to_init),
                to_agent: median(to_agent),
                to_container: (!to_container.is_empty()).then(|| median(to_container)),
            })
            .collect())
    }

    /// The share of every boot of `arch`: the container agent with runc in its first-container-only
    /// mode, or the hello agent with `--no-containers`.
    fn prepare_share(&self, sh: &Shell, arch: Arch, share: &Path, scratch: &Path) -> Result<()> {
        if self.no_containers {
            return boot::prepare_share(share, Some(&util::project_root().join(BENCH_AGENT)), None, &[]);
        }
        let runtime_bin = match &self.runtime_bin {
            Some(dir) => dir.clone(),
            None => pinned_runc(sh, arch, scratch)?,
        };
        if !runtime_bin.join("runc").is_file() {
            bail!("--runtime-bin {}: it holds no runc", runtime_bin.display());
        }
        let marker = scratch.join("first-container-only");
        std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
        boot::prepare_share(
            share,
            Some(&util::project_root().join(CONTAINER_AGENT)),
            Some(&runtime_bin),
            &[(PathBuf::from(FIRST_CONTAINER_ONLY), marker)],
        )
    }

    /// One timed boot: kernel → init, init → agent and (with containers) kernel → first container output.
    fn one_boot(&self, spec: &VmSpec, run_index: u32, label: &str) -> Result<(Duration, Duration, Option<Duration>)> {
        let arch = spec.arch;
        let run = qemu::run_vm(spec)?;
        boot::verdict(&run, self.timeout).with_context(|| format!("{arch} boot {run_index}"))?;
        let found = &run.milestones;
        let (Some(init), Some(agent)) = (found.kernel_to_init, found.init_to_agent()) else {
            bail!(
                "{arch} boot {run_index}: the console shows no init hand-over or no agent line:\n{}",
                boot::console::tail(&run.lines, 30)
            );
        };
        let container = match (!self.no_containers, found.kernel_to_first_container()) {
            (false, _) => None,
            (true, Some(container)) => Some(container),
            (true, None) => bail!(
                "{arch} boot {run_index}: no container printed its first line (a line starting with {}):\n{}",
                boot::console::FIRST_CONTAINER_OUTPUT_MARKER,
                boot::console::tail(&run.lines, 30)
            ),
        };
        eprintln!(
            "bench boot {arch}{} {run_index}/{}: kernel → init {:.3} s, init → agent {:.3} s{}, total {:.2} s",
            if label.is_empty() {
                String::new()
            } else {
                format!(" ({label})")
            },
            self.runs,
            init.as_secs_f64(),
            agent.as_secs_f64(),
            container
                .map(|c| format!(", kernel → first container output {:.3} s", c.as_secs_f64()))
                .unwrap_or_default(),
            run.ended_at.as_secs_f64()
        );
        Ok((init, agent, container))
    }

    fn print_report(&self, report: &[ArchReport]) {
        let container_header = if self.no_containers {
            ""
        } else {
            "  kernel start → first container output"
        };
        println!("arch     image     runs  kernel start → /sbin/init  /sbin/init → agent{container_header}");
        for row in report {
            println!(
                "{:<8} {:<8} {:>5}  {:>22.3} s  {:>16.3} s{}",
                row.arch.as_str(),
                if row.image.is_empty() { "-" } else { row.image },
                self.runs,
                row.to_init.as_secs_f64(),
                row.to_agent.as_secs_f64(),
                row.to_container
                    .map(|c| format!("  {:>35.3} s", c.as_secs_f64()))
                    .unwrap_or_default()
            );
        }
        if let [new, baseline] = report {
            println!(
                "{}: new / baseline: kernel start → /sbin/init {:.3}, /sbin/init → agent {:.3}",
                new.arch,
                ratio(new.to_init, baseline.to_init),
                ratio(new.to_agent, baseline.to_agent)
            );
        }
    }
}

/// `new / baseline` of two medians.
fn ratio(new: Duration, baseline: Duration) -> f64 {
    new.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON)
}

/// Fetches the pinned runc package of `arch` (verified against the lock), and puts its runc into
/// `{dir}/runtime-bin/runc`; returns that runtime bin dir.
fn pinned_runc(sh: &Shell, arch: Arch, dir: &Path) -> Result<PathBuf> {
    let lock_path = util::project_root().join(CONTAINER_PACKAGES_LOCK);
    let hint = format!("re-resolve {CONTAINER_PACKAGES_LOCK} as its header says");
    let deb_arch = crate::arch_facts::of(arch).deb_arch;
    let entries = Lock::load(&lock_path, false)?.entries_for(deb_arch, &[RUNC_PACKAGE.to_owned()], &hint)?;
    let packages = debian::fetch_locked(sh, &entries, &hint)?;
    let contents = deb::unpack_deb(&packages[0]).with_context(|| format!("unpacking {}", entries[0].describe()))?;
    let runc = deb::resolve(&contents.entries, RUNC_IN_PACKAGE)
        .with_context(|| format!("{} has no {RUNC_IN_PACKAGE}", entries[0].describe()))?;
    let runtime_bin = dir.join("runtime-bin");
    std::fs::create_dir_all(&runtime_bin).with_context(|| format!("creating {}", runtime_bin.display()))?;
    let target = runtime_bin.join("runc");
    util::write_atomic(&target, runc.bytes)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", target.display()))?;
    Ok(runtime_bin)
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
    fn the_bench_agents_and_the_lock_exist() {
        for file in [BENCH_AGENT, CONTAINER_AGENT] {
            assert!(util::project_root().join(file).is_file(), "{file}");
        }
        let lock = Lock::load(&util::project_root().join(CONTAINER_PACKAGES_LOCK), false).unwrap();
        for deb_arch in ["amd64", "arm64"] {
            lock.entries_for(deb_arch, &[RUNC_PACKAGE.to_owned()], "hint").unwrap();
        }
    }
}
