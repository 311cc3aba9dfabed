//! The admin side of renderfleet: the `renderfleet` CLI (and, as the coordinator issue lands, the
//! `renderfleet-coordinator` sidecar). Both only read and write the fleet's Redis keys.
#![forbid(unsafe_code)]

pub mod cli;
pub mod output;
