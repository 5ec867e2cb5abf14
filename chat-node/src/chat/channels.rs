//! Groups, DMs and memberships ([`Channels`]): creating, finding, joining and leaving them,
//! with the events that tell the members' connections (here and on other nodes).

use std::sync::Arc;

use parley_protocol::ws::{ChannelJoined, MemberEvent};
use parley_protocol::{Channel, ChannelKind, ErrorCode, Id, Timestamp, User};

use super::events::Events;
use super::members::Members;
use super::presence::PresenceService;
use super::quotas::Quotas;
use super::{Ids, ev};
use crate::backend::{ChannelStore, MemberStore, Topic, UserStore};
use crate::error::ApiError;
use crate::hub::{Header, Hub};

/// Checks a group name and gives it as stored: trimmed, NFC-normalized, 1..=64 characters,
/// no control characters, not blank (only White_Space and default-ignorable code points
/// such as U+200B). Groups are compared by `text::name_key` (NFC + full case folding).
pub(super) fn clean_group_name(name: &str) -> Result<String, ApiError> {
    let name = crate::text::nfc(name.trim());
    let chars = name.chars().count();
    if !(1..=parley_protocol::limits::MAX_GROUP_NAME_CHARS).contains(&chars)
        || name.chars().any(char::is_control)
        || crate::text::is_blank(&name)
    {
        return Err(ApiError::bad_request(
            "a group name is 1 to 64 characters, not only invisible ones, without control \
             characters",
        ));
    }
    Ok(name)
}

/// Everything [`Channels::new`] needs.
#[derive(Debug)]
pub struct ChannelParts {
    pub channels: Arc<dyn ChannelStore>,
    pub member_store: Arc<dyn MemberStore>,
    pub users: Arc<dyn UserStore>,
    pub members: Arc<Members>,
    pub hub: Arc<Hub>,
    pub events: Events,
    pub quotas: Arc<Quotas>,
    pub ids: Ids,
    pub presence: Arc<PresenceService>,
}

/// Groups and DMs.
#[derive(Debug)]
pub struct Channels {
    channels: Arc<dyn ChannelStore>,
    member_store: Arc<dyn MemberStore>,
    users: Arc<dyn UserStore>,
    members: Arc<Members>,
    hub: Arc<Hub>,
    events: Events,
    quotas: Arc<Quotas>,
    ids: Ids,
    presence: Arc<PresenceService>,
}

impl Channels {
    /// Groups and DMs over the stores and services in `p`.
    pub fn new(p: ChannelParts) -> Self {
        Self {
            channels: p.channels,
            member_store: p.member_store,
            users: p.users,
            members: p.members,
            hub: p.hub,
            events: p.events,
            quotas: p.quotas,
            ids: p.ids,
            presence: p.presence,
        }
    }

    /// The user's connections (here and on other nodes) start receiving `channel`, and are
    /// told with `channel_joined`.
    async fn announce_joined(&self, channel: &Channel, user: Id) -> Result<(), ApiError> {
        self.hub.set_member(channel.id, user, true).await?;
        let header = Header {
            j: Some((channel.id, user)),
            ..Default::default()
        };
        self.events
            .publish(
                Topic::User(user),
                &header,
                ev::CHANNEL_JOINED,
                &ChannelJoined {
                    channel: channel.clone(),
                },
            )
            .await
    }

