//! Media on S3 (MinIO here): presigned PUTs that sign the content type, the exact length and
//! `If-None-Match: *` (a conditional write: an object, once uploaded, cannot be replaced
//! through its URL, before or after a message attached it), presigned GETs, and HEAD to check
//! an upload before a message may reference it.
//!
//! Conditional writes: S3 answers a PUT with `If-None-Match: *` on an existing key with
//! `412 Precondition Failed`
//! (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html>);
//! MinIO does the same. The header is signed, so a client must send it: it is among the
//! `upload.headers` the node hands out.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::presigning::PresigningConfig;

use super::{BackendError, Blobs, ObjectMeta, PresignedRequest};
use crate::secret::Secret;

const BACKEND: &str = "s3";

/// Where the bucket is and how to sign for it. `Debug` shows no credential.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The S3 server (MinIO and others); AWS when `None`.
    pub endpoint: Option<url::Url>,
    /// The bucket's region (`us-east-1` for MinIO).
    pub region: String,
    /// The media bucket's name.
    pub bucket: String,
    /// The credentials requests are signed with.
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Path-style URLs (`endpoint/bucket/key`), as MinIO wants.
    pub path_style: bool,
}

/// The S3 blob store.
#[derive(Clone)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl std::fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Blobs")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

fn presigning(expires: Duration) -> Result<PresigningConfig, BackendError> {
    PresigningConfig::expires_in(expires).map_err(|e| BackendError::internal(BACKEND, e))
}

impl S3Blobs {
    pub fn new(s: &S3Settings) -> Self {
        let credentials = Credentials::new(
            s.access_key_id.expose(),
            s.secret_access_key.expose(),
            None,
            None,
            "parley-config",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(s.path_style);
        if let Some(endpoint) = &s.endpoint {
            config = config.endpoint_url(endpoint.as_str().trim_end_matches('/'));
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: s.bucket.clone(),
        }
    }

    /// Whether the bucket answers (readiness).
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| {
                BackendError::unavailable(BACKEND, aws_sdk_s3::error::DisplayErrorContext(e))
            })?;
        Ok(())
    }
}

#[async_trait]
impl Blobs for S3Blobs {
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        size: u64,
        expires: Duration,
    ) -> Result<PresignedRequest, BackendError> {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(i64::try_from(size).map_err(|e| BackendError::internal(BACKEND, e))?)
            .if_none_match("*")
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| {
                BackendError::internal(BACKEND, aws_sdk_s3::error::DisplayErrorContext(e))
            })?;
        let mut headers: Vec<(String, String)> = req
            .headers()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("Content-Type".into(), content_type.into()));
        }
        Ok(PresignedRequest {
            method: "PUT",
            url: req.uri().to_owned(),
            headers,
        })
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> Result<String, BackendError> {
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(expires)?)
            .await
            .map_err(|e| {
                BackendError::internal(BACKEND, aws_sdk_s3::error::DisplayErrorContext(e))
            })?;
        Ok(req.uri().to_owned())
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(ObjectMeta {
                size: head.content_length().unwrap_or(0).max(0) as u64,
                content_type: head
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned(),
            })),
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found {
                    Ok(None)
                } else {
                    Err(BackendError::unavailable(
                        BACKEND,
                        aws_sdk_s3::error::DisplayErrorContext(e),
                    ))
                }
            }
        }
    }
}
