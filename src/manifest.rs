//! The `manifest.json` and `latest.json` contract: serde types, parsing, validation, writing.
//!
//! Reads bytes or JSON values, writes pretty-printed JSON with a trailing newline. Field order
//! is the struct order and maps are sorted, so the same manifest always gives the same bytes.
//! [`Manifest::validate`] checks every rule of the contract and reports each broken rule with the
//! field it concerns (`targets.arm64.kernel.sha256: …`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The guest architectures the contract knows, spelled exactly as in paths and JSON keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Arch {
    /// 64-bit Arm (`aarch64` in ELF and compiler terms).
    #[serde(rename = "arm64")]
    Arm64,
    /// 64-bit x86 (`amd64` in Debian terms).
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// Every arch, in key order.
    pub const ALL: [Arch; 2] = [Arch::Arm64, Arch::X86_64];

    /// The contract's spelling: `arm64` or `x86_64`.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The kernel command line the runtime boots this arch with (console differs per machine).
    pub fn default_kernel_cmdline(self) -> &'static str {
        match self {
            Arch::Arm64 => "console=hvc0 root=/dev/vda ro rootfstype=erofs earlycon",
            Arch::X86_64 => "console=ttyS0 root=/dev/vda ro rootfstype=erofs earlycon",
        }
    }

    /// The arch of the machine this code runs on, if it is one the contract knows.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "aarch64" => Some(Arch::Arm64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" => Ok(Arch::Arm64),
            "x86_64" => Ok(Arch::X86_64),
            other => Err(ManifestError::UnknownArch(other.to_owned())),
        }
    }
}

/// Deserialized from a plain string so that error paths can name the key (`targets.riscv64`).
impl<'de> Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// The whole `manifest.json`: one asset version, its per-arch boot assets and runtime binaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
pub struct Manifest {
    /// Equals the major component of `asset_version`; a consumer refuses any other.
    pub schema_version: u64,
    /// Semantic version of this asset release, e.g. `0.2.0`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]+\.[0-9]+\.[0-9]+([-+].+)?$")))]
    pub asset_version: String,
    /// UTC build time, `%Y-%m-%dT%H:%M:%SZ`.
    #[cfg_attr(
        feature = "schema",
        schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"))
    )]
    pub built_at: String,
    /// Repository the kernel came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_repo: Option<String>,
    /// Git ref of the kernel source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ref: Option<String>,
    /// Git commit of the kernel source, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha: Option<String>,
    /// Boot assets per guest arch.
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::arch_map::<Target>"))]
    #[serde(deserialize_with = "unique_arch_map")]
    pub targets: BTreeMap<Arch, Target>,
    /// Host-side runtime binaries, each with per-arch files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binaries: Vec<Binary>,
}

/// The boot assets of one arch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
pub struct Target {
    /// The kernel image.
    pub kernel: KernelEntry,
    /// The read-only EROFS root filesystem.
    pub rootfs: FileEntry,
    /// The command line to boot the kernel with. For a verified root it builds the dm-verity
    /// device (`dm-mod.create=`) and mounts it (`root=/dev/dm-0`).
    pub kernel_cmdline: String,
    /// The dm-verity root hash of `rootfs` (SHA-256, 64 lowercase hex digits): the same as the
    /// one in `kernel_cmdline`'s verity table, which a consumer checks. Absent for an unverified
    /// rootfs (a development build) and in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(with = "String", regex(pattern = r"^[0-9a-f]{64}$")))]
    pub rootfs_verity_root_hash: Option<String>,
    /// Upstream 0.7.x's read-only runtime image (legacy): kept when a published manifest is
    /// read, so that a read-modify-write does not lose it; never written by this repository
    /// ([`Manifest::validate_for_writing`] refuses it) and never downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub runtime: Option<FileEntry>,
}

