//! The end of a run: the presence check and the rows the shards stored.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use parley_protocol::Id;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::rest::Rest;
use super::{Finished, Setup};
use crate::Services;
use crate::history::{F, HistoryWriter, StoredRow};

/// Process 0 (a member of every group, so it shares a channel with every process) reads
/// the presence of every process until each one holding a socket reads `online`, for at
/// most 5 heartbeat intervals (the bound after which the node closes a silent connection).
/// Logged as one `presence` operation: `{observer, expected, observed, converged_after_ms
/// (null when it did not converge), bound_ms}`, keys being process numbers.
pub async fn presence_check(
    setup: &Setup,
    finished: &Finished,
    history: &HistoryWriter,
    heartbeat: Duration,
) {
    let observer = &finished.clients[0];
    let node = observer.conn_node().unwrap_or(0).min(setup.nodes.len() - 1);
    let api = observer.api.on(&setup.nodes[node].url);
    let expected: BTreeMap<String, String> = finished
        .clients
        .iter()
        .filter(|c| c.connected())
        .map(|c| (c.p.to_string(), "online".to_owned()))
        .collect();
    let by_user: BTreeMap<Id, String> = finished
        .clients
        .iter()
        .map(|c| (c.api.id(), c.p.to_string()))
        .collect();
    let ids: Vec<String> = by_user.keys().map(Id::to_string).collect();
    let path = format!("/v1/presence?user_ids={}", ids.join(","));
    let rest = Rest::new(Duration::from_secs(5));
    let bound = heartbeat * 5;
    let start = Instant::now();
    let (observed, converged) = loop {
        let observed = match rest.get(&api, &path).await {
            Ok(body) => statuses(&body, &by_user),
            Err(_) => BTreeMap::new(),
        };
        let converged = expected.iter().all(|(p, s)| observed.get(p) == Some(s));
        if converged || start.elapsed() >= bound {
            break (observed, converged);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let after = converged.then(|| start.elapsed().as_millis() as u64);
    let value = json!({
        "observer": observer.p,
        "expected": expected,
        "observed": observed,
        "converged_after_ms": after,
        "bound_ms": bound.as_millis() as u64,
    });
    let name = &setup.nodes[node].name;
    history.observe(observer.p, F::Presence, Some(name), value);
}

/// `{presence: [{user_id, status}]}` as process → status.
fn statuses(body: &Value, by_user: &BTreeMap<Id, String>) -> BTreeMap<String, String> {
    body["presence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let user: Id = e["user_id"].as_str()?.parse().ok()?;
            Some((
                by_user.get(&user)?.clone(),
                e["status"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Every row both shards hold for `channels`, by channel and seq, once the count has not
/// changed for 2 s (the persisters caught up), waiting at most 60 s. Errors: a shard did
/// not answer.
pub async fn stored_rows(services: &Services, channels: &[Id]) -> anyhow::Result<Vec<StoredRow>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: Option<(usize, Instant)> = None;
    loop {
        let rows = read_rows(services, channels).await?;
        match last {
            Some((n, since)) if n == rows.len() => {
                if since.elapsed() >= Duration::from_secs(2) || Instant::now() >= deadline {
                    return Ok(rows);
                }
            }
            _ => last = Some((rows.len(), Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

type Row = (i64, i64, i64, i64, Option<String>);

async fn read_rows(services: &Services, channels: &[Id]) -> anyhow::Result<Vec<StoredRow>> {
    let ids: Vec<i64> = channels.iter().map(|c| c.0 as i64).collect();
    let mut out = Vec::new();
    for shard in ["shard-a", "shard-b"] {
        let pool = sqlx::PgPool::connect(&services.postgres(shard).url)
            .await
            .with_context(|| format!("connecting to {shard}"))?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT channel_id, id, seq, author_id, client_msg_id FROM messages \
             WHERE channel_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await
        .with_context(|| format!("reading {shard}"))?;
        pool.close().await;
        out.extend(
            rows.into_iter()
                .map(|(c, id, seq, author, cmid)| StoredRow {
                    channel: Id(c as u64),
                    id: Id(id as u64),
                    seq: seq as u64,
                    author: Id(author as u64),
                    client_msg_id: cmid,
                }),
        );
    }
    out.sort_unstable_by_key(|r| (r.channel, r.seq, r.id));
    Ok(out)
}
