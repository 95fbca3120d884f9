//! The per-box shim: a small process (`boxlite-shim`) that lives as long as the box's VM
//! and does what a daemon would otherwise do for it.
//!
//! - **The agent channel.** It owns the host end of the box's virtio-serial port and serves
//!   every host client on the box's socket ([`channel`]). Without it nobody reaches the
//!   agent, so a shim that is gone is started again by the next command that needs the box
//!   (reconciliation), and the new one opens a new session with the agent.
//! - **Health.** Every `interval` it pings the agent over a fresh connection. After
//!   `retries` consecutive failures the box is marked unhealthy, with the reason; one
//!   success marks it healthy again.
//! - **Death of the VM.** It watches the VMM through a pidfd. When the VM exits on its
//!   own (the guest powered off, the kernel panicked, QEMU was killed) it records the box
//!   as Stopped with the reason at once, and removes it if it was created with
//!   `auto_remove`, so `--rm` holds even when nobody is watching.
//!
//! - **Auto-pause.** A box created with `auto_pause_secs` is paused by its shim once it
//!   has been idle that long ([`idle`]); the shim exits with the VM.
//!
//! Its bookkeeping is not needed for correctness: reconciliation at runtime start and on
//! every operation reaches the same states, only later.

pub mod channel;
pub mod idle;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use boxlite_protocol::channel::host_link;

use crate::context::Home;
use crate::layout::{BoxPaths, SocketPaths};
use crate::litebox::{Locked, now_secs, reconcile_held};
use crate::model::{BoxRow, BoxState, Health, HealthState};
use crate::portal::PortalError;
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::ProcessId;

/// Resolve when the process exits.
async fn exited(id: ProcessId) {
    while !crate::util::kill::wait_exit(id, Duration::from_secs(3600)).await {}
}

