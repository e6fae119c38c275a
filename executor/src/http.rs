//! The HTTP front end (axum): inference, model list, health and Prometheus metrics.
//!
//! - `POST /v1/models/{model}/infer`: body `{"input": [f32, ...]}` or `{}` (or empty). 200 with
//!   the result; 429 `deadline` when the SLO cannot be met; 503 when no replica can take it
//!   (`group_down`, `no_replica`, `queue_full`, `shutting_down`) or an admitted request lost its
//!   group; 400 bad JSON; 404 unknown model; 413 body over the limit.
//! - `POST /v1/workload/start`: body `{"plan_time_s": t}` or `{}` (t = 0): the workload starts now,
//!   at plan time `t`, so a multi-segment plan switches at its start times on the workload's clock
//!   (a load generator announces this before its first request; otherwise the first arrival is
//!   plan time 0). 200 with the epoch; 409 `workload_started` once the epoch is set.
//! - `GET /v1/models`, `GET /healthz`, `GET /metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::core::RejectReason;
use crate::error::{ExecutorError, Result};
use crate::executor::{Executor, InferError};

/// Front-end limits.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 1 << 20,
        }
    }
}

#[derive(Clone)]
struct App {
    exec: Arc<Executor>,
    max_body_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    input: Option<Vec<f32>>,
}

/// The body of a successful `infer` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferResponse {
    pub id: u64,
    pub model: String,
    /// Global group index (over all segments), as in simulator reports.
    pub group: usize,
    pub segment: usize,
    pub arrival_s: f64,
    pub start_s: f64,
    pub finish_s: f64,
    pub latency_s: f64,
    pub deadline_s: f64,
    pub good: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Vec<f32>>,
}

fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into(), "reason": reason });
    (status, Json(body)).into_response()
}

/// The router over a running executor.
pub fn router(exec: Arc<Executor>, opts: &HttpOptions) -> Router {
    let app = App {
        exec,
        max_body_bytes: opts.max_body_bytes,
    };
    Router::new()
        .route("/v1/models/{model}/infer", post(infer))
        .route("/v1/workload/start", post(start_workload))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn infer(State(app): State<App>, Path(model): Path<String>, body: Body) -> Response {
    let exec = &app.exec;
    let Some(m) = exec.model_id(&model) else {
        exec.metrics().bad_request();
        return error(
            StatusCode::NOT_FOUND,
            "unknown_model",
            format!("unknown model \"{model}\"; GET /v1/models lists them"),
        );
    };
    let bytes = match axum::body::to_bytes(body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            exec.metrics().bad_request();
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {} bytes", app.max_body_bytes),
            );
        }
    };
    let req: InferRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        InferRequest { input: None }
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                exec.metrics().bad_request();
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("invalid request body: {e}"),
                );
            }
        }
    };
    match exec.infer(m, req.input.as_deref()).await {
        Ok(s) => Json(InferResponse {
            id: s.id,
            model,
            group: s.ticket.global_group,
            segment: s.ticket.segment,
            arrival_s: s.ticket.arrival_s,
            start_s: s.ticket.start_s,
            finish_s: s.finish_s,
            latency_s: s.latency_s,
            deadline_s: s.ticket.deadline_s,
            good: s.good,
            output: s.output,
        })
        .into_response(),
        Err(InferError::Rejected(RejectReason::Deadline)) => error(
            StatusCode::TOO_MANY_REQUESTS,
            RejectReason::Deadline.as_str(),
            "rejected at arrival: the SLO cannot be met",
        ),
        Err(InferError::Rejected(r)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            r.as_str(),
            format!("rejected at arrival: {}", r.as_str().replace('_', " ")),
        ),
        Err(InferError::Failed(why)) => error(StatusCode::SERVICE_UNAVAILABLE, "failed", why),
        Err(InferError::TimedOut) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "timed_out",
            "no answer within the deadline plus the grace period",
        ),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    plan_time_s: f64,
}

async fn start_workload(State(app): State<App>, body: Body) -> Response {
    let exec = &app.exec;
    let Ok(bytes) = axum::body::to_bytes(body, 4096).await else {
        exec.metrics().bad_request();
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the workload start takes a body of at most 4096 bytes",
        );
    };
    let req: StartRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        StartRequest { plan_time_s: 0.0 }
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(r) => r,
            Err(e) => {
                exec.metrics().bad_request();
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("invalid request body: {e}"),
                );
            }
        }
    };
    if !(req.plan_time_s.is_finite() && req.plan_time_s >= 0.0) {
        exec.metrics().bad_request();
        return error(
            StatusCode::BAD_REQUEST,
            "bad_plan_time",
            format!(
                "plan_time_s: expected a finite number ≥ 0, found {}",
                req.plan_time_s
            ),
        );
    }
    match exec.start_workload_at(req.plan_time_s) {
        Ok(epoch_s) => Json(serde_json::json!({
            "epoch_s": epoch_s,
            "plan_time_s": req.plan_time_s,
        }))
        .into_response(),
        Err(epoch_s) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": "the workload already started; its epoch cannot move",
                "reason": "workload_started",
                "epoch_s": epoch_s,
            })),
        )
            .into_response(),
    }
}

async fn models(State(app): State<App>) -> Response {
    let list: Vec<_> = app
        .exec
        .model_names()
        .iter()
        .enumerate()
        .map(|(m, name)| serde_json::json!({ "name": name, "slo_s": app.exec.slo_s(m) }))
        .collect();
    Json(serde_json::json!({ "models": list, "runner": app.exec.runner_name() })).into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    Json(serde_json::json!({ "status": "ok", "inflight": app.exec.inflight() })).into_response()
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.exec.metrics().render(),
    )
        .into_response()
}

/// Serves `exec` on `listener` until `shutdown` resolves, then stops taking connections, lets
/// every accepted request finish, and stops the workers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    exec: Arc<Executor>,
    opts: HttpOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> Result<()> {
    let app = router(exec.clone(), &opts);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| ExecutorError::io("HTTP server", e))?;
    let left = tokio::task::spawn_blocking(move || exec.shutdown(drain_timeout))
        .await
        .unwrap_or(0);
    if left > 0 {
        tracing::warn!(left, "stopped with requests still outstanding");
    }
    Ok(())
}

/// Binds `addr` (refusing nothing: callers choose loopback by default).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ExecutorError::io(format!("cannot listen on {addr}"), e))
}
