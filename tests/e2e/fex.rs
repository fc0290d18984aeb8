//! `cargo xtask fex` end to end on the FEX stand-in (`tests/fixtures/fex-standin`, which keeps
//! FEX's build gates): the real CMake + Ninja build with clang and lld against Debian's arm64 cross
//! sysroot, FEX's GCC refusal and Clang version floor (with a compiler CMake identifies as Clang
//! 12), our patches (applied to the stand-in's equivalents of FEX's files; the procfs one also run
//! natively with /proc hidden in a mount namespace), the ELF checks, staging and the binaries fragment, and a `--repo` fetch pinned by commit from a
//! local git repository. The real FEX tree cannot be fetched here; the release workflow runs the
//! same command on it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use boot_assets::{cdn, Arch, Binary};

use crate::support::{project_root, require_tool, run_fails, run_ok, sha256_hex, stdout_of, xtask};

fn require_build_tools() {
    require_tool("cmake");
    require_tool("ninja");
    require_tool("clang");
    require_tool("clang++");
    require_tool("ld.lld");
}

fn standin() -> PathBuf {
    project_root().join("tests/fixtures/fex-standin")
}

/// `cargo xtask fex --source <stand-in>` into `work`, with extra arguments.
fn fex_on_standin(work: &Path, extra: &[&str]) -> Command {
    let mut command = xtask();
    command
        .arg("fex")
        .arg("--source")
        .arg(standin())
        .arg("--build-dir")
        .arg(work.join("build"))
        .arg("--output")
        .arg(work.join("bin"))
        .arg("--binaries-json")
        .arg(work.join("binaries.json"))
        .args(extra);
    command
}

/// Where [`fex_on_standin`] (or `--output {work}/bin`) stages the FEX of `version`.
fn staged_fex(work: &Path, version: &str) -> PathBuf {
    work.join("bin")
        .join(cdn::binary_relative_path("FEX", version, Arch::Arm64))
}

