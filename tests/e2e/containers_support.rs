//! Helpers of the container tests: the pinned Debian container runtime packages and the product
//! chain that carries their programs into the guest.
//!
//! Reads `tests/fixtures/containers/packages.lock` (containerd and runc per Debian arch, in the
//! format of `manifests/rootfs.lock`) and fetches exactly those files with the host's apt, using
//! private per-arch state under `{cache}/containers/apt/{deb_arch}` (the host's sources are only
//! read), keeping them as `{cache}/containers/debs/{sha256}.deb` and checking every digest before
//! use (`{cache}` is `$BOOT_ASSETS_CACHE_DIR`, default `~/.cache/boot-assets`). Then the release
//! chain, once per test run, in `{target}/e2e-containers/`: nginx serves the package files, a
//! binaries config names them with `format = "deb"`, `cargo xtask sync-binaries` stages the
//! programs and writes the fragment, `release --binaries-json` (both arches, with the kernel and
//! rootfs of `boot_support::assets`), `merge-manifest` and `cdn-tree` lay out the CDN, and
//! [`install_from_cdn`] serves that tree with nginx and installs one arch with `cargo xtask fetch
//! --binaries` — the runtime bin dir the boot shares into the guest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use boot_assets::Arch;
use serde::Deserialize;

use crate::boot_support as boot;
use crate::nginx::Nginx;
use crate::support::{self, project_root, run_ok, xtask};

/// The agent that checks containers from inside the guest.
pub const CONTAINER_AGENT: &str = "tests/fixtures/agent/container-agent.sh";

/// The checks of the container agent that do not depend on the recipe, one a line.
pub const CONTAINER_AGENT_EXPECTED: &str = "tests/fixtures/agent/container-agent.expected";

/// The pinned package files.
const PACKAGES_LOCK: &str = "tests/fixtures/containers/packages.lock";

/// The rtnetlink helper that creates a vxlan link (busybox `ip` cannot pass a VNI).
const VXLAN_LINK_SOURCE: &str = "tests/fixtures/containers/vxlan-link.c";

/// The asset version of the release that carries the container runtime.
pub const CHAIN_VERSION: &str = "0.0.1-containers";

/// The programs taken out of the packages: (binary name, package, path in its data archive).
pub const PROGRAMS: &[(&str, &str, &str)] = &[
    ("containerd", "containerd", "usr/bin/containerd"),
    (
        "containerd-shim-runc-v2",
        "containerd",
        "usr/bin/containerd-shim-runc-v2",
    ),
    ("ctr", "containerd", "usr/bin/ctr"),
    // Debian's usr/bin/runc is a symlink to this file; sync-binaries refuses links.
    ("runc", "runc", "usr/sbin/runc"),
];

/// The private apt configuration read after the host's: no hooks that would act on the host's
/// caches, no index targets that are not needed (the rootfs build reads the same file).
const PRIVATE_APT_CONF_PATH: &str = "manifests/templates/apt.conf";

#[derive(Debug, Deserialize)]
struct Lock {
    package: Vec<LockedPackage>,
}

/// One pinned package file: the fields the tests read (the lock's `arch` and `size` are skipped).
#[derive(Debug, Clone, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub for_arch: String,
    pub version: String,
    pub filename: String,
    pub sha256: String,
}

/// The Debian architecture of an arch.
pub fn deb_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "arm64",
        Arch::X86_64 => "amd64",
    }
}

/// Every pinned package file of the lock.
pub fn locked_packages() -> Vec<LockedPackage> {
    let path = project_root().join(PACKAGES_LOCK);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let lock: Lock = toml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    lock.package
}

/// The lock entry of `package` for `arch`.
fn locked<'a>(packages: &'a [LockedPackage], package: &str, arch: Arch) -> &'a LockedPackage {
    packages
        .iter()
        .find(|entry| entry.name == package && entry.for_arch == deb_arch(arch))
        .unwrap_or_else(|| panic!("{PACKAGES_LOCK} has no {package} for {}", deb_arch(arch)))
}

fn cache_dir() -> PathBuf {
    std::env::var_os("BOOT_ASSETS_CACHE_DIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/boot-assets"))
}

/// apt with private state for one Debian architecture.
struct PrivateApt {
    root: PathBuf,
}

