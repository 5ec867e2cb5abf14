//! The REST endpoints under `/v1` (PROTOCOL.md's table).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parley_protocol::Id;
use parley_protocol::rest::{
    AuthResponse, ChannelList, CreateChannelRequest, DmRequest, HistoryQuery, LoginRequest,
    MediaRequest, MemberList, MessagePage, PresenceList, ReadRequest, RegisterRequest,
    SendMessageRequest, SyncQuery,
};
use serde::Deserialize;

use super::extract::{Body, Caller, ClientAddr, PathId, Query};
use crate::chat::SendInput;
use crate::error::ApiError;
use crate::http::AppState;

type Result<T> = std::result::Result<T, ApiError>;

pub(super) async fn register(
    State(chat): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Body(req): Body<RegisterRequest>,
) -> std::result::Result<Response, ApiError> {
    chat.accounts().gate().check_address(addr)?;
    let auth = chat
        .accounts()
        .register(&req.username, &req.password, req.display_name.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(auth)).into_response())
}

pub(super) async fn login(
    State(chat): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Body(req): Body<LoginRequest>,
) -> std::result::Result<Json<AuthResponse>, ApiError> {
    chat.accounts().gate().check_address(addr)?;
    chat.accounts().gate().check_username(&req.username)?;
    Ok(Json(
        chat.accounts().login(&req.username, &req.password).await?,
    ))
}

/// `POST /v1/auth/refresh`: a fresh token for the holder of a valid one.
pub(super) async fn refresh(
    State(chat): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Caller(me): Caller,
) -> std::result::Result<Json<AuthResponse>, ApiError> {
    chat.accounts().gate().check_address(addr)?;
    Ok(Json(chat.accounts().refresh(me).await?))
}

pub(super) async fn me(
    State(chat): State<AppState>,
    Caller(me): Caller,
) -> Result<impl IntoResponse> {
    Ok(Json(chat.accounts().user(me).await?))
}

pub(super) async fn user(
    State(chat): State<AppState>,
    _: Caller,
    PathId(id): PathId,
) -> Result<impl IntoResponse> {
    Ok(Json(chat.accounts().user(id).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct UsernameQuery {
    username: Option<String>,
}

pub(super) async fn user_by_name(
    State(chat): State<AppState>,
    _: Caller,
    Query(q): Query<UsernameQuery>,
) -> Result<impl IntoResponse> {
    let name = q
        .username
        .ok_or_else(|| ApiError::bad_request("give ?username="))?;
    Ok(Json(chat.accounts().user_by_username(&name).await?))
}

pub(super) async fn create_channel(
    State(chat): State<AppState>,
    Caller(me): Caller,
    Body(req): Body<CreateChannelRequest>,
) -> std::result::Result<Response, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(chat.channels().create_group(me, &req.name).await?),
    )
        .into_response())
}

pub(super) async fn list_channels(
    State(chat): State<AppState>,
    Caller(me): Caller,
) -> Result<Json<ChannelList>> {
    Ok(Json(ChannelList {
        channels: chat.channels().channels_of(me).await?,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct NameQuery {
    name: Option<String>,
}

pub(super) async fn lookup_channel(
    State(chat): State<AppState>,
    _: Caller,
    Query(q): Query<NameQuery>,
) -> Result<impl IntoResponse> {
    let name = q.name.ok_or_else(|| ApiError::bad_request("give ?name="))?;
    Ok(Json(chat.channels().lookup_group(&name).await?))
}

pub(super) async fn channel(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
) -> Result<impl IntoResponse> {
    Ok(Json(chat.channels().channel_for(me, id).await?))
}

pub(super) async fn join(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
) -> Result<impl IntoResponse> {
    Ok(Json(chat.channels().join(me, id).await?))
}

pub(super) async fn leave(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
) -> Result<StatusCode> {
    chat.channels().leave(me, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn members(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
) -> Result<Json<MemberList>> {
    Ok(Json(MemberList {
        members: chat.channels().members(me, id).await?,
    }))
}

pub(super) async fn dm(
    State(chat): State<AppState>,
    Caller(me): Caller,
    Body(req): Body<DmRequest>,
) -> std::result::Result<Response, ApiError> {
    let (channel, created) = chat.channels().dm(me, req.user_id).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(channel)).into_response())
}

pub(super) async fn send(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
    Body(req): Body<SendMessageRequest>,
) -> Result<Response> {
    let input = SendInput {
        text: req.text,
        client_msg_id: req.client_msg_id,
        attachments: req.attachments,
        reply_to: req.reply_to,
    };
    Ok((
        StatusCode::CREATED,
        Json(chat.messages().send(me, id, input).await?),
    )
        .into_response())
}

pub(super) async fn history(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<MessagePage>> {
    Ok(Json(chat.history().page(me, id, &q).await?))
}

pub(super) async fn read(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
    Body(req): Body<ReadRequest>,
) -> Result<StatusCode> {
    chat.receipts().mark_read(me, id, req.message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn sync(
    State(chat): State<AppState>,
    Caller(me): Caller,
    Query(q): Query<SyncQuery>,
) -> Result<Json<MessagePage>> {
    Ok(Json(chat.history().sync(me, q.after, q.limit).await?))
}

pub(super) async fn create_media(
    State(chat): State<AppState>,
    Caller(me): Caller,
    Body(req): Body<MediaRequest>,
) -> std::result::Result<Response, ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(chat.media().create_media(me, &req).await?),
    )
        .into_response())
}

pub(super) async fn media(
    State(chat): State<AppState>,
    Caller(me): Caller,
    PathId(id): PathId,
) -> Result<impl IntoResponse> {
    Ok(Json(chat.media().media(me, id).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct PresenceQuery {
    user_ids: Option<String>,
}

pub(super) async fn presence(
    State(chat): State<AppState>,
    Caller(me): Caller,
    Query(q): Query<PresenceQuery>,
) -> Result<Json<PresenceList>> {
    let raw = q
        .user_ids
        .ok_or_else(|| ApiError::bad_request("give ?user_ids=1,2,3"))?;
    let ids = raw
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim()
                .parse::<Id>()
                .map_err(|e| ApiError::bad_request(format!("`{s}` is not an ID: {e}")))
        })
        .collect::<Result<Vec<Id>>>()?;
    Ok(Json(PresenceList {
        presence: chat.presence().visible_to(me, &ids).await?,
    }))
}
