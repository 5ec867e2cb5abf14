//! Passwords (argon2id) and session tokens (JWT, HS256, with `exp`, `iss` and `aud` checked).

use std::path::Path;

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    rand_core::OsRng,
};
use argon2::{Algorithm as HashAlgorithm, Argon2, Params, Version};

/// One 1 KiB block of argon2 memory; a hash with the node's parameters uses
/// [`HASH_BLOCKS`] of them.
pub use argon2::Block;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parley_protocol::{Id, Timestamp};
use serde::{Deserialize, Serialize};

/// Issuer and audience of Parley session tokens.
pub const ISSUER: &str = "parley";
pub const AUDIENCE: &str = "parley-clients";

/// Why a token or a password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    exp: i64,
    /// Not before (RFC 7519 §4.1.5): Parley never sets it, but a token that carries one is
    /// honoured, and one that is no 64-bit number is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
}

/// Signs and checks session tokens.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &[u8], ttl_secs: u64) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            ttl_secs,
        }
    }

    /// A token for `user`, valid from `now` for the configured lifetime.
    pub fn issue(&self, user: Id, now: Timestamp) -> String {
        let iat = now.unix_millis() / 1000;
        let claims = Claims {
            sub: user.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat,
            exp: iat + self.ttl_secs as i64,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The user a token was issued to.
    pub fn verify(&self, token: &str) -> Result<Id, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            },
        )?;
        data.claims
            .sub
            .parse()
            .map_err(|_| AuthError::Invalid("bad subject".into()))
    }

    /// Like [`Tokens::verify`] (the same checks), and when the token expires: its `exp`, in
    /// seconds since the Unix epoch. A WebSocket session closes with 4003 then.
    pub fn verify_with_expiry(&self, token: &str) -> Result<(Id, i64), AuthError> {
        let user = self.verify(token)?;
        // Verified above; this reads `exp` from the same token.
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok((user, data.claims.exp))
    }
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

/// Blocks (1 KiB each) one argon2id hash with the node's parameters uses: argon2 0.5's
/// defaults, m=19456 (19 MiB), t=2, p=1, the OWASP minimum for argon2id.
pub const HASH_BLOCKS: usize = Params::DEFAULT.block_count();

/// The largest memory a stored hash may ask for (64 MiB); a hash asking for more is refused
/// like a wrong password (this node never writes one).
const MAX_VERIFY_BLOCKS: usize = 64 * 1024;

/// Memory for one hash with the node's parameters, to be reused by [`hash_password_in`]
/// and [`verify_password_in`].
pub fn hash_memory() -> Vec<Block> {
    vec![Block::default(); HASH_BLOCKS]
}

/// Like [`hash_password`] (same algorithm, parameters and PHC string), computed in
/// `memory` instead of a fresh 19 MiB allocation. `memory` grows to [`HASH_BLOCKS`] if it
/// is smaller.
pub fn hash_password_in(password: &str, memory: &mut Vec<Block>) -> String {
    let params = Params::DEFAULT;
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_buf)
        .expect("a generated salt decodes");
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    fit(memory, params.block_count());
    Argon2::new(HashAlgorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, &mut memory[..])
        .expect("argon2 with default parameters accepts any password");
    PasswordHash {
        algorithm: HashAlgorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).expect("default parameters encode"),
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).expect("32 bytes is a valid output length")),
    }
    .to_string()
}

/// Like [`verify_password`] (any argon2 PHC hash: algorithm, version and parameters are
/// read from it), computed in `memory`. The comparison is constant-time
/// (`password_hash::Output`'s `==`).
pub fn verify_password_in(password: &str, hash: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        HashAlgorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    if params.block_count() > MAX_VERIFY_BLOCKS {
        tracing::warn!(
            blocks = params.block_count(),
            "a stored password hash asks for more memory than allowed; refused"
        );
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    fit(memory, params.block_count());
    let computed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt_bytes,
        &mut out,
        &mut memory[..],
    );
    computed.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
}

/// Grows `memory` to `blocks` (never shrinks it: a pooled buffer keeps its size).
fn fit(memory: &mut Vec<Block>, blocks: usize) {
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
}

