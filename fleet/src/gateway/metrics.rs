//! The gateway's Prometheus metrics (registered in the fleet's registry, `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabel {
    pub workload: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    pub upstream: String,
}

#[derive(Clone, Default)]
pub struct GatewayMetrics {
    /// Bytes from consumers toward workloads.
    pub bytes_in: Family<WorkloadLabel, Counter>,
    /// Bytes from workloads toward consumers (egress, what consumers are billed for).
    pub bytes_out: Family<WorkloadLabel, Counter>,
    pub connections: Family<WorkloadLabel, Counter>,
    pub active: Family<WorkloadLabel, Gauge>,
    pub refused: Family<RefusalLabel, Counter>,
    /// Nodes with a tunnel up.
    pub tunnels: Gauge,
    /// Upstreams (node → gateway → declared address): bytes from nodes to the upstream.
    pub upstream_bytes_in: Family<UpstreamLabel, Counter>,
    /// Bytes from the upstream to nodes (an image pull is mostly these).
    pub upstream_bytes_out: Family<UpstreamLabel, Counter>,
    pub upstream_streams: Family<UpstreamLabel, Counter>,
    pub upstream_active: Family<UpstreamLabel, Gauge>,
    /// Upstream streams refused, by reply (`upstream_not_declared`, `unavailable`, …).
    pub upstream_refused: Family<RefusalLabel, Counter>,
    /// Upstream streams carried and then ended, by how (`closed`, `error`, `idle_timeout`:
    /// closed by the gateway after `--upstream-idle-timeout-secs` without a byte).
    pub upstream_closed: Family<RefusalLabel, Counter>,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> GatewayMetrics {
        let m = GatewayMetrics::default();
        let sub = registry.sub_registry_with_prefix("gateway");
        sub.register(
            "bytes_in",
            "Bytes from consumers to workloads",
            m.bytes_in.clone(),
        );
        sub.register(
            "bytes_out",
            "Bytes from workloads to consumers",
            m.bytes_out.clone(),
        );
        sub.register(
            "connections",
            "Streams opened to workloads",
            m.connections.clone(),
        );
        sub.register(
            "active_connections",
            "Streams open to workloads now",
            m.active.clone(),
        );
        sub.register(
            "refused",
            "Requests and connections refused by reason",
            m.refused.clone(),
        );
        sub.register("tunnels", "Nodes with a tunnel up", m.tunnels.clone());
        sub.register(
            "upstream_bytes_in",
            "Bytes from nodes to upstreams",
            m.upstream_bytes_in.clone(),
        );
        sub.register(
            "upstream_bytes_out",
            "Bytes from upstreams to nodes",
            m.upstream_bytes_out.clone(),
        );
        sub.register(
            "upstream_streams",
            "Upstream streams carried",
            m.upstream_streams.clone(),
        );
        sub.register(
            "upstream_active_streams",
            "Upstream streams open now",
            m.upstream_active.clone(),
        );
        sub.register(
            "upstream_refused",
            "Upstream streams refused by reason",
            m.upstream_refused.clone(),
        );
        sub.register(
            "upstream_closed",
            "Upstream streams ended by reason (closed, error, idle_timeout)",
            m.upstream_closed.clone(),
        );
        m
    }

    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&RefusalLabel {
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn upstream(name: &str) -> UpstreamLabel {
        UpstreamLabel {
            upstream: name.to_owned(),
        }
    }

    pub fn workload(w: &str) -> WorkloadLabel {
        WorkloadLabel {
            workload: w.to_owned(),
        }
    }
}
