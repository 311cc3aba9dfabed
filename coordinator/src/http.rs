//! The HTTP admin API (`--http ADDR`): the original system's paths under `/api/scaling`, jobs under
//! `/api/jobs`, Prometheus `/metrics`, the OpenAPI document and a live dashboard at `/`. Every
//! handler works by reading and writing Redis through the same operation layer as the CLI; writes
//! that need the leader (scaling) are queued for it in Redis, so any coordinator may serve.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use renderfleet_shared::fleet::Cancelled;
use renderfleet_shared::job::{JobSpec, JobState};
use renderfleet_shared::keys::DURATION_BUCKETS;
use renderfleet_shared::{Error, Fleet};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::ops::{self, ManualCommand};
use crate::view::{self, Health};

/// The OpenAPI document, kept in the repository beside this file.
pub const OPENAPI: &str = include_str!("../openapi.json");
const DASHBOARD: &str = include_str!("dashboard.html");
/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Bearer token required for writes (and for reads unless `public_reads`); `None` refuses writes.
    pub token: Option<String>,
    pub public_reads: bool,
    /// Serve the maps under this directory (the agents' output dir) at `/maps/`.
    pub maps_dir: Option<std::path::PathBuf>,
    /// Serve `/maps/` without a token (browsers cannot send one for images).
    pub public_maps: bool,
}

/// State shared with the handlers.
pub struct AppState {
    pub fleet: Fleet,
    pub cfg: HttpConfig,
    /// Whether this coordinator leads (for `renderfleet_leader`).
    pub leading: Arc<AtomicBool>,
    /// Redis errors seen by this process (ticks and requests).
    pub redis_errors: Arc<AtomicU64>,
    /// Recently rendered `/api/scaling/status` and `/metrics` bodies: under load many requests share
    /// one read of the fleet instead of each scanning every worker.
    pub cache: tokio::sync::Mutex<
        std::collections::HashMap<&'static str, (std::time::Instant, Arc<String>)>,
    >,
}

/// How long a rendered status or metrics body is reused.
const CACHE_FOR: Duration = Duration::from_millis(250);

/// The cached body for `key`, or render it with `make` (one renderer at a time per key).
async fn cached<F, Fut>(st: &AppState, key: &'static str, make: F) -> Result<Arc<String>, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, ApiError>>,
{
    let mut cache = st.cache.lock().await;
    if let Some((at, body)) = cache.get(key) {
        if at.elapsed() < CACHE_FOR {
            return Ok(body.clone());
        }
    }
    let body = Arc::new(make().await?);
    cache.insert(key, (std::time::Instant::now(), body.clone()));
    Ok(body)
}

type Shared = Arc<AppState>;

/// A JSON error with a stable shape: `{"error": {"status": 404, "code": "not_found", "message": "..."}}`.
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.0.as_u16(), "code": self.1, "message": self.2}});
        (self.0, Json(body)).into_response()
    }
}

impl ApiError {
    /// A body that could not be read as JSON: 413 when over the size limit, else 400.
    fn body(e: axum::extract::rejection::JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body over {BODY_LIMIT} bytes"),
            )
        } else {
            Self::bad(e.body_text())
        }
    }
    fn bad(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, "bad_request", msg.into())
    }
    fn not_found(msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, "not_found", msg.into())
    }
}

