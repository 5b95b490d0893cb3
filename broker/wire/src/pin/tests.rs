use super::*;
use crate::rotation::RotationStatement;
use crate::IdentityKey;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConnection, ServerConfig, ServerConnection, SupportedProtocolVersion};

// A tiny DER writer, enough to make test certificates without a certificate generator.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

const OID_ED25519: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// A v3 certificate with subject public key `spki`, valid `from`..`until` (GeneralizedTime),
/// signed (Ed25519) by `signer`.
fn cert(spki: &[u8], signer: &IdentityKey, from: &str, until: &str) -> CertificateDer<'static> {
    cert_ext(spki, signer, from, until, None)
}

/// [`cert`] with one extension (OID components, value) in a v3 extensions block.
fn cert_ext(
    spki: &[u8],
    signer: &IdentityKey,
    from: &str,
    until: &str,
    ext: Option<(&[u64], &[u8])>,
) -> CertificateDer<'static> {
    let alg = seq(&[OID_ED25519.to_vec()]);
    let name = seq(&[der(
        0x31,
        &seq(&[
            vec![0x06, 0x03, 0x55, 0x04, 0x03],
            der(0x0c, b"not.the.fleet"),
        ]),
    )]);
    let validity = seq(&[der(0x18, from.as_bytes()), der(0x18, until.as_bytes())]);
    let tbs = seq(&[
        der(0xa0, &der(0x02, &[2])),
        der(0x02, &[0x2a]),
        alg.clone(),
        name.clone(),
        validity,
        name,
        spki.to_vec(),
    ]);
    let tbs = match ext {
        None => tbs,
        Some((oid, value)) => {
            // Unwrap the SEQUENCE, append [3] { SEQUENCE { SEQUENCE { OID, OCTET STRING } } }.
            let mut parts = tbs[tbs.len() - tbs_len(&tbs)..].to_vec();
            let other = seq(&[
                der(0x06, &[0x55, 0x1d, 0x0e]),
                der(0x04, &der(0x04, &[1, 2, 3])),
            ]);
            let ours = seq(&[der(0x06, &oid_content(oid)), der(0x04, value)]);
            parts.extend(der(0xa3, &seq(&[other, ours])));
            der(0x30, &parts)
        }
    };
    let mut signature = vec![0];
    signature.extend(signer.sign(&tbs));
    CertificateDer::from(seq(&[tbs, alg, der(0x03, &signature)]))
}

/// Length of a SEQUENCE's content (the test writer's own output).
fn tbs_len(tbs: &[u8]) -> usize {
    let (_, content, _) = tlv(tbs).unwrap();
    content.len()
}

fn cert_for(key: &IdentityKey) -> CertificateDer<'static> {
    cert(
        &ed25519_spki_der(&key.public()),
        key,
        "20250101000000Z",
        "40960101000000Z",
    )
}

fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A server presenting `cert` and signing the handshake with `key` (which need not match).
fn server(
    cert: CertificateDer<'static>,
    key: &IdentityKey,
    version: &'static SupportedProtocolVersion,
) -> Arc<ServerConfig> {
    let provider = ring();
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(key.to_pkcs8_der().into()))
        .unwrap();
    let certified = Arc::new(CertifiedKey::new(vec![cert], signer));
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(certified))),
    )
}

/// Runs a TLS handshake in memory; Err is the client's error (a server-side failure, which
/// none of these tests expect, panics).
fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Result<(), rustls::Error> {
    let name = ServerName::try_from("fleet.invalid").unwrap();
    let mut c = ClientConnection::new(client, name).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..16 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
        }
        if let Err(e) = s.process_new_packets() {
            panic!("the server failed first: {e:?}");
        }

        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = buf.as_slice();
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
        }
        c.process_new_packets()?;

        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

fn rejection(e: &rustls::Error) -> Option<&PinRejected> {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PinRejected>()
        }
        _ => None,
    }
}

const VERSIONS: [&SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];

#[test]
fn accepts_the_pinned_key_over_tls13_and_tls12() {
    let fleet = IdentityKey::generate();
    for version in VERSIONS {
        let server = server(cert_for(&fleet), &fleet, version);
        handshake(pinned_client_config(&fleet.public()), server)
            .unwrap_or_else(|e| panic!("{version:?}: {e:?}"));
    }
}

