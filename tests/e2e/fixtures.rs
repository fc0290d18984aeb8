//! Small stand-in inputs for release tests: kernel images that carry a real version string in
//! the place a real image does, and a rootfs blob with the EROFS superblock fields `release`
//! reads (magic, block size, block count). They are fixtures, not boot images.

use std::path::{Path, PathBuf};

use boot_assets::Arch;

/// The Linux version every fixture kernel reports.
pub const FIXTURE_KERNEL_VERSION: &str = "6.1.0-fixture";

/// A kernel image that `release` can read the version from: a bzImage boot-protocol header on
/// x86_64 (`HdrS` at 0x202, version pointer at 0x20E counted from 0x200), a banner on arm64.
pub fn fixture_kernel_bytes(arch: Arch) -> Vec<u8> {
    match arch {
        Arch::X86_64 => {
            let mut image = vec![0u8; 0x600];
            image[0x202..0x206].copy_from_slice(b"HdrS");
            image[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
            let version = format!("{FIXTURE_KERNEL_VERSION} (fixture@boot-assets) #1 SMP\0");
            image[0x500..0x500 + version.len()].copy_from_slice(version.as_bytes());
            image
        }
        Arch::Arm64 => {
            let mut image = vec![0x5au8; 8192];
            image.extend_from_slice(
                format!("Linux version {FIXTURE_KERNEL_VERSION} (fixture@boot-assets) #1\n").as_bytes(),
            );
            image
        }
    }
}

/// Writes a fixture kernel and rootfs for `arch` into `dir`; returns (kernel, rootfs).
pub fn write_fixture_inputs(dir: &Path, arch: Arch) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let kernel = dir.join(format!("kernel-{arch}"));
    let rootfs = dir.join(format!("rootfs-{arch}.erofs"));
    std::fs::write(&kernel, fixture_kernel_bytes(arch)).unwrap();
    std::fs::write(&rootfs, fixture_rootfs_bytes(arch)).unwrap();
    (kernel, rootfs)
}

/// Bytes of the fixture rootfs.
const FIXTURE_ROOTFS_BYTES: u32 = 64 * 1024;

/// A 64 KiB rootfs blob that `release` takes whole as the data its hash tree covers (see
/// [`with_erofs_superblock`]).
pub fn fixture_rootfs_bytes(arch: Arch) -> Vec<u8> {
    with_erofs_superblock((0..FIXTURE_ROOTFS_BYTES).map(|i| (i * 7 + arch as u32) as u8).collect())
}

/// `bytes` padded with zeros to whole 4 KiB blocks, with the EROFS superblock fields `release`
/// reads written at byte 1024 (magic; log2 of the block size at +12; the block count at +36),
/// so the blob is taken whole as EROFS data.
pub fn with_erofs_superblock(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().max(4096).div_ceil(4096) * 4096, 0);
    let blocks = u32::try_from(bytes.len() / 4096).expect("a fixture rootfs is small");
    bytes[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
    bytes[1024 + 12] = 12;
    bytes[1024 + 36..1024 + 40].copy_from_slice(&blocks.to_le_bytes());
    bytes
}
