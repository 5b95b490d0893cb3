//! Reading the engine's answers: bollard errors sorted by what the caller can do, label
//! filters and ownership checks, image references, container states.

use crate::runtime::{ContainerStatus, Health, LABEL_NODE, LABEL_WORKLOAD};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, HealthStatusEnum,
};
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use std::collections::HashMap;
use std::time::Duration;

/// A bollard error sorted by what the caller can do about it.
pub(super) enum Failure {
    /// No answer from the engine (socket missing, refused, timed out, cut off).
    Unreachable(String),
    /// The engine answered with an error status.
    Status(u16, String),
    /// Anything else (a stream error, a malformed answer).
    Other(String),
}

pub(super) fn classify(e: BollardError) -> Failure {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => Failure::Status(status_code, message),
        e @ (BollardError::SocketNotFoundError(_)
        | BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. }
        | BollardError::RequestTimeoutError) => Failure::Unreachable(e.to_string()),
        BollardError::DockerStreamError { error } => Failure::Other(error),
        e => Failure::Other(e.to_string()),
    }
}

pub(super) fn is_owned(
    labels: Option<&HashMap<String, String>>,
    node_id: &str,
    workload_id: &str,
) -> bool {
    labels.is_some_and(|l| {
        l.get(LABEL_NODE).map(String::as_str) == Some(node_id)
            && l.get(LABEL_WORKLOAD).map(String::as_str) == Some(workload_id)
    })
}

pub(super) fn label_filter(
    node_id: &str,
    workload_id: Option<&str>,
) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{LABEL_NODE}={node_id}")];
    if let Some(w) = workload_id {
        labels.push(format!("{LABEL_WORKLOAD}={w}"));
    }
    HashMap::from([("label".to_string(), labels)])
}

/// Splits an image reference into the pull API's `fromImage` and `tag` (a tag or a digest);
/// a reference with neither gets `latest` (an empty tag would pull every tag).
pub(super) fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
}

/// The engine's state of a container as ours.
/// What the container list says of a container that matters for its [`Observed`] state: its
/// state (`running`, `exited`, `paused`, ...) and, in the status text, its health. While this
/// stays the same, an inspect would say the same: exit codes, OOM kills and start times only
/// change with a change of state (the runtime restarts containers itself: Docker's restart
/// policy is `no`) or through the runtime's own actions, which drop what was seen.
///
/// [`Observed`]: super::super::Observed
pub(super) fn summary_key(summary: &ContainerSummary) -> String {
    let status = summary.status.as_deref().unwrap_or("");
    let health = ["(healthy)", "(unhealthy)", "(health: starting)"]
        .into_iter()
        .find(|h| status.contains(h))
        .unwrap_or("");
    format!("{:?}|{health}", summary.state)
}

pub(super) fn status_of(inspect: &ContainerInspectResponse) -> ContainerStatus {
    let Some(state) = inspect.state.as_ref() else {
        return ContainerStatus::Other("no state".to_string());
    };
    let health = match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
        _ => Health::Unknown,
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerStatus::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running { health },
        Some(ContainerStateStatusEnum::PAUSED) => ContainerStatus::Paused,
        Some(ContainerStateStatusEnum::EXITED) => ContainerStatus::Exited {
            code: state.exit_code.unwrap_or(-1),
            oom_killed: state.oom_killed.unwrap_or(false),
        },
        Some(other) => ContainerStatus::Other(other.to_string()),
        None => ContainerStatus::Other("unknown".to_string()),
    }
}

/// Waits (up to 2 s) until the engine's recorded state says `paused`: Docker 20.10 answers a
/// pause or unpause before its own state shows it, and a `list_owned` right after must not
/// report the old state (the reconciler would act on it again).
pub(super) async fn settle_paused(docker: &Docker, container_id: &str, paused: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let state = docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state);
        let is_paused = state.as_ref().and_then(|s| s.paused);
        let status = state.and_then(|s| s.status);
        let done = is_paused == Some(paused)
            && (status == Some(ContainerStateStatusEnum::PAUSED)) == paused;
        if done || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
