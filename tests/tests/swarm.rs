//! The swarm backend on a one-node Swarm on this machine: the coordinator scales a service of
//! agents up under a burst and back down, through drains, when idle.
// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use renderfleet_shared::job::JobSpec;
use renderfleet_tests::stack::{docker, docker_ok};
use renderfleet_tests::*;

const T: Duration = Duration::from_secs(180);

struct Cleanup(Vec<Vec<String>>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = docker(&a);
        }
    }
}

fn replicas(service: &str) -> u64 {
    docker_ok(&[
        "service",
        "inspect",
        "-f",
        "{{.Spec.Mode.Replicated.Replicas}}",
        service,
    ])
    .parse()
    .unwrap_or(0)
}

#[tokio::test]
async fn coordinator_scales_a_swarm_service_up_and_down() {
    if docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) != "active" {
        docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
    }
    let id = std::process::id();
    let (net, redis_name, svc, ns) = (
        format!("rft-swarm-{id}"),
        format!("rft-swarm-redis-{id}"),
        format!("rft-swarm-agents-{id}"),
        format!("swarm{id}"),
    );
    let _cleanup = Cleanup(vec![
        vec!["service".into(), "rm".into(), svc.clone()],
        vec!["rm".into(), "-f".into(), redis_name.clone()],
        vec!["network".into(), "rm".into(), net.clone()],
    ]);
    let worlds: Vec<String> = (0..8).map(|i| format!("w{i}")).collect();
    let site = Site::new(&worlds.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let profiles = site.path().join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::copy(
        fixtures().join("fake-renderer.sh"),
        profiles.join("fake-renderer.sh"),
    )
    .unwrap();
    std::fs::write(
        profiles.join("renderers.toml"),
        "[renderers.fake]\ncommand = [\"/etc/renderfleet/fake-renderer.sh\", \"{output_dir}\", \"{job_id}\", \"{attempt}\", \"3\", \"3\", \"0\"]\nprogress = \"overviewer\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(site.path())
        .status()
        .unwrap();

    docker_ok(&["network", "create", "-d", "overlay", "--attachable", &net]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &redis_name,
        "--network",
        &net,
        "-p",
        &format!("127.0.0.1:{port}:6379"),
        "-e",
        "REDIS_ADMIN_PASSWORD=adm",
        "-e",
        "REDIS_COORDINATOR_PASSWORD=coo",
        "-e",
        "REDIS_AGENT_PASSWORD=age",
        "-e",
        &format!("RENDERFLEET_NAMESPACE={ns}"),
        "renderfleet/redis:dev",
    ]);
    let admin = format!("redis://admin:adm@127.0.0.1:{port}/0");
    let fleet = wait_for(T, "Redis", || async {
        renderfleet_shared::Fleet::connect(&admin, &ns).await.ok()
    })
    .await;
    cli_ok(
        &admin,
        &ns,
        &[
            "config",
            "set",
            "min_workers=1",
            "max_workers=3",
            // 1s heartbeats: stale data (older than two intervals) blocks scale-down, and a
            // loaded CI machine can delay a 500ms heartbeat past that.
            "heartbeat_interval=1s",
            "worker_ttl=4s",
            "scale_up_cooldown=1s",
            "scale_down_cooldown=2s",
            "stabilization_window=3s",
            "drain_timeout=20s",
        ],
    );
    docker_ok(&[
        "service",
        "create",
        "-d",
        "--name",
        &svc,
        "--no-resolve-image",
        "--network",
        &net,
        "--replicas",
        "1",
        "--restart-condition",
        "on-failure",
        "--stop-grace-period",
        "60s",
        "-e",
        &format!("REDIS_URL=redis://agent:age@{redis_name}:6379/0"),
        "-e",
        &format!("RENDERFLEET_NAMESPACE={ns}"),
        "-e",
        "RENDERFLEET_HEARTBEAT_INTERVAL=1s",
        "-e",
        "RENDERFLEET_RENDERERS=/etc/renderfleet/renderers.toml",
        "--mount",
        &format!(
            "type=bind,src={},dst=/etc/renderfleet,ro",
            profiles.display()
        ),
        "--mount",
        &format!(
            "type=bind,src={},dst=/worlds,ro",
            site.path().join("worlds").display()
        ),
        "renderfleet/agent:dev",
    ]);
    wait_for(T, "the first task's heartbeat", || async {
        (fleet.workers().await.ok()?.len() == 1).then_some(())
    })
    .await;
    let coordinator_url = format!("redis://coordinator:coo@127.0.0.1:{port}/0");
    let _coord = Coordinator::start(
        &coordinator_url,
        &ns,
        &site,
        "swarm-c",
        "swarm",
        &["--swarm-service", &svc],
    )
    .unwrap();

    let profiles = fleet.profiles().await.unwrap();
    let mut ids = Vec::new();
    for w in &worlds {
        let spec = JobSpec {
            world: w.clone(),
            renderer: "fake".into(),
            ..Default::default()
        };
        ids.push(fleet.submit(&spec, &profiles).await.unwrap().id);
    }
    wait_for(T, "the service scaled up", || async {
        (replicas(&svc) >= 2).then_some(())
    })
    .await;
    for id in &ids {
        wait_state(&fleet, id, "succeeded", T).await;
    }
    let deadline = std::time::Instant::now() + T;
    while replicas(&svc) != 1 {
        if std::time::Instant::now() > deadline {
            let last: Vec<String> = renderfleet_coordinator::ops::events(&fleet, 15)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|e| format!("{:?}", e.fields))
                .collect();
            panic!(
                "the service did not shrink back to one replica; last events:\n{}",
                last.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(
            fleet.job(id).await.unwrap().unwrap().attempt,
            1,
            "job {id} was interrupted by scale-in"
        );
    }
    let ups = fleet_events(&fleet, "scale_up").await;
    assert!(!ups.is_empty());
}
