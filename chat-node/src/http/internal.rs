//! The node-to-node API (`PARLEY_INTERNAL_LISTEN`), served only in distributed mode and
//! authenticated by the shared cluster secret. Its paths and bodies are in
//! [`crate::internal`], which the calling side uses too.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parley_protocol::Message;

use super::AppState;
use crate::error::ApiError;
use crate::internal::{
    HOP_HEADER, Hop, Prepared, SECRET_HEADER, SEQUENCE_PATH, STATE_PATH, StateRequest,
    StateResponse,
};
use crate::secret::Secret;

/// The internal router; every route but `/healthz` needs [`SECRET_HEADER`] = `secret`.
pub fn router(state: AppState, secret: Secret) -> Router {
    let secret = std::sync::Arc::new(secret);
    Router::new()
        .route(SEQUENCE_PATH, post(sequence))
        .route(STATE_PATH, post(channel_state))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn(move |req, next| {
            authenticate(secret.clone(), req, next)
        }))
        .with_state(state)
}

/// Compares in time independent of where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(secret: std::sync::Arc<Secret>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same(given, secret.expose().as_bytes()) {
        return ApiError::unauthorized("wrong cluster secret").into_response();
    }
    next.run(req).await
}

async fn sequence(
    State(chat): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(p): Json<Prepared>,
) -> Result<Json<Message>, ApiError> {
    let hop = if headers.contains_key(HOP_HEADER) {
        Hop::Again
    } else {
        Hop::First
    };
    Ok(Json(chat.sequencing().sequence_forwarded(p, hop).await?))
}

async fn channel_state(
    State(chat): State<AppState>,
    Json(r): Json<StateRequest>,
) -> Result<Json<StateResponse>, ApiError> {
    Ok(Json(StateResponse {
        channels: chat.sequencing().local_state(&r.channels, r.after).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
    }
}
