//! Bringing a box's row in line with the processes that really exist.
//!
//! Processes die behind the runtime's back: a CLI killed mid-start, a VMM killed by hand,
//! a host reboot. The row then describes something that is no longer true. What to do
//! about it is a pure function, [`decide`], of what is observed ([`Observed`]: the
//! recorded state, whether the box's lock is free, and which of its recorded processes
//! still run); the code around it only gathers the observation and applies the plan.
//!
//! A box whose lock is held is left alone: its holder is working on it, and whatever
//! looks odd (a box Starting with half its helpers up) is that work in progress. A free
//! lock with a row in `Creating`, `Starting` or `Stopping` means the process doing that
//! died.

use std::time::Duration;

use crate::context::Home;
use crate::layout::SocketPaths;
use crate::model::{BoxRow, BoxState, Health};

/// What reconciliation sees of one box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    pub state: BoxState,
    /// Nobody else holds the box's lock (we could take it, or hold it).
    pub lock_free: bool,
    pub vmm_alive: bool,
    /// Any recorded helper other than the VMM and the monitor still runs.
    pub helpers_alive: bool,
    /// A recorded helper other than the VMM and the monitor (a
    /// virtiofsd) is gone: the box cannot work without it.
    pub helper_died: bool,
    pub monitor_alive: bool,
    /// A monitor binary exists, so a running box can have one.
    pub monitor_available: bool,
    /// The box was created to be removed once it stops.
    pub auto_remove: bool,
    /// A complete saved state of a pause is in the box's directory.
    pub saved_state: bool,
}

/// Why reconciliation changed a box, as its `last_error` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    CreationInterrupted,
    StartInterrupted,
    StopInterrupted,
    VmExited,
    HelperExited,
    StrayProcesses,
    /// A pause was interrupted after its state was saved: the box is paused.
    PauseInterrupted,
    /// A pause was interrupted before its state was saved: the VM carries on.
    PauseAbandoned,
    /// A resume was interrupted before the guest ran again: the box is still paused.
    ResumeInterrupted,
    /// A paused box's saved state is missing or incomplete.
    SavedStateLost,
    /// A pause was interrupted before the state was saved, and the VM could not be run
    /// again: the box was stopped.
    PauseUnrecoverable,
}

/// What to do about one box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// End every recorded process (and its descendants) and remove the sockets.
    pub kill: bool,
    /// The state to record, when it changes.
    pub to: Option<BoxState>,
    pub why: Option<Why>,
    /// Start a monitor for a running box that lost its own.
    pub relaunch_monitor: bool,
    /// Remove the box afterwards (it was created with `auto_remove` and is at rest).
    pub remove: bool,
    /// Run the VM's vCPUs again and thaw its workload (a pause that did not finish),
    /// before the new state is recorded. If that fails, the box is stopped instead.
    pub continue_vm: bool,
}

impl Plan {
    pub const LEAVE: Plan = Plan {
        kill: false,
        to: None,
        why: None,
        relaunch_monitor: false,
        remove: false,
        continue_vm: false,
    };

    fn settle(to: Option<BoxState>, why: Why) -> Plan {
        Plan {
            kill: true,
            to,
            why: Some(why),
            ..Plan::LEAVE
        }
    }

    pub fn is_leave(&self) -> bool {
        *self == Plan::LEAVE
    }
}

