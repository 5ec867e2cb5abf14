use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::moderation::Policy;

#[test]
fn defaults_follow_the_protocol() {
    let c = Config::from_args(["chat-node"]).unwrap();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.data_dir, PathBuf::from("./parley-data"));
    assert_eq!(c.moderation_policy, Policy::Mask);
    assert_eq!(c.heartbeat_interval, Duration::from_millis(15_000));
    assert_eq!(c.limits.max_text_chars, 4000);
    assert_eq!(c.limits.max_frame_bytes, 64 * 1024);
    assert_eq!((c.limits.send_rate, c.limits.send_burst), (20, 40));
}

#[test]
fn malformed_values_name_the_key() {
    for (flag, value, key) in [
        ("--listen", "not-an-address", "PARLEY_LISTEN"),
        ("--moderation-policy", "shout", "PARLEY_MODERATION_POLICY"),
        (
            "--heartbeat-interval-ms",
            "12abc",
            "PARLEY_HEARTBEAT_INTERVAL_MS",
        ),
        (
            "--heartbeat-interval-ms",
            "10",
            "PARLEY_HEARTBEAT_INTERVAL_MS",
        ),
        ("--jwt-secret", "short", "PARLEY_JWT_SECRET"),
        ("--worker-id", "1024", "PARLEY_WORKER_ID"),
        ("--public-url", "ftp://x", "PARLEY_PUBLIC_URL"),
    ] {
        let err = Config::from_args(["chat-node", flag, value])
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{flag}={value}: {err}");
    }
}

#[test]
fn distributed_mode_names_the_first_missing_key() {
    let base = ["chat-node", "--mode", "distributed"];
    let c = Config::from_args(base).unwrap();
    assert_eq!(c.distributed().unwrap_err().key, "PARLEY_DIRECTORY_URL");
    let c = Config::from_args(base.iter().copied().chain([
        "--directory-url",
        "postgres://d",
        "--shards",
        "a:0-2047:postgres://a",
    ]))
    .unwrap();
    let err = c.distributed().unwrap_err();
    assert_eq!(err.key, "PARLEY_SHARDS");
    assert!(err.problem.contains("2048-4095"), "{err}");
    let full = [
        "--directory-url",
        "postgres://d",
        "--shards",
        "a:0-2047:postgres://a;b:2048-4095:postgres://b?x=1",
        "--redis-url",
        "redis://r",
        "--kafka-bootstrap",
        "k:9092",
        "--s3-bucket",
        "m",
        "--s3-access-key-id",
        "k",
        "--s3-secret-access-key",
        "s",
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef",
        "--cluster-secret",
        "0123456789abcdef0123456789abcdef",
        "--internal-listen",
        "127.0.0.1:9180",
        "--node-name",
        "n1",
        "--nodes",
        "n1=http://127.0.0.1:9180,n2=http://127.0.0.1:9181",
    ];
    let c = Config::from_args(base.iter().copied().chain(full)).unwrap();
    let d = c.distributed().unwrap();
    assert_eq!(d.shards[1].url.expose().as_str(), "postgres://b?x=1");
    assert_eq!(d.nodes.len(), 2);
    let mut other = full.to_vec();
    let at = other.iter().position(|a| *a == "n1").unwrap();
    other[at] = "n9";
    let c = Config::from_args(base.iter().copied().chain(other)).unwrap();
    assert_eq!(c.distributed().unwrap_err().key, "PARLEY_NODES");
    let err = Config::from_args(["chat-node", "--shards", "a:0-99999:postgres://x"]).unwrap_err();
    assert!(err.to_string().contains("PARLEY_SHARDS"), "{err}");
    let c = Config::from_args(["chat-node", "migrate"]).unwrap();
    assert_eq!(c.command, Command::Migrate);
}

