//! The management (BMC) MAC address, the input of every deterministic address.
//!
//! In order of preference it comes from the `--mgmt-mac` flag, from
//! `deployment.mgmt_mac` in `deployment.json`, or from the BMC through
//! `ipmitool lan print`, which is run only when neither of the others is given.

use std::fmt;
use std::process::Command;

use icos_deterministic_ips::MacAddr6;

/// Where the management MAC came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MgmtMacSource {
    /// The `--mgmt-mac` flag.
    Flag,
    /// `deployment.mgmt_mac` in `deployment.json`.
    DeploymentJson,
    /// `ipmitool lan print`.
    Ipmitool,
}

impl fmt::Display for MgmtMacSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MgmtMacSource::Flag => "--mgmt-mac",
            MgmtMacSource::DeploymentJson => "deployment.json",
            MgmtMacSource::Ipmitool => "ipmitool lan print",
        })
    }
}

/// Why the MAC could not be read from the BMC.
#[derive(Debug, thiserror::Error)]
pub enum IpmitoolError {
    /// The command could not be started (for example, it is not installed).
    #[error("running `ipmitool lan print` failed: {0}")]
    Run(#[source] std::io::Error),
    /// The output has no `MAC Address` line.
    #[error("`ipmitool lan print` printed no 'MAC Address' line (exit status {status}; {stderr})")]
    NoMacLine {
        /// The exit status, as text.
        status: String,
        /// What the command wrote to stderr, trimmed.
        stderr: String,
    },
    /// The `MAC Address` line does not hold a MAC.
    #[error("`ipmitool lan print` printed a 'MAC Address' line without a MAC: '{0}'")]
    BadMacLine(String),
}

/// Finds the BMC's MAC in the output of `ipmitool lan print`: the line
/// `MAC Address : xx:xx:xx:xx:xx:xx` (any case, `:` or `-` separators).
///
/// Returns `Ok(None)` when there is no such line, and the line itself as the
/// error when it does not hold a MAC.
pub fn parse_ipmitool_mac(output: &str) -> Result<Option<MacAddr6>, String> {
    let Some(line) = output
        .lines()
        .find(|l| l.trim_start().starts_with("MAC Address"))
    else {
        return Ok(None);
    };
    let value = line
        .trim_start()
        .trim_start_matches("MAC Address")
        .trim_start()
        .strip_prefix(':')
        .map(str::trim)
        .and_then(|v| v.split_ascii_whitespace().next());
    let mac = value.and_then(|v| {
        // Six two-digit groups: the separator-free form the parser also takes
        // is not something ipmitool prints.
        (v.len() == 17)
            .then(|| icos_deterministic_ips::parse_mac(v).ok())
            .flatten()
    });
    mac.map(Some).ok_or_else(|| line.trim().to_string())
}

/// Runs `ipmitool lan print` and reads the BMC's MAC from its output.
///
/// The exit status is not trusted: some ipmitool versions fail after
/// printing everything needed, so the output is parsed either way.
pub fn read_ipmitool_mac() -> Result<MacAddr6, IpmitoolError> {
    let output = Command::new("ipmitool")
        .args(["lan", "print"])
        .output()
        .map_err(IpmitoolError::Run)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match parse_ipmitool_mac(&stdout) {
        Ok(Some(mac)) => Ok(mac),
        Ok(None) => Err(IpmitoolError::NoMacLine {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        }),
        Err(line) => Err(IpmitoolError::BadMacLine(line)),
    }
}

/// Picks the management MAC: the flag, else deployment.json, else what
/// `from_bmc` returns (called only when neither is given).
pub fn resolve_mgmt_mac<F>(
    flag: Option<MacAddr6>,
    deployment_json: Option<MacAddr6>,
    from_bmc: F,
) -> Result<(MacAddr6, MgmtMacSource), IpmitoolError>
where
    F: FnOnce() -> Result<MacAddr6, IpmitoolError>,
{
    if let Some(mac) = flag {
        return Ok((mac, MgmtMacSource::Flag));
    }
    if let Some(mac) = deployment_json {
        return Ok((mac, MgmtMacSource::DeploymentJson));
    }
    from_bmc().map(|mac| (mac, MgmtMacSource::Ipmitool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use icos_deterministic_ips::{format_mac, parse_mac};

    /// `ipmitool lan print` on a Supermicro BMC.
    const SUPERMICRO: &str = "\
Set in Progress         : Set Complete
Auth Type Support       : NONE MD2 MD5 PASSWORD
Auth Type Enable        : Callback : MD2 MD5 PASSWORD
                        : User     : MD2 MD5 PASSWORD
                        : Operator : MD2 MD5 PASSWORD
                        : Admin    : MD2 MD5 PASSWORD
                        : OEM      : MD2 MD5 PASSWORD
IP Address Source       : DHCP Address
IP Address              : 10.10.4.17
Subnet Mask             : 255.255.252.0
MAC Address             : 3c:ec:ef:6b:37:99
SNMP Community String   : public
IP Header               : TTL=0x00 Flags=0x00 Precedence=0x00 TOS=0x00
BMC ARP Control         : ARP Responses Enabled, Gratuitous ARP Disabled
Default Gateway IP      : 10.10.7.254
Default Gateway MAC     : 00:00:5e:00:01:01
Backup Gateway IP       : 0.0.0.0
Backup Gateway MAC      : 00:00:00:00:00:00
802.1q VLAN ID          : Disabled
802.1q VLAN Priority    : 0
RMCP+ Cipher Suites     : 1,2,3,6,7,8,11,12
Cipher Suite Priv Max   : XaaaXXaaaXXaaXX
                        :     X=Cipher Suite Unused
                        :     a=ADMIN
Bad Password Threshold  : 3
";

    /// The start of `ipmitool lan print` on a Dell iDRAC: upper-case MAC.
    const IDRAC: &str = "\
Set in Progress         : Set Complete
IP Address Source       : Static Address
IP Address              : 192.168.0.120
Subnet Mask             : 255.255.255.0
MAC Address             : B0:7B:25:C8:F6:C0
SNMP Community String   : public
";

    fn mac(text: &str) -> MacAddr6 {
        parse_mac(text).unwrap()
    }

    #[test]
    fn captured_outputs() {
        assert_eq!(
            parse_ipmitool_mac(SUPERMICRO),
            Ok(Some(mac("3c:ec:ef:6b:37:99")))
        );
        assert_eq!(
            parse_ipmitool_mac(IDRAC),
            Ok(Some(mac("b0:7b:25:c8:f6:c0")))
        );
        let one_line = parse_ipmitool_mac(" MAC Address             : de:ad:be:ef:be:ef  ");
        assert_eq!(one_line, Ok(Some(mac("de:ad:be:ef:be:ef"))));
        let dashes = parse_ipmitool_mac("MAC Address : DE-AD-BE-EF-BE-EF\n");
        assert_eq!(
            dashes.unwrap().map(|m| format_mac(&m)).as_deref(),
            Some("de:ad:be:ef:be:ef")
        );
    }

    #[test]
    fn missing_or_broken_mac_line() {
        assert_eq!(parse_ipmitool_mac(""), Ok(None));
        assert_eq!(
            parse_ipmitool_mac("Default Gateway MAC     : 00:00:5e:00:01:01\n"),
            Ok(None)
        );
        assert_eq!(
            parse_ipmitool_mac("MAC Address : UNKNOWN\n"),
            Err("MAC Address : UNKNOWN".to_string())
        );
        assert!(parse_ipmitool_mac("MAC Address : 3cecef6b3799\n").is_err());
        assert!(parse_ipmitool_mac("MAC Address 3c:ec:ef:6b:37:99\n").is_err());
    }

    #[test]
    fn flag_beats_deployment_json_beats_ipmitool() {
        let a = mac("00:00:00:00:00:0a");
        let b = mac("00:00:00:00:00:0b");
        let c = mac("00:00:00:00:00:0c");
        let never = || -> Result<MacAddr6, IpmitoolError> { panic!("ipmitool must not run") };
        assert_eq!(
            resolve_mgmt_mac(Some(a), Some(b), never).unwrap(),
            (a, MgmtMacSource::Flag)
        );
        assert_eq!(
            resolve_mgmt_mac(None, Some(b), never).unwrap(),
            (b, MgmtMacSource::DeploymentJson)
        );
        assert_eq!(
            resolve_mgmt_mac(None, None, || Ok(c)).unwrap(),
            (c, MgmtMacSource::Ipmitool)
        );
        let err = resolve_mgmt_mac(None, None, || {
            Err(IpmitoolError::Run(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            )))
        })
        .unwrap_err();
        assert!(err.to_string().contains("ipmitool lan print"), "{err}");
    }
}
