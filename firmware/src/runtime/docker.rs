//! [`DockerRuntime`]: the [`ContainerRuntime`] on the machine's Docker engine, through bollard
//! over the engine's Unix socket.
//!
//! Each workload gets three kinds of objects, all named after and labelled with the node id and
//! the workload id (see [`super`]): its container (`lattice-{node}-{workload}`), its own bridge
//! network (same name) and one named volume per declared volume
//! (`lattice-{node}-{workload}-{volume}`). The container's protections are built in
//! [`super::hardening`], which also lists what is not enforced yet. The node's firewall
//! ([`crate::firewall`]) is brought in line with the node's networks before a container is
//! created, after a network is removed, and on the first listing after (re)connecting to the
//! engine (rules do not survive a reboot; Docker keeps them across its own restarts): a
//! workload never runs unguarded, and a firewall that cannot be set fails the create with the
//! reason. Before reusing or removing a network or volume the runtime checks
//! its labels: an object that does not carry the caller's node id is never touched, even if
//! its name matches.
//!
//! Connection: the client is made on first use and the API version negotiated with the engine
//! (Docker 20.10 speaks 1.41; newer engines refuse very old versions, so nothing is pinned).
//! When the engine cannot be reached every call returns [`RuntimeError::Unavailable`] and the
//! next call connects afresh, so a restarted engine is picked up without restarting latticed.
//!
//! Images are pulled with the engine's own registry configuration (plain HTTP is allowed to
//! 127.0.0.0/8 registries by default); a failed pull is [`RuntimeError::ImageMissing`] with the
//! engine's message.

mod engine;

use super::hardening::{self, Bounds};
use super::subnets;
use super::{
    object_name, ContainerRuntime, Observed, RuntimeError, LABEL_NODE, LABEL_SPEC, LABEL_WORKLOAD,
};
use crate::firewall::{self, iptables::Iptables, Firewall, Guarded};
use crate::volumes::{VolumeError, VolumeHost};
use bollard::errors::Error as BollardError;
use bollard::models::Network;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, InspectNetworkOptions,
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use engine::{
    classify, is_owned, label_filter, settle_paused, split_reference, status_of, summary_key,
    Failure,
};
use futures_util::TryStreamExt;
use lattice_wire::msg::WorkloadSpec;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Free space kept for the provider by default (1 GiB).
pub const DEFAULT_DISK_FLOOR: u64 = 1 << 30;
/// Subnets tried when other nodes on the engine keep taking the one picked.
const NETWORK_ATTEMPTS: usize = 8;

/// Where the engine is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// The engine's Unix socket.
    pub socket: PathBuf,
    /// Longest wait for one engine answer (pulls excepted).
    pub request_timeout: Duration,
    /// Longest a whole image pull may take.
    pub pull_timeout: Duration,
    /// Node-side bounds applied to every container (tmpfs, logs, stop timeout).
    pub bounds: Bounds,
    /// Where size-limited volumes are made, and the disk floor they (and pulls) keep.
    pub volumes: VolumeHost,
    /// The private range workload networks get their subnets from.
    pub network_pool: super::subnets::Pool,
}

impl Default for DockerOptions {
    /// `$DOCKER_HOST` if it is a `unix://` address, else `/var/run/docker.sock`.
    fn default() -> Self {
        let socket = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|h| h.strip_prefix("unix://").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"));
        DockerOptions {
            socket,
            request_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(600),
            bounds: Bounds::default(),
            volumes: VolumeHost::new("/var/lib/latticed/volumes", DEFAULT_DISK_FLOOR),
            network_pool: Default::default(),
        }
    }
}

/// The Docker engine as a [`ContainerRuntime`]. Cheap to share (`Arc`) across tasks.
#[derive(Debug)]
pub struct DockerRuntime {
    opts: DockerOptions,
    client: Mutex<Option<Docker>>,
    firewall: Arc<dyn Firewall>,
    /// Nodes whose firewall was synced since the client was (re)made.
    synced: Mutex<HashSet<String>>,
    /// What `list_owned` last made of each container, with the list's summary of it at the
    /// time ([`engine::summary_key`]): while the summary stays the same the container is not
    /// inspected again. Dropped for a container the runtime acts on.
    /// Per node id.
    seen: Mutex<HashMap<String, Seen>>,
    /// Container inspects made by `list_owned` (see [`DockerRuntime::inspects`]).
    inspects: AtomicU64,
}

