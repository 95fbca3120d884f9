//! The box lifecycle as one state machine with one transition function.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoxState {
    /// Created: disk allocated, never booted or not booted since creation.
    Configured,
    Running,
    Stopping,
    Stopped,
    /// A start or a stop went wrong; the record says why. Can be started again.
    Failed,
}

impl std::fmt::Display for BoxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl BoxState {
    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_transition(self, to: BoxState) -> bool {
        use BoxState::*;
        matches!(
            (self, to),
            (Configured | Stopped | Failed, Running)
                | (Running, Stopping)
                | (Running, Stopped)
                | (Stopping, Stopped)
                | (Running | Stopping | Configured, Failed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::BoxState::*;

    #[test]
    fn only_listed_transitions_are_allowed() {
        assert!(Configured.can_transition(Running));
        assert!(Stopped.can_transition(Running));
        assert!(Running.can_transition(Stopping));
        assert!(Stopping.can_transition(Stopped));
        assert!(!Configured.can_transition(Stopped));
        assert!(!Running.can_transition(Running));
        assert!(!Stopped.can_transition(Stopping));
    }
}
