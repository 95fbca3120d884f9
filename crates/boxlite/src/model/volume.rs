//! Volumes as a box's config records them.

use serde::{Deserialize, Serialize};

/// A mount as stored in a box's config, after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub kind: VolumeKind,
    /// The volume's directory name: the name of a named volume, the id of an anonymous
    /// one.
    pub name: String,
    pub guest_path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    Named,
    Anonymous,
}
