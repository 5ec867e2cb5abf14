//! What clients without an account can make `/v1/auth/*` cost, on a real embedded node over
//! HTTP: bounded password hashing (excess shed with `unavailable`), rate limits per client
//! address and per username (`rate_limited`), and token refresh.

mod common;

use std::time::Duration;

use common::TestNode;
use serde_json::{Value, json};

/// A raw answer: status, `Retry-After` (seconds) and JSON body.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> Answer {
    let mut req = http.post(format!("{base}{path}")).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("request sent");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

async fn login(http: &reqwest::Client, base: &str, username: &str, password: &str) -> Answer {
    post(
        http,
        base,
        "/v1/auth/login",
        None,
        &json!({"username": username, "password": password}),
    )
    .await
}

/// Rate limits that never get in the way of a test about something else.
fn no_rate_limits(c: &mut chat_node::config::Config) {
    let l = &mut c.auth_limits;
    l.auth_address_per_min = 1_000_000;
    l.auth_address_burst = 1_000_000;
    l.auth_username_per_min = 1_000_000;
    l.auth_username_burst = 1_000_000;
}

#[tokio::test]
async fn password_hashes_beyond_the_limit_are_shed_with_unavailable() {
    // One hash at a time and one request waiting: a burst of parallel logins (each an
    // argon2id hash of 19 MiB) finds the slot busy and the queue full.
    let node = TestNode::with(|c| {
        no_rate_limits(c);
        c.auth_limits.auth_hash_concurrency = Some(1);
        c.auth_limits.auth_hash_queue = 1;
        c.auth_limits.auth_hash_wait = Duration::from_millis(10_000);
    })
    .await;
    let http = reqwest::Client::new();
    let burst = (0..24).map(|i| {
        let (http, base) = (http.clone(), node.base.clone());
        async move { login(&http, &base, &format!("nobody{i}"), "some password").await }
    });
    let answers = futures_util::future::join_all(burst).await;
    let shed: Vec<&Answer> = answers.iter().filter(|a| a.status == 503).collect();
    let refused = answers.iter().filter(|a| a.status == 401).count();
    assert_eq!(
        shed.len() + refused,
        answers.len(),
        "every login of an unknown user is 401 or shed: {answers:?}"
    );
    assert!(
        !shed.is_empty(),
        "24 parallel logins with 1 hash slot and a queue of 1: none was shed"
    );
    assert!(refused >= 1, "the logins that got a slot were answered");
    for a in &shed {
        assert_eq!(a.code(), "unavailable", "{a:?}");
        assert!(a.retry_after.is_some_and(|s| s >= 1), "Retry-After: {a:?}");
    }
    // At most one hash ran at any time, and every answered login (known user or not) cost
    // one hash.
    let hashing = &node.chat.accounts().gate();
    assert_eq!(hashing.peak_hashes(), 1, "hashes at once");
    // Once the burst is over, a slot is free again.
    let alice = node.user("alice").await;
    let ok = login(&http, &node.base, "alice", "password-alice").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body["user"]["id"], json!(alice.id().to_string()));
    node.stop().await;
}

#[tokio::test]
async fn a_waiting_login_gets_the_slot_once_it_is_free() {
    // Queue room for all: nothing is shed, and no more than 2 hashes ever run at once.
    let node = TestNode::with(|c| {
        no_rate_limits(c);
        c.auth_limits.auth_hash_concurrency = Some(2);
        c.auth_limits.auth_hash_queue = 100;
        c.auth_limits.auth_hash_wait = Duration::from_millis(60_000);
    })
    .await;
    let http = reqwest::Client::new();
    let before = node.chat.accounts().gate().hashes_done();
    let burst = (0..8).map(|i| {
        let (http, base) = (http.clone(), node.base.clone());
        async move { login(&http, &base, &format!("nobody{i}"), "some password").await }
    });
    let answers = futures_util::future::join_all(burst).await;
    assert!(answers.iter().all(|a| a.status == 401), "{answers:?}");
    let hashing = &node.chat.accounts().gate();
    assert!(
        hashing.peak_hashes() <= 2,
        "{} at once",
        hashing.peak_hashes()
    );
    // An unknown user costs a hash like a wrong password (no timing difference to probe).
    assert_eq!(hashing.hashes_done() - before, 8);
    node.stop().await;
}

