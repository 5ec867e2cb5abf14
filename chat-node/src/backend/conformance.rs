//! The one behavioural test suite every backend implementation runs: the embedded ones in
//! chat-node's unit tests, the distributed ones against the real services.
//!
//! Each check uses fresh random IDs and names, so it can run against long-lived servers.

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parley_protocol::{Channel, ChannelKind, Id, Timestamp};

use super::*;

fn base() -> u64 {
    // Random high bits, so runs against a persistent store do not collide.
    let mut b = [0u8; 4];
    rand::fill(&mut b);
    (u64::from(u32::from_le_bytes(b) & 0x3fff_ffff) << 24) + 1
}

fn user(id: u64, name: &str) -> UserRecord {
    UserRecord {
        id: Id(id),
        username: name.to_owned(),
        display_name: format!("{name} display"),
        password_hash: "$argon2id$fake".into(),
        created_at: Timestamp(1_700_000_000_000),
    }
}

fn message(channel: Id, id: u64, seq: u64, author: Id, cmid: Option<&str>) -> StoredMessage {
    StoredMessage {
        id: Id(id),
        channel_id: channel,
        seq,
        author_id: author,
        text: format!("message {seq}"),
        client_msg_id: cmid.map(str::to_owned),
        attachments: vec![],
        reply_to: None,
        created_at: Timestamp::now(),
        moderated: false,
    }
}

/// Every Store trait.
pub async fn store_suite(stores: &Stores) {
    users(stores).await;
    channels_and_members(stores).await;
    messages(stores).await;
    channel_terms(stores).await;
    high_water_of_ids_out_of_seq_order(stores).await;
    read_markers(stores).await;
    media(stores).await;
    ids_at_the_edges(stores).await;
}

async fn users(s: &Stores) {
    let b = base();
    let name = format!("Alice{b}");
    s.users.create_user(&user(b, &name)).await.unwrap();
    let err = s
        .users
        .create_user(&user(b + 1, &name.to_uppercase()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Conflict(_)),
        "usernames are unique regardless of case: {err:?}"
    );
    let found = s
        .users
        .user_by_username(&name.to_lowercase())
        .await
        .unwrap()
        .expect("case-insensitive lookup");
    assert_eq!(found.id, Id(b));
    assert_eq!(found.username, name, "the username keeps its case");
    // UTS #39 confusables: `A1ice…` looks like `Alice…` (a different key, the same skeleton).
    let err = s
        .users
        .create_user(&user(b + 3, &name.replace('l', "1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Conflict(_)),
        "a username that looks like a taken one is refused: {err:?}"
    );
    assert!(s.users.user(Id(b + 3)).await.unwrap().is_none());
    assert_eq!(
        s.users.user(Id(b)).await.unwrap().unwrap().display_name,
        format!("{name} display")
    );
    assert!(s.users.user(Id(b + 7)).await.unwrap().is_none());
    s.users
        .create_user(&user(b + 2, &format!("bob{b}")))
        .await
        .unwrap();
    let mut many: Vec<Id> = s
        .users
        .users(&[Id(b), Id(b + 2), Id(b + 9)])
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    many.sort();
    assert_eq!(many, [Id(b), Id(b + 2)]);
}

async fn channels_and_members(s: &Stores) {
    let b = base();
    let at = Timestamp(1_700_000_000_000);
    let group = group_names(s, b, at).await;
    members_and_dms(s, b, &group, at).await;
    co_members(s, b).await;
}

/// Groups by name: created with their creator as member, unique by name key.
async fn group_names(s: &Stores, b: u64, at: Timestamp) -> Channel {
    let (alice, bob) = (Id(b), Id(b + 1));
    let name = format!("Rust-{b}");
    let group = s
        .channels
        .create_group(Id(b + 10), &name, alice, at)
        .await
        .unwrap();
    assert_eq!(group.kind, ChannelKind::Group);
    assert_eq!(group.member_count, 1);
    let err = s
        .channels
        .create_group(Id(b + 11), &name.to_lowercase(), bob, at)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
    assert_eq!(
        s.channels
            .group_by_name(&name.to_uppercase())
            .await
            .unwrap()
            .unwrap()
            .id,
        group.id
    );
    // Full case folding and NFC: `Straße` is `STRASSE`, a decomposed `Café` the composed one.
    let strasse = s
        .channels
        .create_group(Id(b + 12), &format!("Straße-{b}"), Id(b + 5), at)
        .await
        .unwrap();
    let err = s
        .channels
        .create_group(Id(b + 13), &format!("STRASSE-{b}"), bob, at)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
    let found = s.channels.group_by_name(&format!("strasse-{b}")).await;
    assert_eq!(found.unwrap().map(|c| c.id), Some(strasse.id));
    let cafe = s
        .channels
        .create_group(Id(b + 14), &format!("Caf\u{e9}-{b}"), Id(b + 5), at)
        .await
        .unwrap();
    let err = s
        .channels
        .create_group(Id(b + 15), &format!("Cafe\u{301}-{b}"), bob, at)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Conflict(_)), "{err:?}");
    let found = s.channels.group_by_name(&format!("CAFE\u{301}-{b}")).await;
    assert_eq!(found.unwrap().map(|c| c.id), Some(cafe.id));
    assert!(
        s.channels
            .group_by_name("no-such-group-xyz")
            .await
            .unwrap()
            .is_none()
    );
    group
}

