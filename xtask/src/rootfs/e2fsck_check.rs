//! The e2fsck regression check: the rootfs build refuses to produce an image unless the e2fsck
//! it is about to ship reports damage with `-n`. On a 64 MiB ext4 image with `metadata_csum`
//! made by the image's own mkfs.ext4, `e2fsck -fn` must exit 0 and leave it unchanged; with the
//! low bit of byte 4126 (the group-0 descriptor checksum) flipped it must exit exactly 4 and
//! leave it unchanged. Stock e2fsprogs 1.47.0 and 1.47.3 exit 0 there.
//!
//! Reads the staged image tree; runs the programs with the image's own loader and libraries (the
//! host's arch) or under qemu-user (the other arch); writes only a temporary disk image.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use boot_assets::Arch;
use xshell::{cmd, Shell};

/// The image paths of the programs checked.
pub const E2FSCK_PATH: &str = "sbin/e2fsck";
pub const MKFS_EXT4_PATH: &str = "sbin/mkfs.ext4";

/// The name every failure message starts with.
pub const CHECK_NAME: &str = "the e2fsck regression check";

/// The size of the checked filesystem.
const DISK_BYTES: u64 = 64 * 1024 * 1024;

/// The byte whose low bit is the low bit of group 0's descriptor checksum (4 KiB blocks: the
/// descriptor table starts at 4096, `bg_checksum` is at offset 30).
const DESCRIPTOR_CHECKSUM_BYTE: u64 = 4126;

/// How the checked filesystem is made.
const MKFS_ARGS: [&str; 8] = ["-q", "-F", "-t", "ext4", "-O", "metadata_csum", "-b", "4096"];

/// `e2fsck -f -n`: force a full check, change nothing.
const E2FSCK_ARGS: [&str; 2] = ["-f", "-n"];

/// e2fsck's exit code for "errors left uncorrected".
const EXIT_UNCORRECTED: i32 = 4;

/// What one `e2fsck -fn` run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// The disk's bytes were the same afterwards.
    pub unchanged: bool,
    /// What it printed, for the error.
    pub output: String,
}

/// Runs the check on the tree staged at `root` (built for `arch`; `interpreter` is the program
/// loader e2fsck asks for, `None` when static).
pub fn check(sh: &Shell, root: &Path, arch: Arch, interpreter: Option<&str>) -> Result<()> {
    let runner = Runner::new(root, arch, interpreter)?;
    let scratch = tempfile::tempdir().context("creating a directory for the e2fsck check")?;
    let disk = scratch.path().join("ext4.img");
    std::fs::File::create(&disk)
        .and_then(|file| file.set_len(DISK_BYTES))
        .with_context(|| format!("creating {}", disk.display()))?;
    let (program, args) = runner.command(MKFS_EXT4_PATH);
    let made = cmd!(sh, "{program} {args...} {MKFS_ARGS...} {disk}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running /{MKFS_EXT4_PATH} for {CHECK_NAME}"))?;
    if !made.status.success() {
        bail!(
            "{CHECK_NAME}: /{MKFS_EXT4_PATH} could not make the test filesystem ({}):\n{}",
            made.status,
            String::from_utf8_lossy(&made.stderr).trim_end()
        );
    }
    let clean = run_e2fsck(sh, &runner, &disk)?;
    flip_low_bit(&disk, DESCRIPTOR_CHECKSUM_BYTE)?;
    let damaged = run_e2fsck(sh, &runner, &disk)?;
    verdict(&clean, &damaged)
}

/// The check's verdict from the two runs.
pub fn verdict(clean: &Run, damaged: &Run) -> Result<()> {
    let mut problems = Vec::new();
    if clean.code != Some(0) {
        problems.push(format!(
            "on the clean filesystem `e2fsck -fn` exited {:?}, not 0",
            clean.code
        ));
    }
    if !clean.unchanged {
        problems.push("on the clean filesystem `e2fsck -fn` changed the disk".to_owned());
    }
    if damaged.code != Some(EXIT_UNCORRECTED) {
        problems.push(format!(
            "with the group-0 descriptor checksum damaged (low bit of byte {DESCRIPTOR_CHECKSUM_BYTE} flipped) \
             `e2fsck -fn` exited {:?}, not exactly {EXIT_UNCORRECTED}: it does not report damage",
            damaged.code
        ));
    }
    if !damaged.unchanged {
        problems.push("on the damaged filesystem `e2fsck -fn` changed the disk".to_owned());
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "{CHECK_NAME} failed for the /{E2FSCK_PATH} about to ship (is our fix in manifests/patches/e2fsprogs/ \
         applied?):\n  {}\n--- e2fsck on the damaged filesystem ---\n{}",
        problems.join("\n  "),
        damaged.output.trim_end()
    )
}

