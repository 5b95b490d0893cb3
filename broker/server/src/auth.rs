//! The device-authentication hook and its installation into rumqttd.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::ServerSettings;
use tokio::runtime::Handle;
use tracing::{debug, warn};

/// The future an [`Authenticator`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

/// Decides whether an MQTT CONNECT is allowed. Implemented by the fleet, which checks the node
/// credentials in its store (rule: `client_id == username` and the password matches).
///
/// Called once per CONNECT with the values the client sent. A CONNECT without user name and
/// password is refused before this is called. The future runs on the Tokio runtime that called
/// [`start`](crate::start) (or on the broker's own runtime if there was none) and is cut off,
/// counting as a refusal, after [`BrokerConfig::connect_timeout_ms`](crate::BrokerConfig).
/// Implementations must not log the password.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        client_id: &'a str,
        username: &'a str,
        password: &'a str,
    ) -> AuthFuture<'a>;
}

/// Installs `auth` as the external authentication hook of a rumqttd listener.
pub(crate) fn install(
    settings: &mut ServerSettings,
    auth: Arc<dyn Authenticator>,
    runtime: Handle,
    timeout: Duration,
) {
    settings.set_auth_handler(
        move |client_id: String, username: String, password: String| {
            let auth = auth.clone();
            let runtime = runtime.clone();
            async move {
                let log_id = client_id.clone();
                let task = runtime.spawn(async move {
                    auth.authenticate(&client_id, &username, &password).await
                });
                let abort = task.abort_handle();
                let allowed = match tokio::time::timeout(timeout, task).await {
                    Ok(Ok(allowed)) => allowed,
                    Ok(Err(error)) => {
                        warn!(client_id = %log_id, %error, "authenticator failed; refusing");
                        false
                    }
                    Err(_) => {
                        abort.abort();
                        warn!(client_id = %log_id, ?timeout, "authenticator timed out; refusing");
                        false
                    }
                };
                debug!(client_id = %log_id, allowed, "MQTT CONNECT authentication");
                allowed
            }
        },
    );
}