/// Runs a staged arm64 FEX with `args` under qemu-user.
fn run_staged(staged: &Path, args: &[&str]) -> Output {
    let qemu = require_tool("qemu-aarch64");
    Command::new(qemu)
        .arg(staged)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {} under qemu-aarch64: {e}", staged.display()))
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn read_fragment(path: &Path) -> Vec<Binary> {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn standin_is_built_static_pie_staged_and_recorded() {
    require_build_tools();
    let file = require_tool("file");
    let work = tempfile::tempdir().unwrap();
    let fragment = work.path().join("binaries.json");
    // An existing fragment: dockerd stays, an older FEX is replaced.
    let existing = serde_json::json!([
        { "name": "FEX", "version": "old", "targets": { "arm64": { "path": "bin/FEX/old/arm64/FEX", "sha256": "0".repeat(64) } } },
        { "name": "dockerd", "version": "27.5.1", "targets": { "x86_64": { "path": "bin/dockerd/27.5.1/x86_64/dockerd", "sha256": "1".repeat(64) } } }
    ]);
    std::fs::write(&fragment, serde_json::to_vec(&existing).unwrap()).unwrap();
    let ours = project_root().join("manifests/fex/patches");
    let second = project_root().join("tests/fixtures/fex-patches");
    run_ok(&mut fex_on_standin(
        work.path(),
        &[
            "--patches-dir",
            ours.to_str().unwrap(),
            "--patches-dir",
            second.to_str().unwrap(),
            "--ref",
            "FEX-2511",
        ],
    ));

    let binaries = read_fragment(&fragment);
    let names: Vec<&str> = binaries.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["FEX", "dockerd"]);
    let fex = &binaries[0];
    assert!(
        fex.version.starts_with("FEX-2511+"),
        "unique version key: {}",
        fex.version
    );
    let entry = &fex.targets[&Arch::Arm64];
    assert_eq!(fex.targets.len(), 1);
    assert_eq!(entry.path, cdn::binary_path("FEX", &fex.version, Arch::Arm64));

    let staged = staged_fex(work.path(), &fex.version);
    let bytes = std::fs::read(&staged).unwrap();
    assert_eq!(entry.sha256, sha256_hex(&bytes));
    assert_eq!(std::fs::metadata(&staged).unwrap().permissions().mode() & 0o777, 0o755);
    let description = stdout_of(Command::new(file).arg("-b").arg(&staged));
    assert!(description.contains("ARM aarch64"), "{description}");
    assert!(description.contains("static-pie linked"), "{description}");
    // Both patches were applied, in name order (the second only applies on top of the first).
    assert!(
        contains_bytes(&bytes, b"FEX-STANDIN build: patched-1-then-2"),
        "patched marker missing"
    );
    // No PT_INTERP, no DT_NEEDED (readelf's own view, besides the xtask's goblin check).
    let readelf = require_tool("readelf");
    let program_headers = stdout_of(Command::new(&readelf).arg("-lW").arg(&staged));
    assert!(!program_headers.contains("INTERP"), "{program_headers}");
    let dynamic = stdout_of(Command::new(&readelf).arg("-dW").arg(&staged));
    assert!(!dynamic.contains("(NEEDED)"), "{dynamic}");
    // It runs (qemu-user) and, with our FEXServer patch, starts without a FEXServer.
    let ran = run_staged(&staged, &["first-argument"]);
    assert!(ran.status.success(), "{ran:?}");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(stdout.starts_with("FEX-STANDIN-RAN argc=2 ["), "{stdout}");
    assert!(
        stdout.contains("[first-argument] (FEX-STANDIN build: patched-1-then-2)"),
        "{stdout}"
    );
}

#[test]
fn standin_refuses_gcc_with_fexs_own_message() {
    require_build_tools();
    require_tool("aarch64-linux-gnu-g++");
    let work = tempfile::tempdir().unwrap();
    // The toolchain file the repository used before (Debian's aarch64 GCC).
    let gcc_toolchain = work.path().join("gcc.cmake");
    std::fs::write(
        &gcc_toolchain,
        "set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR aarch64)\n\
         set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)\nset(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)\n",
    )
    .unwrap();
    let define = format!("CMAKE_TOOLCHAIN_FILE={}", gcc_toolchain.display());
    let stderr = run_fails(&mut fex_on_standin(
        work.path(),
        // Plain linker flags, so CMake's own compiler check passes and FEX's gate is what refuses.
        &[
            "--version",
            "gcc",
            "--cmake-define",
            &define,
            "--cmake-define",
            "CMAKE_EXE_LINKER_FLAGS=",
        ],
    ));
    assert!(
        stderr.contains("FEX doesn't support GCC! Use Clang instead."),
        "{stderr}"
    );
    assert!(stderr.contains("configuring FEX with CMake"), "{stderr}");
    assert!(!work.path().join("bin").exists(), "nothing may be staged");
}

#[test]
fn standin_keeps_fexs_gates_target_and_output_names() {
    // The stand-in must fail where FEX fails: same languages, gates and messages, same names as
    // manifests/fex/build.toml says FEX-2608 has.
    let cmake = std::fs::read_to_string(standin().join("CMakeLists.txt")).unwrap();
    for line in [
        "project(FEX C CXX ASM)",
        "message(FATAL_ERROR \"FEX doesn't support GCC! Use Clang instead.\")",
        "set(CLANG_MINIMUM_VERSION 13.0)",
        "message(FATAL_ERROR \"Clang version too old for FEX. Need at least ${CLANG_MINIMUM_VERSION} but has ${CMAKE_CXX_COMPILER_VERSION}\")",
        "set(CMAKE_CXX_STANDARD 20)",
        "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/Bin)",
        "add_executable(FEX",
    ] {
        assert!(cmake.lines().any(|l| l.trim() == line), "the stand-in's CMakeLists.txt lacks `{line}`");
    }
    let gcc_gate = cmake.find("doesn't support GCC").unwrap();
    let clang_gate = cmake.find("Clang version too old").unwrap();
    assert!(
        gcc_gate < clang_gate,
        "FEX refuses GCC before it checks the Clang version"
    );
    let settings = std::fs::read_to_string(project_root().join("manifests/fex/build.toml")).unwrap();
    for line in ["target = \"FEX\"", "output = \"Bin/FEX\""] {
        assert!(
            settings.lines().any(|l| l.trim() == line),
            "manifests/fex/build.toml lacks `{line}`"
        );
    }
    for source in [
        "standin.c",
        "standin_marker.S",
        "Source/Tools/FEXInterpreter/FEXInterpreter.cpp",
    ] {
        assert!(
            standin().join(source).is_file(),
            "{source}: the stand-in needs C, ASM and C++ sources"
        );
    }
}

#[test]
fn our_patches_apply_to_the_standins_equivalents_of_fexs_files() {
    let git = require_tool("git");
    let patches = project_root().join("manifests/fex/patches");
    let mut files: Vec<_> = std::fs::read_dir(&patches)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "patch"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "manifests/fex/patches holds our FEX patches");
    // Outside any repository, like the build's copy of a --source tree.
    let copy = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(standin())
            .arg(copy.path().join("tree")),
    );
    let tree = copy.path().join("tree");
    for patch in &files {
        run_ok(
            Command::new(&git)
                .arg("-C")
                .arg(&tree)
                .args(["apply", "--whitespace=nowarn"])
                .arg(patch),
        );
    }
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["0001-never-spawn-fexserver.patch", "0002-tolerate-missing-procfs.patch"]
    );
    let client = std::fs::read_to_string(tree.join("Source/Common/FEXServerClient.cpp")).unwrap();
    assert!(
        !client.contains("= StartServer("),
        "FEX must not spawn FEXServer:\n{client}"
    );
    assert!(client.contains("(void)InterpreterPath;"), "{client}");
    let allocator = std::fs::read_to_string(tree.join("FEXCore/Source/Utils/Allocator.cpp")).unwrap();
    assert!(
        !allocator.contains("auto Regions = CollectMemoryGaps(Begin, End, MapsFD);"),
        "FEX must not read the gaps from a maps file it could not open:\n{allocator}"
    );
    assert!(
        allocator.contains("ProbeMemoryGaps(Begin, End, Regions);"),
        "{allocator}"
    );
}

