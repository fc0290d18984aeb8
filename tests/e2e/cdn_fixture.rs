//! A small asset version served by the fault server: random kernel and rootfs bytes, a valid
//! manifest for x86_64, `latest.json`, and an AssetManager configured for quick tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boot_assets::asset_manager::{AssetManager, AssetManagerBuilder};
use boot_assets::{cdn, Arch, Binary, FileEntry, KernelEntry, Latest, Manifest, Target};

use crate::fault_server::FaultServer;
use crate::support::{sha256_hex, xtask};

/// The version every fixture publishes.
pub const VERSION: &str = "1.2.3";

/// The arch every fixture publishes.
pub const ARCH: Arch = Arch::X86_64;

/// Size of the fixture rootfs: large enough for several chunks and a visible resume.
pub const ROOTFS_BYTES: usize = 2 * 1024 * 1024 + 12345;

/// Size of the fixture kernel.
pub const KERNEL_BYTES: usize = 300 * 1024;

/// One published version on a fault server, and a cache directory to install it into.
pub struct Fixture {
    pub server: FaultServer,
    pub kernel: Vec<u8>,
    pub rootfs: Vec<u8>,
    pub manifest: Manifest,
    pub cache: tempfile::TempDir,
}

/// The CDN path of the fixture rootfs.
pub fn rootfs_path() -> String {
    cdn::rootfs_path(VERSION, ARCH)
}

/// The CDN path of the fixture kernel.
pub fn kernel_path() -> String {
    cdn::kernel_path(VERSION, ARCH)
}

/// Random bytes (incompressible, so sizes mean what they say).
pub fn random_bytes(length: usize) -> Vec<u8> {
    let mut generator = fastrand::Rng::new();
    (0..length).map(|_| generator.u8(..)).collect()
}

impl Fixture {
    /// Publishes a fresh version on a fresh server.
    pub fn new() -> Fixture {
        Fixture::with_rootfs_bytes(ROOTFS_BYTES)
    }

    /// Publishes a fresh version whose rootfs has `rootfs_bytes` bytes.
    pub fn with_rootfs_bytes(rootfs_bytes: usize) -> Fixture {
        let server = FaultServer::start();
        let kernel = random_bytes(KERNEL_BYTES);
        let rootfs = random_bytes(rootfs_bytes);
        let manifest = Manifest {
            schema_version: 1,
            asset_version: VERSION.into(),
            built_at: "2026-03-03T12:00:00Z".into(),
            source_repo: None,
            source_ref: None,
            source_sha: None,
            targets: [(
                ARCH,
                Target {
                    kernel: KernelEntry {
                        path: kernel_path(),
                        sha256: sha256_hex(&kernel),
                        version: "6.1.0".into(),
                        size: Some(kernel.len() as u64),
                    },
                    rootfs: FileEntry {
                        path: rootfs_path(),
                        sha256: sha256_hex(&rootfs),
                        size: Some(rootfs.len() as u64),
                    },
                    kernel_cmdline: ARCH.default_kernel_cmdline().into(),
                    rootfs_verity_root_hash: None,
                    runtime: None,
                },
            )]
            .into(),
            binaries: Vec::new(),
        };
        server.put(&kernel_path(), kernel.clone());
        server.put(&rootfs_path(), rootfs.clone());
        server.put(&cdn::manifest_path(VERSION), manifest.to_json_pretty());
        server.put(
            cdn::LATEST_PATH,
            Latest {
                version: VERSION.into(),
            }
            .to_json_pretty(),
        );
        Fixture {
            server,
            kernel,
            rootfs,
            manifest,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    /// Adds runtime binaries `(name, install_dir, bytes)` to the manifest and serves them.
    pub fn add_binaries(&mut self, binaries: &[(&str, Option<&str>, &[u8])]) {
        for (name, install_dir, bytes) in binaries {
            let path = cdn::binary_path(name, "1.0+b", ARCH);
            self.server.put(&path, bytes.to_vec());
            self.manifest.binaries.push(Binary {
                name: (*name).into(),
                version: "1.0+b".into(),
                install_dir: install_dir.map(str::to_owned),
                targets: [(
                    ARCH,
                    FileEntry {
                        path,
                        sha256: sha256_hex(bytes),
                        size: Some(bytes.len() as u64),
                    },
                )]
                .into(),
            });
        }
        self.server
            .put(&cdn::manifest_path(VERSION), self.manifest.to_json_pretty());
    }

    /// Serves `manifest` (unvalidated, as given) instead of the fixture's.
    pub fn serve_manifest_text(&self, text: &str) {
        self.server.put(&cdn::manifest_path(VERSION), text.to_owned());
    }

    /// A manager for this fixture: short timeouts and backoff so faults resolve quickly.
    pub fn builder(&self) -> AssetManagerBuilder {
        AssetManager::builder(self.server.url())
            .version(VERSION)
            .arch(ARCH)
            .cache_dir(self.cache.path())
            .retries(3)
            .retry_backoff(Duration::from_millis(10))
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(2))
    }

    /// `cargo xtask fetch` of the fixture's version and arch into `dest`, ready for more arguments.
    pub fn fetch_command(&self, dest: &Path) -> Command {
        let mut command = xtask();
        command
            .args([
                "fetch",
                "--quiet",
                "--cdn",
                &self.server.url(),
                "--version",
                VERSION,
                "--arch",
            ])
            .arg(ARCH.as_str())
            .arg("--dest")
            .arg(dest);
        command
    }

    /// A built manager for this fixture.
    pub fn manager(&self) -> AssetManager {
        self.builder().build().unwrap()
    }

    /// The URL the fixture rootfs is served at, as error messages name it.
    pub fn rootfs_url(&self) -> String {
        format!("{}/{}", self.server.url(), rootfs_path())
    }

    /// `{cache}/{VERSION}`.
    pub fn version_dir(&self) -> PathBuf {
        self.cache.path().join(VERSION)
    }

    /// Asserts that kernel and rootfs are installed with exactly the published bytes.
    pub fn assert_installed(&self) {
        let dir = self.version_dir();
        assert!(
            std::fs::read(dir.join(cdn::KERNEL_FILE)).unwrap() == self.kernel,
            "the installed kernel differs from the published one"
        );
        assert!(
            std::fs::read(dir.join(cdn::ROOTFS_FILE)).unwrap() == self.rootfs,
            "the installed rootfs differs from the published one"
        );
        self.assert_no_corrupt_final_file();
    }

    /// Asserts the invariant of every fault case: whatever sits at a final path is intact.
    pub fn assert_no_corrupt_final_file(&self) {
        let dir = self.version_dir();
        for (name, expected) in [(cdn::KERNEL_FILE, &self.kernel), (cdn::ROOTFS_FILE, &self.rootfs)] {
            if let Ok(bytes) = std::fs::read(dir.join(name)) {
                assert!(bytes == *expected, "{name} sits at its final path with the wrong bytes");
            }
        }
    }

    /// The fixture's manifest with the rootfs entry's `size` set to `size`, served.
    pub fn serve_rootfs_size(&mut self, size: u64) {
        self.manifest.targets.get_mut(&ARCH).unwrap().rootfs.size = Some(size);
        self.server
            .put(&cdn::manifest_path(VERSION), self.manifest.to_json_pretty());
    }

    /// Files in the version directory whose name starts with `.partial-`.
    pub fn partial_files(&self) -> Vec<PathBuf> {
        list_with_prefix(&self.version_dir(), ".partial-")
    }
}

fn list_with_prefix(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
