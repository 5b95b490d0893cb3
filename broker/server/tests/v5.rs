//! The optional MQTT 5 listener authenticates the same way.

mod common;

use std::time::Duration;

use common::{loopback_config, start, Nodes, WAIT};
use lattice_broker::BrokerConfig;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};

fn v5_options(addr: std::net::SocketAddr, id: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_credentials(id, password);
    options.set_keep_alive(Duration::from_secs(10));
    options
}

async fn connack(eventloop: &mut EventLoop) -> Result<(), ConnectionError> {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
                return Ok(());
            }
        }
    })
    .await
    .unwrap_or_else(|elapsed| Err(ConnectionError::Timeout(elapsed)))
}

#[tokio::test]
async fn v5_clients_authenticate_and_exchange_messages() -> anyhow::Result<()> {
    let nodes = Nodes::with(&[("n-1", "pw-1"), ("fleet", "pw-fleet")]);
    let config = BrokerConfig {
        v5_listen: Some("127.0.0.1:0".parse()?),
        ..loopback_config()
    };
    let broker = start(config, nodes);
    let addr = broker.v5_local_addr().expect("v5 listener");

    let (bad, mut bad_loop) = AsyncClient::new(v5_options(addr, "n-1", "wrong"), 10);
    match connack(&mut bad_loop).await {
        Ok(()) => panic!("wrong password accepted on v5"),
        Err(ConnectionError::Timeout(_)) => panic!("v5 CONNECT not answered"),
        Err(error) => eprintln!("refused as expected: {error}"),
    }
    drop(bad);

    let (node, mut node_loop) = AsyncClient::new(v5_options(addr, "n-1", "pw-1"), 10);
    connack(&mut node_loop).await?;
    node.subscribe("t/v5", QoS::AtLeastOnce).await?;
    let (fleet, mut fleet_loop) = AsyncClient::new(v5_options(addr, "fleet", "pw-fleet"), 10);
    connack(&mut fleet_loop).await?;
    tokio::spawn(async move { while fleet_loop.poll().await.is_ok() {} });

    let received = tokio::time::timeout(WAIT, async {
        let mut published = false;
        loop {
            match node_loop.poll().await? {
                Event::Incoming(Packet::SubAck(_)) if !published => {
                    fleet
                        .publish("t/v5", QoS::AtLeastOnce, false, "over v5")
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    published = true;
                }
                Event::Incoming(Packet::Publish(publish)) => return Ok(publish.payload),
                _ => {}
            }
        }
    })
    .await?;
    let payload: anyhow::Result<_> = received;
    assert_eq!(&payload?[..], b"over v5");
    Ok(())
}
