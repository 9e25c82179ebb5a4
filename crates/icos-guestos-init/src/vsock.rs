//! Step 6: the vsock channel to HostOS. When the VM has a virtio vsock
//! device, `icos-guestos-init vsock` asks the host for its version with
//! `icos-vsock-guest get-hostos-version` and prints the answer on the
//! console; without one it does nothing.

use crate::Paths;

/// The virtio device id of a vsock device (`/sys/bus/virtio/devices/*/device`).
pub const VIRTIO_ID_VSOCK: &str = "0x0013";

/// Whether the VM has a virtio vsock device.
pub fn has_vsock_device(paths: &Paths) -> bool {
    let dir = paths.sys().join("bus/virtio/devices");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                std::fs::read_to_string(e.path().join("device"))
                    .is_ok_and(|id| id.trim() == VIRTIO_ID_VSOCK)
            })
        })
        .unwrap_or(false)
}

/// The console line for the host's answer.
pub fn result_line(answer: std::result::Result<&str, &str>) -> String {
    match answer {
        Ok(version) => format!("GUESTOS VSOCK get-hostos-version: ok: {}", version.trim()),
        Err(e) => format!("GUESTOS VSOCK get-hostos-version: error: {}", e.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_device_by_id() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths::new(d.path());
        assert!(!has_vsock_device(&p));
        let devs = p.sys().join("bus/virtio/devices");
        for (name, id) in [("virtio0", "0x0001"), ("virtio1", "0x0002")] {
            std::fs::create_dir_all(devs.join(name)).unwrap();
            std::fs::write(devs.join(name).join("device"), format!("{id}\n")).unwrap();
        }
        assert!(!has_vsock_device(&p));
        std::fs::create_dir_all(devs.join("virtio2")).unwrap();
        std::fs::write(devs.join("virtio2/device"), "0x0013\n").unwrap();
        assert!(has_vsock_device(&p));
    }

    #[test]
    fn lines() {
        assert_eq!(
            result_line(Ok("1.2.3\n")),
            "GUESTOS VSOCK get-hostos-version: ok: 1.2.3"
        );
        assert_eq!(
            result_line(Err("refused")),
            "GUESTOS VSOCK get-hostos-version: error: refused"
        );
    }
}
