//! CloudEvents 1.0: reading an event in structured mode (JSON event format) or binary mode
//! (attributes beside the data), checking it against the specification, and turning a promoter
//! event into a signal.
//!
//! The event itself is the SDK's [`cloudevents::Event`]. The SDK's JSON deserializer accepts
//! events the specification forbids (empty `id`, `datacontenttype: "xyz"`, `MyExtension`, ...),
//! so structured events are first checked here against the spec and the CloudEvents
//! conformance vectors (`tests/conformance/cloudevents-json`), then handed to the SDK.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Data, Event, EventBuilder, EventBuilderV10};
use http::HeaderMap;
use serde_json::{Map, Value};

use super::attributes::Attributes;
use super::{
    Delivery, EventsError, Inbound, Parsed, RawSignal, SignalKind, Vocabulary, clip, cloud_build,
    parse_json, pubsub,
};

/// The only specification version promoter reads (docs/events.md: "CloudEvents 1.0").
const SPEC_VERSION: &str = "1.0";

/// Context attributes the specification defines; every other attribute is an extension.
const CORE_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// How a `Content-Type` (HTTP header or Pub/Sub attribute) frames a CloudEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentMode {
    /// `application/cloudevents+json`: the body is the event in the JSON format.
    Structured,
    /// `application/cloudevents-batch+json`.
    Batch,
    /// Another `application/cloudevents+...` format (avro, protobuf): not read.
    UnsupportedFormat(String),
    /// Anything else: binary mode, or no CloudEvent at all.
    Other,
}

/// Classifies a content type. Both bindings say a media type prefixed with
/// `application/cloudevents` means structured mode.
pub(crate) fn content_mode(content_type: &str) -> ContentMode {
    let media_type = media_type_of(content_type);
    match media_type.as_str() {
        "application/cloudevents" | "application/cloudevents+json" => ContentMode::Structured,
        "application/cloudevents-batch+json" => ContentMode::Batch,
        other if other.starts_with("application/cloudevents") => {
            ContentMode::UnsupportedFormat(other.to_owned())
        }
        _ => ContentMode::Other,
    }
}

/// True when the HTTP request carries CloudEvents binary-mode headers.
pub(crate) fn has_binary_headers(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name.as_str().starts_with("ce-"))
}

/// True for a JSON object that declares itself a structured event (`specversion` present),
/// whatever content type it was sent with.
pub(crate) fn looks_structured(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|object| object.contains_key("specversion"))
}

/// Reads a CloudEvent in HTTP binary mode: `ce-*` headers (percent-decoded, as the HTTP binding
/// says) and `Content-Type` as `datacontenttype`. Every required attribute must be present:
/// there is no Pub/Sub message to lend an id.
pub(crate) fn from_http_binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, String> {
    let attributes = Attributes::from_headers(headers, true)?;
    let content_type = attributes.get("content-type");
    from_binary(&attributes, body, content_type, None)
}

/// What a Pub/Sub message lends an event published by hand with only `ce-type` (or `type`) set
/// (docs/events.md "The manual form").
#[derive(Debug, Clone)]
pub(crate) struct Fallback {
    /// The Pub/Sub message id, used when `ce-id` is absent.
    pub(crate) id: String,
    /// The subscription (or `//pubsub`), used when `ce-source` is absent.
    pub(crate) source: String,
}