/// Checks a password against a PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A secret: `configured` if given, else the one kept in `data_dir/<file>`, generated on
/// first start.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &Path,
    file: &str,
) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} holds a secret shorter than 32 bytes", path.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let secret = hex::encode(bytes);
    std::fs::create_dir_all(data_dir)?;
    write_private(&path, &secret)?;
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_check_signature_issuer_audience_expiry() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef", 3600);
        let now = Timestamp::now();
        let t = tokens.issue(Id(42), now);
        assert_eq!(tokens.verify(&t), Ok(Id(42)));

        let other = Tokens::new(b"another-secret-another-secret-xx", 3600);
        assert!(matches!(other.verify(&t), Err(AuthError::Invalid(_))));

        let expired = tokens.issue(Id(42), Timestamp(now.0 - 7_200_000));
        assert_eq!(tokens.verify(&expired), Err(AuthError::Expired));

        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        let iat = now.0 / 1000;
        for (iss, aud) in [("evil", AUDIENCE), (ISSUER, "someone-else")] {
            let claims = Claims {
                sub: "42".into(),
                iss: iss.into(),
                aud: aud.into(),
                iat,
                exp: iat + 60,
                nbf: None,
            };
            let forged =
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            assert!(
                matches!(tokens.verify(&forged), Err(AuthError::Invalid(_))),
                "{iss}/{aud}"
            );
        }
        assert!(tokens.verify("garbage").is_err());

        // A not-before in the future is honoured; one that is no 64-bit number is refused
        // (found by the jwt fuzz target: an absurd `nbf` used to be ignored).
        let with_nbf = |nbf: serde_json::Value| {
            let claims = serde_json::json!({
                "sub": "42", "iss": ISSUER, "aud": AUDIENCE,
                "iat": iat, "exp": iat + 600, "nbf": nbf,
            });
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        assert_eq!(tokens.verify(&with_nbf(iat.into())), Ok(Id(42)));
        assert!(tokens.verify(&with_nbf((iat + 300).into())).is_err());
        assert!(tokens.verify(&with_nbf(1e300.into())).is_err());
    }

    #[test]
    fn passwords_hash_with_argon2id() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn hashes_made_in_reused_memory_are_the_crates_own() {
        let mut memory = Vec::new();
        let h = hash_password_in("correct horse", &mut memory);
        assert_eq!(
            memory.len(),
            HASH_BLOCKS,
            "grown once to the parameters' size"
        );
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        // The crate's own verifier accepts it, and ours accepts the crate's own hashes.
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        let stock = hash_password("battery staple");
        assert!(verify_password_in("battery staple", &stock, &mut memory));
        assert!(!verify_password_in("battery stapler", &stock, &mut memory));
        assert!(verify_password_in("correct horse", &h, &mut memory));
        // Other parameters and versions are read from the hash (argon2i, v=16, 8 MiB).
        let other = Argon2::new(
            HashAlgorithm::Argon2i,
            Version::V0x10,
            Params::new(8 * 1024, 3, 1, Some(16)).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(verify_password_in("pw", &other, &mut memory), "{other}");
        assert!(!verify_password_in("pW", &other, &mut memory));
        assert_eq!(memory.len(), HASH_BLOCKS, "the buffer is reused, not grown");
        // Garbage, and hashes asking for too much memory, are refused without hashing.
        for bad in [
            "not a hash",
            "$argon2id$v=19$m=1048576,t=1,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=16,r=8,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!verify_password_in("x", bad, &mut memory), "{bad}");
        }
        assert_eq!(memory.len(), HASH_BLOCKS);
    }

    #[test]
    fn secret_is_generated_once_and_kept() {
        let dir = std::env::temp_dir().join(format!(
            "parley-secret-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let a = load_or_create_secret(None, &dir, "jwt-secret").unwrap();
        let b = load_or_create_secret(None, &dir, "jwt-secret").unwrap();
        assert_eq!(a, b);
        assert!(a.len() >= 32);
        assert_eq!(
            load_or_create_secret(
                Some("configured-secret-configured-secret"),
                &dir,
                "jwt-secret"
            )
            .unwrap(),
            b"configured-secret-configured-secret"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
