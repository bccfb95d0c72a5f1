//! Builders for requests exactly as Pub/Sub, Eventarc, gcloud and CloudEvents clients send them.

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// The headers Pub/Sub's push sends with every request, besides `Authorization`
/// (<https://cloud.google.com/pubsub/docs/push>: JSON body, Google's user agent).
pub(crate) const PUSH_USER_AGENT: &str =
    "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)";

pub(crate) const SUBSCRIPTION: &str = "projects/dev-proj/subscriptions/promoter-push";
pub(crate) const MESSAGE_ID: &str = "2070443601311540";
pub(crate) const PUBLISH_TIME: &str = "2021-02-26T19:13:55.749Z";
pub(crate) const IMAGE: &str =
    "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/my-app:1.2.4";

/// A header map from (name, value) pairs, in order.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("test header name");
        let value = HeaderValue::from_str(value).expect("test header value");
        map.append(name, value);
    }
    map
}

/// The headers of a wrapped push request.
pub(crate) fn push_headers() -> HeaderMap {
    headers(&[
        ("content-type", "application/json"),
        ("user-agent", PUSH_USER_AGENT),
        ("authorization", "Bearer not-checked-here"),
    ])
}

/// Standard, padded base64, as Pub/Sub's JSON encodes `data`.
pub(crate) fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The `message` object of a push, as Pub/Sub writes it: ids and publish time in camelCase and
/// snake_case (<https://cloud.google.com/pubsub/docs/push>).
pub(crate) fn push_message(attributes: &[(&str, &str)], data: &[u8]) -> Value {
    let attributes: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(key, value)| ((*key).to_owned(), Value::from(*value)))
        .collect();
    json!({
        "attributes": attributes,
        "data": b64(data),
        "messageId": MESSAGE_ID,
        "message_id": MESSAGE_ID,
        "publishTime": PUBLISH_TIME,
        "publish_time": PUBLISH_TIME,
    })
}

/// A wrapped push body: `{"message": {...}, "subscription": "projects/.../subscriptions/..."}`.
pub(crate) fn push_body(attributes: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message": push_message(attributes, data),
        "subscription": SUBSCRIPTION,
    }))
    .expect("serialize push body")
}

/// The headers of an unwrapped push with write metadata: `x-goog-pubsub-*` metadata, then each
/// attribute as its own header (`PushConfig.NoWrapper.write_metadata`).
pub(crate) fn unwrapped_headers(attributes: &[(&str, &str)]) -> HeaderMap {
    let mut pairs = vec![
        ("user-agent", PUSH_USER_AGENT),
        ("x-goog-pubsub-subscription-name", SUBSCRIPTION),
        ("x-goog-pubsub-message-id", MESSAGE_ID),
        ("x-goog-pubsub-publish-time", PUBLISH_TIME),
    ];
    pairs.extend_from_slice(attributes);
    headers(&pairs)
}

/// The attributes `gcloud pubsub topics publish` sets in docs/events.md's example.
pub(crate) fn readme_attributes(id: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ce-specversion", "1.0"),
        ("ce-type", "test-passed"),
        ("ce-source", "//manual"),
        ("ce-id", id),
        ("content-type", "application/json"),
    ]
}

/// The message data of docs/events.md's example.
pub(crate) fn readme_data() -> Vec<u8> {
    format!(r#"{{"image":"{IMAGE}"}}"#).into_bytes()
}
