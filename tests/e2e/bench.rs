//! `cargo xtask bench boot` builds what it boots: with no `--kernel`/`--rootfs` it takes the
//! kernel from the kernel cache and builds `build/{arch}/rootfs.erofs` from the pinned recipe,
//! then boots it from the plain image and as the verified root, and prints the medians table
//! and the verified / plain comparison.

use std::time::SystemTime;

use crate::support::{project_root, run_ok, xtask};

#[test]
fn bench_boot_builds_the_rootfs_it_boots_and_prints_the_table() {
    let started = SystemTime::now();
    let output = run_ok(xtask().args(["bench", "boot", "--arch", "x86_64", "--runs", "1", "--no-containers"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let image = project_root().join("build/x86_64/rootfs.erofs");
    let modified = std::fs::metadata(&image)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}\nstderr:\n{stderr}", image.display()));
    assert!(
        modified >= started,
        "bench boot did not build {} (it is older than the run)\nstderr:\n{stderr}",
        image.display()
    );
    for root in ["plain", "verified"] {
        assert!(
            stderr.contains(&format!("bench boot x86_64 {root} 1/1: kernel → init")),
            "{stderr}"
        );
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("x86_64   {root} ")))
            .unwrap_or_else(|| panic!("no x86_64 {root} row in the table:\n{stdout}"));
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[2], "1", "the row counts one run: {row}");
        for seconds in [fields[3], fields[5], fields[7]] {
            let value: f64 = seconds
                .parse()
                .unwrap_or_else(|_| panic!("not a time: {seconds} in {row}"));
            assert!(value > 0.0 && value < 120.0, "implausible time {value} in {row}");
        }
    }
    let verdict = stdout
        .lines()
        .find(|line| line.starts_with("x86_64: verified / plain kernel start → agent "))
        .unwrap_or_else(|| panic!("no verified / plain line:\n{stdout}"));
    assert!(verdict.contains("bytes of hash tree"), "{verdict}");
}
