//! Runs a fleet: store, keys, embedded broker (or an external one), MQTT link and HTTPS API.

use crate::api::{self, AppState};
use crate::ingest::Ingest;
use crate::link::{self, LinkConfig, Outbound};
use crate::metrics::Metrics;
use crate::secrets::{hash_secret, random_secret, same_hash};
use crate::store::Store;
use anyhow::Context;
use lattice_broker::{AuthFuture, Authenticator, BrokerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How to run a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub data_dir: PathBuf,
    /// HTTPS API (and node registration).
    pub http: SocketAddr,
    /// MQTT over TLS, for nodes.
    pub mqtts: SocketAddr,
    /// Plain MQTT on loopback (the fleet's own link; port 0 picks one).
    pub mqtt_plain: SocketAddr,
    /// `sqlite://…` (default: `data_dir/fleet.db`) or `postgres://…`.
    pub database: Option<String>,
    /// Host names and addresses nodes use to reach this fleet (go into the certificate and the
    /// provisioning strings). The first one is used in URLs.
    pub public_hosts: Vec<String>,
    pub heartbeat_secs: u32,
}

impl FleetConfig {
    pub fn local(data_dir: PathBuf) -> FleetConfig {
        FleetConfig {
            data_dir,
            http: ([127, 0, 0, 1], 8443).into(),
            mqtts: ([127, 0, 0, 1], 8883).into(),
            mqtt_plain: ([127, 0, 0, 1], 0).into(),
            database: None,
            public_hosts: vec!["127.0.0.1".into(), "localhost".into()],
            heartbeat_secs: 10,
        }
    }
}

/// A started fleet.
pub struct RunningFleet {
    pub http_addr: SocketAddr,
    pub https_url: String,
    pub mqtts_url: String,
    pub mqtt_plain_addr: SocketAddr,
    pub fleet_key: lattice_wire::IdentityPublic,
    pub operator_token_path: PathBuf,
    pub state: Arc<AppState>,
    server: axum_server::Handle,
    _broker: lattice_broker::BrokerHandle,
}

impl RunningFleet {
    /// Stops serving HTTP, letting requests in flight finish.
    pub fn shutdown(&self) {
        self.server.graceful_shutdown(Some(Duration::from_secs(5)));
    }
}

/// Checks MQTT CONNECTs against the store: a node connects as itself (client id = user name =
/// node id) with the broker secret it got at registration; revoked nodes are refused.
struct FleetAuth {
    store: Store,
    fleet_user: String,
    fleet_hash: String,
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
            if username == self.fleet_user {
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

fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("fleet.db").display())
}

/// Starts everything; returns once all listeners are bound.
pub async fn start(cfg: FleetConfig) -> anyhow::Result<RunningFleet> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", cfg.data_dir.display()))?;
    }
    let db_url = cfg
        .database
        .clone()
        .unwrap_or_else(|| sqlite_url(&cfg.data_dir));
    let store = Store::open(&db_url).await?;
    let key = crate::secrets::fleet_key(&cfg.data_dir)?;
    let (operator_token_path, operator_token) = crate::secrets::operator_token(&cfg.data_dir)?;
    let epoch = store.next_fleet_epoch(lattice_wire::now_ms()).await?;
    let host = cfg
        .public_hosts
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());

    let tls = crate::tls::self_signed(&key, &cfg.public_hosts)?;
    let (cert_path, key_path) = crate::tls::write_pem_files(&tls, &cfg.data_dir)?;

    let fleet_user = format!("fleet-{epoch}");
    let fleet_password = random_secret();
    let auth = Arc::new(FleetAuth {
        store: store.clone(),
        fleet_user: fleet_user.clone(),
        fleet_hash: hash_secret(&fleet_password),
    });
    let broker_cfg = BrokerConfig {
        listen: cfg.mqtt_plain,
        tls_listen: Some(cfg.mqtts),
        tls_cert_pem: Some(cert_path),
        tls_key_pem: Some(key_path),
        // Twice the wire limit: an oversized envelope still reaches the fleet, which refuses
        // it with a reason and counts it, instead of vanishing inside the broker.
        max_payload_bytes: 2 * lattice_wire::MAX_MESSAGE_BYTES,
        ..BrokerConfig::default()
    };
    let broker =
        lattice_broker::start(broker_cfg, auth).context("starting the embedded MQTT broker")?;
    let mqtt_plain_addr = broker.local_addr();
    let mqtts_addr = broker.tls_local_addr().unwrap_or(cfg.mqtts);

    let metrics = Arc::new(Metrics::new());
    let ingest = Arc::new(Ingest::new(store.clone(), metrics.clone()));
    let outbound = Arc::new(Outbound::new(key.clone(), epoch));
    link::start(
        LinkConfig {
            host: mqtt_plain_addr.ip().to_string(),
            port: mqtt_plain_addr.port(),
            client_id: fleet_user.clone(),
            username: fleet_user,
            password: fleet_password,
            share_group: None,
            heartbeat_secs: cfg.heartbeat_secs,
            resend_every: Duration::from_secs(u64::from(cfg.heartbeat_secs).clamp(1, 10)),
            offline_after: Duration::from_secs(u64::from(cfg.heartbeat_secs) * 3 + 5),
        },
        store.clone(),
        ingest.clone(),
        outbound.clone(),
        metrics.clone(),
    );

    let listener = std::net::TcpListener::bind(cfg.http)
        .with_context(|| format!("binding the HTTPS API on {}", cfg.http))?;
    listener.set_nonblocking(true)?;
    let http_addr = listener.local_addr()?;
    let https_url = format!("https://{}", with_port(&host, http_addr.port()));
    let mqtts_url = format!("mqtts://{}", with_port(&host, mqtts_addr.port()));
    let state = Arc::new(AppState {
        store,
        metrics,
        ingest,
        outbound,
        operator_hash: hash_secret(&operator_token),
        public_url: https_url.clone(),
        broker_urls: vec![mqtts_url.clone()],
        heartbeat_secs: cfg.heartbeat_secs,
    });
    let rustls_cfg =
        axum_server::tls_rustls::RustlsConfig::from_config(crate::tls::server_config(&tls)?);
    let handle = axum_server::Handle::new();
    let app = api::app(state.clone());
    let server = axum_server::from_tcp_rustls(listener, rustls_cfg).handle(handle.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::error!(error = %e, "HTTPS server stopped");
        }
    });
    tracing::info!(%https_url, %mqtts_url, fleet_key = %key.public(), "fleet running");
    Ok(RunningFleet {
        http_addr,
        https_url,
        mqtts_url,
        mqtt_plain_addr,
        fleet_key: key.public(),
        operator_token_path,
        state,
        server: handle,
        _broker: broker,
    })
}

fn with_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
