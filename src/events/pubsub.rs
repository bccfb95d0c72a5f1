//! Pub/Sub deliveries: the push envelope ("wrapped"), the unwrapped push with write metadata,
//! Eventarc's `messagePublished` CloudEvent, and what a Pub/Sub message itself may carry.
//!
//! Shapes, as Google documents them:
//!
//! - Wrapped push (<https://cloud.google.com/pubsub/docs/push>): a JSON body
//!   `{"message":{"attributes":{..},"data":"<base64>","messageId":"..","message_id":"..",
//!   "publishTime":"..","publish_time":"..","orderingKey":".."},"subscription":"projects/P/subscriptions/S",
//!   "deliveryAttempt":N}` — ids and times are sent in both camelCase and snake_case.
//! - Unwrapped push (payload unwrapping, `PushConfig.NoWrapper.write_metadata`): the raw data
//!   is the body; metadata arrives as `x-goog-pubsub-message-id`, `x-goog-pubsub-subscription-name`,
//!   `x-goog-pubsub-publish-time` (and `x-goog-pubsub-ordering-key`) headers, and each attribute
//!   as a `KEY: VALUE` header. Without write metadata nothing marks the request as Pub/Sub: it is
//!   read as a direct request.
//! - Eventarc (<https://cloud.google.com/eventarc/docs/cloudevents>): a CloudEvent in HTTP
//!   binary mode, `ce-type: google.cloud.pubsub.topic.v1.messagePublished`, `ce-id` = the message
//!   id, `ce-source: //pubsub.googleapis.com/projects/P/topics/T`, and as data the same
//!   `{"message":{..},"subscription":..}` object as the wrapped push.
//! - The message: CloudEvents Pub/Sub protocol binding (cloudevents/spec
//!   `pubsub-protocol-binding.md`) — structured when the `Content-Type` attribute starts with
//!   `application/cloudevents`, binary (`ce-*` attributes) otherwise; else Cloud Build and
//!   Cloud Monitoring notifications, recognised by shape.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Event};
use http::HeaderMap;
use serde_json::{Map, Value};

use super::attributes::Attributes;
use super::cloudevent::{self, ContentMode, Fallback};
use super::{Delivery, EventsError, Parsed, Vocabulary, cloud_build, monitoring, parse_json};

/// The CloudEvents type Eventarc gives a Pub/Sub message.
pub(crate) const MESSAGE_PUBLISHED: &str = "google.cloud.pubsub.topic.v1.messagePublished";

/// The source of an event published by hand when the subscription is unknown (docs/events.md).
const UNKNOWN_SOURCE: &str = "//pubsub";

const HEADER_MESSAGE_ID: &str = "x-goog-pubsub-message-id";
const HEADER_SUBSCRIPTION: &str = "x-goog-pubsub-subscription-name";
const HEADER_PUBLISH_TIME: &str = "x-goog-pubsub-publish-time";

/// Pub/Sub's JSON encodes bytes as standard base64 with padding; unpadded input is accepted too,
/// and URL-safe base64 as a second try, since hand-built test requests use all three.
const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The delivery of an unwrapped push with write metadata, if the headers say it is one.
pub(crate) fn unwrapped_delivery(headers: &HeaderMap) -> Option<Delivery> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let message_id = header(HEADER_MESSAGE_ID);
    let subscription = header(HEADER_SUBSCRIPTION);
    if message_id.is_none() && subscription.is_none() {
        return None;
    }
    Some(Delivery::PubSub {
        message_id: message_id.unwrap_or_default().to_owned(),
        subscription: subscription.map(str::to_owned),
        publish_time: header(HEADER_PUBLISH_TIME).and_then(parse_publish_time),
    })
}

/// Reads an unwrapped push: the body is the message data and the headers are its attributes.
pub(crate) fn parse_unwrapped(
    delivery: Delivery,
    headers: &HeaderMap,
    body: &[u8],
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    let attributes = Attributes::from_headers(headers, false).map_err(|reason| {
        EventsError::InvalidCloudEvent {
            delivery: delivery.clone(),
            reason,
        }
    })?;
    parse_message(delivery, &attributes, body, vocabulary)
}

