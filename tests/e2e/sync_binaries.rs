//! `cargo xtask sync-binaries` end to end against a real nginx on loopback: a Docker-style
//! `.tgz`, a direct binary and a Debian package (built with `dpkg-deb`) are downloaded through
//! the library's downloader, checked against their pins, extracted and staged, and recorded in
//! the binaries fragment; every refusal leaves nothing at the output path.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use boot_assets::{cdn, Arch, Binary};

use crate::nginx::Nginx;
use crate::support::{self, run_fails, run_ok, sha256_file, sha256_hex, write_tgz, xtask, TgzMember};

/// A served directory with `docker.tgz` (two programs, a symlink, a `../evil` member) and a
/// direct binary `tool`.
struct Upstream {
    dir: tempfile::TempDir,
    tgz_sha256: String,
    tool_sha256: String,
}

fn upstream() -> Upstream {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("docker.tgz");
    let tgz_sha256 = write_tgz(
        &tgz,
        &[
            TgzMember::Program("docker/dockerd", b"\x7fELF dockerd"),
            TgzMember::Program("docker/runc", b"\x7fELF runc"),
            TgzMember::Symlink("docker/docker-link", "dockerd"),
            TgzMember::RawName(b"../evil", b"evil"),
        ],
    );
    std::fs::write(dir.path().join("tool"), b"\x7fELF tool").unwrap();
    Upstream {
        tgz_sha256,
        tool_sha256: sha256_hex(b"\x7fELF tool"),
        dir,
    }
}

impl Upstream {
    /// [`config`] with this upstream's digests pinned.
    fn pinned_config(&self, base: &str, dockerd_member: &str) -> String {
        config(base, &self.tgz_sha256, &self.tool_sha256, dockerd_member)
    }
}

/// A config with dockerd and runc from the tgz (arm64 and x86_64) and `tool` as a direct binary.
fn config(base: &str, tgz_sha256: &str, tool_sha256: &str, dockerd_member: &str) -> String {
    let mut text = String::new();
    for (name, member) in [("dockerd", dockerd_member), ("runc", "docker/runc")] {
        text.push_str(&format!("[[binary]]\nname = \"{name}\"\nversion = \"27.5.1\"\n"));
        for arch in ["arm64", "x86_64"] {
            text.push_str(&format!(
                "[binary.source.{arch}]\nformat = \"tgz\"\nurl = \"{base}/docker.tgz\"\nextract = \"{member}\"\nsha256 = \"{tgz_sha256}\"\n"
            ));
        }
    }
    text.push_str(&format!(
        "[[binary]]\nname = \"tool\"\nversion = \"1.0+build.7\"\ninstall_dir = \"libexec\"\n\
         [binary.source.arm64]\nformat = \"binary\"\nurl = \"{base}/tool\"\nsha256 = \"{tool_sha256}\"\n"
    ));
    text
}

struct Run {
    work: tempfile::TempDir,
}

impl Run {
    fn new() -> Run {
        Run {
            work: tempfile::tempdir().unwrap(),
        }
    }
    fn output(&self) -> PathBuf {
        self.work.path().join("dist/bin")
    }
    fn fragment(&self) -> PathBuf {
        self.work.path().join("dist/binaries.json")
    }
    fn command(&self, config_text: &str) -> std::process::Command {
        let config = self.work.path().join("binaries.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut command = xtask();
        command
            .arg("sync-binaries")
            .arg("--config")
            .arg(&config)
            .arg("--output")
            .arg(self.output())
            .arg("--binaries-json")
            .arg(self.fragment())
            .env("BOOT_ASSETS_CACHE_DIR", self.work.path().join("cache"));
        command
    }
    fn assert_nothing_written(&self) {
        assert!(
            !self.output().exists(),
            "nothing may be staged at {}",
            self.output().display()
        );
        assert!(!self.fragment().exists(), "the fragment must not be written");
    }
}

fn staged(output: &Path, name: &str, version: &str, arch: Arch) -> PathBuf {
    output.join(cdn::binary_relative_path(name, version, arch))
}

#[test]
fn stages_tgz_members_and_direct_binaries_then_a_second_run_downloads_nothing() {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let text = upstream.pinned_config(&nginx.url(), "docker/dockerd");
    run_ok(&mut run.command(&text));

    let fragment: Vec<Binary> = serde_json::from_slice(&std::fs::read(run.fragment()).unwrap()).unwrap();
    let names: Vec<&str> = fragment.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["dockerd", "runc", "tool"]);
    for (binary, body) in [(&fragment[0], &b"\x7fELF dockerd"[..]), (&fragment[1], b"\x7fELF runc")] {
        assert_eq!(binary.targets.len(), 2);
        for arch in Arch::ALL {
            let file = staged(&run.output(), &binary.name, "27.5.1", arch);
            assert_eq!(std::fs::read(&file).unwrap(), body);
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o755);
            assert_eq!(binary.targets[&arch].sha256, sha256_hex(body));
            assert_eq!(
                binary.targets[&arch].path,
                cdn::binary_path(&binary.name, "27.5.1", arch)
            );
        }
    }
    let tool = &fragment[2];
    assert_eq!(tool.install_dir.as_deref(), Some("libexec"));
    assert_eq!(tool.targets[&Arch::Arm64].path, "bin/tool/1.0-build.7/arm64/tool");
    assert_eq!(tool.targets[&Arch::Arm64].sha256, upstream.tool_sha256);
    assert!(staged(&run.output(), "tool", "1.0+build.7", Arch::Arm64).is_file());

    // The shared archive was downloaded once for both arches (same file, same pin).
    let first = nginx.requests();
    assert_eq!(
        first.iter().filter(|r| r.contains("/docker.tgz")).count(),
        1,
        "{first:#?}"
    );
    assert_eq!(first.iter().filter(|r| r.contains("/tool")).count(), 1, "{first:#?}");

    // A second run, even with an empty download cache, finds everything staged.
    std::fs::remove_dir_all(run.work.path().join("cache")).unwrap();
    let before = std::fs::read(run.fragment()).unwrap();
    run_ok(&mut run.command(&text));
    assert_eq!(
        nginx.requests().len(),
        first.len(),
        "the second run must download nothing"
    );
    assert_eq!(std::fs::read(run.fragment()).unwrap(), before);
}

