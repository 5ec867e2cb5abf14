//! The scenario's side of the API server: a client from a kubeconfig, `helm`, bounded waits
//! that say what they saw when they give up, and what a person needs to see then (pods,
//! their containers, Events).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt as _};

/// A client for the cluster of `kubeconfig`.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    // Binaries linking two rustls providers must name one; kube uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read the kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .context("kubeconfig")?;
    Client::try_from(config).context("Kubernetes client")
}

/// `parley.dev/v1alpha1` `kind` (ChatCluster, ChatShard) as a dynamic resource, so the
/// scenario does not depend on the Rust types of the operator's version.
pub fn parley_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("parley.dev", "v1alpha1", kind))
}

/// A dynamic resource for an object's `apiVersion` and `kind`.
pub fn resource_of(obj: &serde_json::Value) -> Result<ApiResource> {
    let api_version = obj["apiVersion"].as_str().context("no apiVersion")?;
    let kind = obj["kind"].as_str().context("no kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Ok(ApiResource::from_gvk(&GroupVersionKind::gvk(
        group, version, kind,
    )))
}

/// Dynamic API of `ar` in `ns`.
pub fn dynamic(client: &Client, ns: &str, ar: &ApiResource) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, ar)
}

/// Polls `check` every `every` until it gives `Ok(Some)`, for at most `limit`. On timeout
/// the error names `what` and the last state `check` reported (`Ok(None)` keeps polling;
/// `Err` is the state to report, and polling goes on).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::from("(no answer yet)");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

/// One line per pod of `ns` matching `selector`: phase, node, and each container's state.
pub async fn pods_report(client: &Client, ns: &str, selector: Option<&str>) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    match pods.list(&lp).await {
        Err(e) => format!("(cannot list pods: {e})"),
        Ok(list) if list.items.is_empty() => "(no pods)".to_owned(),
        Ok(list) => list
            .items
            .iter()
            .map(pod_line)
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// `name phase node [container: state ...]`.
pub fn pod_line(p: &Pod) -> String {
    let status = p.status.clone().unwrap_or_default();
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| "-".into());
    let mut parts = vec![format!(
        "  pod {} {} on {node}",
        p.name_any(),
        status.phase.clone().unwrap_or_default()
    )];
    if p.metadata.deletion_timestamp.is_some() {
        parts.push("(terminating)".into());
    }
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
    {
        let state = c.state.clone().unwrap_or_default();
        let s = if let Some(r) = state.running {
            format!("running since {:?}", r.started_at.map(|t| t.0.to_string()))
        } else if let Some(t) = state.terminated {
            format!(
                "terminated exit {} {} {}",
                t.exit_code,
                t.reason.unwrap_or_default(),
                t.message.unwrap_or_default()
            )
        } else if let Some(w) = state.waiting {
            format!(
                "waiting {} {}",
                w.reason.unwrap_or_default(),
                w.message.unwrap_or_default()
            )
        } else {
            "no state".into()
        };
        parts.push(format!(
            "[{}: {s}, ready={}, restarts={}]",
            c.name, c.ready, c.restart_count
        ));
    }
    for cond in status.conditions.iter().flatten() {
        if let Some(m) = cond.message.as_ref().filter(|_| cond.status != "True") {
            parts.push(format!("({} {}: {m})", cond.type_, cond.status));
        }
    }
    parts.join(" ")
}

/// The newest `n` Events of `ns`, oldest first.
pub async fn events_report(client: &Client, ns: &str, n: usize) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    match events.list(&ListParams::default()).await {
        Err(e) => format!("(cannot list events: {e})"),
        Ok(list) => {
            let mut items = list.items;
            items.sort_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
            let start = items.len().saturating_sub(n);
            items[start..]
                .iter()
                .map(|e| {
                    format!(
                        "  event {} {}/{}: {} {}",
                        e.type_.clone().unwrap_or_default(),
                        e.involved_object.kind.clone().unwrap_or_default(),
                        e.involved_object.name.clone().unwrap_or_default(),
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

/// Runs `helm` with `args` to success within `limit`; returns its output.
pub async fn helm(
    helm: &Path,
    kubeconfig: &Path,
    args: &[&str],
    limit: Duration,
) -> Result<String> {
    let home = std::env::temp_dir().join("parley-e2e-helm");
    let mut cmd = tokio::process::Command::new(helm);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| anyhow!("helm {args:?} took longer than {limit:?}"))?
        .with_context(|| format!("cannot run {}", helm.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("helm {args:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// The `type` condition of an object's `status.conditions` as (status, reason, message).
pub fn condition(obj: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_owned();
            (s("status"), s("reason"), s("message"))
        })
}

/// Every condition of an object, one per line.
pub fn conditions_report(obj: &serde_json::Value) -> String {
    obj["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    format!(
                        "  {}={} {}: {}",
                        c["type"].as_str().unwrap_or(""),
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or(""),
                        c["message"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| "  (no conditions)".into())
}

/// Whether every container of `p` has started and is ready, and the pod is Running and not
/// being deleted.
pub fn pod_running_ready(p: &Pod) -> bool {
    let Some(status) = &p.status else {
        return false;
    };
    p.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status.container_statuses.as_ref().is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c.ready
                        && c.started != Some(false)
                        && c.state.as_ref().is_some_and(|s| s.running.is_some())
                })
        })
}

/// Whether `p` ran a container that exited 0 (a Job's pod that really ran).
pub fn pod_exited_zero(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            !cs.is_empty()
                && cs.iter().all(|c| {
                    c.state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
                })
        })
}
