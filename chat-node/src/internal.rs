//! The node-to-node API (`PARLEY_INTERNAL_LISTEN`), authenticated by the shared cluster
//! secret:
//!
//! - `POST /internal/v1/sequence`: a send prepared (validated, moderated) on the node the
//!   client is connected to, sequenced by the channel's owner;
//! - `POST /internal/v1/state`: the owner's last seq and recent (maybe not yet stored)
//!   messages of some channels, for read-your-writes history, sync and resume everywhere.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use parley_crd::Member;
use parley_protocol::rest::ErrorResponse;
use parley_protocol::{ErrorCode, Id, Message};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::backend::{AttachmentRecord, StoredMessage};
use crate::error::ApiError;

/// Header carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-parley-cluster-secret";
/// Marks a send forwarded a second time (by a node that is no longer the channel's owner):
/// its receiver sequences it or refuses it, never forwards it again.
pub const HOP_HEADER: &str = "x-parley-forwarded";

/// A send that passed every check on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub author: Id,
    pub channel: Id,
    pub text: String,
    pub moderated: bool,
    pub client_msg_id: Option<String>,
    pub attachments: Vec<AttachmentRecord>,
    pub reply_to: Option<Id>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateRequest {
    pub channels: Vec<Id>,
    /// Only recent messages with a larger id (none: all recent messages).
    pub after: Option<Id>,
}

/// One channel's state on its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChannelState {
    pub id: Id,
    pub last_seq: u64,
    pub recent: Vec<StoredMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateResponse {
    pub channels: Vec<ChannelState>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/internal/v1/sequence", post(sequence))
        .route("/internal/v1/state", post(channel_state))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(chat): State<AppState>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let Some(cluster) = &chat.cluster else {
        return ApiError::not_found("not a cluster node").into_response();
    };
    let given = req
        .headers()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same(given, cluster.secret.as_bytes()) {
        return ApiError::unauthorized("wrong cluster secret").into_response();
    }
    next.run(req).await
}

async fn sequence(
    State(chat): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(p): Json<Prepared>,
) -> Result<Json<Message>, ApiError> {
    let hop = headers.contains_key(HOP_HEADER);
    Ok(Json(chat.sequence_forwarded(p, hop).await?))
}

async fn channel_state(
    State(chat): State<AppState>,
    Json(r): Json<StateRequest>,
) -> Result<Json<StateResponse>, ApiError> {
    Ok(Json(StateResponse {
        channels: chat.local_state(&r.channels, r.after).await?,
    }))
}

/// Calls `path` on `member`, relaying its error answers.
pub async fn call<B: Serialize, T: serde::de::DeserializeOwned>(
    chat: &crate::chat::Chat,
    member: &Member,
    path: &str,
    body: &B,
) -> Result<T, ApiError> {
    call_with(chat, member, path, body, false).await
}

/// [`call`] for a send forwarded a second time ([`HOP_HEADER`]).
pub async fn call_hop<B: Serialize, T: serde::de::DeserializeOwned>(
    chat: &crate::chat::Chat,
    member: &Member,
    path: &str,
    body: &B,
) -> Result<T, ApiError> {
    call_with(chat, member, path, body, true).await
}

async fn call_with<B: Serialize, T: serde::de::DeserializeOwned>(
    chat: &crate::chat::Chat,
    member: &Member,
    path: &str,
    body: &B,
    hop: bool,
) -> Result<T, ApiError> {
    let cluster = chat
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("not a cluster node"))?;
    let mut req = cluster
        .http
        .post(format!("{}{path}", member.endpoint))
        .header(SECRET_HEADER, &cluster.secret);
    if hop {
        req = req.header(HOP_HEADER, "1");
    }
    let res =
        req.json(body).send().await.map_err(|e| {
            ApiError::unavailable(format!("node {} is unreachable: {e}", member.name))
        })?;
    let status = res.status();
    if status.is_success() {
        return res.json().await.map_err(|e| {
            ApiError::unavailable(format!("node {} answered badly: {e}", member.name))
        });
    }
    match res.json::<ErrorResponse>().await {
        Ok(e) => Err(ApiError::new(e.error.code, e.error.message)),
        Err(_) if status == StatusCode::NOT_FOUND => Err(ApiError::unavailable(format!(
            "node {} is not a cluster node",
            member.name
        ))),
        Err(_) => Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("node {} answered {status}", member.name),
        )),
    }
}
