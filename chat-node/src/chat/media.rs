//! Media: the node signs upload and download URLs; the bytes never pass through it (in
//! embedded mode they go to the node's own blob endpoint, a separate route).

use std::collections::BTreeMap;

use parley_protocol::rest::{MediaRequest, MediaResponse, UploadTarget};
use parley_protocol::{Id, Timestamp};

use super::{Chat, UPLOAD_URL_TTL};
use crate::backend::AttachmentRecord;
use crate::error::ApiError;

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

impl Chat {
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
        let limits = &self.config.limits;
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
        let id = self.new_id().await?;
        let record = AttachmentRecord {
            id,
            owner_id: user,
            key: format!("u/{user}/{id}/{}", key_safe_filename(filename)),
            filename: filename.to_owned(),
            content_type,
            size: req.size,
            created_at: self.now(),
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
        self.stores.media.create_attachment(&record).await?;
        let expires_at = Timestamp(self.now().unix_millis() + UPLOAD_URL_TTL.as_millis() as i64);
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
        let found = self.stores.media.attachments(&[id]).await?;
        let a = found
            .into_iter()
            .find(|a| a.owner_id == user)
            .ok_or_else(|| ApiError::not_found("no such attachment"))?;
        Ok(MediaResponse {
            attachment: self.attachment_wire(&a).await?,
            upload: None,
        })
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
