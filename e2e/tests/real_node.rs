//! The end-to-end scenario (`parley_e2e::kube`) on dev/k8s's real node: the operator chart
//! installed from the images `dev/images` built, the sample applied against the dev/services
//! databases (fresh ones per run, dropped afterwards), clients only through `dev/edge`'s
//! Traefik, and the cluster churned under traffic. `dev/test` runs it with `--ignored`.

use std::path::{Path, PathBuf};
use std::process::Command;

use parley_e2e::kube::{Options, Until, backends};
use serde_json::Value;
use sqlx::Connection as _;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `dev/<tool> status` as JSON.
fn status(tool: &str) -> Value {
    let out = Command::new(repo().join("dev").join(tool))
        .arg("status")
        .output()
        .unwrap_or_else(|e| panic!("cannot run dev/{tool} status: {e}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "dev/{tool} status printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The dev/services description, with every field (the typed one drops what it does not
/// know, such as Kafka's listener for pods).
fn services() -> Value {
    let path = std::env::var_os(parley_e2e::SERVICES_FILE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(parley_e2e::default_services_file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run dev/services up", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `url` with its database replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, _) = url
        .rsplit_once('/')
        .expect("a PostgreSQL URL has a database");
    format!("{base}/{db}")
}

/// Fresh databases for one run, created on the dev/services servers and dropped at the end.
struct Databases {
    /// (server URL from the host, database name)
    created: Vec<(String, String)>,
}

impl Databases {
    async fn create(services: &Value, run: &str) -> (Self, [String; 4]) {
        let mut created = Vec::new();
        let mut urls = Vec::new();
        for (role, suffix) in [
            ("directory", "dir"),
            ("shard-a", "a"),
            ("shard-b", "b"),
            ("shard-a", "c"),
        ] {
            let url = services["postgres"][role]["url"]
                .as_str()
                .unwrap_or_else(|| panic!("dev/services has no postgres {role}"))
                .to_owned();
            let db = format!("e2e_{run}_{suffix}");
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {role}: {e}"));
            // The name is ours: `e2e_` and lowercase letters and digits.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {db} on {role}: {e}"));
            let _ = conn.close().await;
            urls.push(with_database(&url, &db));
            created.push((url, db));
        }
        let urls: [String; 4] = urls.try_into().unwrap();
        (Self { created }, urls)
    }

    async fn drop_all(self) {
        for (url, db) in self.created {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                {
                    eprintln!("could not drop {db}: {e}");
                }
                let _ = conn.close().await;
            }
        }
    }
}

fn env_or(name: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs dev/k8s up --real-node, dev/images build+load and dev/edge up; dev/test runs it with --ignored"]
async fn parley_runs_on_the_real_node_through_the_edge() {
    let k8s = status("k8s");
    let real = &k8s["real_node"];
    assert_eq!(
        real["ready"], true,
        "the real node is not ready: run dev/k8s up --real-node (status: {real})"
    );
    let node_ip = env_or("PARLEY_NODE_IP", || {
        real["node_ip"].as_str().unwrap_or("198.18.1.1").to_owned()
    });
    let edge_url = env_or("PARLEY_EDGE_URL", || {
        let edge = status("edge");
        assert_eq!(
            edge["running"], true,
            "dev/edge is not running: run dev/edge up ({edge})"
        );
        edge["url"]
            .as_str()
            .expect("dev/edge status has a url")
            .to_owned()
    });
    let kubeconfig = k8s["kubeconfig"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".state/k8s/kubeconfig"));
    let helm = repo().join(".state/k8s/bin/helm");
    assert!(helm.exists(), "no {}: run dev/k8s up", helm.display());

    let services = services();
    let run = parley_e2e::kube::unique_suffix();
    let (databases, urls) = Databases::create(&services, &run).await;
    let pod_urls = urls.map(|u| backends::rehost(&u, "127.0.0.1", &node_ip));
    let b = backends::from_dev_services(&services, &node_ip, pod_urls).unwrap();
    let backends_file = std::env::temp_dir().join(format!("parley-e2e-{run}-backends.json"));
    std::fs::write(&backends_file, serde_json::to_string_pretty(&b).unwrap()).unwrap();

    let options = Options {
        kubeconfig,
        edge_url,
        // A host of this run's own: the Ingress of an earlier run still being deleted (or
        // kept with PARLEY_E2E_KEEP) would otherwise share it, and the edge would spread
        // this run's clients over that run's pods. Browsers resolve *.localhost to
        // loopback, so a kept run can be watched at http://<host>:18080.
        host: format!("chat-{run}.parley.localhost"),
        ingress_class: "traefik".into(),
        helm,
        chart: repo().join("charts/parley-operator"),
        sample: repo().join("examples/chatcluster.yaml"),
        operator_image: "parley/operator:dev".into(),
        node_image: "parley/chat-node:dev".into(),
        pull_policy: "IfNotPresent".into(),
        backends: backends_file.clone(),
        node_selector: Vec::new(),
        tolerations: Vec::new(),
        real_node: true,
        namespace_prefix: "parley-e2e".into(),
        keep: std::env::var_os("PARLEY_E2E_KEEP").is_some(),
        wait_secs: 300,
        listeners: 8,
        send_every_ms: 100,
        operator_replicas: 2,
        until: Until::All,
    };
    println!(
        "[real-node] ingress host {} at {} (with PARLEY_E2E_KEEP=1 the cluster stays: open http://{}:{} in a browser)",
        options.host,
        options.edge_url,
        options.host,
        options.edge_url.rsplit(':').next().unwrap_or("80"),
    );
    let result = parley_e2e::kube::run(&options).await;
    if !options.keep {
        databases.drop_all().await;
    }
    let _ = std::fs::remove_file(Path::new(&backends_file));
    match result {
        Ok(summary) => println!("{summary}"),
        Err(e) => panic!("{e:#}"),
    }
}