/// The decision. Pure: see the module documentation.
pub(crate) fn decide(o: Observed) -> Plan {
    use BoxState::*;
    if !o.lock_free {
        return Plan::LEAVE;
    }
    let any_alive = o.vmm_alive || o.helpers_alive || o.monitor_alive;
    let mut plan = match o.state {
        Creating => Plan::settle(Some(Failed), Why::CreationInterrupted),
        // A resume that died before the guest ran: its saved state still holds.
        Starting if o.saved_state => Plan::settle(Some(Paused), Why::ResumeInterrupted),
        Starting => Plan::settle(Some(Failed), Why::StartInterrupted),
        // The state was saved in full; the VM has been stopped since: finish the pause.
        Pausing if o.saved_state => Plan::settle(Some(Paused), Why::PauseInterrupted),
        Pausing if o.vmm_alive => Plan {
            to: Some(Running),
            why: Some(Why::PauseAbandoned),
            continue_vm: true,
            ..Plan::LEAVE
        },
        Pausing => Plan::settle(Some(Stopped), Why::VmExited),
        Paused if any_alive => Plan::settle(None, Why::StrayProcesses),
        Paused if !o.saved_state => Plan {
            to: Some(Stopped),
            why: Some(Why::SavedStateLost),
            ..Plan::LEAVE
        },
        Paused => Plan::LEAVE,
        Stopping => Plan::settle(Some(Stopped), Why::StopInterrupted),
        Running if !o.vmm_alive => Plan::settle(Some(Stopped), Why::VmExited),
        Running if o.helper_died => Plan::settle(Some(Stopped), Why::HelperExited),
        Running if !o.monitor_alive && o.monitor_available => Plan {
            relaunch_monitor: true,
            ..Plan::LEAVE
        },
        Running => Plan::LEAVE,
        // At rest, nothing of the box should run; something did, of an operation that
        // died without recording its state.
        Configured | Stopped if any_alive => Plan::settle(Some(Failed), Why::StrayProcesses),
        Failed if any_alive => Plan::settle(None, Why::StrayProcesses),
        Configured | Stopped | Failed => Plan::LEAVE,
    };
    let at_rest = matches!(plan.to.unwrap_or(o.state), Stopped | Failed);
    plan.remove = o.auto_remove && at_rest;
    plan
}

/// Observe a box now. `lock_free` is the caller's knowledge of the lock.
pub(crate) fn observe(home: &Home, row: &BoxRow, lock_free: bool) -> Observed {
    let st = &row.status;
    Observed {
        saved_state: matches!(
            st.state(),
            BoxState::Starting | BoxState::Pausing | BoxState::Paused
        ) && super::snapshot::saved_state_complete(
            &home.box_paths(&row.id).paused_dir(),
        ),
        state: st.state(),
        lock_free,
        vmm_alive: st.vmm_alive(),
        helpers_alive: st
            .virtiofsd
            .iter()
            .chain(st.legacy_helpers.iter())
            .any(|p| p.is_alive()),
        helper_died: st
            .virtiofsd
            .iter()
            .chain(st.legacy_helpers.iter())
            .any(|p| !p.is_alive()),
        monitor_alive: st.monitor.is_some_and(|m| m.is_alive()),
        monitor_available: crate::context::shim_binary().is_some(),
        auto_remove: row.config.auto_remove,
    }
}

/// Whether a box looks out of line with reality or due for removal, judged without its
/// lock (cheap: a few `/proc` reads).
pub(crate) fn needs_reconcile(home: &Home, row: &BoxRow) -> bool {
    !decide(observe(home, row, true)).is_leave()
}

impl Why {
    fn text(self, row: &BoxRow, console_hint: impl FnOnce() -> String) -> String {
        match self {
            Why::CreationInterrupted => {
                "creation was interrupted: the creating process exited".into()
            }
            Why::StartInterrupted => "a start was interrupted; the VM was terminated".into(),
            Why::StopInterrupted => "a stop was interrupted; the VM was terminated".into(),
            Why::VmExited => format!(
                "the VM process (pid {}) exited while the box was running{}",
                row.status.vmm.map_or(0, |p| p.pid),
                console_hint()
            ),
            Why::HelperExited => {
                "a helper of the box (a virtiofsd) exited while it was running; the VM was terminated".into()
            }
            Why::StrayProcesses => {
                "processes of an interrupted operation were still running; they were terminated"
                    .into()
            }
            Why::PauseInterrupted => {
                "a pause was interrupted after the box's state was saved; the box is paused".into()
            }
            Why::PauseAbandoned => {
                "a pause was interrupted before the box's state was saved; the box carries on"
                    .into()
            }
            Why::ResumeInterrupted => {
                "a resume was interrupted before the guest ran again; the box is still paused"
                    .into()
            }
            Why::PauseUnrecoverable => {
                "a pause was interrupted before the box's state was saved, and its VM could not be continued; the box was stopped"
                    .into()
            }
            Why::SavedStateLost => format!(
                "the saved state of the paused box ({}) is missing or incomplete; the box starts afresh",
                row.id
            ),
        }
    }
}

