//! Broker URLs: `mqtt://host[:port]` (default 1883) and `mqtts://host[:port]` (8883), as the
//! fleet hands them to nodes and as operators pass them on the command line. Parsing only.

use std::fmt;

/// A parsed `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

/// Why a broker URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker URL {url:?}: {problem}")]
pub struct BrokerUrlError {
    pub url: String,
    pub problem: &'static str,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, BrokerUrlError> {
        let bad = |problem| BrokerUrlError {
            url: url.to_string(),
            problem,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad("must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("must not have a path, query or fragment"));
        }
        if rest.contains('@') {
            return Err(bad(
                "must not carry a user name or password (use the flags)",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or(bad("unclosed '[' in the host"))?;
            match after {
                "" => (host, None),
                p => (
                    host,
                    Some(p.strip_prefix(':').ok_or(bad("junk after ']'"))?),
                ),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad("an IPv6 address must be in brackets"))
                }
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        let port = match port {
            None if tls => 8883,
            None => 1883,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("port must be 1 to 65535")),
            },
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// The host as rumqttc wants it (`[…]` around IPv6).
    pub fn client_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// True for loopback addresses and `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback())
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports_and_clear_errors() {
        let u = BrokerUrl::parse("mqtt://broker.example").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "broker.example", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.1:8884/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.1", 8884));
        assert_eq!(u.to_string(), "mqtts://10.0.0.1:8884");
        let u = BrokerUrl::parse("mqtts://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[::1]:8883");
        assert_eq!(u.client_host(), "[::1]");
        assert!(u.is_loopback());
        assert!(!BrokerUrl::parse("mqtt://b.example").unwrap().is_loopback());
        for (bad, says) in [
            ("tcp://h:1", "mqtt://"),
            ("mqtt://", "no host"),
            ("mqtt://:1883", "no host"),
            ("mqtt://h:0", "port"),
            ("mqtt://h:99999", "port"),
            ("mqtt://h:1/x", "path"),
            ("mqtt://u:p@h:1", "user name"),
            ("mqtt://::1", "brackets"),
            ("mqtt://[::1", "unclosed"),
        ] {
            let e = BrokerUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }
}
