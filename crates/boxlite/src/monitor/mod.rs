//! The per-box monitor: a small process (`boxlite-shim`) that lives as long as the box's
//! VM and does what a daemon would otherwise do for it.
//!
//! - **Health.** Every `interval` it pings the agent over a fresh connection. After
//!   `retries` consecutive failures the box is marked unhealthy, with the reason; one
//!   success marks it healthy again.
//! - **Death of the VM.** It watches the VMM through a pidfd. When the VM exits on its
//!   own (the guest powered off, the kernel panicked, QEMU was killed) it records the box
//!   as Stopped with the reason at once, and removes it if it was created with
//!   `auto_remove`, so `--rm` holds even when nobody is watching.
//!
//! It never needs to be running for correctness: reconciliation at runtime start and on
//! every operation reaches the same states, only later. Boxes keep working without it
//! when the binary is missing; `boxlite info` says so.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::litebox::record::{BoxRow, Health, HealthState};
use crate::litebox::state::BoxState;
use crate::litebox::{self, now_secs};
use crate::portal::AgentClient;
use crate::runtime::RuntimeInner;
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::{ProcessId, find_binary, spawn_detached};

/// The monitor binary's name.
pub const SHIM: &str = "boxlite-shim";

/// Where the monitor binary is: `$BOXLITE_SHIM`, else next to the running executable (or
/// one level up, for test binaries in `target/*/deps`), else `PATH`.
pub fn shim_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BOXLITE_SHIM") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(SHIM), dir.parent()?.join(SHIM)]
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| find_binary(SHIM, "BOXLITE_SHIM"))
}

/// Start the monitor for a box that just started, recording it in `row` (the caller
/// saves). A monitor that cannot start is logged, not fatal.
pub(crate) fn launch(rt: &RuntimeInner, row: &mut BoxRow) {
    let Some(binary) = shim_binary() else {
        tracing::warn!(box_id = %row.id, "{SHIM} not found (set BOXLITE_SHIM); health checks are off and a VM that dies on its own is noticed only on the next operation");
        return;
    };
    let home = rt.layout.home();
    let home_s = home.display().to_string();
    let args = vec![
        "--home".into(),
        home.as_os_str().to_owned(),
        "--box".into(),
        row.id.clone().into(),
    ];
    let marker = [
        ("BOXLITE_HOME", home_s.as_str()),
        ("BOXLITE_BOX_ID", row.id.as_str()),
    ];
    match spawn_detached(
        &binary,
        &args,
        &rt.box_paths(&row.id).monitor_log(),
        &marker,
    ) {
        Ok((id, _child)) => row.status.monitor = Some(id),
        Err(e) => tracing::warn!(box_id = %row.id, error = %e, "starting the box monitor"),
    }
}

/// A pidfd for a process, only if it is still the very process `id` names.
fn pidfd(id: ProcessId) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, id.pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // The pid could have been recycled between reading the row and opening the pidfd.
    id.is_alive().then_some(fd)
}

