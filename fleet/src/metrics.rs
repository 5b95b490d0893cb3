//! Prometheus metrics, served at `/metrics`.
//!
//! prometheus-client is the Prometheus project's own Rust client: typed label sets, the
//! OpenMetrics text format, no global registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    pub nodes: Family<StateLabel, Gauge>,
    pub messages_in: Family<KindLabel, Counter>,
    pub messages_out: Family<KindLabel, Counter>,
    pub rejected: Family<ReasonLabel, Counter>,
    pub registrations: Counter,
    /// Seconds from a heartbeat's envelope timestamp to its commit in the store.
    pub heartbeat_lag: Histogram,
    pub gateway: crate::gateway::metrics::GatewayMetrics,
    pub auth: crate::accounts::metrics::AuthMetrics,
    /// 1 while this replica leads (runs the scheduler timers, sends targets), else 0.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lattice");
        let nodes = Family::<StateLabel, Gauge>::default();
        let messages_in = Family::<KindLabel, Counter>::default();
        let messages_out = Family::<KindLabel, Counter>::default();
        let rejected = Family::<ReasonLabel, Counter>::default();
        let registrations = Counter::default();
        let heartbeat_lag = Histogram::new([
            0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
            0.15, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]);
        registry.register("nodes", "Registered nodes by state", nodes.clone());
        registry.register(
            "messages_in",
            "Accepted node messages by kind",
            messages_in.clone(),
        );
        registry.register(
            "messages_out",
            "Messages sent to nodes by kind",
            messages_out.clone(),
        );
        registry.register(
            "messages_rejected",
            "Refused node messages and registrations by reason",
            rejected.clone(),
        );
        registry.register("registrations", "Nodes registered", registrations.clone());
        registry.register(
            "heartbeat_lag_seconds",
            "Heartbeat envelope timestamp to stored",
            heartbeat_lag.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "fleet_leader",
            "1 while this fleet replica is the leader",
            leader.clone(),
        );
        let gateway = crate::gateway::metrics::GatewayMetrics::register(&mut registry);
        let auth = crate::accounts::metrics::AuthMetrics::register(&mut registry);
        Metrics {
            leader,
            auth,
            gateway,
            registry,
            nodes,
            messages_in,
            messages_out,
            rejected,
            registrations,
            heartbeat_lag,
        }
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn count_in(&self, kind: &str) {
        self.messages_in
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn count_out(&self, kind: &str) {
        self.messages_out
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn set_nodes(&self, online: u64, offline: u64) {
        for (state, n) in [("online", online), ("offline", offline)] {
            self.nodes
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The current count of rejections for `reason` (for tests and the CLI).
    pub fn rejected_count(&self, reason: &str) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .get()
    }
}
