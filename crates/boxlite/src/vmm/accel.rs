//! Accelerator choice: KVM where it really works, HVF on macOS, TCG everywhere else.
//!
//! `/dev/kvm` existing is not enough. Under the nested "PVM" KVM module
//! (`/sys/module/kvm_pvm`) a stock kernel crawls and then dies with an emulation failure,
//! so that host is treated as having no usable KVM.

use std::path::Path;
use std::str::FromStr;

pub use crate::model::Accel;

#[derive(Debug, thiserror::Error)]
pub enum AccelError {
    #[error("BOXLITE_ACCEL={0:?} is not an accelerator; valid values are kvm, hvf and tcg")]
    Unknown(String),
}

impl FromStr for Accel {
    type Err = AccelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "hvf" => Ok(Accel::Hvf),
            "tcg" => Ok(Accel::Tcg),
            _ => Err(AccelError::Unknown(s.to_string())),
        }
    }
}

/// The chosen accelerator and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// What the host offers, gathered separately so the decision is testable.
#[derive(Debug, Clone, Default)]
pub struct HostProbe {
    pub kvm_openable: bool,
    pub kvm_pvm: bool,
    pub macos: bool,
}

impl HostProbe {
    pub fn current() -> Self {
        let kvm_openable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        HostProbe {
            kvm_openable,
            kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
            macos: cfg!(target_os = "macos"),
        }
    }
}

/// Decide from an optional override (the value of `BOXLITE_ACCEL`) and the host probe.
pub fn choose(override_: Option<&str>, host: &HostProbe) -> Result<AccelChoice, AccelError> {
    if let Some(v) = override_.filter(|v| !v.trim().is_empty()) {
        let accel: Accel = v.parse()?;
        return Ok(AccelChoice {
            accel,
            reason: "set by BOXLITE_ACCEL".into(),
        });
    }
    let choice = if host.kvm_openable && !host.kvm_pvm {
        (Accel::Kvm, "/dev/kvm is usable")
    } else if host.macos {
        (Accel::Hvf, "macOS Hypervisor.framework")
    } else if host.kvm_pvm {
        (
            Accel::Tcg,
            "/dev/kvm is the nested PVM module, which cannot run a stock kernel; using software emulation",
        )
    } else {
        (Accel::Tcg, "no usable /dev/kvm; using software emulation")
    };
    Ok(AccelChoice {
        accel: choice.0,
        reason: choice.1.into(),
    })
}

/// Decide for this host, honouring `BOXLITE_ACCEL`.
pub fn detect() -> Result<AccelChoice, AccelError> {
    choose(
        std::env::var("BOXLITE_ACCEL").ok().as_deref(),
        &HostProbe::current(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_pvm_kvm_falls_back_to_tcg() {
        let host = HostProbe {
            kvm_openable: true,
            kvm_pvm: true,
            macos: false,
        };
        let c = choose(None, &host).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("PVM"));
    }

    #[test]
    fn usable_kvm_is_preferred() {
        let host = HostProbe {
            kvm_openable: true,
            kvm_pvm: false,
            macos: false,
        };
        assert_eq!(choose(None, &host).unwrap().accel, Accel::Kvm);
    }

    #[test]
    fn override_wins_over_detection() {
        let host = HostProbe {
            kvm_openable: true,
            ..Default::default()
        };
        assert_eq!(choose(Some("TCG"), &host).unwrap().accel, Accel::Tcg);
    }

    #[test]
    fn bogus_override_names_the_value_and_valid_choices() {
        let err = choose(Some("bogus"), &HostProbe::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "BOXLITE_ACCEL=\"bogus\" is not an accelerator; valid values are kvm, hvf and tcg"
        );
    }
}
