//! What an ELF file says about how it runs: machine, interpreter (`PT_INTERP`), needed
//! libraries (`DT_NEEDED`) and search paths (`RUNPATH`/`RPATH`), read with `goblin`.
//!
//! Pure functions over bytes; callers read the file.

use anyhow::{bail, Context, Result};
use goblin::elf::header::{EM_AARCH64, EM_X86_64};

use boot_assets::Arch;

/// The facts about one ELF file that the pipeline checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine` from the header.
    pub machine: u16,
    /// The program interpreter (`PT_INTERP`), absent for static executables.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries, in file order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` and `DT_RPATH` directories, in that order.
    pub search_paths: Vec<String>,
}

impl ElfInfo {
    /// The contract arch of this machine, when it is one.
    pub fn arch(&self) -> Option<Arch> {
        match self.machine {
            EM_AARCH64 => Some(Arch::Arm64),
            EM_X86_64 => Some(Arch::X86_64),
            _ => None,
        }
    }
}

/// Reads the facts from ELF bytes; `name` only labels errors.
pub fn parse(bytes: &[u8], name: &str) -> Result<ElfInfo> {
    let elf = goblin::elf::Elf::parse(bytes).with_context(|| format!("{name}: not a readable ELF file"))?;
    let mut search_paths: Vec<String> = elf.runpaths.iter().map(|s| s.to_string()).collect();
    search_paths.extend(elf.rpaths.iter().map(|s| s.to_string()));
    Ok(ElfInfo {
        machine: elf.header.e_machine,
        interpreter: elf.interpreter.map(str::to_owned),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        search_paths: search_paths
            .iter()
            .flat_map(|p| p.split(':'))
            .map(str::to_owned)
            .collect(),
    })
}

/// Refuses anything but a self-contained executable for `arch`: the right machine, no
/// `PT_INTERP` (the kernel would look the loader up in the container's rootfs) and no `DT_NEEDED`.
pub fn require_static(info: &ElfInfo, arch: Arch, name: &str) -> Result<()> {
    match info.arch() {
        Some(found) if found == arch => {}
        Some(found) => bail!("{name} is built for {found}, not {arch}"),
        None => bail!("{name} has ELF machine {:#x}, not {arch}", info.machine),
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

    fn info(machine: u16, interpreter: Option<&str>, needed: &[&str]) -> ElfInfo {
        ElfInfo {
            machine,
            interpreter: interpreter.map(str::to_owned),
            needed: needed.iter().map(|s| s.to_string()).collect(),
            search_paths: vec![],
        }
    }

    #[test]
    fn static_aarch64_passes() {
        require_static(&info(EM_AARCH64, None, &[]), Arch::Arm64, "FEX").unwrap();
    }

    #[test]
    fn interpreter_is_refused_by_name() {
        let err = require_static(
            &info(EM_AARCH64, Some("/lib/ld-linux-aarch64.so.1"), &["libc.so.6"]),
            Arch::Arm64,
            "FEX",
        );
        let text = err.unwrap_err().to_string();
        assert!(text.contains("PT_INTERP \"/lib/ld-linux-aarch64.so.1\""), "{text}");
    }

    #[test]
    fn needed_libraries_are_refused() {
        let text = require_static(&info(EM_AARCH64, None, &["libm.so.6"]), Arch::Arm64, "FEX")
            .unwrap_err()
            .to_string();
        assert!(text.contains("DT_NEEDED libm.so.6"), "{text}");
    }

    #[test]
    fn wrong_machine_is_refused() {
        let text = require_static(&info(EM_X86_64, None, &[]), Arch::Arm64, "FEX")
            .unwrap_err()
            .to_string();
        assert_eq!(text, "FEX is built for x86_64, not arm64");
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let text = parse(b"\x7fELFgarbage", "thing").unwrap_err().to_string();
        assert!(text.starts_with("thing: not a readable ELF file"), "{text}");
    }
}
