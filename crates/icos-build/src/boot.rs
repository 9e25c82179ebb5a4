//! Boot configuration: the `boot_args` file GRUB sources from a slot's boot
//! partition, the initial grubenv, and the GRUB EFI module list.
//!
//! `boot_args` carries one kernel command line per slot, as IC's
//! `guestos_boot_args.template` does: `BOOT_ARGS_A` boots partition set A
//! and `BOOT_ARGS_B` partition set B, each with its own root PARTUUID and
//! `dfinity.system=`. The same file is on A_boot and, after an upgrade, on
//! B_boot; `grub.cfg` picks the line by `boot_alternative`, so a boot image
//! installed into either slot boots that slot's root.

use icos_grubenv::Slot;
use uuid::Uuid;

/// What goes on the kernel command lines of the two slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// The PARTUUID of slot A's root partition.
    pub a_root_partuuid: Uuid,
    /// The PARTUUID of slot B's root partition.
    pub b_root_partuuid: Uuid,
    /// The dm-verity root hash (64 hex digits); both slots receive the same
    /// root image, so they share it.
    pub root_hash: String,
    /// Further arguments, appended in order to both lines.
    pub extra: Vec<String>,
}

/// The name of the `boot_args` variable holding `slot`'s command line.
pub fn boot_args_var(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "BOOT_ARGS_A",
        Slot::B => "BOOT_ARGS_B",
    }
}

/// Fails unless `root_hash` is 64 lowercase hex digits.
pub(crate) fn check_root_hash(root_hash: &str) -> Result<(), String> {
    if root_hash.len() != 64
        || !root_hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "root hash must be 64 lowercase hex digits, got '{root_hash}'"
        ));
    }
    Ok(())
}

impl BootArgs {
    /// The kernel command line of `slot`.
    pub fn cmdline(&self, slot: Slot) -> String {
        let root = match slot {
            Slot::A => self.a_root_partuuid,
            Slot::B => self.b_root_partuuid,
        };
        let mut s = format!(
            "root=PARTUUID={} console=ttyS0 quiet panic=-1 ro dfinity.system={slot} root_hash={}",
            root.hyphenated(),
            self.root_hash
        );
        for e in &self.extra {
            s.push(' ');
            s.push_str(e);
        }
        s
    }

    /// The `boot_args` file: a GRUB script fragment setting `BOOT_ARGS_A`
    /// and `BOOT_ARGS_B`. Fails on a root hash that is not 64 lowercase hex
    /// digits, the same root PARTUUID for both slots, or an argument GRUB
    /// would not keep as one word.
    pub fn render(&self) -> Result<String, String> {
        check_root_hash(&self.root_hash)?;
        if self.a_root_partuuid == self.b_root_partuuid {
            return Err(format!(
                "slots A and B must have different root PARTUUIDs, both are {}",
                self.a_root_partuuid.hyphenated()
            ));
        }
        if let Some(bad) = self.extra.iter().find(|e| {
            e.is_empty()
                || e.chars()
                    .any(|c| c.is_whitespace() || "\"'\\$;#".contains(c))
        }) {
            return Err(format!("kernel argument '{bad}' is not a plain word"));
        }
        let mut out = String::from(
            "# Kernel command lines of GuestOS, sourced by grub.cfg from the booted slot's\n\
             # boot partition. BOOT_ARGS_A boots partition set A, BOOT_ARGS_B partition\n\
             # set B; grub.cfg picks one by boot_alternative.\n",
        );
        for slot in Slot::ALL {
            out.push_str(&format!(
                "{}=\"{}\"\n",
                boot_args_var(slot),
                self.cmdline(slot)
            ));
        }
        Ok(out)
    }
}

/// The initial grubenv: slot A, stable.
pub fn initial_grubenv() -> Result<[u8; icos_grubenv::BLOCK_SIZE], String> {
    let mut env = icos_grubenv::GrubEnv::new();
    icos_grubenv::BootState::new(icos_grubenv::Slot::A, icos_grubenv::BootCycle::Stable)
        .write_to_env(&mut env)
        .map_err(|e| e.to_string())?;
    env.to_bytes().map_err(|e| e.to_string())
}

/// Parses a committed module list: GRUB module names separated by whitespace, `#` comments.
pub fn parse_module_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .flat_map(str::split_whitespace)
        .map(str::to_owned)
        .collect()
}

/// What goes into an EFI system partition: GRUB's EFI binary made from the
/// locked GRUB packages, with an early config and a module list built in.
#[derive(Debug, Clone, Copy)]
pub struct EspSpec<'a> {
    /// The `dpkg-deb` program.
    pub dpkg_deb: &'a std::path::Path,
    /// The GRUB packages (`grub-common`, `grub-efi-amd64-bin`) in the cache.
    pub debs: &'a [std::path::PathBuf],
    /// The early config built into the binary.
    pub early_config: &'a std::path::Path,
    /// The GRUB modules built into the binary.
    pub modules: &'a [String],
    /// The FAT volume id.
    pub volume_id: u32,
    /// The partition size.
    pub size_bytes: u64,
    /// The date of every file.
    pub epoch: u64,
}

