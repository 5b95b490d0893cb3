//! The target architecture and everything that depends on it. Nothing else in the crate names
//! an x86 (or arm) detail: it asks [`Arch`].

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A CPU architecture the image can be built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// Every architecture the planner knows (x86_64 is the one tested in QEMU today).
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Debian's name for it (mmdebstrap `--architectures`).
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Rust target triple latticed is built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-gnu",
            Arch::Arm64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The kernel meta-package.
    pub fn kernel_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "linux-image-amd64",
            Arch::Arm64 => "linux-image-arm64",
        }
    }

    /// GRUB's platform (`grub-mkstandalone -O`).
    pub fn grub_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-efi",
            Arch::Arm64 => "arm64-efi",
        }
    }

    /// The Debian package holding GRUB's modules for [`Arch::grub_target`].
    pub fn grub_package(self) -> &'static str {
        match self {
            Arch::X86_64 => "grub-efi-amd64-bin",
            Arch::Arm64 => "grub-efi-arm64-bin",
        }
    }

    /// Where those modules live on the build machine.
    pub fn grub_modules_dir(self) -> PathBuf {
        PathBuf::from("/usr/lib/grub").join(self.grub_target())
    }

    /// The removable-media boot file UEFI firmware looks for in `/EFI/BOOT/`.
    pub fn efi_file(self) -> &'static str {
        match self {
            Arch::X86_64 => "BOOTX64.EFI",
            Arch::Arm64 => "BOOTAA64.EFI",
        }
    }

    /// GPT partition type of this architecture's root filesystem (Discoverable Partitions
    /// Specification), so tools recognise root A and B for what they are.
    pub fn root_type_guid(self) -> &'static str {
        match self {
            Arch::X86_64 => "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
            Arch::Arm64 => "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",
        }
    }

    /// The serial console the kernel and getty use (QEMU's default serial port).
    pub fn serial_console(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Arm64 => "ttyAMA0",
        }
    }

    /// The QEMU system emulator and the Debian package that has it.
    pub fn qemu_binary(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("qemu-system-x86_64", "qemu-system-x86"),
            Arch::Arm64 => ("qemu-system-aarch64", "qemu-system-arm"),
        }
    }

    /// QEMU machine type and CPU for software emulation.
    pub fn qemu_machine(self) -> (&'static str, &'static str) {
        match self {
            Arch::X86_64 => ("q35", "max"),
            Arch::Arm64 => ("virt", "max"),
        }
    }

    /// UEFI firmware for QEMU: (code, variables template, Debian package).
    pub fn uefi_firmware(self) -> (PathBuf, PathBuf, &'static str) {
        match self {
            Arch::X86_64 => (
                PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
                PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
                "ovmf",
            ),
            Arch::Arm64 => (
                PathBuf::from("/usr/share/AAVMF/AAVMF_CODE.fd"),
                PathBuf::from("/usr/share/AAVMF/AAVMF_VARS.fd"),
                "qemu-efi-aarch64",
            ),
        }
    }

    /// The architecture of the machine running this code, if the image supports it.
    pub fn host() -> Option<Arch> {
        std::env::consts::ARCH.parse().ok()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An architecture name nobody builds for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown architecture `{0}` (known: x86_64, arm64)")]
pub struct UnknownArch(pub String);

impl FromStr for Arch {
    type Err = UnknownArch;
    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        match s {
            "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => Err(UnknownArch(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
            assert_eq!(a.debian().parse::<Arch>().unwrap(), a);
        }
        assert_eq!("aarch64".parse::<Arch>().unwrap(), Arch::Arm64);
        let e = "riscv64".parse::<Arch>().unwrap_err();
        assert!(e.to_string().contains("riscv64"), "{e}");
    }

    #[test]
    fn every_arch_has_distinct_boot_details() {
        let x = Arch::X86_64;
        let a = Arch::Arm64;
        assert_ne!(x.efi_file(), a.efi_file());
        assert_ne!(x.grub_target(), a.grub_target());
        assert_ne!(x.root_type_guid(), a.root_type_guid());
        assert_ne!(x.kernel_package(), a.kernel_package());
        assert_ne!(x.uefi_firmware().0, a.uefi_firmware().0);
        assert!(a.kernel_package().ends_with(a.debian()));
        assert!(x.kernel_package().ends_with(x.debian()));
    }
}
