//! The verified root (contract "Verified root"): a release's rootfs.erofs is the EROFS image
//! followed by its dm-verity hash tree, and the manifest's command line builds the verified
//! device from it.
//!
//! Without a guest: the table the kernel gets, read back from the manifest, verifies the
//! release's rootfs with the real `veritysetup verify` (and a flipped byte in the data or the
//! tree is refused); releasing a verified rootfs again changes nothing; foreign or damaged
//! inputs are refused naming the file; `--unverified-rootfs` keeps the plain image for
//! development. In booted guests of both arches (the kernel and rootfs the pipeline builds,
//! released): the verified root boots to the agent and every file of it reads; on copies, one
//! byte flipped in a file's data or in the hash tree makes reading that file fail with EIO while
//! the kernel logs the block, and a wrong root hash on the command line refuses the root. Each
//! boot is judged from its console, never from QEMU's exit status.

use std::path::{Path, PathBuf};

use boot_assets::{cdn, Arch, Manifest};

use crate::boot_support::{self as boot, Assets, Booted, VerifiedAssets};
use crate::fixtures::write_fixture_inputs;
use crate::support::{self, release_command, require_tool, run_fails, run_ok, xtask};

/// The asset version of the releases made here.
const VERSION: &str = "0.2.0";

/// Block size of the data and the tree, and digests per tree block (SHA-256: 32 bytes each).
const BLOCK: u64 = 4096;
const DIGESTS_PER_BLOCK: u64 = BLOCK / 32;

/// Timeout of one boot that reads every file of the root under TCG.
const READ_ALL_TIMEOUT_SECS: u64 = 240;

/// Timeout of a boot whose root is refused (the kernel panics, the VM stops at once).
const REFUSED_BOOT_TIMEOUT_SECS: u64 = 90;

/// The agent: where the root comes from, then every regular file of the root read to its end,
/// each failure on its own line with the reader's error, then the totals; then power off.
const READ_ALL_AGENT: &str = r#"BB=/bin/busybox
name=$($BB cat /sys/block/dm-0/dm/name 2>/dev/null)
ro=$($BB cat /sys/block/dm-0/ro 2>/dev/null)
if [ "$name" = rootfs ] && [ "$ro" = 1 ] && [ -e /sys/block/dm-0/slaves/vda ]; then
    echo "CHECK root-dm-verity ok dm-0 ($name, read-only) over vda"
else
    echo "CHECK root-dm-verity fail dm-0 name=$name ro=$ro slaves=$($BB ls /sys/block/dm-0/slaves 2>&1)"
fi
$BB find / -xdev -type f | {
    files=0; failed=0
    while read -r file; do
        files=$((files + 1))
        if ! error=$($BB cat "$file" 2>&1 >/dev/null); then
            failed=$((failed + 1))
            echo "READ-FAILED $file: $error"
        fi
    done
    echo "READ-ALL files=$files failed=$failed"
}
$BB poweroff -f
"#;

/// A release's verity table, as the command line gives it to the kernel.
#[derive(Debug)]
struct Table {
    data_device: String,
    data_blocks: u64,
    hash_start_block: u64,
    algorithm: String,
    root_hash: String,
    salt: String,
}

/// The one verity table of a command line's `dm-mod.create=`.
fn table_of(cmdline: &str) -> Table {
    let create = boot_assets::manifest::cmdline_parameters(cmdline)
        .into_iter()
        .find(|(name, _)| name == "dm-mod.create")
        .and_then(|(_, value)| value)
        .unwrap_or_else(|| panic!("no dm-mod.create= in {cmdline:?}"));
    let table = create.splitn(5, ',').nth(4).expect("name,uuid,minor,flags,table");
    let words: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(words.len(), 13, "{table:?}");
    assert_eq!(
        words[..4],
        ["0", &(words[8].parse::<u64>().unwrap() * 8).to_string(), "verity", "1"]
    );
    assert_eq!(words[4], words[5], "the data disk also holds the tree");
    assert_eq!((words[6], words[7]), ("4096", "4096"));
    Table {
        data_device: words[4].to_owned(),
        data_blocks: words[8].parse().unwrap(),
        hash_start_block: words[9].parse().unwrap(),
        algorithm: words[10].to_owned(),
        root_hash: words[11].to_owned(),
        salt: words[12].to_owned(),
    }
}

