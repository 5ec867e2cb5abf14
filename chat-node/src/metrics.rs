//! Prometheus metrics of one node (served at `/metrics`).

use parley_protocol::ErrorCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// The node's metrics and their registry (owned by the node's state; no globals).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Set from the hub when metrics are rendered.
    pub connections: Gauge,
    pub messages_in: Counter,
    pub messages_out: Counter,
    /// Sends whose record was appended and whose owner term was then found fenced
    /// (answered `unavailable`; docs/reliability.md, fencing).
    pub fenced_sends: Counter,
    pub send_latency: Histogram,
    pub errors: Family<CodeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("parley");
        let connections = Gauge::default();
        let messages_in = Counter::default();
        let messages_out = Counter::default();
        let fenced_sends = Counter::default();
        // 0.25 ms .. ~4 s
        let send_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 15),
        );
        let errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "connections",
            "Live WebSocket connections",
            connections.clone(),
        );
        registry.register(
            "messages_in",
            "Messages accepted (durable)",
            messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Message events written to connections",
            messages_out.clone(),
        );
        registry.register(
            "fenced_sends",
            "Sends answered unavailable because this node's owner term was fenced after the append",
            fenced_sends.clone(),
        );
        registry.register(
            "send_latency_seconds",
            "Time from receiving a send to its ok",
            send_latency.clone(),
        );
        registry.register(
            "errors",
            "Errors answered to clients, by code",
            errors.clone(),
        );
        Self {
            registry,
            connections,
            messages_in,
            messages_out,
            fenced_sends,
            send_latency,
            errors,
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str().to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
