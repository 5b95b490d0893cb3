//! Docker helpers shared by the tests that use the machine's real engine: the test image, a
//! test node that removes what carries its id (and its firewall chains) when dropped, and a
//! workload spec.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use lattice_wire::msg::{RestartPolicy, VolumeSpec, WorkloadClass, WorkloadSpec};
use latticed::firewall::{iptables::Iptables, Firewall};
use latticed::runtime::docker::{DockerOptions, DockerRuntime};
use latticed::runtime::{ContainerRuntime, ContainerStatus, Observed, RuntimeError, LABEL_NODE};
use latticed::volumes::VolumeHost;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SOCKET: &str = "/var/run/docker.sock";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("firmware/ has a parent")
        .to_path_buf()
}

pub fn run_test_images() {
    let script = repo_root().join("scripts/test-images");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed (run it by hand to see why):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The digest-pinned test image (`LATTICE_TEST_IMAGE` from the environment or
/// `build/test-images.env`, made by `scripts/test-images` when absent).
pub fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        if let Ok(image) = std::env::var("LATTICE_TEST_IMAGE") {
            return image;
        }
        let env_file = repo_root().join("build/test-images.env");
        if !env_file.exists() {
            run_test_images();
        }
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/test-images to build the test image",
                env_file.display()
            )
        });
        text.lines()
            .find_map(|l| l.strip_prefix("LATTICE_TEST_IMAGE="))
            .map(str::to_string)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no LATTICE_TEST_IMAGE; run scripts/test-images",
                    env_file.display()
                )
            })
    })
}

/// One test's node: a random id and cgroup parent, cleaned up on drop.
pub struct Node {
    pub id: String,
    pub cgroup_parent: String,
    pub rt: DockerRuntime,
    pub docker: Docker,
}

impl Node {
    pub async fn new(rt: &Env) -> Node {
        let id = format!("t{:08x}", rand::random::<u32>());
        let cgroup_parent = if rt.systemd_driver {
            format!("lattice-test-{id}.slice")
        } else {
            format!("/lattice-test-{id}")
        };
        Node {
            id,
            cgroup_parent,
            rt: runtime(),
            docker: rt.docker.clone(),
        }
    }

    pub async fn create(&self, spec: &WorkloadSpec) -> Result<String, RuntimeError> {
        self.rt
            .create(&self.id, spec, "spec-hash-1", &self.cgroup_parent)
            .await
    }

    pub async fn run(&self, spec: &WorkloadSpec) -> String {
        let id = self.create(spec).await.expect("create");
        self.rt.start(&id).await.expect("start");
        id
    }

    pub async fn observed(&self, container_id: &str) -> Observed {
        self.rt
            .list_owned(&self.id)
            .await
            .expect("list_owned")
            .into_iter()
            .find(|o| o.container_id == container_id)
            .unwrap_or_else(|| panic!("{container_id} not listed for node {}", self.id))
    }

    /// Polls `list_owned` until the container's status satisfies `done` (or panics after
    /// `secs`).
    pub async fn wait_for(
        &self,
        container_id: &str,
        secs: u64,
        done: impl Fn(&ContainerStatus) -> bool,
    ) -> Observed {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let o = self.observed(container_id).await;
            if done(&o.status) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "{container_id}: still {:?} after {secs} s",
                o.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn inspect(&self, container_id: &str) -> ContainerInspectResponse {
        self.docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
            .expect("inspect")
    }
}

/// `docker <list> --filter label=io.lattice.node=<node>`: the ids it prints.
pub fn labelled(list: &[&str], node_id: &str) -> Vec<String> {
    let filter = format!("label={LABEL_NODE}={node_id}");
    Command::new("docker")
        .args(list)
        .args(["--filter", &filter])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Node {
    /// Removes everything labelled with this node id (Docker CLI: no async in drop; retried,
    /// as killing a busy container can take a moment), then the cgroup parent directories
    /// Docker leaves behind.
    fn drop(&mut self) {
        for (list, rm) in [
            (&["ps", "-aq"][..], &["rm", "-f", "-v"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
            (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
        ] {
            for _ in 0..5 {
                let ids = labelled(list, &self.id);
                if ids.is_empty() {
                    break;
                }
                let _ = Command::new("docker").args(rm).args(&ids).output();
            }
            let left = labelled(list, &self.id);
            if !left.is_empty() {
                eprintln!(
                    "cleanup of node {}: `docker {list:?}` still lists {left:?}",
                    self.id
                );
            }
        }
        if let Err(e) = Iptables::new().clear(&self.id) {
            eprintln!("cleanup of node {}: firewall: {e}", self.id);
        }
        let host = VolumeHost::new(volumes_dir(), 0);
        if let Ok(workloads) = std::fs::read_dir(volumes_dir().join(&self.id)) {
            for w in workloads.flatten() {
                let w = w.file_name().to_string_lossy().into_owned();
                if let Err(e) = host.remove_workload(&self.id, &w) {
                    eprintln!("cleanup of node {}: volumes of {w}: {e}", self.id);
                }
            }
        }
        let _ = std::fs::remove_dir(volumes_dir().join(&self.id));
        let rel = self.cgroup_parent.trim_start_matches('/');
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for d in dirs.flatten() {
                let _ = std::fs::remove_dir(d.path().join(rel));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(rel));
    }
}

pub struct Env {
    pub docker: Docker,
    pub systemd_driver: bool,
}

pub fn runtime() -> DockerRuntime {
    let mut opts = DockerOptions {
        socket: SOCKET.into(),
        ..Default::default()
    };
    opts.bounds.stop_timeout_secs = 1;
    opts.volumes = VolumeHost::new(volumes_dir(), 0);
    DockerRuntime::new(opts)
}

/// Where the tests' sized volumes live (per node id inside).
pub fn volumes_dir() -> PathBuf {
    std::env::temp_dir().join("lattice-test-volumes")
}

/// The engine and the test image, or `None` (skip) when there is no Docker socket.
pub async fn env() -> Option<Env> {
    if !Path::new(SOCKET).exists() {
        eprintln!("SKIPPED: {SOCKET} is absent (no Docker engine on this machine)");
        return None;
    }
    let rt = runtime();
    let docker = rt.client().await.expect("the Docker engine answers");
    let info = docker.info().await.expect("docker info");
    let systemd_driver = info
        .cgroup_driver
        .is_some_and(|d| d.to_string() == "systemd");
    let image = test_image();
    if let Err(e) = rt.ensure_image(image).await {
        // The registry may be gone (machine restarted): the script restarts it.
        eprintln!("ensure_image({image}) failed ({e}); running scripts/test-images");
        run_test_images();
        rt.ensure_image(image)
            .await
            .expect("test image after scripts/test-images");
    }
    Some(Env {
        docker,
        systemd_driver,
    })
}

pub fn spec(id: &str, script: &str) -> WorkloadSpec {
    WorkloadSpec {
        id: id.into(),
        name: id.into(),
        image: test_image().into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("GREETING".into(), "hello".into())],
        volumes: vec![],
        cpu_millis: 250,
        memory_bytes: 64 << 20,
        pids_max: 64,
        health: None,
        restart: RestartPolicy::Always,
        class: WorkloadClass::AlwaysOn,
        egress: false,
        capabilities: vec![],
        ports: vec![],
        upstreams: Vec::new(),
    }
}

pub fn data_volume() -> VolumeSpec {
    VolumeSpec {
        name: "data".into(),
        mount_path: "/data".into(),
        size_bytes: 8 << 20,
    }
}