#[test]
fn wrong_pin_is_refused_naming_both_digests() {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let wrong = "0".repeat(64);
    let stderr = run_fails(&mut run.command(&config(&nginx.url(), &wrong, &upstream.tool_sha256, "docker/dockerd")));
    assert!(stderr.contains("dockerd (arm64)"), "{stderr}");
    assert!(
        stderr.contains(&format!("expected {wrong}")) && stderr.contains(&upstream.tgz_sha256),
        "{stderr}"
    );
    run.assert_nothing_written();
}

/// Runs sync-binaries with dockerd taken from `member` of the served archive; it must fail with
/// an error that contains `error`, and write nothing.
fn assert_dockerd_member_refused(member: &str, error: &str) {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let stderr = run_fails(&mut run.command(&upstream.pinned_config(&nginx.url(), member)));
    assert!(stderr.contains(error), "{stderr}");
    run.assert_nothing_written();
}

#[test]
fn missing_member_lists_the_closest_ones() {
    assert_dockerd_member_refused(
        "docker/dockrd",
        "no member \"docker/dockrd\"; closest members: \"docker/dockerd\"",
    );
}

#[test]
fn traversal_and_symlink_members_are_refused() {
    assert_dockerd_member_refused(
        "../evil",
        "binary \"dockerd\" (arm64): extract \"../evil\" has a `..` component",
    );
    assert_dockerd_member_refused(
        "docker/docker-link",
        "member \"docker/docker-link\" is a link, not a regular file",
    );
}

#[test]
fn not_found_names_the_url() {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let text = upstream
        .pinned_config(&nginx.url(), "docker/dockerd")
        .replace("/tool\"", "/no-such-tool\"");
    let stderr = run_fails(&mut run.command(&text));
    assert!(
        stderr.contains(&format!("GET {}/no-such-tool: HTTP status 404", nginx.url())),
        "{stderr}"
    );
    run.assert_nothing_written();
}

