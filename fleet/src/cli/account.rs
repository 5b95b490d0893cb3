//! Account commands: `signup`, `login`, `logout`, `whoami`, and the operators' `audit`.
//!
//! The password is read from standard input: typed without echo on a terminal, else the first
//! line (`--password-stdin` style, for scripts). It never appears in arguments, the
//! environment, the config or the logs.

use super::client::Client;
use super::config::{default_path, CliConfig};
use crate::api::Role;
use crate::store::{AccountRow, ApiTokenRow, AuditEntry};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::io::IsTerminal;

/// Where the fleet is, for a first sign-up or login on a machine without a CLI config.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetFlags {
    /// The fleet's HTTPS URL (default: the CLI config's).
    #[arg(long = "fleet", value_name = "URL", requires = "fleet_key")]
    pub fleet: Option<String>,
    /// The fleet's public key, as `lattice fleet` prints it (default: the CLI config's). Keys
    /// are base64url and may start with `-`, so the value is taken as given.
    #[arg(
        long,
        value_name = "KEY",
        requires = "fleet",
        allow_hyphen_values = true
    )]
    pub fleet_key: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AccountCmd {
    /// Creates an account (consumer unless --role says otherwise; operator accounts need the
    /// operator credential in the CLI config). Reads the password from standard input.
    Signup {
        #[arg(long)]
        email: String,
        /// Display name (default: the part of the email before `@`).
        #[arg(long)]
        name: Option<String>,
        /// consumer, provider or operator.
        #[arg(long, default_value = "consumer")]
        role: String,
        #[command(flatten)]
        fleet: FleetFlags,
    },
    /// Logs in and keeps the API token in the CLI config (mode 0600). Reads the password from
    /// standard input.
    Login {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        fleet: FleetFlags,
    },
    /// Deletes the logged-in API token on the fleet and forgets it.
    Logout,
    /// Changes the logged-in account's password: reads the current one, then the new one, from
    /// standard input. Every API token of the account is deleted; the CLI keeps the new one.
    Passwd,
    /// Who the CLI's credential is.
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// The logged-in account's API tokens (for scripts and CI).
    ApiTokens {
        #[command(subcommand)]
        cmd: ApiTokensCmd,
    },
    /// Accounts (operators): list them, change a role, disable or enable one.
    Accounts {
        #[command(subcommand)]
        cmd: AccountsCmd,
    },
    /// The audit log, newest first (operators).
    Audit {
        /// Only what this account id did.
        #[arg(long)]
        account: Option<String>,
        /// Only this action, e.g. login.failure.
        #[arg(long)]
        action: Option<String>,
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum ApiTokensCmd {
    /// Creates a token and prints it on stdout (shown once; only its hash is kept).
    Create {
        /// What it is for, e.g. `ci`.
        name: String,
        /// Seconds until it expires (default 90 days, at most 1 year).
        #[arg(long)]
        ttl_secs: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Lists tokens (every account's for operators), never their secrets.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Deletes a token: it stops working at once.
    Delete { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCmd {
    /// Every account (never password hashes).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Changes an account's role, or disables (its tokens stop working at once) or enables it.
    Set {
        /// Account id (`lattice accounts list`).
        id: String,
        /// consumer, provider or operator.
        #[arg(long)]
        role: Option<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
}

/// The CLI config to use: the existing one, or a new one for `--fleet`/`--fleet-key`.
fn config(fleet: &FleetFlags) -> anyhow::Result<CliConfig> {
    let path = default_path();
    match (&fleet.fleet, &fleet.fleet_key) {
        (Some(url), Some(key)) => {
            let mut cfg = CliConfig::load(&path).ok().filter(|c| &c.fleet_url == url);
            if let Some(c) = &mut cfg {
                c.fleet_key = key.clone();
            }
            Ok(cfg.unwrap_or(CliConfig {
                fleet_url: url.clone(),
                fleet_key: key.clone(),
                operator_token_file: Default::default(),
                api_token: None,
                api_token_id: None,
            }))
        }
        _ => CliConfig::load(&path),
    }
}

fn read_password(prompt: &str) -> anyhow::Result<String> {
    let pw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("reading the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        bail!("no password given (type it, or pipe it on standard input)");
    }
    Ok(pw)
}

#[derive(Deserialize)]
struct LoggedIn {
    token: String,
    token_id: String,
    account_id: String,
    role: Role,
}

#[derive(Deserialize, serde::Serialize)]
struct Me {
    account_id: String,
    role: Role,
    email: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, serde::Serialize)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    next: Option<String>,
}

pub async fn run(cmd: AccountCmd) -> anyhow::Result<()> {
    match cmd {
        AccountCmd::Signup {
            email,
            name,
            role,
            fleet,
        } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let cfg = config(&fleet)?;
            let password = read_password("Password for the new account: ")?;
            let body = serde_json::json!({
                "email": email, "name": name, "password": password, "role": role,
            });
            let a: AccountRow = Client::anonymous(&cfg)?
                .post("/api/v1/accounts", &body)
                .await?;
            println!("account {} ({}, {}) created", a.id, a.email, a.role);
            println!("next: lattice login --email {}", a.email);
            Ok(())
        }
        AccountCmd::Login { email, fleet } => {
            let mut cfg = config(&fleet)?;
            let password = read_password("Password: ")?;
            let body = serde_json::json!({ "email": email, "password": password });
            // A login sends no credential, whatever the config holds.
            let mut anon = cfg.clone();
            anon.api_token = None;
            anon.operator_token_file = Default::default();
            let l: LoggedIn = Client::anonymous(&anon)?
                .post("/api/v1/login", &body)
                .await?;
            cfg.api_token = Some(l.token);
            cfg.api_token_id = Some(l.token_id);
            let path = default_path();
            cfg.save(&path)?;
            println!(
                "logged in as {} ({}); token kept in {}",
                l.account_id,
                l.role,
                path.display()
            );
            Ok(())
        }
        AccountCmd::Logout => {
            let path = default_path();
            let mut cfg = CliConfig::load(&path)?;
            let Some(id) = cfg.api_token_id.clone() else {
                bail!("not logged in (no API token in {})", path.display());
            };
            if let Err(e) = Client::new(&cfg)?
                .delete(&format!("/api/v1/api-tokens/{id}"))
                .await
            {
                eprintln!("the fleet did not delete token {id}: {e:#}");
            }
            cfg.api_token = None;
            cfg.api_token_id = None;
            cfg.save(&path)?;
            println!("logged out");
            Ok(())
        }
        AccountCmd::Passwd => {
            let path = default_path();
            let mut cfg = CliConfig::load(&path)?;
            if cfg.api_token.is_none() {
                bail!("not logged in: run `lattice login` first");
            }
            let (current, new) = if std::io::stdin().is_terminal() {
                let current = read_password("Current password: ")?;
                let new = read_password("New password: ")?;
                if read_password("New password again: ")? != new {
                    bail!("the new passwords differ");
                }
                (current, new)
            } else {
                (read_password("")?, read_password("")?)
            };
            let body = serde_json::json!({ "current_password": current, "new_password": new });
            let l: LoggedIn = Client::new(&cfg)?.put("/api/v1/me/password", &body).await?;
            cfg.api_token = Some(l.token);
            cfg.api_token_id = Some(l.token_id);
            cfg.save(&path)?;
            println!(
                "password changed; every earlier API token of {} is deleted",
                l.account_id
            );
            Ok(())
        }
        AccountCmd::Whoami { json } => {
            let cfg = CliConfig::load(&default_path())?;
            let me: Me = Client::new(&cfg)?.get("/api/v1/me").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&me)?);
            } else {
                println!(
                    "{} ({}){}",
                    me.account_id,
                    me.role,
                    me.email.map(|e| format!(" {e}")).unwrap_or_default()
                );
            }
            Ok(())
        }
        AccountCmd::Accounts { cmd } => accounts(cmd).await,
        AccountCmd::ApiTokens { cmd } => api_tokens(cmd).await,
        AccountCmd::Audit {
            account,
            action,
            limit,
            json,
        } => {
            let cfg = CliConfig::load(&default_path())?;
            let mut q = vec![format!("limit={limit}")];
            for (k, v) in [("account", account), ("action", action)] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let page: AuditPage = Client::new(&cfg)?
                .get(&format!("/api/v1/audit?{}", q.join("&")))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.entries)?);
                return Ok(());
            }
            println!(
                "{:<14} {:<20} {:<26} {:<20} DETAIL",
                "AT (ms)", "ACTOR", "ACTION", "TARGET"
            );
            for e in page.entries {
                println!(
                    "{:<14} {:<20} {:<26} {:<20} {}",
                    e.at_ms, e.actor, e.action, e.target, e.detail
                );
            }
            Ok(())
        }
    }
}