#[tokio::test]
async fn auth_requests_are_rate_limited_per_client_address() {
    let node = TestNode::with(|c| {
        no_rate_limits(c);
        c.auth_limits.auth_address_per_min = 1;
        c.auth_limits.auth_address_burst = 3;
    })
    .await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for i in 0..5 {
        // A different username each time: only the address is common.
        let a = login(&http, &node.base, &format!("guess{i}"), "some password").await;
        statuses.push(a.status);
        if a.status == 429 {
            limited.get_or_insert(a);
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let limited = limited.unwrap();
    assert_eq!(limited.code(), "rate_limited");
    // 1 a minute: the next one is up to 60 s away.
    assert!(
        limited.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{limited:?}"
    );
    // Register and refresh share the address's budget.
    let r = post(
        &http,
        &node.base,
        "/v1/auth/register",
        None,
        &json!({"username": "newcomer", "password": "long enough"}),
    )
    .await;
    assert_eq!((r.status, r.code()), (429, "rate_limited"), "{r:?}");
    node.stop().await;
}

#[tokio::test]
async fn logins_are_rate_limited_per_username() {
    let node = TestNode::with(|c| {
        no_rate_limits(c);
        c.auth_limits.auth_username_per_min = 1;
        c.auth_limits.auth_username_burst = 2;
    })
    .await;
    node.user("victim").await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(login(&http, &node.base, "victim", "guess").await.status);
    }
    assert_eq!(statuses, [401, 401, 429]);
    // The same name in another case is the same account, so the same budget.
    let a = login(&http, &node.base, "VICTIM", "guess").await;
    assert_eq!((a.status, a.code()), (429, "rate_limited"), "{a:?}");
    assert!(
        a.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{a:?}"
    );
    // Another username is not affected.
    assert_eq!(login(&http, &node.base, "other", "guess").await.status, 401);
    node.stop().await;
}

fn exp_of(token: &str) -> i64 {
    use base64_payload::decode;
    let payload = token.split('.').nth(1).expect("a JWT has three parts");
    let claims: Value = serde_json::from_slice(&decode(payload)).expect("JSON claims");
    claims["exp"].as_i64().expect("exp")
}

/// Base64url without padding, enough for a JWT payload (no extra dependency).
mod base64_payload {
    pub(super) fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        };
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in s.bytes() {
            acc = (acc << 6) | u32::from(val(c));
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}

#[tokio::test]
async fn a_valid_token_is_refreshed_into_a_fresh_one() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let old = alice.token.clone().unwrap();
    let http = reqwest::Client::new();
    // Tokens carry whole seconds: the fresh one must come from a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = post(
        &http,
        &node.base,
        "/v1/auth/refresh",
        Some(&old),
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let fresh = r.body["token"].as_str().expect("token").to_owned();
    assert_eq!(r.body["user"]["id"], json!(alice.id().to_string()));
    assert_eq!(r.body["user"]["username"], json!("alice"));
    assert!(
        exp_of(&fresh) > exp_of(&old),
        "the fresh token lives longer"
    );
    let mut api = node.api();
    api.token = Some(fresh);
    let me = api.get("/v1/users/me").await;
    assert_eq!(me.status, 200, "{me:?}");

    // No token, or a bad one: 401.
    let r = post(&http, &node.base, "/v1/auth/refresh", None, &json!({})).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = post(
        &http,
        &node.base,
        "/v1/auth/refresh",
        Some("x.y.z"),
        &json!({}),
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    node.stop().await;
}
