//! Boot configuration: the `boot_args` file GRUB sources from A_boot, the
//! initial grubenv, and the GRUB EFI module list.

use uuid::Uuid;

/// What goes on the kernel command line of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    /// The PARTUUID of the slot's root partition.
    pub root_partuuid: Uuid,
    /// `A` or `B`.
    pub slot: char,
    /// The dm-verity root hash (64 hex digits).
    pub root_hash: String,
    /// Further arguments, appended in order.
    pub extra: Vec<String>,
}

impl BootArgs {
    /// The kernel command line.
    pub fn cmdline(&self) -> String {
        let mut s = format!(
            "root=PARTUUID={} console=ttyS0 quiet panic=-1 ro dfinity.system={} root_hash={}",
            self.root_partuuid.hyphenated(),
            self.slot,
            self.root_hash
        );
        for e in &self.extra {
            s.push(' ');
            s.push_str(e);
        }
        s
    }

    /// The `boot_args` file: a GRUB script fragment setting `BOOT_ARGS`.
    /// Fails on a root hash that is not 64 lowercase hex digits, a slot
    /// other than A/B, or an argument GRUB would not keep as one word.
    pub fn render(&self) -> Result<String, String> {
        if self.root_hash.len() != 64
            || !self
                .root_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!(
                "root hash must be 64 lowercase hex digits, got '{}'",
                self.root_hash
            ));
        }
        if !matches!(self.slot, 'A' | 'B') {
            return Err(format!("slot must be A or B, got '{}'", self.slot));
        }
        if let Some(bad) = self.extra.iter().find(|e| {
            e.is_empty()
                || e.chars()
                    .any(|c| c.is_whitespace() || "\"'\\$;".contains(c))
        }) {
            return Err(format!("kernel argument '{bad}' is not a plain word"));
        }
        Ok(format!(
            "# GuestOS boot arguments, sourced by grub.cfg.\nBOOT_ARGS=\"{}\"\n",
            self.cmdline()
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BootArgs {
        BootArgs {
            root_partuuid: uuid::uuid!("7C0A626E-E5EA-E543-B5C5-300EB8304DB7"),
            slot: 'A',
            root_hash: "ab".repeat(32),
            extra: vec![],
        }
    }

    #[test]
    fn renders_boot_args() {
        assert_eq!(
            args().render().unwrap(),
            format!(
                "# GuestOS boot arguments, sourced by grub.cfg.\n\
                 BOOT_ARGS=\"root=PARTUUID=7c0a626e-e5ea-e543-b5c5-300eb8304db7 console=ttyS0 quiet panic=-1 ro dfinity.system=A root_hash={}\"\n",
                "ab".repeat(32)
            )
        );
        let mut b = args();
        b.slot = 'B';
        b.extra = vec!["icos.verity_scan=full".into()];
        assert!(b.render().unwrap().ends_with(" icos.verity_scan=full\"\n"));
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
        b.slot = 'C';
        assert!(b.render().is_err());
        let mut b = args();
        b.extra = vec!["a b".into()];
        assert!(b.render().is_err());
        let mut b = args();
        b.extra = vec!["x=\"y\"".into()];
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
