//! `docker`: worker containers created from a template through the Docker Engine API (bollard).
//! Every container it creates carries `renderfleet.fleet=<ns>` and `renderfleet.role=worker`; it
//! lists, restarts, stops and removes only containers with both labels. Workers are stopped with a
//! timeout at least the agents' drain timeout, so `docker stop` lets them finish or hand back.
//!
//! When the Docker socket is missing or the engine refuses, the backend says so once per
//! failure streak and the coordinator keeps observing (and reclaiming) through Redis.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HealthStatusEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use tracing::{info, warn};

use super::{Backend, BackendEvent};
use crate::view::{Health, Snapshot};

/// Label naming the fleet a container belongs to.
pub const LABEL_FLEET: &str = "renderfleet.fleet";
/// Label naming the container's role.
pub const LABEL_ROLE: &str = "renderfleet.role";
/// Label holding the worker id.
pub const LABEL_WORKER: &str = "renderfleet.worker";

/// What a worker container looks like.
#[derive(Clone, Debug)]
pub struct Template {
    pub image: String,
    /// `KEY=VALUE` for the agent (REDIS_URL with the agent's credentials, RENDERFLEET_*).
    pub env: Vec<String>,
    /// Binds and named volumes, `source:target[:ro]`.
    pub volumes: Vec<String>,
    /// Networks; the first at creation, the others connected before start.
    pub networks: Vec<String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    /// `docker stop` timeout; at least the agents' drain timeout.
    pub stop_timeout: Duration,
    /// Container names are `<prefix>-<n>`; the worker id is the container name.
    pub name_prefix: String,
    /// Path of the Docker Engine socket.
    pub socket: String,
}

/// Connect to the engine at `socket` and agree on an API version (this engine may be older than
/// the client).
pub async fn connect(socket: &str) -> anyhow::Result<Docker> {
    if !std::path::Path::new(socket).exists() {
        anyhow::bail!("Docker engine unreachable: socket {socket} does not exist (mount /var/run/docker.sock into the coordinator)");
    }
    let d = Docker::connect_with_socket(socket, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|e| anyhow::anyhow!(engine_error(&e)))?;
    d.negotiate_version()
        .await
        .map_err(|e| anyhow::anyhow!(engine_error(&e)))
}

/// The Docker backend.
pub struct DockerBackend {
    docker: Option<Docker>,
    template: Template,
    namespace: String,
    known: HashSet<String>,
    restarts: HashMap<String, Vec<Instant>>,
    failing: bool,
}

fn engine_error(e: &bollard::errors::Error) -> String {
    let s = e.to_string();
    if s.contains("No such file")
        || s.contains("Connection refused")
        || s.contains("os error 2")
        || s.contains("os error 111")
    {
        format!("Docker engine unreachable (is /var/run/docker.sock mounted?): {s}")
    } else if s.contains("ermission denied") || s.contains("os error 13") {
        format!("Docker engine refused access to its socket: {s}")
    } else {
        format!("Docker engine error: {s}")
    }
}

impl DockerBackend {
    /// A backend for fleet `namespace`. Connecting is lazy and retried every tick.
    pub fn new(template: Template, namespace: &str) -> Self {
        Self {
            docker: None,
            template,
            namespace: namespace.to_owned(),
            known: HashSet::new(),
            restarts: HashMap::new(),
            failing: false,
        }
    }

    async fn docker(&mut self) -> anyhow::Result<Docker> {
        if let Some(d) = &self.docker {
            return Ok(d.clone());
        }
        let d = connect(&self.template.socket).await?;
        self.docker = Some(d.clone());
        Ok(d)
    }

    fn filters(&self) -> HashMap<String, Vec<String>> {
        [(
            "label".to_owned(),
            vec![
                format!("{LABEL_FLEET}={}", self.namespace),
                format!("{LABEL_ROLE}=worker"),
            ],
        )]
        .into()
    }

