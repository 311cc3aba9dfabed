//! The admin side of renderfleet: the `renderfleet` CLI and the `renderfleet-coordinator` sidecar
//! (health, reclaim, scheduled renders, the scaling policy and its backends). Both only read and
//! write the fleet's Redis keys; they share one operation layer (`ops`).
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod http;
pub mod ops;
pub mod output;
pub mod policy;
pub mod schedule;
pub mod view;
