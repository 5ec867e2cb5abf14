//! Step 5's third ChatShard: it takes half of one shard's slots, a half that holds none of
//! the test's channels (moving slots moves no data), and then serves a channel whose slot
//! moved.

use anyhow::{Context as _, Result, bail, ensure};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::chat::{Chat, message_ids};
use super::edge::{self, Edge};
use super::run::Run;
use super::sample::{self, Split};
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
        let split = sample::choose_split(&ranges, busy).with_context(|| {
            format!("no half of a shard is free of the test's channels (slots {busy:?})")
        })?;
        let donor = &s.shards[split.shard];
        let new_name = format!("{}-c", self.cluster_name);
        let (shard, secret) = sample::third_shard(donor, &new_name, &split, &b.shard_urls[2]);
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
