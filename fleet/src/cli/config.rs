//! The CLI's own config: where the fleet is, the key it pins, and where the operator
//! credential lives, or an account's API token after `lattice login`. `lattice up` writes it;
//! `$LATTICE_CLI_CONFIG` points elsewhere. Always written mode 0600.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The fleet's HTTPS URL.
    pub fleet_url: String,
    /// The fleet's Ed25519 key (base64url): the CLI trusts only a server holding it.
    pub fleet_key: String,
    /// File holding the operator credential (mode 0600). The credential is never stored here.
    /// Empty for a config made by `lattice signup`/`login` without one.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub operator_token_file: PathBuf,
    /// An account's API token from `lattice login`; when set it is used instead of the
    /// operator credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
    /// The id of `api_token` (what `lattice logout` deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_id: Option<String>,
}

fn is_empty(p: &Path) -> bool {
    p.as_os_str().is_empty()
}

/// `$LATTICE_CLI_CONFIG`, else `$XDG_CONFIG_HOME/lattice/cli.toml`, else `~/.config/lattice/cli.toml`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LATTICE_CLI_CONFIG") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("lattice").join("cli.toml")
}

impl CliConfig {
    pub fn load(path: &Path) -> anyhow::Result<CliConfig> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "reading the CLI config {} (run `lattice up` first, or set LATTICE_CLI_CONFIG)",
                path.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self)?;
        crate::secrets::write_secret(path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The bearer credential the CLI sends: the API token after `lattice login`, else the
    /// operator credential.
    pub fn credential(&self) -> anyhow::Result<String> {
        match &self.api_token {
            Some(t) => Ok(t.clone()),
            None if is_empty(&self.operator_token_file) => anyhow::bail!(
                "no credential in the CLI config: run `lattice login` (or `lattice up`)"
            ),
            None => self.operator_token(),
        }
    }

    pub fn operator_token(&self) -> anyhow::Result<String> {
        let t = std::fs::read_to_string(&self.operator_token_file).with_context(|| {
            format!(
                "reading the operator credential {}",
                self.operator_token_file.display()
            )
        })?;
        Ok(t.trim().to_string())
    }
}
