//! Translation of [`BrokerConfig`] into rumqttd's router and listener settings.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use crate::BrokerConfig;

/// Publishes a QoS 0 subscriber is handed per router pass. rumqttd's per-connection outgoing
/// channel holds 200 packets, so larger values do not help.
const MAX_OUTGOING_PACKET_COUNT: u64 = 200;

/// Packets read from one connection's socket before they are handed to the router.
const MAX_READ_BATCH: usize = 100;

/// Router settings: connection limit and commit-log sizes.
pub(crate) fn router(config: &BrokerConfig) -> RouterConfig {
    let fan_in = SegmentConfig {
        max_segment_size: config.fan_in_log.segment_bytes,
        max_segment_count: config.fan_in_log.segments,
    };
    let custom_segment: HashMap<String, SegmentConfig> = config
        .fan_in_filters
        .iter()
        .map(|filter| (filter.clone(), fan_in.clone()))
        .collect();
    RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
        max_segment_size: config.filter_log.segment_bytes,
        max_segment_count: config.filter_log.segments,
        custom_segment: (!custom_segment.is_empty()).then_some(custom_segment),
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    }
}

/// Settings of one plain-TCP listener. The caller installs the authentication hook.
pub(crate) fn listener(name: &str, listen: SocketAddr, config: &BrokerConfig) -> ServerSettings {
    ServerSettings {
        name: name.to_string(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            // validate() keeps the timeout within u16.
            connection_timeout_ms: u16::try_from(config.connect_timeout_ms).unwrap_or(u16::MAX),
            max_payload_size: config.max_payload_bytes,
            max_inflight_count: MAX_READ_BATCH,
            auth: None,
            external_auth: None,
            // Without dynamic filters a publish to a topic nobody subscribes to yet
            // disconnects the publisher.
            dynamic_filters: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_in_filters_get_their_own_log_limits() {
        let config = BrokerConfig::default();
        let router = router(&config);
        assert_eq!(router.max_connections, config.max_connections);
        assert_eq!(router.max_segment_size, config.filter_log.segment_bytes);
        let custom = router.custom_segment.expect("fan-in overrides");
        assert_eq!(custom.len(), config.fan_in_filters.len());
        let status = &custom["lattice/v1/nodes/+/status"];
        assert_eq!(status.max_segment_size, config.fan_in_log.segment_bytes);
        assert_eq!(status.max_segment_count, config.fan_in_log.segments);
    }

    #[test]
    fn listeners_use_dynamic_filters_and_the_payload_limit() {
        let config = BrokerConfig::default();
        let settings = listener("x", config.listen, &config);
        assert!(settings.connections.dynamic_filters);
        assert_eq!(
            settings.connections.max_payload_size,
            config.max_payload_bytes
        );
        assert_eq!(settings.connections.connection_timeout_ms, 10_000);
        assert!(settings.tls.is_none());
    }
}