/// `veritysetup verify` of `image` (data and tree in one file) with the table's parameters.
fn veritysetup_verify(image: &Path, table: &Table) -> std::process::Command {
    let mut command = std::process::Command::new(require_tool("veritysetup"));
    command
        .arg("verify")
        .arg("--no-superblock")
        .arg(format!("--hash={}", table.algorithm))
        .arg(format!("--data-blocks={}", table.data_blocks))
        .arg(format!("--hash-offset={}", table.hash_start_block * BLOCK))
        .arg(format!("--salt={}", table.salt))
        .arg(image)
        .arg(image)
        .arg(&table.root_hash);
    command
}

/// A copy of `image` at `copy` with the byte at `offset` inverted.
fn flipped_copy(image: &Path, copy: &Path, offset: u64) -> PathBuf {
    let mut bytes = std::fs::read(image).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0xff;
    std::fs::write(copy, bytes).unwrap();
    copy.to_path_buf()
}

/// A real (tiny) EROFS image made by mkfs.erofs: a few files, one of them 300 KiB.
fn small_erofs_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), "verity\n").unwrap();
    let big: Vec<u8> = (0..300 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(tree.join("big"), big).unwrap();
    let image = dir.join("small.erofs");
    run_ok(
        std::process::Command::new(require_tool("mkfs.erofs"))
            .args(["-T0", "-U", "8d8f0b54-2b4c-4a5e-9a41-1c2f3e4d5a6b", "--all-root"])
            .arg(&image)
            .arg(&tree),
    );
    image
}

/// Releases `rootfs` for x86_64 into `dist`; returns the manifest and the shipped rootfs file.
fn release_and_unpack(rootfs: &Path, dist: &Path, extra: &[&str]) -> (Manifest, PathBuf) {
    let (kernel, _) = write_fixture_inputs(&dist.join("inputs"), Arch::X86_64);
    run_ok(
        release_command(VERSION, Arch::X86_64, &kernel, rootfs, dist)
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1772539200"),
    );
    let tarball = dist.join("x86_64").join(cdn::tarball_name(VERSION, Arch::X86_64));
    let (_, shipped) = boot::kernel_and_rootfs(&Assets::Tarball(tarball), dist);
    let manifest = Manifest::from_json_validated(&std::fs::read(dist.join("x86_64/manifest.json")).unwrap()).unwrap();
    (manifest, shipped)
}

#[test]
fn the_command_line_table_verifies_the_release_rootfs_with_veritysetup() {
    let work = tempfile::tempdir().unwrap();
    let image = small_erofs_image(work.path());
    let (manifest, shipped) = release_and_unpack(&image, &work.path().join("dist"), &[]);
    let target = &manifest.targets[&Arch::X86_64];
    let table = table_of(&target.kernel_cmdline);
    assert_eq!(table.data_device, "/dev/vda");
    assert_eq!(table.algorithm, "sha256");
    assert_eq!(Some(&table.root_hash), target.rootfs_verity_root_hash.as_ref());
    let plain = std::fs::read(&image).unwrap();
    assert_eq!(table.data_blocks * BLOCK, plain.len() as u64);
    assert_eq!(
        table.hash_start_block, table.data_blocks,
        "the tree starts right after the data"
    );
    let shipped_bytes = std::fs::read(&shipped).unwrap();
    assert!(shipped_bytes.starts_with(&plain), "the data comes first, unchanged");
    assert_eq!(target.rootfs.size, Some(shipped_bytes.len() as u64));
    assert_eq!(
        target.rootfs.sha256,
        support::sha256_hex(&shipped_bytes),
        "the digest covers the tree"
    );

    run_ok(&mut veritysetup_verify(&shipped, &table));
    let data_flipped = flipped_copy(&shipped, &work.path().join("data-flipped"), 5 * BLOCK + 17);
    let stderr = run_fails(&mut veritysetup_verify(&data_flipped, &table));
    assert!(stderr.contains("Verification failed"), "{stderr}");
    let tree_flipped = flipped_copy(
        &shipped,
        &work.path().join("tree-flipped"),
        table.data_blocks * BLOCK + 40,
    );
    let stderr = run_fails(&mut veritysetup_verify(&tree_flipped, &table));
    assert!(stderr.contains("Verification failed"), "{stderr}");
}

