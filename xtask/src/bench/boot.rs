//! `cargo xtask bench boot`: boots each arch N times from the plain EROFS image (the old root)
//! and N times from the verified root (that image with its dm-verity hash tree, booted with the
//! release's command line), alternating, and prints the median kernel start → /sbin/init,
//! /sbin/init → agent, kernel start → agent and kernel start → first container output times of
//! each, the verified / plain ratios and the image growth.
//!
//! Builds what it boots unless `--kernel`/`--rootfs` names it: the kernel through the kernel
//! cache (as `cargo xtask kernel` does) and the rootfs from the pinned recipe (as `cargo xtask
//! rootfs` does, into build/{arch}/rootfs.erofs); the verified image is made from it by the
//! release's verity stage into a temporary directory. Reads the agent fixture
//! tests/fixtures/agent/container-agent.sh in its first-container-only mode, with runc from
//! `--runtime-bin` or the release's own (the stack of manifests/stack.toml, built or cached as
//! `cargo xtask stack` does); with `--docker`, tests/fixtures/agent/docker-agent.sh in the same
//! mode (containerd and dockerd of the stack, the first `docker run`) — or, with `--no-containers`,
//! tests/fixtures/agent/hello-agent.sh. Writes nothing but temporary files and the report on
//! stdout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use xshell::Shell;

use crate::boot::qemu::{self, Accel, VmSpec};
use crate::rootfs;
use crate::{boot, flags, kernel, util, verity};

/// The agent of a `--no-containers` boot: it prints one line and powers off.
const BENCH_AGENT: &str = "tests/fixtures/agent/hello-agent.sh";

/// The agent of a container boot; the share file below makes it stop after one container.
const CONTAINER_AGENT: &str = "tests/fixtures/agent/container-agent.sh";

/// The agent of a `--docker` boot, with the release's five runtime binaries and the stack's
/// clients the agent drives them with.
const DOCKER_AGENT: &str = "tests/fixtures/agent/docker-agent.sh";
const DOCKER_RUNTIME_BINARIES: [&str; 5] = [
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker-init",
];
const DOCKER_CLIENTS: [&str; 2] = ["docker", "ctr"];

/// The share file that puts the container agents in their first-container-only mode.
const FIRST_CONTAINER_ONLY: &str = "test/first-container-only";

/// The medians of one arch: the plain root, the verified root, and the image sizes.
struct ArchReport {
    arch: Arch,
    plain: Medians,
    verified: Medians,
    verity: verity::VerityRoot,
}

/// The median times of one way of booting.
struct Medians {
    to_init: Duration,
    to_agent: Duration,
    to_container: Option<Duration>,
}

impl Medians {
    /// Kernel start → the agent's first line (kernel clock to init, then host clock).
    fn kernel_to_agent(&self) -> Duration {
        self.to_init + self.to_agent
    }
}

/// One way of booting the same kernel and EROFS image.
struct Variant {
    name: &'static str,
    rootfs: PathBuf,
    cmdline: String,
}

/// The times of every boot of one variant.
#[derive(Default)]
struct Samples {
    to_init: Vec<Duration>,
    to_agent: Vec<Duration>,
    to_container: Vec<Duration>,
}

impl Samples {
    fn medians(mut self) -> Medians {
        Medians {
            to_init: median(&mut self.to_init),
            to_agent: median(&mut self.to_agent),
            to_container: (!self.to_container.is_empty()).then(|| median(&mut self.to_container)),
        }
    }
}

