//! An external MQTT broker (`lattice fleet --broker …`): where it is, as whom the fleet logs in,
//! and node accounts on Mosquitto through its dynamic-security plugin.
//!
//! The fleet talks to the plugin with its own small MQTT client ([`DynsecClient`], separate
//! from the link so a slow store never delays an account change and the link stays plain
//! node traffic): commands go to `$CONTROL/dynamic-security/v1`, answers come back on
//! `…/response` and are matched by `correlationData`.

use super::accounts::{AccountsError, AccountsFuture, BrokerAccounts};
use super::dynsec::{self, Command, Response, CONTROL_TOPIC, FLEET_ROLE, RESPONSE_TOPIC};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch};

pub use lattice_wire::broker_url::{BrokerUrl, BrokerUrlError};

/// How the fleet uses an external broker.
#[derive(Clone)]
pub struct ExternalBroker {
    /// Where the fleet connects (link and account management).
    pub url: BrokerUrl,
    /// The fleet's user on the broker (dynamic-security admin rights).
    pub user: String,
    password: String,
    /// What nodes are told at registration, in order of preference.
    pub node_urls: Vec<BrokerUrl>,
}

impl fmt::Debug for ExternalBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalBroker")
            .field("url", &self.url.to_string())
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field(
                "node_urls",
                &self
                    .node_urls
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Why `--broker …` flags were refused.
#[derive(Debug, thiserror::Error)]
pub enum ExternalConfigError {
    #[error("--{flag}: {source}")]
    Url {
        flag: &'static str,
        #[source]
        source: BrokerUrlError,
    },
    #[error("--broker-user {user:?}: {problem}")]
    User { user: String, problem: &'static str },
    #[error("--broker-password-file {path}: {source}")]
    PasswordIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--broker-password-file {path}: {problem}")]
    Password { path: PathBuf, problem: String },
}

impl ExternalBroker {
    /// From the command line: `--broker URL --broker-user USER --broker-password-file FILE
    /// [--node-broker-url URL]…` (node URLs default to the broker URL).
    pub fn from_flags(
        url: &str,
        user: &str,
        password_file: &Path,
        node_urls: &[String],
    ) -> Result<ExternalBroker, ExternalConfigError> {
        let url = BrokerUrl::parse(url).map_err(|source| ExternalConfigError::Url {
            flag: "broker",
            source,
        })?;
        let bad_user = |problem| ExternalConfigError::User {
            user: user.to_string(),
            problem,
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(bad_user("must be non-empty, without control characters"));
        }
        if user.starts_with("n-") {
            return Err(bad_user(
                "names starting with n- are node accounts; pick another name",
            ));
        }
        let password = read_password(password_file)?;
        let node_urls = if node_urls.is_empty() {
            vec![url.clone()]
        } else {
            node_urls
                .iter()
                .map(|u| BrokerUrl::parse(u))
                .collect::<Result<_, _>>()
                .map_err(|source| ExternalConfigError::Url {
                    flag: "node-broker-url",
                    source,
                })?
        };
        Ok(ExternalBroker {
            url,
            user: user.to_string(),
            password,
            node_urls,
        })
    }

    pub fn password(&self) -> &str {
        &self.password
    }
}

/// Reads the fleet's broker password: the file's first line; refused when others may read it.
fn read_password(path: &Path) -> Result<String, ExternalConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ExternalConfigError::PasswordIo {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(ExternalConfigError::Password {
            path: path.to_path_buf(),
            problem: format!(
                "mode is {:04o}: other users could read it (chmod o-rwx)",
                mode & 0o777
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(ExternalConfigError::Password {
            path: path.to_path_buf(),
            problem: "is empty (the password is its first line)".into(),
        });
    }
    Ok(password)
}

/// MQTT options for the fleet's connections to an external broker (pinned TLS for
/// `mqtts://`: the broker must serve the fleet's certificate).
pub fn mqtt_options(
    broker: &ExternalBroker,
    client_id: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let mut o = MqttOptions::new(client_id, broker.url.client_host(), broker.url.port);
    o.set_credentials(&broker.user, &broker.password);
    if let Some(config) = tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    o
}

/// Where the control connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Connecting,
    Ready,
    /// CONNACK said bad user name or password / not authorized.
    Refused,
    /// The response topic subscription was refused.
    NoControlAccess,
    /// The TLS handshake failed (with the error).
    Tls(String),
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Response>>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Response>>> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A small MQTT client that sends dynamic-security commands and waits for their answers.
pub struct DynsecClient {
    client: AsyncClient,
    pending: Pending,
    state: watch::Receiver<State>,
    prefix: String,
    next: AtomicU64,
    timeout: Duration,
    broker: String,
    user: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DynsecClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes a call's correlation ids when it ends, answered or not.
struct PendingGuard<'a> {
    pending: &'a Pending,
    ids: Vec<String>,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut p = lock(self.pending);
        for id in &self.ids {
            p.remove(id);
        }
    }
}

impl DynsecClient {
    /// Starts the client (it connects and reconnects by itself, with backoff and a log line per
    /// failed attempt). `timeout` bounds every call.
    pub fn start(
        broker: &ExternalBroker,
        client_id: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> DynsecClient {
        let mut opts = mqtt_options(broker, client_id, tls);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        // Answers to everyone's commands arrive here (e.g. an operator's listClients on a large
        // fleet): accept big ones rather than being disconnected by them.
        opts.set_max_packet_size(32 * 1024 * 1024, 1024 * 1024);
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let (state_tx, state) = watch::channel(State::Connecting);
        let pending: Pending = Arc::default();
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            state_tx,
            pending.clone(),
            broker.url.to_string(),
            broker.user.clone(),
        ));
        DynsecClient {
            client,
            pending,
            state,
            prefix: format!("{client_id}-{:08x}", rand::random::<u32>()),
            next: AtomicU64::new(0),
            timeout,
            broker: broker.url.to_string(),
            user: broker.user.clone(),
            task,
        }
    }

    /// Waits up to `limit` for the connection to be usable.
    async fn ready(&self, limit: Duration) -> Result<(), AccountsError> {
        let mut rx = self.state.clone();
        let state = tokio::time::timeout(limit, rx.wait_for(|s| *s != State::Connecting))
            .await
            .ok()
            .and_then(|r| r.ok().map(|s| s.clone()));
        match state {
            Some(State::Ready) => Ok(()),
            Some(State::Refused) => Err(AccountsError::Credentials {
                broker: self.broker.clone(),
                user: self.user.clone(),
            }),
            Some(State::NoControlAccess) => Err(AccountsError::NoControlAccess {
                broker: self.broker.clone(),
                user: self.user.clone(),
                topic: RESPONSE_TOPIC,
            }),
            Some(State::Tls(error)) => Err(AccountsError::Tls {
                broker: self.broker.clone(),
                error,
            }),
            Some(State::Connecting) | None => Err(AccountsError::NotConnected {
                broker: self.broker.clone(),
            }),
        }
    }

    /// Sends `commands` in one message; returns their answers in the same order. Waiting for
    /// the connection and for the answers share one deadline (`timeout`).
    pub async fn call(&self, commands: Vec<Command>) -> Result<Vec<Response>, AccountsError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.ready(self.timeout).await?;
        let tagged: Vec<(String, Command)> = commands
            .into_iter()
            .map(|c| {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                (format!("{}-{n}", self.prefix), c)
            })
            .collect();
        let payload = dynsec::encode(&tagged).map_err(AccountsError::Encode)?;
        let mut receivers = Vec::with_capacity(tagged.len());
        {
            let mut p = lock(&self.pending);
            for (id, _) in &tagged {
                let (tx, rx) = oneshot::channel();
                p.insert(id.clone(), tx);
                receivers.push(rx);
            }
        }
        let _guard = PendingGuard {
            pending: &self.pending,
            ids: tagged.iter().map(|(id, _)| id.clone()).collect(),
        };
        let names = tagged
            .iter()
            .map(|(_, c)| c.name())
            .collect::<Vec<_>>()
            .join(", ");
        tracing::debug!(commands = %names, "dynamic-security request");
        let publish = self
            .client
            .publish(CONTROL_TOPIC, QoS::AtLeastOnce, false, payload);
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(r) => r.map_err(AccountsError::Client)?,
            Err(_) => {
                return Err(AccountsError::NotConnected {
                    broker: self.broker.clone(),
                })
            }
        }
        let mut answers = Vec::with_capacity(receivers.len());
        for rx in receivers {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answer)) => answers.push(answer),
                // The connection dropped while waiting: the pending calls were failed at once.
                Ok(Err(_)) => {
                    return Err(AccountsError::NotConnected {
                        broker: self.broker.clone(),
                    })
                }
                Err(_) => {
                    return Err(AccountsError::NoAnswer {
                        commands: names,
                        secs: self.timeout.as_secs(),
                        user: self.user.clone(),
                        topic: CONTROL_TOPIC,
                    })
                }
            }
        }
        Ok(answers)
    }

    /// [`DynsecClient::call`], then every answer must be a success (or, with `not_found_ok`,
    /// "not found").
    async fn call_checked(
        &self,
        commands: Vec<Command>,
        not_found_ok: bool,
    ) -> Result<Vec<Response>, AccountsError> {
        let sent: Vec<(&'static str, String)> =
            commands.iter().map(|c| (c.name(), c.subject())).collect();
        let answers = self.call(commands).await?;
        for ((command, subject), answer) in sent.into_iter().zip(&answers) {
            if let Err(error) = answer.outcome() {
                if !(not_found_ok && answer.is_not_found()) {
                    return Err(AccountsError::Refused {
                        command,
                        subject,
                        error: error.to_string(),
                    });
                }
            }
        }
        Ok(answers)
    }
}