#[test]
fn releasing_a_verified_rootfs_again_changes_nothing_and_foreign_tails_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let image = small_erofs_image(work.path());
    let (first, shipped) = release_and_unpack(&image, &work.path().join("first"), &[]);
    let (second, shipped_again) = release_and_unpack(&shipped, &work.path().join("second"), &[]);
    assert_eq!(first, second);
    assert!(std::fs::read(&shipped).unwrap() == std::fs::read(&shipped_again).unwrap());

    let refused = |rootfs: &Path, name: &str| {
        let dist = work.path().join(name);
        let (kernel, _) = write_fixture_inputs(&dist.join("inputs"), Arch::X86_64);
        let stderr = run_fails(&mut release_command(VERSION, Arch::X86_64, &kernel, rootfs, &dist));
        assert!(stderr.contains(&rootfs.display().to_string()), "{stderr}");
        assert!(
            !dist.join("x86_64/manifest.json").exists(),
            "a refused release writes nothing"
        );
        stderr
    };
    let mut foreign = std::fs::read(&image).unwrap();
    foreign.extend_from_slice(&[7u8; 4096]);
    let foreign_path = work.path().join("foreign-tail.erofs");
    std::fs::write(&foreign_path, foreign).unwrap();
    let stderr = refused(&foreign_path, "foreign");
    assert!(
        stderr.contains("bytes of EROFS data are not its dm-verity hash tree"),
        "{stderr}"
    );

    let truncated_path = work.path().join("truncated.erofs");
    std::fs::write(&truncated_path, &std::fs::read(&image).unwrap()[..8192]).unwrap();
    assert!(refused(&truncated_path, "truncated").contains("it is truncated"));

    let not_erofs = work.path().join("not-erofs.img");
    std::fs::write(&not_erofs, vec![0u8; 8192]).unwrap();
    let stderr = refused(&not_erofs, "not-erofs");
    assert!(
        stderr.contains("--rootfs") && stderr.contains("is not an EROFS image"),
        "{stderr}"
    );
}

#[test]
fn an_unverified_release_is_a_development_option_named_as_such() {
    let work = tempfile::tempdir().unwrap();
    let image = small_erofs_image(work.path());
    let (manifest, shipped) = release_and_unpack(&image, &work.path().join("dist"), &["--unverified-rootfs"]);
    let target = &manifest.targets[&Arch::X86_64];
    assert_eq!(target.kernel_cmdline, Arch::X86_64.default_kernel_cmdline());
    assert_eq!(target.rootfs_verity_root_hash, None);
    assert!(std::fs::read(&shipped).unwrap() == std::fs::read(&image).unwrap());
    for command in ["release", "dist"] {
        let help = support::stdout_of(xtask().args([command, "--help"]));
        assert!(help.contains("--unverified-rootfs"), "{command}: {help}");
        assert!(help.contains("DEVELOPMENT ONLY, UNVERIFIED"), "{command}: {help}");
    }
}

/// A file of the root to damage, and one of its data blocks: a block in the middle of 128 aligned
/// blocks (one leaf block of the tree) that all hold file data, none of busybox or the init scripts
/// (what the boot needs), so that a damaged tree block fails reads of files only. The largest
/// file that has such a group on its own is preferred (then only that file is touched).
struct Victim {
    path: String,
    data_block: u64,
}

