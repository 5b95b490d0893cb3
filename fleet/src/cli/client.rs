//! The CLI's HTTP client: pinned to the fleet key, authenticated with the config's credential
//! (an account's API token after `lattice login`, else the operator credential).

use super::config::CliConfig;
use crate::api::ErrorBody;
use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    key: lattice_wire::IdentityPublic,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(cfg: &CliConfig) -> anyhow::Result<Client> {
        let key = lattice_wire::IdentityPublic::parse(&cfg.fleet_key)
            .context("fleet_key in the CLI config")?;
        Ok(Client {
            http: lattice_wire::pin::pinned_http_client(&key, Duration::from_secs(15))?,
            key,
            base: cfg.fleet_url.trim_end_matches('/').to_string(),
            token: Some(cfg.credential()?),
        })
    }

    /// A client that sends no credential (sign-up, login), or the config's when it has one.
    pub fn anonymous(cfg: &CliConfig) -> anyhow::Result<Client> {
        let key = lattice_wire::IdentityPublic::parse(&cfg.fleet_key)
            .context("fleet_key in the CLI config")?;
        Ok(Client {
            http: lattice_wire::pin::pinned_http_client(&key, Duration::from_secs(15))?,
            key,
            base: cfg.fleet_url.trim_end_matches('/').to_string(),
            token: cfg.credential().ok(),
        })
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// DELETE; the answer's body is ignored.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let resp = self
            .auth(self.http.delete(format!("{}{path}", self.base)))
            .send()
            .await;
        let resp = resp.with_context(|| format!("cannot reach the fleet for {path}"))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => bail!("{} ({status})", e.message),
                Err(_) => bail!("{path}: HTTP {status}"),
            }
        }
        Ok(())
    }

    /// GET an answer that streams (no overall time limit), copying its body to `out` as it
    /// arrives.
    pub async fn stream_to(
        &self,
        path: &str,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<()> {
        let http = lattice_wire::pin::pinned_streaming_client(&self.key, Duration::from_secs(15))?;
        let resp = self
            .auth(http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .with_context(|| format!("cannot reach the fleet for {path}"))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => bail!("{} ({status})", e.message),
                Err(_) => bail!("{path}: HTTP {status}"),
            }
        }
        let mut resp = resp;
        while let Some(chunk) = resp
            .chunk()
            .await
            .with_context(|| format!("the fleet's answer to {path} broke off"))?
        {
            out.write_all(&chunk)
                .context("writing to standard output")?;
            out.flush().context("writing to standard output")?;
        }
        Ok(())
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self
            .auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await;
        decode(path, resp).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let resp = self
            .auth(self.http.post(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .await;
        decode(path, resp).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let resp = self
            .auth(self.http.put(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .await;
        decode(path, resp).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let resp = self
            .auth(self.http.patch(format!("{}{path}", self.base)))
            .json(body)
            .send()
            .await;
        decode(path, resp).await
    }
}

async fn decode<T: DeserializeOwned>(
    path: &str,
    resp: reqwest::Result<reqwest::Response>,
) -> anyhow::Result<T> {
    let resp = resp.with_context(|| format!("cannot reach the fleet for {path}"))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .with_context(|| format!("reading the answer to {path}"))?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => bail!("{} ({status})", e.message),
            Err(_) => bail!("{path}: HTTP {status}"),
        }
    }
    serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer to {path}"))
}
