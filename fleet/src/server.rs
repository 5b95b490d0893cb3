//! Runs a fleet: store, keys, embedded broker (or an external one), MQTT link and HTTPS API.

use crate::api::{self, AppState};
use crate::broker::external::{ExternalBroker, MosquittoAccounts};
use crate::broker::{BrokerAccounts, StoreAccounts};
use crate::ingest::Ingest;
use crate::link::{self, LinkConfig, Outbound};
use crate::metrics::Metrics;
use crate::secrets::hash_secret;
use crate::store::{Backend, Store};
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
    /// An external broker instead of the embedded one (`mqtts`/`mqtt_plain` are then unused).
    pub broker: Option<ExternalBroker>,
    /// Who may create accounts.
    pub signup: crate::accounts::SignupPolicy,
    /// How long a node may be offline before its stateless workloads are rescheduled.
    pub node_lost_grace: Duration,
    /// What the workload kinds need (the S3 image).
    pub kinds: crate::kinds::KindConfig,
    /// Hand nodes the digest-pinned images of the fleet's registry at their registry proxy,
    /// so they pull through their tunnels (ADR 0011; `--node-registry-proxy`). `None`: images
    /// are handed as they are.
    pub node_registry: Option<crate::gateway::upstream::NodeRegistry>,
    /// API requests handled at once before the rest are shed with 503 (`--max-in-flight`).
    pub max_in_flight: usize,
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
            broker: None,
            signup: Default::default(),
            node_lost_grace: crate::lifecycle::DEFAULT_GRACE,
            kinds: Default::default(),
            node_registry: None,
            max_in_flight: crate::api::MAX_IN_FLIGHT,
        }
    }
}

