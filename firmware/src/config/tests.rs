use super::*;
use lattice_wire::IdentityKey;

fn provisioning() -> String {
    Provisioning {
        url: "https://127.0.0.1:8443".into(),
        token: "t-1.secret".into(),
        fleet_key: IdentityKey::generate().public().to_string(),
    }
    .encode()
}

#[test]
fn defaults_round_trip_through_the_printed_config() {
    let printed = Config::default_toml();
    assert_eq!(Config::parse(&printed).unwrap(), Config::default());
    let s = Config::default().validate().unwrap();
    assert_eq!(s.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert_eq!(s.outbox_max_bytes, 8 * 1024 * 1024);
    assert_eq!(s.provisioning, None);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let err = Config::parse("data_dir = \"/x\"\nheartbeat = 5\n").unwrap_err();
    assert!(err.contains("heartbeat"), "{err}");
}

#[test]
fn every_problem_is_listed_with_its_key() {
    let c = Config::parse(
        "data_dir = \"\"\nprovisioning = \"nope\"\nheartbeat_secs = 0\n\
         outbox_max_bytes = 10\nlog = \"latticed=loud\"\n\
         workload_network_pool = \"8.8.0.0/16\"\n",
    )
    .unwrap();
    let err = c.validate().unwrap_err().to_string();
    for key in [
        "data_dir:",
        "provisioning:",
        "heartbeat_secs:",
        "outbox_max_bytes:",
        "log:",
        "workload_network_pool: 8.8.0.0/16 is not inside a private range",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn the_registry_proxy_is_on_loopback_or_off() {
    let s = Config::default().validate().unwrap();
    assert_eq!(s.registry_proxy, Some("127.0.0.1:5001".parse().unwrap()));
    let with = |v: &str| {
        Config::parse(&format!("registry_proxy = \"{v}\"\n"))
            .unwrap()
            .validate()
    };
    assert_eq!(with("").unwrap().registry_proxy, None);
    assert_eq!(
        with("[::1]:5002").unwrap().registry_proxy,
        Some("[::1]:5002".parse().unwrap())
    );
    for bad in [
        "0.0.0.0:5001",
        "192.168.1.10:5001",
        "localhost:5001",
        "5001",
    ] {
        let err = with(bad).unwrap_err().to_string();
        assert!(err.contains("registry_proxy:"), "{bad}: {err}");
    }
}

#[test]
fn both_provisioning_sources_is_an_error() {
    let c = Config {
        provisioning: Some(provisioning()),
        provisioning_file: Some("/boot/p".into()),
        ..Config::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("provisioning, provisioning_file"), "{err}");
}

#[test]
fn command_line_overrides_the_file() {
    let mut c = Config::parse("data_dir = \"/a\"\nprovisioning_file = \"/boot/p\"\n").unwrap();
    let p = provisioning();
    c.apply(Overrides {
        data_dir: Some("/b".into()),
        provisioning: Some(p.clone()),
        provisioning_file: None,
    });
    let s = c.validate().unwrap();
    assert_eq!(s.data_dir, Path::new("/b"));
    let Some(ProvisioningSource::Inline(got)) = s.provisioning else {
        panic!("inline provisioning expected");
    };
    assert_eq!(*got, Provisioning::parse(&p).unwrap());
}

#[test]
fn provisioning_file_is_read_when_needed_and_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provisioning");
    let src = ProvisioningSource::File(path.clone());
    let err = src.load().unwrap_err().to_string();
    assert!(err.starts_with("provisioning_file"), "{err}");
    std::fs::write(&path, format!("{}\n", provisioning())).unwrap();
    assert!(src.load().is_ok());
    std::fs::write(&path, "garbage").unwrap();
    let err = src.load().unwrap_err().to_string();
    assert!(err.contains("lattice1:"), "{err}");
}

#[test]
fn debug_never_shows_the_token() {
    let p = provisioning();
    let c = Config {
        provisioning: Some(p.clone()),
        ..Config::default()
    };
    assert!(!format!("{c:?}").contains(&p));
    let s = c.validate().unwrap();
    assert!(!format!("{s:?}").contains("t-1.secret"), "{s:?}");
}
