//! Outbound events: what promoter announces on `PROMOTER_EVENTS_TOPIC` (docs/events.md).
//!
//! `promoted` and `promotion-rejected` CloudEvents in the Pub/Sub binding's binary mode, ordered
//! by destination repository, with ids derived from what they are about so that a redelivered
//! signal announces with the same id.

pub mod pubsub;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::registry::CopyReport;
pub use pubsub::{EventPublisher, OutboundEvent, PublishError};

/// The event that caused an announcement.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct TriggerRecord {
    #[serde(rename = "type")]
    pub event_type: String,
    pub id: String,
    pub source: String,
}

/// One signal that opened a gate.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct EvidenceRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub time: DateTime<Utc>,
}

/// `data` of a `promoted` event.
#[derive(Clone, Debug, Serialize)]
pub struct Promoted {
    /// The destination reference.
    pub image: String,
    pub digest: String,
    pub source_image: String,
    pub from_stage: String,
    pub to_stage: String,
    pub trigger: TriggerRecord,
    pub evidence: Vec<EvidenceRecord>,
    pub copy: CopyReport,
    /// The promotion attestation (key id, tag, envelope digest), when the service attests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attest::Attestation>,
    /// The destination repository (`registry/path`), the ordering key.
    #[serde(skip)]
    pub destination_repository: String,
}

/// `data` of a `promotion-rejected` event.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    /// The image as the event named it, when it named one.
    pub image: Option<String>,
    pub digest: Option<String>,
    pub from_stage: Option<String>,
    pub to_stage: Option<String>,
    pub trigger: TriggerRecord,
    pub reason: String,
}

/// A stable, opaque id: 32 hex digits of sha256 over the parts.
fn derived_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// One outbound CloudEvent with `data` as its JSON body.
fn outbound(
    ty: &str,
    id: String,
    subject: Option<String>,
    ordering_key: String,
    data: &impl Serialize,
    source: &str,
    now: DateTime<Utc>,
) -> Result<OutboundEvent, PublishError> {
    let data = serde_json::to_vec(data).map_err(|e| PublishError::InvalidMessage(e.to_string()))?;
    Ok(OutboundEvent {
        id,
        source: source.to_owned(),
        ty: ty.to_owned(),
        subject,
        time: now,
        data: Bytes::from(data),
        ordering_key,
    })
}

impl Promoted {
    /// The CloudEvent: its id depends only on the destination repository and the digest.
    pub fn to_event(
        &self,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboundEvent, PublishError> {
        let id = derived_id(&["promoted", &self.destination_repository, &self.digest]);
        let subject = Some(self.image.clone());
        outbound(
            "promoted",
            id,
            subject,
            self.destination_repository.clone(),
            self,
            source,
            now,
        )
    }
}

impl Rejected {
    /// The CloudEvent: its id depends only on the triggering event, so a redelivery of a bad
    /// message is announced under one id, however often it arrives.
    pub fn to_event(
        &self,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<OutboundEvent, PublishError> {
        let id = derived_id(&["promotion-rejected", &self.trigger.source, &self.trigger.id]);
        outbound(
            "promotion-rejected",
            id,
            self.image.clone(),
            String::new(),
            self,
            source,
            now,
        )
    }
}

/// `//promoter/{K_SERVICE or hostname}`: the `source` of every outbound event.
pub fn event_source() -> String {
    let name = crate::config::var(crate::config::K_SERVICE)
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "promoter".into());
    format!("//promoter/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_what_the_event_is_about() {
        let a = derived_id(&["promoted", "r.example/extended-test/app", "sha256:1"]);
        assert_eq!(
            a,
            derived_id(&["promoted", "r.example/extended-test/app", "sha256:1"])
        );
        assert_ne!(
            a,
            derived_id(&["promoted", "r.example/prod/app", "sha256:1"])
        );
        assert_eq!(a.len(), 32);
    }
}
