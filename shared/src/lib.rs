//! renderfleet's shared protocol: job specs and their validation, the Redis key schema, the Lua
//! scripts that perform every job state transition atomically, renderer profiles, progress parsers,
//! and the typed client ([`Fleet`]) the agent, the coordinator and the CLI all use.
#![forbid(unsafe_code)]

pub mod cli;
pub mod error;
pub mod fleet;
pub mod job;
pub mod keys;
pub mod progress;
pub mod renderer;
pub mod scripts;
pub mod signal;
pub mod time;
pub mod worker;

pub use error::{Error, Result};
pub use fleet::Fleet;
pub use keys::Keys;

/// Version string agents report in their heartbeat.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