/// Resolve when the process exits: through its pidfd when the kernel has them, else by
/// polling.
async fn exited(id: ProcessId) {
    if let Some(fd) = pidfd(id)
        // SAFETY: the AsyncFd owns the pidfd for its whole life; nothing else closes or
        // replaces the descriptor.
        && let Ok(afd) = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
    {
        let _ = afd.readable().await;
        return;
    }
    while id.is_alive() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One health probe: connect afresh and ping, within `timeout`.
async fn probe(rt: &RuntimeInner, row: &BoxRow, timeout: Duration) -> Result<(), String> {
    let addr = row.status.agent_addr(&row.id);
    let fut = async {
        let c = AgentClient::connect(addr).await?;
        c.ping().await
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(crate::error_chain(&e)),
        Err(_) => Err(format!(
            "no answer to ping within {}s (accelerator {})",
            timeout.as_secs(),
            rt.accel.accel
        )),
    }
}

/// Fold one probe result into the health record.
pub(crate) fn record_probe(h: &mut Health, result: Result<(), String>, retries: u32, now: u64) {
    h.checked_at = Some(now);
    match result {
        Ok(()) => {
            h.state = HealthState::Healthy;
            h.failing_streak = 0;
            h.last_error = None;
        }
        Err(e) => {
            h.failing_streak = h.failing_streak.saturating_add(1);
            h.last_error = Some(e);
            if h.failing_streak >= retries {
                h.state = HealthState::Unhealthy;
            }
        }
    }
}

/// The monitor's main loop, until the box stops or disappears.
pub async fn run(home: &Path, id: &str) -> Result<(), crate::Error> {
    let rt = crate::runtime::RuntimeInner::open_light(home)?;
    let Some(row) = rt.db.get(id)? else {
        return Ok(());
    };
    let Some(vmm) = row
        .status
        .vmm
        .filter(|_| row.status.state == BoxState::Running)
    else {
        return Ok(());
    };
    let hc = row.config.health;
    let mut health = row.status.health.clone();
    let vm_gone = exited(vmm);
    tokio::pin!(vm_gone);
    loop {
        let tick = async {
            if hc.interval_secs == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_secs(hc.interval_secs.into())).await;
        };
        tokio::select! {
            _ = &mut vm_gone => break,
            _ = tick => {}
        }
        let Some(row) = rt.db.get(id)? else {
            return Ok(());
        };
        if row.status.state != BoxState::Running || row.status.vmm != Some(vmm) {
            // Stopped or restarted by someone else; a restart has its own monitor.
            return Ok(());
        }
        let result = probe(&rt, &row, Duration::from_secs(hc.timeout_secs.into())).await;
        let was = health.state;
        record_probe(&mut health, result, hc.retries, now_secs());
        if health.state != was {
            tracing::info!(box_id = id, health = ?health.state, reason = health.last_error.as_deref().unwrap_or(""), "health changed");
        }
        rt.db.update_health(id, vmm.pid, &health)?;
    }
    on_vm_exit(&rt, id, vmm).await
}

/// The VM exited. Unless someone else is already handling it (a stop holds the lock and
/// will settle it), record why and apply auto-removal.
async fn on_vm_exit(rt: &RuntimeInner, id: &str, vmm: ProcessId) -> Result<(), crate::Error> {
    let path = rt.layout.lock_path(id);
    let lock = FileLock::acquire(&path, LockMode::Exclusive)
        .await
        .map_err(|source| crate::Error::Io {
            context: format!("locking {}", path.display()),
            source,
        })?;
    let Some(mut row) = rt.db.get(id)? else {
        return Ok(());
    };
    if row.status.vmm != Some(vmm) && row.status.state == BoxState::Running {
        // Already restarted by someone else.
        return Ok(());
    }
    litebox::reconcile_locked(rt, &mut row)?;
    if litebox::due_for_auto_remove(&row) {
        litebox::remove_locked(rt, &row, &lock)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_turns_unhealthy_only_after_the_configured_number_of_failures() {
        let mut h = Health::default();

        record_probe(&mut h, Err("timeout".into()), 3, 1);
        record_probe(&mut h, Err("timeout".into()), 3, 2);
        let after_two = h.state;
        record_probe(&mut h, Err("timeout".into()), 3, 3);

        assert_eq!(after_two, HealthState::Unknown);
        assert_eq!(h.state, HealthState::Unhealthy);
        assert_eq!(h.failing_streak, 3);
        assert_eq!(h.last_error.as_deref(), Some("timeout"));
    }

    #[test]
    fn one_successful_probe_makes_an_unhealthy_box_healthy() {
        let mut h = Health {
            state: HealthState::Unhealthy,
            failing_streak: 5,
            last_error: Some("timeout".into()),
            checked_at: None,
        };

        record_probe(&mut h, Ok(()), 3, 9);

        assert_eq!(h.state, HealthState::Healthy);
        assert_eq!(h.failing_streak, 0);
        assert!(h.last_error.is_none());
        assert_eq!(h.checked_at, Some(9));
    }
}
