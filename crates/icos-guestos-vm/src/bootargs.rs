//! The `boot_args` file of a GuestOS boot partition: the kernel command
//! line, in the shell-like form GRUB `source`s.
//!
//! Two forms are accepted:
//!
//! - one line for the slot the partition belongs to:
//!   `BOOT_ARGS="root=… dfinity.system=A …"`;
//! - IC's form, one line per slot: `BOOT_ARGS_A="…"` and `BOOT_ARGS_B="…"`.
//!
//! For slot `X`, `BOOT_ARGS_X` is taken when present, `BOOT_ARGS`
//! otherwise. Blank lines and `#` comments are skipped; other variables are
//! allowed and ignored (GRUB would set them and not use them).

use icos_grubenv::Slot;

/// The boot_args file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootArgsError {
    /// A line is not `NAME=VALUE`.
    #[error("line {line}: {reason}: {text:?}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: &'static str,
        /// The line.
        text: String,
    },
    /// Neither variable for the slot is set.
    #[error("neither BOOT_ARGS_{slot} nor BOOT_ARGS is set")]
    Missing {
        /// The slot.
        slot: Slot,
    },
    /// The variable is set but empty.
    #[error("{name} is empty")]
    Empty {
        /// The variable.
        name: String,
    },
    /// The file is not UTF-8.
    #[error("the file is not UTF-8 text")]
    NotUtf8,
}

/// The command line chosen for a slot and the variable it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BootArgs {
    /// `BOOT_ARGS_A`, `BOOT_ARGS_B` or `BOOT_ARGS`.
    pub variable: String,
    /// The kernel command line.
    pub cmdline: String,
}

/// All `NAME=VALUE` pairs of the file, in order.
pub fn parse_vars(bytes: &[u8]) -> Result<Vec<(String, String)>, BootArgsError> {
    let text = std::str::from_utf8(bytes).map_err(|_| BootArgsError::NotUtf8)?;
    let mut vars = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason| BootArgsError::Malformed {
            line: i + 1,
            reason,
            text: raw.to_owned(),
        };
        let (name, value) = line.split_once('=').ok_or_else(|| bad("no '='"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("the name is not [A-Za-z0-9_]+"));
        }
        let value = match value.as_bytes().first() {
            Some(q @ (b'"' | b'\'')) => {
                let q = char::from(*q);
                let inner = value[1..]
                    .strip_suffix(q)
                    .ok_or_else(|| bad("unterminated quote"))?;
                if inner.contains(q) {
                    return Err(bad("a quote inside the quoted value"));
                }
                inner
            }
            _ => {
                if value.contains(char::is_whitespace) {
                    return Err(bad("an unquoted value with spaces"));
                }
                value
            }
        };
        vars.push((name.to_owned(), value.to_owned()));
    }
    Ok(vars)
}

/// The command line for `slot` (see the module docs). When a variable is
/// set twice, the last one wins, as in a sourced script.
pub fn boot_args_for(bytes: &[u8], slot: Slot) -> Result<BootArgs, BootArgsError> {
    let vars = parse_vars(bytes)?;
    let specific = format!("BOOT_ARGS_{slot}");
    let find = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (variable, value) = match (find(&specific), find("BOOT_ARGS")) {
        (Some(v), _) => (specific, v),
        (None, Some(v)) => ("BOOT_ARGS".to_owned(), v),
        (None, None) => return Err(BootArgsError::Missing { slot }),
    };
    let cmdline = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if cmdline.is_empty() {
        return Err(BootArgsError::Empty { name: variable });
    }
    Ok(BootArgs { variable, cmdline })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: &str = "# GuestOS boot arguments, sourced by grub.cfg.\n\
        BOOT_ARGS=\"root=PARTUUID=7c0a626e console=ttyS0 dfinity.system=A\"\n";
    const BOTH: &str = "# Boot arguments of both slots\n\
        BOOT_ARGS_A=\"root=PARTUUID=7c0a626e dfinity.system=A root_hash=aa\"\n\
        \n\
        BOOT_ARGS_B=\"root=PARTUUID=a78bc3a8 dfinity.system=B root_hash=bb\"\n";

    #[test]
    fn single_form_serves_either_slot() {
        for slot in Slot::ALL {
            let args = boot_args_for(SINGLE.as_bytes(), slot).unwrap();
            assert_eq!(args.variable, "BOOT_ARGS");
            assert_eq!(
                args.cmdline,
                "root=PARTUUID=7c0a626e console=ttyS0 dfinity.system=A"
            );
        }
    }

    #[test]
    fn ic_form_is_chosen_by_slot() {
        let a = boot_args_for(BOTH.as_bytes(), Slot::A).unwrap();
        assert_eq!(a.variable, "BOOT_ARGS_A");
        assert!(a.cmdline.ends_with("dfinity.system=A root_hash=aa"));
        let b = boot_args_for(BOTH.as_bytes(), Slot::B).unwrap();
        assert_eq!(b.variable, "BOOT_ARGS_B");
        assert!(b.cmdline.ends_with("dfinity.system=B root_hash=bb"));
    }

    #[test]
    fn slot_specific_wins_over_single_and_last_wins() {
        let text = "BOOT_ARGS=generic\nBOOT_ARGS_B='b1'\nBOOT_ARGS_B=\"b2  x\"\n";
        assert_eq!(
            boot_args_for(text.as_bytes(), Slot::A).unwrap().cmdline,
            "generic"
        );
        assert_eq!(
            boot_args_for(text.as_bytes(), Slot::B).unwrap().cmdline,
            "b2 x"
        );
    }

    #[test]
    fn problems_are_named() {
        assert_eq!(
            boot_args_for(b"BOOT_ARGS_A=x\n", Slot::B),
            Err(BootArgsError::Missing { slot: Slot::B })
        );
        assert_eq!(
            boot_args_for(b"BOOT_ARGS=\"  \"\n", Slot::A),
            Err(BootArgsError::Empty {
                name: "BOOT_ARGS".into()
            })
        );
        for (text, reason) in [
            ("just words\n", "no '='"),
            ("BOOT ARGS=x\n", "the name is not [A-Za-z0-9_]+"),
            ("BOOT_ARGS=\"open\n", "unterminated quote"),
            ("BOOT_ARGS=a b\n", "an unquoted value with spaces"),
            ("BOOT_ARGS=\"a\"b\"\n", "a quote inside the quoted value"),
        ] {
            match boot_args_for(text.as_bytes(), Slot::A) {
                Err(BootArgsError::Malformed {
                    line: 1, reason: r, ..
                }) => assert_eq!(r, reason),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            boot_args_for(&[0xff, b'\n'], Slot::A),
            Err(BootArgsError::NotUtf8)
        );
    }
}