/// The kernel image: where it is, its digest and the Linux version it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
#[cfg_attr(feature = "schema", schemars(transform = schema::published_file))]
pub struct KernelEntry {
    /// Path relative to the CDN base URL.
    pub path: String,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
    /// Linux version, e.g. `6.12.8` (upstream's manifests may carry a kernel tag like `v0.0.19`).
    pub version: String,
    /// Length of the file in bytes; optional (older manifests do not have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Any other published file: where it is and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
#[cfg_attr(feature = "schema", schemars(transform = schema::published_file))]
pub struct FileEntry {
    /// Path relative to the CDN base URL.
    pub path: String,
    /// SHA-256 of the file, 64 lowercase hex digits.
    pub sha256: String,
    /// Length of the file in bytes; optional (older manifests do not have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A host-side runtime binary (dockerd, FEX, …) with one file per arch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(deny_unknown_fields))]
pub struct Binary {
    /// Unique name, also the installed file name.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")))]
    pub name: String,
    /// Upstream version of the binary.
    pub version: String,
    /// Install into `{parent of the runtime bin dir}/{install_dir}` instead of the bin dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
    /// The file per arch.
    #[cfg_attr(feature = "schema", schemars(schema_with = "schema::arch_map::<FileEntry>"))]
    #[serde(deserialize_with = "unique_arch_map")]
    pub targets: BTreeMap<Arch, FileEntry>,
}

/// `latest.json`: the newest published asset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Latest {
    /// The asset version, e.g. `0.2.0`.
    pub version: String,
}

/// One broken rule: the field it concerns and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the field, e.g. `targets.arm64.kernel.sha256` or `binaries[2].name`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything that can be wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not JSON of the manifest's shape; the path names the field.
    #[error("manifest is not valid JSON of the expected shape at `{path}`: {message}")]
    Parse {
        /// Dotted path to the offending value (`.` for the top level).
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The JSON parsed but breaks contract rules; every broken rule is listed.
    #[error("manifest breaks {} rule(s):\n  {}", .0.len(), .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<Problem>),
    /// A producer read a field the contract does not define (consumers ignore such fields).
    #[error("`{path}` is not a field of the contract: this tool writes only the contract's fields (remove it)")]
    UnknownField {
        /// Dotted path of the field, e.g. `targets.arm64.kernel.surprise`.
        path: String,
    },
    /// An arch name the contract does not know.
    #[error("unknown arch {0:?}: expected `arm64` or `x86_64`")]
    UnknownArch(String),
}

impl ManifestError {
    /// The broken rules, when this is a validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

impl Manifest {
    /// Parses manifest bytes as a consumer does: fields this version does not know are ignored
    /// (a later minor may add optional ones), and the error names the field that did not fit.
    ///
    /// This only checks the shape; call [`Manifest::validate`] (or use [`Manifest::from_json_validated`])
    /// before trusting the values.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        parse_json(bytes, Reading::Lenient)
    }

    /// Parses manifest bytes as a producer does: any field the contract does not define is an
    /// error naming it, so that what this repository writes stays exactly the contract.
    pub fn from_json_strict(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        parse_json(bytes, Reading::Strict)
    }

    /// Parses and validates manifest bytes (leniently, as a consumer).
    pub fn from_json_validated(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let manifest = Manifest::from_json(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Converts a JSON value into a manifest (leniently); the error names the field that did not fit.
    pub fn from_value(value: serde_json::Value) -> Result<Manifest, ManifestError> {
        serde_path_to_error::deserialize(value).map_err(parse_error)
    }

    /// Pretty-printed JSON with a trailing newline, in the stable key order.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        text.push('\n');
        text
    }

    /// Checks every contract rule and reports all broken ones at once.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let mut problems = Vec::new();
        let mut problem = |field: String, message: String| problems.push(Problem { field, message });

        match semver::Version::parse(&self.asset_version) {
            Ok(version) if version.major != self.schema_version => problem(
                "schema_version".into(),
                format!(
                    "is {} but must equal the major component of asset_version {:?} ({})",
                    self.schema_version, self.asset_version, version.major
                ),
            ),
            Ok(_) => {}
            Err(e) => problem(
                "asset_version".into(),
                format!("{:?} is not a semantic version like 0.2.0: {e}", self.asset_version),
            ),
        }
        if !is_utc_timestamp(&self.built_at) {
            problem(
                "built_at".into(),
                format!("{:?} is not a UTC time in the form 2026-03-03T12:00:00Z", self.built_at),
            );
        }
        for (field, value) in [
            ("source_repo", &self.source_repo),
            ("source_ref", &self.source_ref),
            ("source_sha", &self.source_sha),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problem(field.into(), "is empty; omit the field when it is unknown".into());
            }
        }

        if self.targets.is_empty() {
            problem(
                "targets".into(),
                "names no arch; expected at least one of arm64, x86_64".into(),
            );
        }
        for (arch, target) in &self.targets {
            let at = format!("targets.{arch}");
            check_relative_path(&format!("{at}.kernel.path"), &target.kernel.path, &mut problem);
            check_sha256(&format!("{at}.kernel.sha256"), &target.kernel.sha256, &mut problem);
            if target.kernel.version.trim().is_empty() {
                problem(
                    format!("{at}.kernel.version"),
                    "is empty; expected a Linux version like 6.12.8".into(),
                );
            }
            check_relative_path(&format!("{at}.rootfs.path"), &target.rootfs.path, &mut problem);
            check_sha256(&format!("{at}.rootfs.sha256"), &target.rootfs.sha256, &mut problem);
            if target.kernel_cmdline.trim().is_empty() {
                problem(format!("{at}.kernel_cmdline"), "is empty".into());
            }
            if let Some(recorded) = &target.rootfs_verity_root_hash {
                let field = format!("{at}.rootfs_verity_root_hash");
                check_sha256(&field, recorded, &mut problem);
                if let Some(message) = root_hash_disagreement(recorded, &target.kernel_cmdline) {
                    problem(field, message);
                }
            }
        }

