//! The HTTP service (Cloud Run): `POST /` for every inbound form, `GET /healthz`.
//!
//! Handlers are thin: authenticate, parse into signals (`events`), hand each to the orchestrator
//! (`promote::Service`), and let `ack` turn the outcome into a status.

pub mod ack;
pub mod page;
pub mod push_auth;
pub mod server;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use tracing::Instrument as _;

use crate::events::{self, Delivery, EventsError, Parsed, RawSignal};
use crate::promote::{Answer, PromoteError, Service};
use push_auth::{PushAuth, PushAuthError};
pub use server::ServeSettings;

/// Request bodies over this are refused with 413 (docs/routes.md "Answers").
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub push_auth: Arc<PushAuth>,
    /// The pipeline view, computed at most once per few seconds however many pages are open.
    pub view: Arc<page::ViewCache>,
}

impl AppState {
    pub fn new(service: Arc<Service>, push_auth: Arc<PushAuth>) -> Self {
        AppState {
            service,
            push_auth,
            view: Arc::default(),
        }
    }
}

/// `POST /` takes every inbound form; `GET /` is the pipeline page for browsers (JSON for
/// others), `GET /api/pipeline` its JSON. The reading routes need no push token: on Cloud Run
/// the service's IAM decides who may open them (`gcloud run services proxy`).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(receive).get(pipeline_page))
        .route("/api/pipeline", get(pipeline_json))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `GET /`: the page for a browser (`Accept: text/html`), the JSON for anyone else.
async fn pipeline_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_html = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !wants_html {
        return pipeline_json(State(state)).await;
    }
    match state.view.get(&state.service).await {
        Ok(view) => match page::render(&view) {
            Ok(html) => axum::response::Html(html).into_response(),
            Err(error) => ack::problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
                &error.to_string(),
            ),
        },
        Err(error) => view_unavailable(&error),
    }
}

/// `GET /api/pipeline`.
async fn pipeline_json(State(state): State<AppState>) -> Response {
    match state.view.get(&state.service).await {
        Ok(view) => axum::Json(view.as_ref().clone()).into_response(),
        Err(error) => view_unavailable(&error),
    }
}

fn view_unavailable(error: &PromoteError) -> Response {
    tracing::warn!(reason = %error, "the pipeline view could not be read");
    let status = if error.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    ack::problem(status, "the pipeline could not be read", &error.to_string())
}

/// Serves until `shutdown` completes, then stops accepting and lets in-flight requests finish.
/// `settings` bound how long a client may take to send a request (`server`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(state), settings, shutdown).await
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let trace = crate::telemetry::trace_id(&headers).unwrap_or_default();
    let span = tracing::info_span!("request", trace = %trace);
    async move {
        let body = match body {
            Ok(body) => body,
            Err(rejection) => {
                let (status, detail) = match server::BodyReadTimeout::find(&rejection) {
                    // axum calls every body error a 400; a body that did not come in time is a
                    // 408 (RFC 9110 section 15.5.9), which tells the client it may try again.
                    Some(timeout) => (StatusCode::REQUEST_TIMEOUT, timeout.to_string()),
                    None if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                    ),
                    None => (rejection.status(), rejection.body_text()),
                };
                tracing::warn!(status = status.as_u16(), detail, "request refused");
                return ack::problem(status, "request refused", &detail);
            }
        };
        let caller = match state.push_auth.check(&headers).await {
            Ok(identity) => Caller::Allowed(identity.email),
            // A valid, verified token of someone who is not a push identity: a person, who may
            // send an approval and nothing else.
            Err(PushAuthError::EmailNotAllowed { email }) => Caller::Other(email),
            Err(error) => {
                tracing::warn!(status = error.status().as_u16(), reason = %error, "push authentication failed");
                return ack::problem(error.status(), "push authentication failed", &error.to_string());
            }
        };
        let parsed = events::parse(&headers, &body, state.service.vocabulary());
        let parsed = match with_caller(parsed, caller) {
            Ok(parsed) => parsed,
            Err(refused) => {
                tracing::warn!(status = refused.status().as_u16(), reason = %refused, "push authentication failed");
                return ack::problem(refused.status(), "push authentication failed", &refused.to_string());
            }
        };
        let handled = handle(&state.service, parsed).await;
        ack::reply(&handled).into_response()
    }
    .instrument(span)
    .await
}

/// Who sent a request, as its token shows.
enum Caller {
    /// A push identity (or anyone, in mode `none`, with no identity).
    Allowed(Option<String>),
    /// A verified identity that is not a push identity.
    Other(String),
}