/// Reads a CloudEvent in binary mode from `ce-*` attributes and the data bytes.
///
/// With a `fallback` (Pub/Sub deliveries) the lenient manual form is accepted: `specversion`
/// defaults to 1.0, `id` and `source` come from the message, and a plain `type` attribute stands
/// in for `ce-type`. Attributes that are present are still checked: an empty one is an error.
pub(crate) fn from_binary(
    attributes: &Attributes,
    data: &[u8],
    content_type: Option<&str>,
    fallback: Option<&Fallback>,
) -> Result<Event, String> {
    let ce = |name: &str| attributes.get(&format!("ce-{name}"));

    match (ce("specversion"), fallback) {
        (Some(version), _) => check_spec_version(version)?,
        (None, Some(_)) => {}
        (None, None) => return Err("missing required attribute ce-specversion".into()),
    }
    let ty = match (ce("type"), fallback) {
        (Some(ty), _) => ty,
        (None, Some(_)) => attributes
            .get("type")
            .ok_or("missing required attribute ce-type (or type)")?,
        (None, None) => return Err("missing required attribute ce-type".into()),
    };
    non_empty("type", ty)?;
    let id = match (ce("id"), fallback) {
        (Some(id), _) => id,
        (None, Some(fallback)) => fallback.id.as_str(),
        (None, None) => return Err("missing required attribute ce-id".into()),
    };
    non_empty("id", id)?;
    let source = match (ce("source"), fallback) {
        (Some(source), _) => source,
        (None, Some(fallback)) => fallback.source.as_str(),
        (None, None) => return Err("missing required attribute ce-source".into()),
    };
    check_uri_reference("source", source)?;

    let mut builder = EventBuilderV10::new().id(id).source(source).ty(ty);
    if let Some(subject) = ce("subject") {
        non_empty("subject", subject)?;
        builder = builder.subject(subject);
    }
    if let Some(time) = ce("time") {
        builder = builder.time(parse_time(time)?);
    }
    for (name, value) in attributes.ce() {
        // A header that is not a valid attribute name cannot be an extension; it is skipped
        // rather than refused, as proxies and SDKs add headers a sender does not control.
        if !CORE_ATTRIBUTES.contains(&name) && is_extension_name(name) {
            builder = builder.extension(name, value);
        }
    }
    // The Pub/Sub binding maps the `Content-Type` attribute to `datacontenttype`; its own example
    // also shows `ce-datacontenttype`, so that is read when `Content-Type` is absent.
    let content_type = content_type.or_else(|| ce("datacontenttype"));
    if let Some(content_type) = content_type {
        check_media_type("datacontenttype", content_type)?;
    }
    let dataschema = ce("dataschema");
    if let Some(dataschema) = dataschema {
        check_absolute_uri("dataschema", dataschema)?;
    }
    let payload = (!data.is_empty()).then(|| binary_data(data, content_type));
    let mut untyped_payload = None;
    builder = match (payload, content_type, dataschema) {
        (Some(payload), Some(ct), Some(schema)) => builder.data_with_schema(ct, schema, payload),
        (Some(payload), Some(ct), None) => builder.data(ct, payload),
        (payload, None, _) => {
            untyped_payload = payload;
            builder
        }
        (None, Some(_), _) => builder,
    };
    let mut event = builder.build().map_err(|err| err.to_string())?;
    if let Some(payload) = untyped_payload {
        // No datacontenttype: the data is kept without one, as the spec allows.
        event.set_data_unchecked(payload);
    }
    Ok(event)
}

/// Binary-mode data as the SDK holds it: JSON when it is JSON (or untyped and parses as JSON),
/// text for `text/*`, bytes otherwise. Whether it must be JSON is decided only once the event is
/// known to be promoter's, so an unknown event with odd data is ignored rather than refused.
fn binary_data(data: &[u8], content_type: Option<&str>) -> Data {
    let json_or_untyped = content_type.is_none_or(is_json_media_type);
    if json_or_untyped && let Ok(value) = serde_json::from_slice::<Value>(data) {
        return Data::Json(value);
    }
    if content_type.is_some_and(|ct| media_type_of(ct).starts_with("text/"))
        && let Ok(text) = std::str::from_utf8(data)
    {
        return Data::String(text.to_owned());
    }
    Data::Binary(data.to_vec())
}

/// Reads a CloudEvent in the JSON event format, checking it against the specification first.
pub(crate) fn from_structured(value: Value) -> Result<Event, String> {
    let Value::Object(mut object) = value else {
        return Err("a structured event must be a JSON object".into());
    };
    check_structured(&object)?;
    // Null means absent for optional attributes (conformance: validMinimalWithNullForOptional).
    object.retain(|_, value| !value.is_null());
    serde_json::from_value::<Event>(Value::Object(object)).map_err(|err| err.to_string())
}

/// The CloudEvents 1.0 rules the SDK's deserializer does not enforce.
fn check_structured(object: &Map<String, Value>) -> Result<(), String> {
    for required in ["specversion", "id", "source", "type"] {
        if object.get(required).is_none_or(Value::is_null) {
            return Err(format!("missing required attribute {required}"));
        }
    }
    for (name, value) in object {
        match name.as_str() {
            "specversion" => check_spec_version(string_attribute(name, value)?)?,
            "id" | "type" => non_empty(name, string_attribute(name, value)?)?,
            "source" => check_uri_reference(name, string_attribute(name, value)?)?,
            _ if value.is_null() => {}
            "datacontenttype" => check_media_type(name, string_attribute(name, value)?)?,
            "dataschema" => check_absolute_uri(name, string_attribute(name, value)?)?,
            "subject" => non_empty(name, string_attribute(name, value)?)?,
            "time" => {
                parse_time(string_attribute(name, value)?)?;
            }
            "data" => {}
            "data_base64" => {
                let encoded = value
                    .as_str()
                    .ok_or("attribute data_base64 must be a string")?;
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|err| format!("data_base64 is not valid base64: {err}"))?;
            }
            extension => check_extension(extension, value)?,
        }
    }
    let present = |name: &str| object.get(name).is_some_and(|value| !value.is_null());
    if present("data") && present("data_base64") {
        return Err("an event cannot have both data and data_base64".into());
    }
    Ok(())
}

