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

use std::path::Path;
use std::time::Duration;

use crate::context::Home;
use crate::litebox::{Locked, now_secs, reconcile_held};
use crate::model::{BoxRow, BoxState, Health, HealthState};
use crate::portal::PortalError;
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::ProcessId;
use crate::vmm::vsock::AgentAddr;

/// Resolve when the process exits.
async fn exited(id: ProcessId) {
    while !crate::util::kill::wait_exit(id, Duration::from_secs(3600)).await {}
}

/// One health probe: connect afresh and ping, within `timeout`.
async fn probe(row: &BoxRow, timeout: Duration) -> Result<(), String> {
    let addr = AgentAddr::of_box(&row.status, &row.id);
    match crate::portal::ping_agent(addr, &row.id, timeout).await {
        Ok(()) => Ok(()),
        Err(e @ PortalError::Connect { .. } | e @ PortalError::Rpc { .. }) => {
            Err(crate::util::error_chain(&e))
        }
        Err(PortalError::Timeout { .. }) => Err(format!(
            "no answer to ping within {}s{}",
            timeout.as_secs(),
            row.status
                .accel
                .map(|a| format!(" (accelerator {a})"))
                .unwrap_or_default()
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
    let home = Home::open(home)?;
    let get = |home: &Home| {
        let id = id.to_string();
        let home = home.clone();
        async move { home.db(move |db| db.get(&id)).await }
    };
    let Some(row) = get(&home).await? else {
        return Ok(());
    };
    let Some(vmm) = row
        .status
        .vmm
        .filter(|_| row.status.state() == BoxState::Running)
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
        let Some(row) = get(&home).await? else {
            return Ok(());
        };
        if row.status.state() != BoxState::Running || row.status.vmm != Some(vmm) {
            // Stopped or restarted by someone else; a restart has its own monitor.
            return Ok(());
        }
        let result = probe(&row, Duration::from_secs(hc.timeout_secs.into())).await;
        let was = health.state;
        record_probe(&mut health, result, hc.retries, now_secs());
        if health.state != was {
            tracing::info!(box_id = id, health = ?health.state, reason = health.last_error.as_deref().unwrap_or(""), "health changed");
        }
        let (bid, h) = (id.to_string(), health.clone());
        home.db(move |db| db.update_health(&bid, vmm.pid, &h))
            .await?;
    }
    on_vm_exit(&home, id, vmm).await
}

/// The VM exited. Unless someone else is already handling it (a stop holds the lock and
/// will settle it), record why and apply auto-removal, through the same reconciliation
/// every other process uses.
async fn on_vm_exit(home: &Home, id: &str, vmm: ProcessId) -> Result<(), crate::Error> {
    let path = home.layout.lock_path(id);
    let lock = FileLock::acquire(&path, LockMode::Exclusive)
        .await
        .map_err(|source| crate::Error::Io {
            context: format!("locking {}", path.display()),
            source,
        })?;
    let bid = id.to_string();
    let Some(row) = home.db(move |db| db.get(&bid)).await? else {
        return Ok(());
    };
    if row.status.vmm != Some(vmm) && row.status.state() == BoxState::Running {
        // Already restarted by someone else.
        return Ok(());
    }
    reconcile_held(home, Locked::new(row, lock)).await?;
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
