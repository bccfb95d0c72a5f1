//! What promoter records in the registry itself, next to the image (DESIGN.md "Evidence").
//!
//! Every signal a gate may need is one OCI artifact in the stage's repository, under a tag of its
//! own derived from what it records, so that instances recording signals at the same moment never
//! touch a shared object (no read-modify-write):
//!
//! - a digest's signal (test-passed, test-failed, soak-complete):
//!   `sha256-<hex>.p2p.<kind>.<time>.<event hash>`, an artifact whose `subject` is the image;
//! - an alert signal of the image in the stage (alert-firing, alert-clear):
//!   `p2p.alert.<kind>.<time>.<event hash>`;
//! - a promotion into the stage: `sha256-<hex>.p2p.promoted.<time>`, an artifact whose `subject`
//!   is the image, also listed in the `sha256-<hex>` referrers fallback tag so that standard tools
//!   (`oras discover`, `crane`) find it on registries without the referrers API.
//!
//! Reading back is one tag listing: the kind and time of every record are in its tag, so a
//! decision needs no manifest fetches. The manifests hold the full record (event id, source,
//! type) for `promoter status` and the promotion record. Redelivering an event writes the same
//! tag again: recording is idempotent.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::events::SignalKind;
use crate::registry::client::{MountOutcome, PutManifestOutcome};
use crate::registry::manifest::{
    Descriptor, OCI_MANIFEST, PROMOTER_ARTIFACT_TYPE_PREFIX, RawManifest,
};
use crate::registry::{Digest, RegistryClient, RegistryError, Repository};

/// The artifact type of a signal record.
pub const SIGNAL_ARTIFACT_TYPE: &str = "application/vnd.promoter.signal.v1+json";
/// The artifact type of a promotion record.
pub const PROMOTION_ARTIFACT_TYPE: &str = "application/vnd.promoter.promotion.v1+json";
/// The OCI empty descriptor's content, the config of every record (OCI image spec, "Guidelines
/// for artifact usage").
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Millisecond resolution: an alert that clears within the second it fired must still come
/// after it.
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%3fZ";

/// Why evidence could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A record could not be encoded.
    #[error("evidence record {what}: {cause}")]
    Encode { what: String, cause: String },
}

impl EvidenceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, EvidenceError::Registry(e) if e.is_transient())
    }
}

/// A signal as recorded: what it was, about what, from which event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SignalRecord {
    #[serde(rename = "type")]
    pub kind: String,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub time: DateTime<Utc>,
    /// The repository in the stage (`registry/path/name`).
    pub repository: String,
    pub stage: String,
    /// Set for digest signals; alert signals are about the image in the stage.
    pub digest: Option<String>,
    /// The version tag the event named, so a later signal (an alert clearing) can promote the
    /// digest under its tag.
    pub tag: Option<String>,
}

/// A promotion into a stage: which signals, event ids and times, from which stage, by whom.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PromotionRecord {
    pub image: String,
    pub digest: String,
    pub source_image: String,
    pub from_stage: String,
    pub to_stage: String,
    pub trigger: crate::publish::TriggerRecord,
    pub evidence: Vec<crate::publish::EvidenceRecord>,
    pub identity: String,
    pub time: DateTime<Utc>,
}

/// One record as its tag describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub kind: SignalKind,
    pub time: DateTime<Utc>,
    /// The tag that holds the record; [`read_signal`] reads the whole record.
    pub tag: String,
    /// The event's own id, when this instance wrote the record and so knows it without reading.
    pub event_id: Option<String>,
}

/// Everything recorded in one stage repository.
#[derive(Clone, Debug, Default)]
pub struct StageRecords {
    /// Digest signals, by digest.
    pub by_digest: BTreeMap<Digest, Vec<Recorded>>,
    /// Alert signals of the image in this stage.
    pub alerts: Vec<Recorded>,
    /// When each digest was promoted into this stage (the earliest record).
    pub promoted_at: BTreeMap<Digest, DateTime<Utc>>,
}

impl StageRecords {
    /// What the gates of a promotion out of this stage see for `digest`. A rule record's
    /// `event_id` is the record's tag: the event's own id is read from the record when needed.
    pub fn evidence_for(&self, digest: &Digest) -> crate::rules::Evidence {
        let rule_record = |r: &Recorded| crate::rules::Record {
            kind: r.kind,
            event_id: r.tag.clone(),
            time: r.time,
        };
        crate::rules::Evidence {
            digest_signals: self.for_digest(digest).iter().map(rule_record).collect(),
            alert_signals: self.alerts.iter().map(rule_record).collect(),
            entered_stage_at: self.promoted_at.get(digest).copied(),
        }
    }

