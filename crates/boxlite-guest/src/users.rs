//! Resolving `--user` the way `docker exec --user` does, against the image's own
//! `/etc/passwd` and `/etc/group`.
//!
//! `name|uid[:group|gid]`:
//! - a name must exist in passwd; its uid, primary gid and home come from there;
//! - a numeric uid needs no entry; with one, its gid and home are used, without one the
//!   gid is 0 and the home `/`;
//! - `:group` overrides the primary gid (a name must exist in group);
//! - supplementary groups are every group that lists the user's name as a member.
//!
//! The files are read inside the container root (`RESOLVE_IN_ROOT`) and capped in size:
//! they come from the image, which is untrusted.

use std::io::Read;
use std::os::fd::OwnedFd;

use crate::sys;

/// Bigger files are refused rather than read.
const MAX_DB: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolve `spec` against the passwd and group texts.
fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<Ident, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || grp.is_some_and(str::is_empty) {
        return Err(format!("invalid user {spec:?}: use name|uid[:group|gid]"));
    }
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let entry = match user.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid).cloned(),
        Err(_) => Some(
            users
                .iter()
                .find(|e| e.name == user)
                .cloned()
                .ok_or_else(|| format!("user {user:?} not found in the image's /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user.parse::<u32>().expect("numeric when no entry"),
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| format!("group {g:?} not found in the image's /etc/group"))?,
        },
        None => entry.as_ref().map_or(0, |e| e.gid),
    };
    let mut supplementary: Vec<u32> = vec![gid];
    if let Some(e) = &entry {
        for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
            if !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(Ident {
        uid,
        gid,
        groups: supplementary,
        home: entry
            .map(|e| e.home)
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "/".into()),
    })
}

/// Read an image file inside the root; a missing file reads as empty.
fn read_db(root: &OwnedFd, path: &str) -> Result<String, String> {
    let f = match sys::open_in_root(root, path, libc::O_RDONLY) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(format!("reading the image's {path}: {e}")),
    };
    let mut text = String::new();
    f.take(MAX_DB + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the image's {path}: {e}"))?;
    if text.len() as u64 > MAX_DB {
        return Err(format!("the image's {path} is larger than {MAX_DB} bytes"));
    }
    Ok(text)
}

/// Resolve `spec` against the image mounted at `root`.
pub fn resolve(root: &OwnedFd, spec: &str) -> Result<Ident, String> {
    let passwd = read_db(root, "/etc/passwd")?;
    let group = read_db(root, "/etc/group")?;
    resolve_in(spec, &passwd, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
        alice:x:1001:1001::/home/alice:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:alice,bob\nalice:x:1001:\nnogroup:x:65534:\n";

    #[test]
    fn name_resolves_uid_gid_home_and_supplementary_groups() {
        let id = resolve_in("alice", PASSWD, GROUP).unwrap();

        assert_eq!(
            id,
            Ident {
                uid: 1001,
                gid: 1001,
                groups: vec![1001, 50],
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn numeric_ids_without_entries_are_taken_as_given() {
        let id = resolve_in("1234:5678", PASSWD, GROUP).unwrap();

        assert_eq!(
            id,
            Ident {
                uid: 1234,
                gid: 5678,
                groups: vec![5678],
                home: "/".into()
            }
        );
    }

    #[test]
    fn numeric_uid_without_entry_and_without_group_gets_gid_0() {
        assert_eq!(resolve_in("4321", PASSWD, GROUP).unwrap().gid, 0);
    }

    #[test]
    fn group_name_overrides_the_primary_group() {
        let id = resolve_in("nobody:staff", PASSWD, GROUP).unwrap();

        assert_eq!((id.uid, id.gid), (65534, 50));
    }

    #[test]
    fn unknown_names_and_malformed_specs_are_refused_with_the_reason() {
        assert!(
            resolve_in("mallory", PASSWD, GROUP)
                .unwrap_err()
                .contains("not found in the image's /etc/passwd")
        );
        assert!(
            resolve_in("root:wheel", PASSWD, GROUP)
                .unwrap_err()
                .contains("not found in the image's /etc/group")
        );
        assert!(
            resolve_in(":5", PASSWD, GROUP)
                .unwrap_err()
                .contains("name|uid[:group|gid]")
        );
        assert!(resolve_in("root:", PASSWD, GROUP).is_err());
    }
}
