//! The orchestrator's HTTP API: `db/read`, `db/write`, `db/clear`,
//! `db/backup` and `db/restore` (in [`super::backup`]), the
//! worker list, the crash APIs and the cluster view, health, metrics and
//! the OpenAPI description of the DB API (`docs/openapi.yaml`, served at
//! `/api/v1/openapi.yaml`).
//!
//! Every body is validated strictly against the schema here, before
//! anything is sent to a worker.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;

use super::common::{self, Body, BodyLimit};
use super::{admin, backup};
use crate::actors::messages::OrchestratorStats;
use crate::actors::scaler::{GetScaler, Scaler};
use crate::actors::traffic::TrafficView;
use crate::actors::watcher::{ClusterView, CrashMaster, CrashSlave, ElectionWatcher, GetCluster};
use crate::actors::OrchestratorHandle;
use crate::broker::{self, Broker};
use crate::error::Error;
use crate::model::{validate_read, validate_write, Consistency, ReadOp, Schema, WriteOp};
use crate::runtime::WorkerRuntime;

/// The dashboard: one page, its style and script inline, that polls
/// `GET /api/v1/cluster` every second.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// What the handlers share.
#[derive(Clone)]
pub struct OrchestratorState {
    pub handle: OrchestratorHandle,
    pub schema: Arc<Schema>,
    pub runtime: Arc<dyn WorkerRuntime>,
    pub watcher: actix::Addr<ElectionWatcher>,
    pub scaler: Option<actix::Addr<Scaler>>,
    /// For the queues' depths.
    pub broker: Arc<dyn Broker>,
    /// The cluster view's last round of asking the workers and the broker.
    pub probes: Probes,
}

type State = web::Data<OrchestratorState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

/// The routes, for the server and for tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(common::resource("/").route(web::get().to(dashboard)))
        .service(common::resource("/api/v1/db/read").route(web::post().to(db_read)))
        .service(common::resource("/api/v1/db/write").route(web::post().to(db_write)))
        .service(common::resource("/api/v1/db/clear").route(web::post().to(db_clear)))
        .service(common::resource("/api/v1/db/backup").route(web::get().to(backup::db_backup)))
        .service(common::resource("/api/v1/db/restore").route(web::post().to(backup::db_restore)))
        .service(common::resource("/api/v1/worker/list").route(web::get().to(worker_list)))
        .service(common::resource("/api/v1/crash/master").route(web::post().to(crash_master)))
        .service(common::resource("/api/v1/crash/slave").route(web::post().to(crash_slave)))
        .service(common::resource("/api/v1/cluster").route(web::get().to(cluster)))
        .service(common::resource("/api/v1/workers").route(web::get().to(workers)))
        .service(common::resource("/api/v1/openapi.yaml").route(web::get().to(openapi)))
        .service(common::resource("/metrics").route(web::get().to(metrics)))
        .service(common::resource("/healthz").route(web::get().to(common::healthz)));
}

/// The orchestrator's HTTP server on `listener`.
pub fn server(
    listener: TcpListener,
    state: OrchestratorState,
    body_limit: usize,
    workers: usize,
) -> std::io::Result<Server> {
    admin::warn_if_open("orchestrator", listener.local_addr().ok());
    let state = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(BodyLimit(body_limit))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                actix_web::error::InternalError::from_response(
                    "query",
                    common::bad_request(format!("bad query: {e}")),
                )
                .into()
            }))
            .configure(configure)
            .default_service(web::to(common::not_found))
    })
    .workers(workers)
    .disable_signals()
    .listen(listener)?
    .run())
}

async fn db_read(state: State, params: web::Query<ReadParams>, Body(body): Body) -> HttpResponse {
    let read = async {
        let op: ReadOp = common::parse_json(&body)?;
        validate_read(&state.schema, &op)?;
        state.handle.read(op, params.consistency).await
    };
    common::reply(read.await)
}

async fn db_write(state: State, req: HttpRequest, Body(body): Body) -> HttpResponse {
    let write = async {
        let key = request_key(req.headers())?;
        let op: WriteOp = common::parse_json(&body)?;
        validate_write(&state.schema, &op)?;
        state.handle.write_keyed(op, key).await
    };
    common::reply(write.await)
}

