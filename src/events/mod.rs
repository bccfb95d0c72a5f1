//! Inbound events: every request form that `POST /` accepts, turned into normalized signals.
//!
//! This module owns the *wire formats* of promoter's inbound side and nothing else: it is pure
//! (no I/O, no clock, no configuration) so that every form can be tested byte-for-byte. It
//! answers three questions about a request — how it was delivered ([`Delivery`]), which signals
//! it carries ([`RawSignal`]), or why it carries none ([`Parsed::Ignored`]) — and leaves every
//! decision about images, stages and registries to the caller.
//!
//! Forms recognised (docs/routes.md), each with the document its shape was taken from:
//!
//! | form | detected by | shape source |
//! |---|---|---|
//! | Pub/Sub push, wrapped | JSON body `{"message":{..},"subscription":..}` | <https://cloud.google.com/pubsub/docs/push> |
//! | Pub/Sub push, unwrapped | header `x-goog-pubsub-message-id` (write metadata on) | `PushConfig.NoWrapper.write_metadata` reference; <https://cloud.google.com/pubsub/docs/payload-unwrapping> |
//! | Eventarc `messagePublished` | CloudEvent of type `google.cloud.pubsub.topic.v1.messagePublished` | <https://cloud.google.com/eventarc/docs/cloudevents> |
//! | CloudEvents HTTP binary / structured | `ce-*` headers / `Content-Type: application/cloudevents+json` | CloudEvents HTTP protocol binding 1.0 |
//! | CloudEvents in a Pub/Sub message | `ce-*` attributes / attribute `Content-Type: application/cloudevents+json` | CloudEvents Pub/Sub protocol binding (cloudevents/spec `pubsub-protocol-binding.md`) |
//! | manual `gcloud pubsub topics publish` | only `ce-type` (or `type`) attribute | docs/events.md |
//! | Cloud Build notification | attributes `buildId` + `status`, or the Build resource's shape | <https://cloud.google.com/build/docs/subscribe-build-notifications> |
//! | Cloud Build as a CloudEvent | type `google.cloud.cloudbuild.build.v1.statusChanged`, data = Build | google-cloudevents catalog |
//! | Cloud Monitoring incident | `{"version":..,"incident":{..}}` (schema 1.2), Pub/Sub channel or webhook | <https://cloud.google.com/monitoring/support/notification-options#webhooks> |
//!
//! Outcomes: a recognised event becomes [`Parsed::Signals`]; a well-formed event that is not for
//! promoter (an unknown CloudEvent `type`, a Cloud Build that did not succeed, a Monitoring test
//! notification or a policy without promoter labels) is [`Parsed::Ignored`] with a reason; input
//! that is malformed is an [`EventsError`], which says whether it came through Pub/Sub so the
//! caller can ack it (200) there and answer 400 to a direct caller.
//!
//! Nothing here panics on input: every lookup into the request is checked.

mod attributes;
mod cloud_build;
mod cloudevent;
mod monitoring;
mod pubsub;
mod signal;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;

pub use signal::{BuildTrigger, SignalKind, SignalName, Vocabulary};

use chrono::{DateTime, Utc};
use http::HeaderMap;
use serde_json::Value;

