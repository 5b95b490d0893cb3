//! Backup and restore of a fleet (issue 8, item 4): its database and the key material that
//! makes it the same fleet to its nodes (the Ed25519 signing key they pinned, the TLS key and
//! certificate, the broker secret, the operator token).
//!
//! A backup is a directory (mode 0700, files 0600) holding a consistent SQLite snapshot taken
//! while the fleet runs (`VACUUM INTO`), the key files, and `manifest.json`: format, schema
//! version (the last migration applied) and the SHA-256 of every file. On PostgreSQL the
//! database is PostgreSQL's to back up (`pg_dump`, see docs/operator-guide.md); `lattice
//! backup` then saves the key files only.
//!
//! Restore checks everything before it writes anything: every file's checksum, a schema no
//! newer than this binary's migrations, the snapshot's `PRAGMA integrity_check`; it refuses a
//! data directory that already holds a fleet unless told to set it aside.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The backup format this code writes and reads.
pub const FORMAT: u32 = 1;
/// The database snapshot's file name (SQLite).
pub const DB_FILE: &str = "fleet.db";
/// Files of the data directory that belong to the fleet's identity (missing ones are skipped:
/// e.g. a fleet on an external broker has no broker secret).
pub const KEY_FILES: &[&str] = &[
    "fleet.key",
    "fleet-rotations",
    "fleet-key.pem",
    "fleet-cert.pem",
    "fleet-broker.secret",
    "operator.token",
];

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_ms: u64,
    /// The last migration applied to the backed-up database (0: no database in the backup).
    pub schema_version: i64,
    /// File name → SHA-256 (hex).
    pub files: BTreeMap<String, String>,
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {} to 0700", dir.display()))
}

fn private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to 0600", path.display()))
}

/// The last migration this binary knows.
pub fn latest_schema() -> i64 {
    sqlx::migrate!("./migrations")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

async fn schema_of(db: &Path) -> anyhow::Result<i64> {
    let mut c =
        sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .with_context(|| format!("opening {}", db.display()))?;
    let v: (i64,) = sqlx::query_as("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
        .fetch_one(&mut c)
        .await
        .with_context(|| format!("{} holds no fleet schema", db.display()))?;
    Ok(v.0)
}

/// Backs up the fleet whose data directory is `data` into `out` (which must not exist).
/// `database`: the fleet's `--database` when it is not the SQLite default; a PostgreSQL URL
/// means the key files only. Returns the manifest written.
pub async fn backup(data: &Path, database: Option<&str>, out: &Path) -> anyhow::Result<Manifest> {
    if out.exists() {
        bail!(
            "{} exists already; back up into a new directory",
            out.display()
        );
    }
    if !data.join("fleet.key").exists() {
        bail!(
            "{} holds no fleet (no fleet.key): pass the fleet's --data directory",
            data.display()
        );
    }
    let postgres = database.is_some_and(|d| d.starts_with("postgres"));
    // Written next to `out` and renamed at the end: a failed backup leaves no half directory.
    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".partial");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_dir_all(&tmp);
    private_dir(&tmp)?;
    let result = async {
        let mut files = BTreeMap::new();
        let mut schema_version = 0;
        if !postgres {
            let db = data.join(DB_FILE);
            let snap = tmp.join(DB_FILE);
            let mut c = sqlx::sqlite::SqliteConnection::connect(&format!(
                "sqlite://{}?mode=ro",
                db.display()
            ))
            .await
            .with_context(|| format!("opening {}", db.display()))?;
            // A consistent copy while the fleet keeps writing (SQLite takes a read transaction).
            sqlx::query("VACUUM INTO $1")
                .bind(snap.display().to_string())
                .execute(&mut c)
                .await
                .with_context(|| format!("snapshot of {} into {}", db.display(), snap.display()))?;
            c.close().await.ok();
            private_file(&snap)?;
            schema_version = schema_of(&snap).await?;
            files.insert(DB_FILE.to_string(), sha256_file(&snap)?);
        }
        for name in KEY_FILES {
            let from = data.join(name);
            if !from.exists() {
                continue;
            }
            let to = tmp.join(name);
            std::fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            private_file(&to)?;
            files.insert(name.to_string(), sha256_file(&to)?);
        }
        let manifest = Manifest {
            format: FORMAT,
            created_ms: lattice_wire::now_ms(),
            schema_version,
            files,
        };
        let path = tmp.join("manifest.json");
        std::fs::write(&path, serde_json::to_string_pretty(&manifest)?)
            .with_context(|| format!("writing {}", path.display()))?;
        private_file(&path)?;
        std::fs::rename(&tmp, out)
            .with_context(|| format!("moving {} to {}", tmp.display(), out.display()))?;
        Ok(manifest)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Checks a backup without touching anything: format, every checksum, the schema, the
/// snapshot's integrity. Returns its manifest.
pub async fn verify(from: &Path) -> anyhow::Result<Manifest> {
    let path = from.join("manifest.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a fleet backup (no manifest.json)",
            from.display()
        )
    })?;
    let m: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{}: unreadable manifest", path.display()))?;
    if m.format != FORMAT {
        bail!(
            "{}: backup format {} (this lattice reads {FORMAT})",
            from.display(),
            m.format
        );
    }
    if !m.files.contains_key("fleet.key") {
        bail!("{}: the backup holds no fleet.key", from.display());
    }
    for (name, want) in &m.files {
        if name.contains('/') || name.starts_with('.') {
            bail!("{}: bad file name {name:?} in the manifest", from.display());
        }
        let got = sha256_file(&from.join(name))?;
        if &got != want {
            bail!(
                "{}: {name} is damaged (its SHA-256 is not the one the backup recorded)",
                from.display()
            );
        }
    }
    if m.files.contains_key(DB_FILE) {
        let latest = latest_schema();
        if m.schema_version > latest {
            bail!(
                "{}: the database is from a newer Lattice (schema {} > {latest}, the newest this \
                 one knows); restore it with that version",
                from.display(),
                m.schema_version
            );
        }
        let db = from.join(DB_FILE);
        let mut c =
            sqlx::sqlite::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display()))
                .await
                .with_context(|| format!("opening {}", db.display()))?;
        let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .with_context(|| format!("checking {}", db.display()))?;
        if check != "ok" {
            bail!(
                "{}: the database fails its integrity check: {check}",
                db.display()
            );
        }
    }
    Ok(m)
}