/// The gaps tests/fixtures/fex-allocator-driver.cpp leaves in [4 GiB, 8 GiB) for the allocator
/// to reserve: around its page at 5 GiB and its two pages at 6 GiB.
const DRIVER_GAPS: &str = "100000000-140000000\n140001000-180000000\n180002000-200000000\n";

/// Runs a program in a new mount namespace where /proc is an empty tmpfs: no procfs.
fn without_procfs(program: &Path) -> std::process::Output {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs none /proc || exit 97; exec \"$0\"")
        .arg(program)
        .output()
        .unwrap()
}

#[test]
fn without_our_procfs_patch_the_standins_allocator_fails_like_fex_without_proc() {
    // FEX reserves its address space from /proc/self/maps at startup; our patch 0002 makes it
    // probe instead when /proc is not mounted. The stand-in's equivalent allocator, unpatched and
    // patched, built natively and driven with mappings inside the range it reserves.
    let clang = require_tool("clang++");
    let git = require_tool("git");
    require_tool("unshare");
    let euid = run_ok(Command::new("id").arg("-u"));
    assert_eq!(
        String::from_utf8_lossy(&euid.stdout).trim(),
        "0",
        "hiding /proc in a mount namespace needs root: run the suite as root"
    );
    let work = tempfile::tempdir().unwrap();
    let patched_tree = work.path().join("patched-tree");
    run_ok(Command::new("cp").arg("-a").arg(standin()).arg(&patched_tree));
    for patch in ["0001-never-spawn-fexserver.patch", "0002-tolerate-missing-procfs.patch"] {
        run_ok(
            Command::new(&git)
                .arg("-C")
                .arg(&patched_tree)
                .args(["apply", "--whitespace=nowarn"])
                .arg(project_root().join("manifests/fex/patches").join(patch)),
        );
    }
    let build = |tree: &Path, name: &str| {
        let program = work.path().join(name);
        run_ok(
            Command::new(&clang)
                .args(["-std=c++20", "-O2", "-Wall", "-I"])
                .arg(tree.join("FEXCore/include"))
                .arg(project_root().join("tests/fixtures/fex-allocator-driver.cpp"))
                .arg(tree.join("FEXCore/Source/Utils/Allocator.cpp"))
                .arg("-o")
                .arg(&program),
        );
        program
    };
    let unpatched = build(&standin(), "unpatched");
    let patched = build(&patched_tree, "patched");

    // With /proc both read the gaps from the maps file.
    for program in [&unpatched, &patched] {
        let ran = run_ok(&mut Command::new(program));
        assert_eq!(String::from_utf8_lossy(&ran.stdout), DRIVER_GAPS);
    }
    // Without /proc, unpatched, it fails where FEX would go on to parse memory past its buffer.
    let ran = without_procfs(&unpatched);
    assert!(
        !ran.status.success(),
        "unpatched, the allocator must fail without /proc"
    );
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        stderr.contains("FEX-STANDIN: CollectMemoryGaps cannot read /proc/self/maps (fd -1)"),
        "{stderr}"
    );
    // Patched, it finds and reserves the same gaps by probing.
    let ran = without_procfs(&patched);
    assert!(
        ran.status.success(),
        "patched, the allocator must start without /proc: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout), DRIVER_GAPS);
}

