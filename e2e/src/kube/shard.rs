//! Step 5's third ChatShard: it takes half of one shard's slots, a half that holds none of
//! the test's channels (moving slots moves no data), and then serves a channel whose slot
//! moved. [`choose_split`] and [`third_shard`] plan it without I/O.

use anyhow::{Context as _, Result, bail, ensure};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::chat::{Chat, message_ids};
use super::edge::{self, Edge};
use super::run::Run;
use super::sample;
use super::{backends, k8s, log};

impl Run<'_> {
    /// Adds the third ChatShard under traffic and checks that it serves.
    pub(super) async fn add_shard(
        &mut self,
        edge: &Edge,
        s: &sample::Sample,
        b: &backends::Backends,
        chat: &Chat,
    ) -> Result<()> {
        // Slots of every channel of the two users: none of them may move (no data moves).
        let busy = busy_slots(edge, chat).await?;
        let (split, new_name) = self.split_shard(s, b, &busy).await?;
        self.new_shard_serves(edge, chat, &split, &new_name).await
    }

    /// Chooses the split, applies the new shard (database `b.shard_urls[2]`) and its Secret,
    /// shrinks the donor, and waits until the map in force has three ready shards. Answers
    /// the split and the new shard's name.
    async fn split_shard(
        &mut self,
        s: &sample::Sample,
        b: &backends::Backends,
        busy: &[u16],
    ) -> Result<(Split, String)> {
        let ranges = s
            .shards
            .iter()
            .map(sample::slot_range)
            .collect::<Result<Vec<_>>>()?;
        let split = choose_split(&ranges, busy).with_context(|| {
            format!("no half of a shard is free of the test's channels (slots {busy:?})")
        })?;
        let donor = &s.shards[split.shard];
        let new_name = format!("{}-c", self.cluster_name);
        let (shard, secret) = third_shard(donor, &new_name, &split, &b.shard_urls[2]);
        log(format_args!(
            "shard {} keeps {}-{}, new shard {new_name} takes {}-{}",
            sample::name_of(donor),
            split.keep.0,
            split.keep.1,
            split.moved.0,
            split.moved.1
        ));
        self.apply(&secret).await?;
        self.apply(&shard).await?;
        let shards = k8s::dynamic(&self.client, &self.ns, &k8s::parley_resource("ChatShard"));
        shards
            .patch(
                sample::name_of(donor),
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"spec": {"slots": [format!("{}-{}", split.keep.0, split.keep.1)]}}),
                ),
            )
            .await?;
        let new = new_name.clone();
        self.wait_ready("the map in force to have three shards", |c| {
            let map = c["status"]["shards"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = map.iter().all(|s| s["ready"] == true);
            let has_new = map.iter().any(|s| s["name"] == new.as_str());
            if map.len() == 3 && ready && has_new {
                Ok(())
            } else {
                Err(format!("map in force {}", Value::Array(map)))
            }
        })
        .await?;
        Ok((split, new_name))
    }

    /// The new shard serves: a channel whose slot moved takes and gives back a message.
    async fn new_shard_serves(
        &self,
        edge: &Edge,
        chat: &Chat,
        split: &Split,
        new_name: &str,
    ) -> Result<()> {
        for attempt in 1..=32 {
            let g = edge
                .expect(
                    reqwest::Method::POST,
                    "/v1/channels",
                    Some(&chat.a.token),
                    Some(&json!({"name": format!("e2e-{}-s{attempt}", self.unique)})),
                    201,
                )
                .await?;
            let id = edge::id(&g["id"])?;
            let slot = parley_crd::slot_of(id);
            if !(split.moved.0..=split.moved.1).contains(&slot) {
                continue;
            }
            let m = edge
                .expect(
                    reqwest::Method::POST,
                    &format!("/v1/channels/{id}/messages"),
                    Some(&chat.a.token),
                    Some(&json!({"text": "on the new shard"})),
                    201,
                )
                .await?;
            let r = edge
                .expect(
                    reqwest::Method::GET,
                    &format!("/v1/channels/{id}/messages"),
                    Some(&chat.a.token),
                    None,
                    200,
                )
                .await?;
            let ids = message_ids(&r["messages"])?;
            ensure!(
                ids == [edge::id(&m["id"])?],
                "a channel in slot {slot} (moved to {new_name}) has history {ids:?}"
            );
            log(format_args!(
                "channel {id} (slot {slot}) lives on {new_name}"
            ));
            return Ok(());
        }
        bail!("32 new channels all fell outside the moved slots")
    }
}

