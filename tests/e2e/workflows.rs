//! The GitHub Actions workflows pass actionlint (which also runs shellcheck on their `run:`
//! scripts); every step that does work is one `cargo xtask` line (setup steps listed explicitly);
//! CI runs the suite privileged; unpinned binaries are pinned by a reviewed workflow.

use crate::support::{project_root, require_tool, run_ok};

fn workflow_files() -> Vec<std::path::PathBuf> {
    let dir = project_root().join(".github/workflows");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_workflow_passes_actionlint() {
    require_tool("actionlint");
    let files = workflow_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["ci.yml", "live-e2e.yml", "release.yml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing workflow {expected}: {names:?}"
        );
    }
    run_ok(
        std::process::Command::new("actionlint")
            .arg("-no-color")
            .args(&files)
            .current_dir(project_root()),
    );
}

/// Setup steps that are not `cargo xtask` commands, each with why it cannot be one: the bare
/// container has neither git (checkout) nor curl (rustup) nor a C linker (cargo) until they run.
const SETUP_COMMANDS: [&str; 1] =
    ["apt-get update && apt-get install -y --no-install-recommends git curl ca-certificates build-essential"];

/// Actions a step may use: checkout, the Rust toolchain, caches and artifacts move files between
/// jobs; create-pull-request proposes the pinning diff (it runs no build step of ours).
const SETUP_ACTIONS: [&str; 6] = [
    "actions/checkout",
    "dtolnay/rust-toolchain",
    "actions/cache",
    "actions/upload-artifact",
    "actions/download-artifact",
    "peter-evans/create-pull-request",
];

/// Shell syntax that would make one `run:` line several commands.
const CHAINING: [&str; 7] = ["&&", "||", ";", "|", "`", "$(", "\n"];

/// Every step of a workflow text that does work without being one `cargo xtask` line, or uses an
/// action that is not in [`SETUP_ACTIONS`].
fn step_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let item = line.trim_start();
        let item = item.strip_prefix("- ").unwrap_or(item);
        if let Some(command) = item.strip_prefix("run:") {
            let command = command.trim();
            let one_xtask_line = command
                .strip_prefix("cargo xtask ")
                .is_some_and(|rest| !CHAINING.iter().any(|c| rest.contains(c)));
            if !(one_xtask_line || command == "bash .ci/run" || SETUP_COMMANDS.contains(&command)) {
                problems.push(format!(
                    "line {}: step `{command}` is not one `cargo xtask` line (a block scalar, a chain, or another \
                     command): make it an xtask command, or list a setup step in SETUP_COMMANDS with why",
                    number + 1
                ));
            }
        } else if let Some(action) = item.strip_prefix("uses:") {
            let action = action.trim();
            let name = action.split('@').next().unwrap_or(action);
            if !SETUP_ACTIONS.contains(&name) || !action.contains('@') {
                problems.push(format!(
                    "line {}: action `{action}` is not a listed setup action (SETUP_ACTIONS), or is unversioned",
                    number + 1
                ));
            }
        }
    }
    problems
}

#[test]
fn every_workflow_step_that_does_work_is_one_cargo_xtask_line() {
    let files = workflow_files();
    assert!(
        files.len() >= 4,
        "expected ci, live-e2e, pin-binaries and release: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let problems = step_problems(&text);
        assert!(problems.is_empty(), "{}:\n{}", file.display(), problems.join("\n"));
        assert!(text.contains("run: "), "{}: no step runs anything", file.display());
    }
}

#[test]
fn the_step_check_catches_chains_blocks_other_commands_and_unlisted_actions() {
    let bad = "steps:\n\
               \x20 - run: cargo xtask kernel --arch arm64 && cargo xtask rootfs --arch arm64\n\
               \x20 - run: |\n\
               \x20     make all\n\
               \x20 - run: bash build.sh\n\
               \x20 - uses: someone/do-everything@v1\n\
               \x20 - uses: actions/checkout\n\
               \x20 - run: cargo xtask dist --version 0.2.0\n\
               \x20 - uses: actions/checkout@v5\n";
    let problems = step_problems(bad);
    let lines: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
    assert_eq!(
        lines,
        ["line 2", "line 3", "line 5", "line 6", "line 7"],
        "{problems:#?}"
    );
}

/// Reads the repository file `path` and asserts it contains each `(needle, why)` needle, failing
/// with the file and why; returns the text for further checks.
fn assert_file_contains(path: &str, needles: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(project_root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    for (needle, why) in needles {
        assert!(text.contains(needle), "{path}: {why} (no `{needle}`)");
    }
    text
}

#[test]
fn ci_runs_the_suite_privileged_and_lets_xtask_test_choose_kvm() {
    // The suite needs namespaces, mounts and virtiofsd's sandbox: an unprivileged container refuses them.
    assert_file_contains(
        ".github/workflows/ci.yml",
        &[
            ("options: --privileged", "ci.yml must run its container privileged"),
            ("run: bash .ci/run", "ci.yml must run .ci/run"),
        ],
    );
    assert_file_contains(
        ".ci/run",
        &[("exec cargo xtask test", ".ci/run must run `cargo xtask test`")],
    );
}

#[test]
fn unpinned_binaries_are_pinned_by_a_workflow_the_release_refusal_names() {
    assert_file_contains(
        ".github/workflows/pin-binaries.yml",
        &[
            ("workflow_dispatch:", "pin-binaries must be dispatchable by hand"),
            (
                "paths: [manifests/binaries-docker-static.toml]",
                "pin-binaries must run on binaries.toml changes",
            ),
            (
                "run: cargo xtask sync-binaries --pin ",
                "pin-binaries must run sync-binaries --pin",
            ),
            (
                "uses: peter-evans/create-pull-request@",
                "pin-binaries must propose a pull request",
            ),
            (
                "add-paths: manifests/binaries-docker-static.toml",
                "the pull request carries the pinned file only",
            ),
        ],
    );

    // The release workflow never pins: its sync-binaries step runs without --pin ...
    let release = std::fs::read_to_string(project_root().join(".github/workflows/release.yml")).unwrap();
    let sync_steps: Vec<&str> = release
        .lines()
        .filter(|l| l.contains("cargo xtask sync-binaries"))
        .collect();
    assert!(
        !sync_steps.is_empty() && sync_steps.iter().all(|l| !l.contains("--pin")),
        "{sync_steps:?}"
    );

    // ... and the refusal it then prints (the real command, offline: it refuses before downloading)
    // names the workflow that pins.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("binaries.toml");
    std::fs::write(
        &config,
        "[[binary]]\nname = \"tool\"\nversion = \"1.0\"\n[binary.source.x86_64]\nformat = \"binary\"\n\
         url = \"http://127.0.0.1:9/tool\"\nsha256 = \"\"\n",
    )
    .unwrap();
    let err = crate::support::run_fails(
        crate::support::xtask()
            .args(["sync-binaries", "--arch", "x86_64", "--config"])
            .arg(&config)
            .arg("--output")
            .arg(work.path().join("bin")),
    );
    assert!(err.contains("no sha256 pinned for tool (x86_64)"), "{err}");
    assert!(
        err.contains("run the pin-binaries workflow (.github/workflows/pin-binaries.yml)"),
        "{err}"
    );
    assert!(!work.path().join("bin").exists(), "a refusal staged something");
}
