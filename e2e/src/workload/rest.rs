//! REST calls of the workload that may fail (a paused or dead node): a timeout on each, and
//! the failure as a value, never a panic.

use std::time::Duration;

use parley_protocol::Id;
use serde_json::Value;

use crate::client::{Api, body_of};

/// Why a REST call did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestError {
    /// No answer within the timeout.
    Timeout,
    /// The connection failed or broke.
    Closed,
    /// An error answer: the status and the protocol's error code.
    Status(u16, String),
}

impl RestError {
    /// The history's `error`: the protocol code, `timeout` or `closed`.
    pub(crate) fn code(&self) -> &str {
        match self {
            RestError::Timeout => "timeout",
            RestError::Closed => "closed",
            RestError::Status(_, code) => code,
        }
    }

    /// Whether the answer proves the request changed nothing: a 4xx does; a 5xx
    /// (`unavailable`), a timeout or a close do not.
    pub(crate) fn is_definite(&self) -> bool {
        matches!(self, RestError::Status(s, _) if (400..500).contains(s))
    }
}

impl std::fmt::Display for RestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestError::Status(s, code) => write!(f, "{s} {code}"),
            other => f.write_str(other.code()),
        }
    }
}

/// A message of a history page, as the checker needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Msg {
    pub(crate) channel: Id,
    pub(crate) id: Id,
    pub(crate) seq: u64,
}

impl Msg {
    /// A protocol `Message` object; `None` when it lacks the fields.
    pub(crate) fn of(v: &Value) -> Option<Msg> {
        let id = |k: &str| v[k].as_str().and_then(|s| s.parse().ok());
        Some(Msg {
            channel: id("channel_id")?,
            id: id("id")?,
            seq: v["seq"].as_u64()?,
        })
    }
}

/// An HTTP client whose every call times out.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    http: reqwest::Client,
}

impl Rest {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("an HTTP client"),
        }
    }

    async fn call(&self, req: reqwest::RequestBuilder, api: &Api) -> Result<Value, RestError> {
        let req = match &api.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let res = req.send().await.map_err(|e| {
            if e.is_timeout() {
                RestError::Timeout
            } else {
                RestError::Closed
            }
        })?;
        let status = res.status().as_u16();
        let body = body_of(res.text().await.map_err(|_| RestError::Closed)?);
        if status >= 400 {
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            return Err(RestError::Status(status, code));
        }
        Ok(body)
    }

    /// `POST {api.base}{path}` with an empty JSON object.
    pub(crate) async fn post(&self, api: &Api, path: &str) -> Result<Value, RestError> {
        let req = self
            .http
            .post(format!("{}{path}", api.base))
            .json(&serde_json::json!({}));
        self.call(req, api).await
    }

    /// `GET {api.base}{path}`.
    pub(crate) async fn get(&self, api: &Api, path: &str) -> Result<Value, RestError> {
        self.call(self.http.get(format!("{}{path}", api.base)), api)
            .await
    }

    /// The messages of `channel` with `after` < id < `until` (all after `after` without
    /// `until`), oldest first, page after page (100 each).
    pub(crate) async fn messages_between(
        &self,
        api: &Api,
        channel: Id,
        after: Id,
        until: Option<Id>,
    ) -> Result<Vec<Msg>, RestError> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let path = format!("/v1/channels/{channel}/messages?after={after}&limit=100");
            let page = self.get(api, &path).await?;
            let mut msgs: Vec<Msg> = page["messages"]
                .as_array()
                .map(|a| a.iter().filter_map(Msg::of).collect())
                .unwrap_or_default();
            msgs.sort_unstable_by_key(|m| m.id);
            let Some(last) = msgs.last().map(|m| m.id) else {
                return Ok(out);
            };
            let reached = until.is_some_and(|u| last >= u);
            out.extend(msgs.into_iter().filter(|m| until.is_none_or(|u| m.id < u)));
            if reached || page["has_more"] != Value::Bool(true) {
                return Ok(out);
            }
            after = last;
        }
    }
}