/// The header by which a client names a write, so that sending it again
/// (to this orchestrator or another, after a failure that left it unknown
/// whether the write was applied) applies it once and answers what the
/// first applied write answered.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The idempotency key a request came with, if any: one header, a UUID
/// (8-4-4-4-12 hex digits) or 32 hex digits. Several are refused: which
/// would it be?
pub fn request_key(headers: &actix_web::http::header::HeaderMap) -> Result<Option<u128>, Error> {
    let mut keys = headers.get_all(IDEMPOTENCY_KEY);
    let Some(value) = keys.next() else {
        return Ok(None);
    };
    if keys.next().is_some() {
        return Err(Error::bad(format!("more than one {IDEMPOTENCY_KEY}")));
    }
    parse_idempotency_key(value.as_bytes()).map(Some)
}

/// A UUID (hyphens after the 8th, 12th, 16th and 20th digits) or 32 hex
/// digits without hyphens, either case.
pub fn parse_idempotency_key(value: &[u8]) -> Result<u128, Error> {
    let bad = || Error::bad(format!("{IDEMPOTENCY_KEY} must be a UUID (32 hex digits)"));
    let digits: Vec<u8> = match value.len() {
        32 => value.to_vec(),
        36 if [8, 13, 18, 23].iter().all(|&i| value[i] == b'-') => value
            .iter()
            .enumerate()
            .filter(|(i, _)| ![8, 13, 18, 23].contains(i))
            .map(|(_, b)| *b)
            .collect(),
        _ => return Err(bad()),
    };
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    let text = std::str::from_utf8(&digits).map_err(|_| bad())?;
    u128::from_str_radix(text, 16).map_err(|_| bad())
}

async fn db_clear(state: State, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = admin::refusal(&req) {
        return refused;
    }
    let cleared = state.handle.write(WriteOp::Clear { table: None }).await;
    common::reply(cleared.map(|_| serde_json::json!({})))
}

/// Every worker's pid, master included, ascending: those registered with
/// the coordinator (whichever orchestrator started them) and those this
/// one's runtime runs.
async fn worker_list(state: State) -> HttpResponse {
    let mut pids: Vec<u64> = state.runtime.list().iter().map(|w| w.pid).collect();
    if let Ok(view) = state.watcher.send(GetCluster).await {
        pids.extend(view.workers.iter().map(|w| w.pid));
    }
    pids.sort_unstable();
    pids.dedup();
    common::ok_json(&pids)
}

/// Kills the master (SIGKILL to its process); answers `["<pid>"]`. The
/// election starts at once.
async fn crash_master(state: State, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = admin::refusal(&req) {
        return refused;
    }
    crashed(state.watcher.send(CrashMaster).await)
}

/// Kills the slave with the highest pid; answers `["<pid>"]`.
async fn crash_slave(state: State, req: HttpRequest) -> HttpResponse {
    if let Some(refused) = admin::refusal(&req) {
        return refused;
    }
    crashed(state.watcher.send(CrashSlave).await)
}

fn crashed(res: Result<crate::error::Result<u64>, actix::MailboxError>) -> HttpResponse {
    let pid = res
        .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))
        .and_then(|r| r);
    common::reply(pid.map(|pid| [pid.to_string()]))
}

/// Every worker's pid, role, applied seq, lag and state, the master, the
/// epoch, recent events and the Scaler's last decision.
async fn cluster(state: State) -> HttpResponse {
    match full_view(&state).await {
        Ok(view) => common::ok_json(&view),
        Err(e) => common::from_error(&e),
    }
}

/// How long the view waits for a worker's or the broker's answer: one that
/// is paused or cut off shows without its figure rather than holding up
/// the page.
const VIEW_PATIENCE: std::time::Duration = std::time::Duration::from_millis(300);

/// What `GET /api/v1/cluster` answers: the election watcher's view (with
/// the Scaler's and each worker's reads served), the orchestrator's
/// counters, the last minute of traffic and the queues' depths.
#[derive(serde::Serialize)]
struct FullView {
    #[serde(flatten)]
    view: ClusterView,
    #[serde(skip_serializing_if = "Option::is_none")]
    orchestrator: Option<OrchestratorStats>,
    traffic: TrafficView,
    queues: BTreeMap<String, u64>,
}

