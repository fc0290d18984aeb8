//! Helpers of the container tests: the release chain that carries the container stack into the
//! guest, the test-only tools beside it, and the test image.
//!
//! The chain, once per test run, in `{target}/e2e-containers/`: `cargo xtask sync-binaries` with
//! the default `manifests/binaries.toml` (the stack built from pinned Debian sources, cached)
//! stages the five runtime binaries and writes the fragment, `release --binaries-json` (both
//! arches, with the kernel and rootfs of `boot_support::assets`), `merge-manifest` and `cdn-tree`
//! lay out the CDN, and [`install_from_cdn`] serves that tree with nginx and installs one arch with
//! `cargo xtask fetch --binaries` — the runtime bin dir the boot shares into the guest.
//! [`test_tools`] are the stack's `ctr` and `docker` CLI (built with it, not shipped), and
//! [`test_image`] a one-layer image of Debian's busybox-static
//! (`tests/fixtures/containers/packages.lock`, fetched with `cargo xtask fetch-packages`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use boot_assets::Arch;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::boot_support as boot;
use crate::nginx::Nginx;
use crate::support::{self, project_root, run_ok, xtask};

/// The agent that checks containers from inside the guest.
pub const CONTAINER_AGENT: &str = "tests/fixtures/agent/container-agent.sh";

/// The checks of the container agent that do not depend on the recipe, one a line.
pub const CONTAINER_AGENT_EXPECTED: &str = "tests/fixtures/agent/container-agent.expected";

/// The pinned package of the test image.
const PACKAGES_LOCK: &str = "tests/fixtures/containers/packages.lock";

/// The rtnetlink helper that creates a vxlan link (busybox `ip` cannot pass a VNI).
const VXLAN_LINK_SOURCE: &str = "tests/fixtures/containers/vxlan-link.c";

/// The asset version of the release that carries the container runtime.
pub const CHAIN_VERSION: &str = "0.0.1-containers";

/// The runtime binaries a release ships (manifests/binaries.toml).
pub const PROGRAMS: &[&str] = &[
    "dockerd",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "docker-init",
];

/// The stack's outputs the tests use that a release does not ship.
pub const TEST_TOOLS: &[&str] = &["ctr", "docker"];

/// The tag of the test image.
pub const TEST_IMAGE: &str = "boot-assets/busybox:test";

/// The page the test image's web root serves.
pub const TEST_PAGE: &str = "boot-assets test page";

#[derive(Debug, Deserialize)]
struct Lock {
    package: Vec<LockedPackage>,
}

/// One pinned package file: the fields the tests read (the lock's `arch` and `size` are skipped).
#[derive(Debug, Clone, Deserialize)]
pub struct LockedPackage {
    pub name: String,
    pub for_arch: String,
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

/// The stack's outputs for `arch` by name, as `cargo xtask stack` prints them (built or cached).
pub fn stack_outputs(arch: Arch) -> BTreeMap<String, PathBuf> {
    static OUTPUTS: Mutex<BTreeMap<Arch, BTreeMap<String, PathBuf>>> = Mutex::new(BTreeMap::new());
    let mut outputs = OUTPUTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    outputs
        .entry(arch)
        .or_insert_with(|| {
            let printed = run_ok(xtask().args(["stack", "--arch", arch.as_str()]));
            String::from_utf8_lossy(&printed.stdout)
                .lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    match fields[..] {
                        [a, name, _size, path] if a == arch.as_str() => Some((name.to_owned(), PathBuf::from(path))),
                        _ => None,
                    }
                })
                .collect()
        })
        .clone()
}

/// The test-only tools of [`TEST_TOOLS`] for `arch`: `(name, path)`.
pub fn test_tools(arch: Arch) -> Vec<(String, PathBuf)> {
    let outputs = stack_outputs(arch);
    TEST_TOOLS
        .iter()
        .map(|name| {
            let path = outputs
                .get(*name)
                .unwrap_or_else(|| panic!("`cargo xtask stack --arch {arch}` printed no {name}: {outputs:?}"));
            ((*name).to_owned(), path.clone())
        })
        .collect()
}