fn string_attribute<'a>(name: &str, value: &'a Value) -> Result<&'a str, String> {
    value.as_str().ok_or_else(|| {
        format!(
            "attribute {name} must be a string, not {}",
            json_kind(value)
        )
    })
}

fn check_spec_version(version: &str) -> Result<(), String> {
    if version == SPEC_VERSION {
        Ok(())
    } else {
        Err(format!(
            "specversion {:?} is not supported: promoter reads CloudEvents {SPEC_VERSION}",
            clip(version)
        ))
    }
}

fn non_empty(name: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err(format!("attribute {name} must not be empty"))
    } else {
        Ok(())
    }
}

/// `source` is a URI-reference: any non-empty string without spaces or control characters
/// (`#fragment`, `//pubsub`, `projects/p/subscriptions/s` are all valid).
fn check_uri_reference(name: &str, value: &str) -> Result<(), String> {
    non_empty(name, value)?;
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "attribute {name} {:?} is not a URI-reference",
            clip(value)
        ));
    }
    Ok(())
}

/// `dataschema` is an absolute URI: a scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`),
/// a colon, and no spaces.
fn check_absolute_uri(name: &str, value: &str) -> Result<(), String> {
    non_empty(name, value)?;
    let scheme_ok = value.split_once(':').is_some_and(|(scheme, _)| {
        let mut chars = scheme.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if !scheme_ok || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "attribute {name} {:?} is not an absolute URI",
            clip(value)
        ));
    }
    Ok(())
}

/// `datacontenttype` is an RFC 2046 media type: `type/subtype` of token characters, optionally
/// followed by parameters.
fn check_media_type(name: &str, value: &str) -> Result<(), String> {
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let valid = essence
        .split_once('/')
        .is_some_and(|(ty, subtype)| is_token(ty) && is_token(subtype));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "attribute {name} {:?} is not an RFC 2046 media type",
            clip(value)
        ))
    }
}

/// Parses an RFC 3339 timestamp (`time`); other forms (`2018-04-05T18:31Z`, `+05`) are refused.
fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|err| format!("time {:?} is not an RFC 3339 timestamp: {err}", clip(value)))
}

