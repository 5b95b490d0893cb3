//! Pinned TLS to the fleet: the server is trusted because of its key, not a CA.
//!
//! Trust model: the provisioning string carries the fleet's Ed25519 identity public key, known
//! before the first connection (no trust-on-first-use). A TLS server is accepted only if its
//! end-entity certificate's SubjectPublicKeyInfo is exactly that key *and* the handshake
//! signature verifies under it, which only the holder of the fleet's secret key can produce.
//! Names, validity dates, issuer and chain are deliberately ignored: the node may reach the
//! fleet by IP, LAN name or tunnel; its clock may be unset on first boot; no CA is consulted;
//! and the key, not the certificate, is the credential.
//! [`pinned_client_config`] secures both HTTPS (reqwest) and MQTT over TLS (rumqttc).
//!
//! Rotation: after `lattice keys rotate` the fleet's certificate carries its whole rotation
//! chain (every statement "new key, signed by the old key", [`crate::rotation`]) in a
//! non-critical extension ([`ROTATION_EXTENSION_OID`]). A server showing another key than the
//! pinned one is accepted only if that chain leads from the pinned key to the key shown; the
//! verifier then hands the new pin to its [`PinHolder`] (latticed persists it before the
//! handshake goes on) and from then on pins the new key. A chain that does not verify is
//! refused and the old pin kept.

use crate::rotation::{advance_to, AdvanceError, FleetPin, RotationChain, RotationError};
use crate::IdentityPublic;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// OID of the certificate extension carrying the fleet's [`RotationChain`] (postcard bytes as
/// the extension's OCTET STRING): `1.3.6.1.4.1.59212.1.1` (a private arc; non-critical, so
/// other TLS clients ignore it).
pub const ROTATION_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 59212, 1, 1];

/// The DER content bytes of an OBJECT IDENTIFIER with these components.
fn oid_content(components: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        out.extend(tmp.iter().rev());
    };
    if components.len() >= 2 {
        push(components[0] * 40 + components[1]);
        for c in &components[2..] {
            push(*c);
        }
    }
    out
}