/// Apply a plan's changes to the row, ending processes as it says, and save the row if
/// it changed. The caller holds the box's exclusive lock, and does the plan's removal and
/// monitor launch itself. Blocking (kills wait, SQLite): run it off the async runtime.
pub(crate) fn apply_blocking(
    home: &Home,
    row: &mut BoxRow,
    plan: Plan,
) -> Result<(), crate::Error> {
    // Said before the processes are ended and forgotten: the reason names the VMM.
    let why = plan.why.map(|why| {
        let paths = home.box_paths(&row.id);
        why.text(row, || super::console_hint_at(&paths.console_log()))
    });
    if plan.kill {
        settle_blocking(home, row);
    }
    if row.status.state() == BoxState::Pausing {
        // A pause or a live snapshot died halfway: what it was writing goes.
        super::snapshot::sweep_partials(&home.box_paths(&row.id).dir);
    }
    if let Some(text) = why {
        row.status.last_error = Some(text);
    }
    if let Some(to) = plan.to {
        row.status
            .transition(to)
            .map_err(|e| super::BoxError::transition(&row.id, e))?;
    }
    if plan.kill || plan.to.is_some() || plan.why.is_some() {
        tracing::info!(box_id = %row.id, to = %row.status.state(),
            reason = row.status.last_error.as_deref().unwrap_or(""), "reconciled box state");
        home.db.update_status(&row.id, &row.status)?;
    }
    Ok(())
}

/// Reconcile a row whose exclusive lock `lock` is held, on the calling thread: decide,
/// apply, and remove the box (unlinking its lock file) when the plan says so. Returns
/// the plan and whether the box is gone. Blocking.
pub(crate) fn reconcile_blocking(
    home: &Home,
    row: &mut BoxRow,
    lock: &crate::util::lock::FileLock,
) -> Result<(Plan, bool), crate::Error> {
    let plan = decide(observe(home, row, true));
    // Continuing a VM talks to QEMU and the agent: the async path does it
    // ([`super::reconcile_held`]); this one leaves the box to it.
    if plan.is_leave() || plan.continue_vm {
        return Ok((Plan::LEAVE, false));
    }
    apply_blocking(home, row, plan)?;
    if plan.remove {
        remove_blocking(home, row)?;
        lock.remove_file();
    }
    Ok((plan, plan.remove))
}

/// End every recorded process of the box and its descendants (the one kill path), remove
/// its sockets, and record that nothing of it runs. Shared by every way a box stops.
/// Blocking.
pub(crate) fn settle_blocking(home: &Home, row: &mut BoxRow) {
    let st = &mut row.status;
    let survivors = crate::util::kill::terminate_blocking(&st.processes(), Duration::ZERO);
    st.keep_processes(&survivors);
    SocketPaths::for_box(&row.id).remove_if_owned(home.layout.home());
    if let Ok(h) = &crate::jailer::host().cgroups {
        // A helper just killed leaves its cgroup as it finishes dying.
        for _ in 0..100 {
            if crate::jailer::cgroup::remove(h, &row.id) {
                break;
            }
            crate::util::blocking::sleep(Duration::from_millis(10));
        }
    }
    st.stopped_at = Some(super::now_secs());
    // Health describes a running agent; a stopped box has none.
    st.health = Health::default();
}

