//! The sending side ([`Messages`]): a send is checked and moderated on the node the client
//! is connected to, then sequenced by the channel's owner, here or forwarded.
//!
//! ```text
//!   send(author, channel, input) ─► rate ─► client_msg_id ─► text ─► member? ─► moderation
//!     ─► reply_to ─► attachments ─► Prepared ─► owner_of(channel)
//!          ├─ Me ───────► Sequencing::sequence
//!          └─ Other(m) ─► ChannelOwners::forward(m) ─► m's Sequencing (internal API)
//! ```

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use parley_protocol::{ErrorCode, Id, Message, Timestamp};

use super::history::History;
use super::media::Media;
use super::members::Members;
use super::owners::{ChannelOwners, Owner};
use super::sequencing::Sequencing;
use crate::config::Limits;
use crate::error::ApiError;
use crate::internal::{Hop, Prepared};
use crate::metrics::Metrics;
use crate::moderation::{Moderator, Verdict};
use crate::ratelimit::RateLimiter;

/// Longest `client_msg_id`, in bytes.
const CLIENT_MSG_ID_MAX: usize = 128;

/// A send, from REST or WebSocket.
#[derive(Debug, Clone, Default)]
pub struct SendInput {
    /// The text as the client sent it (trimmed and checked here).
    pub text: String,
    /// The client's idempotency key: a retry with the same key gets the same message.
    pub client_msg_id: Option<String>,
    /// Attachments uploaded by the author.
    pub attachments: Vec<Id>,
    /// A message of the channel this one answers.
    pub reply_to: Option<Id>,
}

/// Checks a message text: 1..=max Unicode scalar values after trimming, and not blank (only
/// White_Space and default-ignorable code points such as U+200B: `bad_request`).
pub(super) fn clean_text(text: &str, max_chars: usize) -> Result<&str, ApiError> {
    let text = text.trim();
    if crate::text::is_blank(text) {
        return Err(ApiError::bad_request(
            "the text is empty (only spaces or invisible characters)",
        ));
    }
    let n = text.chars().count();
    if n > max_chars {
        return Err(ApiError::too_large(format!(
            "the text has {n} characters; the limit is {max_chars}"
        )));
    }
    Ok(text)
}

/// Everything [`Messages::new`] needs.
#[derive(Debug)]
pub struct MessagesParts {
    /// Text length and send rate.
    pub limits: Limits,
    pub members: Arc<Members>,
    pub moderator: Arc<Moderator>,
    pub media: Arc<Media>,
    pub history: Arc<History>,
    pub owners: Arc<dyn ChannelOwners>,
    pub sequencing: Arc<Sequencing>,
    pub metrics: Arc<Metrics>,
}

/// Sending messages.
#[derive(Debug)]
pub struct Messages {
    limits: Limits,
    limiter: Mutex<RateLimiter<Id>>,
    members: Arc<Members>,
    moderator: Arc<Moderator>,
    media: Arc<Media>,
    history: Arc<History>,
    owners: Arc<dyn ChannelOwners>,
    sequencing: Arc<Sequencing>,
    metrics: Arc<Metrics>,
}

impl Messages {
    /// Sends checked against `p.limits`, routed by `p.owners`.
    pub fn new(p: MessagesParts) -> Self {
        Self {
            limiter: Mutex::new(RateLimiter::new(p.limits.send_rate, p.limits.send_burst)),
            limits: p.limits,
            members: p.members,
            moderator: p.moderator,
            media: p.media,
            history: p.history,
            owners: p.owners,
            sequencing: p.sequencing,
            metrics: p.metrics,
        }
    }