/// True for a JSON object shaped like a push envelope: `message` is an object.
pub(crate) fn is_envelope(value: &Value) -> bool {
    value.get("message").is_some_and(Value::is_object)
}

/// What an Eventarc event lends the envelope it carries, should the envelope lack it.
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvelopeDefaults {
    message_id: Option<String>,
    publish_time: Option<DateTime<Utc>>,
}

/// Reads a push envelope (wrapped push, or the data of an Eventarc `messagePublished` event).
pub(crate) fn parse_envelope(
    envelope: &Value,
    defaults: Option<&EnvelopeDefaults>,
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    let defaults = defaults.cloned().unwrap_or_default();
    let message = envelope.get("message").and_then(Value::as_object);
    let id = message
        .and_then(|message| {
            id_field(message, "messageId").or_else(|| id_field(message, "message_id"))
        })
        .or(defaults.message_id)
        .unwrap_or_default();
    let subscription = envelope
        .get("subscription")
        .and_then(Value::as_str)
        .filter(|subscription| !subscription.is_empty())
        .map(str::to_owned);
    let publish_time = message
        .and_then(|message| {
            ["publishTime", "publish_time"]
                .into_iter()
                .find_map(|name| message.get(name).and_then(Value::as_str))
        })
        .and_then(parse_publish_time)
        .or(defaults.publish_time);
    let delivery = Delivery::PubSub {
        message_id: id.clone(),
        subscription,
        publish_time,
    };
    let Some(message) = message else {
        return Err(EventsError::MissingField {
            delivery,
            what: "the push envelope".into(),
            field: "message".into(),
        });
    };
    if id.is_empty() {
        // Pub/Sub always sends one; without it deliveries cannot be de-duplicated.
        return Err(EventsError::MissingField {
            delivery,
            what: "the push envelope".into(),
            field: "message.messageId".into(),
        });
    }
    let attributes = message_attributes(message, &delivery)?;
    let data = match message.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(encoded)) => {
            decode_base64(encoded).map_err(|source| EventsError::BadBase64 {
                delivery: delivery.clone(),
                what: "data".into(),
                source,
            })?
        }
        Some(_) => {
            return Err(EventsError::InvalidField {
                delivery,
                field: "message.data".into(),
                reason: "must be a base64 string".into(),
            });
        }
    };
    parse_message(delivery, &attributes, &data, vocabulary)
}

/// Reads an Eventarc `messagePublished` event: its data is a push envelope.
pub(crate) fn parse_eventarc(
    event: &Event,
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    // Eventarc delivers through a Pub/Sub subscription of its own and its `id` is the message id,
    // so even a broken envelope is a Pub/Sub delivery (acked, not retried forever).
    let defaults = EnvelopeDefaults {
        message_id: Some(event.id().to_owned()),
        publish_time: event.time().copied(),
    };
    let delivery = Delivery::PubSub {
        message_id: event.id().to_owned(),
        subscription: None,
        publish_time: event.time().copied(),
    };
    let what = "the Eventarc messagePublished event";
    let Some(envelope) = cloudevent::data_json(event, &delivery, what)? else {
        return Err(EventsError::MissingField {
            delivery,
            what: what.into(),
            field: "data".into(),
        });
    };
    if !is_envelope(&envelope) {
        return Err(EventsError::MissingField {
            delivery,
            what: what.into(),
            field: "data.message".into(),
        });
    }
    parse_envelope(&envelope, Some(&defaults), vocabulary)
}

