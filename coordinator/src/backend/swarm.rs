//! `swarm`: scale a Docker Swarm service's replicas — the multi-host path. Scale-up inspects the
//! service and updates its full spec with the version it read (the engine refuses a stale
//! version). Scale-in never kills a render: the coordinator first drains chosen workers through
//! Redis; they finish their jobs and exit 0 (the service must restart tasks only `on-failure`),
//! and only then are the replicas lowered, so Swarm removes the finished slots.

use std::collections::HashMap;

use bollard::query_parameters::{InspectServiceOptions, ListTasksOptions, UpdateServiceOptions};
use bollard::Docker;
use tracing::{info, warn};

use super::{Backend, BackendEvent};
use crate::view::Snapshot;

/// The Swarm backend.
pub struct SwarmBackend {
    docker: Option<Docker>,
    service: String,
    /// Worker ids (task container hostnames) of the service's running tasks, from the last tick.
    tasks: Vec<String>,
    failing: bool,
    socket: String,
}

fn engine(e: bollard::errors::Error) -> anyhow::Error {
    anyhow::anyhow!("Docker engine (swarm): {e}")
}

impl SwarmBackend {
    /// Scale `service` through the engine at `socket`.
    pub fn new(service: &str, socket: &str) -> Self {
        Self {
            docker: None,
            service: service.to_owned(),
            tasks: Vec::new(),
            failing: false,
            socket: socket.to_owned(),
        }
    }

    async fn docker(&mut self) -> anyhow::Result<Docker> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let d = super::docker::connect(&self.socket).await?;
        self.docker = Some(d.clone());
        Ok(d)
    }

    /// Change the replica count by `delta`, with the version just read. Returns the new count.
    async fn scale_by(&mut self, delta: i64) -> anyhow::Result<i64> {
        let d = self.docker().await?;
        for _ in 0..3 {
            let svc = d
                .inspect_service(&self.service, None::<InspectServiceOptions>)
                .await
                .map_err(engine)?;
            let version = svc
                .version
                .and_then(|v| v.index)
                .ok_or_else(|| anyhow::anyhow!("service {} has no version", self.service))?;
            let mut spec = svc
                .spec
                .ok_or_else(|| anyhow::anyhow!("service {} has no spec", self.service))?;
            let mode = spec.mode.get_or_insert_with(Default::default);
            let rep = mode
                .replicated
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("service {} is not replicated", self.service))?;
            let now = rep.replicas.unwrap_or(0);
            let next = (now + delta).max(0);
            rep.replicas = Some(next);
            let opts = UpdateServiceOptions {
                version: version as i32,
                ..Default::default()
            };
            match d.update_service(&self.service, spec, opts, None).await {
                Ok(_) => return Ok(next),
                // Someone else updated the service in between: read again.
                Err(e) if e.to_string().contains("update out of sequence") => continue,
                Err(e) => return Err(engine(e)),
            }
        }
        Err(anyhow::anyhow!(
            "service {} kept changing under us; not scaled",
            self.service
        ))
    }
}

impl Backend for SwarmBackend {
    fn name(&self) -> &'static str {
        "swarm"
    }

    async fn add(&mut self, n: u32) -> anyhow::Result<Vec<String>> {
        let replicas = self.scale_by(n as i64).await?;
        info!(service = %self.service, replicas, "scaled the swarm service up");
        // Task hostnames are not known until Swarm schedules them; the cooldown covers warm-up.
        Ok(Vec::new())
    }

    async fn remove(&mut self, id: &str) -> anyhow::Result<bool> {
        // Called once a drained worker has exited (or idles past its deadline): one slot less.
        if !self.tasks.iter().any(|t| t == id) && !self.tasks.is_empty() {
            // Not one of this service's tasks (any more): still lower the count it left behind.
            warn!(worker = %id, service = %self.service, "drained worker is not a current task; lowering replicas anyway");
        }
        let replicas = self.scale_by(-1).await?;
        info!(worker = %id, service = %self.service, replicas, "scaled the swarm service down");
        Ok(true)
    }

    async fn maintain(&mut self, _s: &Snapshot) -> Vec<BackendEvent> {
        let d = match self.docker().await {
            Ok(d) => d,
            Err(e) => {
                let mut ev = Vec::new();
                if !self.failing {
                    ev.push(BackendEvent {
                        kind: "engine_unavailable",
                        worker: String::new(),
                        detail: e.to_string(),
                    });
                }
                self.failing = true;
                return ev;
            }
        };
        let filters: HashMap<String, Vec<String>> = [
            ("service".to_owned(), vec![self.service.clone()]),
            ("desired-state".to_owned(), vec!["running".to_owned()]),
        ]
        .into();
        match d
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
        {
            Ok(tasks) => {
                self.failing = false;
                self.tasks = tasks
                    .into_iter()
                    .filter_map(|t| t.status?.container_status?.container_id)
                    .map(|c| c.chars().take(12).collect())
                    .collect();
                Vec::new()
            }
            Err(e) => {
                self.docker = None;
                let first = !self.failing;
                self.failing = true;
                if first {
                    vec![BackendEvent {
                        kind: "engine_unavailable",
                        worker: String::new(),
                        detail: e.to_string(),
                    }]
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn managed(&self) -> Vec<String> {
        self.tasks.clone()
    }

    async fn shutdown(&mut self) {}
}