/// Polls the control connection: (re)subscribes to the answers after every CONNACK, hands
/// answers to their callers, and fails pending calls when the connection drops.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    state: watch::Sender<State>,
    pending: Pending,
    broker: String,
    user: String,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                state.send_replace(State::Connecting);
                if let Err(e) = client.try_subscribe(RESPONSE_TOPIC, QoS::AtLeastOnce) {
                    tracing::error!(error = %e, "cannot subscribe to the dynamic-security answers");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if granted {
                    tracing::info!(%broker, "connected to the MQTT broker; dynamic-security ready");
                    state.send_replace(State::Ready);
                } else {
                    tracing::error!(%broker, topic = RESPONSE_TOPIC, "the broker refused the subscription to the dynamic-security answers");
                    state.send_replace(State::NoControlAccess);
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == RESPONSE_TOPIC => {
                match dynsec::decode(&p.payload) {
                    Ok(answers) => {
                        let mut waiting = lock(&pending);
                        for a in answers {
                            // Answers to other clients' commands (other replicas, operators)
                            // carry correlation ids we do not know: ignore them.
                            let tx = a.correlation.as_ref().and_then(|id| waiting.remove(id));
                            if let Some(tx) = tx {
                                let _ = tx.send(a);
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable dynamic-security answer"),
                }
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let refused = matches!(
                    e,
                    ConnectionError::ConnectionRefused(
                        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
                    )
                );
                state.send_replace(match &e {
                    _ if refused => State::Refused,
                    ConnectionError::Tls(tls) => State::Tls(tls.to_string()),
                    _ => State::Connecting,
                });
                // Whatever was in flight will not be answered on this connection.
                lock(&pending).clear();
                let retry_in_ms = backoff.as_millis() as u64;
                if refused {
                    tracing::error!(%broker, %user, error = %e, retry_in_ms,
                        "the MQTT broker refused the fleet's user name or password");
                } else {
                    tracing::warn!(%broker, error = %e, retry_in_ms,
                        "cannot reach the MQTT broker for account management");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Node accounts on Mosquitto, through its dynamic-security plugin.
pub struct MosquittoAccounts {
    client: DynsecClient,
    user: String,
}

/// How long one dynamic-security request may take, connection wait included.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How many commands go in one request when disabling many clients.
const BATCH: usize = 100;

impl MosquittoAccounts {
    /// Connects, retrying with backoff while the broker is unreachable (each attempt is logged);
    /// fails at once on refused credentials, a failed TLS handshake or missing control rights.
    pub async fn connect(
        broker: &ExternalBroker,
        client_id: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<MosquittoAccounts, AccountsError> {
        // Registration waits for this while latticed waits 10 s for the answer: stay well below.
        let client = DynsecClient::start(broker, client_id, tls, CALL_TIMEOUT);
        loop {
            match client.ready(Duration::from_secs(30)).await {
                Ok(()) => break,
                Err(AccountsError::NotConnected { broker }) => {
                    tracing::info!(%broker, "still waiting for the MQTT broker");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(MosquittoAccounts {
            client,
            user: broker.user.clone(),
        })
    }

    /// Makes role `lattice-fleet` hold exactly the fleet's ACLs and gives it to the fleet's user.
    ///
    /// Mosquitto disconnects every client of a role whose ACLs change, and a client whose roles
    /// change: this very connection included. So each round reads the current state, sends
    /// what differs, and the next round checks it (after reconnecting if need be).
    pub async fn prepare(&self) -> Result<(), AccountsError> {
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            let cmds = self.fleet_role_changes().await?;
            if cmds.is_empty() {
                return Ok(());
            }
            tracing::info!(role = FLEET_ROLE, user = %self.user, changes = cmds.len(),
                "updating the fleet's broker role (Mosquitto disconnects its users meanwhile)");
            match self.client.call_checked(cmds, false).await {
                // Done, or cut off by the change itself: the next round checks.
                Ok(_) | Err(AccountsError::NotConnected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(AccountsError::Refused {
            command: "createRole",
            subject: format!("role {FLEET_ROLE}"),
            error: format!("still not in place after {ROUNDS} rounds"),
        })
    }

    /// What must change for role `lattice-fleet` to be right and held by the fleet's user.
    async fn fleet_role_changes(&self) -> Result<Vec<Command>, AccountsError> {
        let answers = self
            .client
            .call_checked(
                vec![
                    Command::GetRole {
                        rolename: FLEET_ROLE.into(),
                    },
                    Command::GetClient {
                        username: self.user.clone(),
                    },
                ],
                true,
            )
            .await?;
        let malformed = |command, reason: String| AccountsError::Malformed { command, reason };
        let existing = match (&answers[0].data, answers[0].is_not_found()) {
            (_, true) => None,
            (Some(d), false) => {
                Some(dynsec::role_acls(d).map_err(|e| malformed("getRole", e.to_string()))?)
            }
            (None, false) => return Err(malformed("getRole", "no data".into())),
        };
        let roles = match &answers[1].data {
            Some(d) => {
                dynsec::client_roles(d).map_err(|e| malformed("getClient", e.to_string()))?
            }
            // Not a dynamic-security client (e.g. a password-file user): no roles to give.
            None => {
                return Err(AccountsError::Refused {
                    command: "getClient",
                    subject: format!("client {}", self.user),
                    error: answers[1].error.clone().unwrap_or_else(|| "no data".into()),
                })
            }
        };
        let mut cmds = dynsec::sync_role(FLEET_ROLE, existing.as_deref(), &dynsec::fleet_acls());
        if !roles.iter().any(|r| r == FLEET_ROLE) {
            cmds.push(Command::AddClientRole {
                username: self.user.clone(),
                rolename: FLEET_ROLE.into(),
            });
        }
        Ok(cmds)
    }

    /// Disables the clients of `node_ids` (revoked nodes; a missing client is fine). Returns how
    /// many were disabled.
    pub async fn disable_nodes(&self, node_ids: &[String]) -> Result<usize, AccountsError> {
        let mut disabled = 0;
        for chunk in node_ids.chunks(BATCH) {
            let cmds = chunk.iter().map(|id| dynsec::revoke_node(id)).collect();
            let answers = self.client.call_checked(cmds, true).await?;
            disabled += answers.iter().filter(|a| a.error.is_none()).count();
        }
        Ok(disabled)
    }
}

impl BrokerAccounts for MosquittoAccounts {
    fn add_node<'a>(&'a self, node_id: &'a str, password: &'a str) -> AccountsFuture<'a> {
        Box::pin(async move {
            let cmds = dynsec::add_node(node_id, password);
            let sent: Vec<_> = cmds.iter().map(|c| (c.name(), c.subject())).collect();
            let answers = self.client.call(cmds).await?;
            let failed = sent
                .into_iter()
                .zip(&answers)
                .find_map(|((command, subject), a)| {
                    a.outcome().err().map(|error| AccountsError::Refused {
                        command,
                        subject,
                        error: error.to_string(),
                    })
                });
            let Some(failed) = failed else {
                return Ok(());
            };
            let undo = dynsec::undo_add_node(node_id, &answers);
            if !undo.is_empty() {
                if let Err(e) = self.client.call_checked(undo, true).await {
                    tracing::warn!(node = node_id, error = %e, "cannot undo a half-made broker account (unusable: nobody holds its password)");
                }
            }
            Err(failed)
        })
    }

    fn remove_node<'a>(&'a self, node_id: &'a str) -> AccountsFuture<'a> {
        Box::pin(async move {
            self.client
                .call_checked(dynsec::remove_node(node_id), true)
                .await
                .map(drop)
        })
    }

    fn revoke_node<'a>(&'a self, node_id: &'a str) -> AccountsFuture<'a> {
        Box::pin(async move {
            self.client
                .call_checked(vec![dynsec::revoke_node(node_id)], true)
                .await
                .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_and_the_password_never_shows() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-pass\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let b = ExternalBroker::from_flags("mqtt://127.0.0.1:1883", "lattice", &pw, &[]).unwrap();
        assert_eq!(b.password(), "s3cret-pass");
        assert_eq!(
            b.node_urls,
            vec![b.url.clone()],
            "nodes default to --broker"
        );
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("lattice"),
            "{shown}"
        );
        let b = ExternalBroker::from_flags(
            "mqtt://127.0.0.1:1883",
            "lattice",
            &pw,
            &["mqtts://fleet.example:8883".into()],
        )
        .unwrap();
        assert_eq!(b.node_urls[0].to_string(), "mqtts://fleet.example:8883");

        let err = |url: &str, user: &str, file: &Path, nodes: &[String]| {
            ExternalBroker::from_flags(url, user, file, nodes)
                .unwrap_err()
                .to_string()
        };
        let e = err("http://x", "lattice", &pw, &[]);
        assert!(e.starts_with("--broker: "), "{e}");
        let e = err("mqtt://x", "lattice", &pw, &["x".into()]);
        assert!(e.starts_with("--node-broker-url: "), "{e}");
        assert!(err("mqtt://x", "", &pw, &[]).contains("--broker-user"));
        assert!(err("mqtt://x", "n-1", &pw, &[]).contains("node accounts"));
        let e = err("mqtt://x", "lattice", &dir.path().join("missing"), &[]);
        assert!(
            e.contains("--broker-password-file") && e.contains("missing"),
            "{e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = err("mqtt://x", "lattice", &pw, &[]);
        assert!(e.contains("0644") && !e.contains("s3cret"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(err("mqtt://x", "lattice", &empty, &[]).contains("empty"));
    }
}