/// One `e2fsck -fn` run, with the disk's digest compared before and after.
fn run_e2fsck(sh: &Shell, runner: &Runner, disk: &Path) -> Result<Run> {
    let before = crate::util::sha256_file(disk)?;
    let (program, args) = runner.command(E2FSCK_PATH);
    let output = cmd!(sh, "{program} {args...} {E2FSCK_ARGS...} {disk}")
        .quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running /{E2FSCK_PATH} for {CHECK_NAME}"))?;
    Ok(Run {
        code: output.status.code(),
        unchanged: crate::util::sha256_file(disk)? == before,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    })
}

/// Flips the low bit of the byte at `offset`.
fn flip_low_bit(path: &Path, offset: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset)
        .with_context(|| format!("reading byte {offset} of {}", path.display()))?;
    byte[0] ^= 1;
    file.write_all_at(&byte, offset)
        .with_context(|| format!("writing byte {offset} of {}", path.display()))
}

/// How a program of the staged image runs on this host.
struct Runner {
    root: PathBuf,
    /// The program and its leading arguments; the image path of the program follows.
    prefix: Vec<String>,
}

impl Runner {
    fn new(root: &Path, arch: Arch, interpreter: Option<&str>) -> Result<Runner> {
        let facts = crate::arch_facts::of(arch);
        let prefix = if Arch::host() != Some(arch) {
            let qemu = crate::tools::require(facts.qemu_user)?;
            vec![qemu.display().to_string(), "-L".to_owned(), root.display().to_string()]
        } else if let Some(interpreter) = interpreter {
            // The image's own loader and libraries, not the host's.
            let loader = root.join(interpreter.trim_start_matches('/'));
            let libraries = root.join("lib").join(facts.triplet);
            vec![
                loader.display().to_string(),
                "--library-path".to_owned(),
                libraries.display().to_string(),
            ]
        } else {
            Vec::new()
        };
        Ok(Runner {
            root: root.to_path_buf(),
            prefix,
        })
    }

    /// The program to run and its arguments up to (and including) the image program's path.
    fn command(&self, image_path: &str) -> (String, Vec<String>) {
        let program = self.root.join(image_path).display().to_string();
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut args = rest.to_vec();
                args.push(program);
                (first.clone(), args)
            }
            None => (program, Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: i32, unchanged: bool) -> Run {
        Run {
            code: Some(code),
            unchanged,
            output: "Group descriptor 0 checksum is 0x9e43, should be 0x9e42.  IGNORED.\n".into(),
        }
    }

    #[test]
    fn only_exit_4_on_the_damaged_disk_passes() {
        verdict(&run(0, true), &run(4, true)).unwrap();
        let err = verdict(&run(0, true), &run(0, true)).unwrap_err().to_string();
        assert!(
            err.starts_with("the e2fsck regression check failed for the /sbin/e2fsck about to ship"),
            "{err}"
        );
        assert!(
            err.contains("exited Some(0), not exactly 4: it does not report damage"),
            "{err}"
        );
        assert!(err.contains("IGNORED."), "{err}");
        let err = verdict(&run(0, true), &run(12, true)).unwrap_err().to_string();
        assert!(err.contains("exited Some(12), not exactly 4"), "{err}");
    }

    #[test]
    fn a_changed_disk_or_a_dirty_clean_run_fails() {
        let err = verdict(&run(1, false), &run(4, false)).unwrap_err().to_string();
        assert!(
            err.contains("on the clean filesystem `e2fsck -fn` exited Some(1), not 0"),
            "{err}"
        );
        assert!(
            err.contains("on the clean filesystem `e2fsck -fn` changed the disk"),
            "{err}"
        );
        assert!(
            err.contains("on the damaged filesystem `e2fsck -fn` changed the disk"),
            "{err}"
        );
    }

    #[test]
    fn a_runner_puts_the_image_program_after_its_prefix() {
        let runner = Runner {
            root: "/stage".into(),
            prefix: vec!["qemu".into(), "-L".into(), "/stage".into()],
        };
        assert_eq!(
            runner.command("sbin/e2fsck"),
            (
                "qemu".to_owned(),
                vec!["-L".to_owned(), "/stage".to_owned(), "/stage/sbin/e2fsck".to_owned()]
            )
        );
    }
}
