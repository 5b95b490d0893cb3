//! HTTPS between a fleet serving its identity-keyed certificate and nodes pinning a key:
//! only a client pinned to the key the server's certificate carries (and that the server
//! holds) gets through, and a refused client never reaches a handler.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use axum_server::Handle;
use lattice_fleet::tls;
use lattice_wire::pin::{self, PinRejected};
use lattice_wire::IdentityKey;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

struct Served {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    handle: Handle,
}

impl Served {
    fn url(&self) -> String {
        format!("https://{}/healthz", self.addr)
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Serves GET /healthz -> "ok" over HTTPS on 127.0.0.1:0 with `config`, counting requests.
async fn serve(config: Arc<rustls::ServerConfig>) -> Served {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(hits): State<Arc<AtomicUsize>>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "ok"
            }),
        )
        .with_state(hits.clone());
    let handle = Handle::new();
    let server = axum_server::bind_rustls(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        RustlsConfig::from_config(config),
    )
    .handle(handle.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await });
    let addr = tokio::time::timeout(TIMEOUT, handle.listening())
        .await
        .expect("server did not start in time")
        .expect("server failed to bind");
    Served { addr, hits, handle }
}

async fn serve_fleet(identity: &IdentityKey) -> Served {
    let fleet_tls = tls::self_signed(identity, &[]).unwrap();
    serve(tls::server_config(&fleet_tls).unwrap()).await
}

/// The rustls error somewhere in a reqwest error's chain (io::Error hides its inner error from
/// `source()`, so look through `get_ref()` too).
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return Some(r);
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        let inner: &(dyn std::error::Error + 'static) = inner;
        if let Some(found) = rustls_error(inner) {
            return Some(found);
        }
    }
    e.source().and_then(rustls_error)
}

/// The pin rejection in a reqwest error, as text.
fn pin_rejection(e: &reqwest::Error) -> Option<String> {
    match rustls_error(e)? {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => other
            .0
            .downcast_ref::<PinRejected>()
            .map(ToString::to_string),
        _ => None,
    }
}

fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" <- ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[tokio::test]
async fn pinned_client_reaches_the_fleet() {
    let fleet = IdentityKey::generate();
    let served = serve_fleet(&fleet).await;
    let client = pin::pinned_http_client(&fleet.public(), TIMEOUT).unwrap();
    for _ in 0..2 {
        let resp = client.get(served.url()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    assert_eq!(served.hits(), 2);
}

#[tokio::test]
async fn pinned_client_reaches_a_fleet_serving_the_written_pem_files() {
    let fleet = IdentityKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let fleet_tls = tls::self_signed(&fleet, &["fleet.example".to_owned()]).unwrap();
    let (cert, key) = tls::write_pem_files(&fleet_tls, dir.path()).unwrap();
    let served = serve(Arc::new(tls::from_pem_files(&cert, &key).unwrap())).await;
    let client = pin::pinned_http_client(&fleet.public(), TIMEOUT).unwrap();
    let body = client
        .get(served.url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "ok");
    assert_eq!(served.hits(), 1);
}

#[tokio::test]
async fn client_pinned_to_another_key_is_refused() {
    let fleet = IdentityKey::generate();
    let other = IdentityKey::generate();
    let served = serve_fleet(&fleet).await;
    let client = pin::pinned_http_client(&other.public(), TIMEOUT).unwrap();
    let e = client.get(served.url()).send().await.unwrap_err();
    assert!(e.is_connect(), "{}", chain(&e));
    let why = pin_rejection(&e).unwrap_or_else(|| panic!("not a pin rejection: {}", chain(&e)));
    assert!(why.contains(&fleet.public().to_string()), "{why}");
    assert_eq!(served.hits(), 0, "a refused client reached the handler");
}

#[tokio::test]
async fn server_with_another_key_is_refused() {
    let fleet = IdentityKey::generate();
    let rogue = IdentityKey::generate();
    let served = serve_fleet(&rogue).await;
    let client = pin::pinned_http_client(&fleet.public(), TIMEOUT).unwrap();
    let e = client.get(served.url()).send().await.unwrap_err();
    let why = pin_rejection(&e).unwrap_or_else(|| panic!("not a pin rejection: {}", chain(&e)));
    assert!(why.contains(&rogue.public().to_string()), "{why}");
    assert_eq!(served.hits(), 0);

    // The same client still reaches the real fleet.
    let real = serve_fleet(&fleet).await;
    let body = client.get(real.url()).send().await.unwrap().text().await;
    assert_eq!(body.unwrap(), "ok");
}

#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn impostor_replaying_the_fleet_certificate_is_refused() {
    // The fleet's certificate is public. A server presenting it without the fleet's secret key
    // cannot produce a valid handshake signature.
    let fleet = IdentityKey::generate();
    let impostor = IdentityKey::generate();
    let fleet_cert = tls::self_signed(&fleet, &[]).unwrap().cert_der;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signer = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(impostor.to_pkcs8_der().into()))
        .unwrap();
    let certified = CertifiedKey::new(vec![CertificateDer::from(fleet_cert)], signer);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Fixed(Arc::new(certified))));
    let served = serve(Arc::new(config)).await;

    let client = pin::pinned_http_client(&fleet.public(), TIMEOUT).unwrap();
    let e = client.get(served.url()).send().await.unwrap_err();
    assert!(e.is_connect(), "{}", chain(&e));
    assert!(
        matches!(
            rustls_error(&e),
            Some(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature
            ))
        ),
        "{}",
        chain(&e)
    );
    assert_eq!(served.hits(), 0);
}
