//! Phase 3, Secrets: those the spec references (present, or the cluster is Degraded naming
//! them) and those the operator generates (the node-to-node secret, the JWT secret unless
//! the spec names one). A generated Secret is created once and never overwritten.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt as _;
use kube::api::PostParams;
use parley_crd::resources::ChatShard;
use rand::TryRngCore as _;

use crate::controller::target::Target;
use crate::error::{Error, Result};
use crate::resources::{self as r, Component, names::GENERATED_SECRET_KEY};
use crate::status::{Problem, Reason};

/// The S3 credentials' keys, in the Secret `spec.media.credentialsSecretRef` names.
const S3_KEYS: [&str; 2] = ["accessKeyId", "secretAccessKey"];

/// What phase 3 found of the Secrets the spec references. URLs are read as UTF-8 (lossy).
/// `Debug` shows which URLs were found, never one (they hold database passwords).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ReferencedSecrets {
    /// The directory's database URL (`spec.directory.secretRef`).
    pub directory_url: Option<String>,
    /// Each ChatShard's database URL, by shard name.
    pub shard_urls: BTreeMap<String, String>,
    /// `name/key` of each one missing (a shard's with `(ChatShard <name>)`), in spec order.
    pub missing: Vec<String>,
}

impl ReferencedSecrets {
    /// [`Reason::MissingSecret`] naming every missing Secret key, if any is.
    pub fn problem(&self) -> Option<Problem> {
        (!self.missing.is_empty()).then(|| Problem {
            reason: Reason::MissingSecret,
            message: format!("Secrets not found: {}", self.missing.join(", ")),
        })
    }
}

impl std::fmt::Debug for ReferencedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const REDACTED: &str = "[redacted]";
        let shard_urls: BTreeMap<&str, &str> = self
            .shard_urls
            .keys()
            .map(|k| (k.as_str(), REDACTED))
            .collect();
        f.debug_struct("ReferencedSecrets")
            .field(
                "directory_url",
                &self.directory_url.as_ref().map(|_| REDACTED),
            )
            .field("shard_urls", &shard_urls)
            .field("missing", &self.missing)
            .finish()
    }
}

/// Where the JWT secret is: the spec's `jwtSecretRef` or the generated Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSecrets {
    /// `(Secret name, key)` of the JWT secret.
    pub jwt_secret: (String, String),
}

fn value(secret: Option<&Secret>, key: &str) -> Option<ByteString> {
    secret?.data.as_ref()?.get(key).cloned()
}

fn text(v: &ByteString) -> String {
    String::from_utf8_lossy(&v.0).into_owned()
}

/// Phase 3a: reads the directory's, the S3 credentials' and each shard's Secret (one GET
/// each, in that order).
pub async fn read_referenced(t: &Target<'_>, shards: &[ChatShard]) -> Result<ReferencedSecrets> {
    let spec = &t.cluster.spec;
    let mut found = ReferencedSecrets::default();
    let directory = &spec.directory.secret_ref;
    let secret = t.get::<Secret>(&directory.name).await?;
    found.directory_url = value(secret.as_ref(), &directory.key).map(|v| text(&v));
    if found.directory_url.is_none() {
        found
            .missing
            .push(format!("{}/{}", directory.name, directory.key));
    }
    let s3 = &spec.media.credentials_secret_ref.name;
    let secret = t.get::<Secret>(s3).await?;
    for key in S3_KEYS {
        if value(secret.as_ref(), key).is_none() {
            found.missing.push(format!("{s3}/{key}"));
        }
    }
    for shard in shards {
        let p = &shard.spec.postgres.secret_ref;
        let secret = t.get::<Secret>(&p.name).await?;
        match value(secret.as_ref(), &p.key) {
            Some(v) => {
                found.shard_urls.insert(shard.name_any(), text(&v));
            }
            None => found.missing.push(format!(
                "{}/{} (ChatShard {})",
                p.name,
                p.key,
                shard.name_any()
            )),
        }
    }
    Ok(found)
}

/// Phase 3b: creates the generated Secrets that do not exist yet.
pub async fn ensure_generated(t: &Target<'_>) -> Result<GeneratedSecrets> {
    ensure_secret(t, &t.names.internal_secret()).await?;
    let jwt_secret = match &t.cluster.spec.jwt_secret_ref {
        Some(s) => (s.name.clone(), s.key.clone()),
        None => {
            let name = t.names.generated_jwt_secret();
            ensure_secret(t, &name).await?;
            (name, GENERATED_SECRET_KEY.into())
        }
    };
    Ok(GeneratedSecrets { jwt_secret })
}

