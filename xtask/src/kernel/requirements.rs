//! What a container host's kernel must have: the checked-in requirement lists and the kernel side
//! of the rootfs's iptables extensions, turned into options that are merged into the
//! configuration and checked against the final `.config` like the fragments.
//!
//! Reads `manifests/kernel/requirements.toml` (named lists, each with its source), the
//! extension table `manifests/kernel/iptables-extensions.toml`, and the extension names the
//! rootfs recipe ships (so the kernel and the rootfs cannot drift apart). Pure functions over
//! their text, plus one loader; writes nothing (the build writes the generated fragment).

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use boot_assets::Arch;
use serde::Deserialize;

use super::fragment::FragmentOption;
use crate::rootfs::recipe::Recipe;
use crate::util;

/// The requirement lists, relative to the repository root.
pub const REQUIREMENTS_PATH: &str = "manifests/kernel/requirements.toml";

/// The kernel side of each iptables extension, relative to the repository root.
pub const IPTABLES_EXTENSIONS_PATH: &str = "manifests/kernel/iptables-extensions.toml";

/// The rootfs recipe, whose iptables extension list the kernel must serve.
const ROOTFS_RECIPE_PATH: &str = "manifests/rootfs.toml";

/// `manifests/kernel/requirements.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    #[serde(rename = "list")]
    pub lists: Vec<RequirementList>,
}

/// One named list of options that must be `=y`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementList {
    pub name: String,
    /// Where the list comes from (a script, a project, a platform).
    pub source: String,
    /// Only for this arch, when given.
    #[serde(default)]
    pub arch: Option<String>,
    /// Kconfig symbols without their `CONFIG_` prefix.
    pub options: Vec<String>,
}

/// `manifests/kernel/iptables-extensions.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtensionTable {
    /// Keyed by the extension's file name (`libxt_physdev.so`), as the rootfs recipe names it.
    pub extension: BTreeMap<String, Extension>,
}

/// The kernel side of one iptables extension, and the rules the boot test applies with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    pub options: Vec<String>,
    /// Arguments for iptables.
    #[serde(default)]
    pub ipv4: Option<String>,
    /// Arguments for ip6tables.
    #[serde(default)]
    pub ipv6: Option<String>,
}

impl Requirements {
    /// Parses and validates the lists: unique names, known arches, symbols without the prefix.
    pub fn parse(text: &str) -> Result<Requirements> {
        let requirements: Requirements =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        let mut names = std::collections::BTreeSet::new();
        for list in &requirements.lists {
            ensure!(names.insert(list.name.as_str()), "list {} is defined twice", list.name);
            ensure!(!list.source.trim().is_empty(), "list {}: `source` is empty", list.name);
            if let Some(arch) = &list.arch {
                ensure!(
                    arch.parse::<Arch>().is_ok(),
                    "list {}: arch {arch:?} is neither arm64 nor x86_64",
                    list.name
                );
            }
            for option in &list.options {
                check_symbol(option).with_context(|| format!("list {}", list.name))?;
            }
        }
        Ok(requirements)
    }
}

impl ExtensionTable {
    /// Parses and validates the table: every entry has options and at least one rule.
    pub fn parse(text: &str) -> Result<ExtensionTable> {
        let table: ExtensionTable =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        for (name, extension) in &table.extension {
            ensure!(!extension.options.is_empty(), "extension {name}: `options` is empty");
            ensure!(
                extension.ipv4.is_some() || extension.ipv6.is_some(),
                "extension {name}: give an `ipv4` or `ipv6` rule that uses it"
            );
            for option in &extension.options {
                check_symbol(option).with_context(|| format!("extension {name}"))?;
            }
        }
        Ok(table)
    }
}

/// A symbol as the lists write it: upper case, digits and `_`, without `CONFIG_`.
fn check_symbol(option: &str) -> Result<()> {
    if option.starts_with("CONFIG_") {
        bail!("option {option}: write it without the CONFIG_ prefix");
    }
    ensure!(
        !option.is_empty()
            && option
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
        "option {option:?} is not a Kconfig symbol"
    );
    Ok(())
}