/// Finds the [`Victim`] in the plain EROFS image with the real `fsck.erofs --extract` (file
/// sizes) and `dump.erofs -e` (where its data lies in the image).
fn victim(plain: &Path, work: &Path) -> Victim {
    let mut files = image_regular_files(plain, work);
    files.sort_unstable_by(|a, b| b.cmp(a));
    let mut owners = std::collections::BTreeMap::new();
    for (_, path) in files {
        if path == "/bin/busybox" || path.starts_with("/sbin/") || path.starts_with("/lib/arcbox/") {
            continue;
        }
        let blocks = data_blocks(plain, &path);
        if let Some(group) = full_group(&blocks) {
            return Victim {
                path,
                data_block: group * DIGESTS_PER_BLOCK + DIGESTS_PER_BLOCK / 2,
            };
        }
        owners.extend(blocks.into_iter().map(|block| (block, path.clone())));
    }
    let blocks: std::collections::BTreeSet<u64> = owners.keys().copied().collect();
    let group = full_group(&blocks).expect("no 128 aligned blocks of the root hold only file data");
    let data_block = group * DIGESTS_PER_BLOCK + DIGESTS_PER_BLOCK / 2;
    Victim {
        path: owners[&data_block].clone(),
        data_block,
    }
}

/// The image blocks wholly holding data of `path` (`dump.erofs -e`).
fn data_blocks(plain: &Path, path: &str) -> std::collections::BTreeSet<u64> {
    let extents = support::stdout_of(
        std::process::Command::new(require_tool("dump.erofs"))
            .arg(format!("--path={path}"))
            .arg("-e")
            .arg(plain),
    );
    let mut blocks = std::collections::BTreeSet::new();
    for line in extents.lines() {
        // `   3:   539952..  777180 |  237228 :    2785280..   2850816 |   65536`
        let Some(physical) = line.split('|').nth(1).and_then(|rest| rest.split(':').nth(1)) else {
            continue;
        };
        let Some((start, end)) = physical.split_once("..") else {
            continue;
        };
        let (Ok(start), Ok(end)) = (start.trim().parse::<u64>(), end.trim().parse::<u64>()) else {
            continue;
        };
        blocks.extend(start.div_ceil(BLOCK)..end / BLOCK);
    }
    blocks
}

/// The first group of 128 aligned blocks (one leaf block of the tree) all in `blocks`.
fn full_group(blocks: &std::collections::BTreeSet<u64>) -> Option<u64> {
    (0..=blocks.last().copied().unwrap_or(0) / DIGESTS_PER_BLOCK)
        .find(|group| (group * DIGESTS_PER_BLOCK..(group + 1) * DIGESTS_PER_BLOCK).all(|b| blocks.contains(&b)))
}

/// (size, `/path`) of every regular file of the EROFS image `plain`, extracted into `work` with
/// the real `fsck.erofs --extract`.
fn image_regular_files(plain: &Path, work: &Path) -> Vec<(u64, String)> {
    let extracted = work.join("extracted");
    if !extracted.exists() {
        run_ok(
            std::process::Command::new(require_tool("fsck.erofs"))
                .arg(format!("--extract={}", extracted.display()))
                .arg(plain),
        );
    }
    regular_files(&extracted)
}

/// (size, `/path`) of every regular file below `root`, links never followed.
fn regular_files(root: &Path) -> Vec<(u64, String)> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                stack.push(path);
            } else if metadata.is_file() {
                files.push((
                    metadata.len(),
                    format!("/{}", path.strip_prefix(root).unwrap().display()),
                ));
            }
        }
    }
    files
}

/// The hash tree block that holds the digest of `data_block`: levels are stored from the top
/// down, the leaves (one digest per data block) last, as the kernel and veritysetup lay them out.
fn leaf_hash_block(table: &Table, data_block: u64) -> u64 {
    let mut levels = Vec::new();
    let mut count = table.data_blocks;
    loop {
        count = count.div_ceil(DIGESTS_PER_BLOCK);
        levels.push(count);
        if count <= 1 {
            break;
        }
    }
    let above_leaves: u64 = levels[1..].iter().sum();
    table.hash_start_block + above_leaves + data_block / DIGESTS_PER_BLOCK
}

