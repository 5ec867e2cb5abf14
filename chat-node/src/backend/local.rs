//! [`LocalBlobs`]: objects in a local directory, reached through HMAC-signed, expiring URLs
//! that the node itself serves (`PUT`/`GET /v1/blobs/{key}`), the same flow a client uses
//! against S3 presigned URLs.
//!
//! A PUT URL signs the method, key, content type, exact length and expiry; a GET URL signs
//! the method, key and expiry. Each object has a `.meta` sidecar with its content type.
//! Objects are written once: a PUT to an existing key is refused with `conflict` (409), as
//! S3 refuses the conditional PUT (`If-None-Match: *`) of [`super::s3`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use parley_protocol::Timestamp;
use sha2::Sha256;
use tokio::io::AsyncWriteExt as _;

use super::{BackendError, Blobs, ObjectMeta, PresignedRequest};

const BACKEND: &str = "local blobs";

/// Local blob store.
#[derive(Clone)]
pub struct LocalBlobs {
    root: PathBuf,
    key: Vec<u8>,
    base_url: String,
}

impl std::fmt::Debug for LocalBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBlobs")
            .field("root", &self.root)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// What a signed blob URL allows, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Put { content_type: String, size: u64 },
    Get,
}

/// Why a blob request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("the URL's signature does not match")]
    BadSignature,
    #[error("the URL expired")]
    Expired,
    #[error("malformed blob URL: {0}")]
    Malformed(&'static str),
}

/// The query string of a signed blob URL.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BlobQuery {
    pub op: Option<String>,
    pub ct: Option<String>,
    pub len: Option<u64>,
    pub exp: Option<i64>,
    pub sig: Option<String>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.ends_with(".meta"))
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl LocalBlobs {
    /// Blobs under `root`, signed with `key`, served at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(root: PathBuf, key: Vec<u8>, base_url: &str) -> Self {
        Self {
            root,
            key,
            base_url: base_url.trim_end_matches('/').to_owned(),
        }
    }

    fn sign(&self, text: &str) -> String {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(&self.key).expect("HMAC takes keys of any size");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn path(&self, key: &str) -> Result<PathBuf, BackendError> {
        if !valid_key(key) {
            return Err(BackendError::internal(
                BACKEND,
                format!("invalid object key {key:?}"),
            ));
        }
        Ok(self.root.join(key))
    }

    fn meta_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".meta");
        PathBuf::from(p)
    }

    /// Checks a request to `/v1/blobs/{key}` against its signature and expiry.
    pub fn verify(
        &self,
        method: &str,
        key: &str,
        q: &BlobQuery,
        now: Timestamp,
    ) -> Result<Grant, GrantError> {
        if !valid_key(key) {
            return Err(GrantError::Malformed("bad key"));
        }
        let exp = q.exp.ok_or(GrantError::Malformed("missing exp"))?;
        let sig = q
            .sig
            .as_deref()
            .ok_or(GrantError::Malformed("missing sig"))?;
        let (text, grant) = match method {
            "PUT" => {
                let ct = q.ct.clone().ok_or(GrantError::Malformed("missing ct"))?;
                let len = q.len.ok_or(GrantError::Malformed("missing len"))?;
                (
                    format!("PUT\n{key}\n{ct}\n{len}\n{exp}"),
                    Grant::Put {
                        content_type: ct,
                        size: len,
                    },
                )
            }
            "GET" | "HEAD" => (format!("GET\n{key}\n{exp}"), Grant::Get),
            _ => return Err(GrantError::Malformed("method")),
        };
        let expected = self.sign(&text);
        // Constant-time comparison.
        let same = expected.len() == sig.len()
            && expected
                .bytes()
                .zip(sig.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            return Err(GrantError::BadSignature);
        }
        if now.unix_millis() / 1000 > exp {
            return Err(GrantError::Expired);
        }
        Ok(grant)
    }

    /// Writes an object from `body` chunks; fails, leaving nothing behind, when the bytes
    /// are not exactly `size` long. An object is written once: when `key` exists (uploaded
    /// before, or by a concurrent PUT that finished first) it fails with `Conflict` and the
    /// object stays as it was, so an upload URL cannot replace an attached object. Files are
    /// created `0600` and directories `0700` ([`super::datadir`]).
    pub async fn write<S, E>(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        mut body: S,
    ) -> Result<(), BackendError>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt as _;
        let path = self.path(key)?;
        // Refused before the body is read; the hard link below decides a race.
        if tokio::fs::try_exists(&path)
            .await
            .map_err(|e| BackendError::unavailable(BACKEND, e))?
        {
            return Err(exists(key));
        }
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        super::datadir::create_private_dirs_async(&dir)
            .await
            .map_err(|e| BackendError::unavailable(BACKEND, e))?;
        let tag = uuid_like();
        let tmp = dir.join(format!(".upload-{tag}"));
        let tmp_meta = dir.join(format!(".upload-{tag}-meta"));
        let result = async {
            let mut file = super::datadir::new_private_file()
                .open(&tmp)
                .await
                .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            let mut written = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    BackendError::internal(BACKEND, format!("upload interrupted: {e}"))
                })?;
                written += chunk.len() as u64;
                if written > size {
                    return Err(BackendError::Conflict(format!(
                        "the body is longer than the signed {size} bytes"
                    )));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            }
            if written != size {
                return Err(BackendError::Conflict(format!(
                    "the body has {written} bytes, not the signed {size}"
                )));
            }
            file.sync_all()
                .await
                .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            let meta =
                serde_json::json!({ "content_type": content_type, "size": size }).to_string();
            let mut meta_file = super::datadir::new_private_file()
                .open(&tmp_meta)
                .await
                .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            meta_file
                .write_all(meta.as_bytes())
                .await
                .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            // A hard link never replaces an existing file: of two uploads to one key, the
            // first to get here wins and the other is refused.
            match tokio::fs::hard_link(&tmp, &path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(exists(key));
                }
                Err(e) => return Err(BackendError::unavailable(BACKEND, e)),
            }
            // The object counts as uploaded once its `.meta` is there (`stat`).
            tokio::fs::rename(&tmp_meta, Self::meta_path(&path))
                .await
                .map_err(|e| BackendError::unavailable(BACKEND, e))?;
            Ok(())
        }
        .await;
        let _ = tokio::fs::remove_file(&tmp).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp_meta).await;
        }
        result
    }

    /// The object's file and metadata, if it exists.
    pub async fn open(
        &self,
        key: &str,
    ) -> Result<Option<(tokio::fs::File, ObjectMeta)>, BackendError> {
        let Some(meta) = self.stat(key).await? else {
            return Ok(None);
        };
        match tokio::fs::File::open(self.path(key)?).await {
            Ok(f) => Ok(Some((f, meta))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::unavailable(BACKEND, e)),
        }
    }
}

