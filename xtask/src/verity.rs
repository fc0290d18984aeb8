//! The verified root: the dm-verity stage applied to a finished EROFS image, and the kernel
//! command line that builds the verified device from it before the root is mounted.
//!
//! Reads an EROFS image (plain, or already followed by its own hash tree: the stage is
//! idempotent); runs the real `veritysetup` (cryptsetup-bin) to compute the SHA-256 hash tree
//! over the image's EROFS blocks; writes the image followed by the tree to the output path
//! (temporary file, checked with `veritysetup verify` exactly as the kernel will read it, then
//! renamed). The salt is fixed, so the same image always gets the same tree and root hash. The
//! table and the command line are plain functions over values.
//!
//! What corruption does is the kernel's default for a verity table without options: the read
//! fails with EIO and the kernel logs `device-mapper: verity: MAJ:MIN: data block N is
//! corrupted` (or `metadata block N` for the tree). No mode hands damaged bytes to a reader.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// Data and hash block size, bytes: the page size of both arches and EROFS's block size.
pub const BLOCK_SIZE: u64 = 4096;
/// Bytes of one SHA-256 digest in the tree.
const DIGEST_BYTES: u64 = 32;
/// The hash of the tree (and of the `sha256` the kernel needs: CRYPTO_SHA256).
const HASH_ALGORITHM: &str = "sha256";
/// The fixed salt (hex): SHA-256 of `boot-assets dm-verity salt v1`. A fixed salt keeps two
/// builds of the same image bit-identical; it is public in every manifest anyway.
pub const SALT_HEX: &str = "a29e9ca4f220c7793923928b6ab6b97a39997fdb7ea821128418b2d0b93c1b53";
/// The name of the mapped device (`/dev/mapper/rootfs` once udev runs, which the guest does not).
const DEVICE_NAME: &str = "rootfs";
/// Its minor number, fixed so that the device is always `/dev/dm-0`.
const DEVICE_MINOR: &str = "0";
/// The block device the kernel mounts as the root: the verified one.
pub const VERIFIED_ROOT_DEVICE: &str = "/dev/dm-0";
/// Where the EROFS superblock starts, and its magic number there.
const EROFS_SUPERBLOCK_OFFSET: usize = 1024;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
/// Offsets inside the superblock: log2 of the block size (u8), and the block count (le32).
const EROFS_BLKSZBITS_OFFSET: usize = 12;
const EROFS_BLOCKS_OFFSET: usize = 36;

/// A verified image: how many data blocks the tree covers (the EROFS image; the tree follows
/// it) and the tree's root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityRoot {
    pub data_blocks: u64,
    pub root_hash: String,
}

impl VerityRoot {
    /// Bytes of the EROFS data, which is also where the hash tree starts in the file.
    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * BLOCK_SIZE
    }

    /// Bytes of the hash tree after the data.
    pub fn tree_bytes(&self) -> u64 {
        hash_tree_blocks(self.data_blocks) * BLOCK_SIZE
    }

    /// The dm table of the verified device over `data_device` (which also holds the tree, right
    /// after the data): `<start> <sectors> verity <version> <data dev> <hash dev> <data block
    /// size> <hash block size> <data blocks> <hash start block> <algorithm> <root> <salt>`. No
    /// optional arguments: a corrupted block is an I/O error to its reader, logged by the kernel.
    pub fn table(&self, data_device: &str) -> String {
        let sectors = self.data_bytes() / 512;
        let blocks = self.data_blocks;
        format!(
            "0 {sectors} verity 1 {data_device} {data_device} {BLOCK_SIZE} {BLOCK_SIZE} {blocks} {blocks} \
             {HASH_ALGORITHM} {} {SALT_HEX}",
            self.root_hash
        )
    }
}

/// Blocks of the hash tree over `data_blocks` blocks, as veritysetup writes it without a
/// superblock: every level, each holding one digest per block of the level below.
pub fn hash_tree_blocks(data_blocks: u64) -> u64 {
    let per_block = BLOCK_SIZE / DIGEST_BYTES;
    let mut total = 0;
    let mut level = data_blocks;
    loop {
        level = level.div_ceil(per_block);
        total += level;
        if level <= 1 {
            return total;
        }
    }
}

