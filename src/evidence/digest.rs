//! A digest's records in a stage's repository, next to the image, under tags derived from the
//! digest (so `crane ls`, `skopeo list-tags` and `oras discover` show them beside it):
//!
//! | tag | holds | written | read |
//! |---|---|---|---|
//! | `sha256-<hex>.p2p.<signal>` | the latest signal of that type | every signal | HEAD/GET by a decision |
//! | `sha256-<hex>.p2p.<signal>.<event>` | one signal event (the audit trail) | every signal | `promoter status`, people |
//! | `sha256-<hex>.p2p.arrived` | when the digest arrived in the stage, when promoter did not put it there | its first signal there | GET by a decision |
//! | `sha256-<hex>.p2p.promoted` | the promotion record into the stage (its time is the arrival) | on promotion | HEAD/GET (by a decision, when `arrived` is absent) |
//!
//! A decision reads these by name, so what it reads does not depend on how many other
//! versions, tags or records the repository holds. Several instances recording signals of one
//! type for one digest at once overwrite the type's tag with equally valid records (each is a
//! signal of that type for that digest, which is all a gate asks) and keep every event under its
//! own tag; no write reads anything first, except `arrived`, where the one left by a race is the
//! other instance's arrival time, milliseconds apart.

use chrono::{DateTime, Utc};

use crate::events::SignalKind;
use crate::registry::manifest::Descriptor;
use crate::registry::{Digest, RegistryClient, Repository};

use super::{
    ARRIVAL_ARTIFACT_TYPE, ArrivalRecord, Artifact, EvidenceError, PROMOTION_ARTIFACT_TYPE,
    PromotionRecord, SIGNAL_ARTIFACT_TYPE, SignalRecord, event_hash, put_empty_blob, put_tags,
    read_record, record_manifest,
};

/// The tag holding the latest `kind` signal for `digest`.
pub fn signal_tag(digest: &Digest, kind: &SignalKind) -> String {
    format!("{}.p2p.{}", digest.fallback_tag(), kind.as_str())
}

/// The tag holding one signal event for `digest`. Ten hex digits of the event's hash keep the
/// tag within the 128 characters OCI allows for the longest signal names.
pub fn event_tag(digest: &Digest, kind: &SignalKind, source: &str, id: &str) -> String {
    let hash = event_hash(source, id);
    format!(
        "{}.p2p.{}.{}",
        digest.fallback_tag(),
        kind.as_str(),
        &hash[..10]
    )
}

/// The tag holding the latest approval that counts for the promotion into `to_stage`: verified,
/// and by an approver its `approvers` name. An approval that does not count there never
/// overwrites one that does.
pub fn approval_tag(digest: &Digest, to_stage: &str) -> String {
    format!(
        "{}.p2p.approved.{}",
        digest.fallback_tag(),
        super::short_hash(&[to_stage], 4)
    )
}

pub fn arrived_tag(digest: &Digest) -> String {
    format!("{}.p2p.arrived", digest.fallback_tag())
}

pub fn promoted_tag(digest: &Digest) -> String {
    format!("{}.p2p.promoted", digest.fallback_tag())
}

/// The records of digests in one stage repository.
#[derive(Clone, Copy)]
pub struct DigestRecords<'a> {
    pub client: &'a RegistryClient,
    pub repository: &'a Repository,
}

