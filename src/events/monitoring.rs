//! Cloud Monitoring incident notifications (docs/events.md: `open` → `alert-firing`, `closed` →
//! `alert-clear`, mapped to image and stage through the alert policy's user labels
//! `promoter_image` and `promoter_stage`).
//!
//! Shape: the webhook and Pub/Sub notification channels send the same JSON, schema version 1.2
//! (<https://cloud.google.com/monitoring/support/notification-options#webhooks>):
//! `{"version":"1.2","incident":{"incident_id","scoping_project_id","url","started_at",
//! "ended_at","state":"open|closed","policy_name","policy_user_labels":{..},"condition":{"name":
//! "projects/P/alertPolicies/A/conditions/C",..},"condition_name","resource":{..},"summary",..}}`,
//! with `started_at`/`ended_at` in Unix seconds (`ended_at` null while open). Through Pub/Sub it
//! is the message data, without CloudEvents attributes.
//!
//! The console's "send test notification" has `"version":"test"`, `state: "OPEN"`,
//! `started_at: 0` and example labels. It, and every incident promoter cannot map (another
//! team's policy on a shared channel, a missing label or state), is ignored with a reason, never
//! refused: retrying a notification cannot add a label to its policy.
//!
//! User-label values may only hold lower-case letters, digits, `_` and `-`, so `promoter_image`
//! is a bare image name (`my-app`) and `promoter_stage` a stage name; resolving them to a
//! repository is the caller's job, as for `{"image":"my-app","stage":"extended-test"}` events.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Delivery, Inbound, Parsed, RawSignal, SignalKind, clip};

/// Prefix of the `event_type` of Monitoring signals; the state (`open`, `closed`) follows.
pub(crate) const EVENT_TYPE_PREFIX: &str = "cloud-monitoring.incident.";

const IMAGE_LABEL: &str = "promoter_image";
const STAGE_LABEL: &str = "promoter_stage";

/// True for a JSON object shaped like an incident notification: an `incident` object with an
/// incident's fields.
pub(crate) fn looks_like_notification(value: &Value) -> bool {
    value
        .get("incident")
        .and_then(Value::as_object)
        .is_some_and(|incident| {
            ["incident_id", "state", "policy_name"]
                .iter()
                .any(|name| incident.contains_key(*name))
        })
}

/// Turns an incident notification into an alert signal, or says why it is ignored.
pub(crate) fn parse(delivery: &Delivery, notification: &Value) -> Parsed {
    match signal(notification) {
        Ok(signal) => Parsed::Signals(Inbound {
            delivery: delivery.clone(),
            signals: vec![signal],
        }),
        Err(reason) => Parsed::Ignored {
            delivery: delivery.clone(),
            reason,
        },
    }
}

/// The signal of a notification, or the reason it has none.
fn signal(notification: &Value) -> Result<RawSignal, String> {
    let version = notification.get("version").and_then(Value::as_str);
    if version == Some("test") {
        return Err("Cloud Monitoring test notification".into());
    }
    let incident = notification
        .get("incident")
        .and_then(Value::as_object)
        .ok_or("Cloud Monitoring notification has no incident")?;
    let text = |name: &str| {
        incident
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    };
    let policy = text("policy_name").unwrap_or("(unnamed policy)");
    let incident_id = text("incident_id").ok_or_else(|| {
        format!(
            "Cloud Monitoring incident of policy {} has no incident_id",
            clip(policy)
        )
    })?;
    let state = text("state").map(str::to_ascii_lowercase).ok_or_else(|| {
        format!(
            "Cloud Monitoring incident {} has no state",
            clip(incident_id)
        )
    })?;
    let kind = match state.as_str() {
        "open" => SignalKind::AlertFiring,
        "closed" => SignalKind::AlertClear,
        other => {
            return Err(format!(
                "Cloud Monitoring incident {} has state {:?}, neither open nor closed",
                clip(incident_id),
                clip(other)
            ));
        }
    };
    let labels = incident
        .get("policy_user_labels")
        .and_then(Value::as_object);
    let label = |name: &str| {
        labels
            .and_then(|labels| labels.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    };
    let image = label(IMAGE_LABEL).ok_or_else(|| {
        format!(
            "alert policy {} has no user label {IMAGE_LABEL}: its incident {} is not for promoter",
            clip(policy),
            clip(incident_id)
        )
    })?;

    // The time of the transition: opened at started_at, closed at ended_at.
    let time = match kind {
        SignalKind::AlertClear => {
            epoch(incident.get("ended_at")).or(epoch(incident.get("started_at")))
        }
        _ => epoch(incident.get("started_at")),
    };
    Ok(RawSignal {
        kind,
        image,
        digest: None,
        stage: label(STAGE_LABEL),
        event_id: format!("{incident_id}/{state}"),
        event_source: source(incident),
        event_type: format!("{EVENT_TYPE_PREFIX}{state}"),
        caller: None,
        time,
    })
}

/// `//monitoring.googleapis.com/` + the alert policy's resource name, taken from the condition's
/// name (`projects/P/alertPolicies/A/conditions/C`); else the scoping project.
fn source(incident: &serde_json::Map<String, Value>) -> String {
    const SERVICE: &str = "//monitoring.googleapis.com";
    let condition = incident
        .get("condition")
        .and_then(|condition| condition.get("name"))
        .and_then(Value::as_str);
    if let Some(policy) = condition
        .and_then(|name| name.split_once("/conditions/"))
        .map(|(policy, _)| policy)
        .filter(|policy| policy.starts_with("projects/"))
    {
        return format!("{SERVICE}/{policy}");
    }
    match incident
        .get("scoping_project_id")
        .and_then(Value::as_str)
        .filter(|project| !project.is_empty())
    {
        Some(project) => format!("{SERVICE}/projects/{project}"),
        None => SERVICE.to_owned(),
    }
}

/// A Monitoring timestamp: Unix seconds as a number (as sent) or a string of digits, or an
/// RFC 3339 string; 0 and null mean unset.
fn epoch(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let seconds = match value? {
        Value::Number(number) => number.as_i64()?,
        Value::String(text) => match text.trim().parse::<i64>() {
            Ok(seconds) => seconds,
            Err(_) => {
                return DateTime::parse_from_rfc3339(text.trim())
                    .ok()
                    .map(|time| time.with_timezone(&Utc));
            }
        },
        _ => return None,
    };
    if seconds <= 0 {
        return None;
    }
    DateTime::from_timestamp(seconds, 0)
}