async fn api_tokens(cmd: ApiTokensCmd) -> anyhow::Result<()> {
    let c = Client::new(&CliConfig::load(&default_path())?)?;
    match cmd {
        ApiTokensCmd::Create {
            name,
            ttl_secs,
            json,
        } => {
            let body = serde_json::json!({ "name": name, "ttl_secs": ttl_secs });
            let t: serde_json::Value = c.post("/api/v1/api-tokens", &body).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                eprintln!(
                    "API token {} ({}), expires at {} ms; shown once:",
                    t["id"].as_str().unwrap_or_default(),
                    t["name"].as_str().unwrap_or_default(),
                    t["expires_ms"]
                );
                println!("{}", t["token"].as_str().unwrap_or_default());
            }
            Ok(())
        }
        ApiTokensCmd::List { json } => {
            let list: Vec<ApiTokenRow> = c.get("/api/v1/api-tokens").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<20} {:<20} {:<20} EXPIRES (ms)", "ID", "ACCOUNT", "NAME");
            for t in list {
                println!(
                    "{:<20} {:<20} {:<20} {}",
                    t.id, t.account_id, t.name, t.expires_ms
                );
            }
            Ok(())
        }
        ApiTokensCmd::Delete { id } => {
            c.delete(&format!("/api/v1/api-tokens/{}", urlencode(&id)))
                .await?;
            println!("API token {id} deleted");
            Ok(())
        }
    }
}

