//! The `ChatCluster` and `ChatShard` custom resources (`parley.dev/v1alpha1`).
//!
//! Secrets are always referenced, never inlined: database URLs, the Redis URL (when it
//! carries a password), S3 credentials and the JWT secret live in Secrets the pods mount.

// KubeSchema expands each type a second time inside a private scope, which `unreachable_pub`
// reports as unreachable.
#![allow(unreachable_pub)]
// Several `printcolumn(...)` each carry a `type_ = "string"`, which clippy takes for a repeated
// attribute.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// API group of Parley's resources.
pub const GROUP: &str = "parley.dev";
/// Their version.
pub const VERSION: &str = "v1alpha1";

/// CEL rule (`self` a URL) of every URL field in a spec: no user-info (no `@` at all, which
/// also refuses `user@host`) and no query parameter that carries a credential
/// (`?password=`, `&pass=`, `token=`... in any case; RE2 syntax, as the API server runs it).
/// Credentials come from Secrets.
pub const NO_URL_CREDENTIALS: &str = "!self.contains('@') && !self.matches('(?i)[?&](pass|password|passwd|pwd|user|username|token|secret|auth|x-amz-credential|x-amz-security-token)=')";

fn default_url_key() -> String {
    "url".into()
}

/// A key of a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the Secret (default `url`).
    #[serde(default = "default_url_key")]
    pub key: String,
}

/// A Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A key of a ConfigMap in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// A resource in the same namespace, by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A status condition (`Ready`, `Progressing`, `Degraded`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason a program can branch on.
    pub reason: String,
    /// What a person should know or do.
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
    /// The generation of the spec this condition speaks of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

fn default_replicas() -> i32 {
    3
}
fn default_partitions() -> i32 {
    12
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_persisters() -> i32 {
    2
}
fn default_batch() -> i32 {
    500
}
fn default_linger() -> i32 {
    20
}
fn default_heartbeat() -> i32 {
    15_000
}
fn default_pool() -> i32 {
    10
}

/// Redis: pub/sub, presence and ring leases.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("give redis.url or redis.secretRef, exactly one"))]
pub struct RedisSpec {
    /// The Redis URL, when it carries no password. The API server refuses one with
    /// user-info (`redis://:pw@host`, `redis://user:pw@host`) or a password parameter: such
    /// a URL goes in a Secret, named by `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(NO_URL_CREDENTIALS).message("redis.url must not carry credentials (user-info or a password parameter): put the URL in a Secret and name it with redis.secretRef"))]
    pub url: Option<String>,
    /// A Secret key holding the Redis URL (with its password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Kafka: the durable log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// `host:port` pairs, comma-separated; no credentials (the API server refuses an `@`).
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("!self.contains('@')").message("kafka.bootstrapServers is host:port pairs and must not carry credentials (they belong in a Secret)"))]
    pub bootstrap_servers: String,
    /// Prefix of `<prefix>.messages` and `<prefix>.notifications` (default: the cluster's
    /// name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<String>,
    /// Partitions of the topics.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 10000))]
    pub partitions: i32,
    /// Replication factor of the topics (default 3 is typical; 1 for a single broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub replication_factor: Option<i32>,
}

/// The directory database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectorySpec {
    /// Secret key with the PostgreSQL URL.
    pub secret_ref: SecretKeyRef,
    /// Connections per pool.
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: i32,
}

/// Media on S3.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaSpec {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// S3 endpoint (MinIO and others); AWS when absent. No credentials: the API server
    /// refuses user-info or a credential parameter (they come from `credentialsSecretRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(NO_URL_CREDENTIALS).message("media.endpoint must not carry credentials (user-info or a credential parameter): they come from the Secret named by media.credentialsSecretRef"))]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Secret with `accessKeyId` and `secretAccessKey`.
    pub credentials_secret_ref: SecretRef,
}

