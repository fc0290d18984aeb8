//! Helpers of the publish tests: a real S3-compatible server (`rclone serve s3`) over a temporary
//! directory, nginx (`nginx.rs`) serving the bucket folder of that directory as the CDN, two-arch releases
//! built with the real `cargo xtask release` + `merge-manifest` from small fixture files, and the
//! `gh` stand-in (GitHub is unreachable from the test machines).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use boot_assets::{cdn, Arch};

use crate::fixtures;
pub use crate::nginx::Nginx;
use crate::support::{self, require_tool, run_ok, sha256_file, sha256_hex, xtask};

/// The bucket the tests publish into (a folder of the S3 server's directory).
pub const BUCKET: &str = "boot-assets";

/// Access keys of the test S3 server (it listens on loopback only).
pub const ACCESS_KEY_ID: &str = "publishtestkey";
pub const SECRET_ACCESS_KEY: &str = "publishtestsecret";

/// SOURCE_DATE_EPOCH of every fixture release, so rebuilding one gives the same bytes.
pub const FIXTURE_EPOCH: &str = "1767225600";

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on 127.0.0.1:{port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rclone serve s3` over a directory; killed (by its own pid) when dropped.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl S3Server {
    pub fn start(dir: &Path) -> S3Server {
        require_tool("rclone");
        std::fs::create_dir_all(dir.join(BUCKET)).unwrap();
        let port = free_port();
        let child = Command::new("rclone")
            .args(["serve", "s3", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--auth-key", &format!("{ACCESS_KEY_ID},{SECRET_ACCESS_KEY}")])
            .arg(dir)
            .env("RCLONE_CONFIG", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rclone serve s3");
        wait_for_port(port, "rclone serve s3");
        S3Server {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket's folder on disk (what nginx serves).
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir.join(BUCKET)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bucket on an S3 server and the CDN (nginx) in front of it.
pub struct Cdn {
    pub s3: S3Server,
    pub nginx: Nginx,
    _dir: tempfile::TempDir,
}

impl Cdn {
    pub fn start() -> Cdn {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3Server::start(&dir.path().join("s3"));
        let nginx = Nginx::start(&s3.bucket_dir());
        Cdn { s3, nginx, _dir: dir }
    }

    /// Restarts the S3 server over the same directory: it forgets every object's metadata.
    pub fn restart_s3(&mut self) {
        let dir = self.s3.dir.clone();
        drop(std::mem::replace(&mut self.s3, S3Server::start(&dir)));
    }

    /// `cargo xtask verify-published` against this CDN with `args` and the public key `public_key`.
    pub fn verify_published(&self, args: &[&str], public_key: &Path) -> Command {
        let mut command = xtask();
        command
            .args(["verify-published", "--cdn", &self.url()])
            .args(args)
            .arg("--public-key")
            .arg(public_key);
        command
    }

    pub fn url(&self) -> String {
        self.nginx.url()
    }

    /// The published file at a CDN path, if any.
    pub fn object(&self, path: &str) -> Option<Vec<u8>> {
        std::fs::read(self.s3.bucket_dir().join(path)).ok()
    }

    /// The version latest.json names, if it exists.
    pub fn latest(&self) -> Option<String> {
        self.object(cdn::LATEST_PATH)
            .map(|bytes| boot_assets::Latest::from_json(&bytes).unwrap().version)
    }

    /// Every published file: path → (sha256, inode, mtime in ns). Equal snapshots mean nothing
    /// was written, not even the same bytes again.
    pub fn snapshot(&self) -> BTreeMap<String, (String, u64, i64)> {
        let root = self.s3.bucket_dir();
        support::files_under(&root)
            .into_iter()
            .map(|relative| {
                let path = root.join(&relative);
                let meta = std::fs::metadata(&path).unwrap();
                let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                (relative, (sha256_file(&path), meta.ino(), mtime))
            })
            .collect()
    }

    /// `cargo xtask publish` against this bucket and CDN (keys in the environment, as in CI).
    pub fn publish(&self, dist: &Path, version: &str, keys: &Keys) -> Command {
        self.publish_via(dist, version, keys, &self.url())
    }

    /// Like [`Cdn::publish`], verifying through another CDN URL.
    pub fn publish_via(&self, dist: &Path, version: &str, keys: &Keys, cdn_url: &str) -> Command {
        let mut command = self.publish_unsigned(dist, version, keys, cdn_url);
        command.arg("--signing-key").arg(&keys.secret);
        command
    }

    /// Like [`Cdn::publish_via`], without `--signing-key`.
    pub fn publish_unsigned(&self, dist: &Path, version: &str, keys: &Keys, cdn_url: &str) -> Command {
        let mut command = publish_to_remote(dist, version, keys, &format!("cdntest:{BUCKET}"), cdn_url);
        command.env("BOOT_ASSETS_S3_ENDPOINT", self.s3.endpoint());
        command
    }

    /// Runs [`Cdn::publish`], which must succeed, and returns its log (stderr).
    pub fn publish_log(&self, dist: &Path, version: &str, keys: &Keys) -> String {
        stderr_of(&run_ok(&mut self.publish(dist, version, keys)))
    }
}

/// `cargo xtask publish` of `dist` to `remote`, verified through `cdn_url` with `keys.public`,
/// with the test server's access keys and none of the caller's signing key or bandwidth limit;
/// how `remote` reaches the server is the caller's to add, like the signing key.
pub fn publish_to_remote(dist: &Path, version: &str, keys: &Keys, remote: &str, cdn_url: &str) -> Command {
    let mut command = xtask();
    command
        .args(["publish", "--version", version, "--remote", remote])
        .arg("--dist")
        .arg(dist)
        .args(["--cdn", cdn_url])
        .arg("--public-key")
        .arg(&keys.public)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .env_remove("BOOT_ASSETS_SIGNING_KEY")
        .env_remove("RCLONE_BWLIMIT");
    command
}

/// A command's stderr as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A key pair made by `cargo xtask keygen`.
pub struct Keys {
    pub secret: PathBuf,
    pub public: PathBuf,
}

/// `cargo xtask keygen` into `{dir}/keys/test-signing.{key,pub}`.
pub fn keygen(dir: &Path) -> Keys {
    let prefix = dir.join("keys").join("test-signing");
    run_ok(xtask().arg("keygen").arg("--output").arg(&prefix));
    Keys {
        secret: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
    }
}

/// What most publish tests start from: a scratch directory `work`, a fresh bucket and CDN, a key
/// pair made by keygen in `work`, and a release of `version` (variant 0, the fixture's rootfs
/// size) built with the real commands into `{work}/r/dist`, as (work, cdn, keys, dist).
pub fn publish_setup(version: &str) -> (tempfile::TempDir, Cdn, Keys, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let cdn = Cdn::start();
    let keys = keygen(work.path());
    let dist = build_release(&work.path().join("r"), version, 0, None);
    (work, cdn, keys, dist)
}

/// Checks `bytes` and its `signature` with the real `minisign -V` and `public_key`, written as
/// `{dir}/{name}` and `{dir}/{name}.minisig`; returns what minisign printed.
pub fn minisign_verify(dir: &Path, name: &str, bytes: &[u8], signature: &[u8], public_key: &Path) -> String {
    let minisign = require_tool("minisign");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    std::fs::write(dir.join(cdn::signature_path(name)), signature).unwrap();
    let output = run_ok(
        Command::new(minisign)
            .arg("-V")
            .arg("-p")
            .arg(public_key)
            .arg("-m")
            .arg(dir.join(name)),
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The runtime binaries of fixture releases: (name, version, arches). FEX has build metadata in
/// its version, to exercise the `+` → `-` rule of object keys.
pub const FIXTURE_BINARIES: [(&str, &str, &[Arch]); 2] = [
    ("dockerd", "27.5.1", &[Arch::Arm64, Arch::X86_64]),
    ("FEX", "2508+fixture", &[Arch::Arm64]),
];

/// Builds a two-arch release of `version` into `{dir}/dist` with the real xtask commands.
/// `variant` changes the rootfs bytes (the same variant and version give the same bytes);
/// `rootfs_size` sets the rootfs size (the fixture's 64 KiB when `None`).
pub fn build_release(dir: &Path, version: &str, variant: u8, rootfs_size: Option<usize>) -> PathBuf {
    let inputs = dir.join("inputs");
    let dist = dir.join("dist");
    // Staged binaries and their fragment, as sync-binaries and fex leave them.
    let mut fragment = Vec::new();
    for (name, binary_version, arches) in FIXTURE_BINARIES {
        let mut targets = serde_json::Map::new();
        for arch in arches {
            let bytes = format!("#!/bin/sh\necho {name} {binary_version} {arch}\n").into_bytes();
            let path = cdn::binary_path(name, binary_version, *arch);
            let staged = dist.join(&path);
            std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
            std::fs::write(&staged, &bytes).unwrap();
            targets.insert(
                arch.to_string(),
                serde_json::json!({ "path": path, "sha256": sha256_hex(&bytes) }),
            );
        }
        fragment.push(serde_json::json!({ "name": name, "version": binary_version, "targets": targets }));
    }
    let fragment_path = inputs.join("binaries.json");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(&fragment_path, serde_json::to_vec_pretty(&fragment).unwrap()).unwrap();

    for arch in Arch::ALL {
        let (kernel, rootfs) = fixtures::write_fixture_inputs(&inputs, arch);
        let size = rootfs_size.unwrap_or(64 * 1024);
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(variant) ^ ((arch as u64) << 32);
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                // xorshift: incompressible, deterministic bytes.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(&rootfs, fixtures::with_erofs_superblock(bytes)).unwrap();
        run_ok(
            support::release_command(version, arch, &kernel, &rootfs, &dist)
                .arg("--binaries-json")
                .arg(&fragment_path)
                .env("SOURCE_DATE_EPOCH", FIXTURE_EPOCH),
        );
    }
    support::merge_manifests(&dist, &Arch::ALL);
    dist
}

/// A directory with the `gh` stand-in on it, and where the stand-in logs and keeps its state.
pub struct GhStandin {
    pub bin_dir: tempfile::TempDir,
    pub log: PathBuf,
    pub state: PathBuf,
}

impl GhStandin {
    pub fn new() -> GhStandin {
        require_tool("python3");
        let bin_dir = tempfile::tempdir().unwrap();
        let script = support::project_root().join("tests/fixtures/gh-standin/gh");
        std::os::unix::fs::symlink(&script, bin_dir.path().join("gh")).unwrap();
        let log = bin_dir.path().join("gh-calls.jsonl");
        let state = bin_dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        GhStandin { bin_dir, log, state }
    }

    /// Puts the stand-in first on PATH for `command`.
    pub fn apply(&self, command: &mut Command) {
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env("PATH", format!("{}:{path}", self.bin_dir.path().display()))
            .env("GH_STANDIN_LOG", &self.log)
            .env("GH_STANDIN_STATE", &self.state);
    }

    /// Every argv the stand-in received since the last call, and forgets them.
    pub fn take_calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
    }

    /// The folder of a release's assets.
    pub fn assets_dir(&self, repo: &str, tag: &str) -> PathBuf {
        self.state.join(repo.replace('/', "__")).join(tag).join("assets")
    }
}