    fn check_send_rate(&self, author: Id) -> Result<(), ApiError> {
        let allowed = self
            .limiter
            .lock()
            .allow(author, Timestamp::now().unix_millis());
        if allowed {
            Ok(())
        } else {
            let l = &self.limits;
            Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "slow down: at most {} messages per second (bursts of {})",
                    l.send_rate, l.send_burst
                ),
            ))
        }
    }

    /// Sends a message: validated and moderated here, then sequenced (deduplicated, given
    /// its ID and seq, made durable and published) by the channel's owner.
    pub async fn send(
        &self,
        author: Id,
        channel: Id,
        input: SendInput,
    ) -> Result<Message, ApiError> {
        let started = Instant::now();
        let prepared = self.prepare(author, channel, input).await?;
        let message = self.sequence_anywhere(prepared).await?;
        self.metrics
            .send_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(message)
    }

    /// Every check a send passes on the node the client is connected to.
    async fn prepare(
        &self,
        author: Id,
        channel: Id,
        input: SendInput,
    ) -> Result<Prepared, ApiError> {
        self.check_send_rate(author)?;
        if let Some(c) = &input.client_msg_id
            && (c.is_empty() || c.len() > CLIENT_MSG_ID_MAX)
        {
            return Err(ApiError::bad_request(format!(
                "client_msg_id is 1 to {CLIENT_MSG_ID_MAX} bytes"
            )));
        }
        let text = clean_text(&input.text, self.limits.max_text_chars as usize)?;
        self.members.require(channel, author).await?;
        let (text, moderated) = match self.moderator.check(text) {
            Verdict::Clean => (text.to_owned(), false),
            Verdict::Masked(masked) => (masked, true),
            Verdict::Rejected => {
                return Err(ApiError::new(
                    ErrorCode::ContentRejected,
                    "the message contains words this chat does not allow",
                ));
            }
        };
        if let Some(target) = input.reply_to {
            self.history
                .require_message_in(channel, target, "reply_to")
                .await?;
        }
        let attachments = self
            .media
            .attachments_of(author, &input.attachments)
            .await?;
        Ok(Prepared {
            author,
            channel,
            text,
            moderated,
            client_msg_id: input.client_msg_id,
            attachments,
            reply_to: input.reply_to,
        })
    }

    /// Sequences `p` on the channel's owner, here or forwarded. When the owner changed
    /// while it was tried (a node draining, a ring change), it is tried once more on the
    /// new owner: the refusal came before any append.
    async fn sequence_anywhere(&self, p: Prepared) -> Result<Message, ApiError> {
        let first = self.owners.owner_of(p.channel);
        let result = self.sequence_on(first.clone(), &p).await;
        match result {
            // Only a send with a client_msg_id is tried again: `unavailable` may come after
            // the first owner appended (a connection reset while reading its answer, a
            // delivery that timed out yet landed), and the new owner can then find it by
            // (author, client_msg_id) instead of storing it twice. Without one, the client
            // decides.
            Err(e) if e.code == ErrorCode::Unavailable && p.client_msg_id.is_some() => {
                self.owners.refresh().await;
                let now = self.owners.owner_of(p.channel);
                if now.name() == first.name() {
                    return Err(e);
                }
                tracing::debug!(channel = %p.channel, "the owner changed during a send: trying the new one");
                self.sequence_on(now, &p).await
            }
            other => other,
        }
    }

    async fn sequence_on(&self, owner: Owner, p: &Prepared) -> Result<Message, ApiError> {
        match owner {
            Owner::Me => self.sequencing.sequence(p.clone()).await,
            Owner::Other(member) => self.owners.forward(&member, p, Hop::First).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_limits_count_scalar_values_after_trimming() {
        assert_eq!(clean_text("  hi  ", 10).unwrap(), "hi");
        assert_eq!(
            clean_text("   ", 10).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(clean_text(&"é".repeat(10), 10).unwrap().chars().count(), 10);
        assert_eq!(
            clean_text(&"é".repeat(11), 10).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn text_of_only_invisible_characters_is_blank() {
        for blank in [
            "\u{200b}",
            "\u{200b}\u{2060}\u{feff}",
            " \u{ad}\n\u{180e}\u{3164} ",
            "\u{200d}\u{fe0f}\u{e0001}",
        ] {
            assert_eq!(
                clean_text(blank, 10).unwrap_err().code,
                ErrorCode::BadRequest,
                "{blank:?}"
            );
        }
        assert_eq!(clean_text(" a\u{200b} ", 10).unwrap(), "a\u{200b}");
    }
}