impl flags::BenchBoot {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let arches: Vec<Arch> = if self.arch.is_empty() {
            vec![Arch::Arm64, Arch::X86_64]
        } else {
            self.arch.iter().map(|&a| a.into()).collect()
        };
        if (self.kernel.is_some() || self.rootfs.is_some() || self.runtime_bin.is_some()) && arches.len() != 1 {
            bail!("--kernel, --rootfs and --runtime-bin name one arch's files: pass exactly one --arch with them");
        }
        if self.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let mut report = Vec::new();
        for arch in arches {
            report.push(self.bench_arch(sh, arch)?);
        }
        self.print_report(&report);
        Ok(())
    }

    /// Builds (or takes) what `arch` boots, then boots the plain and the verified root
    /// `--runs` times each, alternating.
    fn bench_arch(&self, sh: &Shell, arch: Arch) -> Result<ArchReport> {
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
        let share = tempfile::tempdir().context("creating the share directory")?;
        let scratch = tempfile::tempdir().context("creating a temporary directory")?;
        self.prepare_share(sh, arch, share.path(), scratch.path())?;
        let verified_rootfs = scratch.path().join("rootfs.verified.erofs");
        let verity = verity::apply(sh, &rootfs, &verified_rootfs)?;
        let plain_cmdline = arch.default_kernel_cmdline().to_owned();
        let variants = [
            Variant {
                name: "plain",
                rootfs: rootfs.clone(),
                cmdline: plain_cmdline.clone(),
            },
            Variant {
                name: "verified",
                rootfs: verified_rootfs,
                cmdline: verity::verified_cmdline(&plain_cmdline, &verity)?,
            },
        ];
        let mut samples = [Samples::default(), Samples::default()];
        for run_index in 1..=self.runs {
            for (variant, samples) in variants.iter().zip(samples.iter_mut()) {
                let spec = VmSpec {
                    arch,
                    accel: Accel::Tcg,
                    qemu: self.qemu.clone(),
                    kernel: kernel.clone(),
                    rootfs: variant.rootfs.clone(),
                    cmdline: variant.cmdline.clone(),
                    share: share.path().to_path_buf(),
                    disks: Vec::new(),
                    shares: Vec::new(),
                    timeout: Duration::from_secs(self.timeout),
                    stream_console: false,
                    forward_stdin: false,
                    forward_tcp: None,
                };
                let (init, agent, container) = self.one_boot(&spec, variant.name, run_index)?;
                samples.to_init.push(init);
                samples.to_agent.push(agent);
                samples.to_container.extend(container);
            }
        }
        let [plain, verified] = samples;
        Ok(ArchReport {
            arch,
            plain: plain.medians(),
            verified: verified.medians(),
            verity,
        })
    }

    /// The share of every boot of `arch`: the container agent with runc in its first-container-only
    /// mode, or the hello agent with `--no-containers`.
    fn prepare_share(&self, sh: &Shell, arch: Arch, share: &Path, scratch: &Path) -> Result<()> {
        if self.no_containers {
            return boot::prepare_share(share, Some(&util::project_root().join(BENCH_AGENT)), None, &[]);
        }
        let marker = scratch.join("first-container-only");
        std::fs::write(&marker, b"").with_context(|| format!("writing {}", marker.display()))?;
        if self.docker {
            let runtime_bin = scratch.join("runtime-bin");
            std::fs::create_dir_all(&runtime_bin).with_context(|| format!("creating {}", runtime_bin.display()))?;
            for name in DOCKER_RUNTIME_BINARIES {
                let built = crate::stack::built_output(sh, name, arch)?;
                let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
                util::write_executable_atomic(&runtime_bin.join(name), &bytes)?;
            }
            let mut files = vec![(PathBuf::from(FIRST_CONTAINER_ONLY), marker)];
            for tool in DOCKER_CLIENTS {
                files.push((
                    PathBuf::from("test").join(tool),
                    crate::stack::built_output(sh, tool, arch)?,
                ));
            }
            return boot::prepare_share(
                share,
                Some(&util::project_root().join(DOCKER_AGENT)),
                Some(&runtime_bin),
                &files,
            );
        }
        let runtime_bin = match &self.runtime_bin {
            Some(dir) => dir.clone(),
            None => stack_runc(sh, arch, scratch)?,
        };
        if !runtime_bin.join("runc").is_file() {
            bail!("--runtime-bin {}: it holds no runc", runtime_bin.display());
        }
        boot::prepare_share(
            share,
            Some(&util::project_root().join(CONTAINER_AGENT)),
            Some(&runtime_bin),
            &[(PathBuf::from(FIRST_CONTAINER_ONLY), marker)],
        )
    }

    /// One timed boot: kernel → init, init → agent and (with containers) kernel → first container output.
    fn one_boot(&self, spec: &VmSpec, variant: &str, run_index: u32) -> Result<(Duration, Duration, Option<Duration>)> {
        let arch = spec.arch;
        let run_index = format!("{variant} {run_index}");
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
            "bench boot {arch} {run_index}/{}: kernel → init {:.3} s, init → agent {:.3} s{}, total {:.2} s",
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
        let container_header = match (self.no_containers, self.docker) {
            (true, _) => "",
            (false, true) => "  kernel start → first docker run output",
            (false, false) => "  kernel start → first container output",
        };
        println!(
            "arch     root      runs  kernel start → /sbin/init  /sbin/init → agent  kernel start → agent{container_header}"
        );
        for row in report {
            for (name, medians) in [("plain", &row.plain), ("verified", &row.verified)] {
                println!(
                    "{:<8} {name:<8} {:>5}  {:>22.3} s  {:>16.3} s  {:>18.3} s{}",
                    row.arch.as_str(),
                    self.runs,
                    medians.to_init.as_secs_f64(),
                    medians.to_agent.as_secs_f64(),
                    medians.kernel_to_agent().as_secs_f64(),
                    medians
                        .to_container
                        .map(|c| format!(
                            "  {:>width$.3} s",
                            c.as_secs_f64(),
                            width = container_header.chars().count() - 4
                        ))
                        .unwrap_or_default()
                );
            }
        }
        for row in report {
            println!("{}", verdict_line(row));
        }
    }
}