#[test]
fn refuses_a_server_with_another_key() {
    let fleet = IdentityKey::generate();
    let other = IdentityKey::generate();
    for version in VERSIONS {
        let server = server(cert_for(&other), &other, version);
        let e = handshake(pinned_client_config(&fleet.public()), server).unwrap_err();
        match rejection(&e) {
            Some(PinRejected::OtherKey { expected, got }) => {
                assert_eq!(*expected, fleet.public());
                assert_eq!(*got, other.public().to_string());
            }
            r => panic!("{version:?}: {e:?} / {r:?}"),
        }
        assert!(e.to_string().contains("pinned fleet key"), "{e}");
    }
}

#[test]
fn refuses_an_impostor_presenting_the_fleet_certificate() {
    // The fleet's certificate is public; without the fleet's secret key the handshake
    // signature cannot verify.
    let fleet = IdentityKey::generate();
    let impostor = IdentityKey::generate();
    for version in VERSIONS {
        let server = server(cert_for(&fleet), &impostor, version);
        let e = handshake(pinned_client_config(&fleet.public()), server).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::BadSignature)
            ),
            "{version:?}: {e:?}"
        );
    }
}

#[test]
fn names_dates_and_issuer_are_not_what_is_trusted() {
    let fleet = IdentityKey::generate();
    let other = IdentityKey::generate();
    let verifier = PinnedFleetKey::new(fleet.public(), &ring());
    // Expired long ago, for another name, "signed" by someone else: the key is what counts.
    let old = cert(
        &ed25519_spki_der(&fleet.public()),
        &other,
        "20000101000000Z",
        "20010101000000Z",
    );
    let name = ServerName::try_from("example.com").unwrap();
    verifier
        .verify_server_cert(&old, &[], &name, &[], UnixTime::now())
        .unwrap();
}

#[test]
fn refuses_non_ed25519_keys_and_garbage() {
    let fleet = IdentityKey::generate();
    let verifier = PinnedFleetKey::new(fleet.public(), &ring());
    let name = ServerName::try_from("fleet.invalid").unwrap();

    // An ECDSA P-256 key (id-ecPublicKey, prime256v1) that happens to end in the fleet key.
    let mut point = vec![0x00, 0x04];
    point.extend_from_slice(&[7; 32]);
    point.extend_from_slice(&fleet.public().to_bytes());
    let ec_spki = seq(&[
        seq(&[
            vec![0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01],
            vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        ]),
        der(0x03, &point),
    ]);
    let ec = cert(&ec_spki, &fleet, "20250101000000Z", "40960101000000Z");
    let e = verifier
        .verify_server_cert(&ec, &[], &name, &[], UnixTime::now())
        .unwrap_err();
    assert!(
        matches!(rejection(&e), Some(PinRejected::NotEd25519 { .. })),
        "{e:?}"
    );

    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let e = verifier
        .verify_server_cert(&garbage, &[], &name, &[], UnixTime::now())
        .unwrap_err();
    assert_eq!(
        e,
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
    );
}

#[test]
fn spki_matches_rfc_8410() {
    let key = IdentityKey::from_bytes(&[1; 32]).unwrap();
    let spki = ed25519_spki_der(&key.public());
    // RFC 8410 section 4: 302a300506032b6570032100 || key.
    assert_eq!(hex::encode(&spki[..12]), "302a300506032b6570032100");
    assert_eq!(spki[12..], key.public().to_bytes());
}

#[test]
fn client_config_has_no_alpn_and_ring_signature_schemes() {
    let fleet = IdentityKey::generate();
    let config = pinned_client_config(&fleet.public());
    assert!(config.alpn_protocols.is_empty());
    let verifier = PinnedFleetKey::new(fleet.public(), &ring());
    assert!(verifier
        .supported_verify_schemes()
        .contains(&SignatureScheme::ED25519));
    assert_eq!(verifier.key(), fleet.public());
}