/// The slots of every channel of the two users of step 4.
async fn busy_slots(edge: &Edge, chat: &Chat) -> Result<Vec<u16>> {
    let mut busy = Vec::new();
    for user in [&chat.a, &chat.b] {
        let r = edge
            .expect(
                reqwest::Method::GET,
                "/v1/channels",
                Some(&user.token),
                None,
                200,
            )
            .await?;
        for c in r["channels"].as_array().into_iter().flatten() {
            busy.push(parley_crd::slot_of(edge::id(&c["id"])?));
        }
    }
    Ok(busy)
}

/// How the scenario adds a third shard: which shard gives up which half of its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Split {
    /// Index of the shard that shrinks.
    pub(super) shard: usize,
    /// The slots it keeps.
    pub(super) keep: (u16, u16),
    /// The slots the new shard takes.
    pub(super) moved: (u16, u16),
}

/// Chooses a shard and the half of its slots to move so that none of `busy` (the slots of
/// channels holding messages) moves: moving slots moves no data.
pub(super) fn choose_split(ranges: &[(u16, u16)], busy: &[u16]) -> Option<Split> {
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if hi <= lo {
            continue;
        }
        let mid = lo + (hi - lo) / 2;
        let halves = [((lo, mid), (mid + 1, hi)), ((mid + 1, hi), (lo, mid))];
        for (keep, moved) in halves {
            if !busy.iter().any(|s| (moved.0..=moved.1).contains(s)) {
                return Some(Split {
                    shard: i,
                    keep,
                    moved,
                });
            }
        }
    }
    None
}

/// The new shard (and its Secret) for a split: a copy of `like` named `name`, with the moved
/// slots and a Secret `<name>-db` holding `url`.
pub(super) fn third_shard(like: &Value, name: &str, split: &Split, url: &str) -> (Value, Value) {
    let mut shard = like.clone();
    let ns = like["metadata"]["namespace"].clone();
    shard["metadata"] = json!({"name": name, "namespace": ns});
    shard["spec"]["slots"] = json!([format!("{}-{}", split.moved.0, split.moved.1)]);
    let secret_name = format!("{name}-db");
    shard["spec"]["postgres"]["secretRef"] = json!({"name": secret_name, "key": "url"});
    if let Some(status) = shard.as_object_mut() {
        status.remove("status");
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": ns},
        "type": "Opaque",
        "stringData": {"url": url},
    });
    (shard, secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::sample::tests::{SAMPLE, patch_of};
    use crate::kube::sample::{parse_documents, patch};

    #[test]
    fn the_split_moves_no_busy_slot() {
        let ranges = [(0, 2047), (2048, 4095)];
        assert_eq!(
            choose_split(&ranges, &[]),
            Some(Split {
                shard: 0,
                keep: (0, 1023),
                moved: (1024, 2047)
            })
        );
        assert_eq!(choose_split(&ranges, &[1500]).unwrap().moved, (0, 1023));
        let s = choose_split(&ranges, &[10, 1500, 3000]).unwrap();
        assert_eq!((s.shard, s.moved), (1, (3072, 4095)));
        assert_eq!(choose_split(&ranges, &[10, 1500, 3000, 4000]), None);
    }

    #[test]
    fn the_third_shard_copies_the_shape() {
        let s = patch(parse_documents(SAMPLE).unwrap(), &patch_of()).unwrap();
        let split = Split {
            shard: 1,
            keep: (2048, 3071),
            moved: (3072, 4095),
        };
        let (shard, secret) = third_shard(&s.shards[1], "chat-c", &split, "postgres://c");
        assert_eq!(shard["spec"]["slots"], json!(["3072-4095"]));
        assert_eq!(shard["metadata"]["namespace"], "e2e-1");
        assert_eq!(shard["spec"]["clusterRef"]["name"], "chat");
        assert_eq!(secret["stringData"]["url"], "postgres://c");
        assert_eq!(
            shard["spec"]["postgres"]["secretRef"]["name"],
            secret["metadata"]["name"]
        );
    }
}
