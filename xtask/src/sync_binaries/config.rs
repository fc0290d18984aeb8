//! `manifests/binaries.toml`: which runtime binaries to ship and where each comes from.
//!
//! Pure parsing and validation over the file's text ([`parse`]), and the in-place rewrite of
//! pinned digests that keeps comments and layout ([`pin_digests`]).
//!
//! Upstream's `upstream.toml` is read unchanged: its tables are `[[binaries]]` (ours are
//! `[[binary]]`), `format` defaults to `tgz`, and it pins no digests (so every entry needs
//! `--pin` first).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use boot_assets::manifest::{is_safe_file_name, is_sha256_hex, relative_path_problem};
use boot_assets::Arch;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The binaries, in file order (`[[binary]]`, or upstream's `[[binaries]]`).
    #[serde(default, rename = "binary", alias = "binaries")]
    pub binaries: Vec<BinarySpec>,
}

/// One runtime binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinarySpec {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub install_dir: Option<String>,
    /// The upstream source per arch.
    pub source: BTreeMap<Arch, Source>,
}

/// Where one arch's file comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// `tgz` when absent, as in upstream's file.
    #[serde(default)]
    pub format: Format,
    /// The upstream file; none for `stack`.
    #[serde(default)]
    pub url: String,
    /// The member to take from a `tgz`, or from a `deb`'s data archive.
    #[serde(default)]
    pub extract: Option<String>,
    /// SHA-256 of the downloaded upstream file; empty until pinned.
    #[serde(default)]
    pub sha256: String,
}

/// How the upstream file holds the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A gzip-compressed tar archive; `extract` names the member.
    #[default]
    Tgz,
    /// The executable itself.
    Binary,
    /// A Debian binary package; `extract` names the file in its data archive (`usr/sbin/runc`).
    Deb,
    /// Built by `cargo xtask stack` (manifests/stack.toml): the build output named like the
    /// binary. No `url`, `sha256` or `extract`: the stack's locks pin every input.
    Stack,
}

/// Parses and validates the file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config> {
    let config: Config = toml::from_str(text).with_context(|| format!("parsing {origin}"))?;
    let mut seen = BTreeMap::new();
    for (index, binary) in config.binaries.iter().enumerate() {
        let at = format!("{origin}: binary {:?}", binary.name);
        if !is_safe_file_name(&binary.name) {
            bail!(
                "{origin}: binary #{index} name {:?} is not safe as a file name",
                binary.name
            );
        }
        if let Some(first) = seen.insert(binary.name.clone(), index) {
            bail!("{at} is listed twice (entries #{first} and #{index})");
        }
        if !is_safe_file_name(&binary.version) {
            bail!("{at}: version {:?} is not safe as a path component", binary.version);
        }
        if let Some(problem) = binary.install_dir.as_deref().and_then(relative_path_problem) {
            bail!("{at}: install_dir {problem}");
        }
        if binary.source.is_empty() {
            bail!("{at}: no [binary.source.<arch>] table; add one for arm64 and/or x86_64");
        }
        for (arch, source) in &binary.source {
            let at = format!("{at} ({arch})");
            if source.format == Format::Stack {
                if !source.url.is_empty() || !source.sha256.is_empty() || source.extract.is_some() {
                    bail!(
                        "{at}: format \"stack\" builds the binary from manifests/stack.toml; remove `url`, \
                         `sha256` and `extract`"
                    );
                }
                continue;
            }
            if !(source.url.starts_with("https://") || source.url.starts_with("http://")) {
                bail!("{at}: url {:?} is not an http(s) URL", source.url);
            }
            if !source.sha256.is_empty() && !is_sha256_hex(&source.sha256) {
                bail!("{at}: sha256 {:?} is not 64 lowercase hex digits", source.sha256);
            }
            match (source.format, &source.extract) {
                (Format::Tgz, None) => bail!("{at}: format \"tgz\" needs `extract = \"path/in/archive\"`"),
                (Format::Deb, None) => {
                    bail!("{at}: format \"deb\" needs `extract = \"usr/bin/NAME\"`, the file's path in the package")
                }
                (Format::Tgz | Format::Deb, Some(member)) => {
                    if let Some(problem) = relative_path_problem(member) {
                        bail!("{at}: extract {problem}");
                    }
                }
                (Format::Binary, Some(_)) => bail!("{at}: format \"binary\" takes the URL as is; remove `extract`"),
                (Format::Binary, None) => {}
                (Format::Stack, _) => unreachable!("stack sources are checked above"),
            }
        }
    }
    Ok(config)
}

