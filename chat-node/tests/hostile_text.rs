//! Hostile text (issue 11): names that look alike, text that is only invisible characters,
//! and moderation bypasses, driven over real HTTP on an embedded node; and the migrations
//! that give existing databases the new name keys (SQLite file, real PostgreSQL).

mod common;

use common::TestNode;
use serde_json::json;

/// Composed `é` (U+00E9) and decomposed `e` + U+0301.
const CAFE_COMPOSED: &str = "Caf\u{e9}";
const CAFE_DECOMPOSED: &str = "Cafe\u{301}";

#[tokio::test]
async fn group_names_compare_by_nfc_and_full_case_folding() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let strasse = alice.create_group("Straße").await;

    for same in ["STRASSE", "strasse", "Stra\u{200b}ße", "  STRAẞE "] {
        let r = alice.post("/v1/channels", &json!({"name": same})).await;
        assert_eq!(
            (r.status, r.code()),
            (409, "conflict"),
            "`{same}` is the group `Straße`: {:?}",
            r.body
        );
    }
    for same in ["strasse", "STRASSE", "straße"] {
        let r = alice.get(&format!("/v1/channels/lookup?name={same}")).await;
        assert_eq!(r.status, 200, "lookup `{same}`: {:?}", r.body);
        assert_eq!(r.body["id"], strasse.to_string());
        assert_eq!(r.body["name"], "Straße", "the name is kept as given");
    }

    let cafe = alice.create_group(CAFE_COMPOSED).await;
    let r = alice
        .post("/v1/channels", &json!({"name": CAFE_DECOMPOSED}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, "conflict"),
        "a decomposed Café is the composed one: {:?}",
        r.body
    );
    let r = alice.get("/v1/channels/lookup?name=CAFE\u{301}").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["id"], cafe.to_string());

    // Stored NFC-normalized: a group created decomposed reads back composed.
    let r = alice
        .post("/v1/channels", &json!({"name": "Re\u{301}sume\u{301}"}))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["name"], "R\u{e9}sum\u{e9}");
}