/// What happens to a message containing a listed word.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ModerationPolicy {
    #[default]
    Mask,
    Reject,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModerationSpec {
    /// ConfigMap key with the word list; reloaded by the nodes when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_list_config_map_ref: Option<ConfigMapKeyRef>,
    #[serde(default)]
    pub policy: ModerationPolicy,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    #[schemars(length(min = 1))]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// Secret with the TLS certificate for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The Gateway the HTTPRoute attaches to.
    pub parent_ref: GatewayParentRef,
    #[serde(default)]
    pub hostnames: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// How clients reach the nodes: an Ingress hashing on the `channel` query parameter, or a
/// Gateway API HTTPRoute; and which proxies in front of the nodes they believe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.ingress) && has(self.gateway))").message("choose exposure.ingress or exposure.gateway, not both"))]
pub struct ExposureSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
    /// Addresses (`10.0.0.7`, `fd00::7`) or CIDR ranges (`10.42.0.0/16`) of the proxies
    /// that connect to the chat-nodes for clients: the ingress controller's or gateway's
    /// pods (their pod CIDR), or the node addresses when it runs on the host network. A
    /// chat-node believes `X-Forwarded-For` only from these peers (chat-node's
    /// `PARLEY_TRUSTED_PROXIES`) and then counts its per-address limits (connections per
    /// address, the `/v1/auth/*` login and register rate limits) on the client's address.
    /// Without them every client behind the proxy shares the proxy's one address, so a
    /// handful of logins locks everybody out. List only proxies: a client connecting
    /// directly from a trusted range could claim any address. At most 100 entries; an entry
    /// that is no address or range is left out (the API server refuses most of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub trusted_proxies: Vec<ProxyAddress>,
}