/// Reads one Pub/Sub message: a CloudEvent (structured, binary or the manual form), or a Cloud
/// Build or Cloud Monitoring notification recognised by its attributes or shape.
pub(crate) fn parse_message(
    delivery: Delivery,
    attributes: &Attributes,
    data: &[u8],
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    let (message_id, subscription, publish_time) = match &delivery {
        Delivery::PubSub {
            message_id,
            subscription,
            publish_time,
        } => (message_id.clone(), subscription.clone(), *publish_time),
        Delivery::Direct => (String::new(), None, None),
    };
    let invalid = |reason: String| EventsError::InvalidCloudEvent {
        delivery: delivery.clone(),
        reason,
    };
    let content_type = attributes.get("content-type");

    match cloudevent::content_mode(content_type.unwrap_or_default()) {
        ContentMode::Structured => {
            let value = parse_json(data, &delivery, "data")?;
            let event = cloudevent::from_structured(value).map_err(invalid)?;
            return cloudevent::into_parsed(event, delivery, publish_time, vocabulary);
        }
        ContentMode::Batch | ContentMode::UnsupportedFormat(_) => {
            return Err(EventsError::Unrecognized {
                reason: format!(
                    "Content-Type attribute {:?} names a CloudEvents format promoter does not \
                     read (only application/cloudevents+json)",
                    super::clip(content_type.unwrap_or_default())
                ),
                delivery,
            });
        }
        ContentMode::Other => {}
    }

    if attributes.has_ce() || attributes.get("type").is_some() {
        let fallback = Fallback {
            id: message_id,
            source: subscription.unwrap_or_else(|| UNKNOWN_SOURCE.to_owned()),
        };
        let event = cloudevent::from_binary(attributes, data, content_type, Some(&fallback))
            .map_err(invalid)?;
        return cloudevent::into_parsed(event, delivery, publish_time, vocabulary);
    }

    // No CloudEvents framing. Cloud Build marks its messages with attributes.
    if attributes.get("buildId").is_some() && attributes.get("status").is_some() {
        let value = parse_json(data, &delivery, "Cloud Build notification data")?;
        return cloud_build::parse(&delivery, &value, Some(attributes), vocabulary);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return Err(EventsError::Unrecognized {
            delivery,
            reason: "the message has no CloudEvent type attribute (ce-type or type) and its data \
                     is not JSON"
                .into(),
        });
    };
    if cloudevent::looks_structured(&value) {
        // A structured event published without its Content-Type attribute.
        let event = cloudevent::from_structured(value).map_err(invalid)?;
        return cloudevent::into_parsed(event, delivery, publish_time, vocabulary);
    }
    if monitoring::looks_like_notification(&value) {
        return Ok(monitoring::parse(&delivery, &value));
    }
    if cloud_build::looks_like_build(&value) {
        return cloud_build::parse(&delivery, &value, None, vocabulary);
    }
    Err(EventsError::Unrecognized {
        delivery,
        reason: "the message has no CloudEvent type attribute (ce-type or type) and its data is \
                 neither a Cloud Build nor a Cloud Monitoring notification"
            .into(),
    })
}

/// The message's `attributes`: an object of strings (absent or null means none).
fn message_attributes(
    message: &Map<String, Value>,
    delivery: &Delivery,
) -> Result<Attributes, EventsError> {
    let object = match message.get("attributes") {
        None | Some(Value::Null) => return Ok(Attributes::default()),
        Some(Value::Object(object)) => object,
        Some(_) => {
            return Err(EventsError::InvalidField {
                delivery: delivery.clone(),
                field: "message.attributes".into(),
                reason: "must be an object of strings".into(),
            });
        }
    };
    let mut pairs = Vec::with_capacity(object.len());
    for (key, value) in object {
        let Some(text) = value.as_str() else {
            return Err(EventsError::InvalidField {
                delivery: delivery.clone(),
                field: format!("message.attributes.{}", super::clip(key)),
                reason: "must be a string".into(),
            });
        };
        pairs.push((key.clone(), text.to_owned()));
    }
    Ok(Attributes::from_pubsub(pairs))
}

/// A message id: a string as Pub/Sub sends it, or a number from a hand-written test body.
fn id_field(message: &Map<String, Value>, name: &str) -> Option<String> {
    match message.get(name)? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A publish time; one that cannot be read is dropped rather than refused, since it is only
/// metadata (it stands in for an event's missing `time`).
fn parse_publish_time(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn decode_base64(encoded: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD
        .decode(encoded)
        .or_else(|err| URL_SAFE.decode(encoded).map_err(|_| err))
}
