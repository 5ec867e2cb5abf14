//! [`OfflineNotifier`]: one `<prefix>.notifications` record per member of a message's
//! channel who has no live connection anywhere, for a push gateway (distributed mode).

use std::sync::Arc;

use bytes::Bytes;
use parley_protocol::PresenceStatus;

use super::presence::PresenceService;
use crate::backend::{Log, LogRecord, MemberStore, StoredMessage};

/// Characters of a message's text a notification carries.
const PREVIEW_CHARS: usize = 200;

/// Writes notification records for offline members.
#[derive(Debug)]
pub struct OfflineNotifier {
    log: Arc<dyn Log>,
    members: Arc<dyn MemberStore>,
    presence: Arc<PresenceService>,
}

impl OfflineNotifier {
    /// Records go to `log` (`<prefix>.notifications`).
    pub fn new(
        log: Arc<dyn Log>,
        members: Arc<dyn MemberStore>,
        presence: Arc<PresenceService>,
    ) -> Self {
        Self {
            log,
            members,
            presence,
        }
    }

    /// Notifies the offline members of `m`'s channel but its author. Best effort: it never
    /// delays or fails the send (the append runs as a task of its own).
    pub async fn message_sent(&self, m: &StoredMessage) {
        let members = match self.members.member_ids(m.channel_id).await {
            Ok(ids) => ids
                .into_iter()
                .filter(|u| *u != m.author_id)
                .collect::<Vec<_>>(),
            Err(e) => return tracing::warn!("notifications skipped: {e}"),
        };
        let presence = match self.presence.of(&members).await {
            Ok(p) => p,
            Err(e) => return tracing::warn!("notifications skipped: {e}"),
        };
        let preview: String = m.text.chars().take(PREVIEW_CHARS).collect();
        let records: Vec<LogRecord> = presence
            .iter()
            .filter(|p| p.status == PresenceStatus::Offline)
            .map(|p| {
                let body = serde_json::json!({
                    "user_id": p.user_id,
                    "channel_id": m.channel_id,
                    "message_id": m.id,
                    "seq": m.seq,
                    "author_id": m.author_id,
                    "text": preview,
                    "created_at": m.created_at,
                });
                LogRecord {
                    key: p.user_id,
                    payload: Bytes::from(body.to_string()),
                }
            })
            .collect();
        if records.is_empty() {
            return;
        }
        let log = self.log.clone();
        tokio::spawn(async move {
            if let Err(e) = log.append(&records).await {
                tracing::warn!(records = records.len(), "notifications not written: {e}");
            }
        });
    }
}