/// Joining and leaving `group` (created by `alice`), DMs, and the channels of a user.
async fn members_and_dms(s: &Stores, b: u64, group: &Channel, at: Timestamp) {
    let (alice, bob, carol) = (Id(b), Id(b + 1), Id(b + 2));
    assert!(s.members.is_member(group.id, alice).await.unwrap());
    assert!(s.members.join(group.id, bob, at).await.unwrap());
    assert!(
        !s.members.join(group.id, bob, at).await.unwrap(),
        "joining twice is a no-op"
    );
    assert_eq!(s.members.member_ids(group.id).await.unwrap(), [alice, bob]);
    assert_eq!(
        s.channels
            .channel(group.id)
            .await
            .unwrap()
            .unwrap()
            .member_count,
        2
    );
    assert!(s.members.leave(group.id, bob).await.unwrap());
    assert!(!s.members.leave(group.id, bob).await.unwrap());
    assert!(!s.members.is_member(group.id, bob).await.unwrap());

    let (dm, created) = s.channels.dm(Id(b + 20), alice, carol, at).await.unwrap();
    assert!(created);
    assert_eq!(dm.kind, ChannelKind::Dm);
    assert_eq!(dm.name, None);
    assert_eq!(dm.member_count, 2);
    let (again, created) = s.channels.dm(Id(b + 21), carol, alice, at).await.unwrap();
    assert!(!created);
    assert_eq!(
        again.id, dm.id,
        "the same pair gets the same DM, in either order"
    );

    let ids: Vec<Id> = s
        .channels
        .channels_of(alice)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [group.id, dm.id]);
    let ids: Vec<Id> = s
        .channels
        .channels_of(carol)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, [dm.id]);
}

/// Who shares a channel with whom, after [`members_and_dms`] (bob left the group; carol
/// shares the DM).
async fn co_members(s: &Stores, b: u64) {
    let (alice, bob, carol) = (Id(b), Id(b + 1), Id(b + 2));
    let mut shared = s
        .members
        .co_members(alice, &[bob, carol, Id(b + 99), alice])
        .await
        .unwrap();
    shared.sort();
    assert_eq!(shared, [alice, carol]);
    assert_eq!(
        s.members.co_members(carol, &[alice, bob]).await.unwrap(),
        [alice]
    );
    assert!(
        s.members
            .co_members(bob, &[alice, carol])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.members.co_members(alice, &[]).await.unwrap().is_empty());
}

/// The id of `ch`'s message `seq` in [`messages`]: channel `ch` (`b`) gets ids b+102, b+104,
/// ..., b+110 (seq 1..=5); `other` (`b + 1`) gets b+105.
fn message_id(b: u64, seq: u64) -> u64 {
    b + 100 + 2 * seq
}

