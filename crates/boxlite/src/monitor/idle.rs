//! Auto-pause: the shim pauses its box once it has been idle for the box's
//! `auto_pause_secs`.
//!
//! Idle means all of these, as the agent reports them in a `Ping` (which is not activity
//! itself, so health checks and monitoring never keep a box awake):
//! - no call in progress but Ping and Stats (an attached output stream, a copy, a stdin
//!   writer count as calls), and none ended within the interval;
//! - no execution whose process still runs, and none ended within the interval;
//! - the guest's CPUs were busy less than [`BUSY_FRACTION`] of one CPU between two
//!   samples at least [`SAMPLE_GAP`] apart (a workload computing on its own, say a
//!   daemon started in the background, is not idle);
//! - no client bytes went through the shim in the last [`CLIENT_QUIET`] (a request on its
//!   way to the agent).
//!
//! The pause itself runs under the box's lock with the shim's [`Gate`] closed: a client
//! that sends anything from then on abandons the pause before the state is saved, or, once
//! it is saved, finds its connection closed with nothing delivered, and its next call
//! resumes the box.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Home;
use crate::litebox::Locked;
use crate::litebox::snapshot::{PauseBy, pause_held, saved_meta_of};
use crate::model::BoxState;
use crate::portal::Activity;
use crate::util::lock::{FileLock, LockMode};
use crate::util::process::ProcessId;

use super::channel::Gate;

/// Busy guest CPU time, as a fraction of one CPU, above which the guest is working.
pub const BUSY_FRACTION: f64 = 0.05;
/// The least time between the two CPU samples compared.
pub const SAMPLE_GAP: Duration = Duration::from_secs(2);
/// How long no client bytes may have gone through before a pause.
pub const CLIENT_QUIET: Duration = Duration::from_secs(2);
/// The longest wait between two checks of a box that is not idle.
pub const MAX_RECHECK: Duration = Duration::from_secs(30);
/// The longest wait for the agent's activity report. The guest is untrusted: one that
/// does not answer is not idle, and the box's lock and the gate are never held on it.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A sample of the guest's busy CPU time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSample {
    pub uptime_secs: f64,
    pub busy_secs: f64,
}

/// What to do after a look at the box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Pause it now.
    Pause,
    /// Look again after this long.
    CheckIn(Duration),
}

/// How often to look at a box that is busy: half its interval, within 1-30 s.
fn recheck(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_secs(1), MAX_RECHECK)
}

/// Decide from one report `a`, the previous CPU sample `prev` (updated here) and how
/// long ago client bytes last went through the shim (`None`: never).
pub fn decide(
    interval: Duration,
    a: &Activity,
    prev: &mut Option<CpuSample>,
    client_quiet: Option<Duration>,
) -> Next {
    let now = CpuSample {
        uptime_secs: a.uptime_secs,
        busy_secs: a.cpu_busy_secs,
    };
    if a.calls_in_progress > 0 || a.running_executions > 0 {
        *prev = None;
        return Next::CheckIn(recheck(interval));
    }
    let idle = Duration::try_from_secs_f64(a.idle_secs.max(0.0)).unwrap_or(Duration::MAX);
    if idle < interval {
        *prev = None;
        return Next::CheckIn((interval - idle).max(Duration::from_millis(200)));
    }
    if let Some(q) = client_quiet
        && q < CLIENT_QUIET
    {
        return Next::CheckIn(CLIENT_QUIET - q + Duration::from_millis(100));
    }
    let Some(p) = prev.filter(|p| now.uptime_secs - p.uptime_secs >= SAMPLE_GAP.as_secs_f64())
    else {
        if prev.is_none_or(|p| now.uptime_secs < p.uptime_secs) {
            *prev = Some(now);
        }
        return Next::CheckIn(SAMPLE_GAP);
    };
    let busy = (now.busy_secs - p.busy_secs) / (now.uptime_secs - p.uptime_secs);
    *prev = Some(now);
    if busy > BUSY_FRACTION {
        return Next::CheckIn(recheck(interval));
    }
    Next::Pause
}

