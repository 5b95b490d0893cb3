//! Broker configuration: listeners, TLS material and the limits that size rumqttd.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::BrokerError;

/// Largest MQTT "remaining length" the protocol can encode (256 MiB - 1).
const MQTT_MAX_PACKET: usize = 268_435_455;

/// rumqttd refuses (panics on) segments smaller than this.
const MIN_SEGMENT_BYTES: usize = 1024;

/// How much published data rumqttd keeps in memory for one subscription filter.
///
/// rumqttd stores every publish in an in-memory commit log per filter and serves subscribers from
/// it. A log holds at most `segments` segments of about `segment_bytes` each (a segment may
/// overflow by one message); when it is full the oldest segment is dropped. A subscriber that
/// falls further behind than that skips ahead (rumqttd logs a "cursor jump"). Memory is only
/// used as data arrives, but a log never shrinks below what it has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Size at which a segment is closed and a new one started (at least 1024).
    pub segment_bytes: usize,
    /// Segments kept in memory, including the one being written (at least 1).
    pub segments: usize,
}

impl LogLimits {
    /// Upper bound of the bytes one log retains, not counting one overflowing message.
    pub fn retained_bytes(&self) -> usize {
        self.segment_bytes.saturating_mul(self.segments)
    }
}

/// Configuration of the embedded broker. Start from [`BrokerConfig::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Plain-TCP MQTT 3.1.1 listener. Passwords cross it in clear, so bind it to loopback in
    /// production; the TLS listener forwards its decrypted connections to it. Port 0 picks a free
    /// port (best effort: the port is probed, then rumqttd binds it).
    pub listen: SocketAddr,
    /// MQTT 3.1.1 over TLS listener (port 0 allowed). Needs `tls_cert_pem` and `tls_key_pem`.
    pub tls_listen: Option<SocketAddr>,
    /// Server certificate chain, PEM, leaf first.
    pub tls_cert_pem: Option<PathBuf>,
    /// Server private key, PEM (PKCS#8; SEC1 and PKCS#1 are accepted too). Ed25519, ECDSA
    /// P-256/P-384 and RSA keys work.
    pub tls_key_pem: Option<PathBuf>,
    /// Optional plain-TCP MQTT 5 listener, authenticated the same way (no TLS variant).
    pub v5_listen: Option<SocketAddr>,
    /// Largest MQTT packet body a client may send (payload + topic + a few header bytes).
    /// A client sending more is disconnected and the message is dropped.
    pub max_payload_bytes: usize,
    /// Most clients connected at once (all listeners together).
    pub max_connections: usize,
    /// Time a new connection has to finish its TLS handshake, and then to send CONNECT; also the
    /// longest the [`Authenticator`](crate::Authenticator) may take. At most 65535.
    pub connect_timeout_ms: u64,
    /// Log limits of every subscription filter not listed in `fan_in_filters` (in practice one
    /// per node: the node's own downward topic).
    pub filter_log: LogLimits,
    /// Filters many clients publish into and one consumer (the fleet) reads; they get the larger
    /// `fan_in_log` so bursts survive a briefly slow consumer. rumqttd applies the override to
    /// every filter a listed pattern matches as a wildcard, so never list a pattern that also
    /// matches per-node filters (e.g. `lattice/v1/nodes/+/+` would match each node's `target`).
    pub fan_in_filters: Vec<String>,
    /// Log limits of the `fan_in_filters`.
    pub fan_in_log: LogLimits,
}

/// The upward (node → fleet) channels of `lattice-wire`'s topic scheme, one filter each.
const UPWARD_CHANNELS: [&str; 5] = ["hello", "status", "telemetry", "events", "will"];

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883),
            tls_listen: None,
            tls_cert_pem: None,
            tls_key_pem: None,
            v5_listen: None,
            max_payload_bytes: 256 * 1024,
            max_connections: 20_000,
            connect_timeout_ms: 10_000,
            filter_log: LogLimits {
                segment_bytes: 64 * 1024,
                segments: 2,
            },
            fan_in_filters: UPWARD_CHANNELS
                .iter()
                .map(|channel| format!("lattice/v1/nodes/+/{channel}"))
                .collect(),
            fan_in_log: LogLimits {
                segment_bytes: 4 * 1024 * 1024,
                segments: 8,
            },
        }
    }
}