/// What the view asks the workers and the broker: each worker's reads
/// served, the queues' depths.
#[derive(Clone, Default)]
struct Probed {
    /// The workers asked, answered or not.
    asked: Vec<u64>,
    served: BTreeMap<u64, u64>,
    queues: BTreeMap<String, u64>,
}

/// How long probed figures serve: pollers (the dashboard, `dbaas status`,
/// tests waiting for a state) share one round of asking at most this
/// often, so polling the view costs the workers and the broker nothing
/// more as it grows more frequent.
const PROBE_FRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// The last round of probes; one caller asks while the others wait for it.
#[derive(Clone, Default)]
pub struct Probes(Arc<tokio::sync::Mutex<Option<(std::time::Instant, Probed)>>>);

impl Probes {
    async fn get(&self, state: &OrchestratorState, view: &ClusterView) -> Probed {
        let mut last = self.0.lock().await;
        if let Some((at, probed)) = last.as_ref() {
            let known = view.workers.iter().all(|w| probed.asked.contains(&w.id));
            if at.elapsed() < PROBE_FRESH && known {
                return probed.clone();
            }
        }
        let probed = probe(state, view).await;
        *last = Some((std::time::Instant::now(), probed.clone()));
        probed
    }
}

async fn probe(state: &OrchestratorState, view: &ClusterView) -> Probed {
    let patient = |f| tokio::time::timeout(VIEW_PATIENCE, f);
    let served = futures::future::join_all(
        view.workers
            .iter()
            .map(|w| patient(state.runtime.status(w.id))),
    )
    .await;
    let served = view
        .workers
        .iter()
        .zip(served)
        .filter_map(|(w, s)| Some((w.id, s.ok()?.ok()?.reads_served)))
        .collect();
    let mut names = vec![broker::READ_Q.to_owned(), broker::WRITE_Q.to_owned()];
    if let Ok(replies) = state.handle.reply_queue().await {
        names.push(replies);
    }
    names.extend(
        view.workers
            .iter()
            .filter(|w| view.master != Some(w.pid))
            .map(|w| broker::sync_queue(w.id)),
    );
    let depths = futures::future::join_all(
        names
            .iter()
            .map(|q| tokio::time::timeout(VIEW_PATIENCE, state.broker.depth(q))),
    )
    .await;
    let queues = names
        .into_iter()
        .zip(depths)
        .filter_map(|(q, d)| Some((q, d.ok()?.ok()??)))
        .collect();
    Probed {
        asked: view.workers.iter().map(|w| w.id).collect(),
        served,
        queues,
    }
}

async fn full_view(state: &OrchestratorState) -> crate::error::Result<FullView> {
    let mut view = state
        .watcher
        .send(GetCluster)
        .await
        .map_err(|e| Error::Unavailable(format!("election watcher: {e}")))?;
    if let Some(scaler) = &state.scaler {
        view.scaler = scaler.send(GetScaler).await.ok();
    }
    let probed = state.probes.get(state, &view).await;
    for w in view.workers.iter_mut() {
        w.reads_served = probed.served.get(&w.id).copied();
    }
    Ok(FullView {
        view,
        orchestrator: state.handle.stats().await.ok(),
        traffic: state.handle.traffic().view(),
        queues: probed.queues,
    })
}

/// Every worker with its role and how far it got.
async fn workers(state: State) -> HttpResponse {
    let mut out = Vec::new();
    for w in state.runtime.list() {
        let status = state.runtime.status(w.id).await.ok();
        out.push(serde_json::json!({ "worker": w, "status": status }));
    }
    common::ok_json(&out)
}

async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(DASHBOARD)
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(OPENAPI)
}