async fn messages(s: &Stores) {
    let b = base();
    let (ch, other, author) = (Id(b), Id(b + 1), Id(b + 2));
    let mid = |seq: u64| message_id(b, seq);
    let batch: Vec<StoredMessage> = (1..=5)
        .map(|i| message(ch, mid(i), i, author, Some(&format!("c{i}"))))
        .collect();
    assert_eq!(s.messages.insert_messages(&batch).await.unwrap(), 5);
    assert_eq!(
        s.messages.insert_messages(&batch[2..]).await.unwrap(),
        0,
        "re-inserting is a no-op"
    );
    s.messages
        .insert_messages(&[message(other, b + 105, 1, author, None)])
        .await
        .unwrap();

    assert_eq!(
        s.messages.message(ch, Id(mid(3))).await.unwrap().as_ref(),
        Some(&batch[2])
    );
    assert!(
        s.messages
            .message(other, Id(mid(3)))
            .await
            .unwrap()
            .is_none(),
        "another channel's message"
    );
    assert!(s.messages.message(ch, Id(b + 105)).await.unwrap().is_none());
    assert!(s.messages.message(ch, Id(mid(9))).await.unwrap().is_none());
    history_pages(s, b).await;
    after_and_lookups(s, b, &batch).await;
    attachments_round_trip(s, b).await;
}

/// The persister's write: messages with the owner terms it raises; a term never goes down
/// (generation first, then term).
async fn channel_terms(s: &Stores) {
    let b = base();
    // Consecutive IDs: on the sharded store, some land on different shards.
    let c: Vec<Id> = (0..4).map(|i| Id(b + i)).collect();
    let author = Id(b + 9);
    let t = |generation: u64, term: u64| OwnerTerm { generation, term };
    let sorted = |mut v: Vec<(Id, OwnerTerm)>| {
        v.sort_unstable();
        v
    };
    assert!(
        s.messages.channel_terms(&c).await.unwrap().is_empty(),
        "no term before a fence"
    );
    let batch = [
        message(c[0], b + 100, 1, author, None),
        message(c[1], b + 101, 1, author, None),
    ];
    let terms = [(c[0], t(2, 7)), (c[2], t(1, 3))];
    assert_eq!(s.messages.write_batch(&batch, &terms).await.unwrap(), 2);
    assert_eq!(
        sorted(s.messages.channel_terms(&c).await.unwrap()),
        [(c[0], t(2, 7)), (c[2], t(1, 3))]
    );
    // Written again (a persister's replay) with other terms: messages once, terms only up:
    // a lower generation never replaces a higher one whatever its term, a higher one
    // replaces a lower one whatever its term.
    let terms = [(c[0], t(1, 500)), (c[2], t(2, 2)), (c[3], t(0, 1))];
    assert_eq!(s.messages.write_batch(&batch, &terms).await.unwrap(), 0);
    assert_eq!(
        sorted(s.messages.channel_terms(&c).await.unwrap()),
        [(c[0], t(2, 7)), (c[2], t(2, 2)), (c[3], t(0, 1))]
    );
    // Same generation: the larger term.
    let terms = [(c[0], t(2, 5)), (c[2], t(2, 9))];
    assert_eq!(s.messages.write_batch(&[], &terms).await.unwrap(), 0);
    assert_eq!(
        sorted(s.messages.channel_terms(&c[..3]).await.unwrap()),
        [(c[0], t(2, 7)), (c[2], t(2, 9))]
    );
    // Terms alone.
    assert_eq!(
        s.messages
            .write_batch(&[], &[(c[1], t(4, 4))])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        sorted(s.messages.channel_terms(&c[1..2]).await.unwrap()),
        [(c[1], t(4, 4))]
    );
    let mut seqs: Vec<(Id, u64)> = s
        .messages
        .high_water(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|(c, h)| (c, h.seq))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [(c[0], 1), (c[1], 1)]);
}

/// The pages of [`messages`]' channel.
async fn history_pages(s: &Stores, b: u64) {
    let ch = Id(b);
    let mid = |seq: u64| message_id(b, seq);
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(
            s.messages
                .history(ch, Page::Latest { limit: 3 })
                .await
                .unwrap()
        ),
        [5, 4, 3]
    );
    assert_eq!(
        seqs(
            s.messages
                .history(
                    ch,
                    Page::Before {
                        id: Id(mid(4)),
                        limit: 10
                    }
                )
                .await
                .unwrap()
        ),
        [3, 2, 1]
    );
    assert_eq!(
        seqs(
            s.messages
                .history(
                    ch,
                    Page::After {
                        id: Id(mid(2)),
                        limit: 2
                    }
                )
                .await
                .unwrap()
        ),
        [3, 4]
    );
}