/// Boots `rootfs` with `cmdline` and the read-all agent (or none).
fn boot_root(arch: Arch, rootfs: &Path, cmdline: &str, agent: Option<&Path>, timeout: u64) -> Booted {
    let verified = boot::verified_assets(arch);
    let assets = Assets::Files {
        kernel: verified.kernel,
        rootfs: rootfs.to_path_buf(),
        cmdline: Some(cmdline.to_owned()),
    };
    let _lock = boot::boot_lock();
    boot::run_boot(&mut boot::boot_command(arch, &assets, agent, timeout))
}

/// The console lines that hold `needle`.
fn lines_with<'a>(console: &'a str, needle: &str) -> Vec<&'a str> {
    console.lines().filter(|line| line.contains(needle)).collect()
}

/// The read-all agent in `dir`, with the assets of `arch` (QEMU checked first).
fn read_all_setup(arch: Arch, dir: &Path) -> (VerifiedAssets, PathBuf) {
    boot::require_qemu(arch);
    let verified = boot::verified_assets(arch);
    (verified, boot::script_agent(dir, "read-all-agent.sh", READ_ALL_AGENT))
}

fn verified_root_boots_and_every_file_reads(arch: Arch) {
    let dir = tempfile::tempdir().unwrap();
    let (verified, agent) = read_all_setup(arch, dir.path());
    assert_eq!(table_of(&verified.cmdline).root_hash, verified.root_hash);
    let booted = boot_root(
        arch,
        &verified.rootfs,
        &verified.cmdline,
        Some(&agent),
        READ_ALL_TIMEOUT_SECS,
    );
    let console = booted.console();
    let tail = boot::tail(&console, 40);
    assert!(
        console.contains("dm-0 (rootfs) is ready"),
        "{arch}: no verified device:\n{tail}"
    );
    assert!(
        console.contains("CHECK root-dm-verity ok"),
        "{arch}: the root is not the verity device:\n{tail}"
    );
    let totals = lines_with(&console, "READ-ALL files=");
    assert_eq!(totals.len(), 1, "{arch}: the agent did not finish reading:\n{tail}");
    let files: u64 = totals[0]
        .split("files=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let in_image = image_regular_files(&verified.plain_rootfs, dir.path()).len();
    assert_eq!(
        files as usize, in_image,
        "{arch}: the guest read {files} files, the image has {in_image} regular files"
    );
    assert!(
        totals[0].trim_end().ends_with("failed=0"),
        "{arch}: {:?}",
        lines_with(&console, "READ-FAILED")
    );
    assert!(lines_with(&console, "is corrupted").is_empty(), "{arch}: {tail}");
    booted.assert_success();
    eprintln!(
        "{arch}: {files} files of the verified root read; boot report:\n{}",
        booted.report()
    );
}

support::test_per_case!(verified_root_boots_and_every_file_reads {
    verified_root_boots_and_every_file_reads_x86_64: Arch::X86_64,
    verified_root_boots_and_every_file_reads_arm64: Arch::Arm64,
});

/// Which part of the image a corruption boot damages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// One byte inside the victim file's data.
    FileData,
    /// One byte of the tree block that holds the digest of that data.
    HashTree,
}

