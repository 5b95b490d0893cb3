//! Login and sign-up rate limits (GCRA through the `governor` crate), kept in memory per
//! fleet process: per client IP, and per account (the email asked for, whether or not it
//! exists, so a refusal says nothing about which emails are registered).
//!
//! Each attempt, successful or not, spends one cell. Refused attempts spend nothing and
//! answer 429 with `Retry-After`. Several fleet processes each keep their own counts.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

/// Keys kept before idle ones are dropped (their state equals a fresh one).
const PRUNE_ABOVE: usize = 10_000;

/// A refused attempt: which limit, and how long until the next one is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub scope: &'static str,
    pub retry_after: Duration,
}

/// How many attempts each key gets at once (`burst`) and how fast they come back
/// (`per_minute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u32,
    pub per_minute: u32,
}

impl Limit {
    fn quota(self) -> Quota {
        let one = NonZeroU32::MIN;
        Quota::per_minute(NonZeroU32::new(self.per_minute).unwrap_or(one))
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(one))
    }
}

/// Login attempts per IP: 20 at once, then 10 a minute.
pub const LOGIN_PER_IP: Limit = Limit {
    burst: 20,
    per_minute: 10,
};
/// Login attempts per account: 5 at once, then 5 a minute.
pub const LOGIN_PER_ACCOUNT: Limit = Limit {
    burst: 5,
    per_minute: 5,
};
/// Sign-ups per IP: 10 at once, then 2 a minute (each costs an argon2id hash).
pub const SIGNUP_PER_IP: Limit = Limit {
    burst: 10,
    per_minute: 2,
};

pub struct LoginLimiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<String>,
    signup_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(LOGIN_PER_IP, LOGIN_PER_ACCOUNT, SIGNUP_PER_IP)
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    l: &DefaultKeyedRateLimiter<K>,
    clock: &DefaultClock,
    key: &K,
    scope: &'static str,
) -> Result<(), Refused> {
    if l.len() > PRUNE_ABOVE {
        l.retain_recent();
    }
    l.check_key(key).map_err(|not_until| Refused {
        scope,
        retry_after: not_until.wait_time_from(clock.now()),
    })
}

impl LoginLimiter {
    pub fn new(per_ip: Limit, per_account: Limit, signup_per_ip: Limit) -> LoginLimiter {
        LoginLimiter {
            per_ip: DefaultKeyedRateLimiter::keyed(per_ip.quota()),
            per_account: DefaultKeyedRateLimiter::keyed(per_account.quota()),
            signup_per_ip: DefaultKeyedRateLimiter::keyed(signup_per_ip.quota()),
            clock: DefaultClock::default(),
        }
    }

    /// One login attempt from `ip` (unknown without a socket: counted under `0.0.0.0`) for
    /// `email` (normalized). The IP is checked first, so an IP already refused spends none of
    /// the account's cells.
    pub fn login(&self, ip: Option<IpAddr>, email: &str) -> Result<(), Refused> {
        let ip = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        check(&self.per_ip, &self.clock, &ip, "ip")?;
        check(
            &self.per_account,
            &self.clock,
            &email.to_string(),
            "account",
        )
    }

    /// One sign-up from `ip`.
    pub fn signup(&self, ip: Option<IpAddr>) -> Result<(), Refused> {
        let ip = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        check(&self.signup_per_ip, &self.clock, &ip, "ip")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_burst_and_a_refusal_says_when() {
        let l = LoginLimiter::new(
            Limit {
                burst: 4,
                per_minute: 1,
            },
            Limit {
                burst: 2,
                per_minute: 1,
            },
            Limit {
                burst: 1,
                per_minute: 1,
            },
        );
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(l.login(Some(a), "x@y").is_ok());
        assert!(l.login(Some(a), "x@y").is_ok());
        let r = l.login(Some(a), "x@y").unwrap_err();
        assert_eq!(r.scope, "account");
        assert!(r.retry_after > Duration::from_secs(50), "{r:?}");
        // Another account from the same IP: the IP's fourth cell (the refused attempt above
        // spent the third: the IP is checked first).
        assert!(l.login(Some(a), "z@y").is_ok());
        assert_eq!(l.login(Some(a), "w@y").unwrap_err().scope, "ip");
        // Another IP still cannot get at the limited account.
        assert_eq!(l.login(Some(b), "x@y").unwrap_err().scope, "account");
        assert!(l.signup(Some(a)).is_ok());
        assert!(l.signup(Some(a)).is_err());
        assert!(l.signup(Some(b)).is_ok());
    }
}
