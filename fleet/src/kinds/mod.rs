//! Workload kinds beyond `container` (which lives in [`crate::workloads`]): each kind is a
//! template the fleet turns into a node's [`WorkloadSpec`](lattice_wire::msg::WorkloadSpec).
//!
//! * [`s3`] — S3-compatible storage (`lattice-s3`): a data volume and a quota per plan,
//!   fleet-generated credentials, reached through the gateway over HTTPS; a replica on a node
//!   of another provider ([`s3_replication`]: its lag, what is told at promotion).

pub mod s3;
pub mod s3_replication;

/// What the kinds need from the fleet's configuration (flags of `lattice fleet|up`).
#[derive(Debug, Clone, Default)]
pub struct KindConfig {
    /// The `s3` kind's image, pinned by digest (`--s3-image`, `LATTICE_S3_IMAGE`); without it
    /// deploying `s3` is refused.
    pub s3_image: Option<String>,
}

/// Where the gateway in this process serves workloads (set when it starts), so views can
/// show a workload's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppsEndpoint {
    /// `--apps-domain`.
    pub domain: String,
    /// The port of the gateway's HTTPS listener.
    pub https_port: u16,
}

impl AppsEndpoint {
    /// `https://NAME--ACCOUNT.DOMAIN:PORT` (the port left out when it is 443).
    pub fn url(&self, name: &str, account: &str) -> String {
        let host = crate::gateway::routes::workload_host(name, Some(account), &self.domain);
        match self.https_port {
            443 => format!("https://{host}"),
            p => format!("https://{host}:{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_carries_name_account_domain_and_port() {
        let apps = AppsEndpoint {
            domain: "lattice-apps.localhost".into(),
            https_port: 8444,
        };
        assert_eq!(
            apps.url("files", "a-1234"),
            "https://files--a-1234.lattice-apps.localhost:8444"
        );
        let apps = AppsEndpoint {
            domain: "apps.example.org".into(),
            https_port: 443,
        };
        assert_eq!(
            apps.url("files", "a-1234"),
            "https://files--a-1234.apps.example.org"
        );
    }
}
