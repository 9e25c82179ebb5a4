//! The optional folder of SSH public keys for the node's accounts.
//!
//! The folder may hold the files `admin`, `backup` and `readonly`, one per
//! account, in OpenSSH `authorized_keys` format. Each line that is not blank
//! and not a `#` comment must be `[OPTIONS] TYPE BASE64 [COMMENT]`, where
//! TYPE is a known key type and BASE64 decodes to a key blob of that type.
//! Any other file in the folder is ignored with a warning.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::ini::quote;
use crate::problem::{Problem, Problems};

/// The key files that are read, one per account.
pub const SSH_KEY_FILES: [&str; 3] = ["admin", "backup", "readonly"];

/// The public key types accepted in a key file.
pub const SSH_KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// One account's key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeyFile {
    /// The account: `admin`, `backup` or `readonly`.
    pub account: String,
    /// Where the file is.
    pub path: PathBuf,
    /// How many keys it holds.
    pub keys: usize,
}

/// A checked SSH key folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshKeys {
    /// The folder.
    pub dir: PathBuf,
    /// The key files found, by account name.
    pub files: Vec<SshKeyFile>,
    /// Files that are ignored.
    pub warnings: Vec<Problem>,
}

impl SshKeys {
    /// The total number of keys across all accounts.
    pub fn key_count(&self) -> usize {
        self.files.iter().map(|f| f.keys).sum()
    }
}

/// Checks one `authorized_keys` line; `Err` says which rule it broke.
pub fn check_public_key_line(line: &str) -> Result<(), String> {
    let tokens: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some(type_index) = tokens.iter().position(|t| SSH_KEY_TYPES.contains(t)) else {
        if line.contains("PRIVATE KEY") {
            return Err(
                "this is part of a private key; put the public key (the .pub file) here"
                    .to_string(),
            );
        }
        return Err(format!(
            "{} does not start with a known key type ({})",
            quote(line),
            SSH_KEY_TYPES.join(", ")
        ));
    };
    let key_type = tokens[type_index];
    let Some(blob_text) = tokens.get(type_index + 1) else {
        return Err(format!("key type {key_type} is not followed by the key"));
    };
    let blob = STANDARD
        .decode(blob_text)
        .map_err(|e| format!("the {key_type} key is not valid base64: {e}"))?;
    // The blob starts with the key type as an SSH string: a 4-byte big-endian
    // length and that many bytes.
    let inner = blob
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map(u32::from_be_bytes)
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| blob.get(4..4usize.checked_add(len)?));
    match inner {
        Some(name) if name == key_type.as_bytes() => Ok(()),
        Some(name) => Err(format!(
            "the key is labelled {key_type} but holds a '{}' key",
            String::from_utf8_lossy(name)
        )),
        None => Err(format!("the {key_type} key is truncated")),
    }
}

/// Checks the text of a key file; returns the number of keys or every bad
/// line (keyed `line N`).
pub fn check_authorized_keys(text: &str) -> Result<usize, Problems> {
    let mut problems = Problems::new();
    let mut keys = 0;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match check_public_key_line(line) {
            Ok(()) => keys += 1,
            Err(message) => problems.at(format!("line {}", index + 1), message),
        }
    }
    problems.into_result(keys)
}