    /// Our worker containers: (name, id, state, labels ok).
    async fn list(
        &mut self,
    ) -> anyhow::Result<Vec<(String, String, Option<ContainerSummaryStateEnum>)>> {
        let d = self.docker().await?;
        let opts = ListContainersOptions {
            all: true,
            filters: Some(self.filters()),
            ..Default::default()
        };
        let list = d.list_containers(Some(opts)).await.map_err(|e| {
            self.docker = None;
            anyhow::anyhow!(engine_error(&e))
        })?;
        Ok(list
            .into_iter()
            .filter(|c| {
                // Belt and braces: never act on a container without both labels.
                let l = c.labels.clone().unwrap_or_default();
                l.get(LABEL_FLEET) == Some(&self.namespace)
                    && l.get(LABEL_ROLE).map(String::as_str) == Some("worker")
            })
            .filter_map(|c| {
                let name = c.labels.as_ref()?.get(LABEL_WORKER)?.clone();
                Some((name, c.id?, c.state))
            })
            .collect())
    }

    async fn create(&mut self, name: &str) -> anyhow::Result<()> {
        let d = self.docker().await?;
        let t = &self.template;
        let mut env = t.env.clone();
        env.push(format!("RENDERFLEET_WORKER_ID={name}"));
        env.push(format!("RENDERFLEET_NAMESPACE={}", self.namespace));
        let labels: HashMap<String, String> = [
            (LABEL_FLEET.to_owned(), self.namespace.clone()),
            (LABEL_ROLE.to_owned(), "worker".to_owned()),
            (LABEL_WORKER.to_owned(), name.to_owned()),
        ]
        .into();
        let body = ContainerCreateBody {
            image: Some(t.image.clone()),
            hostname: Some(name.to_owned()),
            env: Some(env),
            labels: Some(labels),
            stop_signal: Some("SIGTERM".into()),
            stop_timeout: Some(t.stop_timeout.as_secs() as i64),
            host_config: Some(HostConfig {
                binds: Some(t.volumes.clone()),
                network_mode: t.networks.first().cloned(),
                memory: (t.memory_bytes > 0).then_some(t.memory_bytes),
                nano_cpus: (t.nano_cpus > 0).then_some(t.nano_cpus),
                init: Some(true),
                // Crash restarts are the backend's job (it counts them); Docker restarts nothing.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        d.create_container(Some(opts), body)
            .await
            .map_err(|e| anyhow::anyhow!(engine_error(&e)))?;
        for net in t.networks.iter().skip(1) {
            let req = bollard::models::NetworkConnectRequest {
                container: Some(name.to_owned()),
                endpoint_config: None,
            };
            d.connect_network(net, req)
                .await
                .map_err(|e| anyhow::anyhow!(engine_error(&e)))?;
        }
        d.start_container(name, None::<StartContainerOptions>)
            .await
            .map_err(|e| anyhow::anyhow!(engine_error(&e)))?;
        self.known.insert(name.to_owned());
        Ok(())
    }

    async fn next_name(&mut self) -> anyhow::Result<String> {
        let taken: HashSet<String> = self.list().await?.into_iter().map(|(n, ..)| n).collect();
        let mut n = 1;
        loop {
            let name = format!("{}-{n}", self.template.name_prefix);
            if !taken.contains(&name) && !self.known.contains(&name) {
                return Ok(name);
            }
            n += 1;
        }
    }

    async fn restart(&mut self, name: &str, why: &str, events: &mut Vec<BackendEvent>) {
        let window = Duration::from_secs(300);
        let r = self.restarts.entry(name.to_owned()).or_default();
        r.retain(|t| t.elapsed() < window);
        if r.len() >= 5 {
            events.push(BackendEvent {
                kind: "crash_loop",
                worker: name.to_owned(),
                detail: format!("{why}; 5 restarts within 5m, left alone"),
            });
            return;
        }
        r.push(Instant::now());
        let Ok(d) = self.docker().await else { return };
        let t = self.template.stop_timeout.as_secs() as i32;
        match d
            .restart_container(
                name,
                Some(RestartContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => {
                warn!(worker = %name, reason = %why, "restarted worker container");
                events.push(BackendEvent {
                    kind: "restarted",
                    worker: name.to_owned(),
                    detail: why.to_owned(),
                });
            }
            Err(e) => events.push(BackendEvent {
                kind: "restart_failed",
                worker: name.to_owned(),
                detail: engine_error(&e),
            }),
        }
    }
}

impl Backend for DockerBackend {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn add(&mut self, n: u32) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let name = self.next_name().await?;
            self.create(&name).await?;
            info!(worker = %name, image = %self.template.image, "started worker container");
            ids.push(name);
        }
        Ok(ids)
    }

    async fn remove(&mut self, id: &str) -> anyhow::Result<bool> {
        let ours = self.list().await?.into_iter().any(|(n, ..)| n == id);
        if !ours {
            return Ok(false);
        }
        let d = self.docker().await?;
        let t = self.template.stop_timeout.as_secs() as i32;
        // Stop (SIGTERM, then SIGKILL after the timeout) if still running, then remove.
        let _ = d
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    ..Default::default()
                }),
            )
            .await;
        d.remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!(engine_error(&e)))?;
        self.known.remove(id);
        info!(worker = %id, "removed worker container");
        Ok(true)
    }

    async fn maintain(&mut self, snap: &Snapshot) -> Vec<BackendEvent> {
        let mut events = Vec::new();
        let list = match self.list().await {
            Ok(l) => {
                if self.failing {
                    info!("Docker engine reachable again");
                    self.failing = false;
                }
                l
            }
            Err(e) => {
                if !self.failing {
                    warn!(error = %e, "docker backend cannot reach the engine; observing only");
                    events.push(BackendEvent {
                        kind: "engine_unavailable",
                        worker: String::new(),
                        detail: e.to_string(),
                    });
                }
                self.failing = true;
                return events;
            }
        };
        self.known = list.iter().map(|(n, ..)| n.clone()).collect();
        for (name, id, state) in list {
            let draining = snap.draining.contains_key(&name);
            match state {
                Some(ContainerSummaryStateEnum::EXITED) | Some(ContainerSummaryStateEnum::DEAD) => {
                    let code = match self.docker().await {
                        Ok(d) => d
                            .inspect_container(&id, None::<InspectContainerOptions>)
                            .await
                            .ok()
                            .and_then(|i| i.state)
                            .and_then(|s| s.exit_code)
                            .unwrap_or(-1),
                        Err(_) => continue,
                    };
                    if code == 0 || draining {
                        // Drained (asked to, or stopped cleanly): the coordinator removes it.
                        if !draining {
                            events.push(BackendEvent {
                                kind: "exited",
                                worker: name.clone(),
                                detail: "exit 0".into(),
                            });
                            let _ = self.remove(&name).await;
                        }
                    } else {
                        self.restart(&name, &format!("container exited with {code}"), &mut events)
                            .await;
                    }
                }
                Some(ContainerSummaryStateEnum::RUNNING) if !draining => {
                    let unhealthy = match self.docker().await {
                        Ok(d) => {
                            d.inspect_container(&id, None::<InspectContainerOptions>)
                                .await
                                .ok()
                                .and_then(|i| i.state)
                                .and_then(|s| s.health)
                                .and_then(|h| h.status)
                                == Some(HealthStatusEnum::UNHEALTHY)
                        }
                        Err(_) => false,
                    };
                    // Docker says unhealthy, or the worker stopped heartbeating while running.
                    let silent = snap
                        .workers
                        .iter()
                        .any(|w| w.id == name && w.health == Health::Dead);
                    if unhealthy || silent {
                        let why = if unhealthy {
                            "Docker reports it unhealthy"
                        } else {
                            "running but not heartbeating"
                        };
                        self.restart(&name, why, &mut events).await;
                    }
                }
                _ => {}
            }
        }
        events
    }

    fn managed(&self) -> Vec<String> {
        self.known.iter().cloned().collect()
    }

    async fn shutdown(&mut self) {
        // Worker containers outlive the coordinator: they keep rendering; the next leader manages them.
    }
}