/// Sets `sha256` for every (binary, arch) in `digests`, keeping the rest of the text as it is.
pub fn pin_digests(text: &str, digests: &BTreeMap<(String, Arch), String>) -> Result<String> {
    let mut document: toml_edit::DocumentMut = text.parse().context("parsing binaries.toml for pinning")?;
    let key = if document.contains_key("binary") {
        "binary"
    } else {
        "binaries"
    };
    let binaries = document
        .get_mut(key)
        .and_then(|item| item.as_array_of_tables_mut())
        .context("the config has no [[binary]] (or upstream's [[binaries]]) tables")?;
    for table in binaries.iter_mut() {
        let Some(name) = table.get("name").and_then(|v| v.as_str()).map(str::to_owned) else {
            continue;
        };
        let Some(sources) = table.get_mut("source").and_then(|s| s.as_table_like_mut()) else {
            continue;
        };
        for arch in Arch::ALL {
            if let (Some(digest), Some(source)) = (
                digests.get(&(name.clone(), arch)),
                sources.get_mut(arch.as_str()).and_then(|s| s.as_table_like_mut()),
            ) {
                source.insert("sha256", toml_edit::value(digest.as_str()));
            }
        }
    }
    Ok(document.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        # comment kept by pinning
        [[binary]]
        name = "dockerd"
        version = "27.5.1"
        [binary.source.arm64]
        format = "tgz"
        url = "https://example.invalid/docker.tgz"
        extract = "docker/dockerd"
        sha256 = ""
        [binary.source.x86_64]
        format = "binary"
        url = "https://example.invalid/dockerd"
        sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    "#;

    fn error(text: &str) -> String {
        format!("{:#}", parse(text, "binaries.toml").unwrap_err())
    }

    #[test]
    fn parses_both_formats() {
        let config = parse(GOOD, "binaries.toml").unwrap();
        let sources = &config.binaries[0].source;
        assert_eq!(sources[&Arch::Arm64].format, Format::Tgz);
        assert_eq!(sources[&Arch::X86_64].extract, None);
    }

    #[test]
    fn a_stack_source_takes_nothing_but_its_format() {
        let config = parse(
            "[[binary]]\nname = \"runc\"\nversion = \"1\"\n[binary.source.arm64]\nformat = \"stack\"\n",
            "b.toml",
        )
        .unwrap();
        assert_eq!(config.binaries[0].source[&Arch::Arm64].format, Format::Stack);
        let err = error(
            "[[binary]]\nname = \"runc\"\nversion = \"1\"\n[binary.source.arm64]\nformat = \"stack\"\n\
             url = \"https://example.invalid/runc\"\n",
        );
        assert!(
            err.contains("format \"stack\" builds the binary from manifests/stack.toml"),
            "{err}"
        );
    }

    #[test]
    fn tgz_needs_extract() {
        let text = GOOD.replace("extract = \"docker/dockerd\"\n", "");
        assert_eq!(
            error(&text),
            "binaries.toml: binary \"dockerd\" (arm64): format \"tgz\" needs `extract = \"path/in/archive\"`"
        );
    }

    #[test]
    fn deb_needs_extract() {
        let deb = GOOD.replacen("format = \"tgz\"", "format = \"deb\"", 1);
        let config = parse(&deb, "binaries.toml").unwrap();
        assert_eq!(config.binaries[0].source[&Arch::Arm64].format, Format::Deb);
        assert_eq!(
            error(&deb.replace("extract = \"docker/dockerd\"\n", "")),
            "binaries.toml: binary \"dockerd\" (arm64): format \"deb\" needs `extract = \"usr/bin/NAME\"`, the \
             file's path in the package"
        );
        assert!(error(&deb.replace("docker/dockerd", "../usr/bin/x")).contains("has a `..` component"));
    }

    #[test]
    fn binary_forbids_extract() {
        let text = GOOD.replace("format = \"binary\"", "format = \"binary\"\nextract = \"x\"");
        assert!(error(&text).ends_with("(x86_64): format \"binary\" takes the URL as is; remove `extract`"));
    }

    #[test]
    fn traversal_in_extract_is_refused() {
        let text = GOOD.replace("docker/dockerd", "../evil");
        assert!(
            error(&text).contains("extract \"../evil\" has a `..` component"),
            "{}",
            error(&text)
        );
        let text = GOOD.replace("docker/dockerd", "/etc/passwd");
        assert!(error(&text).contains("is absolute"));
    }

    #[test]
    fn bad_digest_and_duplicates_are_refused() {
        let text = GOOD.replace("sha256 = \"\"", "sha256 = \"ABC\"");
        assert!(error(&text).contains("(arm64): sha256 \"ABC\" is not 64 lowercase hex digits"));
        let doubled = format!("{GOOD}\n{}", GOOD.replace("# comment kept by pinning", ""));
        assert!(error(&doubled).contains("binary \"dockerd\" is listed twice"));
    }

    #[test]
    fn unknown_arch_and_fields_are_refused() {
        assert!(error(&GOOD.replace("source.x86_64", "source.riscv64")).contains("riscv64"));
        assert!(
            error(&GOOD.replace("version = \"27.5.1\"", "version = \"27.5.1\"\nsurprise = 1")).contains("surprise")
        );
    }

    #[test]
    fn pinning_keeps_comments_and_sets_digests() {
        let digest = "b".repeat(64);
        let pinned = pin_digests(
            GOOD,
            &BTreeMap::from([(("dockerd".to_owned(), Arch::Arm64), digest.clone())]),
        )
        .unwrap();
        assert!(pinned.contains("# comment kept by pinning"));
        let config = parse(&pinned, "pinned").unwrap();
        assert_eq!(config.binaries[0].source[&Arch::Arm64].sha256, digest);
        assert_eq!(config.binaries[0].source[&Arch::X86_64].sha256, "a".repeat(64));
    }

    #[test]
    fn upstreams_file_is_read_unchanged() {
        let path = crate::util::project_root().join("tests/fixtures/upstream.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let config = parse(&text, "tests/fixtures/upstream.toml").unwrap();
        let by_name = |name: &str| config.binaries.iter().find(|b| b.name == name).unwrap();
        // `format` defaults to tgz, with the member to extract.
        let dockerd = &by_name("dockerd").source[&Arch::Arm64];
        assert_eq!(
            (dockerd.format, dockerd.extract.as_deref()),
            (Format::Tgz, Some("docker/dockerd"))
        );
        assert_eq!(by_name("k3s").source[&Arch::X86_64].format, Format::Binary);
        assert_eq!(by_name("k3s").version, "v1.31.4+k3s1");
        assert_eq!(by_name("vmlinux").install_dir.as_deref(), Some("kernel"));
        // No digests: every entry waits for --pin.
        assert!(config
            .binaries
            .iter()
            .flat_map(|b| b.source.values())
            .all(|s| s.sha256.is_empty()));

        let digest = "d".repeat(64);
        let pinned = pin_digests(
            &text,
            &BTreeMap::from([(("k3s".to_owned(), Arch::X86_64), digest.clone())]),
        )
        .unwrap();
        assert!(
            pinned.contains("[[binaries]]") && pinned.contains("# upstream-style"),
            "{pinned}"
        );
        let config = parse(&pinned, "pinned").unwrap();
        assert_eq!(
            config.binaries.iter().find(|b| b.name == "k3s").unwrap().source[&Arch::X86_64].sha256,
            digest
        );
    }

    #[test]
    fn checked_in_files_parse_and_the_default_builds_the_stack() {
        let five = [
            "dockerd",
            "containerd",
            "containerd-shim-runc-v2",
            "runc",
            "docker-init",
        ];
        for file in ["manifests/binaries.toml", "manifests/binaries-docker-static.toml"] {
            let path = crate::util::project_root().join(file);
            let config = parse(&std::fs::read_to_string(&path).unwrap(), file).unwrap();
            let names: Vec<&str> = config.binaries.iter().map(|b| b.name.as_str()).collect();
            assert_eq!(names, five, "{file}");
            assert!(config.binaries.iter().all(|b| b.source.len() == 2), "{file}");
        }
        let path = crate::util::project_root().join("manifests/binaries.toml");
        let config = parse(&std::fs::read_to_string(&path).unwrap(), "binaries.toml").unwrap();
        assert!(config
            .binaries
            .iter()
            .flat_map(|b| b.source.values())
            .all(|source| source.format == Format::Stack));
    }
}
