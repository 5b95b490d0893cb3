//! `lattice-s3`: parses flags and environment, opens the data directory, serves S3 until
//! SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use lattice_s3::config::{Args, Config};
use lattice_s3::replication::journal::journal_dir;
use lattice_s3::replication::{Journal, JournalOptions, Replication};
use lattice_s3::store::{Store, StoreOptions, MIN_PART_SIZE};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::new(lattice_s3::config::log_filter(
            std::env::var("RUST_LOG").ok().as_deref(),
        )))
        .init();
    let config = match Config::from_args(Args::parse(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("lattice-s3: bad configuration:\n{problems}");
            std::process::exit(2);
        }
    };
    // block_in_place (used for file I/O) needs the multi-threaded runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let options = StoreOptions {
        quota: config.quota,
        min_part_size: MIN_PART_SIZE,
    };
    let data = config.data.clone();
    let replica = config.replica.clone();
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<Store> {
        let mut store = Store::open(&data, options)
            .with_context(|| format!("opening the data directory {}", data.display()))?;
        // A primary journals every change from here on, the configured buckets included.
        if let Some(target) = replica {
            let layout = store.layout().clone();
            let (journal, seed) = Journal::open(
                journal_dir(&layout),
                layout.tmp(),
                &target.id(),
                JournalOptions::default(),
            )
            .context("opening the replication journal")?;
            store
                .attach_journal(Arc::new(journal), seed)
                .context("queueing a full copy for the replica")?;
            tracing::info!(replica = %target.id(), "replicating every change");
        }
        Ok(store)
    })
    .await
    .context("opening the data directory")??;
    // The configured buckets exist before the listener does: no request sees them missing.
    let buckets = config.buckets.clone();
    let store = tokio::task::spawn_blocking(move || -> anyhow::Result<Store> {
        for b in &buckets {
            let created = store
                .ensure_bucket(b)
                .with_context(|| format!("creating the configured bucket {b}"))?;
            tracing::info!(bucket = %b, created, "configured bucket");
        }
        Ok(store)
    })
    .await
    .context("creating the configured buckets")??;
    let store = Arc::new(store);
    let replication = store.journal().cloned().map(Replication::new);
    if let (Some(r), Some(target)) = (&replication, config.replica.clone()) {
        tokio::spawn(r.clone().run(store.clone(), target));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("reading the listening address")?;
    tracing::info!(
        %addr,
        data = %config.data.display(),
        quota_bytes = ?config.quota.limit,
        used_bytes = store.used(),
        access_key = %config.credentials.access_key,
        "serving S3"
    );
    // Tests and the supervisor read this line to learn the port when --listen ends in :0.
    println!("lattice-s3 listening on {addr}");
    let service = lattice_s3::server::service(store.clone(), &config.credentials);
    lattice_s3::server::serve(
        listener,
        store,
        service,
        replication.clone(),
        config.status_token.clone(),
        shutdown(),
    )
    .await;
    if let Some(r) = &replication {
        if let Err(e) = r.journal().persist(true) {
            tracing::error!(error = %e, "writing the replication checkpoint");
        }
    }
    tracing::info!("shutting down");
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
