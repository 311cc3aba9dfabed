//! The admin side of renderfleet: the `renderfleet` CLI and the `renderfleet-coordinator` sidecar
//! (health, reclaim, scheduled renders, the scaling policy and its backends). Both only read and
//! write the fleet's Redis keys; they share one operation layer.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod output;
pub mod policy;