impl PrivateApt {
    fn new(deb_arch: &str) -> PrivateApt {
        let root = cache_dir().join("containers/apt").join(deb_arch);
        for dir in ["state/lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        if !root.join("state/status").exists() {
            std::fs::write(root.join("state/status"), b"").unwrap();
        }
        // The private apt.conf: the checked-in template, then the settings that point apt at this
        // state and arch (apt reads it after the host's configuration).
        let template = project_root().join(PRIVATE_APT_CONF_PATH);
        let mut conf =
            std::fs::read_to_string(&template).unwrap_or_else(|e| panic!("reading {}: {e}", template.display()));
        let (state, cache) = (root.join("state"), root.join("cache"));
        conf.push_str(&format!(
            "APT::Architecture \"{deb_arch}\";\n\
             APT::Architectures \"{deb_arch}\";\n\
             Dir::State \"{}\";\n\
             Dir::State::status \"{}\";\n\
             Dir::Cache \"{}\";\n\
             APT::Sandbox::User \"root\";\n",
            state.display(),
            state.join("status").display(),
            cache.display()
        ));
        std::fs::write(root.join("apt.conf"), conf).unwrap();
        PrivateApt { root }
    }

    fn command(&self, tool: &str) -> Command {
        let mut command = Command::new(support::require_tool(tool));
        command.arg("-c").arg(self.root.join("apt.conf"));
        command
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.root.join("state/lists"))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().contains("Packages"))
            })
            .unwrap_or(false)
    }

    fn update(&self) {
        run_ok(self.command("apt-get").args(["-q", "update"]));
    }

    /// `apt-get download name=version…` into `dir`; false when apt fails.
    fn download(&self, entries: &[&LockedPackage], dir: &Path) -> bool {
        let mut command = self.command("apt-get");
        command.args(["-q", "download"]).current_dir(dir);
        command.args(entries.iter().map(|entry| format!("{}={}", entry.name, entry.version)));
        command.output().is_ok_and(|output| output.status.success())
    }
}

/// The package files of `entries`, from the cache or fetched with apt, each checked against its
/// locked sha256.
pub fn fetch_packages(entries: &[LockedPackage]) -> Vec<PathBuf> {
    let debs = cache_dir().join("containers/debs");
    std::fs::create_dir_all(&debs).unwrap();
    let cached = |entry: &LockedPackage| debs.join(format!("{}.deb", entry.sha256));
    let mut by_arch: BTreeMap<&str, Vec<&LockedPackage>> = BTreeMap::new();
    for entry in entries.iter().filter(|entry| !cached(entry).is_file()) {
        by_arch.entry(entry.for_arch.as_str()).or_default().push(entry);
    }
    for (deb_arch, missing) in by_arch {
        let apt = PrivateApt::new(deb_arch);
        let download = tempfile::tempdir_in(&debs).unwrap();
        if !apt.has_lists() {
            apt.update();
        }
        if !apt.download(&missing, download.path()) {
            // The lists may predate the locked versions: refresh once and retry.
            apt.update();
            let names: Vec<String> = missing.iter().map(|e| format!("{}={}", e.name, e.version)).collect();
            assert!(
                apt.download(&missing, download.path()),
                "apt-get download {} ({deb_arch}) failed: the archive may have moved on; re-resolve \
                 {PACKAGES_LOCK} with apt-cache (see its header)",
                names.join(" ")
            );
        }
        // apt names files after their version; match them by digest.
        for file in std::fs::read_dir(download.path()).unwrap().flatten() {
            let digest = support::sha256_file(&file.path());
            if let Some(entry) = missing.iter().find(|entry| entry.sha256 == digest) {
                std::fs::rename(file.path(), cached(entry)).unwrap();
            }
        }
    }
    entries
        .iter()
        .map(|entry| {
            let path = cached(entry);
            assert!(
                path.is_file(),
                "apt-get downloaded no file with the sha256 {PACKAGES_LOCK} pins for {} {} ({})",
                entry.name,
                entry.version,
                entry.for_arch
            );
            let digest = support::sha256_file(&path);
            assert_eq!(
                digest,
                entry.sha256,
                "{}: the cached package file does not have the locked sha256; delete it to fetch it again",
                path.display()
            );
            path
        })
        .collect()
}

/// A version usable as a manifest version and path component (`~` is not).
pub fn binary_version(debian_version: &str) -> String {
    debian_version.replace('~', "-")
}

/// The binaries config that takes every program of [`PROGRAMS`] out of the packages served at
/// `base_url/pool/{filename}`, for both arches.
pub fn binaries_config(packages: &[LockedPackage], base_url: &str) -> String {
    let mut text = String::from(
        "# Written by the container e2e suite: Debian's container runtime, served by nginx on loopback.\n",
    );
    for (name, package, member) in PROGRAMS {
        let version = binary_version(&locked(packages, package, Arch::X86_64).version);
        text.push_str(&format!("\n[[binary]]\nname = \"{name}\"\nversion = \"{version}\"\n"));
        for arch in Arch::ALL {
            let entry = locked(packages, package, arch);
            assert_eq!(
                binary_version(&entry.version),
                version,
                "{PACKAGES_LOCK}: {package} has different versions per arch"
            );
            text.push_str(&format!(
                "[binary.source.{arch}]\nformat = \"deb\"\nurl = \"{base_url}/pool/{}\"\nextract = \"{member}\"\nsha256 = \"{}\"\n",
                entry.filename, entry.sha256
            ));
        }
    }
    text
}

fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"));
    target.join("e2e-containers")
}

/// The CDN tree of a release of both arches that carries the container runtime, made once per
/// test run through the product's own commands.
pub fn container_cdn_tree() -> PathBuf {
    static TREE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut tree = TREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tree.get_or_insert_with(|| build_release_chain(&work_dir())).clone()
}

fn build_release_chain(work: &Path) -> PathBuf {
    for stale in ["mirror", "dist", "cdn"] {
        let _ = std::fs::remove_dir_all(work.join(stale));
    }
    let packages = locked_packages();
    let files = fetch_packages(&packages);
    let pool = work.join("mirror/pool");
    std::fs::create_dir_all(&pool).unwrap();
    for (entry, file) in packages.iter().zip(&files) {
        std::fs::copy(file, pool.join(&entry.filename)).unwrap();
    }
    let dist = work.join("dist");
    let fragment = dist.join("bin/binaries.json");
    {
        let mirror = Nginx::start(&work.join("mirror"));
        let config = work.join("binaries.toml");
        std::fs::write(&config, binaries_config(&packages, &mirror.url())).unwrap();
        run_ok(
            xtask()
                .arg("sync-binaries")
                .arg("--config")
                .arg(&config)
                .arg("--output")
                .arg(dist.join("bin"))
                .arg("--binaries-json")
                .arg(&fragment),
        );
    }
    for arch in Arch::ALL {
        let (kernel, rootfs) = boot::kernel_and_rootfs(&boot::assets(arch), &work.join(arch.as_str()));
        run_ok(
            support::release_command(CHAIN_VERSION, arch, &kernel, &rootfs, &dist)
                .arg("--binaries-json")
                .arg(&fragment)
                .env("SOURCE_DATE_EPOCH", "1772539200"),
        );
    }
    support::merge_manifests(&dist, &Arch::ALL);
    let cdn = work.join("cdn");
    support::cdn_tree(&dist, &cdn);
    cdn
}

/// What `cargo xtask fetch` installed for one arch.
pub struct Installed {
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    pub runtime_bin: PathBuf,
}

/// Serves `cdn` with nginx and installs `arch`'s assets and runtime binaries into `into` with
/// the AssetManager (`cargo xtask fetch --binaries`); checks that every program arrived.
pub fn install_from_cdn(arch: Arch, cdn: &Path, into: &Path) -> Installed {
    use std::os::unix::fs::PermissionsExt;
    let server = Nginx::start(cdn);
    let boot_cache = into.join("boot");
    let runtime_bin = into.join("runtime/bin");
    run_ok(
        xtask()
            .args(["fetch", "--quiet", "--arch", arch.as_str(), "--cdn", &server.url()])
            .args(["--version", CHAIN_VERSION])
            .arg("--dest")
            .arg(&boot_cache)
            .arg("--binaries")
            .arg(&runtime_bin),
    );
    for (name, _, _) in PROGRAMS {
        let path = runtime_bin.join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("fetch did not install {}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        let head = std::fs::read(&path).unwrap();
        let machine = u16::from_le_bytes([head[18], head[19]]);
        let expected = match arch {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        };
        assert!(
            head.starts_with(b"\x7fELF") && machine == expected,
            "{} is not an {arch} ELF program (e_machine {machine})",
            path.display()
        );
    }
    let version_dir = boot_cache.join(CHAIN_VERSION);
    Installed {
        kernel: version_dir.join("kernel"),
        rootfs: version_dir.join("rootfs.erofs"),
        runtime_bin,
    }
}

/// The static vxlan-link helper for `arch`, built with the distro's (cross) compiler.
pub fn vxlan_link_helper(arch: Arch, dir: &Path) -> PathBuf {
    let source = std::fs::read_to_string(project_root().join(VXLAN_LINK_SOURCE)).unwrap();
    let compiler = match arch {
        Arch::X86_64 => "gcc",
        Arch::Arm64 => "aarch64-linux-gnu-gcc",
    };
    boot::compile_static(
        compiler,
        &source,
        &["-static", "-O2", "-Wall", "-Werror"],
        &dir.join(format!("vxlan-link-{arch}")),
    )
}