#[tokio::test]
async fn http_client_refuses_plain_http() {
    let fleet = IdentityKey::generate();
    let client = pinned_http_client(&fleet.public(), Duration::from_secs(5)).unwrap();
    // Port 9 (discard) on localhost: the request must fail before any connection attempt.
    let e = client.get("http://127.0.0.1:9/").send().await.unwrap_err();
    assert!(e.is_builder(), "{e:?}");
}

/// A certificate for `key` carrying `chain` bytes in the rotation extension.
fn cert_with_chain(key: &IdentityKey, chain: &[u8]) -> CertificateDer<'static> {
    cert_ext(
        &ed25519_spki_der(&key.public()),
        key,
        "20250101000000Z",
        "40960101000000Z",
        Some((ROTATION_EXTENSION_OID, chain)),
    )
}

/// A holder that records refusals and may refuse to save.
#[derive(Debug)]
struct Recording {
    pin: MemoryPin,
    fail_saving: bool,
    refusals: Mutex<Vec<String>>,
}

impl Recording {
    fn new(key: IdentityPublic, fail_saving: bool) -> Arc<Recording> {
        Arc::new(Recording {
            pin: MemoryPin::new(FleetPin::provisioned(key)),
            fail_saving,
            refusals: Mutex::new(Vec::new()),
        })
    }
}

impl PinHolder for Recording {
    fn pin(&self) -> FleetPin {
        self.pin.pin()
    }
    fn adopt(&self, from: FleetPin, to: FleetPin) -> Result<(), String> {
        if self.fail_saving {
            return Err("disk full".into());
        }
        self.pin.adopt(from, to)
    }
    fn refused(&self, _presented: &IdentityPublic, reason: &str) {
        self.refusals.lock().unwrap().push(reason.to_owned());
    }
}

#[test]
fn oids_encode_as_der() {
    assert_eq!(oid_content(&[1, 3, 101, 112]), vec![0x2b, 0x65, 0x70]);
    assert_eq!(
        oid_content(&[1, 2, 840, 113549]),
        vec![0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]
    );
}

#[test]
fn finds_the_rotation_extension_and_nothing_in_garbage() {
    let k = IdentityKey::generate();
    let c = cert_with_chain(&k, b"chain bytes");
    assert_eq!(
        certificate_extension(c.as_ref(), ROTATION_EXTENSION_OID),
        Some(b"chain bytes".as_slice())
    );
    assert_eq!(
        certificate_extension(cert_for(&k).as_ref(), ROTATION_EXTENSION_OID),
        None
    );
    for garbage in [
        &[][..],
        &[0x30],
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
        &[0x30, 0x02, 0x30],
    ] {
        assert_eq!(certificate_extension(garbage, ROTATION_EXTENSION_OID), None);
    }
    // Every truncation of a real certificate is handled without panicking.
    for n in 0..c.as_ref().len() {
        let _ = certificate_extension(&c.as_ref()[..n], ROTATION_EXTENSION_OID);
    }
}

#[test]
fn follows_a_rotation_signed_by_the_pinned_key_and_pins_the_new_key() {
    let k0 = IdentityKey::generate();
    let k1 = IdentityKey::generate();
    let k2 = IdentityKey::generate();
    let chain = RotationChain::default()
        .extend(&k0, &k1.public(), 1)
        .extend(&k1, &k2.public(), 2);
    for version in VERSIONS {
        let holder = Recording::new(k0.public(), false);
        let config = try_pinned_client_config_with(holder.clone()).unwrap();
        let server2 = server(cert_with_chain(&k2, &chain.encode()), &k2, version);
        handshake(config.clone(), server2.clone()).unwrap_or_else(|e| panic!("{version:?}: {e:?}"));
        assert_eq!(
            holder.pin(),
            FleetPin {
                key: k2.public(),
                epoch: 2
            }
        );
        // From now on the new key is what is pinned, and the retired ones are refused.
        handshake(config.clone(), server2).unwrap();
        for old in [&k0, &k1] {
            let e = handshake(config.clone(), server(cert_for(old), old, version)).unwrap_err();
            assert!(
                matches!(rejection(&e), Some(PinRejected::OtherKey { .. })),
                "{e:?}"
            );
        }
        assert!(holder.refusals.lock().unwrap().is_empty());
    }
}