/// Reads and checks the SSH key folder at `dir`.
///
/// Every problem names the file it is in; ignored files are logged with
/// `tracing::warn!` and kept in [`SshKeys::warnings`].
pub fn load_ssh_keys(dir: &Path) -> Result<SshKeys, Problems> {
    let mut problems = Problems::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            let message = if dir.is_file() {
                "is not a folder; give the folder that holds admin, backup and readonly".to_string()
            } else {
                format!("cannot read the SSH key folder: {e}")
            };
            return Err(Problem::whole(message).in_file(dir).into());
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => names.push(entry.file_name()),
            Err(e) => problems
                .push(Problem::whole(format!("cannot list the SSH key folder: {e}")).in_file(dir)),
        }
    }
    names.sort();

    let mut files = Vec::new();
    let mut warnings = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let account = name.to_string_lossy().into_owned();
        if !SSH_KEY_FILES.contains(&account.as_str()) {
            warnings.push(
                Problem::whole(format!(
                    "ignored: only the files {} are read",
                    SSH_KEY_FILES.join(", ")
                ))
                .in_file(&path),
            );
            continue;
        }
        if !path.is_file() {
            problems.push(Problem::whole("is not a regular file").in_file(&path));
            continue;
        }
        let text = match crate::read_text(&path) {
            Ok(text) => text,
            Err(p) => {
                problems.extend(p);
                continue;
            }
        };
        match check_authorized_keys(&text) {
            Ok(keys) => files.push(SshKeyFile {
                account,
                path,
                keys,
            }),
            Err(p) => problems.extend(p.in_file(&path)),
        }
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    problems.into_result(SshKeys {
        dir: dir.to_path_buf(),
        files,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQpxFIWRheULjPrD8UtAyKJlHGNDeYfiXFwp8BwUyqy admin@example";

    fn blob_for(key_type: &str) -> String {
        let mut blob = Vec::new();
        let len = u32::try_from(key_type.len()).unwrap();
        blob.extend_from_slice(&len.to_be_bytes());
        blob.extend_from_slice(key_type.as_bytes());
        blob.extend_from_slice(&[0, 0, 0, 1, 42]);
        STANDARD.encode(blob)
    }

    #[test]
    fn accepts_well_formed_keys() {
        check_public_key_line(ED25519).unwrap();
        for key_type in SSH_KEY_TYPES {
            check_public_key_line(&format!("{key_type} {}", blob_for(key_type))).unwrap();
        }
        // Options before the key type, no comment.
        check_public_key_line(&format!(
            "no-pty,from=\"10.0.0.1\" ssh-rsa {}",
            blob_for("ssh-rsa")
        ))
        .unwrap();
    }

    #[test]
    fn rejects_malformed_keys() {
        let cases = [
            ("ssh-foo AAAA", "known key type"),
            ("ssh-ed25519", "not followed by the key"),
            ("ssh-ed25519 not*base64", "not valid base64"),
            ("ssh-ed25519 AAAA", "truncated"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
        ];
        for (line, want) in cases {
            let err = check_public_key_line(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
        let mislabelled = format!("ssh-ed25519 {}", blob_for("ssh-rsa"));
        let err = check_public_key_line(&mislabelled).unwrap_err();
        assert!(err.contains("holds a 'ssh-rsa' key"), "{err}");
    }

    #[test]
    fn key_files_skip_comments_and_report_every_bad_line() {
        let text = format!("# admins\n\n{ED25519}\r\nbad\n{ED25519}\nssh-rsa\n");
        let problems = check_authorized_keys(&text).unwrap_err();
        let keys: Vec<_> = problems.iter().filter_map(|p| p.key.clone()).collect();
        assert_eq!(keys, ["line 4", "line 6"]);
        assert_eq!(
            check_authorized_keys(&format!("{ED25519}\n{ED25519}")),
            Ok(2)
        );
        assert_eq!(check_authorized_keys(""), Ok(0));
    }

    #[test]
    fn folder_is_read_and_other_files_warn() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin"), format!("{ED25519}\n")).unwrap();
        std::fs::write(dir.path().join("readonly"), "").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let keys = load_ssh_keys(dir.path()).unwrap();
        assert_eq!(keys.files.len(), 2);
        assert_eq!(keys.key_count(), 1);
        assert_eq!(keys.warnings.len(), 1);
        assert!(keys.warnings[0].to_string().contains("notes.txt"));
    }

    #[test]
    fn folder_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("backup"), "ssh-ed25519 ???\n").unwrap();
        let text = load_ssh_keys(dir.path()).unwrap_err().to_string();
        assert!(
            text.contains("backup: line 1: the ssh-ed25519 key is not valid base64"),
            "{text}"
        );

        let file = dir.path().join("backup");
        let text = load_ssh_keys(&file).unwrap_err().to_string();
        assert!(text.contains("is not a folder"), "{text}");
        let missing = load_ssh_keys(&dir.path().join("absent")).unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");
    }
}
