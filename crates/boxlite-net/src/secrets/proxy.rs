//! Placeholder; replaced by the interception proxy.