#[test]
fn refuses_a_forged_rotation_and_keeps_the_pin() {
    let k0 = IdentityKey::generate();
    let attacker = IdentityKey::generate();
    // "K0 → attacker", signed by the attacker.
    let mut forged = RotationStatement::sign(&attacker, &attacker.public(), 1, 0);
    forged.old_key = k0.public();
    let chain = RotationChain {
        statements: vec![forged],
    };
    let holder = Recording::new(k0.public(), false);
    let config = try_pinned_client_config_with(holder.clone()).unwrap();
    let e = handshake(
        config,
        server(
            cert_with_chain(&attacker, &chain.encode()),
            &attacker,
            &rustls::version::TLS13,
        ),
    )
    .unwrap_err();
    match rejection(&e) {
        Some(PinRejected::RotationRefused { reason, got, .. }) => {
            assert_eq!(*reason, "bad_signature");
            assert_eq!(*got, attacker.public());
        }
        r => panic!("{e:?} / {r:?}"),
    }
    assert_eq!(holder.pin(), FleetPin::provisioned(k0.public()));
    assert_eq!(holder.refusals.lock().unwrap().len(), 1);

    // A genuine chain of the attacker's own keys leads nowhere from K0: just another key.
    let other = IdentityKey::generate();
    let own = RotationChain::default().extend(&attacker, &other.public(), 0);
    let holder = Recording::new(k0.public(), false);
    let e = handshake(
        try_pinned_client_config_with(holder.clone()).unwrap(),
        server(
            cert_with_chain(&other, &own.encode()),
            &other,
            &rustls::version::TLS13,
        ),
    )
    .unwrap_err();
    assert!(
        matches!(rejection(&e), Some(PinRejected::OtherKey { .. })),
        "{e:?}"
    );
    assert_eq!(holder.pin(), FleetPin::provisioned(k0.public()));
}

#[test]
fn refuses_a_corrupt_chain_and_an_unsaved_pin() {
    let k0 = IdentityKey::generate();
    let k1 = IdentityKey::generate();
    let holder = Recording::new(k0.public(), false);
    let e = handshake(
        try_pinned_client_config_with(holder.clone()).unwrap(),
        server(
            cert_with_chain(&k1, b"\xff\xff garbage"),
            &k1,
            &rustls::version::TLS13,
        ),
    )
    .unwrap_err();
    assert!(
        matches!(
            rejection(&e),
            Some(PinRejected::RotationRefused {
                reason: "malformed",
                ..
            })
        ),
        "{e:?}"
    );
    assert_eq!(holder.pin(), FleetPin::provisioned(k0.public()));

    // A valid rotation that the holder cannot save is refused too: the node never trusts a
    // key it would forget at the next restart.
    let chain = RotationChain::default().extend(&k0, &k1.public(), 0);
    let holder = Recording::new(k0.public(), true);
    let e = handshake(
        try_pinned_client_config_with(holder.clone()).unwrap(),
        server(
            cert_with_chain(&k1, &chain.encode()),
            &k1,
            &rustls::version::TLS13,
        ),
    )
    .unwrap_err();
    assert!(
        matches!(rejection(&e), Some(PinRejected::RotationNotSaved { .. })),
        "{e:?}"
    );
    assert_eq!(holder.pin(), FleetPin::provisioned(k0.public()));
}

#[test]
fn an_impostor_with_the_new_certificate_moves_the_pin_only_where_the_fleet_did() {
    // The new certificate and its chain are public: someone replaying them without the new
    // secret key fails the handshake. The pin may have moved, but only to the genuine new key.
    let k0 = IdentityKey::generate();
    let k1 = IdentityKey::generate();
    let impostor = IdentityKey::generate();
    let chain = RotationChain::default().extend(&k0, &k1.public(), 0);
    let holder = Recording::new(k0.public(), false);
    let e = handshake(
        try_pinned_client_config_with(holder.clone()).unwrap(),
        server(
            cert_with_chain(&k1, &chain.encode()),
            &impostor,
            &rustls::version::TLS13,
        ),
    );
    assert!(e.is_err());
    assert!(holder.pin().key == k1.public() || holder.pin().key == k0.public());
}