        check_binaries(&self.binaries, &mut problem);

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid(problems))
        }
    }

    /// [`Manifest::validate`] plus the rules of what this repository writes: no legacy field
    /// (`targets.{arch}.runtime` is read from upstream's manifests, never written).
    pub fn validate_for_writing(&self) -> Result<(), ManifestError> {
        let mut problems = match self.validate() {
            Ok(()) => Vec::new(),
            Err(ManifestError::Invalid(problems)) => problems,
            Err(other) => return Err(other),
        };
        for (arch, target) in &self.targets {
            if target.runtime.is_some() {
                problems.push(Problem {
                    field: format!("targets.{arch}.runtime"),
                    message: "is upstream's legacy runtime image: kept when read, never written; remove it".into(),
                });
            }
            let builds_verity = !cmdline_verity_root_hashes(&target.kernel_cmdline).is_empty();
            if builds_verity && target.rootfs_verity_root_hash.is_none() {
                problems.push(Problem {
                    field: format!("targets.{arch}.rootfs_verity_root_hash"),
                    message: "is missing, but kernel_cmdline builds a dm-verity root: record its root hash".into(),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid(problems))
        }
    }

    /// The binaries with only this arch's file, dropping those that have none for it.
    pub fn binaries_for(binaries: &[Binary], arch: Arch) -> Vec<Binary> {
        binaries
            .iter()
            .filter_map(|binary| {
                let file = binary.targets.get(&arch)?;
                Some(Binary {
                    targets: BTreeMap::from([(arch, file.clone())]),
                    ..binary.clone()
                })
            })
            .collect()
    }
}

impl Latest {
    /// Parses `latest.json`, checking that the version is a semantic version.
    pub fn from_json(bytes: &[u8]) -> Result<Latest, ManifestError> {
        let latest: Latest = parse_json(bytes, Reading::Lenient)?;
        if let Err(e) = semver::Version::parse(&latest.version) {
            return Err(ManifestError::Invalid(vec![Problem {
                field: "version".into(),
                message: format!("{:?} is not a semantic version like 0.2.0: {e}", latest.version),
            }]));
        }
        Ok(latest)
    }

    /// Pretty-printed JSON with a trailing newline.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("latest.json always serializes");
        text.push('\n');
        text
    }
}

#[cfg(feature = "schema")]
mod schema {
    /// The JSON Schema pattern of an object path: relative, no backslash, no empty component.
    const RELATIVE_PATH_PATTERN: &str = r"^[^/\\]+(/[^/\\]+)*$";

    /// The JSON Schema pattern of a digest: 64 lowercase hex digits.
    const SHA256_PATTERN: &str = r"^[0-9a-f]{64}$";

    /// The rules of the fields every published file has, in one place for
    /// [`super::KernelEntry`] and [`super::FileEntry`]: `path` and `sha256` get their patterns,
    /// and `size` is a plain byte count (optional, so absent when unknown, but never `null`).
    pub fn published_file(schema: &mut schemars::Schema) {
        let properties = schema
            .get_mut("properties")
            .and_then(serde_json::Value::as_object_mut)
            .expect("a published file's schema lists its properties");
        properties["path"]["pattern"] = RELATIVE_PATH_PATTERN.into();
        properties["sha256"]["pattern"] = SHA256_PATTERN.into();
        properties["size"]["type"] = "integer".into();
    }

    /// An object keyed only by the contract's arch names, with at least one of them.
    pub fn arch_map<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let value = generator.subschema_for::<T>();
        let properties: serde_json::Map<String, serde_json::Value> = super::Arch::ALL
            .iter()
            .map(|arch| (arch.as_str().to_owned(), value.clone().into()))
            .collect();
        schemars::json_schema!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
            "minProperties": 1
        })
    }
}

/// How a document is read: consumers ignore unknown fields, producers refuse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Lenient,
    Strict,
}

/// Parses JSON bytes into `T`, with the field path in errors; in strict reading the first field
/// `T` does not know is an error naming it.
fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], reading: Reading) -> Result<T, ManifestError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut unknown = Vec::new();
    let mut record_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let value: T =
        serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&mut deserializer, &mut record_unknown))
            .map_err(parse_error)?;
    deserializer.end().map_err(|e| ManifestError::Parse {
        path: ".".into(),
        message: e.to_string(),
    })?;
    match unknown.into_iter().next() {
        Some(path) if reading == Reading::Strict => Err(ManifestError::UnknownField { path }),
        _ => Ok(value),
    }
}

/// Parses a binaries fragment (a JSON array of manifest `binaries` entries) as a producer does:
/// unknown fields are refused, naming them.
pub fn binaries_from_json_strict(bytes: &[u8]) -> Result<Vec<Binary>, ManifestError> {
    parse_json(bytes, Reading::Strict)
}