/// Reads across [`messages`]' channels, by client message id and of the last seqs.
async fn after_and_lookups(s: &Stores, b: u64, batch: &[StoredMessage]) {
    let (ch, other, author) = (Id(b), Id(b + 1), Id(b + 2));
    let mid = |seq: u64| message_id(b, seq);
    let after = s
        .messages
        .messages_after(&[ch, other], Id(mid(2)), 10)
        .await
        .unwrap();
    let pairs: Vec<(Id, u64)> = after.iter().map(|m| (m.channel_id, m.seq)).collect();
    assert_eq!(
        pairs,
        [(other, 1), (ch, 3), (ch, 4), (ch, 5)],
        "ascending ids across channels"
    );
    assert_eq!(
        s.messages
            .messages_after(&[ch], Id(0), 2)
            .await
            .unwrap()
            .len(),
        2
    );

    let since = Timestamp(Timestamp::now().0 - 60_000);
    let found = s
        .messages
        .by_client_msg_id(author, "c2", since)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.seq, 2);
    assert_eq!(found, batch[1], "a message reads back as written");
    assert!(
        s.messages
            .by_client_msg_id(author, "c9", since)
            .await
            .unwrap()
            .is_none()
    );
    let future = Timestamp(Timestamp::now().0 + 60_000);
    assert!(
        s.messages
            .by_client_msg_id(author, "c2", future)
            .await
            .unwrap()
            .is_none(),
        "older than the window"
    );

    let mut high = s
        .messages
        .high_water(&[ch, other, Id(b + 50)])
        .await
        .unwrap();
    high.sort();
    assert_eq!(
        high,
        [
            (
                ch,
                HighWater {
                    seq: 5,
                    id: Id(mid(5))
                }
            ),
            (
                other,
                HighWater {
                    seq: 1,
                    id: Id(b + 105)
                }
            )
        ]
    );
}

/// The high water is the highest seq and the highest ID, also when a channel's IDs are not
/// in seq order (an owner whose clock was ahead, before IDs had floors).
async fn high_water_of_ids_out_of_seq_order(s: &Stores) {
    let b = base();
    let (ch, author) = (Id(b), Id(b + 1));
    let batch = [
        message(ch, b + 500, 1, author, None),
        message(ch, b + 400, 2, author, None),
    ];
    assert_eq!(s.messages.insert_messages(&batch).await.unwrap(), 2);
    assert_eq!(
        s.messages.high_water(&[ch]).await.unwrap(),
        [(
            ch,
            HighWater {
                seq: 2,
                id: Id(b + 500)
            }
        )]
    );
}

/// Attachments, the moderated flag and a reply survive the round trip.
async fn attachments_round_trip(s: &Stores, b: u64) {
    let (ch, author) = (Id(b), Id(b + 2));
    let mid = |seq: u64| message_id(b, seq);
    let mut with = message(ch, b + 200, 6, author, None);
    with.attachments.push(AttachmentRecord {
        id: Id(b + 300),
        owner_id: author,
        key: format!("u/{author}/{}/a.png", b + 300),
        filename: "a.png".into(),
        content_type: "image/png".into(),
        size: 42,
        created_at: Timestamp(1),
    });
    with.moderated = true;
    with.reply_to = Some(Id(mid(1)));
    s.messages
        .insert_messages(std::slice::from_ref(&with))
        .await
        .unwrap();
    let back = s
        .messages
        .history(ch, Page::Latest { limit: 1 })
        .await
        .unwrap();
    assert_eq!(back, [with]);
}

async fn read_markers(s: &Stores) {
    let b = base();
    let (u, ch) = (Id(b), Id(b + 1));
    assert!(s.read_markers.mark_read(u, ch, Id(b + 10)).await.unwrap());
    assert!(
        !s.read_markers.mark_read(u, ch, Id(b + 5)).await.unwrap(),
        "markers never move back"
    );
    assert!(s.read_markers.mark_read(u, ch, Id(b + 20)).await.unwrap());
    assert_eq!(
        s.read_markers.read_markers(u).await.unwrap(),
        [(ch, Id(b + 20))]
    );
}

