//! The image's SBOM, `rootfs.erofs.spdx.json` (SPDX 2.3, JSON): the image as the described
//! package (its sha256, the mkfs.erofs version and flags), every binary package that contributed
//! files (name, version, arch, package-file sha256, declared license or NOASSERTION) and every
//! tool built from source (each source package's name, version and `.dsc` sha256, our patches,
//! the build script and the build-only packages it linked).
//!
//! Pure: builds the JSON text from values; the caller writes it next to the image.

use serde_json::{json, Value};

use super::build::BuiltTool;
use crate::debian::{LockedPackage, LockedSource};

/// The SPDX version this document follows.
const SPDX_VERSION: &str = "SPDX-2.3";
/// The license of SPDX documents themselves, required by the spec.
const SPDX_DATA_LICENSE: &str = "CC0-1.0";
/// Prefix of the document namespace; the image digest makes it unique per image.
const NAMESPACE_PREFIX: &str = "https://spdx.org/spdxdocs/boot-assets-rootfs";
/// The tool named as the document's creator.
const CREATOR_TOOL: &str = "Tool: boot-assets-xtask-rootfs";
/// SPDX identifier of the image package.
const IMAGE_SPDX_ID: &str = "SPDXRef-Package-rootfs-image";

/// What put files into the image.
pub enum Contributor {
    /// A Debian binary package.
    Package {
        locked: LockedPackage,
        /// SPDX license expression, `None` for NOASSERTION.
        license: Option<String>,
    },
    /// A tool built from source packages.
    Built(BuiltTool),
}

impl Contributor {
    /// The name packages are sorted by.
    fn name(&self) -> &str {
        match self {
            Contributor::Package { locked, .. } => &locked.name,
            Contributor::Built(tool) => &tool.name,
        }
    }
}

/// Everything the SBOM records.
pub struct SbomInput<'a> {
    /// The contract arch (`arm64`, `x86_64`).
    pub arch: &'a str,
    pub image_file_name: &'a str,
    pub image_sha256: &'a str,
    /// `created`, `%Y-%m-%dT%H:%M:%SZ` (from SOURCE_DATE_EPOCH for reproducible builds).
    pub created: &'a str,
    pub mkfs_version: &'a str,
    pub mkfs_flags: &'a [String],
    pub contributors: &'a [Contributor],
}

/// An SPDX identifier from free text: only letters, digits, `.` and `-` are allowed.
pub fn spdx_id(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The SBOM as pretty JSON text with a trailing newline; same input, same bytes.
pub fn render(input: &SbomInput<'_>) -> String {
    let mut contributors: Vec<&Contributor> = input.contributors.iter().collect();
    contributors.sort_by(|a, b| a.name().cmp(b.name()));

    let mut packages = vec![json!({
        "SPDXID": IMAGE_SPDX_ID,
        "name": format!("boot-assets-rootfs-{}", input.arch),
        "packageFileName": input.image_file_name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": input.image_sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "comment": format!(
            "EROFS root filesystem for {}, built with mkfs.erofs {} {}",
            input.arch,
            input.mkfs_version,
            input.mkfs_flags.join(" ")
        ),
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": IMAGE_SPDX_ID,
    })];
    for contributor in contributors {
        let entries = match contributor {
            Contributor::Package { locked, license } => vec![package_entry(locked, license.as_deref())],
            Contributor::Built(tool) => tool.sources.iter().map(|source| source_entry(tool, source)).collect(),
        };
        for (id, package) in entries {
            packages.push(package);
            relationships.push(json!({
                "spdxElementId": IMAGE_SPDX_ID,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": id,
            }));
        }
    }

    let document = json!({
        "spdxVersion": SPDX_VERSION,
        "dataLicense": SPDX_DATA_LICENSE,
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("boot-assets-rootfs-{}", input.arch),
        "documentNamespace": format!("{NAMESPACE_PREFIX}-{}-{}", input.arch, input.image_sha256),
        "creationInfo": {
            "created": input.created,
            "creators": [CREATOR_TOOL, format!("Tool: mkfs.erofs-{}", input.mkfs_version)],
        },
        "documentDescribes": [IMAGE_SPDX_ID],
        "packages": packages,
        "relationships": relationships,
    });
    let mut text = serde_json::to_string_pretty(&sorted(document)).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// One source package a tool was built from, as an SPDX package: its id and its entry. The
/// comment names our patches, the build script's outputs and the build-only packages.
fn source_entry(tool: &BuiltTool, source: &LockedSource) -> (String, serde_json::Value) {
    let id = format!("SPDXRef-Package-src-{}", spdx_id(&source.name));
    let dsc = source.dsc();
    let mut comment = format!(
        "Debian source package {} {} ({}), .dsc {} sha256 {}; built from source for this image as part of {}",
        source.name, source.version, source.suite, dsc.filename, dsc.sha256, tool.name
    );
    if source.name == tool.name {
        for (patch, sha256) in &tool.patches {
            comment.push_str(&format!("; our patch {patch} sha256 {sha256}"));
        }
        for package in &tool.build_packages {
            comment.push_str(&format!(
                "; build-only package {} {} sha256 {}",
                package.name, package.version, package.sha256
            ));
        }
    }
    let package = json!({
        "SPDXID": id,
        "name": source.name,
        "versionInfo": source.version,
        "packageFileName": dsc.filename,
        "supplier": "Organization: Debian",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": dsc.sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "sourceInfo": format!("built from the Debian source package {} {}", source.name, source.version),
        "comment": comment,
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!(
                "pkg:deb/debian/{}@{}?arch=source",
                source.name,
                percent_encode(&source.version)
            ),
        }],
    });
    (id, package)
}