    /// Creates a group with `user` as its first member. A taken name is `conflict` and
    /// costs nothing; otherwise the group counts against `user`'s `PARLEY_GROUPS_PER_DAY`
    /// (`rate_limited` with `Retry-After` beyond).
    pub async fn create_group(&self, user: Id, name: &str) -> Result<Channel, ApiError> {
        let name = clean_group_name(name)?;
        if self.channels.group_by_name(&name).await?.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a group named `{name}` exists"),
            ));
        }
        self.quotas.group(user)?;
        let channel = self
            .channels
            .create_group(self.ids.next().await?, &name, user, Timestamp::now())
            .await?;
        self.members.changed(channel.id).await;
        self.announce_joined(&channel, user).await?;
        Ok(channel)
    }

    /// The group named `name` (trimmed, compared by name key); `not_found` when there is none.
    pub async fn lookup_group(&self, name: &str) -> Result<Channel, ApiError> {
        self.channels
            .group_by_name(name.trim())
            .await?
            .ok_or_else(|| ApiError::not_found("no group by that name"))
    }

    /// `channel` as its member `user` sees it. Errors: `not_found` (no such channel),
    /// `forbidden` (not a member).
    pub async fn channel_for(&self, user: Id, channel: Id) -> Result<Channel, ApiError> {
        self.members.require(channel, user).await?;
        self.channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))
    }

    /// Every channel `user` is a member of.
    pub async fn channels_of(&self, user: Id) -> Result<Vec<Channel>, ApiError> {
        Ok(self.channels.channels_of(user).await?)
    }

    /// Makes `user` a member of the group `channel` and tells its members and `user`'s
    /// connections; joining again changes nothing. Errors: `not_found` (no such channel),
    /// `forbidden` (a DM of others).
    pub async fn join(&self, user: Id, channel: Id) -> Result<Channel, ApiError> {
        let found = self
            .channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        if found.kind == ChannelKind::Dm {
            if self.member_store.is_member(channel, user).await? {
                return Ok(found);
            }
            return Err(ApiError::forbidden("a DM cannot be joined"));
        }
        if !self
            .member_store
            .join(channel, user, Timestamp::now())
            .await?
        {
            return Ok(found);
        }
        self.members.changed(channel).await;
        let joined = self.channels.channel(channel).await?.unwrap_or(found);
        self.announce_joined(&joined, user).await?;
        let header = Header {
            x: Some(user),
            ..Default::default()
        };
        self.events
            .publish_best_effort(
                Topic::Channel(channel),
                &header,
                ev::MEMBER_JOINED,
                &MemberEvent {
                    channel_id: channel,
                    user_id: user,
                },
            )
            .await;
        self.presence.tell_channel(user, channel).await;
        Ok(joined)
    }

    /// Takes `user` out of the group `channel`; their connections stop receiving it once the
    /// other members were told. Errors: `not_found` (no such channel), `forbidden` (a DM, or
    /// not a member).
    pub async fn leave(&self, user: Id, channel: Id) -> Result<(), ApiError> {
        let found = self
            .channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        if found.kind == ChannelKind::Dm {
            return Err(ApiError::forbidden("a DM cannot be left"));
        }
        if !self.member_store.leave(channel, user).await? {
            return Err(ApiError::forbidden("you are not a member of this channel"));
        }
        self.members.changed(channel).await;
        // Every node with a connection of the leaver is subscribed to the channel: the `l`
        // header makes them stop delivering it to the leaver once this event is out.
        let header = Header {
            l: Some((channel, user)),
            ..Default::default()
        };
        self.events
            .publish_best_effort(
                Topic::Channel(channel),
                &header,
                ev::MEMBER_LEFT,
                &MemberEvent {
                    channel_id: channel,
                    user_id: user,
                },
            )
            .await;
        self.hub.set_member(channel, user, false).await?;
        Ok(())
    }

    /// The members of `channel`, by ID, for its member `user` (`forbidden` otherwise).
    pub async fn members(&self, user: Id, channel: Id) -> Result<Vec<User>, ApiError> {
        self.members.require(channel, user).await?;
        let ids = self.member_store.member_ids(channel).await?;
        let mut users: Vec<User> = self
            .users
            .users(&ids)
            .await?
            .iter()
            .map(User::from)
            .collect();
        users.sort_by_key(|u| u.id);
        Ok(users)
    }

    /// The DM of `user` and `other`; `true` when it was created now. `other` names no user:
    /// `not_found`. A DM with a stranger (a user who shares no channel with `user`, so no
    /// DM yet either) counts against `user`'s `PARLEY_STRANGER_DMS_PER_DAY` (`rate_limited`
    /// with `Retry-After` beyond); one with a user met in a group is free.
    pub async fn dm(&self, user: Id, other: Id) -> Result<(Channel, bool), ApiError> {
        if user == other {
            return Err(ApiError::bad_request("a DM needs another user"));
        }
        if self.users.user(other).await?.is_none() {
            return Err(ApiError::not_found("no such user"));
        }
        if self
            .member_store
            .co_members(user, &[other])
            .await?
            .is_empty()
        {
            self.quotas.stranger_dm(user)?;
        }
        let (channel, created) = self
            .channels
            .dm(self.ids.next().await?, user, other, Timestamp::now())
            .await?;
        if created {
            self.members.changed(channel.id).await;
            self.announce_joined(&channel, user).await?;
            self.announce_joined(&channel, other).await?;
        }
        Ok((channel, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert_eq!(clean_group_name("  Rustaceans ").unwrap(), "Rustaceans");
        assert!(clean_group_name("").is_err());
        assert!(clean_group_name("   ").is_err());
        assert!(clean_group_name(&"x".repeat(65)).is_err());
        assert_eq!(
            clean_group_name(&"é".repeat(64)).unwrap().chars().count(),
            64
        );
        assert!(clean_group_name("a\nb").is_err());
        assert!(clean_group_name("\u{200b}\u{2060}\u{feff}").is_err());
        assert!(clean_group_name(" \u{ad} \u{180e} ").is_err());
        assert_eq!(
            clean_group_name("Cafe\u{301}").unwrap(),
            "Caf\u{e9}",
            "kept NFC-normalized"
        );
    }
}