#[test]
fn values_can_come_from_files() {
    let dir = std::env::temp_dir().join(format!("parley-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("jwt");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let path = secret.display().to_string();
    let env = |k: &str| (k == "PARLEY_JWT_SECRET_FILE").then(|| path.clone());
    let c = Config::from_args_and_files(["chat-node"], env).unwrap();
    assert_eq!(
        c.jwt_secret.as_ref().map(|s| s.expose().as_str()),
        Some("0123456789abcdef0123456789abcdef"),
        "trailing newline dropped"
    );

    let both = |k: &str| match k {
        "PARLEY_JWT_SECRET_FILE" => Some(path.clone()),
        "PARLEY_JWT_SECRET" => Some("x".repeat(40)),
        _ => None,
    };
    let Err(StartError::Config(err)) = Config::from_args_and_files(["chat-node"], both) else {
        panic!("both a value and a file were accepted")
    };
    assert_eq!(err.key, "PARLEY_JWT_SECRET");
    let missing =
        |k: &str| (k == "PARLEY_DIRECTORY_URL_FILE").then(|| "/nonexistent/url".to_owned());
    let Err(StartError::Config(err)) = Config::from_args_and_files(["chat-node"], missing) else {
        panic!("a missing file was accepted")
    };
    assert_eq!(err.key, "PARLEY_DIRECTORY_URL");
    assert!(err.problem.contains("/nonexistent/url"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shard_maps_parse_from_one_value() {
    let specs = parse_shards(
        "a:0-1023+2048-3071:postgres://a/db;b:1024-2047+3072-4095:postgres://b/db?x=1;",
    )
    .unwrap();
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[0].slots.len(), 2);
    assert_eq!(specs[1].url.expose().as_str(), "postgres://b/db?x=1");
    assert!(parse_shards("a:0-99999:postgres://a").is_err());
}

#[test]
fn origins_are_a_comma_separated_list() {
    let c = Config::from_args([
        "chat-node",
        "--allowed-origins",
        "https://a.example,https://b.example",
    ])
    .unwrap();
    assert_eq!(
        c.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
}

#[test]
fn debug_output_shows_no_secret() {
    let secrets = [
        "jwt-0123456789abcdef0123456789abcdef",
        "internal-0123456789abcdef0123456789ab",
        "AKIA-access-key-id",
        "s3-secret-access-key",
        "directory-password",
        "shard-a-password",
        "shard-b-password",
        "redis-password",
    ];
    let c = Config::from_args([
        "chat-node",
        "--mode",
        "distributed",
        "--jwt-secret",
        secrets[0],
        "--cluster-secret",
        secrets[1],
        "--s3-access-key-id",
        secrets[2],
        "--s3-secret-access-key",
        secrets[3],
        "--directory-url",
        "postgres://parley:directory-password@db/directory",
        "--shards",
        "a:0-2047:postgres://u:shard-a-password@a/db;b:2048-4095:postgres://u:shard-b-password@b/db",
        "--redis-url",
        "redis://:redis-password@redis:6379/0",
        "--kafka-bootstrap",
        "k:9092",
        "--s3-bucket",
        "media",
        "--internal-listen",
        "127.0.0.1:9180",
        "--node-name",
        "n1",
        "--nodes",
        "n1=http://127.0.0.1:9180",
    ])
    .unwrap();
    let d = c.distributed().unwrap();
    for (what, debug) in [
        ("Config", format!("{c:?}")),
        ("Config (pretty)", format!("{c:#?}")),
        ("Distributed", format!("{d:?}")),
        ("S3Settings", format!("{:?}", d.s3)),
        ("ShardSpec", format!("{:?}", d.shards)),
    ] {
        for secret in secrets {
            assert!(!debug.contains(secret), "{what} shows {secret}: {debug}");
        }
        assert!(debug.contains("[redacted]"), "{what}: {debug}");
    }
}

#[test]
fn urls_are_bases_without_a_trailing_slash() {
    for (given, base) in [
        ("https://chat.example.com", "https://chat.example.com"),
        ("https://chat.example.com/", "https://chat.example.com"),
        (
            "http://10.0.0.5:8080/parley/",
            "http://10.0.0.5:8080/parley",
        ),
    ] {
        let c = Config::from_args(["chat-node", "--public-url", given]).unwrap();
        assert_eq!(c.public_base_url(), Some(base), "{given}");
    }
    let c = Config::from_args(["chat-node", "--nodes", "n1=http://10.0.0.1:9180/"]).unwrap();
    assert_eq!(c.cluster.nodes[0].endpoint, "http://10.0.0.1:9180");
    for bad in ["ftp://x", "http://", "localhost:8080", "http//x"] {
        assert!(
            Config::from_args(["chat-node", "--s3-endpoint", bad]).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn durations_keep_the_unit_their_key_names() {
    let c = Config::from_args(["chat-node"]).unwrap();
    assert_eq!(c.jwt_ttl, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(c.max_clock_wait, Duration::from_millis(2_000));
    assert_eq!(c.max_id_lead, Duration::from_millis(300_000));
    assert_eq!(c.drain_window, Duration::from_millis(10_000));
    assert_eq!(
        c.cluster.kafka_delivery_timeout,
        Duration::from_millis(5_000)
    );
    assert_eq!(c.cluster.node_lease, Duration::from_millis(10_000));
    assert_eq!(c.cluster.persister_linger, Duration::from_millis(20));
    assert_eq!(c.auth_limits.auth_hash_wait, Duration::from_millis(2_000));
    assert_eq!(c.http.http_header_timeout, Duration::from_millis(10_000));
    assert_eq!(c.http.http_body_timeout, Duration::from_millis(30_000));
    assert_eq!(c.http.http_idle_timeout, Duration::from_millis(120_000));
    assert_eq!(c.ws.ws_write_timeout, Duration::from_millis(10_000));
    let c = Config::from_args([
        "chat-node",
        "--jwt-ttl-secs",
        "60",
        "--heartbeat-interval-ms",
        "500",
        "--drain-ms",
        "0",
    ])
    .unwrap();
    assert_eq!(c.jwt_ttl, Duration::from_secs(60));
    assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(c.drain_window, Duration::ZERO);
    for (flag, value) in [
        ("--jwt-ttl-secs", "59"),
        ("--drain-ms", "600001"),
        ("--node-lease-ms", "1.5"),
    ] {
        let err = Config::from_args(["chat-node", flag, value]).unwrap_err();
        assert!(err.to_string().contains(value), "{flag}={value}: {err}");
    }
}

#[test]
fn every_key_is_in_the_shared_list() {
    let command = <Config as clap::CommandFactory>::command();
    let read: std::collections::BTreeSet<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|k| k.to_string_lossy().into_owned())
        .collect();
    let listed: std::collections::BTreeSet<String> =
        env::ALL.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        read, listed,
        "parley_crd::env::ALL is every key chat-node reads"
    );
}

#[test]
fn vars_alone_make_a_config() {
    let vars = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let c = Config::from_vars(
        ["chat-node", "migrate"],
        &vars(&[
            ("PARLEY_LISTEN", "0.0.0.0:9000"),
            ("PARLEY_HEARTBEAT_INTERVAL_MS", "500"),
            (
                "PARLEY_ALLOWED_ORIGINS",
                "https://a.example,https://b.example",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(c.command, Command::Migrate);
    assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
    assert_eq!(c.allowed_origins.len(), 2);
    let Err(StartError::Config(err)) =
        Config::from_vars(["chat-node"], &vars(&[("PARLEY_LISTN", "0.0.0.0:9000")]))
    else {
        panic!("an unknown key was accepted")
    };
    assert_eq!(err.key, "PARLEY_LISTN");
    let Err(StartError::Arguments(err)) =
        Config::from_vars(["chat-node"], &vars(&[("PARLEY_WORKER_ID", "1024")]))
    else {
        panic!("a worker ID out of range was accepted")
    };
    assert!(err.to_string().contains("PARLEY_WORKER_ID"), "{err}");
}

/// The chat service holds the configuration, the token keys and the media signing key; its
/// `Debug` shows none of them.
#[tokio::test]
async fn an_embedded_chat_prints_no_secret() {
    const JWT: &str = "jwt-of-the-embedded-node-0123456789abcdef";
    let dir = std::env::temp_dir().join(format!("parley-cfg-debug-{}", std::process::id()));
    let mut config = Config::for_tests(dir.clone());
    config.jwt_secret = Some(JWT.into());
    let chat = crate::node::embedded(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let blob_key = std::fs::read_to_string(dir.join("blob-key")).unwrap();
    let debug = format!("{chat:?}");
    assert!(!debug.contains(JWT), "{debug}");
    assert!(!debug.contains(blob_key.trim()), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    drop(chat);
    std::fs::remove_dir_all(&dir).ok();
}