/// What `list_owned` made of a node's containers, per container id: the list's summary of the
/// container at the time and the [`Observed`] its inspect gave.
type Seen = HashMap<String, (String, Observed)>;

impl DockerRuntime {
    /// A runtime for the engine at `opts.socket` with the host's iptables as its firewall;
    /// nothing is contacted until the first call.
    pub fn new(opts: DockerOptions) -> Self {
        Self::with_firewall(opts, Arc::new(Iptables::new()))
    }

    /// A runtime with another firewall (tests use [`firewall::fake::FakeFirewall`]).
    pub fn with_firewall(opts: DockerOptions, firewall: Arc<dyn Firewall>) -> Self {
        DockerRuntime {
            opts,
            client: Mutex::new(None),
            firewall,
            synced: Mutex::new(HashSet::new()),
            seen: Mutex::new(HashMap::new()),
            inspects: AtomicU64::new(0),
        }
    }

    /// How many containers `list_owned` has inspected so far. An idle node lists its
    /// containers every round but inspects one only when the list shows it changed (state or
    /// health) or after the runtime acted on it: 10 workloads cost one list call per round, not
    /// eleven calls.
    pub fn inspects(&self) -> u64 {
        self.inspects.load(Ordering::Relaxed)
    }

    /// Forgets what was seen of a container the runtime is about to act on: its next state
    /// (a new start time, an exit code) comes from a fresh inspect.
    fn forget(&self, container_id: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            for containers in seen.values_mut() {
                containers.remove(container_id);
            }
        }
    }

    /// The engine at the default socket ([`DockerOptions::default`]).
    pub fn local() -> Self {
        Self::new(DockerOptions::default())
    }

    pub fn options(&self) -> &DockerOptions {
        &self.opts
    }

    /// The connected client (made and version-negotiated on first use). For callers that need
    /// engine calls the trait does not have (logs, stats).
    pub async fn client(&self) -> Result<Docker, RuntimeError> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let socket = self.opts.socket.to_string_lossy().into_owned();
        let docker = Docker::connect_with_unix(
            &socket,
            self.opts.request_timeout.as_secs().max(1),
            API_DEFAULT_VERSION,
        )
        .map_err(|e| RuntimeError::Unavailable(format!("Docker socket {socket}: {e}")))?
        .negotiate_version()
        .await
        .map_err(|e| {
            RuntimeError::Unavailable(format!("Docker engine at {socket} does not answer: {e}"))
        })?;
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(docker.clone());
        }
        Ok(docker)
    }

    fn cached(&self) -> Option<Docker> {
        self.client.lock().ok().and_then(|c| c.clone())
    }

    /// Forgets the client so the next call reconnects (and renegotiates: the engine may have
    /// been upgraded while it was away).
    fn reset(&self) {
        if let Ok(mut slot) = self.client.lock() {
            *slot = None;
        }
        if let Ok(mut s) = self.synced.lock() {
            s.clear();
        }
    }

    /// Makes the node's firewall guard exactly the node's workload networks.
    async fn sync_firewall(&self, docker: &Docker, node_id: &str) -> Result<(), RuntimeError> {
        let networks = docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(label_filter(node_id, None)),
            }))
            .await
            .map_err(|e| {
                self.fail(e, |s, m| RuntimeError::Container {
                    container: format!("(networks of node {node_id})"),
                    reason: format!("{m} (status {s})"),
                })
            })?;
        let guarded: Vec<Guarded> = networks
            .iter()
            .filter_map(|n| {
                let w = n.labels.as_ref()?.get(LABEL_WORKLOAD)?;
                is_owned(n.labels.as_ref(), node_id, w).then(|| Guarded {
                    workload_id: w.clone(),
                    bridge: firewall::bridge_name(node_id, w),
                    egress: n.internal != Some(true),
                    upstreams: upstream_ports(n),
                })
            })
            .collect();
        let fw = Arc::clone(&self.firewall);
        let node = node_id.to_string();
        tokio::task::spawn_blocking(move || fw.sync(&node, &guarded))
            .await
            .map_err(|e| RuntimeError::Container {
                container: format!("(firewall of node {node_id})"),
                reason: e.to_string(),
            })?
            .map_err(|e| RuntimeError::Container {
                container: format!("(firewall of node {node_id})"),
                reason: e.to_string(),
            })?;
        if let Ok(mut s) = self.synced.lock() {
            s.insert(node_id.to_string());
        }
        Ok(())
    }

    /// Checks that the engine answers.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.fail(e, |_, m| RuntimeError::Unavailable(m)))
    }

    /// Maps a bollard error: unreachable engine → `Unavailable` (and reconnect next time),
    /// anything else through `other(status, message)` (status 0: no HTTP status).
    fn fail(
        &self,
        e: BollardError,
        other: impl FnOnce(u16, String) -> RuntimeError,
    ) -> RuntimeError {
        match classify(e) {
            Failure::Unreachable(m) => {
                self.reset();
                RuntimeError::Unavailable(m)
            }
            Failure::Status(s, m) => other(s, m),
            Failure::Other(m) => other(0, m),
        }
    }

    fn container_fail(&self, container: &str, e: BollardError) -> RuntimeError {
        self.fail(e, |status, message| RuntimeError::Container {
            container: container.to_string(),
            reason: if status == 404 {
                format!("no such container ({message})")
            } else {
                message
            },
        })
    }

    /// The workload's network id: the existing one labelled for this node and workload (when
    /// its egress setting still matches) or a new one.
    async fn ensure_network(
        &self,
        docker: &Docker,
        node_id: &str,
        spec: &WorkloadSpec,
    ) -> Result<(String, Option<Ipv4Addr>), RuntimeError> {
        let name = object_name(node_id, &spec.id);
        let net_err = |status: u16, message: String| RuntimeError::Container {
            container: name.clone(),
            reason: format!("network {name}: {message} (status {status})"),
        };
        let existing: Vec<Network> = docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(label_filter(node_id, Some(&spec.id))),
            }))
            .await
            .map_err(|e| self.fail(e, net_err))?;
        for net in existing {
            let (Some(id), true) = (
                net.id.clone(),
                is_owned(net.labels.as_ref(), node_id, &spec.id),
            ) else {
                continue;
            };
            let bridge = net
                .options
                .as_ref()
                .and_then(|o| o.get(hardening::BRIDGE_NAME_OPTION));
            let upstreams = net
                .labels
                .as_ref()
                .and_then(|l| l.get(hardening::LABEL_UPSTREAMS));
            if net.internal == Some(!spec.egress)
                && bridge == Some(&firewall::bridge_name(node_id, &spec.id))
                && upstreams == Some(&spec.upstreams.len().to_string())
            {
                return Ok((id, network_gateway(&net)));
            }
            // Egress or the upstreams changed (or a network from before bridges were named,
            // or before upstreams): the old network
            // cannot be reused (fails while a container of
            // this workload is still attached, which the caller must remove first).
            docker
                .remove_network(&id)
                .await
                .map_err(|e| self.fail(e, net_err))?;
        }
        // A network of that name that is not ours (another node, a person): never touched.
        match docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(_) => {
                return Err(RuntimeError::Container {
                    container: name.clone(),
                    reason: format!(
                        "a network named {name} exists that is not labelled for node {node_id}"
                    ),
                })
            }
            Err(e) => match classify(e) {
                Failure::Status(404, _) => {}
                Failure::Unreachable(m) => {
                    self.reset();
                    return Err(RuntimeError::Unavailable(m));
                }
                Failure::Status(s, m) => return Err(net_err(s, m)),
                Failure::Other(m) => return Err(net_err(0, m)),
            },
        }
        self.create_network(docker, node_id, spec, &name, net_err)
            .await
    }

    /// Creates the workload's network on a free subnet of the pool. Another node on the same
    /// engine may take the same subnet between the listing and the create: the engine then
    /// refuses the overlap and the next free one is tried.
    async fn create_network(
        &self,
        docker: &Docker,
        node_id: &str,
        spec: &WorkloadSpec,
        name: &str,
        net_err: impl Fn(u16, String) -> RuntimeError,
    ) -> Result<(String, Option<Ipv4Addr>), RuntimeError> {
        let all: Vec<Network> = docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| self.fail(e, &net_err))?;
        let mut used = subnets::parse_used(
            all.iter()
                .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
                .flatten()
                .filter_map(|c| c.subnet.as_deref()),
        );
        // The host's own networks too (its LAN, a VPN): Docker does not check a subnet it is
        // given against the host's routes.
        used.extend(subnets::parse_proc_routes(
            &std::fs::read_to_string("/proc/net/route").unwrap_or_default(),
        ));
        let key = format!("{node_id}/{}", spec.id);
        for _ in 0..NETWORK_ATTEMPTS {
            let pool = self.opts.network_pool;
            let subnet = pool
                .pick(&key, &used)
                .ok_or_else(|| RuntimeError::Container {
                    container: name.to_string(),
                    reason: format!(
                        "network {name}: every /{} of the workload network pool {} is in use",
                        subnets::SUBNET_PREFIX,
                        pool.net()
                    ),
                })?;
            match docker
                .create_network(hardening::network_request(node_id, spec, subnet))
                .await
            {
                Ok(created) => return Ok((created.id, Some(subnet.gateway()))),
                Err(e) => match classify(e) {
                    Failure::Status(_, m) if m.contains("overlaps") => {
                        tracing::debug!(%subnet, network = %name, "subnet taken meanwhile; trying the next");
                        used.push(subnet);
                    }
                    Failure::Unreachable(m) => {
                        self.reset();
                        return Err(RuntimeError::Unavailable(m));
                    }
                    Failure::Status(s, m) => return Err(net_err(s, m)),
                    Failure::Other(m) => return Err(net_err(0, m)),
                },
            }
        }
        Err(net_err(
            0,
            format!("no free subnet after {NETWORK_ATTEMPTS} tries (others kept taking them)"),
        ))
    }

    /// Creates the workload's volumes that do not exist yet; an existing one must carry this
    /// node's and workload's labels.
    async fn ensure_volumes(
        &self,
        docker: &Docker,
        node_id: &str,
        spec: &WorkloadSpec,
    ) -> Result<(), RuntimeError> {
        for volume in &spec.volumes {
            let data = self.host_volume(node_id, spec, volume).await?;
            let req = hardening::volume_request(node_id, spec, volume, &data);
            let name = req.name.clone().unwrap_or_default();
            let vol_err = |status: u16, message: String| RuntimeError::Container {
                container: object_name(node_id, &spec.id),
                reason: format!("volume {name}: {message} (status {status})"),
            };
            match docker.inspect_volume(&name).await {
                Ok(v) if is_owned(Some(&v.labels), node_id, &spec.id) => {
                    let device = v.options.get("device").map(String::as_str);
                    if device == Some(data.to_string_lossy().as_ref()) {
                        continue;
                    }
                    // Made before volumes had sizes (or by hand): its data is not ours to
                    // move, so say so instead of running without a limit.
                    return Err(RuntimeError::Rejected {
                        workload: spec.id.clone(),
                        reason: format!(
                            "volume {name} exists without a size limit (device {device:?}); \
                             remove the workload and deploy it again"
                        ),
                    });
                }
                Ok(_) => {
                    return Err(vol_err(
                        409,
                        format!("exists but is not labelled for node {node_id}"),
                    ))
                }
                Err(e) => match classify(e) {
                    Failure::Status(404, _) => {}
                    Failure::Unreachable(m) => {
                        self.reset();
                        return Err(RuntimeError::Unavailable(m));
                    }
                    Failure::Status(s, m) => return Err(vol_err(s, m)),
                    Failure::Other(m) => return Err(vol_err(0, m)),
                },
            }
            docker
                .create_volume(req)
                .await
                .map_err(|e| self.fail(e, vol_err))?;
        }
        Ok(())
    }

    /// The volume's size-limited filesystem, made and mounted ([`crate::volumes`]); returns
    /// the directory Docker binds.
    async fn host_volume(
        &self,
        node_id: &str,
        spec: &WorkloadSpec,
        volume: &lattice_wire::msg::VolumeSpec,
    ) -> Result<PathBuf, RuntimeError> {
        let host = self.opts.volumes.clone();
        let (node, workload, v) = (node_id.to_string(), spec.id.clone(), volume.clone());
        let made = tokio::task::spawn_blocking(move || host.ensure(&node, &workload, &v))
            .await
            .map_err(|e| RuntimeError::Container {
                container: object_name(node_id, &spec.id),
                reason: e.to_string(),
            })?;
        made.map_err(|e| match e {
            VolumeError::Bad { .. } => RuntimeError::Rejected {
                workload: spec.id.clone(),
                reason: e.to_string(),
            },
            e => RuntimeError::Container {
                container: object_name(node_id, &spec.id),
                reason: e.to_string(),
            },
        })
    }

    async fn pull(&self, docker: &Docker, image: &str) -> Result<(), RuntimeError> {
        let (from_image, tag) = split_reference(image);
        let missing = |reason: String| RuntimeError::ImageMissing {
            image: image.to_string(),
            reason,
        };
        let mut stream = docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(from_image.to_string()),
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        let drain = async {
            while stream.try_next().await?.is_some() {}
            Ok::<(), BollardError>(())
        };
        match tokio::time::timeout(self.opts.pull_timeout, drain).await {
            Err(_) => Err(missing(format!(
                "pull did not finish within {} s",
                self.opts.pull_timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(self.fail(e, |_, m| missing(format!("pull failed: {m}")))),
            Ok(Ok(())) => Ok(()),
        }
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn list_owned(&self, node_id: &str) -> Result<Vec<Observed>, RuntimeError> {
        let docker = self.client().await?;
        let synced = self
            .synced
            .lock()
            .map(|s| s.contains(node_id))
            .unwrap_or(false);
        if !synced {
            // After a reboot the rules are gone and the volumes unmounted, while adopted
            // containers may start again: both come back before anything is started.
            let host = self.opts.volumes.clone();
            let node = node_id.to_string();
            let mounted = tokio::task::spawn_blocking(move || host.mount_all(&node))
                .await
                .map_err(|e| RuntimeError::Unavailable(e.to_string()))?
                .map_err(|e| RuntimeError::Container {
                    container: format!("(volumes of node {node_id})"),
                    reason: e.to_string(),
                })?;
            if !mounted.is_empty() {
                tracing::info!(
                    node = node_id,
                    count = mounted.len(),
                    "volumes mounted again"
                );
            }
            self.sync_firewall(&docker, node_id).await?;
        }
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(node_id, None)),
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                self.fail(e, |s, m| RuntimeError::Container {
                    container: format!("(list for node {node_id})"),
                    reason: format!("{m} (status {s})"),
                })
            })?;
        let mut out = Vec::with_capacity(list.len());
        let mut seen_now = HashMap::with_capacity(list.len());
        for summary in list {
            let Some(id) = summary.id.clone() else {
                continue;
            };
            let key = summary_key(&summary);
            let known = self.seen.lock().ok().and_then(|seen| {
                seen.get(node_id)
                    .and_then(|c| c.get(&id))
                    .filter(|(k, _)| *k == key)
                    .cloned()
            });
            if let Some((_, observed)) = known {
                out.push(observed.clone());
                seen_now.insert(id, (key, observed));
                continue;
            }
            self.inspects.fetch_add(1, Ordering::Relaxed);
            let inspect = match docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => i,
                // Removed between the list and the inspect: not ours to report any more.
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(self.container_fail(&id, e)),
            };
            let labels = inspect.config.as_ref().and_then(|c| c.labels.as_ref());
            let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
            if label(LABEL_NODE).as_deref() != Some(node_id) {
                continue;
            }
            let observed = Observed {
                container_id: id.clone(),
                workload_id: label(LABEL_WORKLOAD).unwrap_or_default(),
                spec_hash: label(LABEL_SPEC).unwrap_or_default(),
                status: status_of(&inspect),
                started_at: inspect
                    .state
                    .as_ref()
                    .and_then(|s| s.started_at.clone())
                    .unwrap_or_default(),
            };
            out.push(observed.clone());
            seen_now.insert(id, (key, observed));
        }
        // Containers gone from the list are forgotten with it.
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(node_id.to_string(), seen_now);
        }
        out.sort_by(|a, b| {
            (&a.workload_id, &a.container_id).cmp(&(&b.workload_id, &b.container_id))
        });
        Ok(out)
    }

    async fn ensure_image(&self, image: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let missing = |reason: String| RuntimeError::ImageMissing {
            image: image.to_string(),
            reason,
        };
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) => match classify(e) {
                Failure::Status(404, _) => {}
                Failure::Unreachable(m) => {
                    self.reset();
                    return Err(RuntimeError::Unavailable(m));
                }
                Failure::Status(_, m) | Failure::Other(m) => return Err(missing(m)),
            },
        }
        // A pull fills the disk: not below the provider's floor.
        let host = self.opts.volumes.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || host.check_free()).await {
            return Err(missing(e.to_string()));
        }
        self.pull(&docker, image).await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.fail(e, |_, m| {
                missing(format!("pull finished but the image is not there: {m}"))
            })),
        }
    }

    async fn create(
        &self,
        node_id: &str,
        spec: &WorkloadSpec,
        spec_hash: &str,
        cgroup_parent: &str,
    ) -> Result<String, RuntimeError> {
        // Refuse before touching the engine: a rejected spec leaves nothing behind.
        hardening::validate(node_id, spec)?;
        let docker = self.client().await?;
        let (network, gateway) = self.ensure_network(&docker, node_id, spec).await?;
        // Guarded before anything can run on it.
        self.sync_firewall(&docker, node_id).await?;
        self.ensure_volumes(&docker, node_id, spec).await?;
        let mut body = hardening::container_body(
            node_id,
            spec,
            spec_hash,
            cgroup_parent,
            &network,
            &self.opts.bounds,
        )?;
        if !spec.upstreams.is_empty() {
            let gateway = gateway.ok_or_else(|| RuntimeError::Container {
                container: object_name(node_id, &spec.id),
                reason: "the workload network has no gateway address for its upstreams".into(),
            })?;
            hardening::add_upstream_env(&mut body, spec, gateway);
        }
        let name = object_name(node_id, &spec.id);
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .map_err(|e| {
                self.fail(e, |status, message| match status {
                    404 => RuntimeError::ImageMissing {
                        image: spec.image.clone(),
                        reason: message,
                    },
                    // The engine refused the configuration (e.g. more CPUs than the host has).
                    400 => RuntimeError::Rejected {
                        workload: spec.id.clone(),
                        reason: message,
                    },
                    409 => RuntimeError::Container {
                        container: name.clone(),
                        reason: format!("name already in use: {message}"),
                    },
                    _ => RuntimeError::Container {
                        container: name.clone(),
                        reason: message,
                    },
                })
            })?;
        for w in &created.warnings {
            tracing::warn!(container = %name, warning = %w, "Docker warned at create");
        }
        Ok(created.id)
    }

    async fn start(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.forget(container_id);
        let docker = self.client().await?;
        docker
            .start_container(container_id, None::<StartContainerOptions>)
            .await
            .map_err(|e| self.container_fail(container_id, e))
    }

    async fn stop(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.forget(container_id);
        let docker = self.client().await?;
        let t = i32::try_from(self.opts.bounds.stop_timeout_secs).unwrap_or(i32::MAX);
        docker
            .stop_container(
                container_id,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| self.container_fail(container_id, e))
    }

    async fn remove(
        &self,
        node_id: &str,
        observed: &Observed,
        purge: bool,
    ) -> Result<(), RuntimeError> {
        self.forget(&observed.container_id);
        let docker = self.client().await?;
        let id = observed.container_id.as_str();
        let workload = observed.workload_id.as_str();
        let refuse = |what: String| RuntimeError::Rejected {
            workload: workload.to_string(),
            reason: format!("{what} is not labelled for node {node_id}; not removing it"),
        };
        match docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => {
                let labels = i.config.as_ref().and_then(|c| c.labels.as_ref());
                if !is_owned(labels, node_id, workload) {
                    return Err(refuse(format!("container {id}")));
                }
                docker
                    .remove_container(
                        id,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        }),
                    )
                    .await
                    .or_else(|e| match e {
                        BollardError::DockerResponseServerError {
                            status_code: 404, ..
                        } => Ok(()),
                        e => Err(self.container_fail(id, e)),
                    })?;
            }
            // Already gone: still clean up its network and volumes.
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.container_fail(id, e)),
        }

        if !purge {
            // A replaced container: its volumes hold the workload's data.
            return Ok(());
        }
        let name = object_name(node_id, workload);
        let other = |what: String| {
            let name = name.clone();
            move |status: u16, message: String| RuntimeError::Container {
                container: name,
                reason: format!("removing {what}: {message} (status {status})"),
            }
        };
        let networks = docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(label_filter(node_id, Some(workload))),
            }))
            .await
            .map_err(|e| self.fail(e, other("networks".into())))?;
        for net in networks {
            let Some(net_id) = net.id.as_deref() else {
                continue;
            };
            if !is_owned(net.labels.as_ref(), node_id, workload) {
                continue;
            }
            match docker.remove_network(net_id).await {
                Ok(())
                | Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.fail(e, other(format!("network {net_id}")))),
            }
        }
        self.sync_firewall(&docker, node_id).await?;
        let volumes = docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(label_filter(node_id, Some(workload))),
            }))
            .await
            .map_err(|e| self.fail(e, other("volumes".into())))?;
        for vol in volumes.volumes.unwrap_or_default() {
            if !is_owned(Some(&vol.labels), node_id, workload) {
                continue;
            }
            match docker
                .remove_volume(&vol.name, Some(RemoveVolumeOptions { force: false }))
                .await
            {
                Ok(())
                | Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(self.fail(e, other(format!("volume {}", vol.name)))),
            }
        }
        // Then the filesystems under them (unmounted and deleted: the workload is gone).
        let host = self.opts.volumes.clone();
        let (node, w) = (node_id.to_string(), workload.to_string());
        tokio::task::spawn_blocking(move || host.remove_workload(&node, &w))
            .await
            .map_err(|e| other("volume files".into())(0, e.to_string()))?
            .map_err(|e| other("volume files".into())(0, e.to_string()))?;
        Ok(())
    }

    async fn pause(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.forget(container_id);
        let docker = self.client().await?;
        match docker.pause_container(container_id).await {
            Ok(()) => {
                settle_paused(&docker, container_id, true).await;
                Ok(())
            }
            // Idempotent: pausing a paused container is what was wanted.
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("already paused") =>
            {
                Ok(())
            }
            Err(e) => Err(self.container_fail(container_id, e)),
        }
    }

    async fn unpause(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.forget(container_id);
        let docker = self.client().await?;
        match docker.unpause_container(container_id).await {
            Ok(()) => {
                settle_paused(&docker, container_id, false).await;
                Ok(())
            }
            Err(BollardError::DockerResponseServerError { message, .. })
                if message.contains("is not paused") =>
            {
                Ok(())
            }
            Err(e) => Err(self.container_fail(container_id, e)),
        }
    }
}

/// The host's address on a workload network (its bridge), from the network's IPAM.
pub(crate) fn network_gateway(net: &Network) -> Option<Ipv4Addr> {
    net.ipam
        .as_ref()?
        .config
        .as_ref()?
        .iter()
        .find_map(|c| c.gateway.as_deref()?.parse().ok())
}

/// The upstream listeners a workload network's label declares, at its gateway address.
fn upstream_ports(net: &Network) -> Option<firewall::UpstreamPorts> {
    let count: u16 = net
        .labels
        .as_ref()?
        .get(hardening::LABEL_UPSTREAMS)?
        .parse()
        .ok()?;
    (count > 0).then_some(firewall::UpstreamPorts {
        gateway: network_gateway(net)?,
        first: hardening::UPSTREAM_PORT_BASE,
        count: count.min(hardening::MAX_UPSTREAMS as u16),
    })
}

#[cfg(test)]
mod tests;
