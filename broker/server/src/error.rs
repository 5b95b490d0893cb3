//! What can go wrong while starting the broker.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why [`start`](crate::start) failed. Each variant names the address or file involved.
#[derive(thiserror::Error, Debug)]
pub enum BrokerError {
    /// The configuration has one or more problems; all of them are listed.
    #[error("invalid broker config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),

    /// A listener could not bind its address (typically: the port is in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    /// A listener thread ended before it reported that it was listening.
    #[error("MQTT listener on {addr} stopped while starting")]
    ListenerStopped { addr: SocketAddr },

    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadPem {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A PEM file could not be parsed.
    #[error("malformed PEM in {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },

    /// The certificate file holds no `CERTIFICATE` section.
    #[error("no certificate in {path}")]
    NoCertificate { path: PathBuf },

    /// The key file holds no private key section (PKCS#8, SEC1 or PKCS#1).
    #[error("no private key in {path}")]
    NoPrivateKey { path: PathBuf },

    /// The private key is of a type the TLS stack cannot sign with.
    #[error("unsupported private key in {path}: {source}")]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// rustls refused the certificate/key pair (e.g. they do not belong together).
    #[error("TLS setup with {cert} and {key} failed: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },

    /// The broker's internal Tokio runtime could not be built.
    #[error("cannot build the broker runtime: {0}")]
    Runtime(#[source] io::Error),

    /// A broker thread could not be spawned.
    #[error("cannot spawn thread {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: io::Error,
    },
}