/// Parses one inbound request (its headers and its whole body) into signals.
///
/// Forms are tried in this order: unwrapped Pub/Sub push (`x-goog-pubsub-*` headers); CloudEvents
/// structured mode (`application/cloudevents+json`); binary mode (`ce-*` headers); then, for
/// a JSON body, a wrapped push envelope, a structured event sent as plain JSON, a Monitoring
/// notification, a Cloud Build resource. A CloudEvent of type `messagePublished` (Eventarc) is
/// unwrapped into its Pub/Sub message, which is read like any pushed message.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    // Unwrapped Pub/Sub push first: with write metadata on, the message's attributes arrive as
    // plain headers, so a CloudEvent in Pub/Sub binary mode looks exactly like CloudEvents HTTP
    // binary mode. Only the x-goog-pubsub-* headers tell the two apart, and they decide how a
    // malformed message must be answered (acked, not 400).
    if let Some(delivery) = pubsub::unwrapped_delivery(headers) {
        return pubsub::parse_unwrapped(delivery, headers, body, vocabulary);
    }
    let direct = Delivery::Direct;
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match cloudevent::content_mode(content_type) {
        cloudevent::ContentMode::Structured => {
            let value = parse_json(body, &direct, "structured CloudEvent")?;
            let event = cloudevent::from_structured(value).map_err(|reason| {
                EventsError::InvalidCloudEvent {
                    delivery: direct.clone(),
                    reason,
                }
            })?;
            return cloudevent::into_parsed(event, direct, None, vocabulary);
        }
        cloudevent::ContentMode::Batch => {
            return Err(EventsError::Unrecognized {
                delivery: direct,
                reason: "batched CloudEvents (application/cloudevents-batch+json) are not \
                         supported: send one event per request"
                    .into(),
            });
        }
        cloudevent::ContentMode::UnsupportedFormat(format) => {
            return Err(EventsError::Unrecognized {
                delivery: direct,
                reason: format!(
                    "structured CloudEvent format {} is not supported (only application/cloudevents+json)",
                    clip(&format)
                ),
            });
        }
        cloudevent::ContentMode::Other => {}
    }
    // The content type decides structured mode first (HTTP binding §3); `ce-*` headers beside a
    // structured body are extensions a proxy may add, not binary mode.
    if cloudevent::has_binary_headers(headers) {
        let event = cloudevent::from_http_binary(headers, body).map_err(|reason| {
            EventsError::InvalidCloudEvent {
                delivery: direct.clone(),
                reason,
            }
        })?;
        return cloudevent::into_parsed(event, direct, None, vocabulary);
    }

    // No CloudEvents framing: a JSON body recognised by its shape.
    let value = parse_json(body, &direct, "request body")?;
    if pubsub::is_envelope(&value) {
        return pubsub::parse_envelope(&value, None, vocabulary);
    }
    if cloudevent::looks_structured(&value) {
        // A structured event POSTed as plain application/json: accepted, as a user of curl would
        // expect, and validated exactly like the structured mode.
        let event = cloudevent::from_structured(value).map_err(|reason| {
            EventsError::InvalidCloudEvent {
                delivery: direct.clone(),
                reason,
            }
        })?;
        return cloudevent::into_parsed(event, direct, None, vocabulary);
    }
    if monitoring::looks_like_notification(&value) {
        return Ok(monitoring::parse(&direct, &value));
    }
    if cloud_build::looks_like_build(&value) {
        return cloud_build::parse(&direct, &value, None, vocabulary);
    }
    Err(EventsError::Unrecognized {
        delivery: direct,
        reason: "the request is not a CloudEvent (no ce-* headers, no \
                 application/cloudevents+json body), not a Pub/Sub push and not a Cloud Build or \
                 Cloud Monitoring notification"
            .into(),
    })
}

/// Parses one message received by StreamingPull (`promoter pull`): the same reading as a pushed
/// message, so both transports decide identically.
pub fn parse_pulled_message(
    message_id: &str,
    subscription: &str,
    publish_time: Option<DateTime<Utc>>,
    attributes: impl IntoIterator<Item = (String, String)>,
    data: &[u8],
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    let delivery = Delivery::PubSub {
        message_id: message_id.to_owned(),
        subscription: Some(subscription.to_owned()),
        publish_time,
    };
    pubsub::parse_message(
        delivery,
        &attributes::Attributes::from_pubsub(attributes),
        data,
        vocabulary,
    )
}

/// What a request amounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The request carries at least one signal for promoter.
    Signals(Inbound),
    /// The request is well formed but not for promoter (unknown type, failed build, test
    /// notification, ...). Pub/Sub deliveries of it are acked; `reason` is for the log and the
    /// `ignored` response.
    Ignored { delivery: Delivery, reason: String },
    /// A `reconcile` event: decide again every digest waiting, narrowed to a stage or an image
    /// when the data names them (docs/rules.md "Gates that open by time").
    Reconcile {
        delivery: Delivery,
        reconcile: Reconcile,
    },
    /// A `freeze` or `unfreeze` of a stage.
    Stage {
        delivery: Delivery,
        event: StageEvent,
    },
}