/// Every option `arch` requires, as `=y` fragment options whose origin names each list (and
/// extension) that asks for it. `extensions` are the extension file names the rootfs ships; one
/// without an entry in `table` is an error naming the table to extend.
pub fn required_options(
    arch: Arch,
    requirements: &Requirements,
    table: &ExtensionTable,
    extensions: &[String],
) -> Result<Vec<FragmentOption>> {
    let missing: Vec<&str> = extensions
        .iter()
        .filter(|name| !table.extension.contains_key(*name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the rootfs recipe ({ROOTFS_RECIPE_PATH}) ships iptables extensions that \
             {IPTABLES_EXTENSIONS_PATH} does not describe: {}. Add each with the kernel options it \
             needs and a rule that uses it.",
            missing.join(", ")
        );
    }
    // Option → the lists asking for it, in first-asked order.
    let mut asked: Vec<(String, Vec<String>)> = Vec::new();
    let mut ask = |option: &str, by: String| match asked.iter_mut().find(|(name, _)| name == option) {
        Some((_, lists)) => lists.push(by),
        None => asked.push((option.to_owned(), vec![by])),
    };
    for list in &requirements.lists {
        if list.arch.as_deref().is_some_and(|only| only != arch.as_str()) {
            continue;
        }
        for option in &list.options {
            ask(option, format!("list {} in {REQUIREMENTS_PATH}", list.name));
        }
    }
    for name in extensions {
        for option in &table.extension[name].options {
            ask(
                option,
                format!("iptables extension {name} in {IPTABLES_EXTENSIONS_PATH}"),
            );
        }
    }
    Ok(asked
        .into_iter()
        .map(|(option, lists)| FragmentOption {
            name: format!("CONFIG_{option}"),
            value: Some("y".to_owned()),
            origin: lists.join(", "),
        })
        .collect())
}

/// The options as a fragment file `merge_config.sh` reads.
pub fn render_fragment(options: &[FragmentOption]) -> String {
    let mut text = String::from("# Generated by `cargo xtask kernel` from the requirement lists: do not edit.\n");
    for option in options {
        text.push_str(&format!("{}=y\n", option.name));
    }
    text
}

