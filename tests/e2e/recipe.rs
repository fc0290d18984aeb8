//! What the checked-in recipe and kernel lists say, read with the `toml` crate for the guest
//! checks: the iptables extensions the rootfs ships (`manifests/rootfs.toml`, package iptables,
//! its xtables `dirs` → `names`), each one's kernel options and rules
//! (`manifests/kernel/iptables-extensions.toml`), and the container-host requirement lists
//! (`manifests/kernel/requirements.toml`). Reads only those files.

use std::collections::{BTreeMap, BTreeSet};

use boot_assets::Arch;
use serde::Deserialize;

use crate::support::project_root;

/// The rootfs recipe's package that ships the iptables extensions.
const IPTABLES_PACKAGE: &str = "iptables";

#[derive(Deserialize)]
struct Recipe {
    package: Vec<RecipePackage>,
}

#[derive(Deserialize)]
struct RecipePackage {
    name: String,
    #[serde(default)]
    dirs: Vec<RecipeDir>,
}

#[derive(Deserialize)]
struct RecipeDir {
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize)]
struct Extensions {
    extension: BTreeMap<String, Extension>,
}

/// One extension's entry in iptables-extensions.toml.
#[derive(Deserialize)]
struct Extension {
    options: Vec<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
}

#[derive(Deserialize)]
struct Requirements {
    list: Vec<RequirementList>,
}

#[derive(Deserialize)]
struct RequirementList {
    options: Vec<String>,
    arch: Option<String>,
}

fn read_toml<T: serde::de::DeserializeOwned>(relative: &str) -> T {
    let path = project_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The extension file names the rootfs ships, in recipe order.
pub fn shipped_extensions() -> Vec<String> {
    let recipe: Recipe = read_toml("manifests/rootfs.toml");
    let names: Vec<String> = recipe
        .package
        .iter()
        .filter(|package| package.name == IPTABLES_PACKAGE)
        .flat_map(|package| package.dirs.iter().flat_map(|dir| dir.names.iter().cloned()))
        .collect();
    assert!(
        !names.is_empty(),
        "manifests/rootfs.toml: package {IPTABLES_PACKAGE} lists no extension names"
    );
    names
}

fn extensions() -> Extensions {
    read_toml("manifests/kernel/iptables-extensions.toml")
}

/// One rule that uses one extension, for iptables (`ipv4`) or ip6tables (`ipv6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRule {
    pub extension: String,
    pub family: &'static str,
    pub arguments: String,
}

impl ExtensionRule {
    /// The guest check that reports this rule.
    pub fn check_name(&self) -> String {
        format!("ext/{}/{}", self.extension, self.family)
    }
}

/// Every rule of every shipped extension, in recipe order; an extension without an entry or
/// without any rule is a panic naming it (the kernel build refuses the first already).
pub fn extension_rules() -> Vec<ExtensionRule> {
    let entries = extensions().extension;
    let mut rules = Vec::new();
    for extension in shipped_extensions() {
        let entry = entries.get(&extension).unwrap_or_else(|| {
            panic!(
                "manifests/rootfs.toml ships {extension}, which has no [extension.\"{extension}\"] in \
                 manifests/kernel/iptables-extensions.toml"
            )
        });
        let before = rules.len();
        for (family, arguments) in [("ipv4", &entry.ipv4), ("ipv6", &entry.ipv6)] {
            if let Some(arguments) = arguments {
                assert!(
                    !arguments.contains(['"', '\'', '\\', '$']) && !arguments.contains('\n'),
                    "{extension} {family}: the agent splits rules on spaces; quotes, `$` and `\\` do not survive: {arguments}"
                );
                rules.push(ExtensionRule {
                    extension: extension.clone(),
                    family,
                    arguments: arguments.clone(),
                });
            }
        }
        assert!(
            rules.len() > before,
            "manifests/kernel/iptables-extensions.toml: {extension} has neither an ipv4 nor an ipv6 rule"
        );
    }
    rules
}

/// The rules file the container agent reads: `EXTENSION FAMILY ARGUMENTS…` per line.
pub fn extension_rules_file(rules: &[ExtensionRule]) -> String {
    rules
        .iter()
        .map(|rule| format!("{} {} {}\n", rule.extension, rule.family, rule.arguments))
        .collect()
}

/// Every option (without `CONFIG_`) that must be `=y` in `arch`'s kernel: the requirement lists
/// that apply to the arch, and the kernel side of every shipped extension.
pub fn required_options(arch: Arch) -> BTreeSet<String> {
    let requirements: Requirements = read_toml("manifests/kernel/requirements.toml");
    let mut options: BTreeSet<String> = requirements
        .list
        .into_iter()
        .filter(|list| list.arch.as_deref().map_or(true, |only| only == arch.as_str()))
        .flat_map(|list| list.options)
        .collect();
    let entries = extensions().extension;
    for extension in shipped_extensions() {
        if let Some(entry) = entries.get(&extension) {
            options.extend(entry.options.iter().cloned());
        }
    }
    options
}

#[test]
fn every_shipped_extension_has_a_rule_and_options() {
    let rules = extension_rules();
    let covered: BTreeSet<&str> = rules.iter().map(|rule| rule.extension.as_str()).collect();
    assert_eq!(covered.len(), shipped_extensions().len());
    assert!(rules.iter().any(|rule| rule.family == "ipv6"));
    for arch in Arch::ALL {
        let options = required_options(arch);
        assert!(
            options.contains("IP_NF_RAW") && options.contains("VXLAN"),
            "{options:?}"
        );
    }
    assert!(required_options(Arch::Arm64).contains("RTC_DRV_PL031"));
    assert!(!required_options(Arch::X86_64).contains("RTC_DRV_PL031"));
}
