//! TLS 1.3 (inside QUIC) for the tunnel: both ends are their Ed25519 identity keys.
//!
//! * The gateway serves a self-signed certificate made from the **fleet** key; the node accepts
//!   it only through `lattice_wire::pin` (the pinned fleet key, names and dates ignored).
//! * The node presents a self-signed client certificate made from **its own** key. The gateway's
//!   verifier accepts any Ed25519 certificate whose handshake signature verifies (possession of
//!   the key is proven); *which* node that is, and whether it is registered and not revoked, is
//!   decided right after the handshake against the fleet's store ([`crate::server::Authorizer`]).
//!   No CA and no validity dates: the key is the credential, as everywhere in Lattice.

use lattice_wire::pin::{ed25519_spki_der, PinHolder, PinnedFleetKey, ROTATION_EXTENSION_OID};
use lattice_wire::rotation::RotationChain;
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
    self_signed_with_chain(key, what, cn, &RotationChain::default())
}

/// [`self_signed`] carrying a fleet key rotation chain (if not empty) in the extension nodes
/// follow (`lattice_wire::pin::ROTATION_EXTENSION_OID`).
pub fn self_signed_with_chain(
    key: &IdentityKey,
    what: &'static str,
    cn: &str,
    chain: &RotationChain,
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
    if !chain.statements.is_empty() {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                ROTATION_EXTENSION_OID,
                chain.encode(),
            ));
    }
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
    server_crypto_with_chain(fleet, &RotationChain::default())
}

/// [`server_crypto`] whose certificate carries the fleet's key rotation chain.
pub fn server_crypto_with_chain(
    fleet: &IdentityKey,
    chain: &RotationChain,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let (cert, key) = self_signed_with_chain(
        fleet,
        "fleet",
        &format!("Lattice gateway {}", fleet.public()),
        chain,
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
    client_crypto_with(node, lattice_wire::pin::MemoryPin::shared(*fleet))
}

/// [`client_crypto`] pinning whatever `pin` holds (latticed's persisted pin, which follows the
/// fleet's key rotations).
pub fn client_crypto_with(
    node: &IdentityKey,
    pin: Arc<dyn PinHolder>,
) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsError> {
    let (cert, key) = self_signed(node, "node", &format!("Lattice node {}", node.public()))?;
    let provider = provider();
    let verifier = Arc::new(PinnedFleetKey::with_holder(pin, &provider));
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
    fn the_gateway_certificate_carries_the_rotation_chain() {
        let k0 = IdentityKey::generate();
        let k1 = IdentityKey::generate();
        let chain = RotationChain::default().extend(&k0, &k1.public(), 1);
        let (cert, _) = self_signed_with_chain(&k1, "fleet", "test", &chain).unwrap();
        assert_eq!(certificate_key(&cert), Some(k1.public()));
        assert_eq!(
            lattice_wire::pin::certificate_rotation_chain(cert.as_ref())
                .unwrap()
                .unwrap(),
            chain
        );
        let (plain, _) = self_signed(&k1, "fleet", "test").unwrap();
        assert!(lattice_wire::pin::certificate_rotation_chain(plain.as_ref()).is_none());
        server_crypto_with_chain(&k1, &chain).unwrap();
        client_crypto_with(
            &IdentityKey::generate(),
            lattice_wire::pin::MemoryPin::shared(k0.public()),
        )
        .unwrap();
    }

    #[test]
    fn configs_build() {
        let fleet = IdentityKey::generate();
        server_crypto(&fleet).unwrap();
        client_crypto(&IdentityKey::generate(), &fleet.public()).unwrap();
    }
}
