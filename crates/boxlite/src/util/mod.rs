//! The bottom layer: helpers that know nothing of boxes or images. Process identity
//! (`process`), starting helpers behind the spawn gate (`spawn`), the one kill path
//! (`kill`), the blocking boundary (`blocking`), file locks and file utilities.

pub mod blocking;
pub mod fsutil;
#[cfg(test)]
mod jail_probe;
pub mod kill;
pub mod lock;
pub mod process;
pub mod spawn;

/// Milliseconds since `t`, for timings in logs and reports.
pub fn ms_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An error and its sources on one line, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// A fresh random id, 32 hex digits: for boxes, anonymous volumes and snapshots.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
