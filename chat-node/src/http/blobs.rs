//! `PUT`/`GET /v1/blobs/{key}`: the embedded stand-in for S3 presigned URLs. Only requests
//! whose signature, expiry, content type and length match are served.

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt as _;
use parley_protocol::Timestamp;

use crate::backend::local::{BlobQuery, Grant, GrantError, LocalBlobs};
use crate::error::ApiError;
use crate::http::AppState;

fn grant(
    chat: &AppState,
    method: &str,
    key: &str,
    query: Option<&str>,
) -> Result<(LocalBlobs, Grant), ApiError> {
    let blobs = chat
        .media()
        .local_blobs()
        .cloned()
        .ok_or_else(|| ApiError::not_found("this node does not serve blobs"))?;
    let q: BlobQuery = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|_| ApiError::bad_request("malformed blob URL"))?;
    let grant = blobs
        .verify(method, key, &q, Timestamp::now())
        .map_err(|e| match e {
            GrantError::Malformed(_) => ApiError::bad_request(e.to_string()),
            GrantError::BadSignature | GrantError::Expired => ApiError::forbidden(e.to_string()),
        })?;
    Ok((blobs, grant))
}

pub(super) async fn put(
    State(chat): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let (blobs, grant) = grant(&chat, "PUT", &key, query.as_deref())?;
    let Grant::Put { content_type, size } = grant else {
        return Err(ApiError::forbidden("this URL does not allow uploads"));
    };
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !sent_type.eq_ignore_ascii_case(&content_type) {
        return Err(ApiError::forbidden(format!(
            "the URL was signed for Content-Type {content_type}"
        )));
    }
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len != size
    {
        return Err(ApiError::forbidden(format!(
            "the URL was signed for {size} bytes, not {len}"
        )));
    }
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(|e| e.to_string());
    blobs
        .write(&key, &content_type, size, Box::pin(body))
        .await?;
    Ok(StatusCode::OK)
}

pub(super) async fn get(
    State(chat): State<AppState>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (blobs, _) = grant(&chat, "GET", &key, query.as_deref())?;
    let (file, meta) = blobs
        .open(&key)
        .await?
        .ok_or_else(|| ApiError::not_found("no such object"))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    Ok((
        [
            (header::CONTENT_TYPE, meta.content_type),
            (header::CONTENT_LENGTH, meta.size.to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            // Uploaded HTML or SVG must not run as this origin's page.
            (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
