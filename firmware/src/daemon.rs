//! What the `latticed` binary does, as a library call: make or load the node's keys, register
//! with the fleet unless already registered, then run the MQTT agent until shutdown.

use crate::agent::{Agent, AgentConfig, AgentError};
use crate::config::{ConfigError, RuntimeKind, Settings};
use crate::identity::{self, BrokerSecret, IdentityError, NodeKeys, Registration};
use crate::inventory::InventoryError;
use crate::register::{self, RegisterError, RegisterOptions};
use crate::shutdown::Shutdown;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "this node is not registered ({data_dir} holds no registration.json) and no \
         provisioning is configured: set `provisioning` or `provisioning_file`, or pass \
         --provisioning / --provisioning-file"
    )]
    NotProvisioned { data_dir: PathBuf },
    #[error("reading the inventory for registration: {0}")]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Register(#[from] RegisterError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("the pinned fleet key: {0}")]
    Pin(String),
    #[error("setting up the provider envelope (the workloads' parent cgroup): {0}")]
    Envelope(#[from] crate::cgroup::CgroupError),
}

/// The node's registration, loaded or freshly made.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub keys: NodeKeys,
    pub registration: Registration,
    pub secret: BrokerSecret,
    /// True when this call registered (first boot).
    pub new: bool,
}

/// Loads the keys and registration from `settings.data_dir`, registering first if needed.
/// `started` is when the process started, for the `registered in N ms` measurement.
pub async fn enroll(
    settings: &Settings,
    started: Instant,
    opts: &RegisterOptions,
    shutdown: &mut Shutdown,
) -> Result<Enrollment, DaemonError> {
    let data_dir = &settings.data_dir;
    let keys = identity::load_or_generate(data_dir)?;
    if let Some((registration, secret)) = identity::load_registration(data_dir, &keys)? {
        tracing::info!(
            node_id = %registration.node_id,
            "already registered; not registering again"
        );
        return Ok(Enrollment {
            keys,
            registration,
            secret,
            new: false,
        });
    }
    let source = settings
        .provisioning
        .as_ref()
        .ok_or_else(|| DaemonError::NotProvisioned {
            data_dir: data_dir.clone(),
        })?;
    let provisioning = source.load()?;
    let inventory = crate::inventory::read_inventory(data_dir)?;
    tracing::info!(fleet = %provisioning.url, identity = %keys.identity.public(), "registering");
    let enrolled = register::register(&provisioning, &keys, inventory, opts, shutdown).await?;
    if enrolled.fleet_pin.key.to_string() != enrolled.registration.fleet_key {
        // The fleet rotated its key after this provisioning string was made: pin the key it
        // led to before the registration exists.
        let provisioned = enrolled
            .registration
            .fleet_public()
            .map_err(|e| DaemonError::Pin(e.to_string()))?;
        crate::fleet_pin::PersistentPin::load(data_dir, provisioned)
            .and_then(|p| p.save(enrolled.fleet_pin))
            .map_err(|e| DaemonError::Pin(e.to_string()))?;
    }
    identity::save_registration(data_dir, &enrolled.registration, &enrolled.secret)?;
    tracing::info!(
        node_id = %enrolled.registration.node_id,
        attempts = enrolled.attempts,
        "registered in {} ms",
        started.elapsed().as_millis()
    );
    Ok(Enrollment {
        keys,
        registration: enrolled.registration,
        secret: enrolled.secret,
        new: true,
    })
}