/// Attribute names are lower-case ASCII letters and digits (spec "Attribute Naming Convention").
fn is_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// An extension needs a valid name and a value of a CloudEvents type the JSON format can carry:
/// string, boolean or a 32-bit integer.
fn check_extension(name: &str, value: &Value) -> Result<(), String> {
    if !is_extension_name(name) {
        return Err(format!(
            "attribute name {:?} is invalid: names are lower-case letters and digits",
            clip(name)
        ));
    }
    let valid = match value {
        Value::String(_) | Value::Bool(_) | Value::Null => true,
        Value::Number(number) => number.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        Value::Array(_) | Value::Object(_) => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "extension {name} has a {} value; extensions are strings, booleans or 32-bit integers",
            json_kind(value)
        ))
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "non-integer number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The media type of a content type, lower-cased, without parameters.
fn media_type_of(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// JSON media types, as the JSON event format counts them.
fn is_json_media_type(content_type: &str) -> bool {
    let media_type = media_type_of(content_type);
    media_type == "application/json" || media_type == "text/json" || media_type.ends_with("+json")
}

/// Turns a valid CloudEvent into the outcome of a request.
///
/// An Eventarc `messagePublished` event is unwrapped into the Pub/Sub message it carries. A
/// promoter type becomes one signal; any other type is ignored. `fallback_time` (the Pub/Sub
/// publish time) stands in for an absent `time`.
pub(crate) fn into_parsed(
    event: Event,
    delivery: Delivery,
    fallback_time: Option<DateTime<Utc>>,
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    if event.ty() == pubsub::MESSAGE_PUBLISHED {
        return pubsub::parse_eventarc(&event, vocabulary);
    }
    if event.ty() == cloud_build::EVENT_TYPE {
        // Cloud Build status changes as a CloudEvent (Google's event catalog; Knative's
        // CloudBuildSource): the data is the same Build resource as in the Pub/Sub notification.
        let what = "the Cloud Build event";
        let build =
            data_json(&event, &delivery, what)?.ok_or_else(|| EventsError::MissingField {
                delivery: delivery.clone(),
                what: what.into(),
                field: "data".into(),
            })?;
        return cloud_build::parse(&delivery, &build, None, vocabulary);
    }
    if super::is_reconcile(event.ty()) {
        let fields = DataFields::read(&event, &delivery)?;
        return Ok(Parsed::Reconcile {
            reconcile: super::Reconcile {
                event_id: event.id().to_owned(),
                event_source: event.source().to_string(),
                event_type: event.ty().to_owned(),
                stage: fields.stage,
                image: fields.image,
            },
            delivery,
        });
    }
    for (name, freeze) in [(super::FREEZE, true), (super::UNFREEZE, false)] {
        if !super::is_type(event.ty(), name) {
            continue;
        }
        let fields = DataFields::read(&event, &delivery)?;
        let stage = fields.stage.ok_or_else(|| EventsError::MissingField {
            delivery: delivery.clone(),
            what: format!("{name} event {}", clip(event.id())),
            field: "data.stage".into(),
        })?;
        return Ok(Parsed::Stage {
            event: super::StageEvent {
                freeze,
                stage,
                reason: fields.reason,
                event_id: event.id().to_owned(),
                event_source: event.source().to_string(),
                event_type: event.ty().to_owned(),
                time: event.time().copied().or(fallback_time),
            },
            delivery,
        });
    }
    let Some(kind) = SignalKind::from_event_type(event.ty(), &vocabulary.declared) else {
        return Ok(Parsed::Ignored {
            reason: format!(
                "event {} has type {:?}, which is not a promoter signal (test-passed, \
                 test-failed, soak-complete, alert-firing, alert-clear, approved, a signal the \
                 rules declare, or a type ending in .<one of those>)",
                clip(event.id()),
                clip(event.ty())
            ),
            delivery,
        });
    };
    let fields = DataFields::read(&event, &delivery)?;
    let image = fields
        .image
        .or_else(|| event.subject().map(str::to_owned))
        .filter(|image| !image.is_empty())
        .ok_or_else(|| EventsError::MissingImage {
            delivery: delivery.clone(),
            event_id: clip(event.id()),
            event_type: clip(event.ty()),
        })?;
    let signal = RawSignal {
        kind,
        image,
        digest: fields.digest,
        stage: fields.stage,
        event_id: event.id().to_owned(),
        event_source: event.source().clone(),
        event_type: event.ty().to_owned(),
        caller: None,
        time: event.time().copied().or(fallback_time),
    };
    Ok(Parsed::Signals(Inbound {
        delivery,
        signals: vec![signal],
    }))
}

/// An event's data as JSON, whichever way the SDK holds it; `None` when it has no data.
pub(crate) fn data_json(
    event: &Event,
    delivery: &Delivery,
    what: &str,
) -> Result<Option<Value>, EventsError> {
    let what = format!("data of {what}");
    match event.data() {
        None => Ok(None),
        Some(Data::Json(value)) => Ok(Some(value.clone())),
        Some(Data::String(text)) => parse_json(text.as_bytes(), delivery, &what).map(Some),
        Some(Data::Binary(bytes)) => parse_json(bytes, delivery, &what).map(Some),
    }
}

/// The fields of a promoter event's `data`: `{"image", "digest", "stage", "reason"}`.
#[derive(Debug, Default)]
struct DataFields {
    image: Option<String>,
    digest: Option<String>,
    stage: Option<String>,
    reason: Option<String>,
}

impl DataFields {
    fn read(event: &Event, delivery: &Delivery) -> Result<DataFields, EventsError> {
        let object = match event.data() {
            None => return Ok(DataFields::default()),
            Some(Data::Json(Value::Object(object))) => object.clone(),
            // Data sent as a JSON string holding JSON (double-encoded) or as text/plain JSON:
            // read when it is an object, otherwise the event simply has no data fields.
            Some(Data::Json(Value::String(text))) | Some(Data::String(text)) => {
                match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(object)) => object,
                    _ => return Ok(DataFields::default()),
                }
            }
            Some(Data::Json(_)) => return Ok(DataFields::default()),
            Some(Data::Binary(bytes)) => {
                let declared_json = event.datacontenttype().is_none_or(is_json_media_type);
                match serde_json::from_slice::<Value>(bytes) {
                    Ok(Value::Object(object)) => object,
                    Ok(_) => return Ok(DataFields::default()),
                    Err(source) if declared_json => {
                        return Err(EventsError::NotJson {
                            delivery: delivery.clone(),
                            what: format!("data of event {}", clip(event.id())),
                            source,
                        });
                    }
                    Err(_) => return Ok(DataFields::default()),
                }
            }
        };
        Ok(DataFields {
            image: string_field(&object, "image", delivery)?,
            digest: string_field(&object, "digest", delivery)?,
            stage: string_field(&object, "stage", delivery)?,
            reason: string_field(&object, "reason", delivery)?,
        })
    }
}