/// A `freeze` or `unfreeze` of a stage (docs/rules.md "Freezes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEvent {
    /// `true` for `freeze`, `false` for `unfreeze`.
    pub freeze: bool,
    /// `data.stage`: the stage promotions into which are held.
    pub stage: String,
    /// `data.reason`, for people.
    pub reason: Option<String>,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub time: Option<DateTime<Utc>>,
}

/// The CloudEvent types of stage events.
pub const FREEZE: &str = "freeze";
pub const UNFREEZE: &str = "unfreeze";

/// Whether `event_type` is `name` or ends in `.name`.
pub(crate) fn is_type(event_type: &str, name: &str) -> bool {
    event_type == name
        || event_type
            .strip_suffix(name)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// What a `reconcile` event asks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconcile {
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    /// `data.stage`: only digests waiting in this stage.
    pub stage: Option<String>,
    /// `data.image`: only digests of this image (its name below the stage, or a repository).
    pub image: Option<String>,
}

/// Whether a CloudEvent `type` is a `reconcile`: `reconcile` or any type ending in `.reconcile`.
pub fn is_reconcile(event_type: &str) -> bool {
    is_type(event_type, RECONCILE)
}

/// The CloudEvent type of a reconcile.
pub const RECONCILE: &str = "reconcile";

impl Parsed {
    /// How the request was delivered, whatever it amounted to.
    pub fn delivery(&self) -> &Delivery {
        match self {
            Parsed::Signals(inbound) => &inbound.delivery,
            Parsed::Ignored { delivery, .. }
            | Parsed::Reconcile { delivery, .. }
            | Parsed::Stage { delivery, .. } => delivery,
        }
    }
}

/// The signals of one request and how it was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub delivery: Delivery,
    /// Never empty: a request without signals is [`Parsed::Ignored`]. Several only for a Cloud
    /// Build that pushed several images.
    pub signals: Vec<RawSignal>,
}

/// How a request reached promoter; decides how its outcome is answered (docs/routes.md "Answers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Through a Pub/Sub subscription (push, wrapped or unwrapped, or Eventarc): the HTTP status
    /// is the ack. `message_id` is empty only when a push envelope lacked it.
    PubSub {
        message_id: String,
        subscription: Option<String>,
        publish_time: Option<DateTime<Utc>>,
    },
    /// Any other caller: a CloudEvents client, a Monitoring webhook, curl.
    Direct,
}

impl Delivery {
    /// True for a Pub/Sub (or Eventarc) delivery, whose status code is an ack or a nack.
    pub fn is_pubsub(&self) -> bool {
        matches!(self, Delivery::PubSub { .. })
    }
}

impl fmt::Display for Delivery {
    /// Names the delivery the way error messages and logs start: `Pub/Sub message 123`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Delivery::PubSub { message_id, .. } if message_id.is_empty() => {
                f.write_str("Pub/Sub message (no message id)")
            }
            Delivery::PubSub { message_id, .. } => write!(f, "Pub/Sub message {message_id}"),
            Delivery::Direct => f.write_str("request"),
        }
    }
}

/// One signal, normalized from whichever form carried it. Nothing in it is resolved yet: the
/// image is as the sender wrote it (a full reference, a repository, or a bare name with `stage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawSignal {
    pub kind: SignalKind,
    /// CloudEvents: `data.image`, else `subject`. Cloud Build: `results.images[].name`.
    /// Monitoring: the policy's user label `promoter_image`.
    pub image: String,
    /// CloudEvents: `data.digest`. Cloud Build: `results.images[].digest`.
    pub digest: Option<String>,
    /// CloudEvents: `data.stage`. Monitoring: the policy's user label `promoter_stage`.
    pub stage: Option<String>,
    /// CloudEvents: `id` (the Pub/Sub message id in the manual form). Cloud Build:
    /// `{build id}/{image name}`. Monitoring: `{incident_id}/{state}`.
    pub event_id: String,
    /// CloudEvents: `source` (the subscription, or `//pubsub`, in the manual form). Cloud Build:
    /// `//cloudbuild.googleapis.com/projects/P/builds/ID`. Monitoring:
    /// `//monitoring.googleapis.com/projects/P/alertPolicies/ID`.
    pub event_source: String,
    /// CloudEvents: `type` as sent. Cloud Build: [`CLOUD_BUILD_EVENT_TYPE`]. Monitoring:
    /// [`MONITORING_EVENT_TYPE_PREFIX`] + `open` or `closed`.
    pub event_type: String,
    /// The verified identity (OIDC `email`) of a direct caller, set by the HTTP layer after it
    /// checked the request's token; never read from the event. An `approved` signal's approver.
    pub caller: Option<String>,
    /// CloudEvents: `time`, else the Pub/Sub publish time. Cloud Build: `finishTime`.
    /// Monitoring: `started_at` (open) or `ended_at` (closed).
    pub time: Option<DateTime<Utc>>,
}

