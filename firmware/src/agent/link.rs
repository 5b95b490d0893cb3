//! One MQTT connection to the broker (rumqttc), made fresh for every attempt so that its last
//! will carries the new epoch.
//!
//! rumqttc's `EventLoop` only makes progress while polled, so [`Link::open`] spawns a task
//! that polls it and forwards what matters to the agent as [`LinkEvent`]s: the ConnAck,
//! incoming publishes, and the end of the connection. The task stops at the first error
//! instead of letting rumqttc reconnect on its own: the agent reconnects itself, with backoff
//! and a new epoch. Publishing goes through the [`rumqttc::AsyncClient`].

use crate::identity::BrokerSecret;
use crate::pin::{try_pinned_client_config_with, PinError};
use rumqttc::{
    AsyncClient, ClientError, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill,
    MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Incoming messages buffered between the poller and the agent; beyond this they are dropped
/// (a flood on our topic must not grow memory; the fleet re-sends unacknowledged targets).
const EVENT_BUFFER: usize = 256;
/// Requests buffered between the agent and the poller.
const REQUEST_BUFFER: usize = 64;
/// Room for a maximal envelope plus the MQTT header and topic.
const MAX_PACKET: usize = lattice_wire::MAX_MESSAGE_BYTES + 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Url(#[from] lattice_wire::broker_url::BrokerUrlError),
    #[error("TLS configuration for the broker: {0}")]
    Tls(#[source] PinError),
}

pub use lattice_wire::broker_url::BrokerUrl;

/// Everything one connection attempt needs.
pub struct LinkParams<'a> {
    pub url: &'a BrokerUrl,
    pub node_id: &'a str,
    pub password: &'a BrokerSecret,
    pub will_topic: String,
    pub will: Vec<u8>,
    pub fleet_pin: std::sync::Arc<dyn lattice_wire::pin::PinHolder>,
    pub keep_alive: Duration,
}

/// The rumqttc options for `p`: client id and user name are the node id, clean session,
/// QoS 1 last will, pinned TLS for `mqtts://`.
pub fn options(p: LinkParams<'_>) -> Result<MqttOptions, LinkError> {
    // rumqttc joins host and port as `{host}:{port}`, so an IPv6 address needs its brackets
    // (which rules out IPv6 literals with TLS: rumqttc then cannot make a server name).
    let host = if p.url.host.contains(':') {
        format!("[{}]", p.url.host)
    } else {
        p.url.host.clone()
    };
    let mut o = MqttOptions::new(p.node_id, host, p.url.port);
    o.set_credentials(p.node_id, p.password.expose())
        .set_clean_session(true)
        .set_keep_alive(p.keep_alive)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(p.will_topic, p.will, QoS::AtLeastOnce, false));
    if p.url.tls {
        let config = try_pinned_client_config_with(p.fleet_pin).map_err(LinkError::Tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    Ok(o)
}

/// What the poller reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the CONNECT.
    Connected,
    /// A publish arrived.
    Message { topic: String, payload: Vec<u8> },
    /// The connection is over (`None`: closed by us, or the poller is gone).
    Closed(Option<ConnectionError>),
}

/// True when the broker refused our credential: retrying fast will not help.
pub fn credential_refused(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        )
    )
}

/// A live (or connecting) MQTT connection and its poller task.
pub struct Link {
    client: AsyncClient,
    events: mpsc::Receiver<LinkEvent>,
    poller: JoinHandle<()>,
}

impl Link {
    /// Starts connecting; the outcome arrives as the first [`LinkEvent`].
    pub fn open(options: MqttOptions) -> Link {
        let (client, eventloop) = AsyncClient::new(options, REQUEST_BUFFER);
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let poller = tokio::spawn(poll(eventloop, tx));
        Link {
            client,
            events,
            poller,
        }
    }

    /// The next event; [`LinkEvent::Closed`] once the connection is over.
    pub async fn next(&mut self) -> LinkEvent {
        self.events.recv().await.unwrap_or(LinkEvent::Closed(None))
    }

    pub async fn subscribe(&self, topic: &str) -> Result<(), ClientError> {
        self.client.subscribe(topic, QoS::AtLeastOnce).await
    }

    /// Hands a QoS 1 publish to the connection.
    pub async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), ClientError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
    }

    /// Disconnects cleanly (so the broker does not publish the will), waiting briefly for
    /// the DISCONNECT to be written.
    pub async fn close(mut self) {
        let wait = Duration::from_secs(2);
        if tokio::time::timeout(wait, self.client.disconnect())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            let _ = tokio::time::timeout(wait, &mut self.poller).await;
        }
        self.poller.abort();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

async fn poll(mut eventloop: EventLoop, tx: mpsc::Sender<LinkEvent>) {
    let end = loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // rumqttc turns a refused CONNECT into an error, so this is a success.
                let _ = tx.try_send(LinkEvent::Connected);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let event = LinkEvent::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                };
                if tx.try_send(event).is_err() {
                    tracing::warn!("agent busy: dropping an incoming message");
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break None,
            Ok(_) => {}
            Err(e) => break Some(e),
        }
    };
    // Drop the event loop first: that fails any publish the agent is blocked on, so the
    // agent gets to read this event.
    drop(eventloop);
    let _ = tx.send(LinkEvent::Closed(end)).await;
}
