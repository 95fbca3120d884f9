//! Linux capabilities as the host and the guest name them: the host checks a box's
//! `cap_add`/`cap_drop` against [`NAMES`] and sends a mask in `ExecRequest.capabilities`;
//! the agent applies it, or [`DEFAULT`] when the host sends none.

/// Every capability Linux 6.1 knows, at the index of its number (`CAP_CHOWN` is 0,
/// `CAP_CHECKPOINT_RESTORE` 40), without the `CAP_` prefix.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set: what a box's commands keep unless it adds or drops some.
pub const DEFAULT_NAMES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// [`DEFAULT_NAMES`] as a mask.
pub const DEFAULT: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < DEFAULT_NAMES.len() {
        mask |= 1 << number_const(DEFAULT_NAMES[i]);
        i += 1;
    }
    mask
};

/// Every capability of [`NAMES`] (`--privileged`, `ALL`).
pub const ALL: u64 = (1 << NAMES.len()) - 1;

const fn eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn number_const(name: &str) -> usize {
    let mut i = 0;
    while i < NAMES.len() {
        if eq(NAMES[i], name) {
            return i;
        }
        i += 1;
    }
    panic!("not a capability name")
}

/// The number of a capability named as in [`NAMES`], with or without `CAP_`, in any
/// case; `None` for anything else.
pub fn number(name: &str) -> Option<usize> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare)
}

/// The `CAP_`-prefixed names of the capabilities in `mask`, in number order.
pub fn names(mask: u64) -> Vec<String> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| format!("CAP_{n}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_the_kernel_s_order() {
        assert_eq!(number("CHOWN"), Some(0));
        assert_eq!(number("cap_sys_admin"), Some(21));
        assert_eq!(number("Sys_Ptrace"), Some(19));
        assert_eq!(number("CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_"), None);
        assert_eq!(number("ALL"), None);
    }

    #[test]
    fn the_default_set_is_docker_s_fourteen_and_has_no_admin_ptrace_or_module() {
        assert_eq!(DEFAULT.count_ones(), 14);
        assert_eq!(DEFAULT, 0xa80425fb);
        for forbidden in ["SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN"] {
            assert_eq!(
                DEFAULT & (1 << number(forbidden).unwrap()),
                0,
                "{forbidden}"
            );
        }
    }

    #[test]
    fn names_lists_a_mask_with_prefixes() {
        assert_eq!(names(0b101), ["CAP_CHOWN", "CAP_DAC_READ_SEARCH"]);
        assert_eq!(names(ALL).len(), 41);
    }
}