    /// The event id of the record under `tag`, when known without reading it.
    pub fn known_event_id(&self, tag: &str) -> Option<&str> {
        self.by_digest
            .values()
            .flatten()
            .chain(&self.alerts)
            .find(|r| r.tag == tag)
            .and_then(|r| r.event_id.as_deref())
    }

    /// Adds a record this instance just wrote, in case the listing was taken before it landed.
    pub fn include(&mut self, digest: Option<&Digest>, recorded: Recorded) {
        let list = match digest {
            Some(digest) => self.by_digest.entry(digest.clone()).or_default(),
            None => &mut self.alerts,
        };
        if !list.iter().any(|r| r.tag == recorded.tag) {
            list.push(recorded);
        }
    }

    pub fn for_digest(&self, digest: &Digest) -> &[Recorded] {
        self.by_digest
            .get(digest)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Sixteen hex digits naming an event: its source and id (CloudEvents: unique together).
fn event_hash(source: &str, id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// The tag a signal record is stored under.
pub fn signal_tag(
    kind: SignalKind,
    digest: Option<&Digest>,
    time: DateTime<Utc>,
    source: &str,
    id: &str,
) -> String {
    let time = time.format(TIME_FORMAT);
    let hash = event_hash(source, id);
    match digest {
        Some(digest) => format!(
            "{}.p2p.{}.{time}.{hash}",
            digest.fallback_tag(),
            kind.as_str()
        ),
        None => format!("p2p.alert.{}.{time}.{hash}", kind.as_str()),
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// What a tag of the naming scheme above records.
#[derive(Debug, PartialEq)]
enum RecordTag {
    /// A signal, about a digest or (alerts) the image in the stage.
    Signal(Option<Digest>, Recorded),
    /// A promotion of the digest into the stage, at that time.
    Promoted(Digest, DateTime<Utc>),
}

/// Reads one tag; other tags (the user's) are not records.
fn parse_tag(tag: &str) -> Option<RecordTag> {
    let subject_digest =
        |subject: &str| Digest::try_from(subject.replacen('-', ":", 1).as_str()).ok();
    let record = |kind: &str, time: &str| {
        Some(Recorded {
            kind: kind.parse().ok()?,
            time: parse_time(time)?,
            tag: tag.to_owned(),
            event_id: None,
        })
    };
    let parts: Vec<&str> = tag.split('.').collect();
    match parts.as_slice() {
        ["p2p", "alert", kind, time, _hash] => Some(RecordTag::Signal(None, record(kind, time)?)),
        [subject, "p2p", "promoted", time] => Some(RecordTag::Promoted(
            subject_digest(subject)?,
            parse_time(time)?,
        )),
        [subject, "p2p", kind, time, _hash] => Some(RecordTag::Signal(
            Some(subject_digest(subject)?),
            record(kind, time)?,
        )),
        _ => None,
    }
}

/// Reads every record of a stage repository: one tag listing.
pub async fn load(
    client: &RegistryClient,
    repository: &Repository,
) -> Result<StageRecords, EvidenceError> {
    let mut records = StageRecords::default();
    for tag in client.list_tags(repository).await? {
        match parse_tag(&tag) {
            Some(RecordTag::Signal(Some(digest), recorded)) => {
                records.by_digest.entry(digest).or_default().push(recorded)
            }
            Some(RecordTag::Signal(None, recorded)) => records.alerts.push(recorded),
            Some(RecordTag::Promoted(digest, time)) => {
                let entry = records.promoted_at.entry(digest).or_insert(time);
                *entry = (*entry).min(time);
            }
            None => {}
        }
    }
    Ok(records)
}

/// How a signal will be listed once recorded: its tag, and its time as the tag keeps it.
pub fn listed_as(kind: SignalKind, digest: Option<&Digest>, record: &SignalRecord) -> Recorded {
    let tag = signal_tag(
        kind,
        digest,
        record.time,
        &record.event_source,
        &record.event_id,
    );
    let time = parse_time(&record.time.format(TIME_FORMAT).to_string()).unwrap_or(record.time);
    Recorded {
        kind,
        time,
        tag,
        event_id: Some(record.event_id.clone()),
    }
}

/// Records a signal. `subject` names the image for digest signals.
pub async fn record_signal(
    client: &RegistryClient,
    repository: &Repository,
    subject: Option<(&Digest, &Descriptor)>,
    kind: SignalKind,
    record: &SignalRecord,
) -> Result<String, EvidenceError> {
    let tag = signal_tag(
        kind,
        subject.map(|(d, _)| d),
        record.time,
        &record.event_source,
        &record.event_id,
    );
    let annotations = serde_json::json!({
        "org.opencontainers.image.created": record.time.to_rfc3339(),
        "dev.promoter.signal.type": record.kind,
        "dev.promoter.signal.id": record.event_id,
        "dev.promoter.signal.source": record.event_source,
    });
    let artifact = Artifact {
        tag: &tag,
        artifact_type: SIGNAL_ARTIFACT_TYPE,
        subject: subject.map(|(_, d)| d),
        annotations,
    };
    put_empty_blob(client, repository, &Digest::sha256_of(EMPTY_CONFIG), None).await?;
    push_record(client, repository, artifact, record).await?;
    Ok(tag)
}

/// Reads a signal record back (for event ids in promotion records and `promoter status`).
pub async fn read_signal(
    client: &RegistryClient,
    repository: &Repository,
    tag: &str,
) -> Result<Option<SignalRecord>, EvidenceError> {
    read_record(client, repository, tag).await
}

/// A destination stage ready to take promotion records: its records' config blob is in place.
/// Preparing can run beside the copy, so recording after it is one write fewer.
pub struct PromotionTarget<'a> {
    client: &'a RegistryClient,
    repository: &'a Repository,
}

/// Puts the records' config blob in `repository`, mounted from `from` (the previous stage, which
/// has it from its own records) where the registry allows.
pub async fn prepare_promotion_target<'a>(
    client: &'a RegistryClient,
    repository: &'a Repository,
    from: Option<&Repository>,
) -> Result<PromotionTarget<'a>, EvidenceError> {
    put_empty_blob(client, repository, &Digest::sha256_of(EMPTY_CONFIG), from).await?;
    Ok(PromotionTarget { client, repository })
}

impl PromotionTarget<'_> {
    /// Records a promotion into this stage, discoverable as a referrer of the image.
    pub async fn record(
        &self,
        digest: &Digest,
        subject: &Descriptor,
        record: &PromotionRecord,
    ) -> Result<(), EvidenceError> {
        let (client, repository) = (self.client, self.repository);
        let tag = format!(
            "{}.p2p.promoted.{}",
            digest.fallback_tag(),
            record.time.format(TIME_FORMAT)
        );
        let annotations = serde_json::json!({
            "org.opencontainers.image.created": record.time.to_rfc3339(),
            "dev.promoter.promotion.from": record.from_stage,
            "dev.promoter.promotion.to": record.to_stage,
            "dev.promoter.promotion.identity": record.identity,
        });
        let artifact = Artifact {
            tag: &tag,
            artifact_type: PROMOTION_ARTIFACT_TYPE,
            subject: Some(subject),
            annotations,
        };
        let (manifest, outcome) = push_record(client, repository, artifact, record).await?;
        if !outcome.registry_tracks_subject {
            // Without the referrers API, standard tools find referrers in the fallback tag.
            let mut listed = manifest.descriptor();
            listed.artifact_type = Some(PROMOTION_ARTIFACT_TYPE.to_owned());
            crate::registry::copy::update_fallback_tag(client, repository, digest, &[listed], None)
                .await?;
        }
        Ok(())
    }
}

/// What distinguishes one record's manifest.
struct Artifact<'a> {
    tag: &'a str,
    artifact_type: &'a str,
    subject: Option<&'a Descriptor>,
    annotations: serde_json::Value,
}

