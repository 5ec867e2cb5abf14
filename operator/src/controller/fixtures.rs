//! A scripted API server for reconcile tests (controller-rs's fixtures pattern): a real
//! `kube::Client` over a `tower_test::mock` service, and a task that answers each request
//! with the next [`Exchange`] of a script, failing the test at the first request that is not
//! the one expected, and when the script is not used up.
//!
//! ```text
//!   reconcile ──kube::Client──► tower_test Mock ══► ApiServer task: request n == script[n]?
//!        ◄─────────────────────────────────────────  script[n].reply (JSON, echo, Status)
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::client::Body;
use parking_lot::Mutex;
use parley_crd::resources::{ChatShard, ChatShardSpec};
use serde::Serialize;

pub use crate::resources::fixtures::cluster;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// How the scripted server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body.
    Json(serde_json::Value),
    /// 200 with the request's own body: what an apply, a create or a patch answers, near
    /// enough (the object has no status).
    Echo,
    /// A `Status` error of this HTTP code (404 is `NotFound`, 409 `AlreadyExists`).
    Status(u16),
}

impl Reply {
    /// 200 with `object` as JSON.
    pub fn object(object: &impl Serialize) -> Self {
        Reply::Json(serde_json::to_value(object).expect("a test object serializes"))
    }

    /// 200 with a list of `items` (only `items` is read by the client).
    pub fn list<K: Serialize>(items: &[K]) -> Self {
        Reply::Json(serde_json::json!({"metadata": {}, "items": items}))
    }

    fn response(&self, request: &Seen) -> Response<Body> {
        let (code, body) = match self {
            Reply::Json(v) => (200, v.clone()),
            Reply::Echo => (200, request.body.clone()),
            Reply::Status(code) => {
                let reason = match code {
                    404 => "NotFound",
                    409 => "AlreadyExists",
                    _ => "InternalError",
                };
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "message": format!("scripted {code}"), "reason": reason, "code": code,
                });
                (*code, status)
            }
        };
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
            .expect("a response")
    }
}

/// One expected request and its answer. `path` is matched exactly, or as a prefix when it
/// ends in `*` (a name with a hash in it).
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: Method,
    pub path: String,
    pub reply: Reply,
}

impl Exchange {
    pub fn get(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::GET, path, reply)
    }

    pub fn post(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::POST, path, reply)
    }

    pub fn patch(path: impl Into<String>, reply: Reply) -> Self {
        Self::new(Method::PATCH, path, reply)
    }

    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Self {
        Self {
            method,
            path: path.into(),
            reply,
        }
    }

    fn matches(&self, seen: &Seen) -> bool {
        let path = match self.path.strip_suffix('*') {
            Some(prefix) => seen.path.starts_with(prefix),
            None => seen.path == self.path,
        };
        path && seen.method == self.method
    }
}

/// A request the reconcile made.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    /// The query string (`fieldManager=...&force=true`, a `labelSelector`).
    pub query: String,
    /// The body as JSON (`Null` when empty).
    pub body: serde_json::Value,
}

impl Seen {
    async fn read(request: Request<Body>) -> Self {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("a request body");
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        Self {
            method,
            path,
            query,
            body,
        }
    }

    /// `METHOD path`, as failures print it.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The server side of a [`client`].
pub struct ApiServer {
    handle: Handle,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer").finish_non_exhaustive()
    }
}

/// A `kube::Client` whose requests go to the returned [`ApiServer`].
pub fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

impl ApiServer {
    /// Runs `work` while answering its requests with `script`, in order; what `work`
    /// returned and every request it made. Panics (failing the test) at a request that is
    /// not the next in the script, at one past its end, and when `work` ends before the
    /// script does.
    pub async fn replay<T>(
        self,
        script: Vec<Exchange>,
        work: impl Future<Output = T>,
    ) -> (T, Vec<Seen>) {
        let expected = script.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut server = tokio::spawn(serve(self.handle, script, seen.clone()));
        let out = work.await;
        match tokio::time::timeout(Duration::from_millis(20), &mut server).await {
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(_) => {}
            Err(_idle) => server.abort(),
        }
        let seen = std::mem::take(&mut *seen.lock());
        if seen.len() < expected.len() {
            let next = &expected[seen.len()];
            panic!(
                "the reconcile made {} of the {} requests scripted; the next was {} {}",
                seen.len(),
                expected.len(),
                next.method,
                next.path
            );
        }
        (out, seen)
    }
}

async fn serve(mut handle: Handle, script: Vec<Exchange>, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut script = script.into_iter();
    while let Some((request, send)) = handle.next_request().await {
        let got = Seen::read(request).await;
        let n = seen.lock().len() + 1;
        let Some(exchange) = script.next() else {
            panic!("request {n}, {}, is past the end of the script", got.line());
        };
        assert!(
            exchange.matches(&got),
            "request {n}: expected {} {}, got {}",
            exchange.method,
            exchange.path,
            got.line()
        );
        let response = exchange.reply.response(&got);
        seen.lock().push(got);
        send.send_response(response);
    }
}

/// The API path of the `K` called `name` in `namespace` (`None`: every namespace's
/// collection, or a cluster-scoped kind's).
pub fn path<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: Option<&str>) -> String {
    let collection = K::url_path(&(), namespace);
    match name {
        Some(name) => format!("{collection}/{name}"),
        None => collection,
    }
}

/// A ChatShard of the cluster `alpha` in `chat`, its URL in the Secret `<name>-db`.
pub fn shard(name: &str, slots: &[&str]) -> ChatShard {
    let spec: ChatShardSpec = serde_json::from_value(serde_json::json!({
        "clusterRef": {"name": "alpha"},
        "slots": slots,
        "postgres": {"secretRef": {"name": format!("{name}-db"), "key": "url"}}
    }))
    .expect("a ChatShard spec");
    let mut s = ChatShard::new(name, spec);
    s.metadata.namespace = Some("chat".into());
    s.metadata.generation = Some(1);
    s
}

/// A Secret in `chat` with `data` (as the API server returns it: base64 `data`).
pub fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("chat".into());
    s
}