#[tokio::test]
async fn usernames_that_look_alike_are_refused() {
    // More registrations from one address than the default burst allows.
    let node = TestNode::with(|c| c.auth_limits.auth_address_burst = 1_000).await;
    let api = node.api();
    for (taken, lookalike) in [
        ("mallory", "rnallory"),
        ("paypal", "PAYPA1"),
        ("bob_01", "BOB_Ol"),
        ("oscar", "0scar"),
        ("will", "wiII"),
    ] {
        node.user(taken).await;
        let r = api
            .post(
                "/v1/auth/register",
                &json!({"username": lookalike, "password": "long enough password"}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (409, "conflict"),
            "`{lookalike}` looks like `{taken}`: {:?}",
            r.body
        );
    }
    // Not confusable: a different digit.
    node.user("bob_02").await;

    // Every lookup goes through the same key as registration.
    let mallory = node.user("Mallory_X").await;
    let r = mallory.get("/v1/users?username=MALLORY_x").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["username"], "Mallory_X");
    let r = api
        .post(
            "/v1/auth/login",
            &json!({"username": "mallory_x", "password": "password-Mallory_X"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Usernames stay ASCII (the v1 contract): a look-alike from another script is refused
    // as a bad username before any comparison.
    let r = api
        .post(
            "/v1/auth/register",
            &json!({"username": "p\u{430}ypal", "password": "long enough password"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"));
}

const INVISIBLE: [&str; 5] = [
    "\u{200b}",
    "\u{200b}\u{2060}\u{feff}",
    " \u{ad} \u{200b}\n\u{2060} ",
    "\u{180e}\u{3164}",
    "\u{200c}\u{200d}\u{fe0f}",
];

#[tokio::test]
async fn text_that_is_only_invisible_characters_is_blank() {
    let node = TestNode::start().await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    for text in INVISIBLE {
        let r = alice
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": text}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "message {text:?}: {:?}",
            r.body
        );
        let r = alice.post("/v1/channels", &json!({"name": text})).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "group name {text:?}: {:?}",
            r.body
        );
    }
    for (i, text) in INVISIBLE.iter().enumerate() {
        let r = node
            .api()
            .post(
                "/v1/auth/register",
                &json!({"username": format!("blank{i}"), "password": "long enough password", "display_name": text}),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "display name {text:?}: {:?}",
            r.body
        );
    }
    // Visible text with invisible characters inside is fine and kept as sent.
    let m = alice.send(group, "hi\u{200b}there 👨\u{200d}👩").await;
    assert_eq!(m["text"], "hi\u{200b}there 👨\u{200d}👩");
    let nothing = alice
        .get(&format!("/v1/channels/{group}/messages"))
        .await
        .body["messages"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(nothing, 1, "only the visible message was stored");
}

#[tokio::test]
async fn moderation_sees_through_invisible_characters_lookalikes_and_spacing() {
    let dir = common::temp_dir("words");
    let words = dir.join("words.txt");
    std::fs::write(&words, "darn\nbad word\n").unwrap();
    let w = words.clone();
    let node = TestNode::with(move |c| c.moderation_words_file = Some(w)).await;
    let alice = node.user("alice").await;
    let group = alice.create_group("g").await;
    for (sent, shown) in [
        // zero-width space, soft hyphen, word joiner inside the word: masked with it
        ("d\u{200b}arn it", "***** it"),
        ("da\u{ad}rn it", "***** it"),
        ("oh dar\u{2060}n", "oh *****"),
        // Cyrillic а (U+0430) for Latin a
        ("d\u{430}rn it", "**** it"),
        // Cyrillic capital А and fullwidth Ｎ
        ("D\u{410}RＮ", "****"),
        // doubled spaces, a tab, a newline inside a listed phrase
        ("a bad  word here", "a ********* here"),
        ("bad\t \nword", "**********"),
        ("bad \u{200b} word", "**********"),
    ] {
        let m = alice.send(group, sent).await;
        assert_eq!(m["text"], shown, "{sent:?}");
        assert_eq!(m["moderated"], true, "{sent:?}");
    }
    // Innocent text with the same tricks stays as sent.
    for innocent in ["d\u{200b}arning socks", "bad\u{200b}words", "dam it"] {
        let m = alice.send(group, innocent).await;
        assert_eq!(m["text"], innocent);
        assert_eq!(m["moderated"], false, "{innocent:?}");
    }

    let w = words.clone();
    let strict = TestNode::with(move |c| {
        c.moderation_words_file = Some(w);
        c.moderation_policy = chat_node::moderation::Policy::Reject;
    })
    .await;
    let bob = strict.user("bob").await;
    let group = bob.create_group("g").await;
    for sent in ["d\u{200b}arn", "d\u{430}rn", "bad   word"] {
        let r = bob
            .post(
                &format!("/v1/channels/{group}/messages"),
                &json!({"text": sent}),
            )
            .await;
        assert_eq!((r.status, r.code()), (422, "content_rejected"), "{sent:?}");
    }
}

/// The embedded store's version-1 schema with rows written as version-1 code wrote them
/// (keys lower-cased with `str::to_lowercase`).
async fn sqlite_v1(path: &std::path::Path, groups: &[(i64, &str)], users: &[(i64, &str)]) {
    use sqlx::ConnectOptions as _;
    use std::str::FromStr as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::raw_sql(include_str!("../src/backend/sqlite/schema.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql("PRAGMA user_version = 1")
        .execute(&mut conn)
        .await
        .unwrap();
    for (id, name) in groups {
        sqlx::query(
            "INSERT INTO channels (id, kind, name, name_key, created_by, created_at) VALUES (?, 'group', ?, ?, 1, 0)",
        )
        .bind(id)
        .bind(name)
        .bind(name.to_lowercase())
        .execute(&mut conn)
        .await
        .unwrap();
    }
    for (id, name) in users {
        sqlx::query(
            "INSERT INTO users (id, username, username_key, display_name, password_hash, created_at) VALUES (?, ?, ?, ?, 'x', 0)",
        )
        .bind(id)
        .bind(name)
        .bind(name.to_lowercase())
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    sqlx::Connection::close(conn).await.unwrap();
}

#[tokio::test]
async fn an_existing_sqlite_database_gets_the_new_name_keys() {
    use chat_node::backend::sqlite::{SqliteStore, open};
    use chat_node::backend::{ChannelStore as _, UserStore as _};
    let dir = common::temp_dir("names-v1");
    let path = dir.join("parley.db");
    sqlite_v1(
        &path,
        &[(10, CAFE_COMPOSED), (11, "Straße")],
        &[(20, "bob"), (21, "b0b"), (22, "carol")],
    )
    .await;
    let pool = open(&path).await.unwrap();
    let store = SqliteStore::new(pool.clone());
    let found = store.group_by_name(CAFE_DECOMPOSED).await.unwrap();
    assert_eq!(found.map(|c| c.id.0), Some(10), "decomposed lookup");
    let found = store.group_by_name("STRASSE").await.unwrap();
    assert_eq!(found.map(|c| c.id.0), Some(11), "full case folding");
    // Existing look-alike users keep working; a new look-alike is refused.
    assert!(store.user_by_username("B0B").await.unwrap().is_some());
    let r = store
        .create_user(&chat_node::backend::UserRecord {
            id: parley_protocol::Id(23),
            username: "caro1".into(),
            display_name: "x".into(),
            password_hash: "x".into(),
            created_at: parley_protocol::Timestamp(0),
        })
        .await;
    assert!(
        matches!(r, Err(chat_node::backend::BackendError::Conflict(_))),
        "{r:?}"
    );
    pool.close().await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn an_existing_sqlite_database_with_colliding_names_refuses_to_open() {
    let dir = common::temp_dir("names-collide");
    let path = dir.join("parley.db");
    sqlite_v1(&path, &[(10, "Straße"), (11, "STRASSE")], &[]).await;
    let err = chat_node::backend::sqlite::open(&path)
        .await
        .expect_err("two groups whose names are now the same");
    let msg = err.to_string();
    assert!(
        msg.contains("Straße") && msg.contains("STRASSE") && msg.contains("10"),
        "the message names both groups: {msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A PostgreSQL schema of its own on the directory server, holding the version-1 directory
/// as `chat-node migrate` of version 1 left it, with `groups` and `users` written as
/// version-1 code wrote them.
async fn postgres_v1(groups: &[(i64, &str)], users: &[(i64, &str)]) -> (sqlx::PgPool, String) {
    use sha2::Digest as _;
    let services = parley_e2e::services();
    let url = services.postgres("directory").url.clone();
    let schema = format!("names_v1_{}_{}", std::process::id(), rand::random::<u32>());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    let v1 = include_str!("../../migrations/directory/0001_init.sql");
    sqlx::raw_sql(
        "CREATE TABLE parley_schema_migrations (version INT PRIMARY KEY, name TEXT NOT NULL, \
         checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::raw_sql(v1).execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO parley_schema_migrations (version, name, checksum) VALUES (1, '0001_init.sql', $1)")
        .bind(hex::encode(sha2::Sha256::digest(v1.as_bytes())))
        .execute(&pool)
        .await
        .unwrap();
    for (id, name) in groups {
        sqlx::query(
            "INSERT INTO channels (id, kind, name, name_key, created_by, created_at) VALUES ($1, 'group', $2, $3, 1, 0)",
        )
        .bind(id)
        .bind(name)
        .bind(name.to_lowercase())
        .execute(&pool)
        .await
        .unwrap();
    }
    for (id, name) in users {
        sqlx::query(
            "INSERT INTO users (id, username, username_key, display_name, password_hash, created_at) VALUES ($1, $2, $3, $2, 'x', 0)",
        )
        .bind(id)
        .bind(name)
        .bind(name.to_lowercase())
        .execute(&pool)
        .await
        .unwrap();
    }
    (pool, schema)
}

async fn drop_schema(pool: sqlx::PgPool, schema: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn an_existing_postgres_directory_gets_the_new_name_keys() {
    use chat_node::backend::postgres::{Schema, migrate};
    let (pool, schema) = postgres_v1(
        &[(10, CAFE_DECOMPOSED), (11, "Straße")],
        &[(20, "bob"), (21, "b0b"), (22, "Mallory")],
    )
    .await;
    assert!(migrate(&pool, Schema::Directory).await.unwrap() >= 1);
    let keys: Vec<(i64, String)> = sqlx::query_as("SELECT id, name_key FROM channels ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        keys,
        [(10, "caf\u{e9}".to_owned()), (11, "strasse".to_owned())]
    );
    let skeletons: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, username_skeleton FROM users ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(skeletons.len(), 3);
    assert!(
        skeletons[0].1.is_some(),
        "the first `bob` holds the skeleton"
    );
    assert_eq!(
        skeletons[1].1, None,
        "an existing look-alike keeps its account, without the skeleton"
    );
    assert!(skeletons[2].1.is_some());
    // Again: nothing to do.
    assert_eq!(migrate(&pool, Schema::Directory).await.unwrap(), 0);
    drop_schema(pool, &schema).await;
}

#[tokio::test]
async fn an_existing_postgres_directory_with_colliding_names_refuses_to_migrate() {
    use chat_node::backend::postgres::{Schema, migrate};
    let (pool, schema) = postgres_v1(&[(10, "Straße"), (11, "STRASSE")], &[]).await;
    let err = migrate(&pool, Schema::Directory)
        .await
        .expect_err("two groups whose names are now the same");
    let msg = err.to_string();
    assert!(
        msg.contains("Straße") && msg.contains("STRASSE") && msg.contains("10"),
        "the message names both groups: {msg}"
    );
    drop_schema(pool, &schema).await;
}
