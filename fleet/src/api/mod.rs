//! The HTTP API (axum): `/api/v1/...`, `/healthz`, `/metrics`, and the OpenAPI document at
//! `/api/v1/openapi.json`, generated from the handlers with utoipa.
//!
//! `app(state)` builds the router, so tests drive it without a socket.

mod accounts;
mod api_tokens;
mod audit;
mod error;
mod logs;
mod node_lifecycle;
mod nodes;
mod ops;
mod placement;
pub mod principal;
mod register;
mod tokens;
mod workloads;

pub use error::{ApiError, ErrorBody};
pub use placement::{ExplainRequest, PlacementExplanation};
pub use principal::{Principal, Role};
pub use tokens::{issue as issue_token, CreateToken, CreatedToken};

use crate::ingest::Ingest;
use crate::link::Outbound;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;
use std::sync::Arc;
use utoipa::OpenApi;

/// What the handlers share.
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub ingest: Arc<Ingest>,
    pub outbound: Arc<Outbound>,
    /// SHA-256 (hex) of the operator credential.
    pub operator_hash: String,
    /// The fleet's public HTTPS URL, put into provisioning strings.
    pub public_url: String,
    /// Broker URLs handed to nodes at registration, in order of preference.
    pub broker_urls: Vec<String>,
    /// The names nodes may reach the fleet by; the first is in `public_url`. A node that
    /// registers through another gets the broker URLs with that name (`register`).
    pub public_hosts: Vec<String>,
    pub heartbeat_secs: u32,
    /// Node accounts on the broker (a no-op for the embedded one).
    pub accounts: Arc<dyn crate::broker::BrokerAccounts>,
    /// Login and sign-up rate limits (per process).
    pub login_limits: Arc<crate::accounts::LoginLimiter>,
    /// Who may create accounts.
    pub signup: crate::accounts::SignupPolicy,
    /// The gateway's tunnel listener, once it runs in this process (workload logs come
    /// through the nodes' tunnels); unset with `--no-gateway`.
    pub tunnels: Arc<std::sync::OnceLock<lattice_tunnel::TunnelServer>>,
    /// What the workload kinds need from the fleet's flags (the S3 image).
    pub kinds: crate::kinds::KindConfig,
    /// How nodes reach the fleet's registry, if they pull through their tunnels: targets hand
    /// its pinned images at the node's proxy (`FleetConfig::node_registry`, ADR 0011).
    pub node_registry: Option<crate::gateway::upstream::NodeRegistry>,
    /// Where the gateway in this process serves workloads, once it runs (views show each
    /// workload's address); unset with `--no-gateway`.
    pub apps: Arc<std::sync::OnceLock<crate::kinds::AppsEndpoint>>,
    /// The MQTT link, to send a changed target at once rather than at the next re-send
    /// (`None` in router tests).
    pub link: Option<crate::link::Link>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Lattice fleet API", description = "The HTTP API of the Lattice fleet manager (bearer: the operator credential or an account's API token)."),
    paths(
        register::register,
        nodes::list, nodes::show, nodes::revoke, nodes::set_offer,
        node_lifecycle::cordon, node_lifecycle::uncordon, node_lifecycle::drain,
        node_lifecycle::decommission, node_lifecycle::show,
        tokens::create, tokens::list,
        ops::healthz, ops::metrics,
        accounts::signup, accounts::login, accounts::me, accounts::list, accounts::change,
        accounts::change_password,
        api_tokens::create, api_tokens::list, api_tokens::delete,
        audit::list,
        workloads::create, workloads::list, workloads::show, workloads::delete, logs::logs,
        workloads::credentials, workloads::update,
        placement::workload, placement::would_be,
    ),
    components(schemas(
        crate::store::NodeRow, crate::store::TokenRow, CreateToken, CreatedToken, ErrorBody,
        lattice_wire::register::RegisterRequest, lattice_wire::register::RegisterResponse,
        lattice_wire::msg::Inventory,
        Role, crate::store::AccountRow, crate::store::ApiTokenRow, crate::store::AuditEntry,
        accounts::SignUp, accounts::Login, accounts::LoggedIn, accounts::Me, accounts::ChangeAccount,
        accounts::ChangePassword,
        api_tokens::CreateApiToken, api_tokens::CreatedApiToken, audit::AuditPage,
        crate::workloads::DeployRequest, crate::workloads::WorkloadView,
        crate::workloads::UpdateRequest, crate::workloads::Strategy, crate::workloads::NextView, crate::store::WorkloadEvent,
        crate::kinds::s3::Credentials, crate::offers::NodeOffer, crate::workloads::UpstreamView,
        crate::kinds::s3_replication::ReplicationView, crate::kinds::s3_replication::Report,
        crate::lifecycle::NodeLifecycleView, crate::lifecycle::NodeWorkload,
        placement::PlacementExplanation, placement::ExplainRequest, crate::scheduler::NodeVerdict,
        crate::scheduler::Verdict, crate::scheduler::Shortfall, crate::scheduler::Reason,
        crate::scheduler::Resources, crate::offers::Placement,
    )),
    modifiers(&SecurityAddon),
)]
pub struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "operator",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
            // The operator credential or an account's API token (from /api/v1/login).
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// By default (`--max-in-flight`) at most this many requests to `/api/v1` are handled at once; past it a request is answered
/// `503 overloaded` with `Retry-After` at once instead of joining a queue that only grows
/// (docs/benchmarks.md: without a bound, 1,000 requests/s of the API bench queued for 30 s
/// and a gigabyte). `/healthz` and `/metrics` are never shed.
pub const MAX_IN_FLIGHT: usize = 256;

