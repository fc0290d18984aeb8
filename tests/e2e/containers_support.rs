//! Helpers of the container tests: the pinned Debian container runtime packages and the product
//! chain that carries their programs into the guest.
//!
//! Reads `tests/fixtures/containers/packages.lock` (containerd and runc per Debian arch, in the
//! format of `manifests/rootfs.lock`); `cargo xtask fetch-packages` fetches exactly those files
//! (the rootfs build's apt path: private apt state, every digest checked, the download cache).
//! Then the release chain, once per test run, in `{target}/e2e-containers/`: nginx serves the
//! package files, a binaries config names them with `format = "deb"`, `cargo xtask sync-binaries`
//! stages the programs and writes the fragment, `release --binaries-json` (both arches, with the
//! kernel and rootfs of `boot_support::assets`), `merge-manifest` and `cdn-tree` lay out the CDN, and
//! [`install_from_cdn`] serves that tree with nginx and installs one arch with `cargo xtask fetch
//! --binaries` — the runtime bin dir the boot shares into the guest.

use std::path::{Path, PathBuf};
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
    run_ok(
        xtask()
            .arg("fetch-packages")
            .arg("--lock")
            .arg(project_root().join(PACKAGES_LOCK))
            .arg("--output")
            .arg(work.join("mirror/pool")),
    );
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