impl DigestRecords<'_> {
    /// Records a signal about `digest` (whose manifest `subject` describes): the event under its
    /// own tag, as the latest of its type, and under `also_as` (an approval's per-promotion
    /// tags), in one write each, side by side.
    pub async fn record_signal(
        &self,
        digest: &Digest,
        subject: &Descriptor,
        kind: &SignalKind,
        record: &SignalRecord,
        also_as: &[String],
    ) -> Result<(), EvidenceError> {
        let latest = signal_tag(digest, kind);
        let event = event_tag(digest, kind, &record.event_source, &record.event_id);
        let manifest = signal_manifest(self.repository, &event, subject, record)?;
        put_empty_blob(self.client, self.repository, None).await?;
        let mut tags: Vec<&str> = vec![&event, &latest];
        tags.extend(also_as.iter().map(String::as_str));
        put_tags(self.client, self.repository, &manifest, &tags).await?;
        Ok(())
    }

    /// The latest `kind` signal recorded for `digest`, if any.
    pub async fn latest_signal(
        &self,
        digest: &Digest,
        kind: &SignalKind,
    ) -> Result<Option<SignalRecord>, EvidenceError> {
        read_record(self.client, self.repository, &signal_tag(digest, kind)).await
    }

    /// The latest approval of `digest` that counts for the promotion into `to_stage`.
    pub async fn approval_for(
        &self,
        digest: &Digest,
        to_stage: &str,
    ) -> Result<Option<SignalRecord>, EvidenceError> {
        read_record(
            self.client,
            self.repository,
            &approval_tag(digest, to_stage),
        )
        .await
    }

    /// One signal event recorded for `digest`, by the event's source and id.
    pub async fn signal_event(
        &self,
        digest: &Digest,
        kind: &SignalKind,
        source: &str,
        id: &str,
    ) -> Result<Option<SignalRecord>, EvidenceError> {
        read_record(
            self.client,
            self.repository,
            &event_tag(digest, kind, source, id),
        )
        .await
    }

    /// When `digest` arrived in this stage, if promoter knows: its first signal here (the
    /// arrival record), else, in a stage promotions lead into (`promoted_into`), its promotion
    /// here (the promotion record says when).
    pub async fn arrival(
        &self,
        digest: &Digest,
        promoted_into: bool,
    ) -> Result<Option<ArrivalRecord>, EvidenceError> {
        if let Some(arrival) =
            read_record(self.client, self.repository, &arrived_tag(digest)).await?
        {
            return Ok(Some(arrival));
        }
        if !promoted_into {
            return Ok(None);
        }
        Ok(self
            .promotion(digest)
            .await?
            .map(|promotion| ArrivalRecord {
                time: promotion.time,
                digest: promotion.digest,
                tag: promotion
                    .image
                    .rsplit_once(':')
                    .filter(|(_, tag)| !tag.contains('/'))
                    .map(|(_, tag)| tag.to_owned()),
                how: format!("promoted from {}", promotion.from_stage),
            }))
    }

    /// Records when `digest` arrived (its first signal here, when promoter did not put it here).
    pub async fn record_arrival(
        &self,
        digest: &Digest,
        subject: &Descriptor,
        arrival: &ArrivalRecord,
    ) -> Result<(), EvidenceError> {
        let tag = arrived_tag(digest);
        let manifest = arrival_manifest(self.repository, &tag, subject, arrival)?;
        put_empty_blob(self.client, self.repository, None).await?;
        put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        Ok(())
    }

    /// Whether `digest` has a promotion record in this stage.
    pub async fn is_recorded_as_promoted(&self, digest: &Digest) -> Result<bool, EvidenceError> {
        Ok(self
            .client
            .head_manifest(self.repository, &promoted_tag(digest))
            .await?
            .is_some())
    }

    /// The promotion record of `digest` into this stage.
    pub async fn promotion(
        &self,
        digest: &Digest,
    ) -> Result<Option<PromotionRecord>, EvidenceError> {
        read_record(self.client, self.repository, &promoted_tag(digest)).await
    }

    /// Puts the records' config blob in place ahead of [`DigestRecords::record_promotion`]
    /// (mounted from `from`, the previous stage, which has it from its own records), so it can go
    /// up beside the copy.
    pub async fn prepare(&self, from: Option<&Repository>) -> Result<(), EvidenceError> {
        put_empty_blob(self.client, self.repository, from).await?;
        Ok(())
    }

    /// Records the promotion of `digest` into this stage, which is also when it arrived here
    /// ([`DigestRecords::arrival`] reads it so); the record is also listed in the `sha256-<hex>`
    /// referrers tag, where standard tools look on registries without the referrers API.
    /// [`DigestRecords::prepare`] must have run.
    pub async fn record_promotion(
        &self,
        digest: &Digest,
        subject: &Descriptor,
        record: &PromotionRecord,
    ) -> Result<(), EvidenceError> {
        let tag = promoted_tag(digest);
        let annotations = serde_json::json!({
            "org.opencontainers.image.created": record.time.to_rfc3339(),
            "dev.promoter.promotion.from": record.from_stage,
            "dev.promoter.promotion.to": record.to_stage,
            "dev.promoter.promotion.identity": record.identity,
        });
        let manifest = record_manifest(
            &format!("{}:{tag}", self.repository),
            Artifact {
                artifact_type: PROMOTION_ARTIFACT_TYPE,
                subject: Some(subject),
                annotations,
            },
            record,
        )?;
        let promoted = put_tags(self.client, self.repository, &manifest, &[&tag]).await?;
        if !promoted.iter().any(|o| o.registry_tracks_subject) {
            // Without the referrers API, standard tools find referrers in the fallback tag. Its
            // update reads and rewrites a shared index; what a race between two instances
            // recording the same promotion can lose is the other's promotion record of the
            // same digest into the same stage, which then lists in its place.
            let mut listed = manifest.descriptor();
            listed.artifact_type = Some(PROMOTION_ARTIFACT_TYPE.to_owned());
            crate::registry::copy::update_fallback_tag(
                self.client,
                self.repository,
                digest,
                &[listed],
                None,
            )
            .await?;
        }
        Ok(())
    }
}

