//! Placeholder; replaced by the substitution module.