fn one_flipped_byte_fails_the_read_and_is_logged((arch, damage): (Arch, Damage)) {
    let dir = tempfile::tempdir().unwrap();
    let (verified, agent) = read_all_setup(arch, dir.path());
    let table = table_of(&verified.cmdline);
    let victim = victim(&verified.plain_rootfs, dir.path());
    let (offset, logged) = match damage {
        Damage::FileData => (
            victim.data_block * BLOCK + 100,
            format!(": data block {} is corrupted", victim.data_block),
        ),
        Damage::HashTree => {
            let hash_block = leaf_hash_block(&table, victim.data_block);
            let digest_offset = (victim.data_block % DIGESTS_PER_BLOCK) * 32;
            (
                hash_block * BLOCK + digest_offset + 3,
                format!(": metadata block {hash_block} is corrupted"),
            )
        }
    };
    let damaged = flipped_copy(&verified.rootfs, &dir.path().join("damaged.erofs"), offset);
    let booted = boot_root(arch, &damaged, &verified.cmdline, Some(&agent), READ_ALL_TIMEOUT_SECS);
    let console = booted.console();
    let tail = boot::tail(&console, 40);
    let kernel_lines = lines_with(&console, "device-mapper: verity: ");
    assert!(
        kernel_lines.iter().any(|line| line.contains(&logged)),
        "{arch} {damage:?}: the kernel did not log {logged:?} (verity lines: {kernel_lines:#?}):\n{tail}"
    );
    let failure = format!("READ-FAILED {}: ", victim.path);
    let failed = lines_with(&console, &failure);
    assert!(
        failed.iter().any(|line| line.contains("Input/output error")),
        "{arch} {damage:?}: reading {} did not fail with EIO ({failed:?}):\n{tail}",
        victim.path
    );
    let totals = lines_with(&console, "READ-ALL files=");
    assert_eq!(
        totals.len(),
        1,
        "{arch} {damage:?}: the guest did not go on after the error:\n{tail}"
    );
    if damage == Damage::FileData {
        assert!(
            totals[0].trim_end().ends_with("failed=1"),
            "{arch}: only {} fails: {}",
            victim.path,
            totals[0]
        );
    }
    eprintln!(
        "{arch} {damage:?}:\n  {}\n  {}\n  {}",
        failed.join("\n  "),
        kernel_lines.join("\n  "),
        totals[0]
    );
}

support::test_per_case!(one_flipped_byte_fails_the_read_and_is_logged {
    a_flipped_data_byte_fails_the_read_x86_64: (Arch::X86_64, Damage::FileData),
    a_flipped_data_byte_fails_the_read_arm64: (Arch::Arm64, Damage::FileData),
    a_flipped_hash_tree_byte_fails_the_read_x86_64: (Arch::X86_64, Damage::HashTree),
    a_flipped_hash_tree_byte_fails_the_read_arm64: (Arch::Arm64, Damage::HashTree),
});

fn a_wrong_root_hash_refuses_the_root(arch: Arch) {
    boot::require_qemu(arch);
    let verified = boot::verified_assets(arch);
    let table = table_of(&verified.cmdline);
    // The last hex digit changed: a root hash the tree does not have.
    let last = table.root_hash.chars().last().unwrap();
    let wrong_hash = format!("{}{}", &table.root_hash[..63], if last == '0' { '1' } else { '0' });
    let cmdline = verified.cmdline.replace(&table.root_hash, &wrong_hash);
    let booted = boot_root(arch, &verified.rootfs, &cmdline, None, REFUSED_BOOT_TIMEOUT_SECS);
    let console = booted.console();
    let tail = boot::tail(&console, 40);
    // The first block read (the EROFS superblock) climbs to the top of the tree, whose digest
    // is not the command line's: the top block is reported, the mount fails, the kernel stops.
    let top = format!(": metadata block {} is corrupted", table.hash_start_block);
    assert!(
        lines_with(&console, "device-mapper: verity: ")
            .iter()
            .any(|line| line.contains(&top)),
        "{arch}: the kernel did not log {top:?}:\n{tail}"
    );
    assert!(
        console.contains("VFS: Unable to mount root fs"),
        "{arch}: no refusal of the root on the console:\n{tail}"
    );
    assert!(
        !console.contains("arcbox-init:"),
        "{arch}: the init ran from an unverified root:\n{tail}"
    );
    let refusal: Vec<&str> = console
        .lines()
        .filter(|line| {
            ["verity", "erofs", "VFS:", "Kernel panic"]
                .iter()
                .any(|word| line.contains(word))
        })
        .collect();
    eprintln!("{arch}: refused:\n  {}", refusal.join("\n  "));
}

support::test_per_case!(a_wrong_root_hash_refuses_the_root {
    a_wrong_root_hash_refuses_the_root_x86_64: Arch::X86_64,
    a_wrong_root_hash_refuses_the_root_arm64: Arch::Arm64,
});