/// Gives direct approvals their verified approver, and refuses a non-push identity anything but
/// a direct `approved`: people approve, Pub/Sub pushes (docs/rules.md "Approvals").
fn with_caller(
    parsed: Result<Parsed, EventsError>,
    caller: Caller,
) -> Result<Result<Parsed, EventsError>, PushAuthError> {
    let (email, pusher) = match caller {
        Caller::Allowed(email) => (email, true),
        Caller::Other(email) => (Some(email), false),
    };
    match parsed {
        Ok(Parsed::Signals(mut inbound)) if !inbound.delivery.is_pubsub() => {
            let approvals = inbound
                .signals
                .iter()
                .all(|s| s.kind == events::SignalKind::Approved);
            if !pusher && !approvals {
                return Err(PushAuthError::EmailNotAllowed {
                    email: email.unwrap_or_default(),
                });
            }
            for signal in &mut inbound.signals {
                if signal.kind == events::SignalKind::Approved {
                    signal.caller = email.clone();
                }
            }
            Ok(Ok(Parsed::Signals(inbound)))
        }
        _ if !pusher => Err(PushAuthError::EmailNotAllowed {
            email: email.unwrap_or_default(),
        }),
        other => Ok(other),
    }
}

/// What a request (or a pulled message) came to, before it is answered: the one handling both
/// transports share; [`ack::reply`] turns it into a status or an ack.
pub enum Handled {
    /// Unreadable; `announced` is the result of publishing it as `promotion-rejected`.
    Malformed {
        error: EventsError,
        announced: Result<(), PromoteError>,
    },
    /// Not for promoter.
    Ignored { reason: String },
    /// Each signal decided, or failed.
    Decided {
        delivery: Delivery,
        results: Vec<Result<Answer, PromoteError>>,
    },
}

/// Handles what was read from a request or a message.
pub async fn handle(service: &Service, parsed: Result<Parsed, EventsError>) -> Handled {
    match parsed {
        Err(error) => {
            tracing::warn!(delivery = %error.delivery(), reason = %error, decision = "rejected", "malformed event");
            let announced = service.reject_malformed(&error).await;
            Handled::Malformed { error, announced }
        }
        Ok(Parsed::Ignored { delivery, reason }) => {
            tracing::info!(delivery = %delivery, decision = "ignored", reason, "event ignored");
            Handled::Ignored { reason }
        }
        Ok(Parsed::Signals(inbound)) => {
            let mut results = Vec::with_capacity(inbound.signals.len());
            for signal in &inbound.signals {
                results.push(handle_logged(service, signal).await);
            }
            Handled::Decided {
                delivery: inbound.delivery,
                results,
            }
        }
        Ok(Parsed::Stage { delivery, event }) => {
            let started = std::time::Instant::now();
            let result = service.handle_stage_event(&event).await;
            log_decision(
                &event.event_id,
                &event.event_type,
                &event.stage,
                &result,
                started,
            );
            Handled::Decided {
                delivery,
                results: vec![result],
            }
        }
        Ok(Parsed::Reconcile {
            delivery,
            reconcile,
        }) => {
            let started = std::time::Instant::now();
            let result = service.reconcile(&reconcile).await;
            log_decision(
                &reconcile.event_id,
                &reconcile.event_type,
                "",
                &result,
                started,
            );
            Handled::Decided {
                delivery,
                results: vec![result],
            }
        }
    }
}

/// Hands one signal to the orchestrator and logs the decision (one line per decision). A
/// signal that failed for good is announced as `promotion-rejected` before it is acked.
async fn handle_logged(service: &Service, signal: &RawSignal) -> Result<Answer, PromoteError> {
    let started = std::time::Instant::now();
    let mut result = service.handle(signal).await;
    if let Err(error) = &result
        && !error.is_transient()
        && let Err(announcing) = service.reject_failed(signal, error).await
        && announcing.is_transient()
    {
        // Acking it now would lose it without a trace: let it come back.
        result = Err(announcing);
    }
    log_decision(
        &signal.event_id,
        &signal.event_type,
        &signal.image,
        &result,
        started,
    );
    result
}

fn log_decision(
    event_id: &str,
    event_type: &str,
    image: &str,
    result: &Result<Answer, PromoteError>,
    started: std::time::Instant,
) {
    // How long the decision took, copy included: the decision latency metric's value.
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(answer) => tracing::info!(
            event_id,
            event_type,
            image = answer.image.as_deref().unwrap_or(image),
            digest = answer.digest.as_deref().unwrap_or_default(),
            from_stage = answer.from_stage.as_deref().unwrap_or_default(),
            to_stage = answer.to_stage.as_deref().unwrap_or_default(),
            decision = answer.decision.as_str(),
            reason = answer.reason,
            skipped = answer.skipped.len(),
            superseded = answer.superseded.len(),
            duration_ms,
            "decision"
        ),
        Err(error) if error.is_transient() => tracing::warn!(
            event_id,
            event_type,
            image,
            decision = "retry",
            reason = %error,
            duration_ms,
            "transient failure; the signal will be redelivered"
        ),
        Err(error) => tracing::warn!(
            event_id,
            event_type,
            image,
            decision = "rejected",
            reason = %error,
            duration_ms,
            "decision"
        ),
    }
}
