//! Placeholder; replaced by the CA module.