async fn media(s: &Stores) {
    let b = base();
    let a = AttachmentRecord {
        id: Id(b),
        owner_id: Id(b + 1),
        key: format!("u/{}/{b}/doc.pdf", b + 1),
        filename: "doc.pdf".into(),
        content_type: "application/pdf".into(),
        size: 1234,
        created_at: Timestamp(5),
    };
    s.media.create_attachment(&a).await.unwrap();
    assert_eq!(s.media.attachments(&[a.id, Id(b + 9)]).await.unwrap(), [a]);
}

/// IDs up to `Id::MAX` and timestamps of any `i64` are stored as they are; an ID above
/// `Id::MAX` (only code can build one) fails the call as `internal`, never wrapping to a
/// negative number that would name something else.
async fn ids_at_the_edges(s: &Stores) {
    // Just below Id::MAX, random so runs against a persistent store do not collide.
    let b = Id::MAX.0 - base() - 100;
    let mut top = user(b, &format!("top{b}"));
    top.created_at = Timestamp(i64::MAX);
    s.users.create_user(&top).await.unwrap();
    assert_eq!(s.users.user(top.id).await.unwrap(), Some(top.clone()));
    let ch = Id(b + 1);
    let mut m = message(ch, b + 2, 1, Id::MAX, None);
    m.reply_to = Some(Id::MAX);
    m.created_at = Timestamp(i64::MIN);
    s.messages
        .insert_messages(std::slice::from_ref(&m))
        .await
        .unwrap();
    let latest = Page::Latest { limit: 5 };
    assert_eq!(s.messages.history(ch, latest).await.unwrap(), [m.clone()]);

    let internal = |r: Result<(), BackendError>, what: &str| {
        let e = r.expect_err(what);
        assert!(matches!(e, BackendError::Internal { .. }), "{what}: {e:?}");
    };
    for over in [Id(Id::MAX.0 + 1), Id(u64::MAX)] {
        internal(s.users.user(over).await.map(drop), "user");
        internal(s.users.users(&[top.id, over]).await.map(drop), "users");
        internal(
            s.users
                .create_user(&user(over.0, &format!("over{b}")))
                .await,
            "create_user",
        );
        let name = format!("over-{b}");
        internal(
            s.channels
                .create_group(over, &name, top.id, m.created_at)
                .await
                .map(drop),
            "create_group",
        );
        internal(s.members.is_member(ch, over).await.map(drop), "is_member");
        internal(s.messages.history(over, latest).await.map(drop), "history");
        let mut bad = message(ch, b + 3, 2, top.id, None);
        bad.reply_to = Some(over);
        internal(
            s.messages.insert_messages(&[bad]).await.map(drop),
            "insert_messages",
        );
    }
    assert_eq!(
        s.messages.history(ch, latest).await.unwrap(),
        [m],
        "nothing was stored"
    );
    assert!(
        s.users
            .user_by_username(&format!("over{b}"))
            .await
            .unwrap()
            .is_none()
    );
}

