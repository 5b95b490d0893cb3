//! The MQTT topic scheme: one prefix per node.
//!
//! Upward (node → fleet): `lattice/v1/nodes/{node}/{hello|status|telemetry|events|will}`.
//! Downward (fleet → node): `lattice/v1/nodes/{node}/target`.
//!
//! The topic only routes; it is never trusted. A receiver checks that the envelope's signed
//! sender is the node the topic names.

use std::fmt;

/// Every Lattice topic starts with this.
pub const PREFIX: &str = "lattice/v1/nodes";

/// Longest node id accepted in a topic (ids are fleet-made, `n-` + 32 hex digits).
pub const MAX_NODE_ID_LEN: usize = 64;

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Hello,
    Status,
    Telemetry,
    Events,
    Will,
    Target,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Hello,
        Channel::Status,
        Channel::Telemetry,
        Channel::Events,
        Channel::Will,
        Channel::Target,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Hello => "hello",
            Channel::Status => "status",
            Channel::Telemetry => "telemetry",
            Channel::Events => "events",
            Channel::Will => "will",
            Channel::Target => "target",
        }
    }

    /// True for the channels a node publishes on.
    pub fn is_upward(self) -> bool {
        !matches!(self, Channel::Target)
    }

    fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The topic for `node` and `channel`.
pub fn topic(node_id: &str, channel: Channel) -> String {
    format!("{PREFIX}/{node_id}/{channel}")
}

/// The filters the fleet subscribes to: one per upward channel of every node. (Not
/// `{PREFIX}/+/+`, which would also echo the fleet's own targets back to it.)
pub fn fleet_filters() -> Vec<String> {
    Channel::ALL
        .into_iter()
        .filter(|c| c.is_upward())
        .map(|c| format!("{PREFIX}/+/{c}"))
        .collect()
}

/// Checks that `id` can be a node id: 1..=64 chars of `[A-Za-z0-9_-]`, so it can never contain
/// MQTT wildcards or separators.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits a topic into (node id, channel); `None` for anything that is not a Lattice node topic.
pub fn parse(topic: &str) -> Option<(&str, Channel)> {
    let rest = topic.strip_prefix(PREFIX)?.strip_prefix('/')?;
    let (node, channel) = rest.split_once('/')?;
    if !valid_node_id(node) {
        return None;
    }
    Some((node, Channel::parse(channel)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_every_channel() {
        for c in Channel::ALL {
            let t = topic("n-abc", c);
            assert_eq!(parse(&t), Some(("n-abc", c)));
        }
    }

    #[test]
    fn fleet_filters_cover_exactly_the_upward_channels() {
        let f = fleet_filters();
        assert_eq!(f.len(), 5);
        assert!(f.contains(&"lattice/v1/nodes/+/status".to_string()));
        assert!(!f.iter().any(|x| x.ends_with("/target")));
    }

    #[test]
    fn rejects_foreign_and_malformed_topics() {
        assert_eq!(parse("lattice/v1/nodes/n-1/unknown"), None);
        assert_eq!(parse("lattice/v1/nodes/+/status"), None);
        assert_eq!(parse("lattice/v1/nodes/a/b/status"), None);
        assert_eq!(parse("other/v1/nodes/n-1/status"), None);
        assert_eq!(parse("lattice/v1/nodes//status"), None);
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = parse(&s);
        }
    }
}
