//! Guest-side figures for the Stats call: memory, CPU time and the root filesystem.

use boxlite_protocol::v1;

/// Clock ticks per second of /proc/stat (USER_HZ; 100 on every Linux architecture
/// boxlite runs on).
const USER_HZ: f64 = 100.0;

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy time of all CPUs, in seconds, from the aggregate `cpu` line of /proc/stat
/// (everything but idle and iowait), and the number of CPUs.
pub fn cpu_busy(text: &str) -> (f64, u32) {
    let cpus = text
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
    let busy = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            let v: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|n| n.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            total.saturating_sub(idle) as f64 / USER_HZ
        })
        .unwrap_or(0.0);
    (busy, cpus)
}

pub fn collect() -> v1::StatsResponse {
    let mem = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (cpu_busy_secs, cpus) = cpu_busy(&stat);
    let (root_total_bytes, root_used_bytes) = statvfs(crate::init::CONTAINER_ROOT);
    v1::StatsResponse {
        mem_total_bytes: meminfo_kib(&mem, "MemTotal") * 1024,
        mem_available_bytes: meminfo_kib(&mem, "MemAvailable") * 1024,
        cpu_busy_secs,
        uptime_secs: crate::exec::uptime_secs(),
        cpus,
        root_total_bytes,
        root_used_bytes,
        ..Default::default()
    }
}

/// (total, used) bytes of the filesystem at `path`.
fn statvfs(path: &str) -> (u64, u64) {
    let Ok(p) = crate::sys::cstr(path) else {
        return (0, 0);
    };
    // SAFETY: statvfs is plain old data; the call fills it in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: p is NUL-terminated and st a valid out pointer.
    if unsafe { libc::statvfs(p.as_ptr(), &mut st) } < 0 {
        return (0, 0);
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    (total, total.saturating_sub(free))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 0 50 1000 30 0 10 0 0 0\ncpu0 50 0 25 500 15 0 5 0 0 0\ncpu1 50 0 25 500 15 0 5 0 0 0\nintr 1\n";

        let (busy, cpus) = cpu_busy(text);

        assert_eq!(cpus, 2);
        assert!((busy - 1.6).abs() < 1e-9, "{busy}");
    }

    #[test]
    fn meminfo_values_are_read_by_exact_key() {
        let text = "MemTotal:        1000 kB\nMemFree:  10 kB\nMemAvailable:     600 kB\n";

        assert_eq!(meminfo_kib(text, "MemTotal"), 1000);
        assert_eq!(meminfo_kib(text, "MemAvailable"), 600);
        assert_eq!(meminfo_kib(text, "Mem"), 0);
    }
}