/// The checked-in lists, the extension table and the recipe's extension names, loaded and
/// combined for `arch`.
pub fn load(arch: Arch) -> Result<Vec<FragmentOption>> {
    let root = util::project_root();
    let read = |relative: &str| -> Result<String> {
        let path = root.join(relative);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let requirements =
        Requirements::parse(&read(REQUIREMENTS_PATH)?).with_context(|| format!("parsing {REQUIREMENTS_PATH}"))?;
    let table = ExtensionTable::parse(&read(IPTABLES_EXTENSIONS_PATH)?)
        .with_context(|| format!("parsing {IPTABLES_EXTENSIONS_PATH}"))?;
    let recipe = Recipe::load(&root.join(ROOTFS_RECIPE_PATH))?;
    required_options(arch, &requirements, &table, &recipe.iptables_extensions())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fragment::{parse_config, unmet_options};

    const LISTS: &str = r#"
[[list]]
name = "docker-required"
source = "moby contrib/check-config.sh"
options = ["IP_NF_RAW", "BRIDGE"]

[[list]]
name = "netdevs"
source = "ip link add"
options = ["BRIDGE", "VXLAN"]

[[list]]
name = "vz-arm64"
arch = "arm64"
source = "Virtualization.framework"
options = ["GPIO_PL061"]
"#;

    const TABLE: &str = r#"
[extension."libxt_physdev.so"]
options = ["NETFILTER_XT_MATCH_PHYSDEV"]
ipv4 = "-A FORWARD -m physdev --physdev-is-bridged -j ACCEPT"
"#;

    fn options(arch: Arch, extensions: &[&str]) -> Result<Vec<FragmentOption>> {
        let names: Vec<String> = extensions.iter().map(|name| name.to_string()).collect();
        required_options(
            arch,
            &Requirements::parse(LISTS).unwrap(),
            &ExtensionTable::parse(TABLE).unwrap(),
            &names,
        )
    }

    #[test]
    fn a_missing_option_is_named_with_its_list() {
        let wanted = options(Arch::X86_64, &["libxt_physdev.so"]).unwrap();
        let config = parse_config(
            "CONFIG_BRIDGE=y\n# CONFIG_IP_NF_RAW is not set\nCONFIG_VXLAN=y\nCONFIG_NETFILTER_XT_MATCH_PHYSDEV=y\n",
        );
        assert_eq!(
            unmet_options(&wanted, &config),
            [
                "CONFIG_IP_NF_RAW=y (list docker-required in manifests/kernel/requirements.toml): the final \
              .config has CONFIG_IP_NF_RAW not set instead (a dependency is off, or another option overrides it)"
            ]
        );
    }

    #[test]
    fn an_option_two_lists_ask_for_names_both_and_an_absent_one_says_so() {
        let wanted = options(Arch::X86_64, &["libxt_physdev.so"]).unwrap();
        let config = parse_config("CONFIG_IP_NF_RAW=y\nCONFIG_VXLAN=y\n");
        assert_eq!(
            unmet_options(&wanted, &config),
            [
                "CONFIG_BRIDGE=y (list docker-required in manifests/kernel/requirements.toml, list netdevs in \
                 manifests/kernel/requirements.toml): the final .config does not have CONFIG_BRIDGE at all (no \
                 such symbol in this kernel, or the menu that holds it is off)",
                "CONFIG_NETFILTER_XT_MATCH_PHYSDEV=y (iptables extension libxt_physdev.so in \
                 manifests/kernel/iptables-extensions.toml): the final .config does not have \
                 CONFIG_NETFILTER_XT_MATCH_PHYSDEV at all (no such symbol in this kernel, or the menu that holds \
                 it is off)",
            ]
        );
    }

    #[test]
    fn arch_lists_apply_to_their_arch_only() {
        let names = |arch| -> Vec<String> { options(arch, &[]).unwrap().into_iter().map(|o| o.name).collect() };
        assert!(names(Arch::Arm64).contains(&"CONFIG_GPIO_PL061".to_owned()));
        assert!(!names(Arch::X86_64).contains(&"CONFIG_GPIO_PL061".to_owned()));
        assert_eq!(
            render_fragment(&options(Arch::X86_64, &[]).unwrap()),
            "# Generated by `cargo xtask kernel` from the requirement lists: do not edit.\n\
             CONFIG_IP_NF_RAW=y\nCONFIG_BRIDGE=y\nCONFIG_VXLAN=y\n"
        );
    }

    #[test]
    fn an_extension_the_table_does_not_describe_is_refused() {
        let err = options(Arch::Arm64, &["libxt_physdev.so", "libxt_new.so"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the rootfs recipe (manifests/rootfs.toml) ships iptables extensions that \
             manifests/kernel/iptables-extensions.toml does not describe: libxt_new.so. Add each with the \
             kernel options it needs and a rule that uses it."
        );
    }

    #[test]
    fn malformed_lists_are_refused_by_name() {
        let prefixed = "[[list]]\nname = \"a\"\nsource = \"s\"\noptions = [\"CONFIG_X\"]\n";
        assert_eq!(
            format!("{:#}", Requirements::parse(prefixed).unwrap_err()),
            "list a: option CONFIG_X: write it without the CONFIG_ prefix"
        );
        let twice = "[[list]]\nname = \"a\"\nsource = \"s\"\noptions = []\n[[list]]\nname = \"a\"\nsource = \"s\"\noptions = []\n";
        assert_eq!(
            Requirements::parse(twice).unwrap_err().to_string(),
            "list a is defined twice"
        );
        let no_rule = "[extension.\"libxt_x.so\"]\noptions = [\"X\"]\n";
        assert_eq!(
            ExtensionTable::parse(no_rule).unwrap_err().to_string(),
            "extension libxt_x.so: give an `ipv4` or `ipv6` rule that uses it"
        );
    }

    /// The checked-in lists, table and recipe agree: every shipped extension is described.
    #[test]
    fn the_checked_in_requirements_cover_the_recipe() {
        for arch in [Arch::Arm64, Arch::X86_64] {
            let options = load(arch).unwrap();
            assert!(options.iter().any(|o| o.name == "CONFIG_IP_NF_RAW"), "{arch}");
            assert!(options.iter().any(|o| o.name == "CONFIG_WIREGUARD"), "{arch}");
        }
    }
}
