//! Cloud Build notifications (docs/events.md: `status: SUCCESS` → `test-passed` for each built
//! image digest).
//!
//! Shape (<https://cloud.google.com/build/docs/subscribe-build-notifications>): Cloud Build
//! publishes to the `cloud-builds` topic (or `options.pubsubTopic`) on every status change; the
//! message data is the Build resource as JSON and the attributes are `buildId` and `status`. The
//! Build resource (Cloud Build v1 REST) carries `id`, `projectId`, `status` (`PENDING`,
//! `QUEUED`, `WORKING`, `SUCCESS`, `FAILURE`, `INTERNAL_ERROR`, `TIMEOUT`, `CANCELLED`,
//! `EXPIRED`), `finishTime`, and `results.images[]` as `BuiltImage {name, digest, pushTiming}`,
//! where `name` is the name the image was pushed under.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::attributes::Attributes;
use super::{Delivery, EventsError, Inbound, Parsed, RawSignal, SignalKind, Vocabulary, clip};

/// The CloudEvents type Google's event catalog gives Cloud Build status changes.
pub(crate) const EVENT_TYPE: &str = "google.cloud.cloudbuild.build.v1.statusChanged";

/// True for a JSON object shaped like a Build resource: string `id` and `status`, and at least
/// one field only a build has.
pub(crate) fn looks_like_build(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    let has_string = |name: &str| object.get(name).is_some_and(Value::is_string);
    has_string("id")
        && has_string("status")
        && ["projectId", "results", "steps", "logUrl", "createTime"]
            .iter()
            .any(|name| object.contains_key(*name))
}

/// Turns a Build resource into signals, one per pushed image: `test-passed` when it succeeded,
/// or, for a trigger the rules map (docs/rules.md), that trigger's signal for `SUCCESS` or for
/// `FAILURE` / `TIMEOUT`. `attributes` (Pub/Sub) supply `buildId` and `status` should the data
/// lack them.
pub(crate) fn parse(
    delivery: &Delivery,
    build: &Value,
    attributes: Option<&Attributes>,
    vocabulary: &Vocabulary,
) -> Result<Parsed, EventsError> {
    let Some(object) = build.as_object() else {
        return Err(EventsError::InvalidField {
            delivery: delivery.clone(),
            field: "Cloud Build notification data".into(),
            reason: "must be a JSON object (the Build resource)".into(),
        });
    };
    let from_data_or_attribute = |field: &str, attribute: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .or_else(|| attributes.and_then(|attrs| attrs.get(attribute)))
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let Some(build_id) = from_data_or_attribute("id", "buildId") else {
        return Err(EventsError::MissingField {
            delivery: delivery.clone(),
            what: "the Cloud Build notification".into(),
            field: "id (or the buildId attribute)".into(),
        });
    };
    let Some(status) = from_data_or_attribute("status", "status") else {
        return Err(EventsError::MissingField {
            delivery: delivery.clone(),
            what: format!("Cloud Build notification for build {}", clip(&build_id)),
            field: "status".into(),
        });
    };
    // The trigger, by name (the TRIGGER_NAME substitution Cloud Build sets for triggered
    // builds) or by id.
    let trigger_name = object
        .get("substitutions")
        .and_then(|s| s.get("TRIGGER_NAME"))
        .and_then(Value::as_str);
    let trigger_id = object.get("buildTriggerId").and_then(Value::as_str);
    let mapped = vocabulary.cloud_build.iter().find(|t| {
        Some(t.trigger.as_str()) == trigger_name || Some(t.trigger.as_str()) == trigger_id
    });
    let kind = match (mapped, status.as_str()) {
        (None, "SUCCESS") => Some(SignalKind::TestPassed),
        (Some(trigger), "SUCCESS") => trigger.on_success.clone(),
        (Some(trigger), "FAILURE" | "TIMEOUT") => trigger.on_failure.clone(),
        _ => None,
    };
    let Some(kind) = kind else {
        let meaning = match mapped {
            Some(trigger) => format!(
                "trigger {} maps no signal to {}",
                clip(&trigger.trigger),
                clip(&status)
            ),
            None => "only SUCCESS is a test-passed signal".to_owned(),
        };
        return Ok(Parsed::Ignored {
            delivery: delivery.clone(),
            reason: format!(
                "Cloud Build build {} has status {}: {meaning}",
                clip(&build_id),
                clip(&status)
            ),
        });
    };

    let source = build_source(object, &build_id);
    let time = object
        .get("finishTime")
        .and_then(Value::as_str)
        .and_then(|time| DateTime::parse_from_rfc3339(time).ok())
        .map(|time| time.with_timezone(&Utc))
        .or(match delivery {
            Delivery::PubSub { publish_time, .. } => *publish_time,
            Delivery::Direct => None,
        });

    let mut signals: Vec<RawSignal> = Vec::new();
    // A failed build may have pushed nothing: then the images it was to build (by tag) are the
    // ones its failure is about.
    let mut images = built_images(object);
    if images.is_empty() && status != "SUCCESS" {
        images = declared_images(object);
    }
    for image in images {
        // Cloud Build can list one image twice (once per push of the same name); one signal each.
        if signals
            .iter()
            .any(|signal| signal.image == image.name && signal.digest == image.digest)
        {
            continue;
        }
        signals.push(RawSignal {
            kind: kind.clone(),
            event_id: format!("{build_id}/{}", image.name),
            image: image.name,
            digest: image.digest,
            stage: None,
            event_source: source.clone(),
            event_type: EVENT_TYPE.to_owned(),
            caller: None,
            time,
        });
    }
    if signals.is_empty() {
        return Ok(Parsed::Ignored {
            delivery: delivery.clone(),
            reason: format!(
                "Cloud Build build {} succeeded but pushed no images (results.images is empty)",
                clip(&build_id)
            ),
        });
    }
    Ok(Parsed::Signals(Inbound {
        delivery: delivery.clone(),
        signals,
    }))
}