/// Deserializes an object keyed by arch, refusing a key that appears twice (serde's maps would
/// silently keep the last one, so two conflicting entries could hide each other).
fn unique_arch_map<'de, D, V>(deserializer: D) -> Result<BTreeMap<Arch, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct ArchMapVisitor<V>(std::marker::PhantomData<V>);

    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for ArchMapVisitor<V> {
        type Value = BTreeMap<Arch, V>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an object keyed by arch (arm64, x86_64)")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some(arch) = map.next_key::<Arch>()? {
                if entries.contains_key(&arch) {
                    return Err(serde::de::Error::custom(format!(
                        "duplicate arch key `{arch}`: each arch may appear only once"
                    )));
                }
                let value = map.next_value()?;
                entries.insert(arch, value);
            }
            Ok(entries)
        }
    }

    deserializer.deserialize_map(ArchMapVisitor(std::marker::PhantomData))
}

fn parse_error(error: serde_path_to_error::Error<serde_json::Error>) -> ManifestError {
    ManifestError::Parse {
        path: error.path().to_string(),
        message: error.inner().to_string(),
    }
}

/// True for exactly 64 lowercase hex digits.
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True for a name that is safe as one file name: letters, digits, `._+-`, not starting with `.`.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

/// Why a relative object path is unsafe, or `None` when it is fine.
///
/// A safe path has no leading `/`, no backslash, no empty, `.` or `..` component, and no
/// control characters, so it cannot escape the directory it is joined to.
pub fn relative_path_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("is empty".into());
    }
    if path.starts_with('/') {
        return Some(format!("{path:?} is absolute; paths are relative to the CDN base URL"));
    }
    if path.contains('\\') {
        return Some(format!("{path:?} contains a backslash"));
    }
    if path.chars().any(char::is_control) {
        return Some(format!("{path:?} contains a control character"));
    }
    for component in path.split('/') {
        match component {
            "" => return Some(format!("{path:?} has an empty component")),
            "." | ".." => return Some(format!("{path:?} has a `{component}` component")),
            _ => {}
        }
    }
    None
}

/// Checks a list of runtime binaries: unique, file-name-safe names, safe versions and
/// install dirs, at least one target each, relative paths and well-formed digests.
pub fn validate_binaries(binaries: &[Binary]) -> Result<(), ManifestError> {
    let mut problems = Vec::new();
    check_binaries(binaries, &mut |field, message| {
        problems.push(Problem { field, message })
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ManifestError::Invalid(problems))
    }
}

fn check_binaries(binaries: &[Binary], problem: &mut impl FnMut(String, String)) {
    let mut seen_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, binary) in binaries.iter().enumerate() {
        let at = format!("binaries[{index}]");
        if !is_safe_file_name(&binary.name) {
            problem(
                format!("{at}.name"),
                format!(
                    "{:?} is not safe as a file name (letters, digits, `._+-`, not starting with `.`)",
                    binary.name
                ),
            );
        }
        if let Some(first) = seen_names.insert(&binary.name, index) {
            problem(
                format!("{at}.name"),
                format!(
                    "{:?} is already used by binaries[{first}]; names must be unique",
                    binary.name
                ),
            );
        }
        if !is_safe_file_name(&binary.version) {
            problem(
                format!("{at}.version"),
                format!(
                    "{:?} is not safe as a path component (letters, digits, `._+-`)",
                    binary.version
                ),
            );
        }
        if let Some(dir) = &binary.install_dir {
            check_relative_path(&format!("{at}.install_dir"), dir, problem);
        }
        if binary.targets.is_empty() {
            problem(
                format!("{at}.targets"),
                format!("binary {:?} has no target arch", binary.name),
            );
        }
        for (arch, file) in &binary.targets {
            check_relative_path(&format!("{at}.targets.{arch}.path"), &file.path, problem);
            check_sha256(&format!("{at}.targets.{arch}.sha256"), &file.sha256, problem);
        }
    }
}

fn check_relative_path(field: &str, path: &str, problem: &mut impl FnMut(String, String)) {
    if let Some(message) = relative_path_problem(path) {
        problem(field.to_owned(), message);
    }
}

fn check_sha256(field: &str, value: &str, problem: &mut impl FnMut(String, String)) {
    if !is_sha256_hex(value) {
        problem(field.to_owned(), format!("{value:?} is not 64 lowercase hex digits"));
    }
}

/// Why a recorded rootfs root hash and the command line's verity table disagree, or `None`
/// when the command line builds exactly one dm-verity device with that root hash.
fn root_hash_disagreement(recorded: &str, cmdline: &str) -> Option<String> {
    match cmdline_verity_root_hashes(cmdline).as_slice() {
        [only] if only == recorded => None,
        [only] => Some(format!(
            "is {recorded} but kernel_cmdline's dm-verity table has root hash {only}: the two must agree \
             (one of them was changed after the release was built)"
        )),
        [] => Some(format!(
            "is {recorded} but kernel_cmdline builds no dm-verity device (no verity table in dm-mod.create=)"
        )),
        several => Some(format!(
            "is {recorded} but kernel_cmdline builds {} dm-verity devices; expected exactly one",
            several.len()
        )),
    }
}