/// Delete a box's files and row. The caller holds its exclusive lock, has made sure no
/// process of it remains, and unlinks the lock file afterwards
/// (`FileLock::remove_file`). Files go first, so an interrupted removal leaves a row
/// that a second removal finishes. Blocking.
pub(crate) fn remove_blocking(home: &Home, row: &BoxRow) -> Result<(), crate::Error> {
    let dir = home.box_paths(&row.id).dir;
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(crate::Error::Io {
                context: format!("removing {}", dir.display()),
                source,
            });
        }
    }
    SocketPaths::for_box(&row.id).remove_if_owned(home.layout.home());
    crate::volumes::remove_anonymous(&home.layout, &row.config.volumes)?;
    home.db.delete(&row.id)?;
    tracing::info!(box_id = %row.id, "box removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ALL_STATES;
    use BoxState::*;

    /// Every observation there is.
    fn all() -> Vec<Observed> {
        let mut v = Vec::new();
        for state in ALL_STATES {
            for bits in 0..256u32 {
                let b = |i: u32| bits & (1 << i) != 0;
                v.push(Observed {
                    state,
                    lock_free: b(0),
                    vmm_alive: b(1),
                    helpers_alive: b(2),
                    helper_died: b(6),
                    monitor_alive: b(3),
                    monitor_available: b(4),
                    auto_remove: b(5),
                    saved_state: b(7),
                });
            }
        }
        v
    }

    #[test]
    fn a_box_someone_is_working_on_is_never_touched() {
        for o in all().into_iter().filter(|o| !o.lock_free) {
            assert_eq!(decide(o), Plan::LEAVE, "{o:?}");
        }
    }

    #[test]
    fn every_plan_moves_along_the_lifecycle_and_ends_at_rest_or_running() {
        for o in all() {
            let p = decide(o);
            if let Some(to) = p.to {
                assert!(o.state.can_transition(to), "{o:?} -> {to}");
            }
            let end = p.to.unwrap_or(o.state);
            if o.lock_free {
                assert!(
                    matches!(end, Configured | Running | Stopped | Paused | Failed),
                    "{o:?} ends {end}"
                );
            }
            // Anything that changes the state says why.
            assert_eq!(p.to.is_some() || p.kill, p.why.is_some(), "{o:?}");
        }
    }

    #[test]
    fn interrupted_operations_are_finished_whatever_still_runs() {
        for o in all().into_iter().filter(|o| o.lock_free) {
            let p = decide(o);
            match o.state {
                Creating => assert_eq!(
                    (p.to, p.why),
                    (Some(Failed), Some(Why::CreationInterrupted))
                ),
                Starting if o.saved_state => {
                    assert!(p.kill, "{o:?}");
                    assert_eq!((p.to, p.why), (Some(Paused), Some(Why::ResumeInterrupted)));
                }
                Starting => {
                    assert!(p.kill, "{o:?}");
                    assert_eq!((p.to, p.why), (Some(Failed), Some(Why::StartInterrupted)));
                }
                Stopping => {
                    assert!(p.kill, "{o:?}");
                    assert_eq!((p.to, p.why), (Some(Stopped), Some(Why::StopInterrupted)));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_running_box_is_stopped_exactly_when_its_vmm_or_a_helper_is_gone() {
        for o in all()
            .into_iter()
            .filter(|o| o.lock_free && o.state == Running)
        {
            let p = decide(o);
            let broken = !o.vmm_alive || o.helper_died;
            assert_eq!(p.to == Some(Stopped), broken, "{o:?}");
            assert_eq!(p.kill, broken, "{o:?}");
            if broken {
                let why = if o.vmm_alive {
                    Why::HelperExited
                } else {
                    Why::VmExited
                };
                assert_eq!(p.why, Some(why), "{o:?}");
            }
            assert_eq!(
                p.relaunch_monitor,
                !broken && !o.monitor_alive && o.monitor_available,
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_box_at_rest_is_left_alone_unless_something_of_it_still_runs() {
        for o in all()
            .into_iter()
            .filter(|o| o.lock_free && matches!(o.state, Configured | Stopped | Failed))
        {
            let p = decide(o);
            let any = o.vmm_alive || o.helpers_alive || o.monitor_alive;
            assert_eq!(p.kill, any, "{o:?}");
            assert!(!p.relaunch_monitor, "{o:?}");
            if any {
                assert_eq!(p.why, Some(Why::StrayProcesses), "{o:?}");
            }
        }
    }

    #[test]
    fn an_interrupted_pause_ends_paused_when_saved_running_when_the_vm_lives_else_stopped() {
        for o in all()
            .into_iter()
            .filter(|o| o.lock_free && o.state == Pausing)
        {
            let p = decide(o);
            let (to, kill, cont) = if o.saved_state {
                (Paused, true, false)
            } else if o.vmm_alive {
                (Running, false, true)
            } else {
                (Stopped, true, false)
            };
            assert_eq!(
                (p.to, p.kill, p.continue_vm),
                (Some(to), kill, cont),
                "{o:?}"
            );
        }
    }

    #[test]
    fn a_paused_box_keeps_its_state_and_loses_only_stray_processes() {
        for o in all()
            .into_iter()
            .filter(|o| o.lock_free && o.state == Paused)
        {
            let p = decide(o);
            let any = o.vmm_alive || o.helpers_alive || o.monitor_alive;
            assert_eq!(p.kill, any, "{o:?}");
            if any {
                assert_eq!(p.to, None, "{o:?}");
            } else if !o.saved_state {
                assert_eq!((p.to, p.why), (Some(Stopped), Some(Why::SavedStateLost)));
            } else {
                assert_eq!(p, Plan::LEAVE, "{o:?}");
            }
        }
    }

    #[test]
    fn auto_remove_applies_once_the_box_is_at_rest_and_only_then() {
        for o in all().into_iter().filter(|o| o.lock_free) {
            let p = decide(o);
            let end = p.to.unwrap_or(o.state);
            assert_eq!(
                p.remove,
                o.auto_remove && matches!(end, Stopped | Failed),
                "{o:?}"
            );
        }
    }
}
