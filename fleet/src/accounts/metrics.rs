//! Login and sign-up counters (registered in the fleet's registry, `/metrics`):
//! `lattice_logins_total{result}` with `result` = `success`, `failure` (wrong email or password,
//! disabled account), `throttled` (429) or `error` (bad request, store unavailable), and
//! `lattice_signups_total{result}` with `success`, `refused` (400, 403, 409, 503) or
//! `throttled`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Default)]
pub struct AuthMetrics {
    pub logins: Family<ResultLabel, Counter>,
    pub signups: Family<ResultLabel, Counter>,
}

impl AuthMetrics {
    pub fn register(registry: &mut Registry) -> AuthMetrics {
        let m = AuthMetrics::default();
        registry.register("logins", "Login attempts by result", m.logins.clone());
        registry.register("signups", "Sign-up attempts by result", m.signups.clone());
        m
    }

    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn signup(&self, result: &'static str) {
        self.signups.get_or_create(&ResultLabel { result }).inc();
    }
}