/// Makes the ESP image `out` with `EFI/BOOT/BOOTX64.EFI` from `grub-mkimage`
/// of the unpacked GRUB packages (unpacked into `work`).
pub fn make_esp(
    spec: &EspSpec<'_>,
    fs_tools: &icos_imagefs::Tools,
    work: &std::path::Path,
    out: &std::path::Path,
) -> crate::error::Result<()> {
    use std::process::Command;
    let root = work.join("grub-debs");
    for deb in spec.debs {
        crate::tools::run(Command::new(spec.dpkg_deb).arg("-x").arg(deb).arg(&root))?;
    }
    let efi = work.join("BOOTX64.EFI");
    crate::tools::run(
        Command::new(root.join("usr/bin/grub-mkimage"))
            .arg("-d")
            .arg(root.join("usr/lib/grub/x86_64-efi"))
            .args(["-O", "x86_64-efi", "-p", "(hd0,gpt2)", "-c"])
            .arg(spec.early_config)
            .arg("-o")
            .arg(&efi)
            .args(spec.modules)
            .env("SOURCE_DATE_EPOCH", spec.epoch.to_string()),
    )?;
    let vfat = icos_imagefs::VfatSpec {
        size_bytes: spec.size_bytes,
        label: "ESP".into(),
        volume_id: spec.volume_id,
        epoch: spec.epoch,
    };
    icos_imagefs::make_vfat(
        fs_tools,
        &vfat,
        &[("EFI/BOOT/BOOTX64.EFI".to_owned(), efi)],
        out,
    )
    .map_err(crate::error::BuildError::imagefs("making the ESP"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_is_64_lowercase_hex_digits() {
        assert!(check_root_hash(&"0a".repeat(32)).is_ok());
        for bad in [
            "",
            "ab",
            &"0A".repeat(32),
            &"0g".repeat(32),
            &"0a".repeat(33),
        ] {
            assert_eq!(
                check_root_hash(bad),
                Err(format!(
                    "root hash must be 64 lowercase hex digits, got '{bad}'"
                ))
            );
        }
    }

    const A_ROOT: Uuid = uuid::uuid!("7C0A626E-E5EA-E543-B5C5-300EB8304DB7");
    const B_ROOT: Uuid = uuid::uuid!("A78BC3A8-376C-054A-96E7-3904B915D0C5");

    fn args() -> BootArgs {
        BootArgs {
            a_root_partuuid: A_ROOT,
            b_root_partuuid: B_ROOT,
            root_hash: "ab".repeat(32),
            extra: vec![],
        }
    }

    #[test]
    fn renders_one_line_per_slot() {
        let hash = "ab".repeat(32);
        assert_eq!(
            args().render().unwrap(),
            format!(
                "# Kernel command lines of GuestOS, sourced by grub.cfg from the booted slot's\n\
                 # boot partition. BOOT_ARGS_A boots partition set A, BOOT_ARGS_B partition\n\
                 # set B; grub.cfg picks one by boot_alternative.\n\
                 BOOT_ARGS_A=\"root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 console=ttyS0 quiet panic=-1 ro dfinity.system=A root_hash={hash}\"\n\
                 BOOT_ARGS_B=\"root=PARTUUID=a78bc3a8-376c-054a-96e7-3904b915d0c5 console=ttyS0 quiet panic=-1 ro dfinity.system=B root_hash={hash}\"\n"
            )
        );
        let mut b = args();
        b.extra = vec!["icos.verity_scan=full".into()];
        let text = b.render().unwrap();
        assert_eq!(
            text.matches(" icos.verity_scan=full\"\n").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn every_line_is_a_quoted_assignment() {
        // The shape a VM runner reads: NAME="value" lines, comments, nothing else.
        let text = args().render().unwrap();
        let mut names = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once('=').unwrap();
            assert!(value.starts_with('"') && value.ends_with('"'), "{line}");
            assert!(
                !value[1..value.len() - 1].contains(['"', '\\', '$']),
                "{line}"
            );
            names.push(name);
        }
        assert_eq!(names, ["BOOT_ARGS_A", "BOOT_ARGS_B"]);
        assert_eq!(boot_args_var(Slot::B), "BOOT_ARGS_B");
    }

    #[test]
    fn rejects_bad_boot_args() {
        let mut b = args();
        b.root_hash = "AB".repeat(32);
        assert!(b.render().is_err());
        let mut b = args();
        b.root_hash = "ab".into();
        assert!(b.render().is_err());
        let mut b = args();
        b.b_root_partuuid = A_ROOT;
        assert!(b.render().unwrap_err().contains("different root PARTUUIDs"));
        let mut b = args();
        b.extra = vec!["a b".into()];
        assert!(b.render().is_err());
        let mut b = args();
        b.extra = vec!["x=\"y\"".into()];
        assert!(b.render().is_err());
        let mut b = args();
        b.extra = vec!["x#y".into()];
        assert!(b.render().is_err());
    }

    #[test]
    fn grubenv_is_a_stable() {
        let env = initial_grubenv().unwrap();
        let parsed = icos_grubenv::parse(&env).unwrap();
        assert_eq!(parsed.get("boot_alternative"), Some("A"));
        assert_eq!(parsed.get("boot_cycle"), Some("stable"));
    }

    #[test]
    fn module_list() {
        assert_eq!(
            parse_module_list("# mods\npart_gpt fat\n\n ext2 # fs\n"),
            ["part_gpt", "fat", "ext2"]
        );
    }
}
