//! Certificates for the apps domain (HTTPS to workloads): from files for real domains, or a
//! generated self-signed set (`*.{domain}`) for local use. Never the fleet key: the apps domain
//! is separate from the console's, and its key may sit on a separate gateway machine.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// File names of the generated set in the fleet's data directory.
pub const CERT_FILE: &str = "apps-cert.pem";
pub const KEY_FILE: &str = "apps-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("apps certificate {path}: cannot read it: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("apps certificate {path}: holds no certificate")]
    Empty { path: PathBuf },
    #[error("apps certificate {path}: not a valid X.509 certificate: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("apps certificate {path}: expired on {not_after} (renew it, or drop --apps-cert to use a generated one)")]
    Expired { path: PathBuf, not_after: String },
    #[error("apps certificate {path}: not valid before {not_before}")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error("apps certificate and key do not belong together or cannot be used: {0}")]
    Config(String),
    #[error("generating the self-signed apps certificate for {domain}: {reason}")]
    Generate { domain: String, reason: String },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads `cert` + `key` (PEM), refusing an expired or not-yet-valid end-entity certificate.
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let read = |p: &Path, e: &dyn std::fmt::Display| CertError::Read {
        path: p.to_owned(),
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, &e))?;
    let first = certs.first().ok_or_else(|| CertError::Empty {
        path: cert.to_owned(),
    })?;
    check_validity(cert, first, std::time::SystemTime::now())?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?;
    server_config(certs, key)
}

/// Checks the validity window of `der` at `now`.
pub fn check_validity(
    path: &Path,
    der: &CertificateDer<'_>,
    now: std::time::SystemTime,
) -> Result<(), CertError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| CertError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let validity = parsed.validity();
    if now > validity.not_after.timestamp() {
        return Err(CertError::Expired {
            path: path.to_owned(),
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before.timestamp() {
        return Err(CertError::NotYetValid {
            path: path.to_owned(),
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// The generated set for `domain`: loaded from `dir` when present, valid and for that domain;
/// made (and written: certificate 0644, key 0600) otherwise.
pub fn self_signed(dir: &Path, domain: &str) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let marker = format!("Lattice apps {domain}");
    if key_path.exists() && cert_subject_is(&cert_path, &marker) {
        if let Ok(cfg) = from_files(&cert_path, &key_path) {
            return Ok(cfg);
        }
    }
    let fail = |reason: String| CertError::Generate {
        domain: domain.to_owned(),
        reason,
    };
    let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let mut params = CertificateParams::default();
    let mut sans = Vec::new();
    for name in [format!("*.{domain}"), domain.to_owned()] {
        sans.push(SanType::DnsName(
            name.clone()
                .try_into()
                .map_err(|e: rcgen::Error| fail(e.to_string()))?,
        ));
    }
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, marker);
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| fail(e.to_string()))?;
    server_config(vec![cert.der().clone()], der)
}

fn cert_subject_is(path: &Path, cn: &str) -> bool {
    let Ok(der) = CertificateDer::from_pem_file(path) else {
        return false;
    };
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c.subject().to_string().contains(cn))
        .unwrap_or(false)
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| CertError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| CertError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_dates(dir: &Path, not_after_year: i32) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["apps.example".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn an_expired_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert_with_dates(dir.path(), 2001);
        let e = from_files(&c, &k).unwrap_err();
        assert!(matches!(e, CertError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(e.to_string().contains("c.pem"), "{e}");
        let (c, k) = cert_with_dates(dir.path(), 2200);
        from_files(&c, &k).unwrap();
    }

    #[test]
    fn a_missing_certificate_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = from_files(&dir.path().join("nope.pem"), &dir.path().join("k.pem")).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
    }

    #[test]
    fn the_generated_set_is_kept_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        self_signed(dir.path(), "lattice-apps.localhost").unwrap();
        let first = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        self_signed(dir.path(), "lattice-apps.localhost").unwrap();
        assert_eq!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), first);
        // Another domain: a new set.
        self_signed(dir.path(), "apps.example").unwrap();
        assert_ne!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), first);
    }
}