fn from_error(e: Error, errors: &AtomicU64) -> ApiError {
    match e {
        Error::InvalidJob(_)
        | Error::UnknownRenderer { .. }
        | Error::Config(_)
        | Error::Profiles(_) => ApiError::bad(e.to_string()),
        Error::NoSuchJob(_) => ApiError::not_found(e.to_string()),
        Error::WrongState { .. } => ApiError(StatusCode::CONFLICT, "conflict", e.to_string()),
        e => {
            errors.fetch_add(1, Ordering::Relaxed);
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis_unavailable",
                e.to_string(),
            )
        }
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

fn accepted(v: Value) -> ApiResult {
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// Bearer-token check: every mutating call, and reads unless `--http-public-reads`.
async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let map = path == "/maps" || path.starts_with("/maps/");
    if map && path.contains("/.") {
        // Logs, plans and state files live in dot-directories of the output dir: not served.
        return ApiError::not_found("no such file").into_response();
    }
    let open = path == "/"
        || path == "/api/openapi.json"
        || path == "/api/scaling/health"
        || (map && st.cfg.public_maps);
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    if open || (read && st.cfg.public_reads) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match (&st.cfg.token, given) {
        (Some(want), Some(got)) if bool::from(want.as_bytes().ct_eq(got.as_bytes())) => {
            next.run(req).await
        }
        (None, _) => ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no --http-token-file configured: the API is read-only".into(),
        )
        .into_response(),
        _ => {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token".into(),
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// The router (exposed for tests and the route/OpenAPI coverage check).
pub fn router(state: Shared) -> Router {
    let maps = match &state.cfg.maps_dir {
        Some(dir) => Router::new().nest_service(
            "/maps",
            tower_http::services::ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .fallback(get(maps_index).with_state(state.clone())),
        ),
        None => Router::new()
            .route("/maps", get(maps_off))
            .route("/maps/", get(maps_off))
            .route("/maps/{*path}", get(maps_off)),
    };
    Router::new()
        .merge(maps)
        .route("/", get(dashboard))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/api/scaling/status", get(status))
        .route("/api/scaling/workers", get(list_workers).post(add_workers))
        .route(
            "/api/scaling/workers/{worker_id}",
            get(worker).delete(remove_worker),
        )
        .route("/api/scaling/scale-up", post(scale_up))
        .route("/api/scaling/scale-down", post(scale_down))
        .route("/api/scaling/evaluate-scaling", post(evaluate))
        .route("/api/scaling/load-balancer/stats", get(load_balancer))
        .route("/api/scaling/health", get(health))
        .route(
            "/api/scaling/auto-scaling/config",
            get(get_config).post(set_config),
        )
        .route("/api/jobs", get(list_jobs).post(submit))
        .route("/api/jobs/{id}", get(job).delete(cancel))
        .route("/api/jobs/{id}/retry", post(retry))
        .route("/api/events", get(events))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(10),
        ))
        .with_state(state)
}

/// Every (method, path) the router serves, in OpenAPI path syntax (kept beside `router`, checked
/// against the document by a test).
pub const ROUTES: [(&str, &str); 23] = [
    ("get", "/maps/"),
    ("get", "/maps/{path}"),
    ("get", "/api/scaling/workers"),
    ("get", "/"),
    ("get", "/api/openapi.json"),
    ("get", "/metrics"),
    ("get", "/api/scaling/status"),
    ("post", "/api/scaling/workers"),
    ("get", "/api/scaling/workers/{workerId}"),
    ("delete", "/api/scaling/workers/{workerId}"),
    ("post", "/api/scaling/scale-up"),
    ("post", "/api/scaling/scale-down"),
    ("post", "/api/scaling/evaluate-scaling"),
    ("get", "/api/scaling/load-balancer/stats"),
    ("get", "/api/scaling/health"),
    ("get", "/api/scaling/auto-scaling/config"),
    ("post", "/api/scaling/auto-scaling/config"),
    ("get", "/api/jobs"),
    ("post", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("delete", "/api/jobs/{id}"),
    ("post", "/api/jobs/{id}/retry"),
    ("get", "/api/events"),
];

/// Serve until `shutdown`.
pub async fn serve(state: Shared, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(state.cfg.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "HTTP admin API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}

async fn maps_off() -> ApiError {
    ApiError::not_found("maps are not served here: start the coordinator with --maps-dir")
}

/// `/maps/`: the maps found under the maps dir (`<world>/<renderer>/map.js`); anything else that
/// is not a file is a 404.
async fn maps_index(State(st): State<Shared>, req: Request) -> Response {
    let path = req.uri().path();
    let Some(dir) = st.cfg.maps_dir.clone() else {
        return maps_off().await.into_response();
    };
    if path != "/" && !path.is_empty() {
        return ApiError::not_found("no such file").into_response();
    }
    let found = tokio::task::spawn_blocking(move || list_maps(&dir))
        .await
        .unwrap_or_default();
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>renderfleet maps</title>\
         <style>body{font:15px system-ui,sans-serif;margin:2em;background:#15181c;color:#e4e6ea}\
         a{color:#7fb2ff}</style></head><body><h1>Maps</h1>",
    );
    if found.is_empty() {
        page.push_str("<p>No maps rendered yet.</p>");
    } else {
        page.push_str("<ul>");
        for m in &found {
            // Names are world and renderer names (validated: no markup characters).
            let _ = write!(page, "<li><a href=\"/maps/{m}/\">{m}</a></li>");
        }
        page.push_str("</ul>");
    }
    page.push_str("</body></html>");
    Html(page).into_response()
}

/// `<world>/<renderer>` of every directory two levels down holding a `map.js`, sorted.
fn list_maps(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(worlds) = std::fs::read_dir(dir) else {
        return out;
    };
    for w in worlds.flatten() {
        let wname = w.file_name().to_string_lossy().into_owned();
        if wname.starts_with('.') || renderfleet_shared::job::validate_world(&wname).is_err() {
            continue;
        }
        let Ok(renderers) = std::fs::read_dir(w.path()) else {
            continue;
        };
        for r in renderers.flatten() {
            let rname = r.file_name().to_string_lossy().into_owned();
            if renderfleet_shared::job::validate_name("renderer", &rname).is_ok()
                && r.path().join("map.js").is_file()
            {
                out.push(format!("{wname}/{rname}"));
            }
        }
    }
    out.sort();
    out
}

async fn dashboard() -> Html<&'static str> {
    Html(DASHBOARD)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn status(State(st): State<Shared>) -> ApiResult {
    let body = cached(&st, "status", || async {
        let s = ops::status(&st.fleet)
            .await
            .map_err(|e| from_error(e, &st.redis_errors))?;
        serde_json::to_string(&s)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
    })
    .await?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.as_str().to_owned(),
    )
        .into_response())
}

/// `{"by": N}` or `{"count": N}` (integers 1-1000; `by` wins); an empty body means 1.
fn by(body: &[u8]) -> Result<u32, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(1);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("body: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad("body must be a JSON object"))?;
    let mut out = None;
    for (k, v) in obj {
        if k != "by" && k != "count" {
            return Err(ApiError::bad(format!(
                "unknown field '{k}' (expected by or count)"
            )));
        }
        // JSON Schema's integers include 2.0; null, strings and fractions are refused.
        let n = v
            .as_f64()
            .filter(|n| n.fract() == 0.0 && (1.0..=1000.0).contains(n));
        let n = n.ok_or_else(|| ApiError::bad(format!("{k} must be an integer 1-1000")))? as u32;
        if k == "by" || out.is_none() {
            out = Some(n);
        }
    }
    Ok(out.unwrap_or(1))
}

async fn push(st: &AppState, cmd: ManualCommand) -> ApiResult {
    ops::push_command(&st.fleet, &cmd)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let leader = ops::leader(&st.fleet).await.ok().flatten().map(|l| l.id);
    accepted(json!({"queued": cmd, "leader": leader}))
}

async fn list_workers(State(st): State<Shared>) -> ApiResult {
    ok(st
        .fleet
        .workers()
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?)
}

async fn add_workers(State(st): State<Shared>, body: axum::body::Bytes) -> ApiResult {
    let n = by(&body)?;
    push(&st, ManualCommand::ScaleUp { by: n }).await
}

async fn scale_up(State(st): State<Shared>, body: axum::body::Bytes) -> ApiResult {
    let n = by(&body)?;
    push(&st, ManualCommand::ScaleUp { by: n }).await
}

async fn scale_down(State(st): State<Shared>, body: axum::body::Bytes) -> ApiResult {
    let n = by(&body)?;
    push(&st, ManualCommand::ScaleDown { by: n }).await
}

async fn remove_worker(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let w = st
        .fleet
        .worker(&id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    if w.is_none() {
        return Err(ApiError::not_found(format!(
            "no worker '{id}' with a live heartbeat"
        )));
    }
    push(&st, ManualCommand::Remove { worker: id }).await
}

async fn worker(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    match st
        .fleet
        .worker(&id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?
    {
        Some(w) => ok(w),
        None => Err(ApiError::not_found(format!(
            "no worker '{id}' with a live heartbeat"
        ))),
    }
}

async fn evaluate(State(st): State<Shared>) -> ApiResult {
    ok(ops::evaluate(&st.fleet)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?)
}

async fn load_balancer(State(st): State<Shared>) -> ApiResult {
    ok(ops::load_balancer_stats(&st.fleet)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?)
}

async fn health(State(st): State<Shared>) -> ApiResult {
    match ops::status(&st.fleet).await {
        Ok(s) => {
            let healthy = s.workers.get("healthy").copied().unwrap_or(0);
            let okay = s.leader.is_some() && healthy >= s.policy.min_workers;
            let body = json!({"ok": okay, "leader": s.leader, "healthy_workers": healthy, "min_workers": s.policy.min_workers});
            Ok((
                if okay {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                Json(body),
            )
                .into_response())
        }
        Err(e) => Err(from_error(e, &st.redis_errors)),
    }
}

async fn get_config(State(st): State<Shared>) -> ApiResult {
    ok(config::load(&st.fleet)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?
        .to_map())
}

async fn set_config(
    State(st): State<Shared>,
    body: Result<Json<serde_json::Map<String, Value>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(map) = body.map_err(ApiError::body)?;
    if map.is_empty() {
        return Err(ApiError::bad("send at least one key"));
    }
    let pairs: Vec<(String, String)> = map
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let c = config::set(&st.fleet, &pairs)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    ok(c.to_map())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn list_jobs(
    State(st): State<Shared>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad("limit must be 1-1000"));
    }
    ok(st
        .fleet
        .jobs(state, limit)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?)
}

async fn submit(
    State(st): State<Shared>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult {
    let Json(v) = body.map_err(ApiError::body)?;
    let spec = JobSpec::from_json(&v.to_string()).map_err(|e| ApiError::bad(e.to_string()))?;
    let profiles = st
        .fleet
        .profiles()
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    profiles
        .validate(&spec)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    st.fleet
        .ensure_groups()
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let s = st
        .fleet
        .submit(&spec, &profiles)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let job = st
        .fleet
        .job(&s.id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let code = if s.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(job)).into_response())
}

async fn job(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    match st
        .fleet
        .job_with_log(&id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?
    {
        Some(j) => ok(j),
        None => Err(ApiError::not_found(format!("no job with id '{id}'"))),
    }
}

async fn cancel(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let r = st
        .fleet
        .cancel(&id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let state = match r {
        Cancelled::Cancelled => "cancelled",
        Cancelled::Stopping => "cancelling",
    };
    ok(json!({"id": id, "state": state}))
}

async fn retry(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    st.fleet
        .retry(&id)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    ok(json!({"id": id, "state": "queued"}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    count: Option<usize>,
}

async fn events(
    State(st): State<Shared>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let count = q.count.unwrap_or(50);
    if !(1..=1000).contains(&count) {
        return Err(ApiError::bad("count must be 1-1000"));
    }
    ok(ops::events(&st.fleet, count)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?)
}

/// Prometheus text format, read from Redis at scrape time (reused for 250 ms under load).
async fn metrics(State(st): State<Shared>) -> ApiResult {
    let body = cached(&st, "metrics", || render_metrics(&st)).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body.as_str().to_owned(),
    )
        .into_response())
}

async fn render_metrics(st: &AppState) -> Result<String, ApiError> {
    let f = &st.fleet;
    let cfg = config::load(f)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let snap = view::snapshot(f, &cfg)
        .await
        .map_err(|e| from_error(e, &st.redis_errors))?;
    let m = snap.metrics(&cfg);
    let (stats, durations): (
        std::collections::HashMap<String, i64>,
        std::collections::HashMap<String, i64>,
    ) = redis::pipe()
        .hgetall(f.keys().stats())
        .hgetall(f.keys().durations())
        .query_async(&mut f.conn())
        .await
        .map_err(|e| from_error(f.err(e), &st.redis_errors))?;
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        name.to_owned()
    };
    let _ = family("renderfleet_workers", "gauge", "Workers by health.");
    let mut by_health = std::collections::BTreeMap::new();
    for h in ["healthy", "degraded", "unhealthy", "draining", "dead"] {
        by_health.insert(h, 0u64);
    }
    for w in &snap.workers {
        let k = match w.health {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
            Health::Dead => "dead",
        };
        *by_health.entry(k).or_default() += 1;
    }
    let mut o2 = String::new();
    for (h, n) in &by_health {
        let _ = writeln!(o2, "renderfleet_workers{{status=\"{h}\"}} {n}");
    }
    let _ = writeln!(o2, "# HELP renderfleet_workers_warming Workers started by the backend that have not heartbeated yet.\n# TYPE renderfleet_workers_warming gauge\nrenderfleet_workers_warming {}", m.warming);
    let _ = writeln!(o2, "# HELP renderfleet_capacity_slots Job slots of active workers.\n# TYPE renderfleet_capacity_slots gauge\nrenderfleet_capacity_slots {}", m.capacity);
    let _ = writeln!(o2, "# HELP renderfleet_running_jobs Jobs running on active workers.\n# TYPE renderfleet_running_jobs gauge\nrenderfleet_running_jobs {}", m.running);
    let _ = writeln!(o2, "# HELP renderfleet_utilization_ratio Running jobs over capacity.\n# TYPE renderfleet_utilization_ratio gauge\nrenderfleet_utilization_ratio {}", m.utilization());
    let _ = writeln!(o2, "# HELP renderfleet_backlog_jobs Jobs waiting for a worker, by priority.\n# TYPE renderfleet_backlog_jobs gauge");
    for (i, p) in ["high", "normal", "low"].iter().enumerate() {
        let _ = writeln!(
            o2,
            "renderfleet_backlog_jobs{{priority=\"{p}\"}} {}",
            snap.queue.undelivered[i]
        );
    }
    let _ = writeln!(o2, "# HELP renderfleet_retries_waiting_jobs Failed jobs waiting for their retry.\n# TYPE renderfleet_retries_waiting_jobs gauge\nrenderfleet_retries_waiting_jobs {}", snap.queue.delayed);
    let _ = writeln!(o2, "# HELP renderfleet_jobs_finished_total Jobs that reached a final state.\n# TYPE renderfleet_jobs_finished_total counter");
    for s in ["succeeded", "dead", "cancelled"] {
        let _ = writeln!(
            o2,
            "renderfleet_jobs_finished_total{{state=\"{s}\"}} {}",
            stats.get(&format!("jobs_{s}")).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(o2, "# HELP renderfleet_attempts_failed_total Attempts that failed and were scheduled for a retry.\n# TYPE renderfleet_attempts_failed_total counter\nrenderfleet_attempts_failed_total {}", stats.get("attempts_failed").copied().unwrap_or(0));
    let _ = writeln!(o2, "# HELP renderfleet_job_duration_seconds Run time of succeeded jobs' last attempt.\n# TYPE renderfleet_job_duration_seconds histogram");
    let mut cumulative = 0i64;
    for le in DURATION_BUCKETS {
        cumulative += durations.get(&format!("b_{le}")).copied().unwrap_or(0);
        let _ = writeln!(
            o2,
            "renderfleet_job_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let count = cumulative + durations.get("b_inf").copied().unwrap_or(0);
    let _ = writeln!(
        o2,
        "renderfleet_job_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        o2,
        "renderfleet_job_duration_seconds_sum {}",
        durations.get("sum_ms").copied().unwrap_or(0) as f64 / 1000.0
    );
    let _ = writeln!(o2, "renderfleet_job_duration_seconds_count {count}");
    let _ = writeln!(o2, "# HELP renderfleet_reclaimed_jobs_total Attempts handed back from dead workers.\n# TYPE renderfleet_reclaimed_jobs_total counter\nrenderfleet_reclaimed_jobs_total {}", stats.get("reclaims").copied().unwrap_or(0));
    let _ = writeln!(o2, "# HELP renderfleet_scaling_actions_total Scaling actions by direction and what asked for them.\n# TYPE renderfleet_scaling_actions_total counter");
    for dir in ["up", "down"] {
        for reason in ["policy", "manual"] {
            let _ = writeln!(
                o2,
                "renderfleet_scaling_actions_total{{direction=\"{dir}\",reason=\"{reason}\"}} {}",
                stats
                    .get(&format!("scale_{dir}:{reason}"))
                    .copied()
                    .unwrap_or(0)
            );
        }
    }
    let _ = writeln!(o2, "# HELP renderfleet_leader Whether this coordinator holds the leader lease.\n# TYPE renderfleet_leader gauge\nrenderfleet_leader {}", u8::from(st.leading.load(Ordering::Relaxed)));
    let _ = writeln!(o2, "# HELP renderfleet_redis_errors_total Redis errors seen by this coordinator.\n# TYPE renderfleet_redis_errors_total counter\nrenderfleet_redis_errors_total {}", st.redis_errors.load(Ordering::Relaxed));
    o.push_str(&o2);
    Ok(o)
}
