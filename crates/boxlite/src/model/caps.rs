//! A box's Linux capabilities: `cap_add`, `cap_drop` and `privileged`, checked and
//! normalized at creation, stored with the box, and turned into the mask every
//! execution carries to the agent (`ExecRequest.capabilities`).
//!
//! The rules are Docker's: commands start from its default set
//! ([`boxlite_protocol::caps::DEFAULT_NAMES`]); `privileged` gives every capability; with
//! `ALL` added, every capability but the dropped ones; with `ALL` dropped, only the
//! added ones; otherwise the default set minus the dropped ones plus the added ones.
//! Names take the `CAP_` prefix or not, in any case.

use boxlite_protocol::caps;
use serde::{Deserialize, Serialize};

/// The word standing for every capability in `cap_add` and `cap_drop`.
pub const ALL: &str = "ALL";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("unknown capability {name:?} in {list}; valid names are ALL and {valid}")]
    Unknown {
        name: String,
        /// `cap_add` or `cap_drop`.
        list: &'static str,
        /// Every valid name, comma-separated.
        valid: String,
    },
}

/// A box's capability settings, names normalized (`CAP_SYS_ADMIN`, or `ALL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub add: Vec<String>,
    pub drop: Vec<String>,
    pub privileged: bool,
}

fn normalize(list: &'static str, names: &[String]) -> Result<Vec<String>, CapabilityError> {
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let n = if name.eq_ignore_ascii_case(ALL) {
            ALL.to_string()
        } else {
            let number = caps::number(name).ok_or_else(|| CapabilityError::Unknown {
                name: name.clone(),
                list,
                valid: caps::names(caps::ALL).join(", "),
            })?;
            format!("CAP_{}", caps::NAMES[number])
        };
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn mask_of(names: &[String]) -> u64 {
    names
        .iter()
        .filter_map(|n| caps::number(n))
        .fold(0, |m, n| m | 1 << n)
}

impl Capabilities {
    /// Check and normalize the names of `add` and `drop`.
    pub fn new(add: &[String], drop: &[String], privileged: bool) -> Result<Self, CapabilityError> {
        Ok(Capabilities {
            add: normalize("cap_add", add)?,
            drop: normalize("cap_drop", drop)?,
            privileged,
        })
    }

    /// The capabilities every command of the box keeps, as a mask of `CAP_*` numbers.
    pub fn mask(&self) -> u64 {
        let has_all = |l: &[String]| l.iter().any(|n| n == ALL);
        let (add, drop) = (mask_of(&self.add), mask_of(&self.drop));
        if self.privileged {
            caps::ALL
        } else if has_all(&self.add) {
            caps::ALL & !drop
        } else if has_all(&self.drop) {
            add
        } else {
            (caps::DEFAULT & !drop) | add
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(
        add: &[&str],
        drop: &[&str],
        privileged: bool,
    ) -> Result<Capabilities, CapabilityError> {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Capabilities::new(&own(add), &own(drop), privileged)
    }

    fn bit(name: &str) -> u64 {
        1 << caps::number(name).unwrap()
    }

    #[test]
    fn names_are_normalized_with_or_without_prefix_in_any_case() {
        let c = caps(
            &["sys_admin", "CAP_NET_ADMIN", "Cap_Sys_Admin", "all"],
            &[],
            false,
        )
        .unwrap();

        assert_eq!(c.add, ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "ALL"]);
    }

    #[test]
    fn an_unknown_name_is_refused_naming_it_its_list_and_the_valid_names() {
        let e = caps(&[], &["CAP_FLY"], false).unwrap_err();

        let msg = e.to_string();
        assert!(
            matches!(&e, CapabilityError::Unknown { name, list: "cap_drop", .. } if name == "CAP_FLY")
        );
        assert!(
            msg.starts_with(
                "unknown capability \"CAP_FLY\" in cap_drop; valid names are ALL and CAP_CHOWN, "
            ),
            "{msg}"
        );
        assert!(msg.contains("CAP_SYS_ADMIN"), "{msg}");
    }

    #[test]
    fn masks_follow_docker_s_rules() {
        let default = caps(&[], &[], false).unwrap().mask();
        let dropped = caps(&[], &["NET_RAW"], false).unwrap().mask();
        let added = caps(&["SYS_PTRACE"], &[], false).unwrap().mask();
        let only = caps(&["CHOWN"], &["ALL"], false).unwrap().mask();
        let all_but = caps(&["ALL"], &["SYS_ADMIN"], false).unwrap().mask();
        let privileged = caps(&[], &["ALL"], true).unwrap().mask();

        assert_eq!(default, caps::DEFAULT);
        assert_eq!(dropped, caps::DEFAULT & !bit("NET_RAW"));
        assert_eq!(added, caps::DEFAULT | bit("SYS_PTRACE"));
        assert_eq!(only, bit("CHOWN"));
        assert_eq!(all_but, caps::ALL & !bit("SYS_ADMIN"));
        assert_eq!(privileged, caps::ALL);
    }

    #[test]
    fn a_stored_record_without_capabilities_reads_as_the_default_set() {
        let c: Capabilities = serde_json::from_str("{}").unwrap();

        assert_eq!(c.mask(), caps::DEFAULT);
    }
}