/// One contributing Debian package as an SPDX package: its id and its entry.
fn package_entry(locked: &LockedPackage, license: Option<&str>) -> (String, serde_json::Value) {
    let id = format!(
        "SPDXRef-Package-deb-{}-{}",
        spdx_id(&locked.name),
        spdx_id(&locked.arch)
    );
    let license = license.unwrap_or("NOASSERTION").to_owned();
    let package = json!({
        "SPDXID": id,
        "name": locked.name,
        "versionInfo": locked.version,
        "packageFileName": locked.filename,
        "supplier": "Organization: Debian",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{ "algorithm": "SHA256", "checksumValue": locked.sha256 }],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": license,
        "copyrightText": "NOASSERTION",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!(
                "pkg:deb/debian/{}@{}?arch={}",
                locked.name,
                percent_encode(&locked.version),
                locked.arch
            ),
        }],
    });
    (id, package)
}

/// Object keys in sorted order at every level, so the bytes never depend on insertion order.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: std::collections::BTreeMap<String, Value> =
                map.into_iter().map(|(key, value)| (key, sorted(value))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Percent-encodes what a purl version may not hold literally (`:` of an epoch, `+`, `~`).
fn percent_encode(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '-' | '_' => c.to_string(),
            other => format!("%{:02X}", other as u32),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contributor(name: &str, license: Option<&str>) -> Contributor {
        Contributor::Package {
            locked: LockedPackage {
                name: name.into(),
                arch: "arm64".into(),
                for_arch: "arm64".into(),
                suite: "bookworm".into(),
                version: "1:1.35.0-4+b1".into(),
                filename: format!("{name}_1.35.0-4+b1_arm64.deb"),
                size: 1,
                sha256: "ab".repeat(32),
            },
            license: license.map(str::to_owned),
        }
    }

    #[test]
    fn records_image_packages_and_relationships() {
        let flags = vec!["-zlz4hc,12".to_owned()];
        let contributors = [
            contributor("socat", None),
            contributor("busybox-static", Some("GPL-2.0-only")),
            Contributor::Built(built_tool()),
        ];
        let input = SbomInput {
            arch: "arm64",
            image_file_name: "rootfs.erofs",
            image_sha256: &"cd".repeat(32),
            created: "2026-01-01T00:00:00Z",
            mkfs_version: "1.5",
            mkfs_flags: &flags,
            contributors: &contributors,
        };
        let text = render(&input);
        assert_eq!(text, render(&input), "same input, same bytes");
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["spdxVersion"], "SPDX-2.3");
        let packages = value["packages"].as_array().unwrap();
        assert_eq!(packages[0]["checksums"][0]["checksumValue"], "cd".repeat(32));
        assert_eq!(
            packages[0]["comment"],
            "EROFS root filesystem for arm64, built with mkfs.erofs 1.5 -zlz4hc,12"
        );
        assert_eq!(packages[1]["name"], "busybox-static");
        assert_eq!(packages[1]["licenseDeclared"], "GPL-2.0-only");
        assert_eq!(packages[1]["SPDXID"], "SPDXRef-Package-deb-busybox-static-arm64");
        assert_eq!(
            packages[1]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/busybox-static@1%3A1.35.0-4%2Bb1?arch=arm64"
        );
        assert_eq!(packages[2]["name"], "e2fsprogs");
        assert_eq!(packages[2]["versionInfo"], "1.47.2-3");
        assert_eq!(packages[2]["checksums"][0]["checksumValue"], "ef".repeat(32));
        let comment = packages[2]["comment"].as_str().unwrap();
        assert!(
            comment.contains(&format!("our patch 0001-fix.patch sha256 {}", "12".repeat(32))),
            "{comment}"
        );
        assert_eq!(
            packages[2]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/e2fsprogs@1.47.2-3?arch=source"
        );
        assert_eq!(packages[3]["licenseDeclared"], "NOASSERTION");
        assert_eq!(value["relationships"].as_array().unwrap().len(), 4);
    }

    fn built_tool() -> BuiltTool {
        BuiltTool {
            name: "e2fsprogs".into(),
            sources: vec![LockedSource {
                name: "e2fsprogs".into(),
                suite: "trixie".into(),
                version: "1.47.2-3".into(),
                files: vec![crate::debian::lock::SourceFile {
                    filename: "e2fsprogs_1.47.2-3.dsc".into(),
                    size: 1,
                    sha256: "ef".repeat(32),
                }],
            }],
            patches: vec![("0001-fix.patch".into(), "12".repeat(32))],
            build_packages: vec![],
            dir: "/nonexistent".into(),
            outputs: Default::default(),
        }
    }

    #[test]
    fn spdx_ids_only_keep_allowed_characters() {
        assert_eq!(spdx_id("libstdc++6"), "libstdc--6");
    }
}