/// The `event_type` of signals made from Cloud Build notifications: the CloudEvents type Google
/// gives Cloud Build status changes (google-cloudevents catalog).
pub const CLOUD_BUILD_EVENT_TYPE: &str = cloud_build::EVENT_TYPE;

/// The `event_type` prefix of signals made from Cloud Monitoring incidents; the incident's state
/// (`open` or `closed`) follows. Monitoring notifications have no type of their own.
pub const MONITORING_EVENT_TYPE_PREFIX: &str = monitoring::EVENT_TYPE_PREFIX;

/// Why a request could not be read. Every message starts with the delivery (`Pub/Sub message
/// 123: ...` or `request: ...`) and names the thing that is wrong and why.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A body, a message's data or an event's data that must be JSON is not.
    #[error("{delivery}: {what} is not valid JSON: {source}")]
    NotJson {
        delivery: Delivery,
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A Pub/Sub message's `data` is not base64.
    #[error("{delivery}: {what} is not valid base64: {source}")]
    BadBase64 {
        delivery: Delivery,
        what: String,
        #[source]
        source: base64::DecodeError,
    },
    /// A field the form requires is absent (e.g. a push envelope without `message`).
    #[error("{delivery}: {what} has no {field}")]
    MissingField {
        delivery: Delivery,
        what: String,
        field: String,
    },
    /// A field is present but has the wrong JSON type or an unusable value.
    #[error("{delivery}: {field} {reason}")]
    InvalidField {
        delivery: Delivery,
        field: String,
        reason: String,
    },
    /// The CloudEvent violates the CloudEvents 1.0 specification (missing or empty required
    /// attribute, bad `time`, bad extension name, both `data` and `data_base64`, ...).
    #[error("{delivery}: invalid CloudEvent: {reason}")]
    InvalidCloudEvent { delivery: Delivery, reason: String },
    /// A promoter event names no image: neither `data.image` nor `subject` is set.
    #[error(
        "{delivery}: event {event_id} of type {event_type} names no image: set data.image or subject"
    )]
    MissingImage {
        delivery: Delivery,
        event_id: String,
        event_type: String,
    },
    /// The request is none of the forms promoter accepts.
    #[error("{delivery}: {reason}")]
    Unrecognized { delivery: Delivery, reason: String },
}

impl EventsError {
    /// How the malformed request was delivered.
    pub fn delivery(&self) -> &Delivery {
        match self {
            EventsError::NotJson { delivery, .. }
            | EventsError::BadBase64 { delivery, .. }
            | EventsError::MissingField { delivery, .. }
            | EventsError::InvalidField { delivery, .. }
            | EventsError::InvalidCloudEvent { delivery, .. }
            | EventsError::MissingImage { delivery, .. }
            | EventsError::Unrecognized { delivery, .. } => delivery,
        }
    }

    /// True when the request came through Pub/Sub: retrying cannot fix it, so the caller acks it
    /// (200, `rejected`) instead of answering 400 as it does to a direct caller.
    pub fn came_through_pubsub(&self) -> bool {
        self.delivery().is_pubsub()
    }
}

/// Parses JSON, naming the thing parsed in the error.
fn parse_json(bytes: &[u8], delivery: &Delivery, what: &str) -> Result<Value, EventsError> {
    serde_json::from_slice(bytes).map_err(|source| EventsError::NotJson {
        delivery: delivery.clone(),
        what: what.to_owned(),
        source,
    })
}

/// Shortens a value taken from the request before it goes into a message: bodies are up to
/// 1 MiB and an error or log line should not be.
fn clip(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}...", &s[..end]),
    }
}
