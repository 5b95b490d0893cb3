//! Registration over pinned HTTPS against a scripted fleet: retries, refusals, the pin, and
//! "a registered node never registers again".

mod common;

use common::fleet::{FakeFleet, Reply};
use lattice_wire::IdentityKey;
use latticed::config::{ProvisioningSource, Settings};
use latticed::daemon::{enroll, DaemonError};
use latticed::register::{RegisterError, RegisterOptions};
use latticed::shutdown::Shutdown;
use std::path::Path;
use std::time::{Duration, Instant};

fn settings(data_dir: &Path, fleet: &FakeFleet, token: &str) -> Settings {
    Settings {
        data_dir: data_dir.to_path_buf(),
        provisioning: Some(ProvisioningSource::Inline(Box::new(
            fleet.provisioning(token),
        ))),
        heartbeat_override: None,
        outbox_max_bytes: 1 << 20,
        log: "info".into(),
        runtime: latticed::config::RuntimeKind::None,
        envelope: latticed::cgroup::EnvelopeLimits::new(50, 1 << 30, 1024).unwrap(),
        disk_floor_bytes: 0,
        network_pool: Default::default(),
        owner: Default::default(),
        registry_proxy: None,
    }
}

fn fast(max_attempts: Option<u32>) -> RegisterOptions {
    RegisterOptions {
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(100),
        max_attempts,
    }
}

#[tokio::test]
async fn registers_through_server_errors_and_never_again() {
    let fleet = FakeFleet::start(
        vec![
            Reply::Raw(503, "starting".into()),
            Reply::Raw(502, String::new()),
            Reply::Register {
                node_id: "n-https".into(),
                broker_url: "mqtt://127.0.0.1:1883".into(),
                password: "pw-123".into(),
            },
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "tok-1");
    let e = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap();
    assert!(e.new);
    assert_eq!(e.registration.node_id, "n-https");
    assert_eq!(e.secret.expose(), "pw-123");
    assert_eq!(e.registration.fleet_key, fleet.key.public().to_string());
    assert_eq!(fleet.request_count(), 3);
    {
        let reqs = fleet.requests.lock().unwrap();
        assert_eq!(reqs[0].token, "tok-1");
        assert_eq!(reqs[0].identity_key, e.keys.identity.public().to_string());
        assert!(reqs[0].inventory.memory_bytes > 0);
    }

    // Restarted: same identity, no second registration (not even a request).
    let again = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap();
    assert!(!again.new);
    assert_eq!(again.registration, e.registration);
    assert_eq!(again.keys.identity.public(), e.keys.identity.public());
    assert_eq!(fleet.request_count(), 3);
}

#[tokio::test]
async fn a_client_error_is_final_and_reports_the_fleets_message() {
    let fleet = FakeFleet::start(
        vec![Reply::Raw(
            401,
            r#"{"error":"token_expired","message":"token expired"}"#.into(),
        )],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "old-token");
    let err = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap_err();
    let DaemonError::Register(RegisterError::Refused {
        status,
        code,
        message,
    }) = &err
    else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(
        (*status, code.as_str(), message.as_str()),
        (401, "token_expired", "token expired")
    );
    assert!(err.to_string().contains("token expired"), "{err}");
    assert!(
        !err.to_string().contains("old-token"),
        "the token must not be shown: {err}"
    );
    assert_eq!(fleet.request_count(), 1);
    assert!(!dir.path().join("registration.json").exists());
}

#[tokio::test]
async fn a_server_without_the_pinned_key_gets_nothing() {
    let fleet = FakeFleet::start(vec![], Some(IdentityKey::generate()));
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), &fleet, "tok");
    let err = enroll(&s, Instant::now(), &fast(Some(2)), &mut Shutdown::never())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DaemonError::Register(RegisterError::GaveUp { attempts: 2, .. })
        ),
        "{msg}"
    );
    assert!(msg.contains("not the pinned fleet key"), "{msg}");
    assert_eq!(fleet.request_count(), 0, "no request may reach an impostor");
}

#[tokio::test]
async fn an_unprovisioned_node_says_what_to_configure() {
    let fleet = FakeFleet::start(vec![], None);
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &fleet, "tok");
    s.provisioning = None;
    let err = enroll(&s, Instant::now(), &fast(None), &mut Shutdown::never())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--provisioning"), "{err}");
}
