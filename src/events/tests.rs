//! One test per inbound form, each request built the way its sender builds it (the shape's
//! source is cited at each), plus the CloudEvents JSON conformance vectors and bad input.

use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use super::test_support::*;
use super::*;

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

fn pubsub_delivery() -> Delivery {
    Delivery::PubSub {
        message_id: MESSAGE_ID.into(),
        subscription: Some(SUBSCRIPTION.into()),
        publish_time: Some(time(PUBLISH_TIME)),
    }
}

/// The signals of a request that must have some.
fn signals(headers: &http::HeaderMap, body: &[u8]) -> (Delivery, Vec<RawSignal>) {
    match parse(headers, body, &Vocabulary::default()) {
        Ok(Parsed::Signals(inbound)) => (inbound.delivery, inbound.signals),
        other => panic!("expected signals, got {other:?}"),
    }
}

/// The single signal of a request.
fn one_signal(headers: &http::HeaderMap, body: &[u8]) -> (Delivery, RawSignal) {
    let (delivery, mut signals) = signals(headers, body);
    assert_eq!(signals.len(), 1, "{signals:?}");
    (delivery, signals.remove(0))
}

fn ignored(headers: &http::HeaderMap, body: &[u8]) -> (Delivery, String) {
    match parse(headers, body, &Vocabulary::default()) {
        Ok(Parsed::Ignored { delivery, reason }) => (delivery, reason),
        other => panic!("expected ignored, got {other:?}"),
    }
}

