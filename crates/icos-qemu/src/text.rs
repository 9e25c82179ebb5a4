//! Serial console lines as text: terminal control sequences (OVMF draws its
//! screen with them, the installer colours its banners) and other control
//! characters removed.

/// A serial line without terminal control sequences and control characters
/// (tabs are kept), trailing white space trimmed.
pub fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    // CSI: parameter and intermediate bytes, then one final byte.
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_screen_control_and_carriage_returns_go() {
        assert_eq!(
            clean_line("\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: loading\r"),
            "BdsDxe: loading"
        );
        assert_eq!(clean_line("\u{1b}[1;31m######\u{1b}[0m"), "######");
        assert_eq!(clean_line("a\tb \u{7}  "), "a\tb");
        assert_eq!(clean_line("\u{1b}"), "");
        assert_eq!(clean_line("plain"), "plain");
    }
}
