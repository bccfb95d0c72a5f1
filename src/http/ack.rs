//! The one place where outcomes become answers: [`reply`] turns what a request or a pulled
//! message came to into an HTTP status and body, and the same reply's status is the ack or nack
//! of a pulled message (docs/routes.md "Answers").
//!
//! Pub/Sub treats 102/200/201/202/204 as ack and anything else as nack-and-redeliver
//! (<https://cloud.google.com/pubsub/docs/push#receive_push>), so for a Pub/Sub delivery every
//! *final* decision is 200 (a permanently bad message is acked: retrying it cannot help) and only
//! transient failures are 503 with `Retry-After`. Direct callers get the HTTP meaning instead:
//! 400 for malformed input, 422 for a refusal by the rules, 502 when a registry or Pub/Sub
//! refused promoter for good.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::events::Delivery;
use crate::promote::{Answer, Decision, PromoteError};
use crate::pull::Disposition;

use super::Handled;

/// How long a nacked push should wait, as `Retry-After` (Pub/Sub's own backoff governs, this
/// is for direct callers and proxies).
const RETRY_AFTER_SECONDS: u32 = 10;

/// The answer to one request or message.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// The body is an RFC 9457 problem (`application/problem+json`).
    problem: bool,
}

impl Reply {
    /// Ack or nack by Pub/Sub's own rule for push statuses, so a pulled message is treated
    /// exactly as the same message pushed.
    pub fn disposition(&self) -> Disposition {
        match self.status.as_u16() {
            102 | 200 | 201 | 202 | 204 => Disposition::Ack,
            _ => Disposition::Nack,
        }
    }

    pub fn into_response(self) -> Response {
        if self.problem {
            let mut response = (self.status, self.body.to_string()).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            return response;
        }
        (self.status, Json(self.body)).into_response()
    }
}

/// What a request or message came to, as a status and a body.
pub fn reply(handled: &Handled) -> Reply {
    match handled {
        Handled::Malformed { error, announced } => {
            if !error.came_through_pubsub() {
                return problem_reply(
                    StatusCode::BAD_REQUEST,
                    "malformed event",
                    &error.to_string(),
                );
            }
            match announced {
                // Not even announced: acking it would lose it without a trace.
                Err(e) if e.is_transient() => unavailable(&e.to_string()),
                _ => ok(json!({"decision": "rejected", "reason": error.to_string()})),
            }
        }
        Handled::Ignored { reason } => ok(json!({"decision": "ignored", "reason": reason})),
        Handled::Decided { delivery, results } => decided(delivery, results),
    }
}

fn decided(delivery: &Delivery, results: &[Result<Answer, PromoteError>]) -> Reply {
    if let Some(error) = results
        .iter()
        .find_map(|r| r.as_ref().err().filter(|e| e.is_transient()))
    {
        return unavailable(&error.to_string());
    }
    let failed_for_good = results.iter().any(Result::is_err);
    let answers: Vec<Answer> = results
        .iter()
        .map(|result| match result {
            Ok(answer) => answer.clone(),
            // A registry or Pub/Sub refusing promoter for good (an identity without access, a
            // topic that does not exist) is final for this signal: it is logged and announced.
            Err(error) => Answer::rejected(error.to_string()),
        })
        .collect();
    let all_rejected = answers.iter().all(Answer::is_rejected);
    let status = match delivery {
        Delivery::PubSub { .. } => StatusCode::OK,
        Delivery::Direct if all_rejected && failed_for_good => StatusCode::BAD_GATEWAY,
        Delivery::Direct if all_rejected => StatusCode::UNPROCESSABLE_ENTITY,
        Delivery::Direct => StatusCode::OK,
    };
    let body = match answers.as_slice() {
        [one] => serde_json::to_value(one),
        _ => {
            let headline = answers.iter().min_by_key(|a| rank(a.decision));
            let (decision, reason) = headline
                .map(|a| (a.decision, a.reason.clone()))
                .unwrap_or((Decision::Ignored, "no signals".into()));
            serde_json::to_value(&answers)
                .map(|all| json!({"decision": decision, "reason": reason, "results": all}))
        }
    };
    match body {
        Ok(body) => Reply {
            status,
            body,
            problem: false,
        },
        Err(error) => unavailable(&format!("cannot encode the answer: {error}")),
    }
}

/// Which decision speaks for a request that carried several signals (lowest first).
fn rank(decision: Decision) -> u8 {
    match decision {
        Decision::Promoted => 0,
        Decision::AlreadyPromoted => 1,
        Decision::Reconciled => 2,
        Decision::Pending => 3,
        Decision::Recorded => 4,
        Decision::Rejected => 5,
        Decision::Ignored => 6,
    }
}

fn ok(body: Value) -> Reply {
    Reply {
        status: StatusCode::OK,
        body,
        problem: false,
    }
}

fn problem_reply(status: StatusCode, title: &str, detail: &str) -> Reply {
    Reply {
        status,
        body: json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail}),
        problem: true,
    }
}

fn unavailable(reason: &str) -> Reply {
    problem_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "temporarily unavailable, retry",
        reason,
    )
}

/// A refusal before any reading: push authentication, body too large.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    problem_reply(status, title, detail).into_response()
}
