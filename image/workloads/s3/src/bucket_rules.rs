//! S3's bucket naming rules as one dependency-free function, shared by `lattice-s3`
//! ([`crate::names`]) and the fleet, which checks the buckets of `lattice deploy s3 --bucket`
//! before deploying (`fleet/src/kinds/s3.rs` includes this file with `#[path]`). Keep it free
//! of crate paths and dependencies: it is compiled in both crates.

/// Why `name` breaks S3's rules for general purpose buckets, or `None` when it follows them:
/// 3–63 characters of `a-z 0-9 . -`, starting and ending with a letter or digit, no `..`, not
/// an IPv4 address, and none of the reserved prefixes and suffixes.
pub fn bucket_name_problem(name: &str) -> Option<&'static str> {
    if !(3..=63).contains(&name.len()) {
        return Some("it must be 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Some("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Some("it must start and end with a letter or a digit");
    }
    if name.contains("..") {
        return Some("it must not contain two adjacent periods");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some("it must not be formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return Some("it starts with a prefix S3 reserves");
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return Some("it ends with a suffix S3 reserves");
        }
    }
    None
}