/// A docker-archive (`docker save` format) of a one-layer image for `arch` at `dir/image.tar`:
/// Debian's static busybox as /bin/busybox with links for the applets the agents run, a web root
/// /www with [`TEST_PAGE`].
/// `docker load` and `ctr image import` both read it.
pub fn test_image(arch: Arch, dir: &Path) -> PathBuf {
    let busybox = busybox_static(arch, dir);
    let mut layer = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, bytes: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(mode);
        header.set_mtime(0);
        match link {
            Some(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                layer.append_link(&mut header, path, target).unwrap();
            }
            None if path.ends_with('/') => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                layer.append_data(&mut header, path, &[][..]).unwrap();
            }
            None => {
                header.set_size(bytes.len() as u64);
                layer.append_data(&mut header, path, bytes).unwrap();
            }
        }
    };
    for dir in ["bin/", "etc/", "proc/", "sys/", "dev/", "tmp/", "www/"] {
        add(dir, 0o755, b"", None);
    }
    add("bin/busybox", 0o755, &busybox, None);
    // The applets the agents run as commands (a shell finds every applet itself).
    for applet in ["sh", "cat", "sleep", "httpd", "ping", "nslookup", "ip", "wget"] {
        add(&format!("bin/{applet}"), 0o777, b"", Some("busybox"));
    }
    add("www/index.html", 0o644, format!("{TEST_PAGE}\n").as_bytes(), None);
    let layer = layer.into_inner().unwrap();
    let diff_id = format!("sha256:{:x}", Sha256::digest(&layer));
    let config = serde_json::json!({
        "architecture": match arch { Arch::Arm64 => "arm64", Arch::X86_64 => "amd64" },
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/" },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "boot-assets e2e test image" }],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{:x}.json", Sha256::digest(&config));
    let manifest = serde_json::json!([{ "Config": config_name, "RepoTags": [TEST_IMAGE], "Layers": ["layer.tar"] }]);
    let mut image = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("layer.tar", layer),
        (config_name.as_str(), config),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(bytes.len() as u64);
        image.append_data(&mut header, name, &bytes[..]).unwrap();
    }
    let path = dir.join(format!("image-{arch}.tar"));
    std::fs::write(&path, image.into_inner().unwrap()).unwrap();
    path
}

/// `bin/busybox` of the pinned busybox-static package of `arch`, fetched with `fetch-packages`.
fn busybox_static(arch: Arch, dir: &Path) -> Vec<u8> {
    let package = locked_packages()
        .into_iter()
        .find(|entry| entry.name == "busybox-static" && entry.for_arch == deb_arch(arch))
        .unwrap_or_else(|| panic!("{PACKAGES_LOCK} has no busybox-static for {}", deb_arch(arch)));
    let pool = dir.join(format!("pool-{arch}"));
    run_ok(
        xtask()
            .arg("fetch-packages")
            .arg("--lock")
            .arg(project_root().join(PACKAGES_LOCK))
            .arg("--output")
            .arg(&pool),
    );
    let unpacked = dir.join(format!("busybox-static-{arch}"));
    support::require_tool("dpkg-deb");
    run_ok(
        std::process::Command::new("dpkg-deb")
            .arg("-x")
            .arg(pool.join(&package.filename))
            .arg(&unpacked),
    );
    std::fs::read(unpacked.join("bin/busybox")).unwrap()
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
    for stale in ["dist", "cdn"] {
        let _ = std::fs::remove_dir_all(work.join(stale));
    }
    let dist = work.join("dist");
    let fragment = dist.join("bin/binaries.json");
    // The default binaries config, as `dist` runs it: the stack built from pinned sources.
    run_ok(
        xtask()
            .arg("sync-binaries")
            .arg("--output")
            .arg(dist.join("bin"))
            .arg("--binaries-json")
            .arg(&fragment),
    );
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
    for name in PROGRAMS {
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
        let elf = goblin::elf::Elf::parse(&head).unwrap();
        assert!(
            elf.interpreter.is_none() && elf.libraries.is_empty(),
            "{} is not static: PT_INTERP {:?}, DT_NEEDED {:?}",
            path.display(),
            elf.interpreter,
            elf.libraries
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
