//! Node accounts on the broker: what registration and revocation must change there.
//!
//! The embedded broker needs nothing (it authenticates every CONNECT against the store,
//! [`super::FleetAuth`]); an external Mosquitto gets one client and one role per node through
//! its dynamic-security plugin ([`super::external::MosquittoAccounts`]).

use std::future::Future;
use std::pin::Pin;

/// What a broker account operation returns.
pub type AccountsFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AccountsError>> + Send + 'a>>;

/// The broker's side of a node's life.
pub trait BrokerAccounts: Send + Sync {
    /// Lets node `node_id` connect with `password`, and only touch its own topics. Called before
    /// the registration is stored; an error refuses the registration.
    fn add_node<'a>(&'a self, node_id: &'a str, password: &'a str) -> AccountsFuture<'a>;

    /// Undoes [`BrokerAccounts::add_node`] after the store refused the registration.
    fn remove_node<'a>(&'a self, node_id: &'a str) -> AccountsFuture<'a>;

    /// Refuses node `node_id` from now on and disconnects it. Called after the store revoked it.
    fn revoke_node<'a>(&'a self, node_id: &'a str) -> AccountsFuture<'a>;
}

/// Why the broker did not do what was asked. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("not connected to the MQTT broker at {broker} (is it running and reachable?)")]
    NotConnected { broker: String },
    #[error(
        "the MQTT broker at {broker} refused user {user}: bad user name or password \
         (check --broker-user and --broker-password-file)"
    )]
    Credentials { broker: String, user: String },
    #[error(
        "TLS with the MQTT broker at {broker} failed: {error} (an mqtts:// broker must serve \
         the fleet's certificate, DATA/fleet-cert.pem and DATA/fleet-key.pem)"
    )]
    Tls { broker: String, error: String },
    #[error(
        "user {user} may not subscribe to {topic} on the MQTT broker at {broker}: give it \
         dynamic-security admin rights (`mosquitto_ctrl dynsec init FILE {user}` makes such a user)"
    )]
    NoControlAccess {
        broker: String,
        user: String,
        topic: &'static str,
    },
    #[error(
        "no answer from Mosquitto's dynamic-security plugin to {commands} within {secs} s \
         (is the plugin loaded, and may user {user} publish on {topic}?)"
    )]
    NoAnswer {
        commands: String,
        secs: u64,
        user: String,
        topic: &'static str,
    },
    #[error("Mosquitto's dynamic-security plugin refused {command} ({subject}): {error}")]
    Refused {
        command: &'static str,
        subject: String,
        error: String,
    },
    #[error("unreadable answer from Mosquitto's dynamic-security plugin to {command}: {reason}")]
    Malformed {
        command: &'static str,
        reason: String,
    },
    #[error("cannot encode a dynamic-security request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot hand a request to the MQTT client: {0}")]
    Client(#[source] rumqttc::ClientError),
}

/// The embedded broker: accounts live in the store, so there is nothing to do.
pub struct StoreAccounts;

impl BrokerAccounts for StoreAccounts {
    fn add_node<'a>(&'a self, _: &'a str, _: &'a str) -> AccountsFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn remove_node<'a>(&'a self, _: &'a str) -> AccountsFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn revoke_node<'a>(&'a self, _: &'a str) -> AccountsFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}