/// Restores the backup in `from` into the data directory `data`. A directory that holds a
/// fleet already is refused, unless `set_aside`: its files then move to
/// `data/pre-restore-<ms>/` first. The fleet must be stopped. Returns the manifest restored.
pub async fn restore(from: &Path, data: &Path, set_aside: bool) -> anyhow::Result<Manifest> {
    let m = verify(from).await?;
    // Never under a running fleet, and no fleet starts on it until the restore is done.
    let _lock = if data.is_dir() {
        Some(crate::data_lock::acquire(data)?)
    } else {
        None
    };
    // The WAL of an old database counts too: SQLite would replay it into the restored one.
    let present: Vec<&str> = [DB_FILE, "fleet.db-wal", "fleet.db-shm"]
        .into_iter()
        .chain(KEY_FILES.iter().copied())
        .filter(|f| data.join(f).exists())
        .collect();
    if !present.is_empty() {
        if !set_aside {
            bail!(
                "{} holds a fleet already ({}); stop it and pass --set-aside to keep its files \
                 under {}/pre-restore-<time>/, or restore into an empty directory",
                data.display(),
                present.join(", "),
                data.display()
            );
        }
        let aside = data.join(format!("pre-restore-{}", lattice_wire::now_ms()));
        private_dir(&aside)?;
        for f in &present {
            let p = data.join(f);
            std::fs::rename(&p, aside.join(f))
                .with_context(|| format!("setting {} aside", p.display()))?;
        }
    }
    crate::server::prepare_data_dir(data)?;
    for name in m.files.keys() {
        let to = data.join(name);
        std::fs::copy(from.join(name), &to)
            .with_context(|| format!("restoring {}", to.display()))?;
        private_file(&to)?;
    }
    if m.files.contains_key(DB_FILE) {
        after_restore(&crate::server::sqlite_url(data)).await?;
    }
    Ok(m)
}

/// Makes a restored database safe to run against nodes that went on after the backup (see
/// [`crate::store::Store::after_restore`]); migrates it to this binary's schema on the way.
/// `lattice restore` runs it on the SQLite snapshot; on PostgreSQL run it (`lattice restore
/// --database URL --after-pg-restore`) after `pg_restore`.
pub async fn after_restore(database: &str) -> anyhow::Result<u64> {
    let store = crate::store::Store::open(database).await.with_context(|| {
        format!(
            "opening the restored database {}",
            crate::store::redact(database)
        )
    })?;
    Ok(store.after_restore(lattice_wire::now_ms()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_schema_is_the_last_migration() {
        let n = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .count() as i64;
        assert_eq!(latest_schema(), n);
    }
}