/// One DER TLV: (tag, content, rest). None if truncated or the length is not DER-sized.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The raw value of the extension `oid` in a DER certificate, if present.
pub fn certificate_extension<'a>(cert_der: &'a [u8], oid: &[u64]) -> Option<&'a [u8]> {
    let want = oid_content(oid);
    let (0x30, cert, _) = tlv(cert_der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    while !tbs.is_empty() {
        let (tag, content, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = tlv(content)? else {
            return None;
        };
        while !exts.is_empty() {
            let (_, ext, rest) = tlv(exts)?;
            exts = rest;
            let (0x06, id, mut fields) = tlv(ext)? else {
                continue;
            };
            if id != want.as_slice() {
                continue;
            }
            if let Some((0x01, _, rest)) = tlv(fields) {
                fields = rest; // critical flag
            }
            return match tlv(fields)? {
                (0x04, value, _) => Some(value),
                _ => None,
            };
        }
    }
    None
}

/// The rotation chain a certificate carries: None without the extension, Err if it does not
/// parse.
pub fn certificate_rotation_chain(cert_der: &[u8]) -> Option<Result<RotationChain, RotationError>> {
    certificate_extension(cert_der, ROTATION_EXTENSION_OID).map(RotationChain::decode)
}

/// Holds the key a verifier pins. [`MemoryPin`] keeps it in memory (the CLI, the fleet's own
/// clients); latticed's holder persists it in its state directory.
pub trait PinHolder: Send + Sync + fmt::Debug {
    /// The pin now.
    fn pin(&self) -> FleetPin;
    /// A server showed a key that rotation statements signed from `from` lead to: make `to` the
    /// pin. A persisting holder writes it durably first; an Err refuses the server and must
    /// leave the pin at `from`.
    fn adopt(&self, from: FleetPin, to: FleetPin) -> Result<(), String>;
    /// A server's rotation statements were refused (forged, tampered, corrupt): for a log line.
    /// The pin is unchanged.
    fn refused(&self, presented: &IdentityPublic, reason: &str) {
        let _ = (presented, reason);
    }
}

/// A pin kept in memory only.
#[derive(Debug)]
pub struct MemoryPin(Mutex<FleetPin>);

impl MemoryPin {
    pub fn new(pin: FleetPin) -> Self {
        MemoryPin(Mutex::new(pin))
    }
    /// A shared holder pinning `key` as provisioned.
    pub fn shared(key: IdentityPublic) -> Arc<dyn PinHolder> {
        Arc::new(MemoryPin::new(FleetPin::provisioned(key)))
    }
}

impl PinHolder for MemoryPin {
    fn pin(&self) -> FleetPin {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn adopt(&self, from: FleetPin, to: FleetPin) -> Result<(), String> {
        let mut pin = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *pin == from || *pin == to {
            *pin = to;
            Ok(())
        } else {
            Err(format!("the pin changed meanwhile (now {})", pin.key))
        }
    }
}

/// DER prefix of an RFC 8410 Ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID
/// 1.3.101.112 } (no parameters), BIT STRING (0 unused bits) }, followed by the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The RFC 8410 SubjectPublicKeyInfo DER of `key`, as it appears in a certificate.
pub fn ed25519_spki_der(key: &IdentityPublic) -> [u8; 44] {
    let mut spki = [0u8; 44];
    spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
    spki[12..].copy_from_slice(&key.to_bytes());
    spki
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("building the pinned TLS client configuration failed")]
    Tls(#[source] rustls::Error),
    #[error("building the pinned HTTPS client failed")]
    Http(#[source] reqwest::Error),
}

/// Why a server certificate was refused; carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`.
#[derive(thiserror::Error)]
pub enum PinRejected {
    #[error("server certificate key {got} is not the pinned fleet key {expected}")]
    OtherKey {
        expected: IdentityPublic,
        got: String,
    },
    #[error("server certificate key is not an Ed25519 key (the pinned fleet key {expected} is)")]
    NotEd25519 { expected: IdentityPublic },
    #[error("server certificate key {got} comes with a fleet key rotation from the pinned key {expected} that is refused ({reason}): {detail}")]
    RotationRefused {
        expected: IdentityPublic,
        got: IdentityPublic,
        reason: &'static str,
        detail: String,
    },
    #[error("server certificate key {got} is a valid rotation of the pinned key {expected}, but the new pin could not be saved: {detail}")]
    RotationNotSaved {
        expected: IdentityPublic,
        got: IdentityPublic,
        detail: String,
    },
}

/// rustls shows `CertificateError::Other` with `{:?}`, so `Debug` is the readable message: a
/// refused node logs "invalid peer certificate: Other(OtherError(server certificate key ...))".
impl fmt::Debug for PinRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A rustls [`ServerCertVerifier`] that accepts exactly one Ed25519 server key: its holder's
/// pin, or a key the certificate's rotation chain leads to from that pin.
#[derive(Debug)]
pub struct PinnedFleetKey {
    holder: Arc<dyn PinHolder>,
    algorithms: WebPkiSupportedAlgorithms,
}

fn refuse(rejected: PinRejected) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(rejected))))
}

impl PinnedFleetKey {
    /// Pins `key` (in memory); handshake signatures are checked with `provider`'s algorithms.
    pub fn new(key: IdentityPublic, provider: &CryptoProvider) -> Self {
        Self::with_holder(MemoryPin::shared(key), provider)
    }

    /// Pins whatever `holder` holds, and hands it the rotations it verifies.
    pub fn with_holder(holder: Arc<dyn PinHolder>, provider: &CryptoProvider) -> Self {
        PinnedFleetKey {
            holder,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The pinned key now.
    pub fn key(&self) -> IdentityPublic {
        self.holder.pin().key
    }

    /// Ok if `cert` parses as an X.509 certificate whose SubjectPublicKeyInfo is the pinned key,
    /// or a key its rotation chain leads to from the pinned key (which then becomes the pin).
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        // rustls' own webpki parse (no extra X.509 crate); errors map to rustls' certificate
        // errors (BadEncoding, ...).
        let parsed = ParsedCertificate::try_from(cert)?;
        let spki = parsed.subject_public_key_info();
        let spki = spki.as_ref();
        let pin = self.holder.pin();
        if spki == ed25519_spki_der(&pin.key).as_slice() {
            return Ok(());
        }
        let raw = match spki.strip_prefix(ED25519_SPKI_PREFIX.as_slice()) {
            Some(raw) if raw.len() == 32 => raw,
            _ => return Err(refuse(PinRejected::NotEd25519 { expected: pin.key })),
        };
        let Ok(presented) = IdentityPublic::from_bytes(raw) else {
            return Err(refuse(PinRejected::OtherKey {
                expected: pin.key,
                got: "(not a valid Ed25519 point)".to_owned(),
            }));
        };
        let other_key = || {
            refuse(PinRejected::OtherKey {
                expected: pin.key,
                got: presented.to_string(),
            })
        };
        let refused = |e: RotationError| {
            self.holder
                .refused(&presented, &format!("{}: {e}", e.reason()));
            refuse(PinRejected::RotationRefused {
                expected: pin.key,
                got: presented,
                reason: e.reason(),
                detail: e.to_string(),
            })
        };
        let chain = match certificate_rotation_chain(cert.as_ref()) {
            None => return Err(other_key()),
            Some(Err(e)) => return Err(refused(e)),
            Some(Ok(chain)) => chain,
        };
        match advance_to(pin, &chain.statements, &presented) {
            Ok(next) => self.holder.adopt(pin, next).map_err(|detail| {
                refuse(PinRejected::RotationNotSaved {
                    expected: pin.key,
                    got: presented,
                    detail,
                })
            }),
            Err(AdvanceError::Refused(e)) => Err(refused(e)),
            Err(AdvanceError::NoPath { .. }) => Err(other_key()),
        }
    }
}

impl ServerCertVerifier for PinnedFleetKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Names, dates, issuer and chain are deliberately not checked: see the module docs.
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // rustls passes the end-entity certificate already checked above; re-checking is cheap
        // and keeps this method sound on its own.
        self.check(cert)?;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.check(cert)?;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        // All the provider's schemes, not just Ed25519: a server with a wrong (say ECDSA)
        // certificate then still completes enough of the handshake for the node to report
        // "not the pinned key" instead of an opaque handshake_failure alert. Only the pinned
        // Ed25519 key can ever verify.
        self.algorithms.supported_schemes()
    }
}

