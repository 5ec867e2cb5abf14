//! Media ([`Media`]): the node signs upload and download URLs; the bytes never pass through
//! it (in embedded mode they go to the node's own blob endpoint, a separate route). Messages
//! reach their attachments through it: checked at send time, given fresh download URLs
//! whenever a message goes out.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parley_protocol::rest::{MediaRequest, MediaResponse, UploadTarget};
use parley_protocol::{Attachment, Id, Message, Timestamp};

use super::Ids;
use super::quotas::Quotas;
use crate::backend::local::LocalBlobs;
use crate::backend::{AttachmentRecord, Blobs, MediaStore, StoredMessage};
use crate::config::Limits;
use crate::error::ApiError;

/// How long download URLs handed out in messages stay valid.
pub const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(6 * 3600);
/// How long an upload URL stays valid.
pub const UPLOAD_URL_TTL: Duration = Duration::from_secs(15 * 60);

/// Checks a MIME type's shape (`type/subtype`, no parameters).
pub(super) fn valid_content_type(ct: &str) -> bool {
    let Some((t, s)) = ct.split_once('/') else {
        return false;
    };
    let token = |x: &str| {
        !x.is_empty()
            && x.len() <= 64
            && x.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    token(t) && token(s)
}

/// Whether `ct` counts as media (16 MiB limit) rather than a document (100 MiB).
pub(super) fn is_media(ct: &str) -> bool {
    ["image/", "video/", "audio/"]
        .iter()
        .any(|p| ct.starts_with(p))
}

/// A filename safe to put in an object key: ASCII letters, digits, `.`, `-`, `_`.
pub(super) fn key_safe_filename(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    while out.starts_with('.') {
        out.remove(0);
    }
    if out.is_empty() {
        "file".to_owned()
    } else if out.ends_with(".meta") {
        format!("{out}_")
    } else {
        out
    }
}

/// Everything [`Media::new`] needs.
#[derive(Debug)]
pub struct MediaParts {
    pub store: Arc<dyn MediaStore>,
    pub blobs: Arc<dyn Blobs>,
    /// Set when blobs are local files this node serves itself.
    pub local_blobs: Option<LocalBlobs>,
    pub quotas: Arc<Quotas>,
    pub ids: Ids,
    /// Upload sizes and attachments per message.
    pub limits: Limits,
}

/// Attachments: announced uploads, signed URLs, and the wire form of messages that carry
/// them.
#[derive(Debug)]
pub struct Media {
    store: Arc<dyn MediaStore>,
    blobs: Arc<dyn Blobs>,
    local_blobs: Option<LocalBlobs>,
    quotas: Arc<Quotas>,
    ids: Ids,
    limits: Limits,
}

impl Media {
    /// Attachments over the store and blobs in `p`.
    pub fn new(p: MediaParts) -> Self {
        Self {
            store: p.store,
            blobs: p.blobs,
            local_blobs: p.local_blobs,
            quotas: p.quotas,
            ids: p.ids,
            limits: p.limits,
        }
    }

    /// Where the bytes are kept.
    pub fn blobs(&self) -> &Arc<dyn Blobs> {
        &self.blobs
    }

    /// The blobs this node serves itself (`/v1/blobs/...`, embedded mode); `None` when
    /// they are elsewhere (S3).
    pub fn local_blobs(&self) -> Option<&LocalBlobs> {
        self.local_blobs.as_ref()
    }

    /// `POST /v1/media`: announces an upload and returns where to PUT it. Each announcement
    /// counts against `user`'s `PARLEY_UPLOADS_PER_HOUR` and its declared size against
    /// `PARLEY_UPLOAD_MIB_PER_HOUR` (`rate_limited` with `Retry-After` beyond; one upload
    /// larger than the whole hourly amount: `too_large`). The upload URL writes the object
    /// once: it cannot replace it afterwards.
    pub async fn create_media(
        &self,
        user: Id,
        req: &MediaRequest,
    ) -> Result<MediaResponse, ApiError> {
        let filename = req.filename.trim();
        if filename.is_empty()
            || filename.chars().count() > 255
            || filename.chars().any(char::is_control)
        {
            return Err(ApiError::bad_request(
                "a filename is 1 to 255 characters, without control characters",
            ));
        }
        let content_type = req.content_type.trim().to_ascii_lowercase();
        if !valid_content_type(&content_type) {
            return Err(ApiError::bad_request(
                "content_type must be a MIME type such as image/png",
            ));
        }
        let limits = &self.limits;
        let max = if is_media(&content_type) {
            limits.max_media_bytes
        } else {
            limits.max_document_bytes
        };
        if req.size == 0 {
            return Err(ApiError::bad_request("size must be at least 1 byte"));
        }
        if req.size > max {
            return Err(ApiError::too_large(format!(
                "{content_type} uploads are limited to {max} bytes"
            )));
        }
        self.quotas.upload(user, req.size)?;
        let id = self.ids.next().await?;
        let record = AttachmentRecord {
            id,
            owner_id: user,
            key: format!("u/{user}/{id}/{}", key_safe_filename(filename)),
            filename: filename.to_owned(),
            content_type,
            size: req.size,
            created_at: Timestamp::now(),
        };
        let upload = self
            .blobs
            .presign_put(
                &record.key,
                &record.content_type,
                record.size,
                UPLOAD_URL_TTL,
            )
            .await?;
        self.store.create_attachment(&record).await?;
        let expires_at =
            Timestamp(Timestamp::now().unix_millis() + UPLOAD_URL_TTL.as_millis() as i64);
        Ok(MediaResponse {
            attachment: self.attachment_wire(&record).await?,
            upload: Some(UploadTarget {
                method: upload.method.to_owned(),
                url: upload.url,
                headers: upload.headers.into_iter().collect::<BTreeMap<_, _>>(),
                expires_at,
            }),
        })
    }

    /// `GET /v1/media/{id}`: the attachment with a fresh download URL (its uploader only).
    pub async fn media(&self, user: Id, id: Id) -> Result<MediaResponse, ApiError> {
        let found = self.store.attachments(&[id]).await?;
        let a = found
            .into_iter()
            .find(|a| a.owner_id == user)
            .ok_or_else(|| ApiError::not_found("no such attachment"))?;
        Ok(MediaResponse {
            attachment: self.attachment_wire(&a).await?,
            upload: None,
        })
    }

    /// The wire form of an attachment, with a fresh download URL.
    pub async fn attachment_wire(&self, a: &AttachmentRecord) -> Result<Attachment, ApiError> {
        Ok(Attachment {
            id: a.id,
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            url: self.blobs.presign_get(&a.key, DOWNLOAD_URL_TTL).await?,
        })
    }

    /// The wire form of a stored message, with fresh download URLs.
    pub async fn message_wire(&self, m: &StoredMessage) -> Result<Message, ApiError> {
        let mut attachments = Vec::with_capacity(m.attachments.len());
        for a in &m.attachments {
            attachments.push(self.attachment_wire(a).await?);
        }
        Ok(Message {
            id: m.id,
            channel_id: m.channel_id,
            seq: m.seq,
            author_id: m.author_id,
            text: m.text.clone(),
            client_msg_id: m.client_msg_id.clone(),
            attachments,
            reply_to: m.reply_to,
            created_at: m.created_at,
            moderated: m.moderated,
        })
    }

    /// [`Media::message_wire`] of each message, in order.
    pub async fn messages_wire(
        &self,
        messages: &[StoredMessage],
    ) -> Result<Vec<Message>, ApiError> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.message_wire(m).await?);
        }
        Ok(out)
    }

    /// The attachments of a send: at most `PARLEY_MAX_ATTACHMENTS`, each listed once, each
    /// `author`'s and uploaded as declared (else `bad_request`).
    pub async fn attachments_of(
        &self,
        author: Id,
        ids: &[Id],
    ) -> Result<Vec<AttachmentRecord>, ApiError> {
        let max = self.limits.max_attachments as usize;
        if ids.len() > max {
            return Err(ApiError::bad_request(format!(
                "at most {max} attachments per message"
            )));
        }
        if ids.iter().collect::<HashSet<_>>().len() != ids.len() {
            return Err(ApiError::bad_request("an attachment is listed twice"));
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.store.attachments(ids).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(a) = found.iter().find(|a| a.id == *id && a.owner_id == author) else {
                return Err(ApiError::bad_request(format!(
                    "attachment {id} does not exist or is not yours"
                )));
            };
            match self.blobs.stat(&a.key).await? {
                None => {
                    return Err(ApiError::bad_request(format!(
                        "attachment {id} has not been uploaded yet"
                    )));
                }
                Some(meta) if meta.size != a.size || meta.content_type != a.content_type => {
                    return Err(ApiError::bad_request(format!(
                        "attachment {id} was uploaded as {} bytes of {}, not the declared {} bytes of {}",
                        meta.size, meta.content_type, a.size, a.content_type
                    )));
                }
                Some(_) => out.push(a.clone()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert!(valid_content_type("image/png"));
        assert!(valid_content_type(
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        ));
        for bad in [
            "",
            "image",
            "image/",
            "/png",
            "text/html; charset=utf-8",
            "a b/c",
        ] {
            assert!(!valid_content_type(bad), "{bad}");
        }
        assert!(is_media("video/mp4") && is_media("audio/ogg") && !is_media("application/pdf"));
    }

    #[test]
    fn filenames_in_keys() {
        assert_eq!(key_safe_filename("My photo (1).PNG"), "My_photo__1_.PNG");
        assert_eq!(key_safe_filename("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(key_safe_filename("..."), "file");
        assert_eq!(key_safe_filename("x.meta"), "x.meta_");
        assert_eq!(key_safe_filename("日本語.txt"), "___.txt");
    }
}
