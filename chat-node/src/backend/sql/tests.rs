//! The SQL values on SQLite (in memory): `Id`, `Timestamp`, `Unsigned` and `IdList` round
//! trip or fail; none wraps. (PostgreSQL: the conformance suite's `ids_at_the_edges`.)

use parley_protocol::{Id, Timestamp};
use sqlx::SqlitePool;

use super::{IdList, Unsigned};

/// One connection to an in-memory database (values only: no schema needed).
async fn memory() -> SqlitePool {
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap()
}

#[tokio::test]
async fn ids_and_timestamps_round_trip() {
    let pool = memory().await;
    for (id, at) in [
        (Id(0), Timestamp(i64::MIN)),
        (Id(1), Timestamp(-1)),
        (Id(1 << 40), Timestamp(0)),
        (Id::MAX, Timestamp(i64::MAX)),
    ] {
        let back: (Id, Timestamp, Option<Id>) = sqlx::query_as("SELECT $1, $2, $3")
            .bind(id)
            .bind(at)
            .bind(Some(id))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(back, (id, at, Some(id)));
    }
}

fn is_encode_error(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Encode(_))
}

#[tokio::test]
async fn an_id_above_id_max_is_an_encode_error_not_a_wrap() {
    let pool = memory().await;
    for big in [Id(Id::MAX.0 + 1), Id(u64::MAX)] {
        let e = sqlx::query("SELECT $1")
            .bind(big)
            .fetch_one(&pool)
            .await
            .unwrap_err();
        assert!(is_encode_error(&e), "{e:?}");
        assert!(
            e.to_string().contains("outside 0..=9223372036854775807"),
            "{e}"
        );
        let e = sqlx::query("SELECT $1")
            .bind(IdList(&[Id(1), big]))
            .fetch_one(&pool)
            .await
            .unwrap_err();
        assert!(is_encode_error(&e), "{e:?}");
    }
    let e = sqlx::query("SELECT $1")
        .bind(Unsigned(u64::MAX))
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(is_encode_error(&e), "{e:?}");
}

#[tokio::test]
async fn a_negative_column_is_no_id() {
    let pool = memory().await;
    let e = sqlx::query_scalar::<_, Id>("SELECT -1")
        .fetch_one(&pool)
        .await
        .unwrap_err();
    assert!(matches!(e, sqlx::Error::ColumnDecode { .. }), "{e:?}");
}

#[tokio::test]
async fn an_id_list_matches_its_ids() {
    let pool = memory().await;
    let ids = [Id(3), Id::MAX, Id(0)];
    let mut found: Vec<Id> = sqlx::query_scalar(
        "SELECT value FROM json_each($1) WHERE value IN (0, 3, 9223372036854775807)",
    )
    .bind(IdList(&ids))
    .fetch_all(&pool)
    .await
    .unwrap();
    found.sort();
    assert_eq!(found, [Id(0), Id(3), Id::MAX]);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM json_each($1)")
        .bind(IdList(&[]))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let u: i64 = sqlx::query_scalar("SELECT $1")
        .bind(Unsigned(Id::MAX.get()))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(u, i64::MAX);
}
