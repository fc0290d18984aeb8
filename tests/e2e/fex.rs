//! `cargo xtask fex` end to end on the FEX stand-in (`tests/fixtures/fex-standin`): the real
//! CMake + Ninja cross build, the ELF checks, staging and the binaries fragment. The real FEX
//! tree cannot be fetched here; the release workflow runs the same command on it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use boot_assets::{cdn, Arch, Binary};
use sha2::{Digest, Sha256};

use crate::support::{project_root, require_tool, run_fails, run_ok, xtask};

fn require_build_tools() {
    require_tool("cmake", "apt-get install -y cmake");
    require_tool("ninja", "apt-get install -y ninja-build");
    require_tool(
        "aarch64-linux-gnu-gcc",
        "apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
    );
}

fn read_fragment(path: &Path) -> Vec<Binary> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn standin_is_built_static_pie_staged_and_recorded() {
    require_build_tools();
    let file = require_tool("file", "apt-get install -y file");
    let work = tempfile::tempdir().unwrap();
    let fragment = work.path().join("binaries.json");
    // An existing fragment: dockerd stays, an older FEX is replaced.
    let existing = serde_json::json!([
        { "name": "FEX", "version": "old", "targets": { "arm64": { "path": "bin/FEX/old/arm64/FEX", "sha256": "0".repeat(64) } } },
        { "name": "dockerd", "version": "27.5.1", "targets": { "x86_64": { "path": "bin/dockerd/27.5.1/x86_64/dockerd", "sha256": "1".repeat(64) } } }
    ]);
    std::fs::write(&fragment, serde_json::to_vec(&existing).unwrap()).unwrap();
    let output = work.path().join("bin");
    run_ok(
        xtask()
            .arg("fex")
            .arg("--source")
            .arg(project_root().join("tests/fixtures/fex-standin"))
            .arg("--patches-dir")
            .arg(project_root().join("tests/fixtures/fex-patches"))
            .arg("--build-dir")
            .arg(work.path().join("build"))
            .arg("--output")
            .arg(&output)
            .arg("--binaries-json")
            .arg(&fragment)
            .args(["--ref", "FEX-2511"]),
    );

    let binaries = read_fragment(&fragment);
    let names: Vec<&str> = binaries.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["FEX", "dockerd"]);
    let fex = &binaries[0];
    assert!(
        fex.version.starts_with("FEX-2511+"),
        "unique version key: {}",
        fex.version
    );
    let entry = &fex.targets[&Arch::Arm64];
    assert_eq!(fex.targets.len(), 1);
    assert_eq!(entry.path, cdn::binary_path("FEX", &fex.version, Arch::Arm64));

    let staged = output.join(cdn::binary_relative_path("FEX", &fex.version, Arch::Arm64));
    let bytes = std::fs::read(&staged).unwrap();
    assert_eq!(entry.sha256, format!("{:x}", Sha256::digest(&bytes)));
    assert_eq!(std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777, 0o755);
    let description = String::from_utf8(run_ok(Command::new(file).arg("-b").arg(&staged)).stdout).unwrap();
    assert!(description.contains("ARM aarch64"), "{description}");
    assert!(description.contains("static-pie linked"), "{description}");
    // Both patches were applied, in name order (the second only applies on top of the first).
    let marker = b"FEX-STANDIN build: patched-1-then-2";
    assert!(
        bytes.windows(marker.len()).any(|w| w == marker),
        "patched marker missing"
    );
}

#[test]
fn dynamic_build_is_refused_naming_pt_interp() {
    require_build_tools();
    let work = tempfile::tempdir().unwrap();
    let fragment = work.path().join("binaries.json");
    let output = work.path().join("bin");
    let stderr = run_fails(
        xtask()
            .arg("fex")
            .arg("--source")
            .arg(project_root().join("tests/fixtures/fex-standin"))
            .arg("--build-dir")
            .arg(work.path().join("build"))
            .arg("--output")
            .arg(&output)
            .arg("--binaries-json")
            .arg(&fragment)
            .args(["--version", "dyn", "--cmake-define", "CMAKE_EXE_LINKER_FLAGS=-pie"]),
    );
    assert!(stderr.contains("refusing to stage FEX"), "{stderr}");
    assert!(stderr.contains("PT_INTERP \"/lib/ld-linux-aarch64.so.1\""), "{stderr}");
    assert!(!output.exists(), "nothing may be staged");
    assert!(!fragment.exists(), "the fragment must not be written");
}
