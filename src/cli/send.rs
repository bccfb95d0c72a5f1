//! The commands that send events: `publish` (any signal, by hand), `freeze` and `unfreeze` (a
//! stage), through the events topic as `gcloud pubsub topics publish` would; and `approve`, a
//! direct CloudEvent to the service carrying the caller's identity token, so the service knows
//! who approved (docs/rules.md "Approvals").

use std::collections::HashMap;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config;
use crate::registry::auth::Secret;

/// The events topic: `--topic`, else `projects/$GOOGLE_CLOUD_PROJECT/topics/p2p-events`.
fn events_topic(topic: Option<String>) -> anyhow::Result<String> {
    match topic {
        Some(topic) => Ok(topic),
        None => {
            let project = config::var(config::GOOGLE_CLOUD_PROJECT).ok_or_else(|| {
                anyhow::anyhow!("no --topic and no GOOGLE_CLOUD_PROJECT to default it from")
            })?;
            Ok(format!("projects/{project}/topics/p2p-events"))
        }
    }
}

fn new_event_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Publishes one CloudEvent in the Pub/Sub binding's binary mode, as the README's `gcloud
/// pubsub topics publish` does; prints what was sent.
pub async fn publish(event_type: &str, data: Value, topic: Option<String>) -> anyhow::Result<()> {
    let topic = events_topic(topic)?;
    let id = new_event_id();
    let attributes = HashMap::from([
        ("ce-specversion".to_owned(), "1.0".to_owned()),
        ("ce-type".to_owned(), event_type.to_owned()),
        ("ce-source".to_owned(), "//manual".to_owned()),
        ("ce-id".to_owned(), id.clone()),
        ("content-type".to_owned(), "application/json".to_owned()),
    ]);
    let publisher = crate::publish::EventPublisher::from_env(&topic).await?;
    let message_id = publisher
        .publish(bytes::Bytes::from(data.to_string()), attributes, "")
        .await?;
    println!("published {event_type} {data} to {topic}: event id {id}, message id {message_id}");
    Ok(())
}

/// A signal about an image (`image`, and `stage` for a bare name).
pub fn signal_data(image: &str, stage: Option<String>) -> Value {
    let mut data = json!({ "image": image });
    if let Some(stage) = stage {
        data["stage"] = Value::String(stage);
    }
    data
}

/// A `freeze` or `unfreeze` of `stage`.
pub fn stage_data(stage: &str, reason: Option<String>) -> Value {
    let mut data = json!({ "stage": stage });
    if let Some(reason) = reason {
        data["reason"] = Value::String(reason);
    }
    data
}

/// `promoter approve IMAGE --service URL`: sends `approved` straight to the service with the
/// caller's Google ID token (`--token`, else `PROMOTER_ID_TOKEN`, else Application Default
/// Credentials for `audience`), and prints the service's answer. Fails when the service refuses.
pub async fn approve(
    image: &str,
    service: &str,
    token: Option<Secret>,
    audience: Option<String>,
) -> anyhow::Result<()> {
    let service = service.trim_end_matches('/');
    let token = match token.or_else(|| config::var(config::PROMOTER_ID_TOKEN).map(Secret::new)) {
        Some(token) => token,
        None => {
            let audience = audience.unwrap_or_else(|| service.to_owned());
            let credentials = google_cloud_auth::credentials::idtoken::Builder::new(&audience)
                .with_include_email()
                .build()
                .with_context(|| {
                    format!(
                        "no ID token for audience {audience} from Application Default Credentials (a user's cannot mint one): pass --token \"$(gcloud auth print-identity-token)\" or set {}",
                        config::PROMOTER_ID_TOKEN
                    )
                })?;
            Secret::new(
                credentials
                    .id_token()
                    .await
                    .with_context(|| format!("getting an ID token for audience {audience}"))?,
            )
        }
    };
    let id = new_event_id();
    let response = reqwest::Client::new()
        .post(format!("{service}/"))
        .header("ce-specversion", "1.0")
        .header("ce-type", "approved")
        .header("ce-source", "//promoter/approve")
        .header("ce-id", &id)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", token.expose()))
        .body(json!({ "image": image }).to_string())
        .send()
        .await
        .with_context(|| format!("sending the approval of {image} to {service}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    println!("{body}");
    if !status.is_success() {
        anyhow::bail!("{service} answered {status} to the approval of {image} (event {id})");
    }
    Ok(())
}