/// How a first boot retries when the fleet refuses its registration (a wrong, expired or used
/// up token): slowly, from `base` doubling to `cap`, reading the provisioning again each time
/// so a corrected one is used without a restart.
#[derive(Debug, Clone)]
pub struct RefusalRetry {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RefusalRetry {
    /// 30 s, doubling to 15 min: a node with a bad token costs the fleet a few requests an
    /// hour, not one every restart.
    fn default() -> Self {
        RefusalRetry {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(15 * 60),
        }
    }
}

/// [`enroll`], but a refused registration is not the end: it is logged (at error level: the
/// image sends latticed's log to the console), shown in systemd's status line, and retried
/// after a [`RefusalRetry`] delay. Every other outcome is returned.
pub async fn enroll_patiently(
    settings: &Settings,
    started: Instant,
    opts: &RegisterOptions,
    retry: &RefusalRetry,
    shutdown: &mut Shutdown,
    notify: &dyn crate::watchdog::Notify,
) -> Result<Enrollment, DaemonError> {
    let mut backoff = crate::backoff::Backoff::new(retry.base, retry.cap);
    loop {
        match enroll(settings, started, opts, shutdown).await {
            Err(DaemonError::Register(e @ RegisterError::Refused { .. })) => {
                let delay = backoff.next_delay();
                tracing::error!(
                    retry_in_s = delay.as_secs(),
                    "{e}. This node cannot join until it has a valid provisioning string \
                     (`lattice tokens create` on the fleet; on the image, the `provisioning` \
                     file of the LATTICE-CFG partition). Retrying"
                );
                crate::watchdog::tell(
                    notify,
                    crate::watchdog::Notice::Status(format!(
                        "registration refused: {e}; retrying in {} s",
                        delay.as_secs()
                    )),
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => {
                        return Err(DaemonError::Register(RegisterError::Cancelled));
                    }
                }
            }
            other => return other,
        }
    }
}

/// Enrolls, then runs the agent until `shutdown` fires. Under systemd it says `READY=1` at
/// once, keeps a `STATUS=` line and feeds the watchdog ([`crate::watchdog`]).
pub async fn run(
    settings: &Settings,
    started: Instant,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    use crate::watchdog::{self, Notice};
    let notify: std::sync::Arc<dyn watchdog::Notify> = std::sync::Arc::new(watchdog::Systemd);
    let liveness = watchdog::Liveness::default();
    // Ready before enrolling: a first boot may wait for the fleet for hours, and systemd would
    // otherwise kill a node that is only waiting (the start timeout). The watchdog is fed from
    // here on, by this runtime and, once it runs, the agent loop.
    if let Some(timeout) = watchdog::requested_timeout() {
        tokio::spawn(watchdog::run(
            notify.clone(),
            liveness.clone(),
            timeout,
            shutdown.clone(),
        ));
    }
    watchdog::tell(notify.as_ref(), Notice::Ready);
    watchdog::tell(
        notify.as_ref(),
        Notice::Status("enrolling (first boot registers with the fleet)".into()),
    );
    let result = supervise(settings, started, shutdown, notify.as_ref(), liveness).await;
    watchdog::tell(notify.as_ref(), Notice::Stopping);
    result
}

async fn supervise(
    settings: &Settings,
    started: Instant,
    mut shutdown: Shutdown,
    notify: &dyn crate::watchdog::Notify,
    liveness: crate::watchdog::Liveness,
) -> Result<(), DaemonError> {
    let enrollment = match enroll_patiently(
        settings,
        started,
        &RegisterOptions::default(),
        &RefusalRetry::default(),
        &mut shutdown,
        notify,
    )
    .await
    {
        Err(DaemonError::Register(RegisterError::Cancelled)) => return Ok(()),
        other => other?,
    };
    let node_id = enrollment.registration.node_id.clone();
    crate::watchdog::tell(
        notify,
        crate::watchdog::Notice::Status(format!("node {node_id}: supervising")),
    );
    // One pin for every TLS client (MQTT, the tunnel) and the targets' signatures: a rotation
    // seen by any of them moves it for all.
    let fleet_pin = crate::fleet_pin::PersistentPin::load(
        &settings.data_dir,
        enrollment
            .registration
            .fleet_public()
            .map_err(|e| DaemonError::Pin(e.to_string()))?,
    )
    .map_err(|e| DaemonError::Pin(e.to_string()))?;
    // The tunnel to the gateway (only with containers to reach); it stops when dropped.
    let _tunnel = match settings.runtime {
        RuntimeKind::Docker => crate::tunnel::start(
            settings.data_dir.clone(),
            &enrollment.registration,
            &enrollment.keys,
            fleet_pin.clone(),
            &crate::runtime::docker::DockerOptions::default().socket,
            settings.registry_proxy,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "the tunnel to the gateway cannot start: workloads are unreachable");
        })
        .ok(),
        RuntimeKind::None => None,
    };
    let mut config = AgentConfig::new(
        settings.data_dir.clone(),
        enrollment.keys,
        enrollment.registration,
        enrollment.secret,
    );
    config.heartbeat_override = settings.heartbeat_override;
    config.fleet_pin = Some(fleet_pin as std::sync::Arc<dyn lattice_wire::pin::PinHolder>);
    config.outbox_max_bytes = settings.outbox_max_bytes;
    config.liveness = liveness;
    match settings.runtime {
        RuntimeKind::None => {
            tracing::info!("runtime = none: targets are recorded, no workload runs");
            run_agent(Agent::new(config)?, enrollment.new, node_id, shutdown).await
        }
        RuntimeKind::Docker => {
            use crate::cgroup::CgroupManager;
            let envelope = crate::cgroup::for_node(&node_id, None)?;
            envelope.ensure(&settings.envelope)?;
            tracing::info!(
                parent = %envelope.docker_parent(),
                cpu_percent = settings.envelope.cpu_percent,
                memory_bytes = settings.envelope.memory_bytes,
                pids_max = settings.envelope.pids_max,
                "provider envelope ready"
            );
            let docker = crate::runtime::docker::DockerOptions {
                volumes: crate::volumes::VolumeHost::new(
                    settings.data_dir.join("volumes"),
                    settings.disk_floor_bytes,
                ),
                network_pool: settings.network_pool,
                ..Default::default()
            };
            let applier = crate::reconcile::docker_applier(
                docker,
                node_id.clone(),
                envelope.docker_parent(),
                shutdown.clone(),
            );
            crate::owner::spawn(
                settings.owner.clone(),
                settings.envelope.cpu_percent,
                std::sync::Arc::new(envelope),
                applier.handle().clone(),
                applier.events().clone(),
                shutdown.clone(),
            );
            let agent = Agent::with_applier(config, applier)?;
            run_agent(agent, enrollment.new, node_id, shutdown).await
        }
    }
}

async fn run_agent<A: crate::agent::Applier>(
    mut agent: Agent<A>,
    new: bool,
    node_id: String,
    shutdown: Shutdown,
) -> Result<(), DaemonError> {
    if new {
        agent.queue_event("registered", node_id);
    }
    agent.run(shutdown).await?;
    Ok(())
}