/// A clang++ that CMake identifies as Clang `major`: the wrapper redefines `__clang_major__`,
/// which is what CMake's compiler identification reads, and a toolchain file that is the one
/// `cargo xtask fex` picks with only the C++ compiler replaced by that wrapper.
fn toolchain_with_clang_major(dir: &Path, major: u32) -> std::path::PathBuf {
    let wrapper = dir.join(format!("clang++-as-{major}"));
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec clang++ -U__clang_major__ -D__clang_major__={major} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let project_toolchain = if std::env::consts::ARCH == "aarch64" {
        "manifests/fex/native-clang.cmake"
    } else {
        "manifests/fex/aarch64-linux-gnu.cmake"
    };
    let toolchain = dir.join(format!("clang-{major}.cmake"));
    std::fs::write(
        &toolchain,
        format!(
            "include({})\nset(CMAKE_CXX_COMPILER {})\n",
            project_root().join(project_toolchain).display(),
            wrapper.display()
        ),
    )
    .unwrap();
    toolchain
}

#[test]
fn standin_refuses_a_clang_below_fexs_floor_with_fexs_own_message() {
    // FEX-2608's CMakeLists.txt: set(CLANG_MINIMUM_VERSION 13.0), checked against
    // CMAKE_CXX_COMPILER_VERSION. A compiler that reports 12 is refused, one that reports 13 builds.
    require_build_tools();
    let work = tempfile::tempdir().unwrap();
    let old = toolchain_with_clang_major(work.path(), 12);
    let define = format!("CMAKE_TOOLCHAIN_FILE={}", old.display());
    let output = fex_on_standin(work.path(), &["--version", "clang12", "--cmake-define", &define])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "Clang 12 must be refused\nstdout:\n{stdout}");
    assert!(
        stdout.contains("The CXX compiler identification is Clang 12."),
        "CMake must identify the wrapper as Clang 12\nstdout:\n{stdout}"
    );
    // CMake reflows the message (two spaces after a full stop).
    assert!(stderr.contains("Clang version too old for FEX."), "{stderr}");
    assert!(stderr.contains("Need at least 13.0 but has 12."), "{stderr}");
    assert!(stderr.contains("configuring FEX with CMake"), "{stderr}");
    assert!(!work.path().join("bin").exists(), "nothing may be staged");

    let floor = toolchain_with_clang_major(work.path(), 13);
    let define = format!("CMAKE_TOOLCHAIN_FILE={}", floor.display());
    // A fresh build directory: CMake keeps the compiler of an existing cache.
    let built = run_ok(&mut fex_on_standin(
        &work.path().join("at-floor"),
        &["--version", "clang13", "--cmake-define", &define],
    ));
    let stdout = String::from_utf8_lossy(&built.stdout);
    assert!(
        stdout.contains("The CXX compiler identification is Clang 13."),
        "{stdout}"
    );
}

