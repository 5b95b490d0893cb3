//! The fleet's brokers.
//!
//! * Embedded (default): rumqttd in process; who may connect ([`FleetAuth`]) is read from the
//!   store, and `lattice broker` runs the same broker alone against the same store.
//! * External (`--broker`): any MQTT broker for the traffic; on Mosquitto the fleet manages
//!   per-node accounts and ACLs through the dynamic-security plugin ([`external`], [`dynsec`]).
//!
//! Registration and revocation go through [`BrokerAccounts`], which is a no-op for the
//! embedded broker.

mod accounts;
pub mod dynsec;
pub mod external;

pub use accounts::{AccountsError, AccountsFuture, BrokerAccounts, StoreAccounts};

use crate::secrets::{hash_secret, same_hash};
use crate::store::Store;
use anyhow::Context;
use lattice_broker::{AuthFuture, Authenticator, BrokerConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Fleet processes connect to the broker as `fleet-{epoch}` (node ids start with `n-`).
pub const FLEET_USER_PREFIX: &str = "fleet-";

/// Checks MQTT CONNECTs against the store: a node connects as itself (client id = user name =
/// node id) with the broker secret it got at registration; revoked nodes are refused. Fleet
/// processes connect as `fleet-{epoch}` with the fleet's broker secret.
pub struct FleetAuth {
    pub store: Store,
    /// SHA-256 of the fleet processes' shared broker secret.
    pub fleet_hash: String,
}

impl Authenticator for FleetAuth {
    fn authenticate<'a>(
        &'a self,
        client_id: &'a str,
        username: &'a str,
        password: &'a str,
    ) -> AuthFuture<'a> {
        Box::pin(async move {
            if client_id != username {
                tracing::warn!(
                    client_id,
                    username,
                    "MQTT CONNECT refused: client id differs from user name"
                );
                return false;
            }
            if username.starts_with(FLEET_USER_PREFIX) {
                return same_hash(&hash_secret(password), &self.fleet_hash);
            }
            match self.store.node(username).await {
                Ok(Some(n))
                    if !n.revoked && same_hash(&hash_secret(password), &n.broker_secret_hash) =>
                {
                    true
                }
                Ok(Some(n)) if n.revoked => {
                    tracing::warn!(node = username, "MQTT CONNECT refused: node revoked");
                    false
                }
                Ok(_) => {
                    tracing::warn!(
                        client_id,
                        "MQTT CONNECT refused: unknown client or wrong secret"
                    );
                    false
                }
                Err(e) => {
                    tracing::error!(error = %e, "MQTT CONNECT refused: store unavailable");
                    false
                }
            }
        })
    }
}

/// The fleet processes' broker secret, `data_dir/fleet-broker.secret` (made on first start).
pub fn fleet_broker_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("fleet-broker.secret");
    Ok(crate::secrets::load_or_create_text(
        &path,
        crate::secrets::random_secret,
    )?)
}

/// Starts rumqttd with TLS (certificate carrying the fleet key, so pinned nodes accept it) and
/// store-backed authentication.
pub fn start_embedded(
    store: &Store,
    fleet_secret: &str,
    mqtt_plain: SocketAddr,
    mqtts: SocketAddr,
    tls_files: (PathBuf, PathBuf),
) -> anyhow::Result<lattice_broker::BrokerHandle> {
    let auth = Arc::new(FleetAuth {
        store: store.clone(),
        fleet_hash: hash_secret(fleet_secret),
    });
    let broker_cfg = BrokerConfig {
        listen: mqtt_plain,
        tls_listen: Some(mqtts),
        tls_cert_pem: Some(tls_files.0),
        tls_key_pem: Some(tls_files.1),
        // Twice the wire limit: an oversized envelope still reaches the fleet, which refuses
        // it with a reason and counts it, instead of vanishing inside the broker.
        max_payload_bytes: 2 * lattice_wire::MAX_MESSAGE_BYTES,
        ..BrokerConfig::default()
    };
    lattice_broker::start(broker_cfg, auth).context("starting the embedded MQTT broker")
}
