//! The box lifecycle as one state machine with one transition function.
//!
//! ```text
//!   (new) ─> Creating ─> Configured ─> Starting ─> Running ─> Stopping ─> Stopped
//!               │            │            │           │                     │
//!               └──> Failed <┘     Failed <┘           └──> Stopped          └─> Starting
//!                      └─> Starting
//!
//!   Running ─> Pausing ─> Paused ─> Starting (resume) ─> Running
//!                 │          │         └─> Paused (the resume failed before the guest ran)
//!                 │          └─> Stopped (the saved state is discarded)
//!                 │    Stopped, Failed ─> Paused (a snapshot's memory restored)
//!                 └─> Running (the pause failed), Stopped (the VM died meanwhile)
//! ```
//!
//! Every slow step has a state of its own, written before the step begins (`Creating`,
//! `Starting`, `Stopping`): a row left in one of them by a process that died is an
//! interrupted operation, which reconciliation recognizes by that alone. The state field
//! is private to [`super::BoxStatus`]; [`BoxState::can_transition`] is the only way to
//! change it.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum BoxState {
    /// Being created: its row exists, its disk may not yet.
    Creating,
    /// Created: disk allocated, never booted or not booted since creation.
    #[default]
    Configured,
    /// Booting: helpers and VMM being started, waiting for the agent.
    Starting,
    Running,
    /// Shutting down.
    Stopping,
    Stopped,
    /// Its memory and device state being saved; the VM is still there.
    Pausing,
    /// No VM: its memory and device state are saved in the box's directory, and a
    /// resume (or any command that needs the box) continues it where it was.
    Paused,
    /// A creation or start went wrong or was interrupted; the record says why. Can be
    /// started again.
    Failed,
}

/// Every state, for exhaustive tests.
pub const ALL_STATES: [BoxState; 9] = [
    BoxState::Creating,
    BoxState::Configured,
    BoxState::Starting,
    BoxState::Running,
    BoxState::Stopping,
    BoxState::Stopped,
    BoxState::Pausing,
    BoxState::Paused,
    BoxState::Failed,
];

impl std::fmt::Display for BoxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for BoxState {
    /// Lenient: a state name this version does not know (written by a newer one) reads
    /// as Failed, so the box is still listed and can be removed or restarted.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "Creating" => BoxState::Creating,
            "Configured" => BoxState::Configured,
            "Starting" => BoxState::Starting,
            "Running" => BoxState::Running,
            "Stopping" => BoxState::Stopping,
            "Stopped" => BoxState::Stopped,
            "Pausing" => BoxState::Pausing,
            "Paused" => BoxState::Paused,
            _ => BoxState::Failed,
        })
    }
}

/// A state change the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: BoxState,
    pub to: BoxState,
}

impl BoxState {
    /// Whether a VM may exist in this state, so removing the box needs force.
    pub fn is_active(self) -> bool {
        match self {
            BoxState::Starting | BoxState::Running | BoxState::Stopping | BoxState::Pausing => true,
            BoxState::Creating
            | BoxState::Configured
            | BoxState::Stopped
            | BoxState::Paused
            | BoxState::Failed => false,
        }
    }

    /// Whether the lifecycle allows going from `self` to `to`. Exhaustive on both sides:
    /// a new state cannot be added without deciding every pair.
    pub fn can_transition(self, to: BoxState) -> bool {
        use BoxState::*;
        match self {
            Creating => match to {
                Configured | Failed => true,
                Creating | Starting | Running | Stopping | Stopped | Pausing | Paused => false,
            },
            Configured => match to {
                Starting | Failed => true,
                Creating | Configured | Running | Stopping | Stopped | Pausing | Paused => false,
            },
            Starting => match to {
                // Paused: a resume that failed before the guest ran again.
                Running | Failed | Paused => true,
                Creating | Configured | Starting | Stopping | Stopped | Pausing => false,
            },
            Running => match to {
                // Stopped directly: the VM exited on its own.
                Stopping | Stopped | Pausing => true,
                Creating | Configured | Starting | Running | Failed | Paused => false,
            },
            Stopping => match to {
                Stopped => true,
                Creating | Configured | Starting | Running | Stopping | Failed | Pausing
                | Paused => false,
            },
            Stopped => match to {
                // Failed: processes of an interrupted operation turned up and were ended;
                // Paused: a memory snapshot was restored.
                Starting | Failed | Paused => true,
                Creating | Configured | Running | Stopping | Stopped | Pausing => false,
            },
            Pausing => match to {
                // Running: the pause failed and the VM carries on; Stopped: it died.
                Paused | Running | Stopped => true,
                Creating | Configured | Starting | Stopping | Failed | Pausing => false,
            },
            Paused => match to {
                // Starting: a resume; Stopped: the saved state is discarded; Failed:
                // processes of an interrupted operation turned up and were ended.
                Starting | Stopped | Failed => true,
                Creating | Configured | Running | Stopping | Pausing | Paused => false,
            },
            Failed => match to {
                // Paused: a memory snapshot was restored.
                Starting | Paused => true,
                Creating | Configured | Running | Stopping | Stopped | Failed | Pausing => false,
            },
        }
    }