fn error(headers: &http::HeaderMap, body: &[u8]) -> EventsError {
    match parse(headers, body, &Vocabulary::default()) {
        Err(err) => err,
        Ok(parsed) => panic!("expected an error, got {parsed:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Pub/Sub push, wrapped (https://cloud.google.com/pubsub/docs/push)
// ---------------------------------------------------------------------------------------------

/// docs/events.md's command, `gcloud pubsub topics publish p2p-events --message='{"image":..}'
/// --attribute=ce-specversion=1.0,ce-type=test-passed,ce-source=//manual,ce-id=...,
/// content-type=application/json`, delivered by a push subscription; the body is written out
/// literally as Pub/Sub sends it.
#[test]
fn wrapped_push_with_binary_cloudevent_attributes() {
    let data = b64(&readme_data());
    let body = format!(
        r#"{{"message":{{"attributes":{{"ce-id":"6b0e5e0c-5b7a-4c1e-9d0f-2f1e3d4c5b6a","ce-source":"//manual","ce-specversion":"1.0","ce-type":"test-passed","content-type":"application/json"}},"data":"{data}","messageId":"{MESSAGE_ID}","message_id":"{MESSAGE_ID}","publishTime":"{PUBLISH_TIME}","publish_time":"{PUBLISH_TIME}"}},"subscription":"{SUBSCRIPTION}"}}"#
    );
    let (delivery, signal) = one_signal(&push_headers(), body.as_bytes());
    assert_eq!(delivery, pubsub_delivery());
    assert_eq!(
        signal,
        RawSignal {
            caller: None,
            kind: SignalKind::TestPassed,
            image: IMAGE.into(),
            digest: None,
            stage: None,
            event_id: "6b0e5e0c-5b7a-4c1e-9d0f-2f1e3d4c5b6a".into(),
            event_source: "//manual".into(),
            event_type: "test-passed".into(),
            // No ce-time: the publish time stands in.
            time: Some(time(PUBLISH_TIME)),
        }
    );
}

/// The manual form: `gcloud pubsub topics publish p2p-events --message='{"image":".."}'
/// --attribute=ce-type=test-passed` (docs/events.md "The manual form").
#[test]
fn wrapped_push_manual_form_borrows_id_and_source_from_the_message() {
    let body = push_body(&[("ce-type", "test-passed")], &readme_data());
    let (_, signal) = one_signal(&push_headers(), &body);
    assert_eq!(signal.event_id, MESSAGE_ID);
    assert_eq!(signal.event_source, SUBSCRIPTION);
    assert_eq!(signal.kind, SignalKind::TestPassed);
    assert_eq!(signal.image, IMAGE);

    // `type` instead of `ce-type`.
    let body = push_body(&[("type", "com.acme.p2p.soak-complete")], &readme_data());
    let (_, signal) = one_signal(&push_headers(), &body);
    assert_eq!(signal.kind, SignalKind::SoakComplete);
    assert_eq!(signal.event_type, "com.acme.p2p.soak-complete");
    assert_eq!(signal.event_id, MESSAGE_ID);
}

/// Only the snake_case ids (the push doc's older example) are enough.
#[test]
fn wrapped_push_with_snake_case_ids_only() {
    let body = json!({
        "message": {
            "attributes": {"ce-type": "test-failed"},
            "data": b64(br#"{"image":"my-app@sha256:abc","digest":"sha256:abc"}"#),
            "message_id": "136969346945"
        },
        "subscription": "projects/myproject/subscriptions/mysubscription"
    });
    let (delivery, signal) = one_signal(&push_headers(), body.to_string().as_bytes());
    assert_eq!(
        delivery,
        Delivery::PubSub {
            message_id: "136969346945".into(),
            subscription: Some("projects/myproject/subscriptions/mysubscription".into()),
            publish_time: None,
        }
    );
    assert_eq!(signal.kind, SignalKind::TestFailed);
    assert_eq!(signal.digest.as_deref(), Some("sha256:abc"));
    assert_eq!(signal.time, None);
}

/// Pub/Sub binding, structured mode: attribute `Content-Type: application/cloudevents+json;
/// charset=UTF-8`, the data is the JSON event (cloudevents/spec pubsub-protocol-binding.md 3.2).
#[test]
fn wrapped_push_with_structured_cloudevent() {
    let event = json!({
        "specversion": "1.0",
        "type": "alert-firing",
        "source": "//alerts/acme",
        "id": "alert-1",
        "time": "2024-05-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"image": "my-app", "stage": "extended-test"}
    });
    let body = push_body(
        &[(
            "Content-Type",
            "application/cloudevents+json; charset=UTF-8",
        )],
        event.to_string().as_bytes(),
    );
    let (delivery, signal) = one_signal(&push_headers(), &body);
    assert!(delivery.is_pubsub());
    assert_eq!(signal.kind, SignalKind::AlertFiring);
    assert_eq!(signal.image, "my-app");
    assert_eq!(signal.stage.as_deref(), Some("extended-test"));
    assert_eq!(signal.event_id, "alert-1");
    assert_eq!(signal.event_source, "//alerts/acme");
    assert_eq!(signal.time, Some(time("2024-05-01T10:00:00Z")));
}

/// A structured event published without the Content-Type attribute is still read.
#[test]
fn wrapped_push_structured_event_without_content_type_attribute() {
    let event = json!({
        "specversion": "1.0", "type": "alert-clear", "source": "//x", "id": "e1",
        "subject": "europe-west2-docker.pkg.dev/p/r/extended-test/my-app"
    });
    let body = push_body(&[], event.to_string().as_bytes());
    let (_, signal) = one_signal(&push_headers(), &body);
    assert_eq!(signal.kind, SignalKind::AlertClear);
    assert_eq!(
        signal.image,
        "europe-west2-docker.pkg.dev/p/r/extended-test/my-app"
    );
}

// ---------------------------------------------------------------------------------------------
// Pub/Sub push, unwrapped with write metadata (PushConfig.NoWrapper.write_metadata: metadata in
// x-goog-pubsub-<KEY> headers, attributes in <KEY> headers, raw data as the body)
// ---------------------------------------------------------------------------------------------

#[test]
fn unwrapped_push_with_binary_cloudevent_attributes_as_headers() {
    let headers = unwrapped_headers(&readme_attributes("ev-7"));
    let (delivery, signal) = one_signal(&headers, &readme_data());
    assert_eq!(delivery, pubsub_delivery());
    assert_eq!(signal.event_id, "ev-7");
    assert_eq!(signal.event_source, "//manual");
    assert_eq!(signal.image, IMAGE);
}

#[test]
fn unwrapped_push_manual_form() {
    let headers = unwrapped_headers(&[("ce-type", "test-passed")]);
    let (delivery, signal) = one_signal(&headers, &readme_data());
    assert!(delivery.is_pubsub());
    assert_eq!(signal.event_id, MESSAGE_ID);
    assert_eq!(signal.event_source, SUBSCRIPTION);
    assert_eq!(signal.time, Some(time(PUBLISH_TIME)));
}

#[test]
fn unwrapped_push_manual_form_without_subscription_uses_pubsub_source() {
    let headers = headers(&[
        ("x-goog-pubsub-message-id", "42"),
        ("ce-type", "test-passed"),
    ]);
    let (delivery, signal) = one_signal(&headers, &readme_data());
    assert_eq!(
        delivery,
        Delivery::PubSub {
            message_id: "42".into(),
            subscription: None,
            publish_time: None
        }
    );
    assert_eq!(signal.event_source, "//pubsub");
    assert_eq!(signal.event_id, "42");
}

#[test]
fn unwrapped_push_with_structured_cloudevent() {
    let headers = unwrapped_headers(&[("content-type", "application/cloudevents+json")]);
    let event = json!({
        "specversion": "1.0", "type": "soak-complete", "source": "//soak", "id": "s-1",
        "data": {"image": IMAGE, "digest": "sha256:0123"}
    });
    let (delivery, signal) = one_signal(&headers, event.to_string().as_bytes());
    assert!(delivery.is_pubsub());
    assert_eq!(signal.kind, SignalKind::SoakComplete);
    assert_eq!(signal.digest.as_deref(), Some("sha256:0123"));
}

#[test]
fn unwrapped_push_malformed_message_is_a_pubsub_error() {
    let headers = unwrapped_headers(&[
        ("ce-type", "test-passed"),
        ("content-type", "application/json"),
    ]);
    let err = error(&headers, b"{not json");
    assert!(matches!(err, EventsError::NotJson { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
    assert!(
        err.to_string()
            .starts_with(&format!("Pub/Sub message {MESSAGE_ID}: ")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Eventarc (https://cloud.google.com/eventarc/docs/cloudevents): binary mode, ce-type
// google.cloud.pubsub.topic.v1.messagePublished, data = the push envelope.
// ---------------------------------------------------------------------------------------------

fn eventarc_headers() -> http::HeaderMap {
    headers(&[
        ("ce-id", MESSAGE_ID),
        (
            "ce-source",
            "//pubsub.googleapis.com/projects/dev-proj/topics/p2p-events",
        ),
        ("ce-specversion", "1.0"),
        ("ce-type", "google.cloud.pubsub.topic.v1.messagePublished"),
        ("ce-time", "2020-12-20T13:37:33.647Z"),
        ("content-type", "application/json; charset=utf-8"),
        ("user-agent", PUSH_USER_AGENT),
    ])
}

#[test]
fn eventarc_message_published_carrying_binary_cloudevent() {
    // Eventarc's data is the envelope; its documented example has camelCase fields only.
    let body = json!({
        "subscription": "projects/dev-proj/subscriptions/eventarc-europe-west2-promoter-sub-123",
        "message": {
            "attributes": {"ce-specversion": "1.0", "ce-type": "test-passed", "ce-source": "//ci", "ce-id": "run-9"},
            "data": b64(&readme_data()),
            "messageId": MESSAGE_ID,
            "publishTime": PUBLISH_TIME
        }
    });
    let (delivery, signal) = one_signal(&eventarc_headers(), body.to_string().as_bytes());
    assert_eq!(
        delivery,
        Delivery::PubSub {
            message_id: MESSAGE_ID.into(),
            subscription: Some(
                "projects/dev-proj/subscriptions/eventarc-europe-west2-promoter-sub-123".into()
            ),
            publish_time: Some(time(PUBLISH_TIME)),
        }
    );
    assert_eq!(signal.event_id, "run-9");
    assert_eq!(signal.event_source, "//ci");
    assert_eq!(signal.image, IMAGE);
}

#[test]
fn eventarc_manual_form_falls_back_to_message_id_and_subscription() {
    let body = json!({
        "subscription": "projects/dev-proj/subscriptions/eventarc-sub",
        "message": {"attributes": {"ce-type": "test-passed"}, "data": b64(&readme_data()), "messageId": "77"}
    });
    let (_, signal) = one_signal(&eventarc_headers(), body.to_string().as_bytes());
    assert_eq!(signal.event_id, "77");
    assert_eq!(
        signal.event_source,
        "projects/dev-proj/subscriptions/eventarc-sub"
    );
    // No publishTime in the envelope: the Eventarc event's time stands in.
    assert_eq!(signal.time, Some(time("2020-12-20T13:37:33.647Z")));
}

#[test]
fn eventarc_with_broken_envelope_is_a_pubsub_error() {
    let err = error(
        &eventarc_headers(),
        br#"{"subscription":"projects/p/subscriptions/s"}"#,
    );
    assert!(matches!(err, EventsError::MissingField { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
}

// ---------------------------------------------------------------------------------------------
// CloudEvents over HTTP (HTTP protocol binding 1.0): binary and structured, direct callers
// ---------------------------------------------------------------------------------------------

#[test]
fn http_binary_mode() {
    let headers = headers(&[
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-type", "com.acme.p2p.test-passed"),
        ("ce-source", "https://ci.acme.example/pipelines/7"),
        ("ce-id", "1234-5678"),
        ("ce-time", "2023-01-02T12:34:56.789Z"),
        (
            "ce-subject",
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/my-app%401",
        ),
        (
            "ce-traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]);
    let (delivery, signal) = one_signal(&headers, br#"{"digest":"sha256:feed"}"#);
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signal.kind, SignalKind::TestPassed);
    assert_eq!(signal.event_type, "com.acme.p2p.test-passed");
    // The subject stands in for the absent data.image, percent-decoded as the binding says.
    assert_eq!(
        signal.image,
        "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/my-app@1"
    );
    assert_eq!(signal.digest.as_deref(), Some("sha256:feed"));
    assert_eq!(signal.time, Some(time("2023-01-02T12:34:56.789Z")));
}

#[test]
fn http_binary_mode_requires_every_attribute() {
    for missing in ["ce-specversion", "ce-type", "ce-source", "ce-id"] {
        let pairs: Vec<(&str, &str)> = [
            ("ce-specversion", "1.0"),
            ("ce-type", "test-passed"),
            ("ce-source", "//ci"),
            ("ce-id", "1"),
        ]
        .into_iter()
        .filter(|(name, _)| *name != missing)
        .collect();
        let err = error(&headers(&pairs), &readme_data());
        assert!(
            matches!(err, EventsError::InvalidCloudEvent { .. }),
            "{missing}: {err:?}"
        );
        assert!(!err.came_through_pubsub());
        assert!(err.to_string().contains(missing), "{err}");
    }
}

#[test]
fn http_structured_mode() {
    let headers = headers(&[(
        "content-type",
        "application/cloudevents+json; charset=utf-8",
    )]);
    let event = json!({
        "specversion": "1.0", "type": "test-passed", "source": "//ci", "id": "x-1",
        "datacontenttype": "application/json",
        "data": {"image": IMAGE, "digest": "sha256:aa"},
        "subject": "ignored-because-data-has-image"
    });
    let (delivery, signal) = one_signal(&headers, event.to_string().as_bytes());
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signal.image, IMAGE);
    assert_eq!(signal.digest.as_deref(), Some("sha256:aa"));
    assert_eq!(signal.time, None);
}

#[test]
fn http_structured_mode_with_data_base64() {
    let headers = headers(&[("content-type", "application/cloudevents+json")]);
    let event = json!({
        "specversion": "1.0", "type": "test-passed", "source": "//ci", "id": "x-2",
        "datacontenttype": "application/json",
        "data_base64": b64(&readme_data())
    });
    let (_, signal) = one_signal(&headers, event.to_string().as_bytes());
    assert_eq!(signal.image, IMAGE);
}

#[test]
fn structured_event_posted_as_plain_json_is_accepted() {
    let headers = headers(&[("content-type", "application/json")]);
    let event = json!({"specversion": "1.0", "type": "test-passed", "source": "//curl", "id": "c-1",
                       "data": {"image": IMAGE}});
    let (delivery, signal) = one_signal(&headers, event.to_string().as_bytes());
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signal.event_source, "//curl");
}

#[test]
fn unknown_type_is_ignored_not_refused() {
    let headers_ = headers(&[("content-type", "application/cloudevents+json")]);
    let event =
        json!({"specversion": "1.0", "type": "com.acme.deployed", "source": "//x", "id": "1"});
    let (delivery, reason) = ignored(&headers_, event.to_string().as_bytes());
    assert_eq!(delivery, Delivery::Direct);
    assert!(reason.contains("com.acme.deployed"), "{reason}");

    // ... also when its data is not JSON: an event that is not promoter's is not read further.
    let body = push_body(
        &[
            ("ce-type", "com.acme.deployed"),
            ("content-type", "application/json"),
        ],
        b"<xml/>",
    );
    let (delivery, _) = ignored(&push_headers(), &body);
    assert!(delivery.is_pubsub());

    // A type that only contains a signal name is not one.
    let body = push_body(&[("ce-type", "com.acme.test-passed.v2")], &readme_data());
    ignored(&push_headers(), &body);
}

// ---------------------------------------------------------------------------------------------
// Cloud Build (https://cloud.google.com/build/docs/subscribe-build-notifications): data = the
// Build resource, attributes buildId and status.
// ---------------------------------------------------------------------------------------------

const BUILD_ID: &str = "0d2f2a0e-6a9b-4b11-9a46-0b6a4e2c1f3d";

fn build(status: &str, images: Value) -> Value {
    json!({
        "id": BUILD_ID,
        "projectId": "dev-proj",
        "status": status,
        "source": {"storageSource": {"bucket": "dev-proj_cloudbuild", "object": "source/1714557600.tgz"}},
        "steps": [{
            "name": "gcr.io/cloud-builders/docker",
            "args": ["build", "-t", IMAGE, "."],
            "timing": {"startTime": "2024-05-01T10:00:05.1Z", "endTime": "2024-05-01T10:01:40.2Z"},
            "status": status
        }],
        "results": {
            "images": images,
            "buildStepImages": ["sha256:1111"],
            "buildStepOutputs": [""]
        },
        "createTime": "2024-05-01T10:00:00.000000Z",
        "startTime": "2024-05-01T10:00:01.000000Z",
        "finishTime": "2024-05-01T10:02:03.000000Z",
        "timeout": "600s",
        "images": [IMAGE],
        "logsBucket": "gs://dev-proj_cloudbuild/logs",
        "options": {"logging": "LEGACY"},
        "logUrl": format!("https://console.cloud.google.com/cloud-build/builds/{BUILD_ID}?project=123456789"),
        "tags": ["p2p"],
        "queueTtl": "3600s",
        "name": format!("projects/123456789/locations/global/builds/{BUILD_ID}")
    })
}

fn two_images() -> Value {
    json!([
        {"name": IMAGE, "digest": "sha256:aaaa", "pushTiming": {"startTime": "2024-05-01T10:01:41Z", "endTime": "2024-05-01T10:01:50Z"}},
        {"name": "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/worker:1.2.4", "digest": "sha256:bbbb"},
        {"name": IMAGE, "digest": "sha256:aaaa"}
    ])
}

#[test]
fn cloud_build_success_through_pubsub_is_test_passed_per_image() {
    let data = build("SUCCESS", two_images()).to_string();
    let body = push_body(
        &[("buildId", BUILD_ID), ("status", "SUCCESS")],
        data.as_bytes(),
    );
    let (delivery, signals) = signals(&push_headers(), &body);
    assert_eq!(delivery, pubsub_delivery());
    assert_eq!(
        signals.len(),
        2,
        "duplicate image entries collapse: {signals:?}"
    );
    assert_eq!(
        signals[0],
        RawSignal {
            caller: None,
            kind: SignalKind::TestPassed,
            image: IMAGE.into(),
            digest: Some("sha256:aaaa".into()),
            stage: None,
            event_id: format!("{BUILD_ID}/{IMAGE}"),
            event_source: format!(
                "//cloudbuild.googleapis.com/projects/123456789/locations/global/builds/{BUILD_ID}"
            ),
            event_type: CLOUD_BUILD_EVENT_TYPE.into(),
            time: Some(time("2024-05-01T10:02:03Z")),
        }
    );
    assert_eq!(signals[1].digest.as_deref(), Some("sha256:bbbb"));
}

#[test]
fn cloud_build_other_statuses_are_ignored() {
    for status in ["QUEUED", "WORKING", "FAILURE", "TIMEOUT", "CANCELLED"] {
        let data = build(status, json!([])).to_string();
        let body = push_body(
            &[("buildId", BUILD_ID), ("status", status)],
            data.as_bytes(),
        );
        let (_, reason) = ignored(&push_headers(), &body);
        assert!(reason.contains(status), "{reason}");
    }
}

#[test]
fn cloud_build_success_without_images_is_ignored() {
    let data = build("SUCCESS", json!([])).to_string();
    let body = push_body(
        &[("buildId", BUILD_ID), ("status", "SUCCESS")],
        data.as_bytes(),
    );
    let (_, reason) = ignored(&push_headers(), &body);
    assert!(reason.contains("no images"), "{reason}");
}

#[test]
fn cloud_build_recognised_by_shape_without_attributes() {
    let mut data = build("SUCCESS", two_images());
    if let Some(object) = data.as_object_mut() {
        object.remove("name");
    }
    // Through Pub/Sub without attributes, and POSTed directly.
    let body = push_body(&[], data.to_string().as_bytes());
    let (_, signals) = signals(&push_headers(), &body);
    assert_eq!(
        signals[0].event_source,
        format!("//cloudbuild.googleapis.com/projects/dev-proj/builds/{BUILD_ID}")
    );
    let (delivery, signals) = self::signals(
        &headers(&[("content-type", "application/json")]),
        data.to_string().as_bytes(),
    );
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signals.len(), 2);
}

#[test]
fn cloud_build_minimal_data_uses_attributes() {
    // A trimmed Build (no id, no status) still carries them as attributes.
    let data = json!({"results": {"images": [{"name": IMAGE, "digest": "sha256:cc"}]}});
    let body = push_body(
        &[("buildId", "b-1"), ("status", "SUCCESS")],
        data.to_string().as_bytes(),
    );
    let (_, signal) = one_signal(&push_headers(), &body);
    assert_eq!(signal.event_id, format!("b-1/{IMAGE}"));
    assert_eq!(
        signal.event_source,
        "//cloudbuild.googleapis.com/builds/b-1"
    );
    assert_eq!(signal.time, Some(time(PUBLISH_TIME)));
}

// ---------------------------------------------------------------------------------------------
// Cloud Monitoring (https://cloud.google.com/monitoring/support/notification-options#webhooks,
// schema 1.2): Pub/Sub channel (message data, no ce attributes) or webhook (direct POST).
// ---------------------------------------------------------------------------------------------

fn incident(state: &str, labels: Value) -> Value {
    json!({
        "incident": {
            "incident_id": "0.opqiw61fsv7p",
            "scoping_project_id": "dev-proj",
            "scoping_project_number": 123456789,
            "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.opqiw61fsv7p?project=dev-proj",
            "started_at": 1577840461,
            "ended_at": if state == "closed" { json!(1577877071) } else { Value::Null },
            "state": state,
            "resource_id": "",
            "resource_name": "dev-proj my-app",
            "resource_display_name": "my-app",
            "resource_type_display_name": "Cloud Run Revision",
            "resource": {"type": "cloud_run_revision", "labels": {"project_id": "dev-proj", "service_name": "my-app"}},
            "metric": {"type": "run.googleapis.com/request_count", "displayName": "Request Count", "labels": {"response_code_class": "5xx"}},
            "metadata": {"system_labels": {}, "user_labels": {}},
            "policy_name": "my-app 5xx in extended-test",
            "policy_user_labels": labels,
            "condition_name": "5xx rate",
            "threshold_value": "0.01",
            "observed_value": "0.2",
            "condition": {
                "name": "projects/dev-proj/alertPolicies/1234567890123456789/conditions/9876543210987654321",
                "displayName": "5xx rate",
                "conditionThreshold": {"comparison": "COMPARISON_GT", "thresholdValue": 0.01, "duration": "0s", "trigger": {"count": 1}}
            },
            "documentation": {"content": "Roll back.", "mime_type": "text/markdown"},
            "summary": "5xx rate for my-app is above the threshold of 0.01 with a value of 0.2."
        },
        "version": "1.2"
    })
}

fn promoter_labels() -> Value {
    json!({"promoter_image": "my-app", "promoter_stage": "extended-test", "team": "acme"})
}

#[test]
fn monitoring_open_through_pubsub_channel_is_alert_firing() {
    let data = incident("open", promoter_labels()).to_string();
    let body = push_body(&[], data.as_bytes());
    let (delivery, signal) = one_signal(&push_headers(), &body);
    assert_eq!(delivery, pubsub_delivery());
    assert_eq!(
        signal,
        RawSignal {
            caller: None,
            kind: SignalKind::AlertFiring,
            image: "my-app".into(),
            digest: None,
            stage: Some("extended-test".into()),
            event_id: "0.opqiw61fsv7p/open".into(),
            event_source:
                "//monitoring.googleapis.com/projects/dev-proj/alertPolicies/1234567890123456789"
                    .into(),
            event_type: format!("{MONITORING_EVENT_TYPE_PREFIX}open"),
            time: Utc.timestamp_opt(1577840461, 0).single(),
        }
    );
}

#[test]
fn monitoring_closed_through_webhook_is_alert_clear() {
    let headers = headers(&[
        ("content-type", "application/json"),
        ("user-agent", "Google-Alerts"),
    ]);
    let body = incident("closed", promoter_labels()).to_string();
    let (delivery, signal) = one_signal(&headers, body.as_bytes());
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signal.kind, SignalKind::AlertClear);
    assert_eq!(signal.event_id, "0.opqiw61fsv7p/closed");
    assert_eq!(signal.time, Utc.timestamp_opt(1577877071, 0).single());
}

#[test]
fn monitoring_state_is_case_insensitive() {
    let body = incident("OPEN", promoter_labels()).to_string();
    let (_, signal) = one_signal(&headers(&[]), body.as_bytes());
    assert_eq!(signal.kind, SignalKind::AlertFiring);
    assert_eq!(signal.event_id, "0.opqiw61fsv7p/open");
}

/// The console's "Send test notification" body (version "test").
#[test]
fn monitoring_test_notification_is_ignored() {
    let body = r#"{
  "version": "test",
  "incident": {
    "incident_id": "12345",
    "scoping_project_id": "12345",
    "scoping_project_number": 12345,
    "url": "http://www.example.com",
    "started_at": 0,
    "ended_at": 0,
    "state": "OPEN",
    "summary": "Test Incident",
    "apigee_url": "http://www.example.com",
    "observed_value": "1.0",
    "resource": {"type": "example_resource", "labels": {"example": "label"}},
    "resource_type_display_name": "Example Resource Type",
    "resource_id": "12345",
    "resource_display_name": "Example Resource",
    "resource_name": "projects/12345/example_resources/12345",
    "metric": {"type": "test.googleapis.com/metric", "displayName": "Test Metric", "labels": {"example": "label"}},
    "metadata": {"system_labels": {"example": "label"}, "user_labels": {"example": "label"}},
    "policy_name": "projects/12345/alertPolicies/12345",
    "policy_user_labels": {"example": "label"},
    "documentation": "Test documentation",
    "condition": {
      "name": "projects/12345/alertPolicies/12345/conditions/12345",
      "displayName": "Example condition",
      "conditionThreshold": {
        "filter": "metric.type=\"test.googleapis.com/metric\" resource.type=\"example_resource\"",
        "comparison": "COMPARISON_GT",
        "thresholdValue": 0.5,
        "duration": "0s",
        "trigger": {"count": 1}
      }
    },
    "condition_name": "Example condition",
    "threshold_value": "0.5"
  }
}"#;
    let (delivery, reason) = ignored(
        &headers(&[("content-type", "application/json")]),
        body.as_bytes(),
    );
    assert_eq!(delivery, Delivery::Direct);
    assert!(reason.contains("test notification"), "{reason}");
    let (delivery, _) = ignored(&push_headers(), &push_body(&[], body.as_bytes()));
    assert!(delivery.is_pubsub());
}

#[test]
fn monitoring_lenient_variants_are_ignored_with_a_reason() {
    let no_label = incident("open", json!({"team": "acme"}));
    let (_, reason) = ignored(&headers(&[]), no_label.to_string().as_bytes());
    assert!(reason.contains("promoter_image"), "{reason}");

    let no_labels_at_all = {
        let mut value = incident("open", json!({}));
        if let Some(incident) = value.get_mut("incident").and_then(Value::as_object_mut) {
            incident.remove("policy_user_labels");
        }
        value
    };
    ignored(&headers(&[]), no_labels_at_all.to_string().as_bytes());

    let odd_state = incident("acknowledged", promoter_labels());
    let (_, reason) = ignored(&headers(&[]), odd_state.to_string().as_bytes());
    assert!(reason.contains("acknowledged"), "{reason}");

    let bare = json!({"incident": {"incident_id": "1"}});
    let (_, reason) = ignored(&headers(&[]), bare.to_string().as_bytes());
    assert!(reason.contains("no state"), "{reason}");

    // Without the stage label the signal is still made; the caller resolves the stage.
    let image_only = incident("open", json!({"promoter_image": "my-app"}));
    let (_, signal) = one_signal(&headers(&[]), image_only.to_string().as_bytes());
    assert_eq!(signal.stage, None);
}

// ---------------------------------------------------------------------------------------------
// Bad input: each answered as an error that names the thing and the cause, and says whether it
// came through Pub/Sub.
// ---------------------------------------------------------------------------------------------

#[test]
fn not_json_from_a_direct_caller() {
    let err = error(&headers(&[("content-type", "application/json")]), b"hello");
    assert!(matches!(err, EventsError::NotJson { .. }), "{err:?}");
    assert!(!err.came_through_pubsub());
    assert!(
        err.to_string()
            .starts_with("request: request body is not valid JSON"),
        "{err}"
    );
}

#[test]
fn bad_base64_names_the_message() {
    let body = json!({
        "message": {"attributes": {"ce-type": "test-passed"}, "data": "!!not base64!!", "messageId": "123", "message_id": "123"},
        "subscription": SUBSCRIPTION
    });
    let err = error(&push_headers(), body.to_string().as_bytes());
    assert!(matches!(err, EventsError::BadBase64 { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
    assert!(
        err.to_string()
            .starts_with("Pub/Sub message 123: data is not valid base64: "),
        "{err}"
    );
}

#[test]
fn envelope_without_message_id() {
    let body = json!({"message": {"attributes": {"ce-type": "test-passed"}, "data": b64(&readme_data())}, "subscription": SUBSCRIPTION});
    let err = error(&push_headers(), body.to_string().as_bytes());
    assert!(matches!(err, EventsError::MissingField { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
    assert!(err.to_string().contains("messageId"), "{err}");
}

#[test]
fn missing_image_through_pubsub_and_directly() {
    let body = push_body(&[("ce-type", "test-passed")], br#"{"digest":"sha256:aa"}"#);
    let err = error(&push_headers(), &body);
    assert!(matches!(err, EventsError::MissingImage { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
    assert_eq!(
        err.to_string(),
        format!(
            "Pub/Sub message {MESSAGE_ID}: event {MESSAGE_ID} of type test-passed names no image: set data.image or subject"
        )
    );

    let headers = headers(&[("content-type", "application/cloudevents+json")]);
    let event = json!({"specversion": "1.0", "type": "test-passed", "source": "//ci", "id": "1", "data": {"image": ""}});
    let err = error(&headers, event.to_string().as_bytes());
    assert!(matches!(err, EventsError::MissingImage { .. }), "{err:?}");
    assert!(!err.came_through_pubsub());
}

#[test]
fn invalid_cloudevent_in_pubsub_is_acked_material() {
    let body = push_body(
        &[
            ("ce-specversion", "0.3"),
            ("ce-type", "test-passed"),
            ("ce-id", "1"),
            ("ce-source", "//x"),
        ],
        &readme_data(),
    );
    let err = error(&push_headers(), &body);
    assert!(
        matches!(err, EventsError::InvalidCloudEvent { .. }),
        "{err:?}"
    );
    assert!(err.came_through_pubsub());

    let body = push_body(&[("ce-type", "test-passed"), ("ce-id", "")], &readme_data());
    let err = error(&push_headers(), &body);
    assert!(err.to_string().contains("id must not be empty"), "{err}");

    let body = push_body(
        &[("ce-type", "test-passed"), ("ce-time", "yesterday")],
        &readme_data(),
    );
    let err = error(&push_headers(), &body);
    assert!(err.to_string().contains("RFC 3339"), "{err}");
}

#[test]
fn wrong_field_types() {
    let body = push_body(&[("ce-type", "test-passed")], br#"{"image": 42}"#);
    let err = error(&push_headers(), &body);
    assert!(matches!(err, EventsError::InvalidField { .. }), "{err:?}");
    assert!(
        err.to_string().contains("data.image must be a string"),
        "{err}"
    );

    let body = json!({"message": {"attributes": {"ce-type": 1}, "messageId": "5"}});
    let err = error(&push_headers(), body.to_string().as_bytes());
    assert!(matches!(err, EventsError::InvalidField { .. }), "{err:?}");
    assert!(err.came_through_pubsub());

    let body = json!({"message": {"data": 5, "messageId": "5"}});
    assert!(matches!(
        error(&push_headers(), body.to_string().as_bytes()),
        EventsError::InvalidField { .. }
    ));
}

#[test]
fn promoter_event_with_non_json_data() {
    let body = push_body(
        &[
            ("ce-type", "test-passed"),
            ("content-type", "application/json"),
        ],
        b"image=x",
    );
    let err = error(&push_headers(), &body);
    assert!(matches!(err, EventsError::NotJson { .. }), "{err:?}");
    assert!(err.came_through_pubsub());
}

#[test]
fn unrecognised_requests() {
    let err = error(&push_headers(), &push_body(&[], br#"{"image":"x"}"#));
    assert!(matches!(err, EventsError::Unrecognized { .. }), "{err:?}");
    assert!(err.came_through_pubsub());

    let err = error(&push_headers(), &push_body(&[], b"plain text"));
    assert!(matches!(err, EventsError::Unrecognized { .. }), "{err:?}");

    let err = error(
        &headers(&[("content-type", "application/json")]),
        br#"{"image":"x"}"#,
    );
    assert!(matches!(err, EventsError::Unrecognized { .. }), "{err:?}");
    assert!(!err.came_through_pubsub());

    let err = error(
        &headers(&[("content-type", "application/cloudevents-batch+json")]),
        b"[]",
    );
    assert!(matches!(err, EventsError::Unrecognized { .. }), "{err:?}");

    let err = error(&headers(&[]), b"");
    assert!(matches!(err, EventsError::NotJson { .. }), "{err:?}");
}

/// No input makes the parser panic: every prefix of every realistic body, with and without
/// Pub/Sub headers, is answered with an outcome or an error.
#[test]
fn truncated_input_never_panics() {
    let bodies: Vec<Vec<u8>> = vec![
        push_body(&readme_attributes("x"), &readme_data()),
        push_body(&[], build("SUCCESS", two_images()).to_string().as_bytes()),
        incident("open", promoter_labels()).to_string().into_bytes(),
        json!({"specversion": "1.0", "type": "test-passed", "source": "//x", "id": "1", "data_base64": b64(&readme_data())})
            .to_string()
            .into_bytes(),
    ];
    let header_sets = [
        push_headers(),
        unwrapped_headers(&[("ce-type", "test-passed")]),
        headers(&[("content-type", "application/cloudevents+json")]),
        eventarc_headers(),
    ];
    for body in &bodies {
        for end in 0..=body.len() {
            for headers in &header_sets {
                let _ = parse(headers, &body[..end], &Vocabulary::default());
            }
        }
    }
}

#[test]
fn delivery_and_error_display() {
    assert_eq!(
        pubsub_delivery().to_string(),
        format!("Pub/Sub message {MESSAGE_ID}")
    );
    assert_eq!(Delivery::Direct.to_string(), "request");
    let nameless = Delivery::PubSub {
        message_id: String::new(),
        subscription: None,
        publish_time: None,
    };
    assert_eq!(nameless.to_string(), "Pub/Sub message (no message id)");
}

// ---------------------------------------------------------------------------------------------
// CloudEvents JSON-format conformance vectors (tests/conformance/cloudevents-json)
// ---------------------------------------------------------------------------------------------

/// Where the vectors are: `PROMOTER_CONFORMANCE_DIR` (a newer copy of the suite), else the copy
/// kept in this repository.
fn conformance_dir() -> PathBuf {
    match std::env::var_os("PROMOTER_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cloudevents-json"),
    }
}

/// (test id, event, may be skipped) from one vector file.
fn vectors(file: &str) -> Vec<(String, Value, bool)> {
    let path = conformance_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    let root: Value = serde_json::from_str(&text).expect("conformance file is JSON");
    let tests = root["tests"]
        .as_array()
        .expect("conformance file has tests");
    assert!(!tests.is_empty(), "{file} has no tests");
    tests
        .iter()
        .map(|test| {
            let skippable = test.get("sampleExtensionAttributes").is_some()
                || test.get("extensionConstraints").is_some();
            (
                test["id"].as_str().unwrap_or("?").to_owned(),
                test["event"].clone(),
                skippable,
            )
        })
        .collect()
}

#[test]
fn conformance_valid_events_are_accepted() {
    let structured = headers(&[("content-type", "application/cloudevents+json")]);
    for (id, event, _) in vectors("valid-events.json") {
        let bytes = event.to_string().into_bytes();
        // Direct, structured mode: every vector has an unknown type, so each is ignored.
        match parse(&structured, &bytes, &Vocabulary::default()) {
            Ok(Parsed::Ignored {
                delivery: Delivery::Direct,
                ..
            }) => {}
            other => panic!("{id}: expected ignored, got {other:?}"),
        }
        // The same event through Pub/Sub in the binding's structured mode.
        let body = push_body(&[("content-type", "application/cloudevents+json")], &bytes);
        match parse(&push_headers(), &body, &Vocabulary::default()) {
            Ok(Parsed::Ignored { delivery, .. }) if delivery.is_pubsub() => {}
            other => panic!("{id} through Pub/Sub: expected ignored, got {other:?}"),
        }
        // With a promoter type and an image, the same event is a signal.
        let mut promoter_event = event.clone();
        promoter_event["type"] = json!("io.cloudevents.test-passed");
        promoter_event["subject"] = json!(IMAGE);
        let (_, signal) = one_signal(&structured, promoter_event.to_string().as_bytes());
        assert_eq!(signal.image, IMAGE, "{id}");
    }
}

#[test]
fn conformance_invalid_events_are_errors() {
    let structured = headers(&[("content-type", "application/cloudevents+json")]);
    let mut checked = 0;
    for (id, event, skippable) in vectors("invalid-events.json") {
        let bytes = event.to_string().into_bytes();
        let direct = parse(&structured, &bytes, &Vocabulary::default());
        let body = push_body(&[("content-type", "application/cloudevents+json")], &bytes);
        let pubsub = parse(&push_headers(), &body, &Vocabulary::default());
        if skippable && (direct.is_ok() || pubsub.is_ok()) {
            continue; // the suite allows skipping these
        }
        match direct {
            Err(err @ EventsError::InvalidCloudEvent { .. }) => assert!(!err.came_through_pubsub()),
            other => panic!("{id}: expected an invalid CloudEvent, got {other:?}"),
        }
        match pubsub {
            Err(err @ EventsError::InvalidCloudEvent { .. }) => {
                assert!(err.came_through_pubsub(), "{id}")
            }
            other => panic!("{id} through Pub/Sub: expected an invalid CloudEvent, got {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} invalid vectors checked");
}

/// Cloud Build status changes as a CloudEvent (type from Google's event catalog; headers as
/// Knative's CloudBuildSource delivers them): the data is the Build resource.
#[test]
fn cloud_build_status_changed_cloudevent() {
    let headers = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-type", "google.cloud.cloudbuild.build.v1.statusChanged"),
        (
            "ce-source",
            "//cloudbuild.googleapis.com/projects/dev-proj/builds/b-1",
        ),
        ("ce-subject", "SUCCESS"),
        ("ce-id", "1085069104560583"),
        ("ce-time", "2020-04-03T23:51:29.811Z"),
        ("content-type", "application/json"),
    ]);
    let (delivery, signals) = signals(
        &headers,
        build("SUCCESS", two_images()).to_string().as_bytes(),
    );
    assert_eq!(delivery, Delivery::Direct);
    assert_eq!(signals.len(), 2);
    assert_eq!(signals[0].event_type, CLOUD_BUILD_EVENT_TYPE);

    let (_, reason) = ignored(&headers, build("WORKING", json!([])).to_string().as_bytes());
    assert!(reason.contains("WORKING"), "{reason}");
}

/// The content type decides: a structured body with a stray `ce-*` header is structured.
#[test]
fn structured_mode_wins_over_stray_ce_headers() {
    let headers = headers(&[
        ("content-type", "application/cloudevents+json"),
        (
            "ce-traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]);
    let event = json!({"specversion": "1.0", "type": "test-passed", "source": "//ci", "id": "t-1",
                       "data": {"image": IMAGE}});
    let (_, signal) = one_signal(&headers, event.to_string().as_bytes());
    assert_eq!(signal.event_id, "t-1");
}
