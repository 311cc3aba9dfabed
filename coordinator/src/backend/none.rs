//! `none`: recommend only. Decisions are computed and recorded; nothing is started or stopped.

use super::{Backend, BackendEvent};
use crate::view::Snapshot;

/// The recommend-only backend.
#[derive(Debug, Default)]
pub struct NoneBackend;

impl Backend for NoneBackend {
    fn name(&self) -> &'static str {
        "none"
    }
    fn acts(&self) -> bool {
        false
    }
    async fn add(&mut self, _n: u32) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn remove(&mut self, _id: &str) -> anyhow::Result<bool> {
        Ok(false)
    }
    async fn maintain(&mut self, _s: &Snapshot) -> Vec<BackendEvent> {
        Vec::new()
    }
    fn managed(&self) -> Vec<String> {
        Vec::new()
    }
    async fn shutdown(&mut self) {}
}
