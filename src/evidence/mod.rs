//! What promoter records in registries (docs/evidence.md): the evidence its
//! decisions read, laid out so that a decision reads a fixed number of objects whatever the
//! image's history, and so that instances writing at the same moment never read-modify-write
//! one shared object.
//!
//! Two places:
//!
//! - **Next to the image**, in each stage's repository ([`digest`]): per digest, one tag per
//!   signal type holding the latest signal of that type (`sha256-<hex>.p2p.<signal>`, read with
//!   one HEAD or GET), one tag per signal event (the audit trail, never read by a decision), when
//!   the digest arrived in the stage, and its promotion record. All are OCI artifacts whose
//!   `subject` is the image, so `oras discover` and the referrers API list them too.
//! - **In promoter's state repository** ([`state`], `PROMOTER_STATE_REPOSITORY`), indexes a
//!   decision would otherwise have to build by listing a whole stage repository: the alert state
//!   of an image in a stage, the digests waiting for an alert to clear or for time to pass, and
//!   the newest digest promoted into each stage. Each is a small repository whose obsolete tags
//!   promoter deletes, so listing it costs what is live, not what has ever been.
//!
//! Every record is an OCI image manifest with the empty config (`{}`), one empty layer, and the
//! record's JSON in an annotation, so writing it is one request and reading it is one request.

pub mod digest;
pub mod state;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::registry::client::{MountOutcome, PutManifestOutcome};
use crate::registry::manifest::{
    Descriptor, OCI_MANIFEST, PROMOTER_ARTIFACT_TYPE_PREFIX, RawManifest,
};
use crate::registry::{Digest, RegistryClient, RegistryError, Repository};

pub use digest::DigestRecords;
pub use state::{
    ArrivalEntry, ArrivalsIndex, ImagesIndex, LogRecord, PromotedIndex, StateRepository, Toggle,
    ToggleLog, WaitingEntry, WaitingIndex,
};

/// The artifact type of a signal record.
pub const SIGNAL_ARTIFACT_TYPE: &str = "application/vnd.promoter.signal.v1+json";
/// The artifact type of a promotion record.
pub const PROMOTION_ARTIFACT_TYPE: &str = "application/vnd.promoter.promotion.v1+json";
/// The artifact type of an arrival record.
pub const ARRIVAL_ARTIFACT_TYPE: &str = "application/vnd.promoter.arrival.v1+json";
/// The artifact type of an entry in one of promoter's indexes.
pub const INDEX_ARTIFACT_TYPE: &str = "application/vnd.promoter.index.v1+json";
/// The OCI empty descriptor's content, the config of every record (OCI image spec, "Guidelines
/// for artifact usage").
const EMPTY_CONFIG: &[u8] = b"{}";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Millisecond resolution: an alert that clears within the second it fired must still come
/// after it.
const TIME_FORMAT: &str = "%Y%m%dT%H%M%S%3fZ";
/// The annotation that holds a record's JSON.
const RECORD_ANNOTATION: &str = "dev.promoter.record";

/// Why evidence could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A record could not be encoded.
    #[error("evidence record {what}: {cause}")]
    Encode { what: String, cause: String },
    /// A repository name for a record could not be formed (a state repository path too long for
    /// the registry's grammar, say).
    #[error("evidence repository {what}: {cause}")]
    Name { what: String, cause: String },
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
    /// For `approved`: who approved, when the request's token said so (verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
}

/// A `freeze` or `unfreeze` of a stage, as recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StageEventRecord {
    pub freeze: bool,
    pub stage: String,
    pub reason: Option<String>,
    pub event_id: String,
    pub event_source: String,
    pub event_type: String,
    pub time: DateTime<Utc>,
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
    /// What the copy did (for the pipeline view's promotion history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopySummary>,
    /// The promotion attestation written with it, when the service had a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<crate::attest::Attestation>,
}

/// The figures of a copy a promotion record keeps.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct CopySummary {
    pub blobs_total: u64,
    pub blobs_copied: u64,
    pub blobs_mounted: u64,
    pub bytes_copied: u64,
    pub referrers_copied: u64,
    pub duration_ms: u64,
}

impl From<&crate::registry::CopyReport> for CopySummary {
    fn from(report: &crate::registry::CopyReport) -> Self {
        CopySummary {
            blobs_total: report.blobs_total,
            blobs_copied: report.blobs_copied,
            blobs_mounted: report.blobs_mounted,
            bytes_copied: report.bytes_copied,
            referrers_copied: report.referrers_copied,
            duration_ms: report.duration_ms,
        }
    }
}

/// When a digest arrived in a stage, as far as promoter knows: the moment it promoted the digest
/// there, or the first signal it recorded about the digest there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ArrivalRecord {
    pub time: DateTime<Utc>,
    pub digest: String,
    /// The version tag the digest has in the stage, when known.
    pub tag: Option<String>,
    /// `promoted from <stage>` or `first signal <type> <event id>`.
    pub how: String,
}

impl ArrivalRecord {
    /// The arrival a promotion made: the promotion record's time is the digest's arrival.
    pub fn of_promotion(record: &PromotionRecord, tag: &str) -> Self {
        Self {
            time: record.time,
            digest: record.digest.clone(),
            tag: Some(tag.to_string()),
            how: format!("promoted from {}", record.from_stage),
        }
    }
}

/// Sixteen hex digits naming an event: its source and id (CloudEvents: unique together).
fn event_hash(source: &str, id: &str) -> String {
    short_hash(&[source, id], 8)
}