/// Each worker's applied seq and lag behind the master, labelled with its
/// id, pid and role, in the Prometheus text format.
fn worker_metrics(workers: &[crate::actors::watcher::WorkerView]) -> String {
    let mut applied = String::from("# TYPE dbaas_worker_applied_seq gauge\n");
    let mut lag = String::from("# TYPE dbaas_worker_lag gauge\n");
    for w in workers {
        let role = serde_json::to_value(w.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let labels = format!("id=\"{}\",pid=\"{}\",role=\"{role}\"", w.id, w.pid);
        applied.push_str(&format!(
            "dbaas_worker_applied_seq{{{labels}}} {}\n",
            w.applied
        ));
        lag.push_str(&format!("dbaas_worker_lag{{{labels}}} {}\n", w.lag));
    }
    applied + &lag
}

/// Counters in the Prometheus text format.
/// The queues' depths, failovers, respawns, deaths and scaling decisions,
/// and the last minute's latencies.
fn cluster_metrics(full: &FullView) -> String {
    let view = &full.view;
    let mut out = String::from("# TYPE dbaas_queue_depth gauge\n");
    for (q, n) in &full.queues {
        out.push_str(&format!("dbaas_queue_depth{{queue=\"{q}\"}} {n}\n"));
    }
    let total = |kind: &str| view.totals.get(kind).copied().unwrap_or(0);
    out.push_str(&format!(
        "# TYPE dbaas_failovers_total counter\ndbaas_failovers_total {}\n\
         # TYPE dbaas_elections_total counter\ndbaas_elections_total {}\n\
         # TYPE dbaas_respawns_total counter\ndbaas_respawns_total {}\n\
         # TYPE dbaas_worker_deaths_total counter\ndbaas_worker_deaths_total {}\n\
         # TYPE dbaas_scaling_decisions_total counter\ndbaas_scaling_decisions_total {}\n",
        total("failover"),
        total("election"),
        total("respawn"),
        total("death"),
        total("scale"),
    ));
    out.push_str("# TYPE dbaas_events_total counter\n");
    for (kind, n) in view.totals.iter().filter(|(k, _)| **k != "failover") {
        out.push_str(&format!("dbaas_events_total{{kind=\"{kind}\"}} {n}\n"));
    }
    let t = &full.traffic;
    out.push_str("# TYPE dbaas_request_latency_ms gauge\n");
    for (kind, k) in [("read", &t.reads), ("write", &t.writes)] {
        for (q, v) in [("0.5", k.p50_ms), ("0.99", k.p99_ms)] {
            if let Some(v) = v {
                out.push_str(&format!(
                    "dbaas_request_latency_ms{{kind=\"{kind}\",quantile=\"{q}\"}} {v}\n"
                ));
            }
        }
    }
    out
}

async fn metrics(state: State) -> HttpResponse {
    let Ok(s) = state.handle.stats().await else {
        return common::error_response(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "orchestrator actor is down",
        );
    };
    let mut body = format!(
        "# TYPE dbaas_reads_total counter\ndbaas_reads_total {}\n\
         # TYPE dbaas_writes_total counter\ndbaas_writes_total {}\n\
         # TYPE dbaas_last_acked_seq gauge\ndbaas_last_acked_seq {}\n\
         # TYPE dbaas_epoch gauge\ndbaas_epoch {}\n\
         # TYPE dbaas_in_flight gauge\ndbaas_in_flight {}\n\
         # TYPE dbaas_batches_in_flight gauge\n\
         dbaas_batches_in_flight{{kind=\"read\"}} {}\n\
         dbaas_batches_in_flight{{kind=\"write\"}} {}\n\
         # TYPE dbaas_batches_sent_total counter\n\
         dbaas_batches_sent_total{{kind=\"read\"}} {}\n\
         dbaas_batches_sent_total{{kind=\"write\"}} {}\n\
         # TYPE dbaas_batched_requests_total counter\n\
         dbaas_batched_requests_total{{kind=\"read\"}} {}\n\
         dbaas_batched_requests_total{{kind=\"write\"}} {}\n\
         # TYPE dbaas_head_asks_total counter\ndbaas_head_asks_total {}\n\
         # TYPE dbaas_strong_reads_checked_total counter\n\
         dbaas_strong_reads_checked_total{{sent=\"beside_ask\"}} {}\n\
         dbaas_strong_reads_checked_total{{sent=\"again\"}} {}\n\
         # TYPE dbaas_workers gauge\ndbaas_workers {}\n",
        s.reads,
        s.writes,
        s.last_acked_seq,
        s.epoch,
        s.in_flight,
        s.read_batches,
        s.write_batches,
        s.read_batches_sent,
        s.write_batches_sent,
        s.reads_sent,
        s.writes_sent,
        s.head_asks,
        s.reads_beside_ask,
        s.reads_again,
        state.runtime.list().len()
    );
    // Each worker as the election watcher last heard of it, the queues,
    // and what the watcher and the Scaler did.
    if let Ok(view) = full_view(&state).await {
        body.push_str(&worker_metrics(&view.view.workers));
        body.push_str(&cluster_metrics(&view));
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}