/// The whole HTTP surface.
pub fn app(state: Arc<AppState>) -> Router {
    app_with_limit(state, MAX_IN_FLIGHT)
}

/// [`app`] with another bound on the API requests in flight.
pub fn app_with_limit(state: Arc<AppState>, max_in_flight: usize) -> Router {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    Router::new()
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/api/v1/register", post(register::register))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{id}", get(nodes::show))
        .route("/api/v1/nodes/{id}/revoke", post(nodes::revoke))
        .route("/api/v1/nodes/{id}/offer", put(nodes::set_offer))
        .route("/api/v1/nodes/{id}/cordon", post(node_lifecycle::cordon))
        .route(
            "/api/v1/nodes/{id}/uncordon",
            post(node_lifecycle::uncordon),
        )
        .route("/api/v1/nodes/{id}/drain", post(node_lifecycle::drain))
        .route(
            "/api/v1/nodes/{id}/decommission",
            post(node_lifecycle::decommission),
        )
        .route("/api/v1/nodes/{id}/lifecycle", get(node_lifecycle::show))
        .route("/api/v1/tokens", post(tokens::create).get(tokens::list))
        .route(
            "/api/v1/accounts",
            post(accounts::signup).get(accounts::list),
        )
        .route(
            "/api/v1/accounts/{id}",
            axum::routing::patch(accounts::change),
        )
        .route("/api/v1/login", post(accounts::login))
        .route("/api/v1/me", get(accounts::me))
        .route(
            "/api/v1/me/password",
            axum::routing::put(accounts::change_password),
        )
        .route(
            "/api/v1/api-tokens",
            post(api_tokens::create).get(api_tokens::list),
        )
        .route(
            "/api/v1/api-tokens/{id}",
            axum::routing::delete(api_tokens::delete),
        )
        .route("/api/v1/audit", get(audit::list))
        .route(
            "/api/v1/workloads",
            post(workloads::create).get(workloads::list),
        )
        .route(
            "/api/v1/workloads/{name}",
            get(workloads::show)
                .patch(workloads::update)
                .delete(workloads::delete),
        )
        .route("/api/v1/workloads/{name}/logs", get(logs::logs))
        .route(
            "/api/v1/workloads/{name}/credentials",
            get(workloads::credentials),
        )
        .route(
            "/api/v1/workloads/{name}/placement",
            get(placement::workload),
        )
        .route("/api/v1/placement", post(placement::would_be))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        // Outermost: a shed request costs no span, no log line and no credential lookup.
        .layer(axum::middleware::from_fn_with_state(in_flight, shed))
        .with_state(state)
}

/// Runs an `/api/` request while fewer than the bound are in flight, else answers 503 with
/// `Retry-After: 1` at once; a fleet too busy for its API still answers its probes
/// (`/healthz`, `/metrics`). The slot is held until the handler has its answer (a streamed
/// body, such as `logs --follow`, does not keep it).
async fn shed(
    axum::extract::State(in_flight): axum::extract::State<Arc<tokio::sync::Semaphore>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if !req.uri().path().starts_with("/api/") {
        return next.run(req).await;
    }
    match in_flight.try_acquire() {
        Ok(slot) => {
            let resp = next.run(req).await;
            drop(slot);
            resp
        }
        Err(_) => ApiError::Overloaded {
            retry_after_secs: 1,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests;
