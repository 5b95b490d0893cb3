//! Pinned TLS to the fleet: the server is trusted because of its key, not a CA.
//!
//! Trust model: the provisioning string carries the fleet's Ed25519 identity public key, known
//! before the first connection (no trust-on-first-use). A TLS server is accepted only if its
//! end-entity certificate's SubjectPublicKeyInfo is exactly that key *and* the handshake
//! signature verifies under it, which only the holder of the fleet's secret key can produce.
//! Names, validity dates, issuer and chain are deliberately ignored: the node may reach the
//! fleet by IP, LAN name or tunnel; its clock may be unset on first boot; no CA is consulted;
//! and the key, not the certificate, is the credential (rotated by re-provisioning).
//! [`pinned_client_config`] secures both HTTPS (reqwest) and MQTT over TLS (rumqttc).

use crate::IdentityPublic;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
}

/// rustls shows `CertificateError::Other` with `{:?}`, so `Debug` is the readable message: a
/// refused node logs "invalid peer certificate: Other(OtherError(server certificate key ...))".
impl fmt::Debug for PinRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A rustls [`ServerCertVerifier`] that accepts exactly one Ed25519 server key.
#[derive(Debug)]
pub struct PinnedFleetKey {
    key: IdentityPublic,
    spki: [u8; 44],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedFleetKey {
    /// Pins `key`; handshake signatures are checked with `provider`'s algorithms.
    pub fn new(key: IdentityPublic, provider: &CryptoProvider) -> Self {
        PinnedFleetKey {
            key,
            spki: ed25519_spki_der(&key),
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The pinned key.
    pub fn key(&self) -> &IdentityPublic {
        &self.key
    }

    /// Ok if `cert` parses as an X.509 certificate whose SubjectPublicKeyInfo is the pinned key.
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        // rustls' own webpki parse (no extra X.509 crate); errors map to rustls' certificate
        // errors (BadEncoding, ...).
        let parsed = ParsedCertificate::try_from(cert)?;
        let spki = parsed.subject_public_key_info();
        let spki = spki.as_ref();
        if spki == self.spki.as_slice() {
            return Ok(());
        }
        let rejected = match spki.strip_prefix(ED25519_SPKI_PREFIX.as_slice()) {
            Some(raw) if raw.len() == 32 => PinRejected::OtherKey {
                expected: self.key,
                got: IdentityPublic::from_bytes(raw)
                    .map(|k| k.to_string())
                    .unwrap_or_else(|_| "(not a valid Ed25519 point)".to_owned()),
            },
            _ => PinRejected::NotEd25519 { expected: self.key },
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(rejected)),
        )))
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
    // Always an explicit provider: ring and aws-lc-rs are both linked into this workspace, so
    // there is no unambiguous process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedFleetKey::new(*fleet_key, &provider));
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
    let config = try_pinned_client_config(fleet_key)?;
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
