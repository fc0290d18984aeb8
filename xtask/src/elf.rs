//! ELF facts the pipeline needs, read with `goblin`: machine, program interpreter (`PT_INTERP`),
//! `DT_NEEDED`, the own library search path (`DT_RUNPATH`, else `DT_RPATH`) and `DT_SONAME`.
//!
//! Pure functions over bytes; reads and writes no files. Shared by the rootfs checks (machine,
//! library closure) and the FEX build ([`require_static`]: aarch64, no `PT_INTERP`, no `DT_NEEDED`).

use anyhow::{bail, Result};
use boot_assets::Arch;
use goblin::elf::{header, Elf};

/// The first four bytes of every ELF file.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// The CPU an ELF file was built for, as far as this repository cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// `EM_AARCH64`.
    Aarch64,
    /// `EM_X86_64`.
    X86_64,
    /// Any other `e_machine` value.
    Other(u16),
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Machine::Aarch64 => f.write_str("aarch64"),
            Machine::X86_64 => f.write_str("x86_64"),
            Machine::Other(code) => write!(f, "e_machine {code}"),
        }
    }
}

/// What one ELF file says about how it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: Machine,
    /// The program interpreter (`PT_INTERP`), e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in file order.
    pub needed: Vec<String>,
    /// The file's own library directories, as glibc's loader takes them: `DT_RUNPATH`, or
    /// `DT_RPATH` when there is no RUNPATH (colon lists split, `$ORIGIN` not yet expanded).
    pub search_path: Vec<String>,
    /// `DT_SONAME`, for shared libraries.
    pub soname: Option<String>,
}

impl ElfInfo {
    /// Loads without any shared object: no interpreter and no `DT_NEEDED`.
    pub fn is_static(&self) -> bool {
        self.interpreter.is_none() && self.needed.is_empty()
    }
}

/// True when the bytes start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.len() >= ELF_MAGIC.len() && &bytes[..ELF_MAGIC.len()] == ELF_MAGIC
}

/// Parses an ELF file's header, program headers and dynamic section.
pub fn elf_info(bytes: &[u8]) -> Result<ElfInfo> {
    if !is_elf(bytes) {
        bail!("not an ELF file (no \\x7fELF magic)");
    }
    let elf = Elf::parse(bytes).map_err(|e| anyhow::anyhow!("malformed ELF file: {e}"))?;
    let machine = match elf.header.e_machine {
        header::EM_AARCH64 => Machine::Aarch64,
        header::EM_X86_64 => Machine::X86_64,
        other => Machine::Other(other),
    };
    Ok(ElfInfo {
        machine,
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|name| (*name).to_owned()).collect(),
        search_path: own_search_path(&elf.runpaths, &elf.rpaths),
        soname: elf.soname.map(str::to_owned),
    })
}

/// `DT_RUNPATH`'s directories, or without any `DT_RPATH`'s: the loader ignores RPATH once a
/// file has a RUNPATH.
fn own_search_path(runpaths: &[&str], rpaths: &[&str]) -> Vec<String> {
    let own = if runpaths.is_empty() { rpaths } else { runpaths };
    own.iter()
        .flat_map(|entry| entry.split(':'))
        .filter(|dir| !dir.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Machine {
    /// The contract arch of this machine, when it is one.
    pub fn arch(self) -> Option<Arch> {
        match self {
            Machine::Aarch64 => Some(Arch::Arm64),
            Machine::X86_64 => Some(Arch::X86_64),
            Machine::Other(_) => None,
        }
    }
}

/// Refuses anything but a self-contained executable for `arch`: the right machine, no
/// `PT_INTERP` (the kernel would look the loader up in the container's rootfs) and no
/// `DT_NEEDED`. `name` labels the errors.
pub fn require_static(info: &ElfInfo, arch: Arch, name: &str) -> Result<()> {
    match info.machine.arch() {
        Some(found) if found == arch => {}
        Some(found) => bail!("{name} is built for {found}, not {arch}"),
        None => bail!("{name} is built for {}, not {arch}", info.machine),
    }
    if let Some(interpreter) = &info.interpreter {
        bail!(
            "{name} is dynamically linked: it has PT_INTERP {interpreter:?}; \
             it must be a static(-pie) executable (link with -static-pie)"
        );
    }
    if !info.needed.is_empty() {
        bail!(
            "{name} needs shared libraries (DT_NEEDED {}); it must be fully static",
            info.needed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(machine: Machine, interpreter: Option<&str>, needed: &[&str]) -> ElfInfo {
        ElfInfo {
            machine,
            interpreter: interpreter.map(str::to_owned),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            search_path: vec![],
            soname: None,
        }
    }

    #[test]
    fn static_aarch64_passes() {
        require_static(&info(Machine::Aarch64, None, &[]), Arch::Arm64, "FEX").unwrap();
    }

    #[test]
    fn interpreter_is_refused_by_name() {
        let err = require_static(
            &info(Machine::Aarch64, Some("/lib/ld-linux-aarch64.so.1"), &["libc.so.6"]),
            Arch::Arm64,
            "FEX",
        );
        let text = err.unwrap_err().to_string();
        assert!(text.contains("PT_INTERP \"/lib/ld-linux-aarch64.so.1\""), "{text}");
    }

    #[test]
    fn needed_libraries_are_refused() {
        let text = require_static(&info(Machine::Aarch64, None, &["libm.so.6"]), Arch::Arm64, "FEX")
            .unwrap_err()
            .to_string();
        assert!(text.contains("DT_NEEDED libm.so.6"), "{text}");
    }

    #[test]
    fn wrong_machine_is_refused() {
        let text = require_static(&info(Machine::X86_64, None, &[]), Arch::Arm64, "FEX")
            .unwrap_err()
            .to_string();
        assert_eq!(text, "FEX is built for x86_64, not arm64");
        let text = require_static(&info(Machine::Other(40), None, &[]), Arch::Arm64, "FEX")
            .unwrap_err()
            .to_string();
        assert_eq!(text, "FEX is built for e_machine 40, not arm64");
    }

    #[test]
    fn runpath_hides_rpath_and_colon_lists_are_split() {
        assert_eq!(
            own_search_path(&["$ORIGIN/../lib:/opt/lib"], &["/old"]),
            ["$ORIGIN/../lib", "/opt/lib"]
        );
        assert_eq!(own_search_path(&[], &["/a::/b", "/c"]), ["/a", "/b", "/c"]);
        assert!(own_search_path(&[], &[]).is_empty());
    }

    #[test]
    fn rejects_non_elf_bytes_with_a_clear_message() {
        let err = elf_info(b"#!/bin/sh\n").unwrap_err();
        assert_eq!(err.to_string(), "not an ELF file (no \\x7fELF magic)");
        assert!(!is_elf(b"\x7fEL"));
    }

    #[test]
    fn reads_the_test_binary_itself() {
        // The running test binary is a real dynamic ELF for the host.
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = elf_info(&bytes).unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(info.machine, Machine::X86_64);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(info.machine, Machine::Aarch64);
        assert!(info.needed.iter().any(|lib| lib.starts_with("libc.so")), "{info:?}");
        assert!(info.interpreter.is_some());
        assert!(!info.is_static());
    }
}
