//! Scaling backends: how the leader creates and removes workers. `process` runs local agent
//! processes, `none` only recommends; Docker and Swarm implement the same trait.

use std::future::Future;

use serde::Serialize;

use crate::view::Snapshot;

pub mod docker;
pub mod none;
pub mod process;
pub mod swarm;

/// Something a backend noticed or did on its own (reported in the events stream).
#[derive(Clone, Debug, Serialize)]
pub struct BackendEvent {
    pub kind: &'static str,
    pub worker: String,
    pub detail: String,
}

/// How workers are created and removed.
pub trait Backend: Send {
    /// Name for logs and events.
    fn name(&self) -> &'static str;
    /// Whether this backend can act at all (`none` cannot).
    fn acts(&self) -> bool {
        true
    }
    /// Whether its workers are this process's own (local children: every coordinator maintains
    /// its own), rather than shared infrastructure only the leader may touch.
    fn local(&self) -> bool {
        false
    }
    /// Start `n` workers; returns their worker ids (they are warming up until their first heartbeat).
    fn add(&mut self, n: u32) -> impl Future<Output = anyhow::Result<Vec<String>>> + Send;
    /// Remove worker `id` now: called after it exited on its own, or when its drain deadline passed
    /// and it runs nothing. Returns false when the worker is not one of this backend's.
    fn remove(&mut self, id: &str) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// Housekeeping once per tick (leader or not): reap exited workers, restart crashed ones.
    fn maintain(&mut self, snapshot: &Snapshot) -> impl Future<Output = Vec<BackendEvent>> + Send;
    /// Workers this backend runs right now.
    fn managed(&self) -> Vec<String>;
    /// Stop everything this backend started (coordinator shutdown): drain, then stop.
    fn shutdown(&mut self) -> impl Future<Output = ()> + Send;
}