/// The annotation that holds a record's JSON. Keeping the record in the manifest makes writing
/// it one request and reading it one request; the layer is the OCI empty descriptor, as the image
/// spec advises for artifacts without content.
const RECORD_ANNOTATION: &str = "dev.promoter.record";

/// Pushes a record's manifest under its tag (the config blob is already in place).
async fn push_record<T: Serialize>(
    client: &RegistryClient,
    repository: &Repository,
    artifact: Artifact<'_>,
    record: &T,
) -> Result<(RawManifest, PutManifestOutcome), EvidenceError> {
    let Artifact {
        tag,
        artifact_type,
        subject,
        mut annotations,
    } = artifact;
    let encode_error = |cause: String| EvidenceError::Encode {
        what: format!("{repository}:{tag}"),
        cause,
    };
    let body = serde_json::to_string(record).map_err(|e| encode_error(e.to_string()))?;
    annotations[RECORD_ANNOTATION] = serde_json::Value::String(body);
    let empty_digest = Digest::sha256_of(EMPTY_CONFIG);
    let empty = serde_json::json!({"mediaType": EMPTY_MEDIA_TYPE, "digest": empty_digest.as_str(), "size": EMPTY_CONFIG.len()});
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [empty],
        "annotations": annotations,
    });
    if let Some(subject) = subject {
        manifest["subject"] = serde_json::json!({
            "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size,
        });
    }
    let bytes = serde_json::to_vec(&manifest).map_err(|e| encode_error(e.to_string()))?;
    let manifest = RawManifest::new(Bytes::from(bytes), Some(OCI_MANIFEST.to_owned()))
        .map_err(encode_error)?;
    let outcome = client.put_manifest(repository, tag, &manifest).await?;
    Ok((manifest, outcome))
}