/// The parameters of a kernel command line as the kernel splits them: at whitespace outside
/// double quotes, up to a bare `--` (what follows goes to init); each as (name, value) with
/// the quotes around the parameter or its value removed. A name keeps its spelling (the kernel
/// treats `-` and `_` in names alike; see [`cmdline_verity_root_hashes`]).
pub fn cmdline_parameters(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut in_quote = false;
    for c in cmdline.chars() {
        if c.is_whitespace() && !in_quote {
            if !current.is_empty() {
                tokens.push(std::mem::take(&mut current));
            }
            continue;
        }
        if c == '"' {
            in_quote = !in_quote;
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
        .into_iter()
        .take_while(|token| token != "--")
        .map(|token| {
            let token = token
                .strip_prefix('"')
                .map_or(token.as_str(), |t| t.strip_suffix('"').unwrap_or(t));
            match token.split_once('=') {
                Some((name, value)) => {
                    let value = value
                        .strip_prefix('"')
                        .map_or(value, |v| v.strip_suffix('"').unwrap_or(v));
                    (name.to_owned(), Some(value.to_owned()))
                }
                None => (token.to_owned(), None),
            }
        })
        .collect()
}

/// The root hash of every `verity` table in the command line's `dm-mod.create=` (the last one,
/// as the kernel keeps it; `dm_mod.create=` is the same parameter), in order. A table is
/// `<start> <sectors> verity <version> <data dev> <hash dev> <data block size> <hash block size>
/// <data blocks> <hash start block> <algorithm> <root hash> <salt> …`.
pub fn cmdline_verity_root_hashes(cmdline: &str) -> Vec<String> {
    let Some(create) = cmdline_parameters(cmdline)
        .into_iter()
        .filter(|(name, _)| name.replace('-', "_") == "dm_mod.create")
        .filter_map(|(_, value)| value)
        .next_back()
    else {
        return Vec::new();
    };
    // Devices are separated by `;`; a device is `name,uuid,minor,flags,table[,table…]`.
    create
        .split(';')
        .flat_map(|device| device.split(',').skip(4))
        .filter_map(|table| {
            let words: Vec<&str> = table.split_whitespace().collect();
            (words.get(2) == Some(&"verity"))
                .then(|| words.get(11).map(|hash| (*hash).to_owned()))
                .flatten()
        })
        .collect()
}

/// True for a UTC time written exactly as `%Y-%m-%dT%H:%M:%SZ`.
fn is_utc_timestamp(value: &str) -> bool {
    value.len() == 20 && value.ends_with('Z') && !value.contains('.') && humantime::parse_rfc3339(value).is_ok()
}

/// Formats seconds since the Unix epoch as `%Y-%m-%dT%H:%M:%SZ`.
pub fn format_utc_timestamp(seconds_since_epoch: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds_since_epoch);
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// The contract's example manifest, with real-looking digests.
    fn example() -> Manifest {
        let text = r#"{
          "schema_version": 0,
          "asset_version": "0.2.0",
          "built_at": "2026-03-03T12:00:00Z",
          "source_repo": "arcboxlabs/kernel",
          "source_ref": "v0.1.0",
          "source_sha": "abc123",
          "targets": {
            "arm64": {
              "kernel": { "path": "asset/v0.2.0/arm64/kernel", "sha256": "AAAA", "version": "6.12.8" },
              "rootfs": { "path": "asset/v0.2.0/arm64/rootfs.erofs", "sha256": "BBBB" },
              "kernel_cmdline": "console=hvc0 root=/dev/vda ro rootfstype=erofs earlycon"
            }
          },
          "binaries": [
            { "name": "dockerd", "version": "27.5.1",
              "targets": { "arm64": { "path": "bin/dockerd/27.5.1/arm64/dockerd", "sha256": "AAAA" } } }
          ]
        }"#;
        Manifest::from_json(text.replace("AAAA", A).replace("BBBB", B).as_bytes()).unwrap()
    }

    /// The example manifest as written, with each `(from, to)` replacement made in turn.
    fn example_json_with(replacements: &[(&str, &str)]) -> String {
        let mut text = example().to_json_pretty();
        for (from, to) in replacements {
            text = text.replace(from, to);
        }
        text
    }

    fn problems(manifest: &Manifest) -> Vec<String> {
        match manifest.validate() {
            Ok(()) => vec![],
            Err(e) => e.problems().iter().map(ToString::to_string).collect(),
        }
    }

    fn assert_one_problem(manifest: &Manifest, expected: &str) {
        let found = problems(manifest);
        assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
        assert!(
            found[0].contains(expected),
            "{:?} does not contain {expected:?}",
            found[0]
        );
    }

    #[test]
    fn example_is_valid_and_round_trips() {
        let manifest = example();
        manifest.validate().unwrap();
        let text = manifest.to_json_pretty();
        assert!(text.ends_with("}\n"));
        assert_eq!(Manifest::from_json(text.as_bytes()).unwrap(), manifest);
    }

    #[test]
    fn written_keys_are_in_contract_order() {
        let text = example().to_json_pretty();
        let order = [
            "schema_version",
            "asset_version",
            "built_at",
            "source_repo",
            "source_ref",
            "source_sha",
            "targets",
            "binaries",
        ];
        let positions: Vec<usize> = order.iter().map(|k| text.find(&format!("\"{k}\"")).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn optional_fields_are_omitted() {
        let mut manifest = example();
        manifest.source_repo = None;
        manifest.binaries.clear();
        let text = manifest.to_json_pretty();
        assert!(!text.contains("source_repo") && !text.contains("binaries"), "{text}");
    }

    #[test]
    fn schema_version_must_match_major() {
        let mut manifest = example();
        manifest.schema_version = 1;
        assert_one_problem(
            &manifest,
            "schema_version: is 1 but must equal the major component of asset_version \"0.2.0\" (0)",
        );
        manifest.asset_version = "1.0.0".into();
        manifest.validate().unwrap();
    }

    #[test]
    fn asset_version_must_be_semver() {
        let mut manifest = example();
        manifest.asset_version = "v0.2".into();
        assert_one_problem(&manifest, "asset_version: \"v0.2\" is not a semantic version");
    }

    #[test]
    fn built_at_must_be_utc_seconds() {
        let mut manifest = example();
        for bad in [
            "2026-03-03 12:00:00",
            "2026-03-03T12:00:00.5Z",
            "2026-03-03T12:00:00+01:00",
            "2026-13-03T12:00:00Z",
        ] {
            manifest.built_at = bad.into();
            assert_one_problem(&manifest, "built_at:");
        }
    }

    #[test]
    fn empty_source_fields_are_refused() {
        let mut manifest = example();
        manifest.source_sha = Some(" ".into());
        assert_one_problem(&manifest, "source_sha: is empty");
    }

    #[test]
    fn digests_must_be_lowercase_hex() {
        let mut manifest = example();
        manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel.sha256 = A.to_uppercase();
        assert_one_problem(&manifest, "targets.arm64.kernel.sha256: \"AAAA");
        let mut manifest = example();
        manifest.targets.get_mut(&Arch::Arm64).unwrap().rootfs.sha256 = "abc".into();
        assert_one_problem(
            &manifest,
            "targets.arm64.rootfs.sha256: \"abc\" is not 64 lowercase hex digits",
        );
        let mut manifest = example();
        manifest.binaries[0].targets.get_mut(&Arch::Arm64).unwrap().sha256 = String::new();
        assert_one_problem(&manifest, "binaries[0].targets.arm64.sha256");
    }

    #[test]
    fn paths_must_be_relative_and_traversal_free() {
        let cases = [
            ("/asset/kernel", "is absolute"),
            ("asset/../kernel", "has a `..` component"),
            ("asset/./kernel", "has a `.` component"),
            ("asset\\kernel", "contains a backslash"),
            ("asset//kernel", "has an empty component"),
            ("asset/kernel/", "has an empty component"),
            ("", "is empty"),
        ];
        for (path, expected) in cases {
            let mut manifest = example();
            manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel.path = path.into();
            assert_one_problem(&manifest, "targets.arm64.kernel.path: ");
            assert_one_problem(&manifest, expected);
        }
        let mut manifest = example();
        manifest.binaries[0].install_dir = Some("../escape".into());
        assert_one_problem(&manifest, "binaries[0].install_dir: \"../escape\" has a `..` component");
    }

    #[test]
    fn unknown_arch_is_a_parse_error_naming_the_field() {
        let text = example_json_with(&[("\"arm64\"", "\"riscv64\"")]);
        let err = Manifest::from_json(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("targets") && err.contains("riscv64"), "{err}");
        assert_eq!(
            "riscv64".parse::<Arch>().unwrap_err().to_string(),
            "unknown arch \"riscv64\": expected `arm64` or `x86_64`"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_when_reading_and_refused_when_strict() {
        let text = example_json_with(&[
            ("\"built_at\"", "\"surprise\": 1, \"built_at\""),
            (
                "\"version\": \"6.12.8\"",
                "\"version\": \"6.12.8\", \"later\": {\"x\": [1]}",
            ),
        ]);
        let manifest = Manifest::from_json_validated(text.as_bytes()).unwrap();
        assert_eq!(manifest, example());
        let err = Manifest::from_json_strict(text.as_bytes()).unwrap_err().to_string();
        assert_eq!(
            err,
            "`surprise` is not a field of the contract: this tool writes only the contract's fields (remove it)"
        );
        let nested = example_json_with(&[("\"version\": \"6.12.8\"", "\"version\": \"6.12.8\", \"later\": 1")]);
        let err = Manifest::from_json_strict(nested.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("`targets.arm64.kernel.later` is not a field"), "{err}");
    }

    #[test]
    fn upstream_legacy_runtime_and_kernel_tag_are_read_and_kept() {
        let runtime = format!(r#""runtime": {{ "path": "asset/v0.2.0/arm64/runtime.erofs", "sha256": "{A}" }},"#);
        let text = example_json_with(&[
            ("\"kernel_cmdline\"", &format!("{runtime} \"kernel_cmdline\"")),
            ("\"6.12.8\"", "\"v0.0.19\""),
        ]);
        let manifest = Manifest::from_json_validated(text.as_bytes()).unwrap();
        let target = &manifest.targets[&Arch::Arm64];
        assert_eq!(target.kernel.version, "v0.0.19");
        assert_eq!(
            target.runtime.as_ref().unwrap().path,
            "asset/v0.2.0/arm64/runtime.erofs"
        );
        // A read-modify-write keeps it.
        let rewritten = Manifest::from_json(manifest.to_json_pretty().as_bytes()).unwrap();
        assert_eq!(rewritten, manifest);
        // But this repository never writes it.
        assert_eq!(
            manifest.validate_for_writing().unwrap_err().problems()[0].to_string(),
            "targets.arm64.runtime: is upstream's legacy runtime image: kept when read, never written; remove it"
        );
        example().validate_for_writing().unwrap();
    }

    #[test]
    fn size_is_optional_and_round_trips() {
        let mut manifest = example();
        assert_eq!(manifest.targets[&Arch::Arm64].rootfs.size, None);
        assert!(!manifest.to_json_pretty().contains("\"size\""));
        manifest.targets.get_mut(&Arch::Arm64).unwrap().rootfs.size = Some(4096);
        manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel.size = Some(10);
        let text = manifest.to_json_pretty();
        assert!(text.contains("\"size\": 4096"), "{text}");
        assert_eq!(Manifest::from_json_strict(text.as_bytes()).unwrap(), manifest);
    }

    #[test]
    fn duplicate_arch_keys_are_refused() {
        let text = example().to_json_pretty();
        let target_start = text.find("\"arm64\": {\n      \"kernel\"").unwrap();
        let target_end = text[target_start..].find("\n    }").unwrap() + target_start + "\n    }".len();
        let target = &text[target_start..target_end];
        let doubled = text.replacen(target, &format!("{target},\n    {target}"), 1);
        let err = Manifest::from_json(doubled.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("at `targets`") && err.contains("duplicate arch key `arm64`: each arch may appear only once"),
            "{err}"
        );
        let binary_target = r#""arm64": { "path": "bin/dockerd/27.5.1/arm64/dockerd""#;
        let text = example().to_json_pretty().replace(" ", "").replace("\n", "");
        let compact = binary_target.replace(" ", "");
        let start = text.rfind(&compact).unwrap();
        let end = text[start..].find('}').unwrap() + start + 1;
        let entry = &text[start..end];
        let doubled = format!("{}{entry},{}", &text[..start], &text[start..]);
        let err = Manifest::from_json(doubled.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("binaries[0].targets") && err.contains("duplicate arch key `arm64`"),
            "{err}"
        );
    }

    #[test]
    fn missing_field_names_its_parent() {
        let text = example_json_with(&[("\"version\": \"6.12.8\"", "\"ver\": \"6.12.8\"")]);
        let err = Manifest::from_json(text.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("targets.arm64.kernel"), "{err}");
    }

    #[test]
    fn binary_names_are_unique_and_safe() {
        let mut manifest = example();
        manifest.binaries.push(manifest.binaries[0].clone());
        assert_one_problem(
            &manifest,
            "binaries[1].name: \"dockerd\" is already used by binaries[0]",
        );
        for bad in ["../x", "a/b", ".hidden", "", "a b"] {
            let mut manifest = example();
            manifest.binaries[0].name = bad.into();
            assert_one_problem(&manifest, "binaries[0].name:");
        }
    }

    #[test]
    fn binary_version_is_path_safe() {
        let mut manifest = example();
        manifest.binaries[0].version = "1/2".into();
        assert_one_problem(&manifest, "binaries[0].version: \"1/2\" is not safe");
    }

    #[test]
    fn every_binary_has_a_target() {
        let mut manifest = example();
        manifest.binaries[0].targets.clear();
        assert_one_problem(&manifest, "binaries[0].targets: binary \"dockerd\" has no target arch");
    }

    #[test]
    fn targets_must_not_be_empty() {
        let mut manifest = example();
        manifest.targets.clear();
        assert_one_problem(&manifest, "targets: names no arch");
    }

    #[test]
    fn kernel_version_and_cmdline_must_be_set() {
        let mut manifest = example();
        manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel.version = "".into();
        assert_one_problem(&manifest, "targets.arm64.kernel.version: is empty");
        let mut manifest = example();
        manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel_cmdline = "".into();
        assert_one_problem(&manifest, "targets.arm64.kernel_cmdline: is empty");
    }

    /// A verified-root command line whose verity table has root hash `root`.
    fn verity_cmdline(root: &str) -> String {
        format!(
            "console=hvc0 dm-mod.create=\"rootfs,,0,ro,0 80 verity 1 /dev/vda /dev/vda 4096 4096 10 10 sha256 {root} {B}\" \
             dm-mod.waitfor=/dev/vda root=/dev/dm-0 ro rootfstype=erofs earlycon"
        )
    }

    #[test]
    fn cmdline_parameters_split_like_the_kernel() {
        let parameters = cmdline_parameters(" a=1  \"b=two words\" c=\"x, y;z\" flag d= -- init=ignored");
        let expected: Vec<(String, Option<String>)> = vec![
            ("a".into(), Some("1".into())),
            ("b".into(), Some("two words".into())),
            ("c".into(), Some("x, y;z".into())),
            ("flag".into(), None),
            ("d".into(), Some(String::new())),
        ];
        assert_eq!(parameters, expected);
        assert_eq!(cmdline_verity_root_hashes(&verity_cmdline(A)), vec![A.to_owned()]);
        let underscore = verity_cmdline(A).replace("dm-mod.create", "dm_mod.create");
        assert_eq!(cmdline_verity_root_hashes(&underscore), vec![A.to_owned()]);
        assert!(cmdline_verity_root_hashes("console=hvc0 root=/dev/vda").is_empty());
        // The kernel keeps the last dm-mod.create=; a linear table is not a verity one.
        let two = format!("{} dm-mod.create=\"lin,,,rw,0 8 linear /dev/vdb 0\"", verity_cmdline(A));
        assert!(cmdline_verity_root_hashes(&two).is_empty());
    }

    #[test]
    fn the_recorded_root_hash_must_agree_with_the_command_line() {
        let mut manifest = example();
        let target = manifest.targets.get_mut(&Arch::Arm64).unwrap();
        target.kernel_cmdline = verity_cmdline(A);
        target.rootfs_verity_root_hash = Some(A.into());
        manifest.validate_for_writing().unwrap();
        let text = manifest.to_json_pretty();
        assert!(
            text.contains(&format!("\"rootfs_verity_root_hash\": \"{A}\"")),
            "{text}"
        );
        assert_eq!(Manifest::from_json_strict(text.as_bytes()).unwrap(), manifest);

        manifest.targets.get_mut(&Arch::Arm64).unwrap().rootfs_verity_root_hash = Some(B.into());
        assert_one_problem(
            &manifest,
            &format!(
                "targets.arm64.rootfs_verity_root_hash: is {B} but kernel_cmdline's dm-verity table has root hash {A}: \
                 the two must agree"
            ),
        );
        let target = manifest.targets.get_mut(&Arch::Arm64).unwrap();
        target.kernel_cmdline = "console=hvc0 root=/dev/vda ro".into();
        assert_one_problem(
            &manifest,
            "kernel_cmdline builds no dm-verity device (no verity table in dm-mod.create=)",
        );
        manifest.targets.get_mut(&Arch::Arm64).unwrap().rootfs_verity_root_hash = Some("ABC".into());
        assert_eq!(problems(&manifest).len(), 2, "{:?}", problems(&manifest));
    }

    #[test]
    fn a_verity_command_line_without_a_recorded_root_hash_is_read_but_not_written() {
        let mut manifest = example();
        manifest.targets.get_mut(&Arch::Arm64).unwrap().kernel_cmdline = verity_cmdline(A);
        manifest.validate().unwrap();
        assert_eq!(
            manifest.validate_for_writing().unwrap_err().problems()[0].to_string(),
            "targets.arm64.rootfs_verity_root_hash: is missing, but kernel_cmdline builds a dm-verity root: \
             record its root hash"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut manifest = example();
        manifest.schema_version = 7;
        manifest.built_at = "yesterday".into();
        let err = manifest.validate().unwrap_err();
        assert_eq!(err.problems().len(), 2);
        assert!(err.to_string().starts_with("manifest breaks 2 rule(s)"), "{err}");
    }

    #[test]
    fn binaries_for_keeps_only_that_arch() {
        let mut binary = example().binaries[0].clone();
        binary.targets.insert(
            Arch::X86_64,
            FileEntry {
                path: "bin/x".into(),
                sha256: B.into(),
                size: None,
            },
        );
        let only_x86 = Manifest::binaries_for(std::slice::from_ref(&binary), Arch::X86_64);
        assert_eq!(
            only_x86[0].targets.keys().copied().collect::<Vec<_>>(),
            vec![Arch::X86_64]
        );
        binary.targets.remove(&Arch::X86_64);
        assert!(Manifest::binaries_for(&[binary], Arch::X86_64).is_empty());
    }

    #[test]
    fn latest_parses_and_checks_version() {
        let latest = Latest::from_json(br#"{"version":"0.2.0"}"#).unwrap();
        assert_eq!(latest.to_json_pretty(), "{\n  \"version\": \"0.2.0\"\n}\n");
        let err = Latest::from_json(br#"{"version":"latest"}"#).unwrap_err().to_string();
        assert!(err.contains("version: \"latest\" is not a semantic version"), "{err}");
    }

    #[test]
    fn timestamps_format_as_contract() {
        assert_eq!(format_utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc_timestamp(1_772_539_200), "2026-03-03T12:00:00Z");
    }
}