    /// [`BoxState::can_transition`] as a result.
    pub fn check_transition(self, to: BoxState) -> Result<(), InvalidTransition> {
        if self.can_transition(to) {
            Ok(())
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BoxState::*;
    use super::*;

    /// The lifecycle as the design states it: every allowed step, nothing else.
    const ALLOWED: &[(BoxState, BoxState)] = &[
        (Creating, Configured),
        (Creating, Failed),
        (Configured, Starting),
        (Configured, Failed),
        (Starting, Running),
        (Starting, Failed),
        (Running, Stopping),
        (Running, Stopped),
        (Stopping, Stopped),
        (Stopped, Starting),
        (Stopped, Failed),
        (Failed, Starting),
        (Starting, Paused),
        (Running, Pausing),
        (Pausing, Paused),
        (Pausing, Running),
        (Pausing, Stopped),
        (Paused, Starting),
        (Paused, Stopped),
        (Paused, Failed),
        (Stopped, Paused),
        (Failed, Paused),
    ];

    #[test]
    fn every_pair_of_states_is_allowed_exactly_when_the_lifecycle_lists_it() {
        for from in ALL_STATES {
            for to in ALL_STATES {
                assert_eq!(
                    from.can_transition(to),
                    ALLOWED.contains(&(from, to)),
                    "{from} -> {to}"
                );
                assert_eq!(from.check_transition(to).is_ok(), from.can_transition(to));
            }
        }
    }

    #[test]
    fn no_state_goes_to_itself_and_running_is_only_reached_through_starting_or_a_failed_pause() {
        for s in ALL_STATES {
            assert!(!s.can_transition(s), "{s} -> {s}");
            assert!(!s.can_transition(Creating), "{s} -> Creating");
            assert_eq!(
                s.can_transition(Running),
                s == Starting || s == Pausing,
                "{s} -> Running"
            );
        }
    }

    #[test]
    fn every_state_is_reachable_from_creating_and_every_state_can_reach_starting_or_is_on_the_way()
    {
        let mut seen = vec![Creating];
        let mut frontier = vec![Creating];
        while let Some(s) = frontier.pop() {
            for to in ALL_STATES {
                if s.can_transition(to) && !seen.contains(&to) {
                    seen.push(to);
                    frontier.push(to);
                }
            }
        }
        assert_eq!(seen.len(), ALL_STATES.len(), "{seen:?}");
        // A box at rest can always be booted again.
        for s in ALL_STATES
            .into_iter()
            .filter(|s| !s.is_active() && *s != Creating)
        {
            assert!(s.can_transition(Starting), "{s} cannot be started");
        }
    }

    #[test]
    fn active_states_are_exactly_those_in_which_a_vm_may_run() {
        let active: Vec<BoxState> = ALL_STATES.into_iter().filter(|s| s.is_active()).collect();
        assert_eq!(active, [Starting, Running, Stopping, Pausing]);
    }

    #[test]
    fn unknown_state_name_reads_as_failed_and_known_names_round_trip() {
        let s: BoxState = serde_json::from_str(r#""Hibernating""#).unwrap();
        assert_eq!(s, Failed);
        for s in ALL_STATES {
            let back: BoxState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            assert_eq!(back, s);
        }
    }
}
