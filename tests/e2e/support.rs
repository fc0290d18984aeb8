//! Shared helpers of the e2e suite: the xtask binary, the repository root, tool checks, digests,
//! and the release → merge-manifest → cdn-tree chain every pipeline test runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use boot_assets::{cdn, Arch};
use sha2::{Digest, Sha256};

/// The repository root.
pub fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `xtask` binary, built once per test run with the same cargo that runs the tests.
pub fn xtask_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--package", "xtask"])
            .current_dir(project_root())
            .status()
            .expect("running cargo build --package xtask");
        assert!(status.success(), "cargo build --package xtask failed");
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| project_root().join("target"));
        let binary = target_dir.join("debug").join("xtask");
        assert!(binary.exists(), "xtask binary not found at {}", binary.display());
        binary
    })
}

/// A `cargo xtask` command, ready for arguments.
pub fn xtask() -> Command {
    let mut command = Command::new(xtask_binary());
    command.current_dir(project_root());
    command
}

/// Runs a command and returns its output, panicking with both streams when it fails.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command that must fail; returns its stderr.
pub fn run_fails(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} should have failed\nstdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The host tools table (tool → package → jobs) xtask's own tool check reads.
const HOST_PACKAGES_PATH: &str = "manifests/host-packages.toml";

/// How to install `tool`: `run \`cargo xtask setup\` (package …)`, with the package the `[tools]`
/// table of manifests/host-packages.toml names; a tool the table lacks fails the test.
pub fn install_line(tool: &str) -> String {
    static TABLE: OnceLock<toml::Table> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let path = project_root().join(HOST_PACKAGES_PATH);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        text.parse()
            .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    });
    let package = table
        .get("tools")
        .and_then(|tools| tools.get(tool))
        .and_then(|entry| entry.get("package"))
        .and_then(|package| package.as_str())
        .unwrap_or_else(|| panic!("`{tool}` is not in the [tools] table of {HOST_PACKAGES_PATH}: add it"));
    format!("run `cargo xtask setup` (package {package})")
}

/// Panics with the install line when a required tool is missing, so no test passes without it.
pub fn require_tool(tool: &str) -> PathBuf {
    let install = install_line(tool);
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| panic!("`{tool}` is required for this test but is not on PATH: {install}"))
}

/// The sha256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The sha256 of the file at `path`, as lowercase hex.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    sha256_hex(&bytes)
}

/// `cargo xtask release` of one arch from `kernel` and `rootfs` into `dist`, ready for more
/// arguments (`--binaries-json`, `SOURCE_DATE_EPOCH`…).
pub fn release_command(version: &str, arch: Arch, kernel: &Path, rootfs: &Path, dist: &Path) -> Command {
    let mut command = xtask();
    command
        .args(["release", "--version", version, "--arch", arch.as_str()])
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .arg("--output-dir")
        .arg(dist);
    command
}

/// `cargo xtask merge-manifest` of the per-arch manifests of `arches` in `dist` into
/// `dist/manifest.json`; returns that path.
pub fn merge_manifests(dist: &Path, arches: &[Arch]) -> PathBuf {
    let merged = dist.join(cdn::MANIFEST_FILE);
    run_ok(
        xtask()
            .arg("merge-manifest")
            .args(
                arches
                    .iter()
                    .map(|arch| dist.join(arch.as_str()).join(cdn::MANIFEST_FILE)),
            )
            .arg("--output")
            .arg(&merged),
    );
    merged
}

/// `cargo xtask cdn-tree` of `dist` into `output`.
pub fn cdn_tree(dist: &Path, output: &Path) {
    run_ok(
        xtask()
            .args(["cdn-tree", "--dist"])
            .arg(dist)
            .arg("--output")
            .arg(output),
    );
}

/// Every file under `root`, as sorted relative paths.
pub fn files_under(root: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    files
}

/// One `#[test]` per case, each calling `$body` with its case: the tests that run the same
/// check once per arch (or per fault) name their cases here instead of each repeating the
/// three-line wrapper. Attributes (`///` docs, `#[ignore]`) before a name go on that test.
///
/// ```ignore
/// support::test_per_case!(full_guest_checks {
///     qemu_boots_x86_64_linux: Arch::X86_64,
///     qemu_boots_arm64_linux: Arch::Arm64,
/// });
/// ```
macro_rules! test_per_case {
    ($body:path { $($(#[$attribute:meta])* $name:ident: $case:expr),+ $(,)? }) => {
        $(
            $(#[$attribute])*
            #[test]
            fn $name() {
                $body($case);
            }
        )+
    };
}
pub(crate) use test_per_case;

/// One member of a test `.tgz` written by [`write_tgz`].
pub enum TgzMember<'a> {
    /// A regular file with mode 0755: (path, contents).
    Program(&'a str, &'a [u8]),
    /// A symbolic link: (path, target).
    Symlink(&'a str, &'a str),
    /// A regular file whose name field holds these bytes as they are, unchecked — how a hostile
    /// archive carries a `..` name the `tar` crate would refuse to write: (name, contents).
    RawName(&'a [u8], &'a [u8]),
}

/// Writes a gzipped tar of `members`, in order, at `path`; returns its sha256.
pub fn write_tgz(path: &Path, members: &[TgzMember]) -> String {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    for member in members {
        let mut header = tar::Header::new_gnu();
        match *member {
            TgzMember::Program(name, body) => {
                header.set_size(body.len() as u64);
                header.set_mode(0o755);
                header.set_cksum();
                tar.append_data(&mut header, name, body).unwrap();
            }
            TgzMember::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, name, target).unwrap();
            }
            TgzMember::RawName(name, body) => {
                header.set_size(body.len() as u64);
                header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
                header.set_cksum();
                tar.append(&header, body).unwrap();
            }
        }
    }
    tar.into_inner().unwrap().finish().unwrap();
    sha256_file(path)
}

/// Runs a command that must succeed (see [`run_ok`]) and returns its stdout, which must be UTF-8.
/// xtask's download cache below `cache` (a `BOOT_ASSETS_CACHE_DIR`): downloads and apt's
/// package files alike, each named by its sha256.
pub fn download_cache(cache: &Path) -> PathBuf {
    cache.join("downloads")
}

/// The file of `sha256` in the [`download_cache`] below `cache`.
pub fn cached_download(cache: &Path, sha256: &str) -> PathBuf {
    download_cache(cache).join(sha256)
}

pub fn stdout_of(command: &mut Command) -> String {
    let output = run_ok(command);
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("{command:?} printed no UTF-8: {e}"))
}
