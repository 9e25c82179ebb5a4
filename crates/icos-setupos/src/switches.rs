//! The installer's switches of a SetupOS image, set without mounting it.
//!
//! IC's kernel command-line switches ([`crate::cmdline`]) let test
//! machines skip the hardware check, stop after the checks or stay up
//! after the install. A SetupOS image keeps them in the GRUB environment
//! block (`grubenv`) of its grub partition, as the variable
//! [`SWITCHES_VAR`]; its `grub.cfg` appends the value to the kernel
//! command line. Only switches that are off are written (`…=false`); all
//! on is an empty value.
//!
//! The block is rewritten in place, the same clusters and length, as
//! GRUB's `save_env` does, then read back and compared.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use icos_fat::Window;
use icos_layout::{SECTOR_SIZE, read_gpt_image};

use crate::cmdline::{
    CHECK_HARDWARE, PERFORM_INSTALLATION, REBOOT_AFTER_INSTALLATION, Switches, parse_cmdline,
};

/// The grubenv variable holding the switches.
pub const SWITCHES_VAR: &str = "setupos_switches";
/// The grub partition's name in the GPT.
const GRUB_PARTITION: &str = "grub";
/// The grubenv file in the grub partition.
const GRUBENV: &str = "grubenv";

/// Why the switches of an image could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SwitchesError {
    /// The image has no SetupOS grub partition with a grubenv.
    #[error("{image}: not a SetupOS image: {reason}")]
    NotSetupOs {
        /// The image.
        image: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// Reading or writing the image failed.
    #[error("{image}: {action}: {source}")]
    Io {
        /// The image.
        image: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The grubenv block could not be read, parsed or written.
    #[error("{image}: grub partition grubenv: {reason}")]
    Grubenv {
        /// The image.
        image: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Switches {
    /// The switches as kernel command-line words: one `NAME=false` per
    /// switch that is off, in the table's order.
    pub fn to_cmdline(&self) -> String {
        [
            (CHECK_HARDWARE, self.check_hardware),
            (PERFORM_INSTALLATION, self.perform_installation),
            (REBOOT_AFTER_INSTALLATION, self.reboot_after_installation),
        ]
        .iter()
        .filter(|(_, on)| !on)
        .map(|(name, _)| format!("{name}=false"))
        .collect::<Vec<_>>()
        .join(" ")
    }
}

/// The image file (opened for writing too when `write`) and where its grub
/// partition is: (file, offset, length).
fn open_grub_partition(image: &Path, write: bool) -> Result<(File, u64, u64), SwitchesError> {
    let not = |reason: String| SwitchesError::NotSetupOs {
        image: image.to_path_buf(),
        reason,
    };
    let table = read_gpt_image(image).map_err(|e| not(format!("no readable GPT ({e})")))?;
    let entry = table
        .partition(GRUB_PARTITION)
        .ok_or_else(|| not(format!("the GPT has no partition named '{GRUB_PARTITION}'")))?;
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(image)
        .map_err(|source| SwitchesError::Io {
            image: image.to_path_buf(),
            action: "opening",
            source,
        })?;
    Ok((file, entry.start * SECTOR_SIZE, entry.size * SECTOR_SIZE))
}

/// The grubenv file in the grub partition `part`, and its bytes.
fn read_grubenv(
    image: &Path,
    part: &mut Window<&File>,
) -> Result<(icos_fat::FatFile, Vec<u8>), SwitchesError> {
    let found = icos_fat::find_root_file(part, GRUBENV).map_err(|e| SwitchesError::NotSetupOs {
        image: image.to_path_buf(),
        reason: format!("grub partition: {GRUBENV}: {e}"),
    })?;
    let bytes = icos_fat::read_file(part, &found).map_err(|e| SwitchesError::Grubenv {
        image: image.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((found, bytes))
}

fn parse_env(image: &Path, bytes: &[u8]) -> Result<icos_grubenv::GrubEnv, SwitchesError> {
    icos_grubenv::parse(bytes).map_err(|e| SwitchesError::Grubenv {
        image: image.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads the switches set in `image` (all on when none are).
pub fn read_switches(image: &Path) -> Result<Switches, SwitchesError> {
    let (file, offset, len) = open_grub_partition(image, false)?;
    let (_, bytes) = read_grubenv(image, &mut Window::new(&file, offset, len))?;
    let env = parse_env(image, &bytes)?;
    parse_cmdline(env.get(SWITCHES_VAR).unwrap_or_default()).map_err(|reason| {
        SwitchesError::Grubenv {
            image: image.to_path_buf(),
            reason: format!("{SWITCHES_VAR}: {reason}"),
        }
    })
}

/// Writes `switches` into `image`, keeping the grubenv's other variables;
/// the block is read back and compared.
pub fn write_switches(image: &Path, switches: &Switches) -> Result<(), SwitchesError> {
    let grubenv_err = |reason: String| SwitchesError::Grubenv {
        image: image.to_path_buf(),
        reason,
    };
    let (file, offset, len) = open_grub_partition(image, true)?;
    let mut part = Window::new(&file, offset, len);
    let (found, bytes) = read_grubenv(image, &mut part)?;
    let mut env = parse_env(image, &bytes)?;
    let words = switches.to_cmdline();
    if words.is_empty() {
        env.unset(SWITCHES_VAR);
    } else {
        env.set(SWITCHES_VAR, &words)
            .map_err(|e| grubenv_err(e.to_string()))?;
    }
    let block = env.to_bytes().map_err(|e| grubenv_err(e.to_string()))?;
    if block.len() as u64 != found.len {
        return Err(grubenv_err(format!(
            "the file is {} bytes, a grubenv block is {}",
            found.len,
            block.len()
        )));
    }
    icos_fat::overwrite_file(&mut part, &found, &block).map_err(|e| grubenv_err(e.to_string()))?;
    file.sync_all().map_err(|source| SwitchesError::Io {
        image: image.to_path_buf(),
        action: "syncing",
        source,
    })?;
    let back = read_switches(image)?;
    if back != *switches {
        return Err(grubenv_err(format!(
            "read back {back:?} after writing {switches:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_off_switches_are_written() {
        assert_eq!(Switches::default().to_cmdline(), "");
        let s = Switches {
            check_hardware: false,
            perform_installation: true,
            reboot_after_installation: false,
        };
        assert_eq!(
            s.to_cmdline(),
            "ic.setupos.check_hardware=false ic.setupos.reboot_after_installation=false"
        );
        assert_eq!(parse_cmdline(&s.to_cmdline()), Ok(s));
    }

    #[test]
    fn a_file_without_gpt_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("not.img");
        std::fs::write(&image, vec![0u8; 1 << 20]).expect("write");
        let err = read_switches(&image).expect_err("no GPT");
        assert!(matches!(err, SwitchesError::NotSetupOs { .. }), "{err:?}");
        assert!(err.to_string().contains("not.img"), "{err}");
    }
}
