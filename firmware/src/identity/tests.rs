use super::*;
use std::os::unix::fs::PermissionsExt;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn registration(keys: &NodeKeys) -> Registration {
    Registration {
        node_id: "n-0123".into(),
        broker_urls: vec!["mqtt://127.0.0.1:1883".into()],
        heartbeat_secs: 10,
        fleet_key: IdentityKey::generate().public().to_string(),
        fleet_url: "https://127.0.0.1:8443".into(),
        identity_key: keys.identity.public().to_string(),
    }
}

#[test]
fn keys_are_made_once_0600_and_reused_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let first = load_or_generate(&data).unwrap();
    assert_eq!(mode(&data), 0o700);
    for f in [IDENTITY_FILE, ENCRYPTION_FILE] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let again = load_or_generate(&data).unwrap();
    assert_eq!(again.identity.public(), first.identity.public());
    assert_eq!(again.encryption.public(), first.encryption.public());
}

#[test]
fn a_loosened_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    load_or_generate(dir.path()).unwrap();
    let p = dir.path().join(IDENTITY_FILE);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_or_generate(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("identity.key") && err.contains("0600"),
        "{err}"
    );
}

#[test]
fn registration_round_trips_and_the_secret_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let keys = load_or_generate(dir.path()).unwrap();
    assert!(load_registration(dir.path(), &keys).unwrap().is_none());
    let reg = registration(&keys);
    // A secret long and odd enough that no random base64 key in the JSON
    // can contain it by chance (a two-letter secret once did).
    const SECRET: &str = "broker-secret.Never-In-The-JSON";
    save_registration(dir.path(), &reg, &BrokerSecret::new(SECRET)).unwrap();
    assert_eq!(mode(&dir.path().join(BROKER_SECRET_FILE)), 0o600);
    let (got, secret) = load_registration(dir.path(), &keys).unwrap().unwrap();
    assert_eq!(got, reg);
    assert_eq!(secret.expose(), SECRET);
    assert_eq!(format!("{secret:?}"), "BrokerSecret(<redacted>)");
    let json = std::fs::read_to_string(dir.path().join(REGISTRATION_FILE)).unwrap();
    assert!(!json.contains(SECRET), "{json}");
}

#[test]
fn swapped_keys_or_a_lost_secret_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let keys = load_or_generate(dir.path()).unwrap();
    save_registration(dir.path(), &registration(&keys), &BrokerSecret::new("pw")).unwrap();
    std::fs::remove_file(dir.path().join(BROKER_SECRET_FILE)).unwrap();
    let err = load_registration(dir.path(), &keys).unwrap_err();
    assert!(matches!(err, IdentityError::MissingSecret { .. }), "{err}");
    let other = NodeKeys {
        identity: IdentityKey::generate(),
        encryption: EncryptionKey::generate(),
    };
    let err = load_registration(dir.path(), &other).unwrap_err();
    assert!(matches!(err, IdentityError::KeyMismatch { .. }), "{err}");
}
