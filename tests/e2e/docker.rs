//! Docker's engine in the booted guest, both arches, with the release's own binaries: the stack
//! built from pinned Debian sources goes through the product's chain (see `containers_support`)
//! into a guest booted from the kernel and rootfs the same `cargo xtask fetch` installed, where
//! `tests/fixtures/agent/docker-agent.sh` starts containerd and dockerd as the runtime does
//! (`--containerd=… --data-root /var/lib/docker --userland-proxy=false`, state on a btrfs disk,
//! cgroup v2) and checks `docker load` of an image built here, `docker run`, the default bridge,
//! a port published through 127.0.0.1, name resolution on a user network, `--memory` and
//! `--pids-limit`, `docker exec`, `docker stop` within 15 s, docker-init, and containerd's overlay
//! snapshotter with `index=on,nfs_export=on` (our fix). Also: every staged runtime binary is static
//! by the real `readelf`.

use std::process::Command;
use std::time::Instant;

use boot_assets::Arch;

use crate::boot_support::{self as boot, Assets};
use crate::containers_support as containers;
use crate::support::{self, project_root};

/// The agent that checks Docker from inside the guest.
const DOCKER_AGENT: &str = "tests/fixtures/agent/docker-agent.sh";

/// Its checks, one a line.
const DOCKER_AGENT_EXPECTED: &str = "tests/fixtures/agent/docker-agent.expected";

/// Timeout of one Docker boot under TCG.
const DOCKER_BOOT_TIMEOUT_SECS: u64 = 1500;

fn docker_runs_in_the_guest(arch: Arch) {
    let started = Instant::now();
    boot::require_qemu(arch);
    let cdn = containers::container_cdn_tree();
    let dir = tempfile::tempdir().unwrap();
    let installed = containers::install_from_cdn(arch, &cdn, dir.path());
    let image = containers::test_image(arch, dir.path());
    let (cmdline, _) = boot::release_cmdline(&installed.rootfs, arch);
    let assets = Assets::Files {
        kernel: installed.kernel,
        rootfs: installed.rootfs,
        cmdline: Some(cmdline),
    };
    let agent = project_root().join(DOCKER_AGENT);

    let _lock = boot::boot_lock();
    let mut command = boot::boot_command(arch, &assets, Some(&agent), DOCKER_BOOT_TIMEOUT_SECS);
    command
        .arg("--runtime-bin")
        .arg(&installed.runtime_bin)
        .arg("--share-file")
        .arg(format!("test/image.tar={}", image.display()));
    for (name, path) in containers::test_tools(arch) {
        command
            .arg("--share-file")
            .arg(format!("test/{name}={}", path.display()));
    }
    let booted = boot::run_boot(&mut command);
    let console = booted.console();
    let expected = boot::expected_checks(DOCKER_AGENT_EXPECTED);
    boot::assert_checks_ok(&format!("{arch} Docker"), &console, &expected, 60);
    booted.assert_success();
    assert!(console.contains("CHECKS DONE"), "{arch}: the agent did not finish");
    let report = booted.report();
    assert!(
        report.contains("kernel start → first container output: ") && !report.contains("first container output: never"),
        "{arch}: the boot report has no time to the first docker run output:\n{report}"
    );
    eprintln!(
        "{arch}: {} Docker checks ok; boot {:.1} s, test {:.1} s\n{report}\n{}",
        expected.len(),
        booted.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        console
            .lines()
            .filter(|line| line.starts_with("CHECK "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

support::test_per_case!(docker_runs_in_the_guest {
    docker_runs_in_the_x86_64_guest: Arch::X86_64,
    docker_runs_in_the_arm64_guest: Arch::Arm64,
});

/// `readelf` (binutils) finds no `PT_INTERP` and no `DT_NEEDED` in any runtime binary the
/// default config stages, for either arch, and each is an ELF of its arch.
#[test]
fn readelf_finds_every_staged_runtime_binary_static_and_of_its_arch() {
    support::require_tool("readelf");
    let cdn = containers::container_cdn_tree();
    let fragment: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cdn.parent().unwrap().join("dist/bin/binaries.json")).unwrap()).unwrap();
    let binaries = fragment.as_array().expect("the fragment is a list");
    let mut seen = Vec::new();
    for binary in binaries {
        let name = binary["name"].as_str().unwrap();
        for arch in Arch::ALL {
            let path = cdn.parent().unwrap().join("dist/bin").join(
                binary["targets"][arch.as_str()]["path"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("bin/"),
            );
            let headers = support::run_ok(Command::new("readelf").args(["-h", "-l", "-d", "-W"]).arg(&path));
            let text = String::from_utf8_lossy(&headers.stdout);
            assert!(!text.contains("INTERP"), "{}: has PT_INTERP\n{text}", path.display());
            assert!(!text.contains("(NEEDED)"), "{}: has DT_NEEDED\n{text}", path.display());
            let machine = match arch {
                Arch::X86_64 => "Advanced Micro Devices X86-64",
                Arch::Arm64 => "AArch64",
            };
            assert!(text.contains(machine), "{}: not {machine}\n{text}", path.display());
            seen.push(format!("{name} ({arch})"));
        }
    }
    assert_eq!(seen.len(), containers::PROGRAMS.len() * 2, "{seen:?}");
}
