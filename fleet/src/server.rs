//! Runs a fleet: store, keys, embedded broker (or an external one), MQTT link and HTTPS API.

use crate::api::{self, AppState};
use crate::ingest::Ingest;
use crate::link::{self, LinkConfig, Outbound};
use crate::metrics::Metrics;
use crate::secrets::hash_secret;
use crate::store::Store;
use anyhow::Context;
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

/// Creates `dir` (and parents) and makes it 0700: it holds keys, secrets and the database.
pub fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to 0700", dir.display()))
}

pub(crate) fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!("sqlite://{}", data_dir.join("fleet.db").display())
}

/// Starts everything; returns once all listeners are bound.
pub async fn start(cfg: FleetConfig) -> anyhow::Result<RunningFleet> {
    prepare_data_dir(&cfg.data_dir)?;
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

    let fleet_secret = crate::broker::fleet_broker_secret(&cfg.data_dir)?;
    let fleet_user = format!("{}{epoch}", crate::broker::FLEET_USER_PREFIX);
    let broker = crate::broker::start_embedded(
        &store,
        &fleet_secret,
        cfg.mqtt_plain,
        cfg.mqtts,
        crate::tls::write_pem_files(&tls, &cfg.data_dir)?,
    )?;
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
            password: fleet_secret,
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

/// `lattice broker`: the embedded broker alone, authenticating nodes against the fleet's store
/// and fleet processes with the fleet's broker secret (both from `data_dir`).
pub async fn start_broker_only(
    data_dir: &std::path::Path,
    database: Option<String>,
    mqtt_plain: SocketAddr,
    mqtts: SocketAddr,
    public_hosts: &[String],
) -> anyhow::Result<lattice_broker::BrokerHandle> {
    prepare_data_dir(data_dir)?;
    let store = Store::open(&database.unwrap_or_else(|| sqlite_url(data_dir))).await?;
    let key = crate::secrets::fleet_key(data_dir)?;
    let tls = crate::tls::self_signed(&key, public_hosts)?;
    let secret = crate::broker::fleet_broker_secret(data_dir)?;
    crate::broker::start_embedded(
        &store,
        &secret,
        mqtt_plain,
        mqtts,
        crate::tls::write_pem_files(&tls, data_dir)?,
    )
}
