//! The optional node operator private key.
//!
//! The file must be PEM text holding one unencrypted `PRIVATE KEY` (PKCS#8)
//! or `EC PRIVATE KEY` (SEC1) block whose base64 body decodes to a DER
//! sequence. Other blocks (such as the `EC PARAMETERS` that `openssl ecparam`
//! writes without `-noout`) are allowed around it. The text of the file is
//! embedded in the SetupOS config as it is.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::problem::{Problem, Problems};

/// The PEM labels accepted for the node operator key.
pub const PRIVATE_KEY_LABELS: [&str; 2] = ["PRIVATE KEY", "EC PRIVATE KEY"];

/// One PEM block: its label, its header lines and its base64 body.
struct Block<'a> {
    label: &'a str,
    first_line: usize,
    headers: Vec<&'a str>,
    body: String,
}

/// Splits PEM text into blocks; unterminated blocks are problems.
fn blocks(text: &str) -> (Vec<Block<'_>>, Problems) {
    let mut out = Vec::new();
    let mut problems = Problems::new();
    let mut current: Option<Block<'_>> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let line_no = index + 1;
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if let Some(open) = current.take() {
                problems.at(
                    format!("line {}", open.first_line),
                    format!("'{}' block has no END line", open.label),
                );
            }
            current = Some(Block {
                label,
                first_line: line_no,
                headers: Vec::new(),
                body: String::new(),
            });
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match current.take() {
                Some(block) if block.label == label => out.push(block),
                Some(block) => problems.at(
                    format!("line {line_no}"),
                    format!(
                        "END '{label}' does not match BEGIN '{}' on line {}",
                        block.label, block.first_line
                    ),
                ),
                None => problems.at(
                    format!("line {line_no}"),
                    format!("END '{label}' without a BEGIN line"),
                ),
            }
        } else if let Some(block) = current.as_mut() {
            if line.contains(':') {
                block.headers.push(line);
            } else {
                block.body.push_str(line);
            }
        }
    }
    if let Some(open) = current {
        problems.at(
            format!("line {}", open.first_line),
            format!("'{}' block has no END line", open.label),
        );
    }
    (out, problems)
}

/// Checks the text of a node operator key file.
pub fn check_node_operator_key(text: &str) -> Result<(), Problems> {
    let (blocks, mut problems) = blocks(text);
    let keys: Vec<&Block<'_>> = blocks
        .iter()
        .filter(|b| b.label.ends_with("PRIVATE KEY"))
        .collect();
    match keys.as_slice() {
        [] if problems.is_empty() => problems.push(Problem::whole(format!(
            "holds no PEM '{}' block; expected a key such as `openssl ecparam -name secp256k1 \
             -genkey -noout` writes",
            PRIVATE_KEY_LABELS.join("' or '")
        ))),
        [] => {}
        [key] => check_key_block(key, &mut problems),
        many => problems.push(Problem::whole(format!(
            "holds {} private keys; expected one",
            many.len()
        ))),
    }
    problems.into_result(())
}

fn check_key_block(key: &Block<'_>, problems: &mut Problems) {
    let at = format!("line {}", key.first_line);
    let encrypted =
        key.label.contains("ENCRYPTED") || key.headers.iter().any(|h| h.contains("ENCRYPTED"));
    if encrypted {
        problems.at(
            at,
            "the private key is encrypted; the node needs it without a passphrase",
        );
        return;
    }
    if !PRIVATE_KEY_LABELS.contains(&key.label) {
        problems.at(
            at,
            format!(
                "'{}' is not an accepted key block; expected '{}'",
                key.label,
                PRIVATE_KEY_LABELS.join("' or '")
            ),
        );
        return;
    }
    match STANDARD.decode(&key.body) {
        Err(e) => problems.at(at, format!("the key body is not valid base64: {e}")),
        Ok(der) if der.is_empty() => problems.at(at, "the key body is empty"),
        // DER: every private key structure is a SEQUENCE.
        Ok(der) if der[0] != 0x30 => problems.at(at, "the key body is not a DER structure"),
        Ok(_) => {}
    }
}

/// Reads and checks the node operator key at `path`; returns its text.
pub fn load_node_operator_key(path: &Path) -> Result<String, Problems> {
    let text = crate::read_text(path)?;
    check_node_operator_key(&text).map_err(|p| p.in_file(path))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway secp256k1 key, used only by these tests.
    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHQCAQEEIAKRgxjcqkKj41bYWrnoUbpP0Tn9dr8ZStiNR+G0aI3qoAcGBSuBBAAK
oUQDQgAENJmYhVNqxjlvEDRCuhOi/YPKpx/9UGeto36Zuin+mBX7GX/eJbtaZbfN
mB+IRsp6RGep5zbKxEkcxVarKlVAfg==
-----END EC PRIVATE KEY-----
";

    #[test]
    fn accepts_sec1_and_pkcs8_with_other_blocks() {
        check_node_operator_key(SEC1).unwrap();
        let params = "-----BEGIN EC PARAMETERS-----\nBgUrgQQACg==\n-----END EC PARAMETERS-----\n";
        check_node_operator_key(&format!("{params}{SEC1}")).unwrap();
        let pkcs8 = SEC1.replace("EC PRIVATE KEY", "PRIVATE KEY");
        check_node_operator_key(&pkcs8).unwrap();
        check_node_operator_key(&SEC1.replace('\n', "\r\n")).unwrap();
    }

    #[test]
    fn rejects_broken_keys() {
        let cases = [
            (String::new(), "no PEM"),
            ("just text".to_string(), "no PEM"),
            (
                SEC1.replace("-----END EC PRIVATE KEY-----\n", ""),
                "no END line",
            ),
            (SEC1.replace("MHQC", "M*QC"), "not valid base64"),
            (
                SEC1.replace("EC PRIVATE", "RSA PRIVATE"),
                "not an accepted key block",
            ),
            (SEC1.replace("EC PRIVATE", "ENCRYPTED PRIVATE"), "encrypted"),
            (format!("{SEC1}{SEC1}"), "holds 2 private keys"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_string(),
                "not a DER structure",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n".to_string(),
                "empty",
            ),
        ];
        for (text, want) in cases {
            let err = check_node_operator_key(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn load_keeps_the_text_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node_operator_private_key.pem");
        std::fs::write(&path, SEC1).unwrap();
        assert_eq!(load_node_operator_key(&path).unwrap(), SEC1);
        std::fs::write(&path, "nothing").unwrap();
        let err = load_node_operator_key(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }
}