async fn accounts(cmd: AccountsCmd) -> anyhow::Result<()> {
    let c = Client::new(&CliConfig::load(&default_path())?)?;
    match cmd {
        AccountsCmd::List { json } => {
            let list: Vec<AccountRow> = c.get("/api/v1/accounts").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<20} {:<9} {:<9} {:<32} NAME",
                "ID", "ROLE", "STATE", "EMAIL"
            );
            for a in list {
                let state = if a.disabled { "disabled" } else { "active" };
                println!(
                    "{:<20} {:<9} {:<9} {:<32} {}",
                    a.id, a.role, state, a.email, a.name
                );
            }
            Ok(())
        }
        AccountsCmd::Set {
            id,
            role,
            disable,
            enable,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(r) = role {
                let r: Role = r.parse().map_err(|e: String| anyhow::anyhow!(e))?;
                body.insert("role".into(), serde_json::json!(r));
            }
            if disable || enable {
                body.insert("disabled".into(), serde_json::json!(disable));
            }
            if body.is_empty() {
                bail!("nothing to change: give --role, --disable or --enable");
            }
            let a: AccountRow = c
                .patch(
                    &format!("/api/v1/accounts/{}", urlencode(&id)),
                    &body.into(),
                )
                .await?;
            let state = if a.disabled { "disabled" } else { "active" };
            println!("{} ({}): {}, {state}", a.id, a.email, a.role);
            Ok(())
        }
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
