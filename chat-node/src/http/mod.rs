//! HTTP: the REST API, health and metrics, local blobs and the web page, with the WebSocket
//! endpoint the node mounts at `/v1/ws` ([`crate::ws`], which builds on this module's
//! extractors and server). Every error is `{"error": {"code", "message"}}` with the
//! protocol's status.

mod blobs;
pub mod extract;
pub mod internal;
mod limits;
mod rest;
pub mod server;
mod web;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use parley_protocol::ErrorCode;

use crate::error::ApiError;

/// What every handler gets: the node's chat service (no globals).
pub type AppState = std::sync::Arc<crate::chat::Chat>;

/// Largest JSON body accepted.
const MAX_JSON_BODY: usize = 64 * 1024;

/// The node's router, without a listener, so tests can drive it directly; `websocket`
/// serves `GET /v1/ws` (`crate::ws::upgrade`).
pub fn app(state: AppState, websocket: MethodRouter<AppState>) -> Router {
    let api = Router::new()
        .route("/auth/register", post(rest::register))
        .route("/auth/login", post(rest::login))
        .route("/auth/refresh", post(rest::refresh))
        .route("/users/me", get(rest::me))
        .route("/users/{id}", get(rest::user))
        .route("/users", get(rest::user_by_name))
        .route(
            "/channels",
            post(rest::create_channel).get(rest::list_channels),
        )
        .route("/channels/lookup", get(rest::lookup_channel))
        .route("/channels/{id}", get(rest::channel))
        .route("/channels/{id}/join", post(rest::join))
        .route("/channels/{id}/leave", post(rest::leave))
        .route("/channels/{id}/members", get(rest::members))
        .route(
            "/channels/{id}/messages",
            post(rest::send).get(rest::history),
        )
        .route("/channels/{id}/read", post(rest::read))
        .route("/dms", post(rest::dm))
        .route("/sync", get(rest::sync))
        .route("/media", post(rest::create_media))
        .route("/media/{id}", get(rest::media))
        .route("/presence", get(rest::presence))
        .route("/limits", get(limits::limits))
        .route("/ws", websocket)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY));
    let blobs = Router::new()
        .route("/v1/blobs/{*key}", put(blobs::put).get(blobs::get))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .nest("/v1", api)
        .merge(blobs)
        .route("/", get(web::index))
        .route("/app.js", get(web::script))
        .route("/js/{*path}", get(web::module))
        .route("/app.css", get(web::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            count_errors,
        ))
        .with_state(state)
}

async fn count_errors(State(chat): State<AppState>, res: Response) -> Response {
    if let Some(code) = res.extensions().get::<ErrorCode>() {
        chat.metrics().error(*code);
    }
    res
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the node is not draining or shutting down and its critical backends answer;
/// the body names every backend's state.
async fn readyz(State(chat): State<AppState>) -> Response {
    match chat.lifecycle().ready().await {
        Ok(report) => health_answer(report),
        Err(e) => e.into_response(),
    }
}

/// 200 with the report when ready, 503 `unavailable` (with the report) when not.
pub fn health_answer(report: crate::health::Report) -> Response {
    if report.ready {
        return axum::Json(report).into_response();
    }
    let failing: Vec<String> = report
        .backends
        .iter()
        .filter(|(_, s)| *s != "ok")
        .map(|(n, s)| format!("{n} {s}"))
        .collect();
    let mut res =
        ApiError::unavailable(format!("not ready: {}", failing.join("; "))).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(
        &serde_json::to_string(&report.backends).unwrap_or_default(),
    ) {
        res.headers_mut().insert("x-parley-backends", v);
    }
    res
}

async fn metrics(State(chat): State<AppState>) -> Response {
    chat.metrics()
        .connections
        .set(chat.hub().connections() as i64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        chat.metrics().render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    ApiError::not_found("no such route").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::not_found("this route does not take that method").into_response()
}