/// Creates `name` with one random [`GENERATED_SECRET_KEY`] if it does not exist (never
/// overwritten; another writer's create in between is fine).
async fn ensure_secret(t: &Target<'_>, name: &str) -> Result<()> {
    if t.get::<Secret>(name).await?.is_some() {
        return Ok(());
    }
    let secret = Secret {
        metadata: r::meta(t.cluster, name.into(), Component::Secret),
        string_data: Some(BTreeMap::from([(
            GENERATED_SECRET_KEY.into(),
            random_secret()?,
        )])),
        ..Default::default()
    };
    match t
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// 32 bytes from the operating system's generator, hex-encoded (64 characters).
/// [`Error::Random`] when the OS cannot give them: never a weak or all-zero secret.
pub fn random_secret() -> Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(Error::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fixtures::{self, Exchange, Reply, cluster, path, secret};

    fn secret_path(name: Option<&str>) -> String {
        path::<Secret>(Some("chat"), name)
    }

    #[tokio::test]
    async fn each_referenced_secret_is_read_once_and_missing_keys_are_named() {
        let mut c = cluster();
        c.spec.jwt_secret_ref = None;
        let shards = [fixtures::shard("alpha-a", &["0-4095"])];
        let script = vec![
            Exchange::get(
                secret_path(Some("alpha-directory")),
                Reply::object(&secret("alpha-directory", &[("url", "postgres://dir")])),
            ),
            Exchange::get(
                secret_path(Some("alpha-s3")),
                Reply::object(&secret("alpha-s3", &[("accessKeyId", "k")])),
            ),
            Exchange::get(secret_path(Some("alpha-a-db")), Reply::Status(404)),
        ];
        let (client, server) = fixtures::client();
        let t = Target::new(&client, &c).unwrap();
        let (found, _) = server.replay(script, read_referenced(&t, &shards)).await;
        let found = found.unwrap();
        assert_eq!(found.directory_url.as_deref(), Some("postgres://dir"));
        assert!(found.shard_urls.is_empty());
        assert_eq!(
            found.missing,
            [
                "alpha-s3/secretAccessKey",
                "alpha-a-db/url (ChatShard alpha-a)"
            ]
        );
    }

    #[tokio::test]
    async fn a_generated_secret_someone_else_created_first_is_kept() {
        let mut c = cluster();
        c.spec.jwt_secret_ref = Some(parley_crd::resources::SecretKeyRef {
            name: "given".into(),
            key: "jwt".into(),
        });
        let script = vec![
            Exchange::get(secret_path(Some("alpha-internal")), Reply::Status(404)),
            Exchange::post(secret_path(None), Reply::Status(409)),
        ];
        let (client, server) = fixtures::client();
        let t = Target::new(&client, &c).unwrap();
        let (generated, seen) = server.replay(script, ensure_generated(&t)).await;
        assert_eq!(
            generated.unwrap().jwt_secret,
            ("given".to_owned(), "jwt".to_owned()),
            "the spec's JWT Secret: nothing generated for it"
        );
        assert_eq!(seen[1].body["metadata"]["name"], "alpha-internal");
    }

    #[test]
    fn random_secrets_are_64_hex_digits_and_differ() {
        let a = random_secret().unwrap();
        let b = random_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(a, "0".repeat(64));
    }

    #[test]
    fn debug_shows_no_database_url() {
        let found = ReferencedSecrets {
            directory_url: Some("postgres://u:directory-password@db/d".into()),
            shard_urls: [("a".to_owned(), "postgres://u:shard-password@a/d".to_owned())].into(),
            missing: vec!["s3/accessKeyId".into()],
        };
        let debug = format!("{found:?}");
        assert!(!debug.contains("password"), "{debug}");
        assert!(debug.contains("\"a\": \"[redacted]\"") && debug.contains("s3/accessKeyId"));
    }

    #[test]
    fn every_missing_secret_is_named_in_one_problem() {
        assert_eq!(ReferencedSecrets::default().problem(), None);
        let found = ReferencedSecrets {
            missing: vec!["dir/url".into(), "s3/accessKeyId".into()],
            ..Default::default()
        };
        let p = found.problem().unwrap();
        assert_eq!(p.reason, Reason::MissingSecret);
        assert_eq!(p.message, "Secrets not found: dir/url, s3/accessKeyId");
    }
}