#[test]
fn unpinned_entries_are_refused_until_pin_fills_them_in() {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let text = config(&nginx.url(), "", "", "docker/dockerd").replace("sha256 = \"\"\n", "sha256 = \"\"   # to pin\n");
    let stderr = run_fails(&mut run.command(&text));
    assert!(stderr.contains("no sha256 pinned for dockerd (arm64)"), "{stderr}");
    assert!(stderr.contains("cargo xtask sync-binaries --pin"), "{stderr}");
    run.assert_nothing_written();

    let mut command = run.command(&text);
    let output = run_ok(command.arg("--pin"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--pin wrote 5 digest(s)"));
    let pinned = std::fs::read_to_string(run.work.path().join("binaries.toml")).unwrap();
    assert!(
        pinned.contains(&format!("sha256 = \"{}\"", upstream.tgz_sha256)),
        "{pinned}"
    );
    assert!(
        pinned.contains(&format!("sha256 = \"{}\"", upstream.tool_sha256)),
        "{pinned}"
    );
    assert!(run.fragment().is_file() && staged(&run.output(), "runc", "27.5.1", Arch::X86_64).is_file());
}

/// The same sources written the way upstream's `upstream.toml` is: `[[binaries]]` tables,
/// no `format` for archives (tgz by default), no digests.
fn upstream_style_config(base: &str) -> String {
    let mut text = String::from("# upstream.toml, unchanged format\n");
    for (name, member) in [("dockerd", "docker/dockerd"), ("runc", "docker/runc")] {
        text.push_str(&format!("\n[[binaries]]\nname = \"{name}\"\nversion = \"27.5.1\"\n"));
        for arch in ["arm64", "x86_64"] {
            text.push_str(&format!(
                "\n[binaries.source.{arch}]\nurl = \"{base}/docker.tgz\"\nextract = \"{member}\"\n"
            ));
        }
    }
    text.push_str(&format!(
        "\n[[binaries]]\nname = \"tool\"\nversion = \"1.0+build.7\"\ninstall_dir = \"libexec\"\n\n\
         [binaries.source.arm64]\nformat = \"binary\"\nurl = \"{base}/tool\"\n"
    ));
    text
}

#[test]
fn upstreams_config_format_is_read_unchanged_and_needs_pin() {
    let upstream = upstream();
    let nginx = Nginx::start(upstream.dir.path());
    let run = Run::new();
    let text = upstream_style_config(&nginx.url());
    let stderr = run_fails(&mut run.command(&text));
    assert!(
        stderr.contains("no sha256 pinned for dockerd (arm64), dockerd (x86_64), runc (arm64)"),
        "{stderr}"
    );
    run.assert_nothing_written();

    let output = run_ok(run.command(&text).arg("--pin"));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--pin wrote 5 digest(s)"));
    let pinned = std::fs::read_to_string(run.work.path().join("binaries.toml")).unwrap();
    assert!(
        pinned.starts_with("# upstream.toml, unchanged format\n") && pinned.contains("[[binaries]]"),
        "{pinned}"
    );
    let fragment: Vec<Binary> = serde_json::from_slice(&std::fs::read(run.fragment()).unwrap()).unwrap();
    let names: Vec<&str> = fragment.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["dockerd", "runc", "tool"]);
    assert_eq!(fragment[2].install_dir.as_deref(), Some("libexec"));
    let dockerd = staged(&run.output(), "dockerd", "27.5.1", Arch::X86_64);
    assert_eq!(std::fs::read(&dockerd).unwrap(), b"\x7fELF dockerd");
    assert_eq!(
        fragment[0].targets[&Arch::X86_64].size,
        Some(b"\x7fELF dockerd".len() as u64)
    );
}

/// A Debian package built with the real `dpkg-deb`: `usr/sbin/tool` and Debian's usual link
/// beside it, `usr/bin/tool -> ../sbin/tool`; returns its path and sha256.
fn debian_package(dir: &Path) -> (PathBuf, String) {
    support::require_tool("dpkg-deb");
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        "Package: tool\nVersion: 1.0-1\nArchitecture: arm64\nMaintainer: e2e <e2e@example.invalid>\nDescription: e2e\n",
    )
    .unwrap();
    std::fs::write(tree.join("usr/sbin/tool"), b"\x7fELF deb tool").unwrap();
    std::fs::set_permissions(tree.join("usr/sbin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../sbin/tool", tree.join("usr/bin/tool")).unwrap();
    let deb = dir.join("tool_1.0-1_arm64.deb");
    run_ok(
        std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb),
    );
    let digest = sha256_file(&deb);
    (deb, digest)
}

fn deb_config(base: &str, sha256: &str, member: &str) -> String {
    format!(
        "[[binary]]\nname = \"tool\"\nversion = \"1.0-1\"\n[binary.source.arm64]\nformat = \"deb\"\n\
         url = \"{base}/tool_1.0-1_arm64.deb\"\nextract = \"{member}\"\nsha256 = \"{sha256}\"\n"
    )
}

#[test]
fn a_program_is_taken_out_of_a_debian_package() {
    let served = tempfile::tempdir().unwrap();
    let (_, digest) = debian_package(served.path());
    let server = Nginx::start(served.path());
    let run = Run::new();
    run_ok(&mut run.command(&deb_config(&server.url(), &digest, "usr/sbin/tool")));
    let path = staged(&run.output(), "tool", "1.0-1", Arch::Arm64);
    assert_eq!(std::fs::read(&path).unwrap(), b"\x7fELF deb tool");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o755);
    let fragment: Vec<Binary> = serde_json::from_slice(&std::fs::read(run.fragment()).unwrap()).unwrap();
    assert_eq!(
        fragment[0].targets[&Arch::Arm64].sha256,
        sha256_hex(b"\x7fELF deb tool")
    );

    // Debian's usr/bin link is refused, naming the member; nothing is staged.
    let run = Run::new();
    let stderr = run_fails(&mut run.command(&deb_config(&server.url(), &digest, "usr/bin/tool")));
    assert!(
        stderr.contains("member \"./usr/bin/tool\" is a link, not a regular file; refusing it"),
        "{stderr}"
    );
    run.assert_nothing_written();
}
