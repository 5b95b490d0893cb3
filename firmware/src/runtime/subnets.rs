//! Addresses for workload networks, without I/O.
//!
//! Every workload has its own bridge network. Left to itself Docker carves them from its
//! default pools (172.17–31.0.0/16 and 192.168.0.0/16 in /20s): about 30 networks per engine,
//! and 192.168/16 is where most providers' home LANs live. latticed instead gives each network
//! a small subnet (`/28`: the bridge's address and room for the one container) from its own
//! pool (`workload_network_pool`, default [`DEFAULT_POOL`]): 4,096 networks per /16.
//!
//! The first candidate depends on the node and workload ids (so nodes sharing an engine, and
//! workloads created side by side, rarely try the same one); from there candidates go round the
//! pool, skipping every subnet that overlaps a network the engine already has.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The default pool: private (RFC 1918), and outside the ranges Docker and common home routers
/// pick by themselves.
pub const DEFAULT_POOL: &str = "10.197.0.0/16";
/// Prefix length of one workload network: 16 addresses, 13 usable.
pub const SUBNET_PREFIX: u8 = 28;

/// An IPv4 network: address and prefix length (the address has no host bits set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net {
    base: u32,
    prefix: u8,
}

impl Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Net, String> {
        if prefix > 32 {
            return Err(format!("prefix /{prefix} is longer than 32"));
        }
        let base = u32::from(addr);
        if base & !mask(prefix) != 0 {
            return Err(format!(
                "{addr}/{prefix} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(base & mask(prefix))
            ));
        }
        Ok(Net { base, prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn last(&self) -> u32 {
        self.base | !mask(self.prefix)
    }

    /// True if the two networks share any address.
    pub fn overlaps(&self, other: &Net) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }

    /// The bridge's own address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.prefix)
    }
}

impl FromStr for Net {
    type Err = String;

    fn from_str(s: &str) -> Result<Net, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX, e.g. {DEFAULT_POOL}"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?}: {prefix:?} is not a prefix length"))?;
        Net::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))
    }
}

/// The pool workload networks are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool(Net);

impl Pool {
    /// A pool must be private (10/8, 172.16/12, 192.168/16: a workload network must never
    /// shadow a public address) and hold at least one subnet.
    pub fn new(net: Net) -> Result<Pool, String> {
        let private: [Net; 3] = [
            Net::new(Ipv4Addr::new(10, 0, 0, 0), 8).expect("literal"),
            Net::new(Ipv4Addr::new(172, 16, 0, 0), 12).expect("literal"),
            Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("literal"),
        ];
        if !private
            .iter()
            .any(|p| p.prefix <= net.prefix && p.overlaps(&net))
        {
            return Err(format!(
                "{net} is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
            ));
        }
        if net.prefix > SUBNET_PREFIX {
            return Err(format!(
                "{net} is smaller than one workload network (/{SUBNET_PREFIX})"
            ));
        }
        Ok(Pool(net))
    }

    pub fn net(&self) -> Net {
        self.0
    }

    /// How many workload networks the pool holds.
    pub fn size(&self) -> u32 {
        1u32 << (SUBNET_PREFIX - self.0.prefix).min(31)
    }

    fn nth(&self, i: u32) -> Net {
        Net {
            base: self.0.base + (i << (32 - u32::from(SUBNET_PREFIX))),
            prefix: SUBNET_PREFIX,
        }
    }

    /// The first subnet for `key` (node and workload ids) that overlaps none of `used`;
    /// `None` when the pool is full.
    pub fn pick(&self, key: &str, used: &[Net]) -> Option<Net> {
        let n = self.size();
        let start = fnv1a(key) % n;
        (0..n)
            .map(|k| self.nth((start + k) % n))
            .find(|cand| !used.iter().any(|u| u.overlaps(cand)))
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new(DEFAULT_POOL.parse().expect("literal")).expect("literal")
    }
}

/// FNV-1a: stable across builds and platforms (the std hasher is not).
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The IPv4 subnets in a list of engine subnet strings (IPv6 and anything unreadable skipped:
/// they cannot overlap an IPv4 pool).
pub fn parse_used<'a>(subnets: impl IntoIterator<Item = &'a str>) -> Vec<Net> {
    subnets
        .into_iter()
        .filter_map(|s| {
            let (addr, prefix) = s.split_once('/')?;
            let addr: Ipv4Addr = addr.parse().ok()?;
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
            // Docker may report a subnet with host bits set; normalise instead of refusing.
            Net::new(Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix).ok()
        })
        .collect()
}

