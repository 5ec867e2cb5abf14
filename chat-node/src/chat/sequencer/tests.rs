//! The sequencer's budgets and evictions, and a node's sends and reads under a tiny one.
#![allow(
    clippy::too_many_lines,
    reason = "a test is one scenario read top to bottom; the 80-line bar is for non-test code"
)]

use super::*;

fn m(id: u64) -> StoredMessage {
    StoredMessage {
        id: Id(id),
        channel_id: Id(1),
        seq: id,
        author_id: Id(9),
        text: String::new(),
        client_msg_id: None,
        attachments: vec![],
        reply_to: None,
        created_at: Timestamp(0),
        moderated: false,
    }
}

fn ids(v: &[StoredMessage]) -> Vec<u64> {
    v.iter().map(|m| m.id.0).collect()
}

#[test]
fn recent_messages_fill_what_the_store_lacks() {
    let recent: Vec<Arc<StoredMessage>> = (8..=12).map(|i| Arc::new(m(i))).collect();
    let stored: Vec<StoredMessage> = (7..=10).rev().map(m).collect(); // newest first, limit+1 = 4
    let (page, more) = merge_page(stored, &recent, Page::Latest { limit: 3 });
    assert_eq!(ids(&page), [12, 11, 10]);
    assert!(more);

    let stored: Vec<StoredMessage> = vec![m(9), m(10)];
    let (page, more) = merge_page(
        stored,
        &recent,
        Page::After {
            id: Id(8),
            limit: 10,
        },
    );
    assert_eq!(ids(&page), [9, 10, 11, 12]);
    assert!(!more);

    let (page, _) = merge_page(
        vec![],
        &recent,
        Page::Before {
            id: Id(10),
            limit: 10,
        },
    );
    assert_eq!(ids(&page), [9, 8]);
}

#[test]
fn idempotency_keys_expire_by_time() {
    let seq = Sequencer::default();
    let ch = seq.channel(Id(1));
    let mut msg = m(5);
    msg.client_msg_id = Some("c1".into());
    msg.created_at = Timestamp(1000);
    seq.remember(&ch, Arc::new(msg));
    assert_eq!(
        seq.by_client_id(Id(9), "c1", Timestamp(0)),
        Some(ClientIdHit {
            channel: Id(1),
            message: Id(5)
        })
    );
    assert_eq!(seq.recent_message(Id(1), Id(5)).unwrap().seq, 5);
    assert!(seq.by_client_id(Id(9), "c1", Timestamp(2000)).is_none());
    assert!(seq.by_client_id(Id(8), "c1", Timestamp(0)).is_none());
    assert_eq!(seq.known_last_seq(Id(1)), Some(5));
    assert_eq!(seq.known_last_seq(Id(2)), None);
}

fn tiny(recent: u64, ids: u64) -> Sequencer {
    Sequencer::new(&SequencerMemory {
        recent_messages_bytes: recent,
        idempotency_keys_bytes: ids,
    })
}

fn sent(channel: u64, i: u64) -> Arc<StoredMessage> {
    let mut msg = m(channel * 1000 + i);
    msg.channel_id = Id(channel);
    msg.seq = i;
    msg.text = "x".repeat(200);
    msg.client_msg_id = Some(format!("c{channel}-{i}"));
    msg.created_at = Timestamp(1000);
    Arc::new(msg)
}

