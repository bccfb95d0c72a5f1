//! The one place where outcomes become answers: HTTP statuses for push and direct callers, ack or
//! nack for pulled messages (DESIGN.md §5 "Routes").
//!
//! Pub/Sub treats 102/200/201/202/204 as ack and anything else as nack-and-redeliver, so for a
//! Pub/Sub delivery every *final* decision is 200 (a permanently bad message is acked: retrying it
//! cannot help) and only transient failures are 503 with `Retry-After`. Direct callers get the
//! HTTP meaning instead: 400 for malformed input, 422 for a rejection by the rules.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::events::{Delivery, EventsError};
use crate::promote::{Decision, Outcome, PromoteError};
use crate::pull::Disposition;

use super::Handled;

/// How long a nacked push should wait, as `Retry-After` (Pub/Sub's own backoff governs, this
/// is for direct callers and proxies).
const RETRY_AFTER_SECONDS: u32 = 10;

/// What handling one signal came to.
pub enum Verdict {
    /// Done, whatever the decision: never redeliver.
    Final(Box<Outcome>),
    /// A dependency failed; the same signal later can succeed.
    Retry(String),
}

impl Verdict {
    pub fn of(result: Result<Outcome, PromoteError>) -> Verdict {
        match result {
            Ok(outcome) => Verdict::Final(Box::new(outcome)),
            Err(PromoteError::Rejected { outcome, .. }) => Verdict::Final(outcome),
            Err(error) if error.is_transient() => Verdict::Retry(error.to_string()),
            // A permanent failure of a dependency (a registry refusing our identity, a topic
            // that does not exist) is final for this signal: it is logged and acked.
            Err(error) => Verdict::Final(Box::new(Outcome::rejected(error.to_string()))),
        }
    }
}

/// The HTTP answer to a request.
pub fn respond(handled: Handled) -> Response {
    match handled {
        Handled::Malformed { error, announced } => malformed(&error, announced),
        Handled::Ignored { reason } => (
            StatusCode::OK,
            Json(json!({"decision": "ignored", "reason": reason})),
        )
            .into_response(),
        Handled::Decided { delivery, verdicts } => decided(&delivery, verdicts),
    }
}

/// Ack or nack for a pulled message: the same rule as the push status.
pub fn disposition(handled: &Handled) -> Disposition {
    let retry = match handled {
        Handled::Malformed { announced, .. } => announced.as_ref().is_err_and(|e| e.is_transient()),
        Handled::Ignored { .. } => false,
        Handled::Decided { verdicts, .. } => {
            verdicts.iter().any(|v| matches!(v, Verdict::Retry(_)))
        }
    };
    if retry {
        Disposition::Nack
    } else {
        Disposition::Ack
    }
}

/// The answer to a request whose signals were handled.
fn decided(delivery: &Delivery, verdicts: Vec<Verdict>) -> Response {
    if let Some(reason) = verdicts.iter().find_map(|v| match v {
        Verdict::Retry(reason) => Some(reason.clone()),
        Verdict::Final(_) => None,
    }) {
        return unavailable(&reason);
    }
    let mut outcomes: Vec<Outcome> = verdicts
        .into_iter()
        .filter_map(|v| match v {
            Verdict::Final(outcome) => Some(*outcome),
            Verdict::Retry(_) => None,
        })
        .collect();
    let rejected = outcomes.iter().all(|o| o.decision == Decision::Rejected);
    let status = if rejected && !delivery.is_pubsub() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let body = if outcomes.len() == 1 {
        serde_json::to_value(outcomes.remove(0))
    } else {
        let first = outcomes
            .iter()
            .min_by_key(|o| o.decision.rank())
            .map(|o| (o.decision, o.reason.clone()));
        let (decision, reason) = first.unwrap_or((Decision::Ignored, "no signals".into()));
        Ok(json!({"decision": decision, "reason": reason, "results": outcomes}))
    };
    match body {
        Ok(body) => (status, Json(body)).into_response(),
        Err(error) => unavailable(&format!("cannot encode the answer: {error}")),
    }
}

/// The answer to a request that could not be read. `announced` is the result of announcing it as
/// `promotion-rejected`: if that failed transiently, the message is nacked so it is not lost.
fn malformed(error: &EventsError, announced: Result<(), PromoteError>) -> Response {
    if error.came_through_pubsub() {
        return match announced {
            Err(e) if e.is_transient() => unavailable(&e.to_string()),
            _ => (
                StatusCode::OK,
                Json(json!({"decision": "rejected", "reason": error.to_string()})),
            )
                .into_response(),
        };
    }
    problem(
        StatusCode::BAD_REQUEST,
        "malformed event",
        &error.to_string(),
    )
}

/// A refusal before any reading: push authentication, body too large.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body =
        json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail});
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn unavailable(reason: &str) -> Response {
    let mut response = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable, retry",
        reason,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}
