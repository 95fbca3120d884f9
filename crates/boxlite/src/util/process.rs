//! Identity and control of helper processes (QEMU, vhost-device-vsock).
//!
//! A pid alone is not an identity: after the process exits the kernel can hand the same
//! pid to something else. A [`ProcessId`] pairs the pid with the process start time from
//! `/proc/<pid>/stat`, so a recycled pid is never mistaken for our VMM, and never signalled.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

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
    pub start_time: u64,
}

/// Parse `/proc/<pid>/stat`. The command name is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: field 3 (state) is index 0, field 22 (starttime) is index 19.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
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

    /// SIGTERM, then SIGKILL after `grace`; returns once the process is gone.
    pub async fn terminate(&self, grace: Duration) {
        let _ = self.signal(libc::SIGTERM);
        if !self.wait_gone(grace).await {
            let _ = self.signal(libc::SIGKILL);
            self.wait_gone(Duration::from_secs(5)).await;
        }
    }
}

/// Last `max` bytes of a text file, lossily decoded, for error messages. Reads only the
/// tail: the console log is written by the guest and can be arbitrarily large.
pub fn tail_file(path: &Path, max: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if f.seek(SeekFrom::Start(len.saturating_sub(max as u64)))
        .is_err()
    {
        return String::new();
    }
    let mut data = Vec::with_capacity(max.min(1 << 20));
    let _ = f.take(max as u64).read_to_end(&mut data);
    String::from_utf8_lossy(&data).replace('\r', "")
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
        assert_eq!(st.start_time, 987654);
    }

    #[test]
    fn tail_reads_only_the_last_bytes_of_a_large_file() {
        let path = std::env::temp_dir().join(format!("bx-tail-{}", rand::random::<u64>()));
        let mut data = vec![b'x'; 5 << 20];
        data.extend_from_slice(b"\r\nKernel panic - the end");
        std::fs::write(&path, &data).unwrap();

        let tail = tail_file(&path, 24);

        std::fs::remove_file(&path).unwrap();
        assert_eq!(tail, "\nKernel panic - the end");
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