/// A Log: durable appends, per-key order, consumer groups that resume after their commit.
pub async fn log_suite(log: &dyn Log) {
    let b = base();
    let group = format!("conformance-{b}");
    // Start the group at the end of whatever is already there.
    let mut c = log.consumer(&group).await.unwrap();
    while !c
        .poll(1000, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty()
    {}
    c.commit().await.unwrap();
    drop(c);

    let records: Vec<LogRecord> = (0..20)
        .map(|i| LogRecord {
            key: Id(b + (i % 3)),
            payload: Bytes::from(format!("{i}")),
        })
        .collect();
    let mut offsets = log.append(&records[..10]).await.unwrap();
    offsets.extend(log.append(&records[10..]).await.unwrap());
    assert_eq!(offsets.len(), 20, "one offset per appended record");

    let mut c = log.consumer(&group).await.unwrap();
    let got = poll_mine(c.as_mut(), b, 20, 7).await;
    assert_eq!(got.len(), 20, "every appended record is read once");
    same_order_and_offsets(&records, &offsets, &got, b);
    c.commit().await.unwrap();
    drop(c);

    // Committed: a new consumer of the group sees only what comes after.
    log.append(&[LogRecord {
        key: Id(b),
        payload: Bytes::from_static(b"after-commit"),
    }])
    .await
    .unwrap();
    let mut c = log.consumer(&group).await.unwrap();
    let next = poll_mine(c.as_mut(), b, 1, 100).await;
    assert_eq!(
        next.iter().map(|r| &r.payload[..]).collect::<Vec<_>>(),
        [&b"after-commit"[..]]
    );
    // Not committed: a new consumer gets it again (at-least-once).
    drop(c);
    let mut c = log.consumer(&group).await.unwrap();
    let again = poll_mine(c.as_mut(), b, 1, 100).await;
    assert_eq!(again.len(), 1, "an uncommitted record is delivered again");
    c.commit().await.unwrap();
    log.wait_consumed(&group, Duration::from_secs(10))
        .await
        .expect("everything is committed");

    // Appended and not consumed: waiting for the group times out.
    log.append(&[LogRecord {
        key: Id(b),
        payload: Bytes::from_static(b"pending"),
    }])
    .await
    .unwrap();
    let err = log
        .wait_consumed(&group, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err:?}");
    drop(c);
    let mut c = log.consumer(&group).await.unwrap();
    poll_mine(c.as_mut(), b, 1, 100).await;
    c.commit().await.unwrap();
    log.wait_consumed(&group, Duration::from_secs(10))
        .await
        .expect("caught up after the commit");
}

/// Per key (`b..b + 3`), `got` holds the records `sent` in their order, each with the
/// offset its append returned, and the offsets increase.
fn same_order_and_offsets(sent: &[LogRecord], offsets: &[u64], got: &[PolledRecord], b: u64) {
    for key in 0..3 {
        let of_key: Vec<(u64, &Bytes)> = got
            .iter()
            .filter(|r| r.key == Id(b + key))
            .map(|r| (r.offset, &r.payload))
            .collect();
        let appended: Vec<(u64, &Bytes)> = sent
            .iter()
            .zip(offsets)
            .filter(|(r, _)| r.key == Id(b + key))
            .map(|(r, o)| (*o, &r.payload))
            .collect();
        assert_eq!(
            of_key, appended,
            "records of one key keep their order and are read with the offsets their appends returned"
        );
        assert!(
            appended.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets increase per key: {appended:?}"
        );
    }
}

/// Polls `c`, `max` records at a time, until it has read `want` records of this run (keys
/// `b..b + 10`; other records are other runs') or 30 s have passed.
async fn poll_mine(c: &mut dyn LogConsumer, b: u64, want: usize, max: usize) -> Vec<PolledRecord> {
    let mine = |r: &PolledRecord| r.key.0 >= b && r.key.0 < b + 10;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < want && tokio::time::Instant::now() < deadline {
        let polled = c.poll(max, Duration::from_millis(500)).await.unwrap();
        got.extend(polled.into_iter().filter(mine));
    }
    got
}

/// A recording sink for pub/sub tests.
pub fn recording_sink() -> (Sink, Arc<Mutex<Vec<Delivery>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (Arc::new(move |d| s.lock().push(d)), seen)
}

async fn eventually(seen: &Mutex<Vec<Delivery>>, n: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = seen.lock().clone();
        if v.len() >= n || tokio::time::Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A PubSub: two endpoints (two nodes) over one bus/server.
pub async fn pubsub_suite(
    a: &dyn PubSub,
    a_seen: &Mutex<Vec<Delivery>>,
    b: &dyn PubSub,
    b_seen: &Mutex<Vec<Delivery>>,
) {
    let base = base();
    let (t1, t2) = (Topic::Channel(Id(base)), Topic::User(Id(base + 1)));
    a.subscribe(t1).await.unwrap();
    b.subscribe(t1).await.unwrap();
    b.subscribe(t2).await.unwrap();

    a.publish(t1, Bytes::from_static(b"one")).await.unwrap();
    a.publish(t2, Bytes::from_static(b"two")).await.unwrap();
    let got_b = eventually(b_seen, 2).await;
    let got_a = eventually(a_seen, 1).await;
    let only = |v: &[Delivery], t: Topic| {
        v.iter()
            .filter(|d| d.topic == t)
            .map(|d| d.payload.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(&got_a, t1),
        [Bytes::from_static(b"one")],
        "the publisher's own node receives too"
    );
    assert_eq!(
        only(&got_a, t2),
        Vec::<Bytes>::new(),
        "not subscribed, nothing delivered"
    );
    assert_eq!(only(&got_b, t1), [Bytes::from_static(b"one")]);
    assert_eq!(only(&got_b, t2), [Bytes::from_static(b"two")]);

    b.unsubscribe(t1).await.unwrap();
    for i in 0..50u8 {
        a.publish(t1, Bytes::from(vec![i])).await.unwrap();
    }
    let got_a = eventually(a_seen, 51).await;
    let order: Vec<u8> = got_a
        .iter()
        .filter(|d| d.topic == t1)
        .skip(1)
        .map(|d| d.payload[0])
        .collect();
    assert_eq!(
        order,
        (0..50).collect::<Vec<u8>>(),
        "one topic keeps publish order"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        only(&b_seen.lock(), t1).len(),
        1,
        "unsubscribed: no more deliveries"
    );
}

/// Blobs: presigned PUT through `put` (an HTTP client), stat, presigned GET through `get`.
pub async fn blobs_suite<P, PF, G, GF>(blobs: &dyn Blobs, put: P, get: G)
where
    P: Fn(PresignedRequest, Vec<u8>) -> PF,
    PF: std::future::Future<Output = u16>,
    G: Fn(String) -> GF,
    GF: std::future::Future<Output = (u16, Vec<u8>)>,
{
    let b = base();
    let key = format!("u/{b}/{}/photo.png", b + 1);
    let bytes = b"\x89PNG fake image".to_vec();
    assert!(blobs.stat(&key).await.unwrap().is_none());

    let req = blobs
        .presign_put(
            &key,
            "image/png",
            u64::try_from(bytes.len()).unwrap(),
            Duration::from_secs(300),
        )
        .await
        .unwrap();
    assert_eq!(req.method, "PUT");
    // Another length than the signed one is refused and stores nothing.
    let status = put(req.clone(), bytes[..4].to_vec()).await;
    assert!(
        (400..500).contains(&status),
        "short body accepted: {status}"
    );
    assert!(blobs.stat(&key).await.unwrap().is_none());

    let status = put(req.clone(), bytes.clone()).await;
    assert!(
        (200..300).contains(&status),
        "presigned PUT failed: {status}"
    );
    // An object is written once: its upload URL cannot replace it (S3: the PUT is
    // conditional, `If-None-Match: *`; local: an existing key is refused).
    let mut other = bytes.clone();
    other.reverse();
    let status = put(req, other).await;
    assert!(
        (400..500).contains(&status),
        "a second PUT replaced the object: {status}"
    );
    let meta = blobs
        .stat(&key)
        .await
        .unwrap()
        .expect("object exists after upload");
    assert_eq!(
        meta,
        ObjectMeta {
            size: u64::try_from(bytes.len()).unwrap(),
            content_type: "image/png".into()
        }
    );

    let url = blobs
        .presign_get(&key, Duration::from_secs(300))
        .await
        .unwrap();
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body, bytes);
    // A tampered URL is refused.
    let (status, _) = get(url.replace("photo.png", "other.png")).await;
    assert!(
        (400..500).contains(&status),
        "tampered GET answered {status}"
    );
}

/// [`blobs_suite`] with a plain HTTP client doing the presigned requests, as a browser would.
pub async fn blobs_suite_over_http(blobs: &dyn Blobs) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    blobs_suite(
        blobs,
        |req, body| {
            let http = http.clone();
            async move {
                let mut r = http.put(&req.url).body(body);
                for (k, v) in &req.headers {
                    r = r.header(k, v);
                }
                r.send().await.unwrap().status().as_u16()
            }
        },
        |url| {
            let http = http.clone();
            async move {
                let res = http.get(&url).send().await.unwrap();
                let status = res.status().as_u16();
                (status, res.bytes().await.unwrap().to_vec())
            }
        },
    )
    .await;
}