/// A started fleet.
pub struct RunningFleet {
    pub http_addr: SocketAddr,
    pub https_url: String,
    /// The first broker URL handed to nodes.
    pub mqtts_url: String,
    /// Every broker URL handed to nodes, in order of preference.
    pub node_broker_urls: Vec<String>,
    /// The external broker's URL, when there is one.
    pub external_broker: Option<String>,
    /// The embedded broker's plain listener (`None` with an external broker).
    pub mqtt_plain_addr: Option<SocketAddr>,
    pub fleet_key: lattice_wire::IdentityPublic,
    pub operator_token_path: PathBuf,
    pub state: Arc<AppState>,
    server: axum_server::Handle,
    _broker: Option<lattice_broker::BrokerHandle>,
    _data_lock: crate::data_lock::DataLock,
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

/// Starts everything; returns once all listeners are bound (and, with an external broker,
/// once the fleet is connected to it and its role is in place).
pub async fn start(cfg: FleetConfig) -> anyhow::Result<RunningFleet> {
    prepare_data_dir(&cfg.data_dir)?;
    // One fleet per data directory; `restore` and `keys rotate` refuse while it is held.
    let data_lock = crate::data_lock::acquire(&cfg.data_dir)?;
    let db_url = cfg
        .database
        .clone()
        .unwrap_or_else(|| sqlite_url(&cfg.data_dir));
    let store = Store::open(&db_url).await?;
    if db_url.starts_with("postgres") && cfg.broker.is_none() {
        tracing::warn!(
            "running on PostgreSQL with the embedded MQTT broker: fine for one fleet process, but \
             replicas need one external broker (--broker), or nodes registered with a follower \
             never receive their targets (docs/operator-guide.md, several fleet replicas)"
        );
    }
    let (key, rotations) = crate::rotation::load(&cfg.data_dir)?;
    let (operator_token_path, operator_token) = crate::secrets::operator_token(&cfg.data_dir)?;
    let epoch = store.next_fleet_epoch(lattice_wire::now_ms()).await?;
    let host = cfg
        .public_hosts
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".into());

    // Written before any broker is contacted: an external broker serving TLS to nodes loads
    // these files (nodes pin the key).
    let tls = crate::tls::self_signed_with_chain(&key, &cfg.public_hosts, &rotations)?;
    let tls_files = crate::tls::write_pem_files(&tls, &cfg.data_dir)?;

    let fleet_user = format!("{}{epoch}", crate::broker::FLEET_USER_PREFIX);
    let metrics = Arc::new(Metrics::new());
    let ingest = Arc::new(Ingest::new(store.clone(), metrics.clone()));
    let outbound = Arc::new(Outbound::new(key.clone(), epoch));
    let link = |host: String, port: u16, username: String, password: String, tls| LinkConfig {
        host,
        port,
        client_id: fleet_user.clone(),
        username,
        password,
        share_group: None,
        tls,
        heartbeat_secs: cfg.heartbeat_secs,
        resend_every: Duration::from_secs(u64::from(cfg.heartbeat_secs).clamp(1, 10)),
        offline_after: Duration::from_secs(u64::from(cfg.heartbeat_secs) * 3 + 5),
    };
    // The API's port is fixed: bound before the embedded broker's port-0 listeners, so none of
    // them can take it (a free port probed for them may be the one asked for here).
    let listener = std::net::TcpListener::bind(cfg.http)
        .with_context(|| format!("binding the HTTPS API on {}", cfg.http))?;
    listener.set_nonblocking(true)?;
    let setup = match &cfg.broker {
        None => {
            let fleet_secret = crate::broker::fleet_broker_secret(&cfg.data_dir)?;
            let handle = crate::broker::start_embedded(
                &store,
                &fleet_secret,
                cfg.mqtt_plain,
                cfg.mqtts,
                tls_files,
            )?;
            let plain = handle.local_addr();
            let mqtts_addr = handle.tls_local_addr().unwrap_or(cfg.mqtts);
            let mqtts_url = format!("mqtts://{}", with_port(&host, mqtts_addr.port()));
            BrokerSetup {
                embedded: Some((handle, plain)),
                external: None,
                accounts: Arc::new(StoreAccounts),
                link: link(
                    plain.ip().to_string(),
                    plain.port(),
                    fleet_user.clone(),
                    fleet_secret,
                    None,
                ),
                node_urls: vec![mqtts_url],
            }
        }
        Some(ext) => {
            let (accounts, client_tls) = connect_external(ext, &store, &key, &fleet_user).await?;
            BrokerSetup {
                embedded: None,
                external: Some(ext.url.to_string()),
                accounts: Arc::new(accounts),
                link: link(
                    ext.url.client_host(),
                    ext.url.port,
                    ext.user.clone(),
                    ext.password().to_string(),
                    client_tls,
                ),
                node_urls: ext.node_urls.iter().map(ToString::to_string).collect(),
            }
        }
    };

    let BrokerSetup {
        embedded,
        external: external_broker,
        accounts,
        link: link_cfg,
        node_urls: broker_urls,
    } = setup;
    // Leader election: PostgreSQL advisory lock; SQLite always leads.
    let (leader_tx, leadership) = crate::leader::channel();
    let every = crate::leader::CHECK_EVERY;
    let gauge = metrics.leader.clone();
    match store.backend() {
        Backend::Postgres => {
            let lock = crate::leader::PgLock::new(&db_url);
            tokio::spawn(crate::leader::run(lock, every, leader_tx, gauge));
        }
        Backend::Sqlite => {
            let lock = crate::leader::AlwaysLeader;
            tokio::spawn(crate::leader::run(lock, every, leader_tx, gauge));
        }
    }
    let link = link::start(
        link_cfg,
        store.clone(),
        ingest.clone(),
        outbound.clone(),
        metrics.clone(),
        leadership.clone(),
    );

    let http_addr = listener.local_addr()?;
    let https_url = format!("https://{}", with_port(&host, http_addr.port()));
    let state = Arc::new(AppState {
        store,
        metrics,
        ingest,
        outbound,
        operator_hash: hash_secret(&operator_token),
        public_url: https_url.clone(),
        broker_urls: broker_urls.clone(),
        public_hosts: cfg.public_hosts.clone(),
        heartbeat_secs: cfg.heartbeat_secs,
        accounts,
        login_limits: Default::default(),
        signup: cfg.signup,
        tunnels: Default::default(),
        kinds: cfg.kinds.clone(),
        node_registry: cfg.node_registry.clone(),
        apps: Default::default(),
        link: Some(link.clone()),
    });
    // Cordon/drain/decommission and node loss, on the leader only (a new leader resumes
    // from the store).
    tokio::spawn(crate::leader::supervise(
        state.clone(),
        leadership,
        cfg.node_lost_grace,
        Some(link),
    ));
    let rustls_cfg =
        axum_server::tls_rustls::RustlsConfig::from_config(crate::tls::server_config(&tls)?);
    let handle = axum_server::Handle::new();
    let app = api::app_with_limit(state.clone(), cfg.max_in_flight);
    let server = axum_server::from_tcp_rustls(listener, rustls_cfg).handle(handle.clone());
    tokio::spawn(async move {
        // The peer address feeds the login rate limit (`api::accounts::ClientIp`).
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = server.serve(make).await {
            tracing::error!(error = %e, "HTTPS server stopped");
        }
    });
    tracing::info!(%https_url, broker_urls = ?broker_urls, fleet_key = %key.public(), "fleet running");
    let (embedded, mqtt_plain_addr) = match embedded {
        Some((handle, plain)) => (Some(handle), Some(plain)),
        None => (None, None),
    };
    Ok(RunningFleet {
        http_addr,
        https_url,
        mqtts_url: broker_urls.first().cloned().unwrap_or_default(),
        node_broker_urls: broker_urls,
        external_broker,
        mqtt_plain_addr,
        fleet_key: key.public(),
        operator_token_path,
        state,
        server: handle,
        _broker: embedded,
        _data_lock: data_lock,
    })
}

/// Connects to an external broker as `--broker-user` (waiting for it while it is unreachable),
/// puts the fleet's role in place and disables the accounts of revoked nodes. Returns the
/// accounts and the TLS configuration for the fleet's own connections (pinned to the fleet key,
/// for `mqtts://`).
async fn connect_external(
    ext: &ExternalBroker,
    store: &Store,
    key: &lattice_wire::IdentityKey,
    fleet_user: &str,
) -> anyhow::Result<(MosquittoAccounts, Option<Arc<rustls::ClientConfig>>)> {
    let client_tls = if ext.url.tls {
        Some(
            lattice_wire::pin::try_pinned_client_config(&key.public())
                .context("building the TLS client configuration for the broker")?,
        )
    } else {
        None
    };
    for u in ext.node_urls.iter().filter(|u| !u.tls && !u.is_loopback()) {
        tracing::warn!(url = %u, "nodes will use plain MQTT: their broker passwords and messages cross the network in clear (use an mqtts:// --node-broker-url)");
    }
    tracing::info!(broker = %ext.url, user = %ext.user, "connecting to the external MQTT broker");
    let accounts =
        MosquittoAccounts::connect(ext, &format!("{fleet_user}-admin"), client_tls.clone())
            .await
            .with_context(|| format!("connecting to the MQTT broker at {}", ext.url))?;
    accounts.prepare().await.with_context(|| {
        format!(
            "preparing role {} on the MQTT broker at {}",
            crate::broker::dynsec::FLEET_ROLE,
            ext.url
        )
    })?;
    // Revocations the broker missed (it was unreachable at the time, or nodes were revoked
    // while the fleet used another broker) are applied now.
    let revoked: Vec<String> = store
        .nodes()
        .await?
        .into_iter()
        .filter(|n| n.revoked)
        .map(|n| n.id)
        .collect();
    match accounts.disable_nodes(&revoked).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            disabled = n,
            "disabled the broker accounts of revoked nodes"
        ),
        Err(e) => tracing::error!(error = %e,
            "cannot disable the broker accounts of revoked nodes; the next start tries again"),
    }
    Ok((accounts, client_tls))
}

/// What the chosen broker gives the rest of the fleet.
struct BrokerSetup {
    /// The embedded broker and its plain listener.
    embedded: Option<(lattice_broker::BrokerHandle, SocketAddr)>,
    /// The external broker's URL.
    external: Option<String>,
    accounts: Arc<dyn BrokerAccounts>,
    link: LinkConfig,
    /// Broker URLs handed to nodes.
    node_urls: Vec<String>,
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
    let (key, rotations) = crate::rotation::load(data_dir)?;
    let tls = crate::tls::self_signed_with_chain(&key, public_hosts, &rotations)?;
    let secret = crate::broker::fleet_broker_secret(data_dir)?;
    crate::broker::start_embedded(
        &store,
        &secret,
        mqtt_plain,
        mqtts,
        crate::tls::write_pem_files(&tls, data_dir)?,
    )
}