fn exists(key: &str) -> BackendError {
    BackendError::Conflict(format!(
        "the object {key} is uploaded already; an uploaded object cannot be replaced"
    ))
}

fn uuid_like() -> String {
    let mut bytes = [0u8; 12];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

fn expiry(expires: Duration) -> i64 {
    Timestamp::now().unix_millis() / 1000 + expires.as_secs() as i64
}

#[async_trait]
impl Blobs for LocalBlobs {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires: Duration,
    ) -> Result<PresignedRequest, BackendError> {
        self.path(key)?;
        let exp = expiry(expires);
        let sig = self.sign(&format!("PUT\n{key}\n{content_type}\n{size}\n{exp}"));
        let url = format!(
            "{}/v1/blobs/{key}?op=put&ct={}&len={size}&exp={exp}&sig={sig}",
            self.base_url,
            encode(content_type)
        );
        Ok(PresignedRequest {
            method: "PUT",
            url,
            headers: vec![("Content-Type".into(), content_type.into())],
        })
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> Result<String, BackendError> {
        self.path(key)?;
        let exp = expiry(expires);
        let sig = self.sign(&format!("GET\n{key}\n{exp}"));
        Ok(format!(
            "{}/v1/blobs/{key}?exp={exp}&sig={sig}",
            self.base_url
        ))
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError> {
        let path = self.path(key)?;
        let meta = match tokio::fs::read(Self::meta_path(&path)).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BackendError::unavailable(BACKEND, e)),
        };
        let meta: serde_json::Value =
            serde_json::from_slice(&meta).map_err(|e| BackendError::internal(BACKEND, e))?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(ObjectMeta {
                size: m.len(),
                content_type: meta["content_type"]
                    .as_str()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::unavailable(BACKEND, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        assert!(valid_key("u/1/2/photo.png"));
        for bad in [
            "", "../x", "a/../b", "/abs", "a//b", "a/b.meta", "sp ace", "a\\b",
        ] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn signatures_bind_method_key_type_length_and_expiry() {
        let blobs = LocalBlobs::new("/tmp/unused".into(), b"k".to_vec(), "http://h");
        let req = blobs
            .presign_put("u/1/a.png", "image/png", 10, Duration::from_secs(60))
            .await
            .unwrap();
        let url = reqwest::Url::parse(&req.url).unwrap();
        let q: BlobQuery = serde_urlencoded::from_str(url.query().unwrap()).unwrap();
        let now = Timestamp::now();
        assert_eq!(
            blobs.verify("PUT", "u/1/a.png", &q, now),
            Ok(Grant::Put {
                content_type: "image/png".into(),
                size: 10
            })
        );
        let mut other = q.clone();
        other.len = Some(11);
        assert_eq!(
            blobs.verify("PUT", "u/1/a.png", &other, now),
            Err(GrantError::BadSignature)
        );
        let mut other = q.clone();
        other.ct = Some("text/html".into());
        assert_eq!(
            blobs.verify("PUT", "u/1/a.png", &other, now),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            blobs.verify("PUT", "u/1/b.png", &q, now),
            Err(GrantError::BadSignature)
        );
        assert_eq!(
            blobs.verify("GET", "u/1/a.png", &q, now),
            Err(GrantError::BadSignature)
        );
        let later = Timestamp(now.0 + 120_000);
        assert_eq!(
            blobs.verify("PUT", "u/1/a.png", &q, later),
            Err(GrantError::Expired)
        );
    }
}
