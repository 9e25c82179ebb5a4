//! Locating OVMF and giving each VM its own variable store.

use std::path::{Path, PathBuf};

use crate::config::Uefi;

/// Where Debian's `ovmf` package installs the firmware.
pub const OVMF_DIR: &str = "/usr/share/OVMF";

/// Code/vars pairs tried by [`Ovmf::find`], best first.
const PAIRS: [(&str, &str); 2] = [
    ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    ("OVMF_CODE.fd", "OVMF_VARS.fd"),
];

/// OVMF could not be found or its variable store could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// No code/vars pair exists in the directory.
    #[error(
        "no OVMF firmware in {} (looked for {looked_for}); install the Debian package 'ovmf'",
        dir.display()
    )]
    NotFound {
        /// The directory searched.
        dir: PathBuf,
        /// The file names looked for.
        looked_for: String,
    },
    /// Copying the variable store template failed.
    #[error("copying OVMF variable store {} to {}: {source}", from.display(), to.display())]
    CopyVars {
        /// The template.
        from: PathBuf,
        /// The private copy.
        to: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An OVMF build: the code image and the pristine variable store template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// The firmware code (mapped read-only).
    pub code: PathBuf,
    /// The variable store template (never handed to a VM directly).
    pub vars_template: PathBuf,
}

impl Ovmf {
    /// Finds OVMF in [`OVMF_DIR`], preferring the 4 MiB build.
    pub fn find() -> Result<Ovmf, FirmwareError> {
        Ovmf::find_in(Path::new(OVMF_DIR))
    }

    /// Finds OVMF in `dir`, preferring the 4 MiB build.
    pub fn find_in(dir: &Path) -> Result<Ovmf, FirmwareError> {
        PAIRS
            .iter()
            .map(|(code, vars)| Ovmf {
                code: dir.join(code),
                vars_template: dir.join(vars),
            })
            .find(|o| o.code.is_file() && o.vars_template.is_file())
            .ok_or_else(|| FirmwareError::NotFound {
                dir: dir.to_owned(),
                looked_for: PAIRS
                    .iter()
                    .map(|(c, v)| format!("{c}+{v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// Copies the variable store template to `vars` (overwriting it) and
    /// returns the pflash pair for a VM.
    pub fn prepare(&self, vars: impl Into<PathBuf>) -> Result<Uefi, FirmwareError> {
        let vars = vars.into();
        std::fs::copy(&self.vars_template, &vars).map_err(|source| FirmwareError::CopyVars {
            from: self.vars_template.clone(),
            to: vars.clone(),
            source,
        })?;
        Ok(Uefi {
            code: self.code.clone(),
            vars,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_4m_pair_first_and_copies_vars() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "OVMF_CODE.fd",
            "OVMF_VARS.fd",
            "OVMF_CODE_4M.fd",
            "OVMF_VARS_4M.fd",
        ] {
            std::fs::write(dir.path().join(f), f).unwrap();
        }
        let ovmf = Ovmf::find_in(dir.path()).unwrap();
        assert_eq!(ovmf.code, dir.path().join("OVMF_CODE_4M.fd"));
        let uefi = ovmf.prepare(dir.path().join("vm-vars.fd")).unwrap();
        assert_eq!(
            std::fs::read(&uefi.vars).unwrap(),
            b"OVMF_VARS_4M.fd".to_vec()
        );
    }

    #[test]
    fn names_the_package_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let e = Ovmf::find_in(dir.path()).unwrap_err().to_string();
        assert!(e.contains("install the Debian package 'ovmf'"), "{e}");
    }
}
