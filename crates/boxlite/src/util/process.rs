//! Identity of helper processes (QEMU, virtiofsd, the network helper, the box shim).
//!
//! A pid alone is not an identity: after the process exits the kernel can hand the same
//! pid to something else. A [`ProcessId`] pairs the pid with the process start time from
//! `/proc/<pid>/stat`, so a recycled pid is never mistaken for our VMM. Signals go through
//! a pidfd opened and then checked against that identity ([`super::kill`]), so the
//! process signalled is the process named.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A process as pid plus start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

/// Fields of `/proc/<pid>/stat` we care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub start_time: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// Parse `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: field 3 (state) is index 0, field 4 (ppid) index 1, fields 14
    // and 15 (utime, stime) indexes 11 and 12, field 22 (starttime) index 19, field 24
    // (rss) index 21.
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_time: num(19)?,
        cpu_ticks: num(11).unwrap_or(0) + num(12).unwrap_or(0),
        rss_pages: num(21).unwrap_or(0),
    })
}

pub fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

impl ProcessId {
    /// Identify a running process by pid.
    pub fn of(pid: i32) -> io::Result<ProcessId> {
        let st = read_stat(pid).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("process {pid} is gone"))
        })?;
        Ok(ProcessId {
            pid,
            start_time: st.start_time,
        })
    }

    /// True while the very same process exists and has not exited. A zombie has exited,
    /// unless it is the main thread of a process whose other threads still run: QEMU's
    /// main thread ends before its vCPU and I/O threads have finished (flushing the
    /// disk), and the process is not gone until they have.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(st) if st.start_time == self.start_time => match st.state {
                'Z' | 'X' => threads_left(self.pid) > 1,
                _ => true,
            },
            _ => false,
        }
    }
}

/// How many threads of `pid` are listed in `/proc/<pid>/task` (a zombie main thread
/// counts itself).
fn threads_left(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// Every live descendant of the live processes among `roots`, found by walking `/proc`
/// parent links once. A helper that forks (virtiofsd's sandbox) is only gone once its
/// descendants are.
pub fn descendants(roots: &[ProcessId]) -> Vec<ProcessId> {
    let live: Vec<i32> = roots
        .iter()
        .filter(|p| p.is_alive())
        .map(|p| p.pid)
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let all: Vec<(i32, ProcStat)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect();
    let mut found: Vec<ProcessId> = Vec::new();
    let mut frontier = live;
    while let Some(parent) = frontier.pop() {
        for (pid, st) in all.iter().filter(|(_, st)| st.ppid == parent) {
            if found.iter().all(|p| p.pid != *pid) {
                found.push(ProcessId {
                    pid: *pid,
                    start_time: st.start_time,
                });
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Find an executable: an explicit override, else the first match on `PATH`.
pub fn find_binary(name: &str, override_var: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(override_var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_parentheses_and_spaces_in_the_name() {
        let line =
            "1234 (qemu (evil) x) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 987654 0 0";
        let st = parse_stat(line).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.ppid, 1);
        assert_eq!(st.start_time, 987654);
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id().cast_signed()).unwrap();
        let recycled = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(me.is_alive());
        assert!(!recycled.is_alive());
    }
}