#[test]
fn eviction_keeps_memory_under_budget_and_only_drops_what_the_store_has() {
    let per = message_bytes(&sent(1, 1));
    // 20 channels of 5 messages; room for about 30 messages and 40 keys.
    let recent_budget = 30 * per + 20 * CHANNEL_BYTES;
    let ids_budget = 40 * (CLIENT_ID_BYTES + 5);
    let seq = tiny(recent_budget as u64, ids_budget as u64);
    assert!(
        !seq.key_exists_only_in_memory(Timestamp(0)),
        "memory answers for keys only once told"
    );
    seq.keys_complete_since(Timestamp(0));
    for c in 1..=20 {
        let ch = seq.channel(Id(c));
        for i in 1..=5 {
            seq.remember(&ch, sent(c, i));
        }
    }
    assert!(seq.key_exists_only_in_memory(Timestamp(0)));
    // Nothing is known to be stored: nothing left, whatever the budget says, and no
    // more is taken.
    assert_eq!(seq.recent(Id(1)).len(), 5);
    assert!(seq.by_client_id(Id(9), "c1-1", Timestamp(0)).is_some());
    assert!(seq.recent_bytes() > recent_budget);
    assert!(seq.wants_confirmation());
    let refused = seq.admit(per).unwrap_err();
    assert_eq!(refused.code, parley_protocol::ErrorCode::Unavailable);

    // Channel 7 is used again; the store has everything up to here; then 2 more
    // messages it lacks.
    let ch = seq.channel(Id(7));
    seq.persisted_through(seq.stamped());
    seq.remember(&ch, sent(7, 6));
    seq.remember(&ch, sent(7, 7));
    assert!(
        seq.recent_bytes() <= recent_budget,
        "{} > {recent_budget}",
        seq.recent_bytes()
    );
    assert!(seq.client_id_bytes() <= ids_budget);
    assert!(seq.admit(per).is_ok());
    // Least recently used first: channel 1 is gone (state and all), channel 20 kept its
    // messages, and channel 7, just used, keeps all including the unstored two.
    assert!(seq.recent(Id(1)).is_empty());
    assert_eq!(seq.known_last_seq(Id(1)), None, "its state was dropped");
    assert!(seq.channels_held() < 20);
    assert_eq!(seq.recent(Id(20)).len(), 5);
    assert_eq!(seq.recent(Id(7)).len(), 7);
    // Keys: the oldest went, the newest (and the unstored ones) stay. A key made when
    // the evicted ones were (1000) may now be only in the store; later ones may not.
    assert!(seq.by_client_id(Id(9), "c1-1", Timestamp(0)).is_none());
    assert!(!seq.key_exists_only_in_memory(Timestamp(1000)));
    assert!(seq.key_exists_only_in_memory(Timestamp(1001)));
    assert!(seq.by_client_id(Id(9), "c20-5", Timestamp(0)).is_some());
    assert!(seq.by_client_id(Id(9), "c7-7", Timestamp(0)).is_some());

    // A flood of messages the store lacks, in fresh channels: the two unstored ones are
    // never evicted, and a state whose messages are unstored is never dropped.
    for c in 100..200 {
        if seq.admit(per).is_err() {
            break;
        }
        let ch = seq.channel(Id(c));
        seq.remember(&ch, sent(c, 1));
    }
    assert!(seq.admit(per).is_err(), "the budget filled up and holds");
    assert!(seq.recent_bytes() <= recent_budget + per + CHANNEL_BYTES);
    let kept = seq.recent(Id(7));
    assert!(kept.iter().any(|m| m.seq == 6) && kept.iter().any(|m| m.seq == 7));
    assert_eq!(seq.known_last_seq(Id(7)), Some(7));
}

#[test]
fn idle_channel_states_are_dropped_when_over_budget() {
    // Reads make states too: a client reading many channels must not grow memory.
    let seq = tiny(64 * CHANNEL_BYTES as u64, 1 << 20);
    for c in 1..=1000 {
        let _ = seq.channel(Id(c));
    }
    assert!(seq.recent_bytes() <= 64 * CHANNEL_BYTES);
    assert!(seq.channels_held() <= 64);
    // One in use (a sender holds it) is never dropped.
    let held = seq.channel(Id(5000));
    for c in 2000..3000 {
        let _ = seq.channel(Id(c));
    }
    assert!(Arc::ptr_eq(&held, &seq.channel(Id(5000))));
}