/// Bytes of EROFS data an image starts with, read from its superblock (`head` holds at least
/// the first 4 KiB): the block count times the block size, which must be whole 4 KiB blocks.
pub fn erofs_data_bytes(head: &[u8]) -> std::result::Result<u64, String> {
    let superblock = head
        .get(EROFS_SUPERBLOCK_OFFSET..EROFS_SUPERBLOCK_OFFSET + EROFS_BLOCKS_OFFSET + 4)
        .ok_or("it is too short to hold an EROFS superblock")?;
    let magic = u32::from_le_bytes(superblock[0..4].try_into().expect("four bytes"));
    if magic != EROFS_MAGIC {
        return Err(format!(
            "it is not an EROFS image (magic {magic:#010x} at byte {EROFS_SUPERBLOCK_OFFSET}, expected {EROFS_MAGIC:#010x})"
        ));
    }
    let block_bits = superblock[EROFS_BLKSZBITS_OFFSET];
    let blocks = u32::from_le_bytes(
        superblock[EROFS_BLOCKS_OFFSET..EROFS_BLOCKS_OFFSET + 4]
            .try_into()
            .expect("four bytes"),
    );
    let bytes = u64::from(blocks)
        .checked_shl(u32::from(block_bits))
        .filter(|_| block_bits < 32)
        .ok_or_else(|| format!("its superblock's block size 2^{block_bits} is not a block size"))?;
    if bytes == 0 || bytes % BLOCK_SIZE != 0 {
        return Err(format!(
            "its EROFS data is {bytes} bytes ({blocks} blocks of 2^{block_bits}), not whole {BLOCK_SIZE}-byte blocks"
        ));
    }
    Ok(bytes)
}

