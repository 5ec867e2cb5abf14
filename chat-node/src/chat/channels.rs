//! Groups, DMs and memberships.

use parley_protocol::ws::{ChannelJoined, MemberEvent};
use parley_protocol::{Channel, ChannelKind, ErrorCode, Id, User};

use super::{Chat, ev};
use crate::backend::Topic;
use crate::error::ApiError;
use crate::hub::Header;

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

impl Chat {
    /// The user's connections (here and on other nodes) start receiving `channel`, and are
    /// told with `channel_joined`.
    async fn announce_joined(&self, channel: &Channel, user: Id) -> Result<(), ApiError> {
        self.hub.set_member(channel.id, user, true).await?;
        let header = Header {
            j: Some((channel.id, user)),
            ..Default::default()
        };
        self.publish(
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
        if self.stores.channels.group_by_name(&name).await?.is_some() {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("a group named `{name}` exists"),
            ));
        }
        self.quotas.group(user)?;
        let channel = self
            .stores
            .channels
            .create_group(self.new_id().await?, &name, user, self.now())
            .await?;
        self.members_changed(channel.id).await;
        self.announce_joined(&channel, user).await?;
        Ok(channel)
    }

    pub async fn lookup_group(&self, name: &str) -> Result<Channel, ApiError> {
        self.stores
            .channels
            .group_by_name(name.trim())
            .await?
            .ok_or_else(|| ApiError::not_found("no group by that name"))
    }

    pub async fn channel_for(&self, user: Id, channel: Id) -> Result<Channel, ApiError> {
        self.require_member(channel, user).await?;
        self.stores
            .channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))
    }

    pub async fn channels_of(&self, user: Id) -> Result<Vec<Channel>, ApiError> {
        Ok(self.stores.channels.channels_of(user).await?)
    }

    pub async fn join(&self, user: Id, channel: Id) -> Result<Channel, ApiError> {
        let found = self
            .stores
            .channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        if found.kind == ChannelKind::Dm {
            if self.stores.members.is_member(channel, user).await? {
                return Ok(found);
            }
            return Err(ApiError::forbidden("a DM cannot be joined"));
        }
        if !self.stores.members.join(channel, user, self.now()).await? {
            return Ok(found);
        }
        self.members_changed(channel).await;
        let joined = self
            .stores
            .channels
            .channel(channel)
            .await?
            .unwrap_or(found);
        self.announce_joined(&joined, user).await?;
        let header = Header {
            x: Some(user),
            ..Default::default()
        };
        self.publish_best_effort(
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

    pub async fn leave(&self, user: Id, channel: Id) -> Result<(), ApiError> {
        let found = self
            .stores
            .channels
            .channel(channel)
            .await?
            .ok_or_else(|| ApiError::not_found("no such channel"))?;
        if found.kind == ChannelKind::Dm {
            return Err(ApiError::forbidden("a DM cannot be left"));
        }
        if !self.stores.members.leave(channel, user).await? {
            return Err(ApiError::forbidden("you are not a member of this channel"));
        }
        self.members_changed(channel).await;
        // Every node with a connection of the leaver is subscribed to the channel: the `l`
        // header makes them stop delivering it to the leaver once this event is out.
        let header = Header {
            l: Some((channel, user)),
            ..Default::default()
        };
        self.publish_best_effort(
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

    pub async fn members(&self, user: Id, channel: Id) -> Result<Vec<User>, ApiError> {
        self.require_member(channel, user).await?;
        let ids = self.stores.members.member_ids(channel).await?;
        let mut users: Vec<User> = self
            .stores
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
        if self.stores.users.user(other).await?.is_none() {
            return Err(ApiError::not_found("no such user"));
        }
        if self
            .stores
            .members
            .co_members(user, &[other])
            .await?
            .is_empty()
        {
            self.quotas.stranger_dm(user)?;
        }
        let (channel, created) = self
            .stores
            .channels
            .dm(self.new_id().await?, user, other, self.now())
            .await?;
        if created {
            self.members_changed(channel.id).await;
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
