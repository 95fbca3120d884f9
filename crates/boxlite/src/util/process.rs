//! Identity and control of helper processes (QEMU, vhost-device-vsock).
//!
//! A pid alone is not an identity: after the process exits the kernel can hand the same
//! pid to something else. A [`ProcessId`] pairs the pid with the process start time from
//! `/proc/<pid>/stat`, so a recycled pid is never mistaken for our VMM, and never signalled.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::vmm::VmmError;

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

    /// True while the very same process exists and has not exited (zombies count as exited).
    pub fn is_alive(&self) -> bool {
        matches!(read_stat(self.pid), Some(st) if st.start_time == self.start_time && st.state != 'Z' && st.state != 'X')
    }

    /// Send a signal, only if this is still the same process.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        if !self.is_alive() {
            return Ok(());
        }
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(self.pid, sig) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Wait until the process is gone, polling; false on timeout.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The process's descendants still running, found by walking `/proc` parent links.
    /// A helper that forks (virtiofsd's sandbox) is only gone once they are.
    pub fn descendants(&self) -> Vec<ProcessId> {
        if !self.is_alive() {
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
        let mut frontier = vec![self.pid];
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

    /// SIGKILL the process and its descendants and wait (polling, blocking the thread)
    /// until all are gone, up to `timeout`. For cleanup paths that also run outside
    /// async code.
    pub fn kill_and_wait(&self, timeout: Duration) {
        let mut all = self.descendants();
        all.push(*self);
        for p in &all {
            let _ = p.signal(libc::SIGKILL);
        }
        let deadline = Instant::now() + timeout;
        while all.iter().any(|p| p.is_alive()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub async fn terminate(&self, grace: Duration) {
        let _ = self.signal(libc::SIGTERM);
        if !self.wait_gone(grace).await {
            let _ = self.signal(libc::SIGKILL);
            self.wait_gone(Duration::from_secs(5)).await;
        }
    }
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

/// Start a helper process in its own session, with its output to a log file, so it
/// survives the caller and never writes on the caller's terminal.
///
/// `marker` is added to the helper's environment (`BOXLITE_HOME`, `BOXLITE_BOX_ID`), so
/// recovery and leak checks can find a box's processes from `/proc/<pid>/environ`.
pub fn spawn_detached(
    binary: &Path,
    args: &[OsString],
    log: &Path,
    marker: &[(&str, &str)],
) -> Result<(ProcessId, tokio::process::Child), VmmError> {
    let spawn_err = |source| VmmError::Spawn {
        binary: binary.display().to_string(),
        source,
    };
    let out = std::fs::File::create(log).map_err(spawn_err)?;
    let err = out.try_clone().map_err(spawn_err)?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(args)
        .envs(marker.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(spawn_err)?;
    let pid = child.id().unwrap_or(0) as i32;
    let id = ProcessId::of(pid).map_err(spawn_err)?;
    Ok((id, child))
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
    fn kill_and_wait_takes_the_children_of_a_forking_helper_too() {
        let child = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & sleep 300 & wait"])
            .spawn()
            .unwrap();
        let sh = ProcessId::of(child.id() as i32).unwrap();
        let mut kids = Vec::new();
        for _ in 0..200 {
            kids = sh.descendants();
            if kids.len() == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }

        sh.kill_and_wait(Duration::from_secs(5));

        let mut child = child;
        let _ = child.wait();
        assert_eq!(kids.len(), 2);
        assert!(kids.iter().all(|k| !k.is_alive()));
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        let recycled = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(me.is_alive());
        assert!(!recycled.is_alive());
    }
}
