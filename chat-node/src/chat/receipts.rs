//! Read markers and typing indicators ([`Receipts`]): what members tell each other about a
//! channel besides messages. Both are published to the other members only.

use std::sync::Arc;

use parley_protocol::Id;
use parley_protocol::ws::{ReadEvent, TypingEvent};

use super::ev;
use super::events::Events;
use super::history::History;
use super::members::Members;
use crate::backend::{ReadMarkerStore, Topic};
use crate::error::ApiError;
use crate::hub::Header;

/// Read markers and typing.
#[derive(Debug)]
pub struct Receipts {
    markers: Arc<dyn ReadMarkerStore>,
    members: Arc<Members>,
    history: Arc<History>,
    events: Events,
}

impl Receipts {
    /// Read markers in `markers`, typing events through `events`.
    pub fn new(
        markers: Arc<dyn ReadMarkerStore>,
        members: Arc<Members>,
        history: Arc<History>,
        events: Events,
    ) -> Self {
        Self {
            markers,
            members,
            history,
            events,
        }
    }

    /// Moves `user`'s read marker of `channel` forward to `message`, which must be a message
    /// of `channel` ([`History::require_message_in`]): a marker at another channel's
    /// message, at no message, or beyond the newest one would park it for good.
    pub async fn mark_read(&self, user: Id, channel: Id, message: Id) -> Result<(), ApiError> {
        self.members.require(channel, user).await?;
        self.history
            .require_message_in(channel, message, "message_id")
            .await?;
        if self.markers.mark_read(user, channel, message).await? {
            let event = ReadEvent {
                channel_id: channel,
                user_id: user,
                message_id: message,
            };
            self.events
                .publish_best_effort(Topic::Channel(channel), &others(user), ev::READ, &event)
                .await;
        }
        Ok(())
    }

    /// Tells the other members of `channel` that `user` is typing.
    pub async fn typing(&self, user: Id, channel: Id) -> Result<(), ApiError> {
        self.members.require(channel, user).await?;
        let event = TypingEvent {
            channel_id: channel,
            user_id: user,
        };
        self.events
            .publish_best_effort(Topic::Channel(channel), &others(user), ev::TYPING, &event)
            .await;
        Ok(())
    }
}

/// A header that keeps an event from `user`'s own connections.
fn others(user: Id) -> Header {
    Header {
        x: Some(user),
        ..Default::default()
    }
}