/// The last look, with the gate closed, just before a pause: nothing in progress, idle
/// long enough, no client bytes lately (the CPU was sampled just before).
pub fn still_idle(interval: Duration, a: &Activity, client_quiet: Option<Duration>) -> bool {
    a.calls_in_progress == 0
        && a.running_executions == 0
        && a.idle_secs >= interval.as_secs_f64()
        && client_quiet.is_none_or(|q| q >= CLIENT_QUIET)
}

/// The state of the shim's auto-pause between checks.
pub struct AutoPause {
    pub interval: Duration,
    prev: Option<CpuSample>,
}

/// What one check did.
pub enum Checked {
    /// The box is paused; the shim's work is done.
    Paused,
    /// Check again after this long.
    Again(Duration),
}

impl AutoPause {
    pub fn new(interval: Duration) -> Self {
        AutoPause {
            interval,
            prev: None,
        }
    }

    /// Look at box `id` (whose VMM is `vmm`, served by this shim) and pause it if it is
    /// idle.
    pub async fn check(
        &mut self,
        home: &Home,
        id: &str,
        vmm: ProcessId,
        gate: &Arc<Gate>,
    ) -> Result<Checked, crate::Error> {
        let again = Checked::Again(recheck(self.interval));
        let sockets = crate::layout::SocketPaths::for_box(id);
        let client = crate::portal::AgentClient::connect(&sockets.agent(), id).await?;
        let a = match tokio::time::timeout(ASK_TIMEOUT, client.activity()).await {
            Ok(Ok(Some(a))) => a,
            // An agent too old to say, or one that does not answer: not paused now.
            Ok(Ok(None)) | Err(_) => return Ok(Checked::Again(MAX_RECHECK)),
            Ok(Err(e)) => return Err(e.into()),
        };
        match decide(self.interval, &a, &mut self.prev, gate.quiet_for()) {
            Next::CheckIn(d) => return Ok(Checked::Again(d)),
            Next::Pause => {}
        }
        // Someone working on the box (a stop, a snapshot) holds its lock: not now.
        let path = home.layout.lock_path(id);
        let lock = {
            let p = path.clone();
            crate::util::blocking::run(move || FileLock::try_acquire(&p, LockMode::Exclusive))
                .await
                .map_err(|source| crate::Error::Io {
                    context: format!("locking {}", path.display()),
                    source,
                })?
        };
        let Some(lock) = lock else {
            return Ok(again);
        };
        let bid = id.to_string();
        let Some(row) = home.db(move |db| db.get(&bid)).await? else {
            return Ok(again);
        };
        if row.status.state() != BoxState::Running
            || row.status.vmm != Some(vmm)
            || row.config.auto_pause_secs == 0
            || !row.config.volumes.is_empty()
        {
            return Ok(again);
        }
        let Some(build) = row.status.build.clone() else {
            tracing::warn!(
                box_id = id,
                "no record of what the VM runs; auto-pause is off"
            );
            return Ok(Checked::Again(MAX_RECHECK));
        };
        let me = ProcessId::of(i32::try_from(std::process::id()).unwrap_or(i32::MAX)).map_err(
            |source| crate::Error::Io {
                context: "reading this process's start time".into(),
                source,
            },
        )?;
        // From here on no client byte reaches the agent; look once more.
        gate.close();
        let still = tokio::time::timeout(ASK_TIMEOUT, client.activity())
            .await
            .map(|r| r.map(|a| a.is_some_and(|a| still_idle(self.interval, &a, gate.quiet_for()))));
        if !matches!(still, Ok(Ok(true))) || gate.held_any() {
            gate.open();
            return Ok(again);
        }
        let meta = saved_meta_of(&row, build);
        let mut l = Locked::new(row, lock);
        let cancelled = {
            let g = gate.clone();
            move || g.held_any()
        };
        let by = PauseBy::Shim {
            me,
            cancelled: &cancelled,
        };
        match pause_held(home, &mut l, &client, meta, &by).await {
            Ok(()) => Ok(Checked::Paused),
            Err(e) => {
                gate.open();
                self.prev = None;
                if matches!(
                    e,
                    crate::Error::Snapshot(
                        crate::litebox::snapshot::SnapshotError::ClientArrived { .. }
                    )
                ) {
                    Ok(again)
                } else if l.state() == BoxState::Running {
                    tracing::warn!(box_id = id, error = %crate::util::error_chain(&e), "auto-pause failed; trying again later");
                    Ok(Checked::Again(MAX_RECHECK))
                } else {
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(calls: u32, running: u32, idle: f64, up: f64, busy: f64) -> Activity {
        Activity {
            calls_in_progress: calls,
            running_executions: running,
            idle_secs: idle,
            cpu_busy_secs: busy,
            uptime_secs: up,
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_running_execution_or_call_is_never_idle_however_long_ago_the_last_call() {
        let mut prev = Some(CpuSample {
            uptime_secs: 0.0,
            busy_secs: 0.0,
        });
        let exec = decide(MIN, &report(0, 1, 0.0, 500.0, 0.0), &mut prev, None);
        let call = decide(MIN, &report(2, 0, 0.0, 500.0, 0.0), &mut prev, None);

        assert_eq!(exec, Next::CheckIn(Duration::from_secs(30)));
        assert_eq!(call, Next::CheckIn(Duration::from_secs(30)));
    }

    #[test]
    fn a_box_idle_for_less_than_its_interval_is_checked_when_it_would_reach_it() {
        let mut prev = None;

        let next = decide(MIN, &report(0, 0, 45.0, 100.0, 1.0), &mut prev, None);

        assert_eq!(next, Next::CheckIn(Duration::from_secs(15)));
        assert_eq!(prev, None);
    }

    #[test]
    fn an_idle_box_is_paused_only_after_two_cpu_samples_show_the_guest_quiet() {
        let mut prev = None;
        let first = decide(MIN, &report(0, 0, 61.0, 100.0, 1.0), &mut prev, None);
        let too_soon = decide(MIN, &report(0, 0, 61.5, 100.5, 1.0), &mut prev, None);
        let quiet = decide(MIN, &report(0, 0, 64.0, 103.0, 1.01), &mut prev, None);

        assert_eq!(first, Next::CheckIn(SAMPLE_GAP));
        assert_eq!(too_soon, Next::CheckIn(SAMPLE_GAP));
        assert_eq!(quiet, Next::Pause);
    }

    #[test]
    fn a_guest_computing_on_its_own_is_not_idle() {
        let mut prev = Some(CpuSample {
            uptime_secs: 100.0,
            busy_secs: 1.0,
        });

        // Half a CPU over 4 s, with no call and no execution.
        let next = decide(MIN, &report(0, 0, 90.0, 104.0, 3.0), &mut prev, None);

        assert_eq!(next, Next::CheckIn(Duration::from_secs(30)));
    }

    #[test]
    fn client_bytes_in_the_last_moments_put_the_pause_off() {
        let mut prev = Some(CpuSample {
            uptime_secs: 100.0,
            busy_secs: 1.0,
        });

        let next = decide(
            MIN,
            &report(0, 0, 90.0, 104.0, 1.0),
            &mut prev,
            Some(Duration::from_millis(500)),
        );

        assert_eq!(
            next,
            Next::CheckIn(Duration::from_millis(1500) + Duration::from_millis(100))
        );
    }

    #[test]
    fn short_intervals_are_rechecked_every_second_at_least() {
        assert_eq!(recheck(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(recheck(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(recheck(Duration::from_secs(3600)), MAX_RECHECK);
    }
}
