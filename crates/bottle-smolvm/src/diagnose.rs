//! What `bottle doctor` says of the smolmachines backend: whether `smolvm`
//! is on `PATH`, and whether this user may open `/dev/kvm`, which smolvm's
//! microVMs need on Linux. Neither is a failure: bottles then run on Docker.

use bottle_core::Check;

use crate::cli::Smolvm;

/// Every check of this backend.
pub(crate) fn diagnose() -> Vec<Check> {
    let smolvm = match Smolvm::locate() {
        Ok(smolvm) => Check::ok("smolvm", format!("{} is on PATH", smolvm.argv(&[]).join(" "))),
        Err(e) => Check::warn("smolvm", format!("the smolmachines backend is unavailable: {}", e.message())),
    };
    vec![smolvm, kvm(std::path::Path::new("/dev/kvm"))]
}

/// Whether `device` (`/dev/kvm`) is there and this user may open it.
fn kvm(device: &std::path::Path) -> Check {
    let what = "kvm";
    if !cfg!(target_os = "linux") {
        return Check::info(what, "not Linux: smolvm uses the host's own hypervisor");
    }
    match std::fs::OpenOptions::new().read(true).write(true).open(device) {
        Ok(_) => Check::ok(what, format!("{} is present and this user may open it", device.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Check::warn(what, format!("no {}: smolvm's microVMs cannot run here", device.display())).with_fix(
                "enable virtualisation (VT-x/AMD-V, or nested virtualisation in a VM) and load kvm_intel or kvm_amd",
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::warn(
            what,
            format!("{} is present but this user may not open it: smolvm's microVMs cannot run", device.display()),
        )
        .with_fix("add yourself to its group (`sudo usermod -aG kvm $USER`) and log in again"),
        Err(e) => Check::warn(what, format!("{} cannot be opened: {e}", device.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kvm_device_is_a_warning_with_a_fix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = kvm(&tmp.path().join("kvm"));
        assert_eq!(missing.status, bottle_core::CheckStatus::Warn, "{missing}");
        assert!(missing.fix.is_some() && missing.finding.contains("cannot run here"), "{missing}");
        let file = tmp.path().join("present");
        std::fs::write(&file, "").expect("write");
        assert_eq!(kvm(&file).status, bottle_core::CheckStatus::Ok, "an openable device is fine");
    }
}
