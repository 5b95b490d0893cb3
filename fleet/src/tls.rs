//! TLS for the fleet's HTTPS API and its MQTT broker, keyed by the fleet identity key.
//!
//! Trust model: a node's provisioning string carries the fleet's Ed25519 identity public key,
//! and the node trusts a TLS server only if the server's certificate carries exactly that key
//! (see `lattice_wire::pin`). So the fleet's certificate is self-signed *with the identity key
//! itself*: no CA, no trust-on-first-use, nothing to distribute beyond the provisioning string.
//! The certificate's names and validity are informational (for curl, browsers, mosquitto); what
//! a node trusts is the key, and the TLS handshake proves the server holds its secret half.
//! Operator-supplied certificates ([`from_pem_files`]) are accepted by pinned nodes only when
//! their key is the fleet identity key (e.g. a CA-issued certificate for that key's CSR).

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File name of the certificate written by [`write_pem_files`].
pub const CERT_FILE: &str = "fleet-cert.pem";
/// File name of the private key written by [`write_pem_files`] (mode 0600).
pub const KEY_FILE: &str = "fleet-key.pem";

/// Names every fleet certificate covers, whatever else is asked for.
const ALWAYS_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("loading the fleet identity key into the certificate generator failed")]
    IdentityKey(#[source] rcgen::Error),
    #[error("the certificate generator derived a public key that is not the fleet identity key")]
    KeyMismatch,
    #[error("certificate name {name:?} is neither an IP address nor a valid DNS name")]
    InvalidName {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing the fleet's self-signed certificate failed")]
    Certificate(#[source] rcgen::Error),
    #[error("parsing the {what} PEM failed")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("reading {what} from {path} failed")]
    ReadPem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no CERTIFICATE block")]
    NoCertificates { path: PathBuf },
    #[error("building the TLS server configuration failed")]
    ServerConfig(#[source] rustls::Error),
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The fleet's TLS certificate and key, in PEM (for files) and the certificate in DER.
#[derive(Clone)]
pub struct FleetTls {
    pub cert_pem: String,
    /// PKCS#8 "PRIVATE KEY" PEM of the fleet identity key. Secret: never log it.
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

impl fmt::Debug for FleetTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetTls")
            .field("cert_der", &format_args!("{} bytes", self.cert_der.len()))
            .field("key_pem", &"<secret>")
            .finish()
    }
}

/// The subject alternative names for `names` plus [`ALWAYS_NAMES`], deduplicated (IP addresses
/// by value, DNS names case-insensitively), in order of first appearance.
fn subject_alt_names(names: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut sans: Vec<SanType> = Vec::new();
    for name in ALWAYS_NAMES
        .iter()
        .copied()
        .chain(names.iter().map(String::as_str))
    {
        let name = name.trim();
        if name.is_empty() {
            continue;
        }
        // "[::1]" as written in URLs.
        let bare = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        let san = match bare.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(Ia5String::try_from(name.to_ascii_lowercase()).map_err(
                |source| TlsError::InvalidName {
                    name: name.to_owned(),
                    source,
                },
            )?),
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    // Positive INTEGER, never zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Self-signed certificate whose key IS the fleet identity key (Ed25519), for the given DNS
/// names / IPs; "localhost", "127.0.0.1" and "::1" are always included.
///
/// The serial number is random, so each call gives a distinct certificate for the same key
/// (browsers refuse two different certificates with the same issuer and serial); nodes do not
/// care, they pin the key.
pub fn self_signed(
    identity: &lattice_wire::IdentityKey,
    names: &[String],
) -> Result<FleetTls, TlsError> {
    self_signed_with_chain(
        identity,
        names,
        &lattice_wire::rotation::RotationChain::default(),
    )
}

/// [`self_signed`] carrying the fleet's key rotation chain (when it has one) in the
/// non-critical extension `lattice_wire::pin::ROTATION_EXTENSION_OID`: a node that pinned an
/// earlier fleet key walks it to this certificate's key.
pub fn self_signed_with_chain(
    identity: &lattice_wire::IdentityKey,
    names: &[String],
    chain: &lattice_wire::rotation::RotationChain,
) -> Result<FleetTls, TlsError> {
    let pkcs8 = PrivatePkcs8KeyDer::from(identity.to_pkcs8_der());
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(TlsError::IdentityKey)?;
    if key_pair.public_key_raw() != identity.public().to_bytes().as_slice() {
        return Err(TlsError::KeyMismatch);
    }

    let mut params = CertificateParams::default();
    params.subject_alt_names = subject_alt_names(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Lattice");
    dn.push(
        DnType::CommonName,
        format!("Lattice fleet {}", identity.public()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(random_serial());
    if !chain.statements.is_empty() {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                lattice_wire::pin::ROTATION_EXTENSION_OID,
                chain.encode(),
            ));
    }

    let cert = params
        .self_signed(&key_pair)
        .map_err(TlsError::Certificate)?;
    Ok(FleetTls {
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
        cert_der: cert.der().to_vec(),
    })
}

/// A rustls server configuration (ring provider, TLS 1.2 + 1.3, ALPN h2 + http/1.1 as
/// axum-server expects) serving `certs` with `key`. Fails if the key does not match the
/// end-entity certificate.
fn build_server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    // Always an explicit provider: both ring and aws-lc-rs are linked into this workspace, so
    // there is no unambiguous process default (`ServerConfig::builder()` would panic).
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::ServerConfig)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(TlsError::ServerConfig)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// rustls ServerConfig for axum-server (`RustlsConfig::from_config`) from a [`FleetTls`].
pub fn server_config(tls: &FleetTls) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = CertificateDer::from(tls.cert_der.clone());
    let key =
        PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|source| TlsError::Pem {
            what: "fleet private key",
            source,
        })?;
    build_server_config(vec![cert], key).map(Arc::new)
}

/// rustls ServerConfig from operator-supplied PEM files: `cert` holds the end-entity
/// certificate first, then any intermediates; `key` holds its private key (PKCS#8, PKCS#1 or
/// SEC1). Pinned nodes accept it only if the certificate's key is the fleet identity key.
pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadPem {
            what: "certificates",
            path: cert.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates {
            path: cert.to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadPem {
        what: "private key",
        path: key.to_owned(),
        source,
    })?;
    build_server_config(certs, key_der)
}

/// Writes `contents` to `path` through a temporary file in the same directory, with `mode`
/// set before any byte is written, then renames it into place.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let fail = |p: &Path| {
        let p = p.to_owned();
        move |source| TlsError::Write { path: p, source }
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(&tmp).map_err(fail(&tmp))?;
    #[cfg(unix)]
    {
        // `mode` only applies to newly created files; a leftover temp file keeps its own.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(fail(&tmp))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(fail(&tmp))?;
    file.sync_all().map_err(fail(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail(path))
}

/// Writes the certificate ([`CERT_FILE`], mode 0644) and key ([`KEY_FILE`], mode 0600) into
/// `dir` (created if missing), for servers that load them from files (rumqttd). Returns
/// `(cert_path, key_path)`.
pub fn write_pem_files(tls: &FleetTls, dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    write_file(&key_path, tls.key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, tls.cert_pem.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_wire::IdentityKey;

    fn ed25519_spki(key: &IdentityKey) -> Vec<u8> {
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(&key.public().to_bytes());
        spki
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn count(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .filter(|w| *w == needle)
            .count()
    }

    fn dns_san(name: &str) -> Vec<u8> {
        let mut v = vec![0x82, name.len() as u8];
        v.extend_from_slice(name.as_bytes());
        v
    }

    #[test]
    fn certificate_carries_the_identity_key() {
        let id = IdentityKey::generate();
        let tls = self_signed(&id, &[]).unwrap();
        assert!(contains(&tls.cert_der, &ed25519_spki(&id)));
        assert!(tls.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let other = IdentityKey::generate();
        assert!(!contains(&tls.cert_der, &ed25519_spki(&other)));
        // The PEM key is the identity key itself.
        let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).unwrap();
        assert_eq!(key.secret_der(), id.to_pkcs8_der().as_slice());
    }

    #[test]
    fn always_covers_localhost_and_deduplicates_names() {
        let id = IdentityKey::generate();
        let names = [
            "fleet.example",
            "LOCALHOST",
            " localhost ",
            "0:0:0:0:0:0:0:1",
            "[::1]",
            "10.1.2.3",
            "",
        ]
        .map(String::from);
        let tls = self_signed(&id, &names).unwrap();
        let der = &tls.cert_der;
        assert_eq!(count(der, &dns_san("localhost")), 1);
        assert_eq!(count(der, &dns_san("fleet.example")), 1);
        assert_eq!(count(der, &[0x87, 4, 127, 0, 0, 1]), 1);
        let mut v6 = vec![0x87, 16];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(count(der, &v6), 1);
        assert_eq!(count(der, &[0x87, 4, 10, 1, 2, 3]), 1);

        let plain = self_signed(&id, &[]).unwrap();
        assert_eq!(count(&plain.cert_der, &dns_san("localhost")), 1);
        assert_eq!(count(&plain.cert_der, &[0x87, 4, 127, 0, 0, 1]), 1);
    }

    #[test]
    fn each_certificate_gets_a_fresh_serial() {
        let id = IdentityKey::generate();
        let a = self_signed(&id, &[]).unwrap();
        let b = self_signed(&id, &[]).unwrap();
        assert_ne!(a.cert_der, b.cert_der);
    }

    #[test]
    fn invalid_names_are_named() {
        let id = IdentityKey::generate();
        let e = self_signed(&id, &["flöte.example".to_owned()]).unwrap_err();
        assert!(
            matches!(&e, TlsError::InvalidName { name, .. } if name == "flöte.example"),
            "{e}"
        );
        assert!(e.to_string().contains("flöte.example"), "{e}");
    }

    #[test]
    fn server_config_uses_the_certificate_and_alpn() {
        let tls = self_signed(&IdentityKey::generate(), &[]).unwrap();
        let config = server_config(&tls).unwrap();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn server_config_refuses_a_key_that_is_not_the_certificates() {
        let mut tls = self_signed(&IdentityKey::generate(), &[]).unwrap();
        tls.key_pem = self_signed(&IdentityKey::generate(), &[]).unwrap().key_pem;
        assert!(matches!(
            server_config(&tls),
            Err(TlsError::ServerConfig(_))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let tls = self_signed(&IdentityKey::generate(), &[]).unwrap();
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(&tls.key_pem), "{shown}");
    }

    #[cfg(unix)]
    #[test]
    fn pem_files_round_trip_with_a_private_key_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = self_signed(&IdentityKey::generate(), &[]).unwrap();
        let sub = dir.path().join("tls");
        // A leftover temp file with loose permissions must not loosen the key file.
        std::fs::create_dir_all(&sub).unwrap();
        let stale = sub.join(format!("{KEY_FILE}.tmp"));
        std::fs::write(&stale, "stale").unwrap();
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();

        let (cert, key) = write_pem_files(&tls, &sub).unwrap();
        assert_eq!(cert, sub.join(CERT_FILE));
        assert_eq!(key, sub.join(KEY_FILE));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        assert!(!stale.exists());
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), tls.cert_pem);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), tls.key_pem);
        from_pem_files(&cert, &key).unwrap();

        // Writing again over existing files works.
        write_pem_files(&tls, &sub).unwrap();
        assert_eq!(mode(&key), 0o600);
    }

    #[test]
    fn pem_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let tls = self_signed(&IdentityKey::generate(), &[]).unwrap();
        let (cert, key) = write_pem_files(&tls, dir.path()).unwrap();

        let e = from_pem_files(&missing, &key).unwrap_err();
        assert!(matches!(e, TlsError::ReadPem { .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = from_pem_files(&cert, &missing).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");

        // The key file holds no certificate.
        let e = from_pem_files(&key, &key).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificates { .. }), "{e}");
        // The certificate file holds no key.
        let e = from_pem_files(&cert, &cert).unwrap_err();
        assert!(matches!(e, TlsError::ReadPem { .. }), "{e}");
    }

    #[test]
    fn the_certificate_carries_the_rotation_chain_nodes_follow() {
        use lattice_wire::pin::{
            certificate_rotation_chain, try_pinned_client_config_with, MemoryPin, PinHolder,
        };
        use lattice_wire::rotation::{FleetPin, RotationChain};
        let k0 = IdentityKey::generate();
        let k1 = IdentityKey::generate();
        let chain = RotationChain::default().extend(&k0, &k1.public(), 1);
        let tls = self_signed_with_chain(&k1, &[], &chain).unwrap();
        assert_eq!(
            certificate_rotation_chain(&tls.cert_der).unwrap().unwrap(),
            chain
        );
        assert!(certificate_rotation_chain(&self_signed(&k1, &[]).unwrap().cert_der).is_none());
        // A client pinned at k0 accepts a server with k1 and this certificate, and moves on.
        let holder = std::sync::Arc::new(MemoryPin::new(FleetPin::provisioned(k0.public())));
        let client = try_pinned_client_config_with(holder.clone()).unwrap();
        let server = server_config(&tls).unwrap();
        let mut c = rustls::ClientConnection::new(client, "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..8 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets().unwrap();
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets().unwrap();
        }
        assert!(!c.is_handshaking());
        assert_eq!(
            holder.pin(),
            FleetPin {
                key: k1.public(),
                epoch: 1
            }
        );
    }
}
