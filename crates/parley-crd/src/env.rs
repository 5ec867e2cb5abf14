//! The `PARLEY_*` environment variables chat-node reads: one constant per key, shared by
//! chat-node (its clap attributes, `env = parley_crd::env::LISTEN`) and the operator (the
//! ConfigMap and container `env` it renders), so the two cannot drift apart.
//!
//! ```text
//!   parley_crd::env::JWT_SECRET ──► chat-node  #[arg(env = ...)]      reads it
//!                               └─► operator   EnvVar { name: ... }    renders it
//! ```
//!
//! Each docstring gives the meaning and the unit; defaults and accepted ranges live with the
//! clap attribute in chat-node (`chat-node --help` prints them). Any key may instead be
//! given as the path of a file holding its value, in the key with [`FILE_SUFFIX`] appended
//! ([`file`]): how Kubernetes mounts Secrets.
//!
//! A new setting: add its constant here (the [`ALL`] list follows), then the field with
//! `env = parley_crd::env::NEW_KEY` in chat-node's config, then (if the operator sets it) the
//! line in `operator/src/resources`.

/// Declares each key as a `pub const` and lists them all in [`ALL`].
macro_rules! keys {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        $($(#[$doc])* pub const $name: &str = $value;)*

        /// Every key chat-node reads, in declaration order.
        pub const ALL: &[&str] = &[$($name),*];
    };
}

/// Appended to a key to name a file that holds its value (`PARLEY_JWT_SECRET_FILE`).
pub const FILE_SUFFIX: &str = "_FILE";

/// The variable naming a file that holds `key`'s value: `PARLEY_X` → `PARLEY_X_FILE`.
pub fn file(key: &str) -> String {
    format!("{key}{FILE_SUFFIX}")
}

keys! {
    // The node.

    /// Which backends the node runs on: `embedded` or `distributed`.
    MODE = "PARLEY_MODE";
    /// Socket address the HTTP/WebSocket server listens on (`host:port`).
    LISTEN = "PARLEY_LISTEN";
    /// Directory of the embedded database, media and generated secrets (a path).
    DATA_DIR = "PARLEY_DATA_DIR";
    /// Base URL clients reach the node at (`http://` or `https://`).
    PUBLIC_URL = "PARLEY_PUBLIC_URL";
    /// Secret that signs session tokens (HS256), at least 32 bytes.
    JWT_SECRET = "PARLEY_JWT_SECRET";
    /// Lifetime of a session token, in seconds.
    JWT_TTL_SECS = "PARLEY_JWT_TTL_SECS";
    /// File of abusive words or phrases, one per line (a path).
    MODERATION_WORDS_FILE = "PARLEY_MODERATION_WORDS_FILE";
    /// What happens to a message with a listed word: `mask` or `reject`.
    MODERATION_POLICY = "PARLEY_MODERATION_POLICY";
    /// Comma-separated origins (`https://host[:port]`) allowed to open WebSockets; `*` any.
    ALLOWED_ORIGINS = "PARLEY_ALLOWED_ORIGINS";
    /// Interval at which clients must ping, in milliseconds.
    HEARTBEAT_INTERVAL_MS = "PARLEY_HEARTBEAT_INTERVAL_MS";
    /// Name of this node (its pod name in Kubernetes).
    NODE_NAME = "PARLEY_NODE_NAME";
    /// Snowflake worker ID of this node, 0..=1023.
    WORKER_ID = "PARLEY_WORKER_ID";
    /// Snowflake epoch, in milliseconds since the Unix epoch.
    SNOWFLAKE_EPOCH_MS = "PARLEY_SNOWFLAKE_EPOCH_MS";
    /// How long an ID too far ahead of the clock is waited for before sends are refused, in
    /// ms.
    MAX_CLOCK_WAIT_MS = "PARLEY_MAX_CLOCK_WAIT_MS";
    /// How far ahead of the node's clock its Snowflake IDs may run, in milliseconds.
    MAX_ID_LEAD_MS = "PARLEY_MAX_ID_LEAD_MS";
    /// Window a stopping node spreads the closing of its WebSockets over, in milliseconds.
    DRAIN_MS = "PARLEY_DRAIN_MS";

    // Distributed mode: services and the ring.

    /// PostgreSQL URL of the directory database (holds credentials).
    DIRECTORY_URL = "PARLEY_DIRECTORY_URL";
    /// Message shards, `;`-separated `name:slot-ranges:postgres-url` (holds credentials).
    SHARDS = "PARLEY_SHARDS";
    /// Connections per database pool (a count).
    DB_POOL_SIZE = "PARLEY_DB_POOL_SIZE";
    /// Redis URL: pub/sub, presence, node leases (may hold a password).
    REDIS_URL = "PARLEY_REDIS_URL";
    /// Kafka bootstrap servers, comma-separated `host:port`.
    KAFKA_BOOTSTRAP = "PARLEY_KAFKA_BOOTSTRAP";
    /// Prefix of the topics `<prefix>.messages` and `<prefix>.notifications`.
    KAFKA_TOPIC_PREFIX = "PARLEY_KAFKA_TOPIC_PREFIX";
    /// Partitions of the topics `migrate` creates (a count).
    KAFKA_PARTITIONS = "PARLEY_KAFKA_PARTITIONS";
    /// How long a send waits for Kafka's acknowledgement, in milliseconds.
    KAFKA_DELIVERY_TIMEOUT_MS = "PARLEY_KAFKA_DELIVERY_TIMEOUT_MS";
    /// S3 endpoint URL (MinIO and other S3 servers); AWS when unset.
    S3_ENDPOINT = "PARLEY_S3_ENDPOINT";
    /// S3 region name.
    S3_REGION = "PARLEY_S3_REGION";
    /// The media bucket's name.
    S3_BUCKET = "PARLEY_S3_BUCKET";
    /// S3 access key ID (a credential).
    S3_ACCESS_KEY_ID = "PARLEY_S3_ACCESS_KEY_ID";
    /// S3 secret access key (a credential).
    S3_SECRET_ACCESS_KEY = "PARLEY_S3_SECRET_ACCESS_KEY";
    /// Ring members, comma-separated `name=http://host:port` (outside Kubernetes).
    NODES = "PARLEY_NODES";
    /// Name of the ChatCluster whose status lists the ring members (in Kubernetes).
    CLUSTER_NAME = "PARLEY_CLUSTER_NAME";
    /// Namespace of that ChatCluster.
    NAMESPACE = "PARLEY_NAMESPACE";
    /// Socket address of the node-to-node API (`host:port`).
    INTERNAL_LISTEN = "PARLEY_INTERNAL_LISTEN";
    /// Secret the nodes share for the node-to-node API, at least 32 bytes.
    CLUSTER_SECRET = "PARLEY_CLUSTER_SECRET";
    /// Lifetime of a node's lease in Redis without renewal, in milliseconds.
    NODE_LEASE_MS = "PARLEY_NODE_LEASE_MS";
    /// Most messages a persister writes in one batch (a count).
    PERSISTER_BATCH = "PARLEY_PERSISTER_BATCH";
    /// How long a persister waits for a batch to fill, in milliseconds.
    PERSISTER_LINGER_MS = "PARLEY_PERSISTER_LINGER_MS";

    // Protocol limits.

    /// Longest message text, in Unicode scalar values.
    MAX_TEXT_CHARS = "PARLEY_MAX_TEXT_CHARS";
    /// Largest WebSocket frame, in bytes.
    MAX_FRAME_BYTES = "PARLEY_MAX_FRAME_BYTES";
    /// Attachments per message (a count).
    MAX_ATTACHMENTS = "PARLEY_MAX_ATTACHMENTS";
    /// Largest image/video/audio upload, in bytes.
    MAX_MEDIA_BYTES = "PARLEY_MAX_MEDIA_BYTES";
    /// Largest upload of any other type, in bytes.
    MAX_DOCUMENT_BYTES = "PARLEY_MAX_DOCUMENT_BYTES";
    /// Frames one WebSocket may send, per second.
    WS_FRAME_RATE = "PARLEY_WS_FRAME_RATE";
    /// Burst of frames one WebSocket may send (a count).
    WS_FRAME_BURST = "PARLEY_WS_FRAME_BURST";
    /// Sustained sends per user, per second.
    SEND_RATE = "PARLEY_SEND_RATE";
    /// Burst of sends per user (a count).
    SEND_BURST = "PARLEY_SEND_BURST";

    // `/v1/auth/*` limits.

    /// Password hashes computed at once (a count).
    AUTH_HASH_CONCURRENCY = "PARLEY_AUTH_HASH_CONCURRENCY";
    /// Requests that may wait for a hash slot (a count).
    AUTH_HASH_QUEUE = "PARLEY_AUTH_HASH_QUEUE";
    /// How long a request waits for a hash slot, in milliseconds.
    AUTH_HASH_WAIT_MS = "PARLEY_AUTH_HASH_WAIT_MS";
    /// Sustained `/v1/auth/*` requests per client address, per minute.
    AUTH_ADDRESS_PER_MIN = "PARLEY_AUTH_ADDRESS_PER_MIN";
    /// Burst of `/v1/auth/*` requests per client address (a count).
    AUTH_ADDRESS_BURST = "PARLEY_AUTH_ADDRESS_BURST";
    /// Sustained logins per username, per minute.
    AUTH_USERNAME_PER_MIN = "PARLEY_AUTH_USERNAME_PER_MIN";
    /// Burst of logins per username (a count).
    AUTH_USERNAME_BURST = "PARLEY_AUTH_USERNAME_BURST";

    // Sequencer memory.

    /// Memory for recent messages and per-channel state, in bytes.
    RECENT_MESSAGES_BYTES = "PARLEY_RECENT_MESSAGES_BYTES";
    /// Memory for idempotency keys, in bytes.
    IDEMPOTENCY_KEYS_BYTES = "PARLEY_IDEMPOTENCY_KEYS_BYTES";

    // Per-user caps (0 turns one off).

    /// Groups one user may create, per day.
    GROUPS_PER_DAY = "PARLEY_GROUPS_PER_DAY";
    /// DMs one user may open with strangers, per day.
    STRANGER_DMS_PER_DAY = "PARLEY_STRANGER_DMS_PER_DAY";
    /// Uploads one user may announce, per hour.
    UPLOADS_PER_HOUR = "PARLEY_UPLOADS_PER_HOUR";
    /// Upload bytes one user may announce per hour, in MiB.
    UPLOAD_MIB_PER_HOUR = "PARLEY_UPLOAD_MIB_PER_HOUR";
    /// Most user IDs in one presence query (a count).
    PRESENCE_MAX_IDS = "PARLEY_PRESENCE_MAX_IDS";

    // HTTP listeners.

    /// Time a client has to send a complete request head, in milliseconds.
    HTTP_HEADER_TIMEOUT_MS = "PARLEY_HTTP_HEADER_TIMEOUT_MS";
    /// Time a request body may take (extended by its rate), in milliseconds.
    HTTP_BODY_TIMEOUT_MS = "PARLEY_HTTP_BODY_TIMEOUT_MS";
    /// Body rate that earns one more second of body time, in bytes per second.
    HTTP_BODY_MIN_RATE = "PARLEY_HTTP_BODY_MIN_RATE";
    /// Time a connection may sit with nothing moving, in milliseconds.
    HTTP_IDLE_TIMEOUT_MS = "PARLEY_HTTP_IDLE_TIMEOUT_MS";
    /// Open connections one listener holds at most (a count).
    HTTP_MAX_CONNECTIONS = "PARLEY_HTTP_MAX_CONNECTIONS";
    /// Open connections from one peer address (IPv6: one /64) at most (a count).
    HTTP_MAX_CONNECTIONS_PER_ADDRESS = "PARLEY_HTTP_MAX_CONNECTIONS_PER_ADDRESS";
    /// Comma-separated addresses or CIDR ranges of trusted reverse proxies.
    TRUSTED_PROXIES = "PARLEY_TRUSTED_PROXIES";

    // WebSocket sessions.

    /// Time one write to a WebSocket may take, in milliseconds.
    WS_WRITE_TIMEOUT_MS = "PARLEY_WS_WRITE_TIMEOUT_MS";
    /// WebSocket sessions one user may hold open on one node (a count).
    WS_MAX_SESSIONS_PER_USER = "PARLEY_WS_MAX_SESSIONS_PER_USER";
    /// Messages a user's resumes may replay, per minute.
    WS_RESUME_PER_MINUTE = "PARLEY_WS_RESUME_PER_MINUTE";
    /// Messages a user's resumes may replay in a burst (a count).
    WS_RESUME_BURST = "PARLEY_WS_RESUME_BURST";
    /// `typing` ops one user may send, per second.
    WS_TYPING_RATE = "PARLEY_WS_TYPING_RATE";
    /// Burst of `typing` ops one user may send (a count).
    WS_TYPING_BURST = "PARLEY_WS_TYPING_BURST";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_prefixed() {
        let mut seen = std::collections::BTreeSet::new();
        for key in ALL {
            assert!(key.starts_with("PARLEY_"), "{key}");
            assert!(seen.insert(key), "{key} is listed twice");
        }
        assert_eq!(file(JWT_SECRET), "PARLEY_JWT_SECRET_FILE");
    }
}