impl BrokerConfig {
    /// The CONNECT / handshake / authentication deadline.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Checks the whole configuration and reports every problem at once.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let mut problems = Vec::new();
        if self.max_payload_bytes == 0 || self.max_payload_bytes > MQTT_MAX_PACKET {
            problems.push(format!(
                "max_payload_bytes: {} is not in 1..={MQTT_MAX_PACKET}",
                self.max_payload_bytes
            ));
        }
        if self.max_connections == 0 {
            problems.push("max_connections: must be at least 1".to_string());
        }
        if self.connect_timeout_ms == 0 || self.connect_timeout_ms > u64::from(u16::MAX) {
            problems.push(format!(
                "connect_timeout_ms: {} is not in 1..=65535",
                self.connect_timeout_ms
            ));
        }
        check_log("filter_log", &self.filter_log, &mut problems);
        check_log("fan_in_log", &self.fan_in_log, &mut problems);
        for (i, filter) in self.fan_in_filters.iter().enumerate() {
            if filter.is_empty() || filter.starts_with('$') {
                problems.push(format!("fan_in_filters[{i}]: {filter:?} is not a filter"));
            }
        }
        match (&self.tls_listen, &self.tls_cert_pem, &self.tls_key_pem) {
            (Some(_), Some(_), Some(_)) | (None, None, None) => {}
            (Some(_), cert, key) => {
                if cert.is_none() {
                    problems.push("tls_cert_pem: required when tls_listen is set".to_string());
                }
                if key.is_none() {
                    problems.push("tls_key_pem: required when tls_listen is set".to_string());
                }
            }
            (None, _, _) => {
                problems.push("tls_listen: required when a TLS cert or key is set".to_string())
            }
        }
        let mut addrs = vec![("listen", Some(self.listen))];
        addrs.push(("tls_listen", self.tls_listen));
        addrs.push(("v5_listen", self.v5_listen));
        let addrs: Vec<_> = addrs
            .into_iter()
            .filter_map(|(name, addr)| addr.map(|a| (name, a)))
            .collect();
        for (i, (name, addr)) in addrs.iter().enumerate() {
            for (other, other_addr) in &addrs[i + 1..] {
                if addr.port() != 0 && addr == other_addr {
                    problems.push(format!("{other}: {addr} is also {name}"));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BrokerError::InvalidConfig(problems))
        }
    }
}

fn check_log(name: &str, limits: &LogLimits, problems: &mut Vec<String>) {
    if limits.segment_bytes < MIN_SEGMENT_BYTES {
        problems.push(format!(
            "{name}.segment_bytes: {} is below {MIN_SEGMENT_BYTES}",
            limits.segment_bytes
        ));
    }
    if limits.segments == 0 {
        problems.push(format!("{name}.segments: must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        BrokerConfig::default().validate().expect("default config");
    }

    #[test]
    fn reports_every_problem() {
        let config = BrokerConfig {
            max_payload_bytes: 0,
            max_connections: 0,
            connect_timeout_ms: 70_000,
            filter_log: LogLimits {
                segment_bytes: 10,
                segments: 0,
            },
            tls_listen: Some("127.0.0.1:8883".parse().expect("addr")),
            ..BrokerConfig::default()
        };
        let Err(BrokerError::InvalidConfig(problems)) = config.validate() else {
            panic!("config should be invalid");
        };
        for key in [
            "max_payload_bytes",
            "max_connections",
            "connect_timeout_ms",
            "filter_log.segment_bytes",
            "filter_log.segments",
            "tls_cert_pem",
            "tls_key_pem",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(key)),
                "{key} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn key_without_listener_is_refused() {
        let config = BrokerConfig {
            tls_key_pem: Some("key.pem".into()),
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn same_address_twice_is_refused() {
        let config = BrokerConfig {
            v5_listen: Some(BrokerConfig::default().listen),
            ..BrokerConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn partial_toml_keeps_the_other_defaults() {
        let config: BrokerConfig = toml::from_str(
            "listen = \"0.0.0.0:1883\"\nmax_connections = 100\n\
             [filter_log]\nsegment_bytes = 2048\nsegments = 1\n",
        )
        .expect("parse");
        assert_eq!(config.listen.port(), 1883);
        assert_eq!(config.max_connections, 100);
        assert_eq!(config.filter_log.segment_bytes, 2048);
        assert_eq!(
            config.max_payload_bytes,
            BrokerConfig::default().max_payload_bytes
        );
        let text = toml::to_string(&BrokerConfig::default()).expect("serialize");
        assert_eq!(
            toml::from_str::<BrokerConfig>(&text).expect("round trip"),
            BrokerConfig::default()
        );
        assert!(toml::from_str::<BrokerConfig>("lisen = \"0.0.0.0:1\"").is_err());
    }

    #[test]
    fn default_fan_in_filters_do_not_match_node_target_filters() {
        let config = BrokerConfig::default();
        let target = "lattice/v1/nodes/n-0123/target";
        for filter in &config.fan_in_filters {
            assert!(!rumqttd::protocol::matches(target, filter), "{filter}");
        }
        assert!(config
            .fan_in_filters
            .iter()
            .any(|f| rumqttd::protocol::matches("lattice/v1/nodes/+/status", f)));
    }
}
