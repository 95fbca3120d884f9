//! Small helpers shared across the library: process identity and file utilities.

pub mod fsutil;
pub mod process;
