//! Loads the server certificate and key into a rustls server configuration.
//!
//! The `ring` provider is named explicitly, so the result does not depend on which rustls
//! crypto providers other crates in the process happen to enable. It signs with Ed25519,
//! ECDSA (P-256, P-384) and RSA keys. No client certificates are requested: devices
//! authenticate with their MQTT password.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::BrokerError;

/// Builds the TLS server configuration from PEM files.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, BrokerError> {
    let chain = load_chain(cert)?;
    let key_der = load_key(key)?;
    let provider = Arc::new(ring::default_provider());
    provider
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|source| BrokerError::UnsupportedKey {
            path: key.to_path_buf(),
            source,
        })?;
    let tls_error = |source| BrokerError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(tls_error)?;
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|source| BrokerError::ReadPem {
        path: path.to_path_buf(),
        source,
    })
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, BrokerError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| BrokerError::Pem {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(BrokerError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, BrokerError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|source| match source {
        pem::Error::NoItemsFound => BrokerError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => BrokerError::Pem {
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn write_pair(dir: &Path, alg: &'static rcgen::SignatureAlgorithm) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write cert");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lattice-broker-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn loads_ed25519_and_p256_keys() {
        for (name, alg) in [
            ("ed25519", &rcgen::PKCS_ED25519),
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
        ] {
            let dir = temp_dir(name);
            let (cert, key) = write_pair(&dir, alg);
            server_config(&cert, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn names_the_missing_file() {
        let dir = temp_dir("missing");
        let missing = dir.join("nope.pem");
        let err = server_config(&missing, &missing).expect_err("missing file");
        assert!(matches!(err, BrokerError::ReadPem { ref path, .. } if path == &missing));
        assert!(err.to_string().contains("nope.pem"));
    }

    #[test]
    fn key_file_without_key_is_refused() {
        let dir = temp_dir("nokey");
        let (cert, _) = write_pair(&dir, &rcgen::PKCS_ECDSA_P256_SHA256);
        let err = server_config(&cert, &cert).expect_err("cert as key");
        assert!(matches!(err, BrokerError::NoPrivateKey { .. }), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir_a = temp_dir("pair-a");
        let dir_b = temp_dir("pair-b");
        let (cert, _) = write_pair(&dir_a, &rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, key) = write_pair(&dir_b, &rcgen::PKCS_ECDSA_P256_SHA256);
        let err = server_config(&cert, &key).expect_err("mismatched pair");
        assert!(matches!(err, BrokerError::Tls { .. }), "{err}");
    }
}