/// RE2 pattern of one `trustedProxies` entry: an IPv4 address (no leading zeros) with an
/// optional `/0`-`/32`, or colon-separated hex groups with an optional `/0`-`/128`. Loose on
/// IPv6 (`1:::2` matches); [`parse_trusted_proxy`] is exact. A pattern rather than CEL's
/// `isCIDR()`/`isIP()`, which API servers older than Kubernetes 1.31 do not know (the chart
/// supports 1.30).
pub const TRUSTED_PROXY_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}(/(3[0-2]|[12]?[0-9]))?|[0-9a-fA-F]{0,4}(:[0-9a-fA-F]{0,4}){2,8}(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$";

/// One entry of `exposure.trustedProxies`, as written: an IP address or a CIDR range.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(transparent)]
pub struct ProxyAddress(#[schemars(regex(pattern = TRUSTED_PROXY_PATTERN))] pub String);

/// A trusted-proxy entry normalised to `address/prefix`: a bare address becomes a one-host
/// range (`/32`, `/128`), an IPv6 address its canonical text (`2001:DB8:0::` → `2001:db8::`);
/// host bits after the prefix are kept (`10.1.2.3/8` covers `10.0.0.0/8`, as chat-node
/// reads it). No surrounding spaces, no zone (`%eth0`), the prefix in decimal without sign or
/// leading zero. Errors: "`<entry>` is not an IP address or CIDR range".
pub fn parse_trusted_proxy(entry: &str) -> Result<String, String> {
    let bad = || format!("`{entry}` is not an IP address or CIDR range");
    let (addr, prefix) = match entry.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (entry, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            let digits = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
            if !digits || (p.len() > 1 && p.starts_with('0')) {
                return Err(bad());
            }
            p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
        }
    };
    Ok(format!("{ip}/{prefix}"))
}

impl ExposureSpec {
    /// `trustedProxies` through [`parse_trusted_proxy`]: the normalised ranges, in order, and
    /// the entries that are none, as written.
    pub fn trusted_proxy_ranges(&self) -> (Vec<String>, Vec<String>) {
        let mut ranges = Vec::new();
        let mut invalid = Vec::new();
        for ProxyAddress(entry) in &self.trusted_proxies {
            match parse_trusted_proxy(entry) {
                Ok(r) => ranges.push(r),
                Err(_) => invalid.push(entry.clone()),
            }
        }
        (ranges, invalid)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersisterSpec {
    #[serde(default = "default_persisters")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Most messages per batch.
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: i32,
    /// How long a batch may wait to fill, ms.
    #[serde(default = "default_linger")]
    #[schemars(range(min = 0, max = 10000))]
    pub linger_ms: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for PersisterSpec {
    fn default() -> Self {
        Self {
            replicas: default_persisters(),
            batch_size: default_batch(),
            linger_ms: default_linger(),
            resources: None,
        }
    }
}

/// Where a cluster's pods may run: applied alike to the chat-node StatefulSet, the persister
/// Deployment and the migration Job (all of them talk to the same databases, so they
/// belong on the same nodes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must carry (a pod's `nodeSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (a pod's `tolerations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// A Parley cluster: chat-nodes, persisters and the edge, over Redis, Kafka, a directory
/// database, S3 and the `ChatShard`s that name this cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "parley.dev",
    version = "v1alpha1",
    kind = "ChatCluster",
    namespaced,
    status = "ChatClusterStatus",
    shortname = "chatc",
    category = "parley",
    doc = "A Parley chat cluster",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "string",
        json_path = ".status.replicasSummary"
    ),
    printcolumn(name = "Shards", type_ = "string", json_path = ".status.shardsSummary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterSpec {
    /// chat-node replicas.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1024))]
    pub replicas: i32,
    /// The chat-node image.
    #[schemars(length(min = 1))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    pub redis: RedisSpec,
    pub kafka: KafkaSpec,
    pub directory: DirectorySpec,
    pub media: MediaSpec,
    /// Secret key holding the session-token secret (at least 32 bytes). When absent the
    /// operator creates `<cluster>-jwt` once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret_ref: Option<SecretKeyRef>,
    #[serde(default)]
    pub moderation: ModerationSpec,
    #[serde(default)]
    pub exposure: ExposureSpec,
    #[serde(default)]
    pub persister: PersisterSpec,
    /// Snowflake epoch, ms since the Unix epoch (default 2024-01-01). Never change it on a
    /// cluster with messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snowflake_epoch_ms: Option<i64>,
    /// Heartbeat interval clients must keep, ms.
    #[serde(default = "default_heartbeat")]
    #[schemars(range(min = 500, max = 600000))]
    pub heartbeat_interval_ms: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector and tolerations of every pod the operator runs for this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,
}

/// The Snowflake worker IDs allocated to a cluster: `base .. base + size`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerIdRange {
    pub base: i32,
    pub size: i32,
}

/// A ready chat-node in the ring.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingMember {
    pub name: String,
    pub ordinal: i32,
    pub worker_id: i32,
    /// Its node-to-node endpoint.
    pub endpoint: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingStatus {
    /// Increases at every change of the members.
    pub epoch: i64,
    pub members: Vec<RingMember>,
}

/// A shard in force.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub name: String,
    pub slots: Vec<String>,
    pub ready: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// chat-node pods (scale subresource).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_summary: Option<String>,
    /// Label selector of the chat-node pods (scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id_range: Option<WorkerIdRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingStatus>,
    /// The shard map in force (the last valid one).
    #[serde(default)]
    pub shards: Vec<ShardStatus>,
    /// `ready/total` shards, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards_summary: Option<String>,
}

/// A message shard of a `ChatCluster`: a PostgreSQL database holding the messages of the
/// channels whose slots it owns.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "parley.dev",
    version = "v1alpha1",
    kind = "ChatShard",
    namespaced,
    status = "ChatShardStatus",
    shortname = "chats",
    category = "parley",
    doc = "A PostgreSQL message shard of a Parley chat cluster",
    derive = "PartialEq",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Slots", type_ = "string", json_path = ".spec.slots"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ChatShardSpec {
    /// The ChatCluster this shard belongs to (immutable).
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef cannot change"))]
    pub cluster_ref: LocalRef,
    /// Slot ranges, `start-end` or a single slot, within 0-4095.
    #[schemars(length(min = 1))]
    pub slots: Vec<SlotString>,
    pub postgres: ShardPostgresSpec,
}

/// A slot range as written in a ChatShard.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(transparent)]
pub struct SlotString(#[schemars(regex(pattern = r"^[0-9]{1,4}(-[0-9]{1,4})?$"))] pub String);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShardPostgresSpec {
    /// Secret key with the PostgreSQL URL.
    pub secret_ref: SecretKeyRef,
    #[serde(default = "default_pool")]
    #[schemars(range(min = 1, max = 1000))]
    pub pool_size: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatShardStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The newest shard schema migration applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i32>,
}