/// The IPv4 networks the host routes to, from `/proc/net/route` (its LAN, VPNs, other
/// bridges), default routes excepted: a workload network must not shadow any of them, and
/// Docker does not check when it is handed a subnet.
pub fn parse_proc_routes(text: &str) -> Vec<Net> {
    // The kernel prints each address as the hex of its in-memory (network-order) u32.
    let addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dest, mask) = (addr(f.get(1)?)?, addr(f.get(7)?)?);
            let prefix = u32::from(mask).count_ones() as u8;
            if prefix == 0 {
                return None;
            }
            Net::new(Ipv4Addr::from(u32::from(dest) & self::mask(prefix)), prefix).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Net {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_bad_ones_are_named() {
        assert_eq!(net("10.197.0.0/16").to_string(), "10.197.0.0/16");
        assert_eq!(
            net("10.197.0.16/28").gateway(),
            Ipv4Addr::new(10, 197, 0, 17)
        );
        for (bad, why) in [
            ("10.197.0.0", "ADDRESS/PREFIX"),
            ("10.197.0.1/16", "host bits"),
            ("fd00::/8", "not an IPv4 address"),
            ("10.0.0.0/33", "longer than 32"),
            ("10.0.0.0/x", "not a prefix length"),
        ] {
            let e = bad.parse::<Net>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn pools_must_be_private_and_hold_a_network() {
        assert!(Pool::new(net("10.197.0.0/16")).is_ok());
        assert!(Pool::new(net("172.20.0.0/14")).is_ok());
        assert!(Pool::new(net("192.168.200.0/24")).is_ok());
        let e = Pool::new(net("8.8.0.0/16")).unwrap_err();
        assert!(e.contains("private"), "{e}");
        // Wider than a private range: it would include public addresses.
        let e = Pool::new(net("0.0.0.0/0")).unwrap_err();
        assert!(e.contains("private"), "{e}");
        let e = Pool::new(net("10.0.0.0/29")).unwrap_err();
        assert!(e.contains("smaller"), "{e}");
        assert_eq!(Pool::default().size(), 4096);
    }

    #[test]
    fn picks_skip_what_the_engine_uses_and_a_full_pool_says_none() {
        let pool = Pool::new(net("10.197.0.0/26")).unwrap(); // four /28s
        let first = pool.pick("n-1/w-a", &[]).unwrap();
        assert_eq!(pool.pick("n-1/w-a", &[]), Some(first), "deterministic");
        let mut used = vec![first];
        let second = pool.pick("n-1/w-a", &used).unwrap();
        assert_ne!(first, second);
        used.push(second);
        // A wide network of someone else's covering the rest of the pool.
        used.push(net("10.197.0.0/26"));
        assert_eq!(pool.pick("n-1/w-b", &used), None);
    }

    #[test]
    fn the_engines_subnets_are_read_leniently() {
        let used = parse_used(["172.17.0.0/16", "fd00::/64", "junk", "10.197.0.5/28"]);
        assert_eq!(used, vec![net("172.17.0.0/16"), net("10.197.0.0/28")]);
    }

    #[test]
    fn the_hosts_routes_count_as_used_and_the_default_route_does_not() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    wg0\t0000C50A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_proc_routes(text);
        if cfg!(target_endian = "little") {
            assert_eq!(routes, vec![net("192.168.0.0/24"), net("10.197.0.0/16")]);
            // A VPN on the whole default pool leaves nothing to pick.
            assert_eq!(Pool::default().pick("n/w", &routes), None);
        }
        assert!(parse_proc_routes("").is_empty());
        assert!(parse_proc_routes("header\ngarbage line\n").is_empty());
    }

    proptest! {
        #[test]
        fn a_pick_is_in_the_pool_and_overlaps_nothing_used(
            key in "[a-z0-9/-]{1,40}",
            used in proptest::collection::vec((0u32..4096, 20u8..=28), 0..64),
        ) {
            let pool = Pool::default();
            let used: Vec<Net> = used
                .into_iter()
                .map(|(i, p)| {
                    let base = u32::from(pool.net().addr()) + (i << 4);
                    Net { base: base & mask(p), prefix: p }
                })
                .collect();
            if let Some(pick) = pool.pick(&key, &used) {
                prop_assert!(pool.net().overlaps(&pick) && pick.prefix == SUBNET_PREFIX);
                prop_assert!(used.iter().all(|u| !u.overlaps(&pick)));
            } else {
                // Full only if every subnet is covered.
                prop_assert!((0..pool.size()).all(|i| used.iter().any(|u| u.overlaps(&pool.nth(i)))));
            }
        }
    }
}