/// The verified / plain comparison of one arch: kernel start → agent (the target is at most
/// 5% slower), kernel start → first container output, and the image growth.
fn verdict_line(row: &ArchReport) -> String {
    let ratio = |verified: Duration, plain: Duration| verified.as_secs_f64() / plain.as_secs_f64();
    let agent = ratio(row.verified.kernel_to_agent(), row.plain.kernel_to_agent());
    let container = match (row.verified.to_container, row.plain.to_container) {
        (Some(verified), Some(plain)) => {
            format!(", kernel start → first container output {:.3}×", ratio(verified, plain))
        }
        _ => String::new(),
    };
    let (data, tree) = (row.verity.data_bytes(), row.verity.tree_bytes());
    format!(
        "{}: verified / plain kernel start → agent {agent:.3}× ({}, target ≤ 1.05×){container}; image {data} → {} bytes \
         (+{tree} bytes of hash tree, +{:.2}%)",
        row.arch.as_str(),
        if agent <= 1.05 { "within" } else { "OVER" },
        data + tree,
        100.0 * tree as f64 / data as f64
    )
}

/// The release's runc for `arch` (the stack's build, cached) in `{dir}/runtime-bin/runc`; returns
/// that runtime bin dir.
fn stack_runc(sh: &Shell, arch: Arch, dir: &Path) -> Result<PathBuf> {
    let runc = crate::stack::built_output(sh, "runc", arch)?;
    let runtime_bin = dir.join("runtime-bin");
    std::fs::create_dir_all(&runtime_bin).with_context(|| format!("creating {}", runtime_bin.display()))?;
    let target = runtime_bin.join("runc");
    let bytes = std::fs::read(&runc).with_context(|| format!("reading {}", runc.display()))?;
    util::write_executable_atomic(&target, &bytes)?;
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
    fn the_bench_agents_exist() {
        for file in [BENCH_AGENT, CONTAINER_AGENT, DOCKER_AGENT] {
            assert!(util::project_root().join(file).is_file(), "{file}");
        }
    }
}