/// `bytes` bytes of sha256 over the parts, in hex.
fn short_hash(parts: &[&str], bytes: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..bytes])
}

fn format_time(time: DateTime<Utc>) -> String {
    time.format(TIME_FORMAT).to_string()
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text, TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// What distinguishes one record's manifest.
struct Artifact<'a> {
    artifact_type: &'a str,
    subject: Option<&'a Descriptor>,
    annotations: serde_json::Value,
}

/// The manifest of a record. Deterministic: the same record gives the same bytes, so an index
/// entry's digest can be computed without reading it back (to delete it).
fn record_manifest<T: Serialize>(
    what: &str,
    artifact: Artifact<'_>,
    record: &T,
) -> Result<RawManifest, EvidenceError> {
    let encode_error = |cause: String| EvidenceError::Encode {
        what: what.to_owned(),
        cause,
    };
    let Artifact {
        artifact_type,
        subject,
        mut annotations,
    } = artifact;
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
    RawManifest::new(Bytes::from(bytes), Some(OCI_MANIFEST.to_owned())).map_err(encode_error)
}

/// Pushes one manifest under several tags at once (its config blob is already in place).
async fn put_tags(
    client: &RegistryClient,
    repository: &Repository,
    manifest: &RawManifest,
    tags: &[&str],
) -> Result<Vec<PutManifestOutcome>, EvidenceError> {
    let pushed = futures::future::try_join_all(
        tags.iter()
            .map(|tag| client.put_manifest(repository, tag, manifest)),
    )
    .await;
    if let Err(error) = &pushed
        && error.to_string().contains("MANIFEST_BLOB_UNKNOWN")
    {
        // The config blob this process remembered is gone (a garbage collection): check and
        // upload it again next time.
        client
            .transport()
            .forget_blob(repository, &Digest::sha256_of(EMPTY_CONFIG));
    }
    Ok(pushed?)
}

/// The records' config blob in `repository`, placed once per repository and process: mounted,
/// in one request where the registry allows, from a repository on the same host this process
/// placed it in, else from `from` (one that probably has it, such as the previous stage);
/// uploaded where it cannot be mounted.
async fn put_empty_blob(
    client: &RegistryClient,
    repository: &Repository,
    from: Option<&Repository>,
) -> Result<(), RegistryError> {
    let digest = Digest::sha256_of(EMPTY_CONFIG);
    let transport = client.transport();
    transport
        .blob_placement(repository, &digest)
        .get_or_try_init(|| async {
            // A repository known to hold it beats one that probably does.
            let home = transport
                .blob_home(repository, &digest, |home| client.may_pull(home))
                .or_else(|| from.cloned());
            place_empty_blob(client, repository, home.as_ref(), &digest).await?;
            Ok::<_, RegistryError>(())
        })
        .await?;
    // Placed now or before: the most recently used repositories are the first homes tried, so
    // the shared ones every job may pull from (the waiting and images indexes) stay among them.
    transport.remember_blob_home(repository, &digest);
    Ok(())
}

async fn place_empty_blob(
    client: &RegistryClient,
    repository: &Repository,
    from: Option<&Repository>,
    digest: &Digest,
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

/// Reads a record back: `None` when the tag is absent or does not hold a promoter record.
async fn read_record<T: for<'de> Deserialize<'de>>(
    client: &RegistryClient,
    repository: &Repository,
    tag: &str,
) -> Result<Option<T>, EvidenceError> {
    let Some(manifest) = client.get_manifest(repository, tag).await? else {
        return Ok(None);
    };
    Ok(record_of(&manifest))
}

/// The record a manifest carries, if it is a promoter record.
fn record_of<T: for<'de> Deserialize<'de>>(manifest: &RawManifest) -> Option<T> {
    if !manifest
        .artifact_type
        .as_deref()
        .is_some_and(|t| t.starts_with(PROMOTER_ARTIFACT_TYPE_PREFIX))
    {
        return None;
    }
    let parsed: serde_json::Value = serde_json::from_slice(&manifest.bytes).ok()?;
    parsed["annotations"][RECORD_ANNOTATION]
        .as_str()
        .and_then(|record| serde_json::from_str(record).ok())
}

/// Deletes the entries under `tags` whose content is not known here: each tag's digest is read
/// first (a registry deletes manifests by digest). Best-effort, as [`delete_entries`].
async fn delete_tagged_entries<'a>(
    client: &RegistryClient,
    repository: &Repository,
    tags: impl IntoIterator<Item = &'a str>,
) {
    let digests = futures::future::join_all(
        tags.into_iter()
            .map(|tag| client.head_manifest(repository, tag)),
    )
    .await;
    let digests: Vec<Digest> = digests
        .into_iter()
        .filter_map(|d| d.ok().flatten())
        .collect();
    delete_entries(client, repository, &digests).await;
}

/// Deletes index entries that are obsolete. Cleaning up never fails a decision: a registry that
/// refuses deletes (distribution without `storage.delete.enabled`, an identity without
/// `roles/artifactregistry.repoAdmin` on the state repository) only leaves the index longer,
/// which is logged once per call.
async fn delete_entries(client: &RegistryClient, repository: &Repository, digests: &[Digest]) {
    let results = futures::future::join_all(
        digests
            .iter()
            .map(|d| client.delete_manifest(repository, d)),
    )
    .await;
    if let Some(error) = results.into_iter().find_map(Result::err) {
        tracing::warn!(repository = %repository, %error, "could not delete obsolete index entries; the index stays larger until deletes are allowed");
    }
}
