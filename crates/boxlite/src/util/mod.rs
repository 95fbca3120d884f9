//! Small helpers shared across the library: process identity, file locks and file
//! utilities.

pub mod fsutil;
pub mod lock;
pub mod process;