/// A real node's chat service (embedded store and log, no server), with `adjust`ed
/// settings; the persister does not run until the test drains the log.
async fn chat_with(adjust: impl FnOnce(&mut crate::config::Config)) -> Arc<crate::chat::Chat> {
    let dir = std::env::temp_dir().join(format!(
        "parley-seq-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let mut config = crate::config::Config::for_tests(dir);
    config.limits.send_rate = 100_000;
    config.limits.send_burst = 100_000;
    adjust(&mut config);
    crate::node::embedded(config, "127.0.0.1:9".parse().unwrap())
        .await
        .unwrap()
}

/// Registers `alice` on `chat`; her ID.
async fn register_alice(chat: &crate::chat::Chat) -> Id {
    chat.accounts()
        .register("alice", "password-alice", None)
        .await
        .unwrap()
        .user
        .id
}

/// Sends `text` as `author` to `channel` with `client_msg_id` `cmid`.
async fn send_keyed(
    chat: &crate::chat::Chat,
    author: Id,
    channel: Id,
    cmid: String,
    text: String,
) -> Result<parley_protocol::Message, crate::error::ApiError> {
    let input = crate::chat::SendInput {
        text,
        client_msg_id: Some(cmid),
        ..crate::chat::SendInput::default()
    };
    chat.messages().send(author, channel, input).await
}

async fn persist_all(chat: &crate::chat::Chat) {
    let own = chat.own_log().expect("an embedded node");
    crate::persister::drain(
        own.log.as_ref(),
        own.store.as_ref(),
        crate::persister::Batching::default(),
    )
    .await
    .unwrap();
    assert!(
        chat.sequencing().confirm_persisted().await,
        "the log is consumed"
    );
}

#[tokio::test]
async fn with_a_tiny_budget_reads_and_retries_still_see_every_message() {
    use parley_protocol::rest::HistoryQuery;

    let budget = 12 * 1024;
    let chat = chat_with(|c| {
        c.sequencer_memory.recent_messages_bytes = budget as u64;
        c.sequencer_memory.idempotency_keys_bytes = 2 * 1024;
    })
    .await;
    let alice = register_alice(&chat).await;
    let mut groups = Vec::new();
    for g in 0..4 {
        groups.push(
            chat.channels()
                .create_group(alice, &format!("group{g}"))
                .await
                .unwrap()
                .id,
        );
    }
    let send = |channel: Id, cmid: String| {
        let text = format!("{cmid}: {}", "x".repeat(400));
        send_keyed(&chat, alice, channel, cmid, text)
    };
    // Rounds of sends, the store catching up after each: what was sent (cmid -> id).
    let mut sent: Vec<(Id, String, Id)> = Vec::new();
    let mut refused = 0;
    for round in 0..6 {
        for (g, channel) in groups.iter().enumerate() {
            for i in 0..5 {
                let cmid = format!("r{round}-g{g}-{i}");
                match send(*channel, cmid.clone()).await {
                    Ok(m) => sent.push((*channel, cmid, m.id)),
                    Err(e) => {
                        // Only while the store lags: the budget holds.
                        assert_eq!(e.code, parley_protocol::ErrorCode::Unavailable, "{e}");
                        refused += 1;
                    }
                }
                assert!(
                    chat.sequencing().sequencer().recent_bytes() <= budget + 1024,
                    "{} bytes",
                    chat.sequencing().sequencer().recent_bytes()
                );
            }
        }
        // Before the store has them, every message is read back (from memory).
        for channel in &groups {
            let page = chat
                .history()
                .page(alice, *channel, &HistoryQuery::default())
                .await
                .unwrap();
            let want = sent.iter().filter(|(c, _, _)| c == channel).count();
            assert_eq!(page.messages.len(), want, "round {round}");
        }
        persist_all(&chat).await;
    }
    assert!(refused > 0, "12 KiB holds fewer than 48 unstored messages");
    assert!(sent.len() > 48, "sends resumed once the store caught up");
    assert!(chat.sequencing().sequencer().recent_bytes() <= budget);
    assert!(chat.sequencing().sequencer().client_id_bytes() <= 2 * 1024);

    // Evicted: the first message and its key are no longer in memory...
    let (first_channel, first_cmid, first_id) = sent[0].clone();
    assert!(
        chat.sequencing()
            .sequencer()
            .recent_message(first_channel, first_id)
            .is_none()
    );
    assert!(
        chat.sequencing()
            .sequencer()
            .by_client_id(alice, &first_cmid, Timestamp(0))
            .is_none()
    );
    // ...yet a retry of any send returns the original message (from the store for the
    // evicted ones) and stores nothing new.
    for (channel, cmid, id) in &sent {
        let again = send(*channel, cmid.clone()).await.unwrap();
        assert_eq!(again.id, *id, "{cmid}");
    }
    // History still returns every message of every channel, in order.
    for channel in &groups {
        let page = chat
            .history()
            .page(
                alice,
                *channel,
                &HistoryQuery {
                    limit: Some(100),
                    ..HistoryQuery::default()
                },
            )
            .await
            .unwrap();
        let mut want: Vec<Id> = sent
            .iter()
            .filter(|(c, _, _)| c == channel)
            .map(|(_, _, id)| *id)
            .collect();
        want.reverse();
        let got: Vec<Id> = page.messages.iter().map(|m| m.id).collect();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn a_retry_whose_message_left_memory_but_whose_key_did_not_finds_the_stored_message() {
    let chat = chat_with(|_| {}).await;
    let alice = register_alice(&chat).await;
    let group = chat.channels().create_group(alice, "g").await.unwrap().id;
    let send = |cmid: String| async {
        let text = format!("text of {cmid}");
        send_keyed(&chat, alice, group, cmid, text).await.unwrap()
    };
    let first = send("k0".into()).await;
    // More than the 256 recent messages a channel keeps once the store has them.
    for i in 1..=RECENT_MAX {
        send(format!("k{i}")).await;
    }
    persist_all(&chat).await;
    send("one more".into()).await;
    let seq = chat.sequencing().sequencer();
    assert!(
        seq.recent_message(group, first.id).is_none(),
        "the message left memory"
    );
    assert!(
        seq.by_client_id(alice, "k0", Timestamp(0)).is_some(),
        "its key did not"
    );
    let again = send("k0".into()).await;
    assert_eq!((again.id, again.seq), (first.id, first.seq));
}