/// The empty config blob, mounted from `from` (the previous stage, which has it from its own
/// records) in one request where the registry allows, else uploaded if absent.
async fn put_empty_blob(
    client: &RegistryClient,
    repository: &Repository,
    digest: &Digest,
    from: Option<&Repository>,
) -> Result<(), RegistryError> {
    if let Some(from) =
        from.filter(|from| from.registry == repository.registry && *from != repository)
    {
        match client.mount_blob(repository, digest, from).await {
            Ok(MountOutcome::Mounted) => return Ok(()),
            Ok(MountOutcome::UploadAt(location)) => {
                return client
                    .upload_blob_bytes(
                        repository,
                        digest,
                        Bytes::from_static(EMPTY_CONFIG),
                        Some(location),
                    )
                    .await;
            }
            Err(error) if error.is_transient() => return Err(error),
            Err(_) => {}
        }
    }
    client
        .push_blob_bytes(repository, digest, Bytes::from_static(EMPTY_CONFIG))
        .await
}

async fn read_record<T: for<'de> Deserialize<'de>>(
    client: &RegistryClient,
    repository: &Repository,
    tag: &str,
) -> Result<Option<T>, EvidenceError> {
    let Some(manifest) = client.get_manifest(repository, tag).await? else {
        return Ok(None);
    };
    if !manifest
        .artifact_type
        .as_deref()
        .is_some_and(|t| t.starts_with(PROMOTER_ARTIFACT_TYPE_PREFIX))
    {
        return Ok(None);
    }
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
    Ok(parsed["annotations"][RECORD_ANNOTATION]
        .as_str()
        .and_then(|record| serde_json::from_str(record).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_fit_the_tag_grammar() {
        let digest = Digest::sha256_of(b"image");
        let time = DateTime::parse_from_rfc3339("2026-11-26T04:54:00Z")
            .expect("time")
            .with_timezone(&Utc);
        for kind in SignalKind::ALL {
            for subject in [Some(&digest), None] {
                let tag = signal_tag(kind, subject, time, "//ci", "event-1");
                assert!(
                    crate::registry::Tag::try_from(tag.as_str()).is_ok(),
                    "{tag} is not a valid tag"
                );
                let Some(RecordTag::Signal(parsed_digest, recorded)) = parse_tag(&tag) else {
                    panic!("{tag} does not parse as a signal");
                };
                assert_eq!(parsed_digest.as_ref(), subject);
                assert_eq!((recorded.kind, recorded.time), (kind, time));
            }
        }
        assert_eq!(parse_tag("1.2.4"), None);
        assert_eq!(parse_tag(&digest.fallback_tag().to_string()), None);
        assert_eq!(parse_tag(&format!("{}.sig", digest.fallback_tag())), None);
    }

    #[test]
    fn the_same_event_maps_to_the_same_tag() {
        let time = Utc::now();
        assert_eq!(
            signal_tag(SignalKind::SoakComplete, None, time, "//a", "1"),
            signal_tag(SignalKind::SoakComplete, None, time, "//a", "1")
        );
        assert_ne!(
            signal_tag(SignalKind::SoakComplete, None, time, "//a", "1"),
            signal_tag(SignalKind::SoakComplete, None, time, "//a", "2")
        );
    }
}