/// One health probe: connect afresh and ping, within `timeout`.
async fn probe(row: &BoxRow, timeout: Duration) -> Result<(), String> {
    let socket = SocketPaths::for_box(&row.id).agent();
    match crate::portal::ping_agent(&socket, &row.id, timeout).await {
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

/// The shim's main loop, in the box's directory (its working directory): own the agent
/// port and serve clients until the VM exits; unless `channel_only` (an image build, which
/// has no row), also check the box's health and record the VM's end.
pub async fn run(home_dir: &Path, id: &str, channel_only: bool) -> Result<(), crate::Error> {
    let io_err = |context: String| move |source| crate::Error::Io { context, source };
    let Some(_one) = FileLock::try_acquire(Path::new(channel::SHIM_LOCK), LockMode::Exclusive)
        .map_err(io_err(format!("locking {}", channel::SHIM_LOCK)))?
    else {
        tracing::info!(box_id = id, "another shim serves this box");
        return Ok(());
    };
    let port = channel::connect_port(Path::new(BoxPaths::AGENT_PORT), channel::PORT_CONNECT)
        .await
        .map_err(io_err("reaching the VM's agent port".into()))?;
    let (link, driver) = host_link();
    let (r, w) = port.into_split();
    let link_done = driver.run(r, w);
    let gate = Arc::new(channel::Gate::default());
    let serve = channel::serve_clients(
        link.clone(),
        SocketPaths::for_box(id),
        home_dir.to_path_buf(),
        gate.clone(),
    );
    let channel = async {
        tokio::select! {
            r = link_done => tracing::info!(result = ?r, "the agent port closed"),
            r = serve => tracing::error!(result = ?r, "serving clients stopped"),
        }
    };
    if channel_only {
        channel.await;
        return Ok(());
    }
    // Health checks end when the box stops or is restarted by someone else; the channel
    // is served until the VM's port closes either way.
    let settled = std::cell::Cell::new(false);
    let pausing = std::cell::Cell::new(false);
    let checks = async {
        match monitor(home_dir, id, &gate, &pausing).await {
            // It recorded the VM's end, or someone else stopped or restarted the box.
            Ok(Ended::Settled) => settled.set(true),
            // It paused the box: the VM is gone, and so is the shim's work.
            Ok(Ended::Paused) => {
                settled.set(true);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    box_id = id,
                    "health checks stopped: {}",
                    crate::util::error_chain(&e)
                );
            }
        }
        std::future::pending::<()>().await;
    };
    let mut checks = Box::pin(checks);
    // `checks` completes only after an auto-pause: otherwise this waits for the VM's
    // port to close. An auto-pause ends the VM (closing the port) halfway through; it is
    // seen to its end.
    tokio::select! {
        () = &mut checks => {}
        () = channel => {
            while pausing.get() {
                tokio::select! {
                    () = &mut checks => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        }
    }
    // Dropped now, not at the end: checks that saw the VM die at the moment its port
    // closed may be recording its end, holding the box's lock; abandoned here, they
    // release it, and the end is recorded below under the same lock. Kept alive, they
    // would never run again and the wait for the lock below would never end.
    drop(checks);
    if settled.get() {
        return Ok(());
    }
    // The port closes when QEMU exits: record the VM's end as the health loop would have.
    let home = Home::open(home_dir)?;
    let bid = id.to_string();
    match home
        .db(move |db| db.get(&bid))
        .await?
        .and_then(|row| row.status.vmm)
    {
        Some(vmm) => {
            crate::util::kill::wait_exit(vmm, Duration::from_secs(10)).await;
            on_vm_exit(&home, id, vmm).await
        }
        None => Ok(()),
    }
}

/// How the shim's checks ended.
enum Ended {
    /// The VM's end is recorded, or the box is someone else's concern now.
    Settled,
    /// The shim paused the box.
    Paused,
}

/// Health checks, auto-pause and the VM's death, until the box stops or disappears.
/// `pausing` is set while an auto-pause runs.
async fn monitor(
    home: &Path,
    id: &str,
    gate: &Arc<channel::Gate>,
    pausing: &std::cell::Cell<bool>,
) -> Result<Ended, crate::Error> {
    let home = Home::open(home)?;
    let get = |home: &Home| {
        let id = id.to_string();
        let home = home.clone();
        async move { home.db(move |db| db.get(&id)).await }
    };
    let Some(row) = get(&home).await? else {
        return Ok(Ended::Settled);
    };
    // The shim starts while the box is still Starting; its VMM is recorded by then.
    let Some(vmm) = row
        .status
        .vmm
        .filter(|_| matches!(row.status.state(), BoxState::Running | BoxState::Starting))
    else {
        return Ok(Ended::Settled);
    };
    let hc = row.config.health;
    let mut health = row.status.health.clone();
    let vm_gone = exited(vmm);
    tokio::pin!(vm_gone);
    let health_every = (hc.interval_secs > 0).then(|| Duration::from_secs(hc.interval_secs.into()));
    let mut next_health = health_every.map(|d| tokio::time::Instant::now() + d);
    let mut auto_pause = (row.config.auto_pause_secs > 0)
        .then(|| idle::AutoPause::new(Duration::from_secs(row.config.auto_pause_secs.into())));
    let mut next_idle = auto_pause
        .as_ref()
        .map(|a| tokio::time::Instant::now() + a.interval);
    loop {
        let due = |at: Option<tokio::time::Instant>| async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        let health_due = tokio::select! {
            _ = &mut vm_gone => break,
            () = due(next_health) => true,
            () = due(next_idle) => false,
        };
        let Some(row) = get(&home).await? else {
            return Ok(Ended::Settled);
        };
        if row.status.vmm != Some(vmm)
            || !matches!(row.status.state(), BoxState::Running | BoxState::Starting)
        {
            // Stopped, paused or restarted by someone else; a restart has its own shim.
            return Ok(Ended::Settled);
        }
        if !health_due {
            let Some(ap) = auto_pause.as_mut() else {
                next_idle = None;
                continue;
            };
            if row.status.state() == BoxState::Starting {
                next_idle = Some(tokio::time::Instant::now() + idle::MAX_RECHECK);
                continue;
            }
            pausing.set(true);
            let checked = ap.check(&home, id, vmm, gate).await;
            pausing.set(false);
            match checked {
                Ok(idle::Checked::Paused) => return Ok(Ended::Paused),
                Ok(idle::Checked::Again(d)) => next_idle = Some(tokio::time::Instant::now() + d),
                Err(e) => {
                    tracing::warn!(box_id = id, error = %crate::util::error_chain(&e), "auto-pause check failed");
                    next_idle = Some(tokio::time::Instant::now() + idle::MAX_RECHECK);
                }
            }
            continue;
        }
        next_health = health_every.map(|d| tokio::time::Instant::now() + d);
        if row.status.state() == BoxState::Starting {
            continue;
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
    on_vm_exit(&home, id, vmm).await?;
    Ok(Ended::Settled)
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
