//! renderfleet's built-in renderer (`builtin`): Minecraft Java Edition 1.18+ worlds drawn top-down,
//! one 512x512 tile per region, a zoom pyramid above them and a self-contained viewer page.
//!
//! Pure file work, no Redis: the agent runs it in a child process (`renderfleet-agent map ...`), one
//! region per task, so a world's regions spread over the fleet through the ordinary job queue.

pub mod output;
pub mod palette;
pub mod region;
pub mod render;
pub mod sample;
pub mod tile;

pub use output::{Action, Plan, RegionId};
