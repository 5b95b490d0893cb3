//! TLS 1.3 (inside QUIC) for the tunnel: both ends are their Ed25519 identity keys.
//!
//! * The gateway serves a self-signed certificate made from the **fleet** key; the node accepts
//!   it only through `lattice_wire::pin` (the pinned fleet key, names and dates ignored).
//! * The node presents a self-signed client certificate made from **its own** key. The gateway's
//!   verifier accepts any Ed25519 certificate whose handshake signature verifies (possession of
//!   the key is proven); *which* node that is, and whether it is registered and not revoked, is
//!   decided right after the handshake against the fleet's store ([`crate::server::Authorizer`]).
//!   No CA and no validity dates: the key is the credential, as everywhere in Lattice.

use lattice_wire::pin::{ed25519_spki_der, PinnedFleetKey};
use lattice_wire::{IdentityKey, IdentityPublic};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::Arc;

/// ALPN of tunnel version 1.
pub const ALPN: &[u8] = b"lattice-tunnel/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("making a certificate from the {what} identity key failed")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the tunnel's TLS configuration failed")]
    Config(#[source] rustls::Error),
    #[error("the TLS configuration cannot be used for QUIC: {0}")]
    Quic(String),
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit: ring and aws-lc-rs are both linked into the workspace.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate (DER) for `key` with common name `cn`, and the key as PKCS#8.
pub fn self_signed(
    key: &IdentityKey,
    what: &'static str,
    cn: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let fail = |source| TlsError::Certificate { what, source };
    let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
    let pair =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(fail)?;
    let mut params =
        rcgen::CertificateParams::new(vec!["lattice-tunnel".to_owned()]).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_owned());
    let cert = params.self_signed(&pair).map_err(fail)?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der())),
    ))
}

/// The Ed25519 key in a certificate, if that is what it holds.
pub fn certificate_key(cert: &CertificateDer<'_>) -> Option<IdentityPublic> {
    let parsed = ParsedCertificate::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let raw = spki.as_ref().get(12..)?;
    let key = IdentityPublic::from_bytes(raw).ok()?;
    // The whole SubjectPublicKeyInfo must be the RFC 8410 Ed25519 encoding of that key.
    (spki.as_ref() == ed25519_spki_der(&key).as_slice()).then_some(key)
}

/// Accepts any client certificate holding an Ed25519 key whose handshake signature verifies.
#[derive(Debug)]
struct AnyEd25519Client {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyEd25519Client {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if certificate_key(end_entity).is_none() {
            return Err(rustls::Error::General(
                "tunnel client certificate does not hold an Ed25519 node key".into(),
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC is TLS 1.3 only.
        Err(rustls::Error::General(
            "TLS 1.2 is not used by the tunnel".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The gateway's QUIC server crypto: the fleet key's certificate, node certificates required.
pub fn server_crypto(
    fleet: &IdentityKey,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let (cert, key) = self_signed(
        fleet,
        "fleet",
        &format!("Lattice gateway {}", fleet.public()),
    )?;
    let provider = provider();
    let verifier = Arc::new(AnyEd25519Client {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

/// The node's QUIC client crypto: its own key as client certificate, the fleet key pinned.
pub fn client_crypto(
    node: &IdentityKey,
    fleet: &IdentityPublic,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let (cert, key) = self_signed(node, "node", &format!("Lattice node {}", node.public()))?;
    let provider = provider();
    let verifier = Arc::new(PinnedFleetKey::new(*fleet, &provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| TlsError::Quic(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_carry_the_identity_key() {
        let key = IdentityKey::generate();
        let (cert, _) = self_signed(&key, "node", "test").unwrap();
        assert_eq!(certificate_key(&cert), Some(key.public()));
        assert_eq!(certificate_key(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn configs_build() {
        let fleet = IdentityKey::generate();
        server_crypto(&fleet).unwrap();
        client_crypto(&IdentityKey::generate(), &fleet.public()).unwrap();
    }
}
