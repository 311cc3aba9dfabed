//! `renderfleet-agent`: the entrypoint of every worker. It heartbeats its load and health into
//! Redis, pulls render jobs from the job streams while it has free capacity, runs each renderer as
//! an argv vector in its own process group, and records every outcome fenced by its attempt number.
#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod executor;
pub mod health;
pub mod map;
pub mod memory;
pub mod process;

pub use agent::run;
pub use config::AgentConfig;
