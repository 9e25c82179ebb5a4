//! The installer's kernel command-line switches.
//!
//! | switch | default | off means |
//! |---|---|---|
//! | `ic.setupos.check_hardware` | true | the hardware check is skipped (test machines) |
//! | `ic.setupos.perform_installation` | true | the checks run, nothing is installed |
//! | `ic.setupos.reboot_after_installation` | true | the machine halts after the install |
//!
//! A switch's value is one of `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`
//! (any case); a switch given without a value is on. For a repeated switch
//! the last one counts, as in the kernel.

use serde::Serialize;

/// The switch names.
pub const CHECK_HARDWARE: &str = "ic.setupos.check_hardware";
/// See the module docs.
pub const PERFORM_INSTALLATION: &str = "ic.setupos.perform_installation";
/// See the module docs.
pub const REBOOT_AFTER_INSTALLATION: &str = "ic.setupos.reboot_after_installation";

/// The switches, as read from `/proc/cmdline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Switches {
    /// Run the hardware check.
    pub check_hardware: bool,
    /// Install HostOS and GuestOS after the checks.
    pub perform_installation: bool,
    /// Reboot after a successful install.
    pub reboot_after_installation: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            check_hardware: true,
            perform_installation: true,
            reboot_after_installation: true,
        }
    }
}

/// Reads the switches from a kernel command line. Other parameters are
/// ignored; a switch with a value that is not a boolean is an error naming
/// it.
pub fn parse_cmdline(cmdline: &str) -> Result<Switches, String> {
    let mut s = Switches::default();
    let mut problems = Vec::new();
    for word in cmdline.split_whitespace() {
        let (key, value) = word.split_once('=').unwrap_or((word, "true"));
        let slot = match key {
            CHECK_HARDWARE => &mut s.check_hardware,
            PERFORM_INSTALLATION => &mut s.perform_installation,
            REBOOT_AFTER_INSTALLATION => &mut s.reboot_after_installation,
            _ => continue,
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => *slot = true,
            "false" | "0" | "no" | "off" => *slot = false,
            _ => problems.push(format!(
                "{key}: '{value}' is not a boolean (true/false, 1/0, yes/no, on/off)"
            )),
        }
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "BOOT_IMAGE=(hd0,gpt5)/vmlinuz root=PARTUUID=7C0A626E-E5EA-E543-B5C5-300EB8304DB7 \
        console=ttyS0,115200 console=tty0 nomodeset dfinity.system=A \
        ic.setupos.check_hardware=false ic.setupos.reboot_after_installation=0\n";

    #[test]
    fn defaults_are_all_on() {
        assert_eq!(parse_cmdline("quiet splash"), Ok(Switches::default()));
        assert_eq!(parse_cmdline(""), Ok(Switches::default()));
    }

    #[test]
    fn switches_are_read_from_a_real_command_line() {
        assert_eq!(
            parse_cmdline(REAL),
            Ok(Switches {
                check_hardware: false,
                perform_installation: true,
                reboot_after_installation: false,
            })
        );
    }

    #[test]
    fn values_bare_switches_and_repeats() {
        let s = parse_cmdline(
            "ic.setupos.perform_installation=OFF ic.setupos.check_hardware=no \
                               ic.setupos.check_hardware",
        )
        .unwrap_or_default();
        assert!(!s.perform_installation);
        assert!(s.check_hardware, "the last occurrence counts");
        let err =
            parse_cmdline("ic.setupos.check_hardware=maybe ic.setupos.perform_installation=2")
                .unwrap_err();
        assert!(err.contains("ic.setupos.check_hardware: 'maybe'"), "{err}");
        assert!(
            err.contains("ic.setupos.perform_installation: '2'"),
            "{err}"
        );
        // Similar names are not the switches.
        assert_eq!(
            parse_cmdline("ic.setupos.check_hardware_extra=false"),
            Ok(Switches::default())
        );
    }
}