/// The manifest of a signal record. Deterministic, so its digest — how a promotion
/// attestation names the records it was decided on — is known without reading it back.
fn signal_manifest(
    repository: &Repository,
    tag: &str,
    subject: &Descriptor,
    record: &SignalRecord,
) -> Result<crate::registry::manifest::RawManifest, EvidenceError> {
    let annotations = serde_json::json!({
        "org.opencontainers.image.created": record.time.to_rfc3339(),
        "dev.promoter.signal.type": record.kind,
        "dev.promoter.signal.id": record.event_id,
        "dev.promoter.signal.source": record.event_source,
    });
    record_manifest(
        &format!("{repository}:{tag}"),
        Artifact {
            artifact_type: SIGNAL_ARTIFACT_TYPE,
            subject: Some(subject),
            annotations,
        },
        record,
    )
}

/// The digest of the manifest that records `record` about the image `subject` in `repository`
/// (under its event tag, its type's latest tag and any approval tag alike).
pub fn signal_record_digest(
    repository: &Repository,
    subject: &Descriptor,
    record: &SignalRecord,
) -> Result<Digest, EvidenceError> {
    Ok(signal_manifest(repository, "", subject, record)?.digest)
}

fn arrival_manifest(
    repository: &Repository,
    tag: &str,
    subject: &Descriptor,
    arrival: &ArrivalRecord,
) -> Result<crate::registry::manifest::RawManifest, EvidenceError> {
    record_manifest(
        &format!("{repository}:{tag}"),
        Artifact {
            artifact_type: ARRIVAL_ARTIFACT_TYPE,
            subject: Some(subject),
            annotations: serde_json::json!({
                "org.opencontainers.image.created": arrival.time.to_rfc3339(),
            }),
        },
        arrival,
    )
}

/// An arrival at `time` by the first signal `record`.
pub fn first_signal_arrival(
    digest: &Digest,
    record: &SignalRecord,
    time: DateTime<Utc>,
) -> ArrivalRecord {
    ArrivalRecord {
        time,
        digest: digest.to_string(),
        tag: record.tag.clone(),
        how: format!("first signal {} {}", record.kind, record.event_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_fit_the_tag_grammar_for_every_signal() {
        let digest = Digest::sha256_of(b"image");
        let longest = SignalKind::Declared(
            crate::events::SignalName::try_from("a".repeat(40).as_str()).expect("a name"),
        );
        for kind in SignalKind::BUILT_IN.into_iter().chain([longest]) {
            for tag in [
                signal_tag(&digest, &kind),
                event_tag(&digest, &kind, "//ci", "event-1"),
                approval_tag(&digest, &"s".repeat(63)),
                arrived_tag(&digest),
                promoted_tag(&digest),
            ] {
                assert!(
                    crate::registry::Tag::try_from(tag.as_str()).is_ok(),
                    "{tag} is not a valid tag"
                );
            }
        }
    }

    #[test]
    fn the_same_event_maps_to_the_same_tag_and_another_to_another() {
        let digest = Digest::sha256_of(b"image");
        let kind = &SignalKind::SoakComplete;
        assert_eq!(
            event_tag(&digest, kind, "//a", "1"),
            event_tag(&digest, kind, "//a", "1")
        );
        assert_ne!(
            event_tag(&digest, kind, "//a", "1"),
            event_tag(&digest, kind, "//a", "2")
        );
        assert_ne!(
            event_tag(&digest, kind, "//a", "1"),
            signal_tag(&digest, kind)
        );
    }
}