/// `base` with its `root=DEVICE` replaced by the verified root: `dm-mod.create=` builds the
/// verity device over DEVICE (waiting for it with `dm-mod.waitfor=`), and `root=/dev/dm-0`
/// mounts it. Every other parameter is kept, in order (a value with spaces in double quotes).
pub fn verified_cmdline(base: &str, verity: &VerityRoot) -> Result<String> {
    let parameters = boot_assets::manifest::cmdline_parameters(base);
    if parameters
        .iter()
        .any(|(name, _)| name.replace('-', "_") == "dm_mod.create")
    {
        bail!("the kernel command line {base:?} already has a dm-mod.create=: give the line without it (the release adds the verified root)");
    }
    let roots: Vec<&str> = parameters
        .iter()
        .filter(|(name, _)| name == "root")
        .filter_map(|(_, value)| value.as_deref())
        .collect();
    let [device] = roots.as_slice() else {
        bail!(
            "the kernel command line {base:?} must name the rootfs disk exactly once as root=DEVICE (e.g. root=/dev/vda), \
             which the verified root reads; it names it {} times",
            roots.len()
        );
    };
    let verified = format!(
        "dm-mod.create=\"{DEVICE_NAME},,{DEVICE_MINOR},ro,{}\" dm-mod.waitfor={device} root={VERIFIED_ROOT_DEVICE}",
        verity.table(device)
    );
    let words: Vec<String> = parameters
        .iter()
        .map(|(name, value)| match value.as_deref() {
            _ if name == "root" => verified.clone(),
            None => name.clone(),
            Some(value) if value.chars().any(char::is_whitespace) => format!("{name}=\"{value}\""),
            Some(value) => format!("{name}={value}"),
        })
        .collect();
    // What follows a bare `--` is init's, and stays as it was.
    let init_arguments: Vec<&str> = base.split_whitespace().skip_while(|word| *word != "--").collect();
    Ok(words
        .into_iter()
        .chain(init_arguments.into_iter().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Writes `input`'s EROFS data followed by its hash tree to `output` and returns the root.
/// `input` may already carry that same tree (it is then written unchanged); any other bytes
/// after the data are refused.
pub fn apply(sh: &Shell, input: &Path, output: &Path) -> Result<VerityRoot> {
    crate::tools::require("veritysetup").context("the verified root needs veritysetup")?;
    let data_bytes = read_data_bytes(input)?;
    let data_blocks = data_bytes / BLOCK_SIZE;
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    let tree_path = scratch.path().join("hash-tree");
    let root_hash_path = scratch.path().join("root-hash");
    let common = common_args(data_blocks);
    cmd!(
        sh,
        "veritysetup format {common...} --root-hash-file={root_hash_path} {input} {tree_path}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .with_context(|| format!("veritysetup could not compute the hash tree of {}", input.display()))?;
    let root_hash = std::fs::read_to_string(&root_hash_path)
        .with_context(|| format!("reading {}", root_hash_path.display()))?
        .trim()
        .to_owned();
    if !boot_assets::manifest::is_sha256_hex(&root_hash) {
        bail!("veritysetup wrote the root hash {root_hash:?}, not 64 lowercase hex digits");
    }
    let tree = std::fs::read(&tree_path).with_context(|| format!("reading {}", tree_path.display()))?;
    let verity = VerityRoot { data_blocks, root_hash };
    anyhow::ensure!(
        tree.len() as u64 == verity.tree_bytes(),
        "veritysetup wrote a {}-byte tree over {data_blocks} blocks; expected {}",
        tree.len(),
        verity.tree_bytes()
    );
    check_existing_tail(input, data_bytes, &tree)?;
    write_verified(sh, input, output, &verity, &tree)?;
    Ok(verity)
}

/// The `veritysetup` options of our layout: no superblock, SHA-256, 4 KiB blocks, the fixed
/// salt, exactly `data_blocks` data blocks.
fn common_args(data_blocks: u64) -> Vec<String> {
    vec![
        "--no-superblock".into(),
        format!("--hash={HASH_ALGORITHM}"),
        format!("--data-block-size={BLOCK_SIZE}"),
        format!("--hash-block-size={BLOCK_SIZE}"),
        format!("--data-blocks={data_blocks}"),
        format!("--salt={SALT_HEX}"),
    ]
}

/// The EROFS data size of the image at `input`, checked against the file's length.
fn read_data_bytes(input: &Path) -> Result<u64> {
    let mut file = std::fs::File::open(input).with_context(|| format!("opening rootfs image {}", input.display()))?;
    let mut head = Vec::new();
    (&mut file)
        .take(BLOCK_SIZE)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {}", input.display()))?;
    let data_bytes =
        erofs_data_bytes(&head).map_err(|problem| anyhow::anyhow!("rootfs image {}: {problem}", input.display()))?;
    let length = file
        .metadata()
        .with_context(|| format!("reading {}", input.display()))?
        .len();
    if length < data_bytes {
        bail!(
            "rootfs image {}: its superblock counts {data_bytes} bytes of EROFS data but the file has {length}: it is truncated",
            input.display()
        );
    }
    Ok(data_bytes)
}

/// Refuses an image with bytes after its EROFS data unless they are exactly `tree`.
fn check_existing_tail(input: &Path, data_bytes: u64, tree: &[u8]) -> Result<()> {
    let mut file = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    file.seek(SeekFrom::Start(data_bytes))
        .with_context(|| format!("reading {}", input.display()))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)
        .with_context(|| format!("reading {}", input.display()))?;
    if !tail.is_empty() && tail != tree {
        bail!(
            "rootfs image {}: the {} bytes after its {data_bytes} bytes of EROFS data are not its dm-verity hash tree \
             (another salt, or a damaged image): give the plain EROFS image",
            input.display(),
            tail.len()
        );
    }
    Ok(())
}

/// Writes the data and the tree to a temporary file beside `output`, has `veritysetup verify`
/// read it as the kernel will (one device, the tree at the data's end), then renames it.
fn write_verified(sh: &Shell, input: &Path, output: &Path, verity: &VerityRoot, tree: &[u8]) -> Result<()> {
    let dir = output
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".rootfs-verity-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut data = std::fs::File::open(input)
        .with_context(|| format!("opening {}", input.display()))?
        .take(verity.data_bytes());
    std::io::copy(&mut data, temp.as_file_mut()).with_context(|| format!("writing {}", temp.path().display()))?;
    std::io::Write::write_all(temp.as_file_mut(), tree)
        .with_context(|| format!("writing {}", temp.path().display()))?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", temp.path().display()))?;
    let (common, offset, image, root) = (
        common_args(verity.data_blocks),
        verity.data_bytes().to_string(),
        temp.path(),
        &verity.root_hash,
    );
    cmd!(
        sh,
        "veritysetup verify {common...} --hash-offset={offset} {image} {image} {root}"
    )
    .quiet()
    .ignore_stdout()
    .run()
    .context("veritysetup verify refused the verified image just written (a bug in the verity stage)")?;
    temp.persist(output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "b941a51fdf7ff9e33ec01bc9b83bd8395d028a9193f223c0aaaaaaaaaaaaaaaa";

    /// A 4 KiB head with an EROFS superblock of `blocks` blocks of 2^`bits` bytes.
    fn erofs_head(blocks: u32, bits: u8) -> Vec<u8> {
        let mut head = vec![0u8; 4096];
        head[1024..1028].copy_from_slice(&EROFS_MAGIC.to_le_bytes());
        head[1024 + EROFS_BLKSZBITS_OFFSET] = bits;
        head[1024 + EROFS_BLOCKS_OFFSET..1024 + EROFS_BLOCKS_OFFSET + 4].copy_from_slice(&blocks.to_le_bytes());
        head
    }

    #[test]
    fn the_data_size_comes_from_the_erofs_superblock() {
        assert_eq!(erofs_data_bytes(&erofs_head(74, 12)), Ok(74 * 4096));
        assert_eq!(erofs_data_bytes(&erofs_head(16, 9)), Ok(8192));
        assert_eq!(
            erofs_data_bytes(&erofs_head(3, 9)).unwrap_err(),
            "its EROFS data is 1536 bytes (3 blocks of 2^9), not whole 4096-byte blocks"
        );
        assert_eq!(
            erofs_data_bytes(&[0u8; 4096]).unwrap_err(),
            "it is not an EROFS image (magic 0x00000000 at byte 1024, expected 0xe0f5e1e2)"
        );
        assert_eq!(
            erofs_data_bytes(&[0u8; 100]).unwrap_err(),
            "it is too short to hold an EROFS superblock"
        );
    }

    #[test]
    fn the_tree_has_one_digest_per_block_of_the_level_below() {
        assert_eq!(hash_tree_blocks(1), 1);
        assert_eq!(hash_tree_blocks(74), 1);
        assert_eq!(hash_tree_blocks(128), 1);
        assert_eq!(hash_tree_blocks(129), 2 + 1);
        // 10 MiB: 2560 blocks → 20 leaf blocks → 1 root block.
        assert_eq!(hash_tree_blocks(2560), 20 + 1);
        assert_eq!(hash_tree_blocks(128 * 128 + 1), 129 + 2 + 1);
    }

    #[test]
    fn the_table_names_the_disk_twice_and_the_tree_after_the_data() {
        let verity = VerityRoot {
            data_blocks: 2560,
            root_hash: ROOT.into(),
        };
        assert_eq!(
            verity.table("/dev/vda"),
            format!("0 20480 verity 1 /dev/vda /dev/vda 4096 4096 2560 2560 sha256 {ROOT} {SALT_HEX}")
        );
    }

    #[test]
    fn the_verified_command_line_replaces_root_and_keeps_the_rest() {
        let verity = VerityRoot {
            data_blocks: 10,
            root_hash: ROOT.into(),
        };
        let line = verified_cmdline("console=hvc0 root=/dev/vda ro rootfstype=erofs earlycon", &verity).unwrap();
        assert_eq!(
            line,
            format!(
                "console=hvc0 dm-mod.create=\"rootfs,,0,ro,{}\" dm-mod.waitfor=/dev/vda root=/dev/dm-0 ro \
                 rootfstype=erofs earlycon",
                verity.table("/dev/vda")
            )
        );
        // The consumer's reading of the line finds the same root hash.
        assert_eq!(
            boot_assets::manifest::cmdline_verity_root_hashes(&line),
            vec![ROOT.to_owned()]
        );
        let quoted = verified_cmdline("a=\"x  y\" root=/dev/vdb b -- init-arg", &verity).unwrap();
        assert!(quoted.starts_with("a=\"x  y\" dm-mod.create="), "{quoted}");
        assert!(
            quoted.ends_with("dm-mod.waitfor=/dev/vdb root=/dev/dm-0 b -- init-arg"),
            "{quoted}"
        );
        let err = verified_cmdline(&line, &verity).unwrap_err().to_string();
        assert!(err.contains("already has a dm-mod.create="), "{err}");
        let err = verified_cmdline("console=ttyS0 ro", &verity).unwrap_err().to_string();
        assert!(
            err.contains("must name the rootfs disk exactly once as root=DEVICE"),
            "{err}"
        );
    }

    #[test]
    fn the_salt_is_the_documented_digest() {
        assert_eq!(SALT_HEX, crate::util::sha256_bytes(b"boot-assets dm-verity salt v1"));
    }
}
