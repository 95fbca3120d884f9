//! The box lifecycle as one state machine with one transition function.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum BoxState {
    /// Created: disk allocated, never booted or not booted since creation.
    #[default]
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

impl<'de> Deserialize<'de> for BoxState {
    /// Lenient: a state name this version does not know (written by a newer one) reads
    /// as Failed, so the box is still listed and can be removed or restarted.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "Configured" => BoxState::Configured,
            "Running" => BoxState::Running,
            "Stopping" => BoxState::Stopping,
            "Stopped" => BoxState::Stopped,
            _ => BoxState::Failed,
        })
    }
}

impl BoxState {
    /// Whether a VM may exist in this state, so removing the box needs force.
    pub fn is_active(self) -> bool {
        matches!(self, BoxState::Running | BoxState::Stopping)
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_transition(self, to: BoxState) -> bool {
        use BoxState::*;
        matches!(
            (self, to),
            (Configured | Stopped | Failed, Running)
                | (Running, Stopping)
                | (Running | Stopping, Stopped)
                // Any step can fail, including a start from Stopped or Failed.
                | (_, Failed)
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

    #[test]
    fn unknown_state_name_reads_as_failed() {
        let s: super::BoxState = serde_json::from_str(r#""Hibernating""#).unwrap();
        assert_eq!(s, Failed);
    }
}
