//! The banners the installer ends with: red on failure, green on success.

/// The title of the failure banner.
pub const FAILURE_TITLE: &str = "INTERNET COMPUTER - SETUP - FAILED";
/// The title of the success banner.
pub const SUCCESS_TITLE: &str = "INTERNET COMPUTER - SETUP - SUCCESSFUL";

const WIDTH: usize = 78;
const RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[1;32m";
const RESET: &str = "\x1b[0m";

fn frame(title: &str, body: &[String], colour: Option<&str>) -> String {
    let rule = "#".repeat(WIDTH);
    let pad = WIDTH.saturating_sub(title.len()) / 2;
    let mut lines = vec![
        rule.clone(),
        String::new(),
        format!("{}{title}", " ".repeat(pad)),
        String::new(),
        rule.clone(),
    ];
    lines.extend(body.iter().cloned());
    lines.push(rule);
    let text = lines.join("\n");
    match colour {
        Some(c) => format!("{c}{text}{RESET}\n"),
        None => format!("{text}\n"),
    }
}

/// The failure banner: the title, each reason on its own line, and what to
/// do next. With `colour` the banner is wrapped in bold red ANSI codes.
pub fn failure_banner(reasons: &[String], colour: bool) -> String {
    let mut body = vec![
        String::new(),
        "The installation stopped because:".to_string(),
    ];
    if reasons.is_empty() {
        body.push("  - (no reason was given)".to_string());
    }
    body.extend(reasons.iter().map(|r| format!("  - {r}")));
    body.extend([
        String::new(),
        "Nothing was written to the drives unless a reason above says so.".to_string(),
        "Fix the cause (in config.ini on the CONFIG partition of the installer".to_string(),
        "medium, the hardware, the firmware settings or the network), then boot".to_string(),
        "the installer again. For help, look up the reason in the node provider".to_string(),
        "troubleshooting guide for node deployment errors.".to_string(),
        String::new(),
    ]);
    frame(FAILURE_TITLE, &body, colour.then_some(RED))
}

/// The success banner, saying what comes next.
pub fn success_banner(reboot: bool, colour: bool) -> String {
    let next = if reboot {
        "The machine reboots into HostOS in 15 seconds; remove the installer medium."
    } else {
        "Reboot was switched off (ic.setupos.reboot_after_installation=false)."
    };
    let body = vec![
        String::new(),
        "HostOS and GuestOS are installed and configured.".to_string(),
        next.to_string(),
        String::new(),
    ];
    frame(SUCCESS_TITLE, &body, colour.then_some(GREEN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_banner_lists_every_reason() {
        let text = failure_banner(
            &[
                "hardware: 1 CPU socket(s) populated".into(),
                "network: no route".into(),
            ],
            false,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#".repeat(78));
        assert_eq!(lines[2].trim(), FAILURE_TITLE);
        let pad = (78 - FAILURE_TITLE.len()) / 2;
        assert_eq!(lines[2], format!("{}{FAILURE_TITLE}", " ".repeat(pad)));
        assert!(
            text.contains("\n  - hardware: 1 CPU socket(s) populated\n  - network: no route\n")
        );
        assert!(text.contains("troubleshooting guide"));
        assert!(!text.contains('\x1b'));
        assert!(text.ends_with(&format!("{}\n", "#".repeat(78))));
        assert!(failure_banner(&[], false).contains("(no reason was given)"));
    }

    #[test]
    fn colour_is_optional() {
        let red = failure_banner(&["x".into()], true);
        assert!(red.starts_with("\x1b[1;31m"));
        assert!(red.ends_with("\x1b[0m\n"));
        let green = success_banner(true, true);
        assert!(green.starts_with("\x1b[1;32m"));
        assert!(green.contains(SUCCESS_TITLE));
        assert!(green.contains("reboots into HostOS"));
        assert!(success_banner(false, false).contains("reboot_after_installation=false"));
    }
}
