//! Per-arch facts in one table: the Debian and multiarch names, how the kernel is built, and
//! how QEMU runs a guest. Every `match arch` that needs one of these asks [`of`].
//!
//! Reads and writes nothing; `manifests/rootfs.toml` repeats the Debian names and triplets as
//! recipe data, and a unit test keeps the two equal.

use boot_assets::Arch;

use crate::elf::Machine;

/// What the pipeline needs to know about one arch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchFacts {
    /// The Debian architecture name (`arm64`, `amd64`).
    pub deb_arch: &'static str,
    /// The multiarch triplet (`aarch64-linux-gnu`).
    pub triplet: &'static str,
    /// The ELF machine of its executables.
    pub elf_machine: Machine,
    /// make's `ARCH=` for the kernel.
    pub kernel_make_arch: &'static str,
    /// make's `CROSS_COMPILE=`, when the kernel is cross-compiled from an x86_64 host.
    pub kernel_cross_compile: Option<&'static str>,
    /// The C compiler the kernel is built with.
    pub c_compiler: &'static str,
    /// The make target that builds the boot image.
    pub kernel_make_target: &'static str,
    /// Where that target leaves the image, relative to the object tree.
    pub kernel_image: &'static str,
    /// The QEMU system emulator.
    pub qemu_binary: &'static str,
    /// QEMU's machine type.
    pub qemu_machine: &'static str,
    /// The CPU QEMU emulates under TCG, when its default will not do.
    pub qemu_tcg_cpu: Option<&'static str>,
    /// QEMU's user-mode emulator, which runs one program of the arch on another host.
    pub qemu_user: &'static str,
    /// The kernel's name for the machine's first UART (`-serial`), e.g. the KVM probe's console.
    pub serial_console: &'static str,
}

/// x86_64: bzImage, the q35 machine.
const X86_64: ArchFacts = ArchFacts {
    deb_arch: "amd64",
    triplet: "x86_64-linux-gnu",
    elf_machine: Machine::X86_64,
    kernel_make_arch: "x86_64",
    kernel_cross_compile: None,
    c_compiler: "gcc",
    kernel_make_target: "bzImage",
    kernel_image: "arch/x86/boot/bzImage",
    qemu_binary: "qemu-system-x86_64",
    qemu_machine: "q35",
    qemu_tcg_cpu: None,
    qemu_user: "qemu-x86_64",
    serial_console: "ttyS0",
};

/// arm64: QEMU and Virtualization.framework boot the uncompressed Image directly.
const ARM64: ArchFacts = ArchFacts {
    deb_arch: "arm64",
    triplet: "aarch64-linux-gnu",
    elf_machine: Machine::Aarch64,
    kernel_make_arch: "arm64",
    kernel_cross_compile: Some("aarch64-linux-gnu-"),
    c_compiler: "aarch64-linux-gnu-gcc",
    kernel_make_target: "Image",
    kernel_image: "arch/arm64/boot/Image",
    qemu_binary: "qemu-system-aarch64",
    qemu_machine: "virt",
    // The virt machine's default CPU is a 32-bit cortex-a15.
    qemu_tcg_cpu: Some("cortex-a57"),
    qemu_user: "qemu-aarch64",
    serial_console: "ttyAMA0",
};

/// The facts of `arch`.
pub fn of(arch: Arch) -> &'static ArchFacts {
    match arch {
        Arch::X86_64 => &X86_64,
        Arch::Arm64 => &ARM64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::recipe::Recipe;
    use crate::util;

    #[test]
    fn the_rootfs_recipe_names_each_arch_as_the_table_does() {
        let recipe = Recipe::load(&util::project_root().join(crate::rootfs::DEFAULT_RECIPE)).unwrap();
        for arch in Arch::ALL {
            let params = recipe.arch_params(arch);
            assert_eq!(params.deb_arch, of(arch).deb_arch, "{arch}");
            assert_eq!(params.triplet, of(arch).triplet, "{arch}");
        }
    }

    #[test]
    fn each_machine_maps_back_to_its_arch() {
        for arch in Arch::ALL {
            assert_eq!(of(arch).elf_machine.arch(), Some(arch));
        }
    }

    #[test]
    fn the_cross_compiler_is_the_triplet_gcc() {
        let arm64 = of(Arch::Arm64);
        assert_eq!(arm64.kernel_cross_compile, Some(format!("{}-", arm64.triplet).as_str()));
        assert_eq!(arm64.c_compiler, format!("{}-gcc", arm64.triplet));
    }
}
