//! Containers in the booted guest, both arches: the release's own containerd,
//! containerd-shim-runc-v2 and runc (the stack built from pinned Debian sources) go through the
//! product's chain (binaries fragment → `release --binaries-json` →
//! `merge-manifest` → CDN tree on nginx → `cargo xtask fetch --binaries` → runtime bin dir →
//! VirtioFS) into a guest booted from the kernel and rootfs that same fetch installed, where
//! `tests/fixtures/agent/container-agent.sh` checks iptables (every table, one rule per shipped
//! extension), the link types, cgroup v2, `runc run`, and containerd running a networked,
//! limited, seccomp-filtered container through `ctr` (the stack's, shared as a test tool). See
//! `containers_support` for the chain.

use std::time::Instant;

use boot_assets::Arch;

use crate::boot_support::{self as boot, Assets};
use crate::containers_support::{self as containers, CONTAINER_AGENT};
use crate::recipe;
use crate::support::{self, project_root};

/// Timeout of one container boot under TCG (measured: about 150 s on arm64).
const CONTAINER_BOOT_TIMEOUT_SECS: u64 = 600;

fn containers_run_in_the_guest(arch: Arch) {
    let started = Instant::now();
    boot::require_qemu(arch);
    let cdn = containers::container_cdn_tree();
    let dir = tempfile::tempdir().unwrap();
    let installed = containers::install_from_cdn(arch, &cdn, dir.path());
    let rules = recipe::extension_rules();
    let rules_file = dir.path().join("iptables-rules");
    std::fs::write(&rules_file, recipe::extension_rules_file(&rules)).unwrap();
    let vxlan_link = containers::vxlan_link_helper(arch, dir.path());
    // Booted as the runtime boots it: with the installed manifest's (verified-root) command line.
    let (cmdline, _) = boot::release_cmdline(&installed.rootfs, arch);
    let assets = Assets::Files {
        kernel: installed.kernel,
        rootfs: installed.rootfs,
        cmdline: Some(cmdline),
    };
    let agent = project_root().join(CONTAINER_AGENT);

    let _lock = boot::boot_lock();
    let mut command = boot::boot_command(arch, &assets, Some(&agent), CONTAINER_BOOT_TIMEOUT_SECS);
    command
        .arg("--runtime-bin")
        .arg(&installed.runtime_bin)
        .arg("--share-file")
        .arg(format!("test/iptables-rules={}", rules_file.display()))
        .arg("--share-file")
        .arg(format!("test/vxlan-link={}", vxlan_link.display()));
    for (name, path) in containers::test_tools(arch) {
        command
            .arg("--share-file")
            .arg(format!("test/{name}={}", path.display()));
    }
    let booted = boot::run_boot(&mut command);
    booted.assert_success();
    let console = booted.console();
    let expected: Vec<String> = boot::expected_checks(containers::CONTAINER_AGENT_EXPECTED)
        .into_iter()
        .chain(rules.iter().map(recipe::ExtensionRule::check_name))
        .collect();
    boot::assert_checks_ok(&format!("{arch} container"), &console, &expected, 40);
    assert!(console.contains("CHECKS DONE"), "{arch}: the agent did not finish");
    let report = booted.report();
    assert!(
        report.contains("kernel start → first container output: ") && !report.contains("first container output: never"),
        "{arch}: the boot report has no time to the first container output:\n{report}"
    );
    let extensions = rules
        .iter()
        .map(|rule| &rule.extension)
        .collect::<std::collections::BTreeSet<_>>();
    eprintln!(
        "{arch}: {} checks ok, {} iptables extensions exercised by {} rules; boot {:.1} s, test {:.1} s\n{report}",
        expected.len(),
        extensions.len(),
        rules.len(),
        booted.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

support::test_per_case!(containers_run_in_the_guest {
    containers_run_in_the_x86_64_guest: Arch::X86_64,
    containers_run_in_the_arm64_guest: Arch::Arm64,
});

#[test]
fn fetch_packages_refuses_a_bad_lock_naming_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join("packages.lock");
    let text = std::fs::read_to_string(project_root().join("tests/fixtures/containers/packages.lock")).unwrap();
    let sha256 = containers::locked_packages()[0].sha256.clone();
    std::fs::write(&lock, text.replacen(&sha256, "not-a-digest", 1)).unwrap();
    let output = dir.path().join("pool");
    let stderr = support::run_fails(
        support::xtask()
            .arg("fetch-packages")
            .arg("--lock")
            .arg(&lock)
            .arg("--output")
            .arg(&output),
    );
    assert!(stderr.contains(&format!("lock file {}", lock.display())), "{stderr}");
    assert!(
        stderr.contains("sha256 \"not-a-digest\" is not 64 lowercase hex digits"),
        "{stderr}"
    );
    assert!(!output.exists(), "nothing may be written");
}