/// The Build's `images` field: what it was to push, by name and tag.
fn declared_images(build: &Map<String, Value>) -> Vec<BuiltImage> {
    build
        .get("images")
        .and_then(Value::as_array)
        .map(|images| {
            images
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| !name.is_empty())
                .map(|name| BuiltImage {
                    name: name.to_owned(),
                    digest: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

struct BuiltImage {
    name: String,
    digest: Option<String>,
}

/// `results.images[]`, skipping entries without a name (nothing to promote).
fn built_images(build: &Map<String, Value>) -> Vec<BuiltImage> {
    build
        .get("results")
        .and_then(|results| results.get("images"))
        .and_then(Value::as_array)
        .map(|images| {
            images
                .iter()
                .filter_map(|image| {
                    let name = image.get("name")?.as_str()?.trim();
                    if name.is_empty() {
                        return None;
                    }
                    let digest = image
                        .get("digest")
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|digest| !digest.is_empty())
                        .map(str::to_owned);
                    Some(BuiltImage {
                        name: name.to_owned(),
                        digest,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `//cloudbuild.googleapis.com/` + the build's resource name: `name`
/// (`projects/P/locations/L/builds/ID`) when present, else built from `projectId`.
fn build_source(build: &Map<String, Value>, build_id: &str) -> String {
    const SERVICE: &str = "//cloudbuild.googleapis.com";
    let field = |name: &str| {
        build
            .get(name)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
    };
    if let Some(name) = field("name").filter(|name| name.starts_with("projects/")) {
        return format!("{SERVICE}/{name}");
    }
    match field("projectId") {
        Some(project) => format!("{SERVICE}/projects/{project}/builds/{build_id}"),
        None => format!("{SERVICE}/builds/{build_id}"),
    }
}