#[test]
fn without_our_patch_the_standin_fails_like_fex_with_no_fexserver() {
    require_build_tools();
    require_tool("qemu-aarch64");
    let work = tempfile::tempdir().unwrap();
    // An empty patches directory instead of manifests/fex/patches.
    let none = work.path().join("no-patches");
    std::fs::create_dir_all(&none).unwrap();
    let none_arg = none.to_string_lossy().into_owned();
    run_ok(&mut fex_on_standin(
        work.path(),
        &["--version", "unpatched", "--patches-dir", &none_arg],
    ));
    let output = run_staged(&staged_fex(work.path(), "unpatched"), &[]);
    assert!(
        !output.status.success(),
        "unpatched, the stand-in must fail without a FEXServer"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FEXServerClient: Failure to setup client"), "{stderr}");
}

#[test]
fn repo_builds_exactly_the_pinned_commit_with_its_submodules() {
    require_build_tools();
    let git = require_tool("git");
    let work = tempfile::tempdir().unwrap();
    let git_in = |dir: &Path, args: &[&str]| {
        run_ok(
            Command::new(&git)
                .arg("-C")
                .arg(dir)
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "protocol.file.allow=always",
                ])
                .args(args),
        )
    };
    // A submodule repository and an upstream holding the stand-in with that submodule.
    let sub = work.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    git_in(&sub, &["init", "--quiet"]);
    std::fs::write(sub.join("README"), "a submodule\n").unwrap();
    git_in(&sub, &["add", "README"]);
    git_in(&sub, &["commit", "--quiet", "-m", "sub"]);
    let upstream = work.path().join("upstream");
    run_ok(Command::new("cp").arg("-a").arg(standin()).arg(&upstream));
    git_in(&upstream, &["init", "--quiet"]);
    git_in(&upstream, &["add", "."]);
    git_in(
        &upstream,
        &["submodule", "--quiet", "add", &sub.to_string_lossy(), "External/sub"],
    );
    git_in(&upstream, &["commit", "--quiet", "-m", "stand-in"]);
    let commit = String::from_utf8(git_in(&upstream, &["rev-parse", "HEAD"]).stdout).unwrap();
    let commit = commit.trim().to_owned();
    let repo = format!("file://{}", upstream.display());
    // `fex --repo … --ref standin-1 --commit {commit}` building in `{build_dir}`, with git
    // allowed to fetch the submodule over the file protocol.
    let fex_at_commit = |commit: &str, build_dir: &str| -> Command {
        let mut command = xtask();
        command
            .args(["fex", "--repo", &repo, "--ref", "standin-1", "--commit", commit])
            .arg("--build-dir")
            .arg(work.path().join(build_dir))
            .arg("--binaries-json")
            .arg(work.path().join("b.json"))
            .env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "protocol.file.allow")
            .env("GIT_CONFIG_VALUE_0", "always");
        command
    };

    // A ref that build.toml does not pin needs --commit.
    let mut unpinned = xtask();
    unpinned
        .args(["fex", "--repo", &repo, "--ref", "standin-1"])
        .arg("--binaries-json")
        .arg(work.path().join("b.json"));
    let stderr = run_fails(&mut unpinned);
    assert!(
        stderr.contains("--ref standin-1: manifests/fex/build.toml pins FEX-2608"),
        "{stderr}"
    );

    // A commit the repository does not have is refused by the fetch, naming it.
    let missing = "0".repeat(40);
    let stderr = run_fails(&mut fex_at_commit(&missing, "wrong"));
    assert!(
        stderr.contains(&format!("fetching commit {missing} (standin-1) from {repo}")),
        "{stderr}"
    );

    let output = run_ok(
        fex_at_commit(&commit, "build")
            .arg("--output")
            .arg(work.path().join("bin")),
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains(&format!("at standin-1 = commit {commit}")), "{log}");
    let checkout = work.path().join("build/src");
    assert_eq!(
        String::from_utf8(git_in(&checkout, &["rev-parse", "HEAD"]).stdout)
            .unwrap()
            .trim(),
        commit
    );
    assert_eq!(
        std::fs::read_to_string(checkout.join("External/sub/README")).unwrap(),
        "a submodule\n"
    );
    let binaries = read_fragment(&work.path().join("b.json"));
    assert!(binaries[0].version.starts_with("standin-1+"), "{}", binaries[0].version);
    // FEX's version and hash are the fetched ref and commit (a depth-1 fetch has no tags to
    // describe).
    let bytes = std::fs::read(staged_fex(work.path(), &binaries[0].version)).unwrap();
    let note = format!("FEX-STANDIN version: standin-1 commit: {commit}");
    assert!(
        contains_bytes(&bytes, note.as_bytes()),
        "{note:?} missing from the built stand-in"
    );
}

#[test]
fn dynamic_build_is_refused_naming_pt_interp() {
    require_build_tools();
    let work = tempfile::tempdir().unwrap();
    let fragment = work.path().join("binaries.json");
    let output = work.path().join("bin");
    let stderr = run_fails(&mut fex_on_standin(
        work.path(),
        &[
            "--version",
            "dyn",
            "--cmake-define",
            "CMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -pie",
        ],
    ));
    assert!(stderr.contains("refusing to stage FEX"), "{stderr}");
    assert!(stderr.contains("PT_INTERP \"/lib/ld-linux-aarch64.so.1\""), "{stderr}");
    assert!(!output.exists(), "nothing may be staged");
    assert!(!fragment.exists(), "the fragment must not be written");
}