/// An optional string field of `data`; empty counts as absent, any other JSON type is an error.
fn string_field(
    object: &Map<String, Value>,
    name: &str,
    delivery: &Delivery,
) -> Result<Option<String>, EventsError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        // An image or digest padded with whitespace (a trailing newline from a shell) is
        // malformed, as skopeo and crane find it: promoting the trimmed reference would act on
        // something the sender did not quite write.
        Some(Value::String(text))
            if text.trim() != text && (name == "image" || name == "digest") =>
        {
            Err(EventsError::InvalidField {
                delivery: delivery.clone(),
                field: format!("data.{name}"),
                reason: format!("{:?} has leading or trailing whitespace", clip(text)),
            })
        }
        Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
        Some(other) => Err(EventsError::InvalidField {
            delivery: delivery.clone(),
            field: format!("data.{name}"),
            reason: format!("must be a string, not {}", json_kind(other)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_modes() {
        assert_eq!(
            content_mode("application/cloudevents+json; charset=UTF-8"),
            ContentMode::Structured
        );
        assert_eq!(
            content_mode("Application/CloudEvents+JSON"),
            ContentMode::Structured
        );
        assert_eq!(
            content_mode("application/cloudevents-batch+json"),
            ContentMode::Batch
        );
        assert_eq!(
            content_mode("application/cloudevents+avro"),
            ContentMode::UnsupportedFormat("application/cloudevents+avro".into())
        );
        assert_eq!(content_mode("application/json"), ContentMode::Other);
        assert_eq!(content_mode(""), ContentMode::Other);
    }

    #[test]
    fn media_types() {
        assert!(check_media_type("t", "application/json").is_ok());
        assert!(check_media_type("t", "application/json; charset=utf-8").is_ok());
        assert!(check_media_type("t", "text/plain").is_ok());
        assert!(check_media_type("t", "xyz").is_err());
        assert!(check_media_type("t", "").is_err());
        assert!(check_media_type("t", "/json").is_err());
    }

    #[test]
    fn uris() {
        assert!(check_absolute_uri("s", "https://cloudevents.io/schema").is_ok());
        assert!(check_absolute_uri("s", "urn:x").is_ok());
        assert!(check_absolute_uri("s", "").is_err());
        assert!(check_absolute_uri("s", "/relative").is_err());
        assert!(check_uri_reference("s", "#fragment").is_ok());
        assert!(check_uri_reference("s", "has space").is_err());
    }

    #[test]
    fn times() {
        assert!(parse_time("2018-04-05T17:31:00Z").is_ok());
        assert!(parse_time("2018-04-05T17:31:00.000000000Z").is_ok());
        assert!(parse_time("2018-04-05T18:31:00+01:00").is_ok());
        for bad in [
            "lunchtime",
            "2018-04-05T18:31Z",
            "2018-04-05T18:31:00X",
            "2018-04-05T18:31:00+25:00",
            "2018-04-05T18:31:00+xx:00",
            "2018-04-05T18:31:00+05",
        ] {
            assert!(parse_time(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn extension_values() {
        assert!(check_extension("ext", &Value::from(10)).is_ok());
        assert!(check_extension("ext", &Value::from(true)).is_ok());
        assert!(check_extension("ext", &Value::from("x")).is_ok());
        assert!(check_extension("ext", &Value::from(1.5)).is_err());
        assert!(check_extension("ext", &Value::from(i64::from(i32::MAX) + 1)).is_err());
        assert!(check_extension("ext", &serde_json::json!({"a": 1})).is_err());
        assert!(check_extension("MyExt", &Value::from("x")).is_err());
        assert!(check_extension("my.ext", &Value::from("x")).is_err());
    }
}