/// A rustls ClientConfig (ring provider, TLS 1.2 + 1.3, no client certificate, no ALPN) that
/// trusts only a server holding `fleet_key`. Use it for reqwest ([`pinned_http_client`]) and
/// for rumqttc (`TlsConfiguration::Rustls(config)`).
pub fn try_pinned_client_config(fleet_key: &IdentityPublic) -> Result<Arc<ClientConfig>, PinError> {
    try_pinned_client_config_with(MemoryPin::shared(*fleet_key))
}

/// [`try_pinned_client_config`] pinning whatever `holder` holds (and following rotations into
/// it).
pub fn try_pinned_client_config_with(
    holder: Arc<dyn PinHolder>,
) -> Result<Arc<ClientConfig>, PinError> {
    // Always an explicit provider: ring and aws-lc-rs are both linked into this workspace, so
    // there is no unambiguous process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedFleetKey::with_holder(holder, &provider));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PinError::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`try_pinned_client_config`] for callers that cannot handle an error.
///
/// # Panics
///
/// Only if rustls' built-in ring provider supported neither TLS 1.2 nor 1.3, which would be a
/// build defect (the unit tests exercise this path).
pub fn pinned_client_config(fleet_key: &IdentityPublic) -> Arc<ClientConfig> {
    match try_pinned_client_config(fleet_key) {
        Ok(config) => config,
        Err(e) => panic!("the ring TLS provider cannot build a client configuration: {e:?}"),
    }
}

/// An HTTPS-only reqwest client that trusts only a server holding `fleet_key`. `timeout`
/// bounds both connecting and each whole request.
///
/// Proxies from the environment (`HTTPS_PROXY`, ...) are still honoured: a `CONNECT` tunnel
/// keeps TLS end to end, so the pin holds through it (an `https://` proxy itself would have to
/// present the fleet key too, so it fails).
pub fn pinned_http_client(
    fleet_key: &IdentityPublic,
    timeout: Duration,
) -> Result<reqwest::Client, PinError> {
    pinned_http_client_with(MemoryPin::shared(*fleet_key), timeout)
}

/// [`pinned_http_client`] pinning whatever `holder` holds.
pub fn pinned_http_client_with(
    holder: Arc<dyn PinHolder>,
    timeout: Duration,
) -> Result<reqwest::Client, PinError> {
    let config = try_pinned_client_config_with(holder)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(ClientConfig::clone(&config))
        // Plain http:// would bypass the pin entirely.
        .https_only(true)
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(concat!("latticed/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(PinError::Http)
}

/// Like [`pinned_http_client`], for answers that stream for as long as the caller wants
/// (`lattice logs --follow`): only connecting is bounded, not the whole request.
pub fn pinned_streaming_client(
    fleet_key: &IdentityPublic,
    connect_timeout: Duration,
) -> Result<reqwest::Client, PinError> {
    let config = try_pinned_client_config(fleet_key)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(ClientConfig::clone(&config))
        .https_only(true)
        .connect_timeout(connect_timeout)
        .tcp_keepalive(Duration::from_secs(30))
        .user_agent(concat!("latticed/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(PinError::Http)
}

#[cfg(test)]
mod tests;
