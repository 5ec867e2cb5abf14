//! The Store port: one small trait per entity (revolt's layout), bundled in [`Stores`].

use std::sync::Arc;

use async_trait::async_trait;
use parley_protocol::{Channel, Id, Timestamp, User};

use super::{
    AttachmentRecord, BackendError, HighWater, OwnerTerm, Page, StoredMessage, UserRecord,
};

type R<T> = Result<T, BackendError>;

#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Creates a user; `Conflict` when the username (case-insensitive) is taken.
    async fn create_user(&self, user: &UserRecord) -> R<()>;
    async fn user(&self, id: Id) -> R<Option<UserRecord>>;
    /// Case-insensitive lookup.
    async fn user_by_username(&self, username: &str) -> R<Option<UserRecord>>;
    /// The users among `ids` that exist, in no particular order.
    async fn users(&self, ids: &[Id]) -> R<Vec<UserRecord>>;
}

#[async_trait]
pub trait ChannelStore: Send + Sync + std::fmt::Debug {
    /// Creates a group with its creator as first member; `Conflict` when the name
    /// (case-insensitive) is taken.
    async fn create_group(&self, id: Id, name: &str, creator: Id, at: Timestamp) -> R<Channel>;
    async fn channel(&self, id: Id) -> R<Option<Channel>>;
    /// Case-insensitive lookup of a group.
    async fn group_by_name(&self, name: &str) -> R<Option<Channel>>;
    /// The DM channel of two users, created with `id` when there is none yet.
    /// Returns the channel and whether it was created.
    async fn dm(&self, id: Id, a: Id, b: Id, at: Timestamp) -> R<(Channel, bool)>;
    /// Every channel `user` is a member of.
    async fn channels_of(&self, user: Id) -> R<Vec<Channel>>;
}

#[async_trait]
pub trait MemberStore: Send + Sync + std::fmt::Debug {
    /// Adds a member; `false` if they already were one.
    async fn join(&self, channel: Id, user: Id, at: Timestamp) -> R<bool>;
    /// Removes a member; `false` if they were not one.
    async fn leave(&self, channel: Id, user: Id) -> R<bool>;
    async fn member_ids(&self, channel: Id) -> R<Vec<Id>>;
    async fn is_member(&self, channel: Id, user: Id) -> R<bool>;
    /// The users among `candidates` who share at least one channel (a group or a DM) with
    /// `user`, each once, in no particular order. `user` itself is among them only if it is
    /// a member of some channel.
    async fn co_members(&self, user: Id, candidates: &[Id]) -> R<Vec<Id>>;
}

#[async_trait]
pub trait MessageStore: Send + Sync + std::fmt::Debug {
    /// Inserts messages; ones already there (same channel and id) are skipped, so a batch
    /// can be written again safely. Returns how many were new.
    async fn insert_messages(&self, batch: &[StoredMessage]) -> R<u64> {
        self.write_batch(batch, &[]).await
    }
    /// The persister's write: inserts `batch` as [`MessageStore::insert_messages`] does and
    /// raises the stored owner term of each channel in `terms` (channel, term in force) to
    /// at least that term in [`OwnerTerm`]'s order (generation, then term: it never goes
    /// down), in one transaction per database: a channel's raised term and the messages of
    /// that channel commit together (docs/reliability.md, fencing). Returns how many
    /// messages were new.
    async fn write_batch(&self, batch: &[StoredMessage], terms: &[(Id, OwnerTerm)]) -> R<u64>;
    /// The stored owner term of each of `channels` that has one: the term in force after
    /// the fence records the persisters passed (channels without are absent: `{0, 0}`).
    async fn channel_terms(&self, channels: &[Id]) -> R<Vec<(Id, OwnerTerm)>>;
    /// The stored message `id` of `channel`; `None` when there is none (or it is another
    /// channel's).
    async fn message(&self, channel: Id, id: Id) -> R<Option<StoredMessage>>;
    /// A page of one channel's history, in the page's order.
    async fn history(&self, channel: Id, page: Page) -> R<Vec<StoredMessage>>;
    /// Messages of `channels` with id > `after`, oldest first, at most `limit`.
    async fn messages_after(&self, channels: &[Id], after: Id, limit: u32)
    -> R<Vec<StoredMessage>>;
    /// The message `author` sent with `client_msg_id` at or after `since`.
    async fn by_client_msg_id(
        &self,
        author: Id,
        client_msg_id: &str,
        since: Timestamp,
    ) -> R<Option<StoredMessage>>;
    /// The highest stored seq and the highest stored message ID of each of `channels` that
    /// has messages (the others are absent): where a new owner's seqs and IDs continue.
    async fn high_water(&self, channels: &[Id]) -> R<Vec<(Id, HighWater)>>;
}

#[async_trait]
pub trait ReadMarkerStore: Send + Sync + std::fmt::Debug {
    /// Moves the user's read marker of `channel` forward to `message`; `false` when it
    /// already was at or past it.
    async fn mark_read(&self, user: Id, channel: Id, message: Id) -> R<bool>;
    /// The user's read markers: (channel, last read message).
    async fn read_markers(&self, user: Id) -> R<Vec<(Id, Id)>>;
}

#[async_trait]
pub trait MediaStore: Send + Sync + std::fmt::Debug {
    async fn create_attachment(&self, attachment: &AttachmentRecord) -> R<()>;
    /// The attachments among `ids` that exist.
    async fn attachments(&self, ids: &[Id]) -> R<Vec<AttachmentRecord>>;
}

/// The Store port as the node holds it: one handle per entity trait. One backend value
/// usually implements them all ([`Stores::from_backend`]).
#[derive(Debug, Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub channels: Arc<dyn ChannelStore>,
    pub members: Arc<dyn MemberStore>,
    pub messages: Arc<dyn MessageStore>,
    pub read_markers: Arc<dyn ReadMarkerStore>,
    pub media: Arc<dyn MediaStore>,
}

impl Stores {
    pub fn from_backend<B>(backend: Arc<B>) -> Self
    where
        B: UserStore
            + ChannelStore
            + MemberStore
            + MessageStore
            + ReadMarkerStore
            + MediaStore
            + 'static,
    {
        Self {
            users: backend.clone(),
            channels: backend.clone(),
            members: backend.clone(),
            messages: backend.clone(),
            read_markers: backend.clone(),
            media: backend,
        }
    }
}

impl From<&UserRecord> for User {
    fn from(u: &UserRecord) -> Self {
        User {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            created_at: u.created_at,
        }
    }
}
