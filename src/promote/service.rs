//! The service: a signal in, a decision out (DESIGN.md §5). Locates the signal in the pipeline,
//! records it next to the image, evaluates the gates of the promotions it may open from the
//! records, copies, records the promotion and announces the outcome.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::outcome::{Decision, Outcome, PromoteError, most_significant};
use super::{CopyJob, copy};
use crate::events::{Delivery, EventsError, RawSignal, SignalKind};
use crate::evidence::{self, EvidenceError, PromotionRecord, SignalRecord, StageRecords};
use crate::publish::{self, EventPublisher, EvidenceRecord, PublishError, TriggerRecord};
use crate::registry::auth::IdentityChoice;
use crate::registry::copy::Progress;
use crate::registry::manifest::Descriptor;
use crate::registry::{
    CopyOptions, Digest, ImageRef, RegistryClient, RegistryError, Repository, Tag, Transport,
};
use crate::rules::{self, Gate, Located, Pipeline, Promotion, RulesError};

/// Everything the service needs, built once at start-up.
pub struct Service {
    pub pipeline: Pipeline,
    pub transport: Transport,
    /// The service's own identity, on both sides of every copy.
    pub identity: IdentityChoice,
    /// Who promotions are recorded as having been done by, found on first use.
    identity_name: tokio::sync::OnceCell<String>,
    pub publisher: Option<EventPublisher>,
    /// `//promoter/{K_SERVICE or hostname}`.
    pub event_source: String,
    /// One promotion of a digest into a repository at a time in this process: concurrent
    /// duplicate deliveries wait and then find it already promoted.
    in_flight: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events this instance already saw through to a promotion (copied and announced). Pub/Sub
    /// delivers at least once, often to the same instance; a redelivery is answered from here
    /// without touching the registry. Another instance, or this one after a restart, takes the
    /// full path, which is idempotent.
    done: std::sync::Mutex<HashMap<String, Outcome>>,
}

/// How many finished events an instance remembers before it forgets them all (a redelivery after
/// that takes the full, idempotent path).
const REMEMBERED_EVENTS: usize = 10_000;

impl Service {
    pub fn new(
        pipeline: Pipeline,
        transport: Transport,
        identity: IdentityChoice,
        publisher: Option<EventPublisher>,
        event_source: String,
    ) -> Self {
        Service {
            pipeline,
            transport,
            identity,
            identity_name: tokio::sync::OnceCell::new(),
            done: std::sync::Mutex::default(),
            publisher,
            event_source,
            in_flight: tokio::sync::Mutex::default(),
        }
    }

    /// Handles one signal. Final failures are announced as `promotion-rejected`.
    pub async fn handle(&self, signal: &RawSignal) -> Result<Outcome, PromoteError> {
        let key = format!(
            "{}\0{}\0{}\0{}",
            signal.event_source, signal.event_id, signal.kind, signal.image
        );
        if let Some(mut outcome) = self
            .done
            .lock()
            .ok()
            .and_then(|done| done.get(&key).cloned())
        {
            outcome.decision = Decision::AlreadyPromoted;
            outcome.reason = format!(
                "event {} was already handled: {}",
                signal.event_id, outcome.reason
            );
            return Ok(outcome);
        }
        let result = self.decide(signal).await;
        if let Ok(outcome) = &result
            && matches!(
                outcome.decision,
                Decision::Promoted | Decision::AlreadyPromoted
            )
            && let Ok(mut done) = self.done.lock()
        {
            if done.len() >= REMEMBERED_EVENTS {
                done.clear();
            }
            done.insert(key, outcome.clone());
        }
        if let Err(error) = &result
            && !error.is_transient()
        {
            let outcome = match error {
                PromoteError::Rejected { outcome, .. } => Some(outcome),
                _ => None,
            };
            let announcement = publish::Rejected {
                image: Some(signal.image.clone()),
                digest: outcome
                    .and_then(|o| o.digest.clone())
                    .or_else(|| signal.digest.clone()),
                from_stage: outcome.and_then(|o| o.from_stage.clone()),
                to_stage: outcome.and_then(|o| o.to_stage.clone()),
                trigger: trigger_of(signal),
                reason: error.to_string(),
            };
            self.announce_rejection(&announcement).await?;
        }
        result
    }

    /// The service account on Cloud Run (from the metadata server), else the host's name.
    async fn identity_name(&self) -> String {
        self.identity_name
            .get_or_init(|| async {
                match metadata_service_account().await {
                    Some(email) => format!("serviceAccount:{email}"),
                    None => format!(
                        "ambient identity of {}",
                        publish::event_source().trim_start_matches("//promoter/")
                    ),
                }
            })
            .await
            .clone()
    }

    /// Announces a message that could not even be read (acked, so it must not vanish silently).
    pub async fn reject_malformed(&self, error: &EventsError) -> Result<(), PromoteError> {
        let (id, source) = match error.delivery() {
            Delivery::PubSub {
                message_id,
                subscription,
                ..
            } => (
                message_id.clone(),
                subscription.clone().unwrap_or_else(|| "//pubsub".into()),
            ),
            Delivery::Direct => return Ok(()),
        };
        let announcement = publish::Rejected {
            image: None,
            digest: None,
            from_stage: None,
            to_stage: None,
            trigger: TriggerRecord {
                event_type: "unreadable".into(),
                id,
                source,
            },
            reason: error.to_string(),
        };
        self.announce_rejection(&announcement).await
    }

    async fn announce_rejection(
        &self,
        announcement: &publish::Rejected,
    ) -> Result<(), PromoteError> {
        self.announce(|source, now| announcement.to_event(source, now))
            .await
    }

    /// Publishes an outbound event, when an events topic is configured.
    async fn announce(
        &self,
        event: impl FnOnce(&str, DateTime<Utc>) -> Result<publish::OutboundEvent, PublishError>,
    ) -> Result<(), PromoteError> {
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let publish_error = |source| PromoteError::Publish {
            topic: publisher.topic().to_owned(),
            source,
        };
        let event = event(&self.event_source, Utc::now()).map_err(publish_error)?;
        publisher
            .publish_event(&event)
            .await
            .map(|_| ())
            .map_err(publish_error)
    }

    async fn decide(&self, signal: &RawSignal) -> Result<Outcome, PromoteError> {
        let mut base = Outcome::new(Decision::Recorded, "");
        base.event_id = Some(signal.event_id.clone());
        base.image = Some(signal.image.clone());
        let located = self
            .pipeline
            .locate(&signal.image, signal.stage.as_deref())
            .map_err(|e: RulesError| PromoteError::rejected(e.to_string(), base.clone()))?;
        base.from_stage = Some(located.stage.to_string());
        match signal.kind {
            SignalKind::AlertFiring | SignalKind::AlertClear => {
                self.decide_alert(signal, &located, base).await
            }
            _ => self.decide_digest_signal(signal, &located, base).await,
        }
    }

    /// A registry client for one job on `repository`, with the service's identity.
    async fn client(
        &self,
        repository: &Repository,
        actions: &str,
    ) -> Result<RegistryClient, RegistryError> {
        self.transport
            .job_client(&self.identity, repository, actions, None)
            .await
    }

    /// test-passed, test-failed, soak-complete: about one digest in one stage.
    async fn decide_digest_signal(
        &self,
        signal: &RawSignal,
        located: &Located,
        mut base: Outcome,
    ) -> Result<Outcome, PromoteError> {
        let given_digest = match &signal.digest {
            Some(text) => Some(Digest::try_from(text.as_str()).map_err(|e| {
                PromoteError::rejected(format!("event {}: {e}", signal.event_id), base.clone())
            })?),
            None => None,
        };
        let digest = match (&located.digest, &given_digest) {
            (Some(a), Some(b)) if a != b => {
                return Err(PromoteError::rejected(
                    format!(
                        "event {}: image {} and data.digest {b} disagree",
                        signal.event_id, signal.image
                    ),
                    base,
                ));
            }
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        if located.tag.is_none() && digest.is_none() {
            return Err(PromoteError::rejected(
                format!(
                    "event {}: image {} names no tag or digest",
                    signal.event_id, signal.image
                ),
                base,
            ));
        }
        let stage_client = self.client(&located.repository, "pull,push").await?;
        // Resolve what the event names in the stage it names: the digest, and the tag's.
        let (digest, subject) = resolve_in_stage(
            &stage_client,
            located,
            digest.as_ref(),
            &signal.event_id,
            &base,
        )
        .await?;
        base.digest = Some(digest.to_string());

        let record = signal_record(signal, located, Some(&digest));
        let promotions = self
            .pipeline
            .triggered_by(located.stage.as_str(), signal.kind);
        let write = evidence::record_signal(
            &stage_client,
            &located.repository,
            Some((&digest, &subject)),
            signal.kind,
            &record,
        );
        if promotions.is_empty() {
            write.await?;
            base.reason = format!(
                "{} recorded for {digest} in {}; no promotion out of {} uses it",
                signal.kind, located.stage, located.stage
            );
            return Ok(base);
        }
        // Every signal is decided from a listing taken after its own record is durable: of two
        // signals arriving together, the later listing then sees both, so a gate they open
        // together is never missed. As a fast path, a first decision runs on a listing taken
        // while the record is written; when that already opens the gate the copy overlaps the
        // write, and when it does not, the decision is taken again once the record is in.
        let decide = || async {
            let mut records = evidence::load(&stage_client, &located.repository).await?;
            records.include(
                Some(&digest),
                evidence::listed_as(signal.kind, Some(&digest), &record),
            );
            let mut outcomes = Vec::new();
            for &promotion in &promotions {
                if promotion.block_on().contains(&signal.kind)
                    && !promotion.require().contains(&signal.kind)
                {
                    // A blocking signal is accepted and recorded; it is the promotion it blocks
                    // that is refused, when a signal asks for it.
                    let mut recorded = base.clone();
                    recorded.to_stage = Some(promotion.to().to_string());
                    recorded.reason = format!(
                        "{} recorded for {digest}: it blocks promotion {} -> {}",
                        signal.kind,
                        promotion.from(),
                        promotion.to()
                    );
                    outcomes.push(recorded);
                    continue;
                }
                let outcome = self
                    .evaluate_and_promote(
                        signal,
                        located,
                        &stage_client,
                        &records,
                        promotion,
                        &digest,
                        located.tag.clone(),
                        base.clone(),
                    )
                    .await?;
                outcomes.push(outcome);
            }
            Ok::<_, PromoteError>(most_significant(outcomes))
        };
        let (written, early) = tokio::join!(write, decide());
        written?;
        match early? {
            outcome
                if matches!(
                    outcome.decision,
                    Decision::Promoted | Decision::AlreadyPromoted
                ) =>
            {
                Ok(outcome)
            }
            _ => decide().await,
        }
    }

    /// alert-firing, alert-clear: about the image in a stage, whatever its digest.
    async fn decide_alert(
        &self,
        signal: &RawSignal,
        located: &Located,
        mut base: Outcome,
    ) -> Result<Outcome, PromoteError> {
        let stage_client = self.client(&located.repository, "pull,push").await?;
        let record = signal_record(signal, located, None);
        let promotions = self
            .pipeline
            .triggered_by(located.stage.as_str(), signal.kind);
        let write = evidence::record_signal(
            &stage_client,
            &located.repository,
            None,
            signal.kind,
            &record,
        );
        if signal.kind == SignalKind::AlertFiring || promotions.is_empty() {
            write.await?;
            base.reason = format!(
                "{} recorded for {} in {}",
                signal.kind, located.repository, located.stage
            );
            return Ok(base);
        }
        // The alert cleared: every digest waiting in this stage may now be free to go. Listed
        // after the record is durable, so a signal arriving at the same moment sees it or is seen.
        write.await?;
        let records = evidence::load(&stage_client, &located.repository).await?;
        let mut outcomes = Vec::new();
        for promotion in promotions {
            let Some(to_stage) = self.pipeline.stage(promotion.to().as_str()) else {
                continue;
            };
            let destination = to_stage
                .repository(&located.image_name)
                .map_err(|e| PromoteError::rejected(e.to_string(), base.clone()))?;
            let destination_client = self.client(&destination, "pull").await?;
            let already = evidence::load(&destination_client, &destination).await?;
            for digest in records.by_digest.keys() {
                if already.promoted_at.contains_key(digest) {
                    continue;
                }
                let tag = self
                    .tag_of(&stage_client, located, &records, digest)
                    .await?;
                let mut candidate = base.clone();
                candidate.digest = Some(digest.to_string());
                outcomes.push(
                    self.evaluate_and_promote(
                        signal,
                        located,
                        &stage_client,
                        &records,
                        promotion,
                        digest,
                        tag,
                        candidate,
                    )
                    .await?,
                );
            }
        }
        if outcomes.is_empty() {
            base.reason = format!(
                "{} recorded for {}; no digest in {} is waiting",
                signal.kind, located.repository, located.stage
            );
            return Ok(base);
        }
        Ok(most_significant(outcomes))
    }

    /// The version tag a digest was named by in its signals.
    async fn tag_of(
        &self,
        client: &RegistryClient,
        located: &Located,
        records: &StageRecords,
        digest: &Digest,
    ) -> Result<Option<Tag>, PromoteError> {
        for recorded in records.for_digest(digest).iter().rev() {
            if let Some(record) =
                evidence::read_signal(client, &located.repository, &recorded.tag).await?
                && let Some(tag) = record.tag.as_deref().and_then(|t| Tag::try_from(t).ok())
            {
                return Ok(Some(tag));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    async fn evaluate_and_promote(
        &self,
        signal: &RawSignal,
        located: &Located,
        stage_client: &RegistryClient,
        records: &StageRecords,
        promotion: &Promotion,
        digest: &Digest,
        tag: Option<Tag>,
        mut base: Outcome,
    ) -> Result<Outcome, PromoteError> {
        base.to_stage = Some(promotion.to().to_string());
        let evidence = records.evidence_for(digest);
        match rules::evaluate(promotion, &evidence, Utc::now()) {
            Gate::Open { satisfied_by } => {
                let evidence = (records, satisfied_by.as_slice());
                self.promote(
                    signal,
                    located,
                    stage_client,
                    promotion,
                    digest,
                    tag,
                    evidence,
                    base,
                )
                .await
            }
            Gate::Pending {
                missing,
                not_before,
                entry_time_unknown,
            } => {
                base.decision = Decision::Pending;
                base.missing = missing.iter().map(|k| k.to_string()).collect();
                base.not_before = not_before;
                base.reason =
                    pending_reason(promotion, &base.missing, not_before, entry_time_unknown);
                Ok(base)
            }
            Gate::Blocked { by } => {
                let reason = format!(
                    "promotion {} -> {} of {digest} is blocked by {} (recorded {})",
                    promotion.from(),
                    promotion.to(),
                    by.kind,
                    by.time.to_rfc3339()
                );
                if by.kind == SignalKind::TestFailed {
                    // A failed test blocks the digest for good.
                    return Err(PromoteError::rejected(reason, base));
                }
                base.decision = Decision::Pending;
                base.reason = reason;
                Ok(base)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn promote(
        &self,
        signal: &RawSignal,
        located: &Located,
        stage_client: &RegistryClient,
        promotion: &Promotion,
        digest: &Digest,
        tag: Option<Tag>,
        (records, satisfied_by): (&StageRecords, &[rules::Record]),
        mut base: Outcome,
    ) -> Result<Outcome, PromoteError> {
        let Some(to_stage) = self.pipeline.stage(promotion.to().as_str()) else {
            return Err(PromoteError::rejected(
                format!("stage {} is not configured", promotion.to()),
                base,
            ));
        };
        let destination_repository = to_stage
            .repository(&located.image_name)
            .map_err(|e| PromoteError::rejected(e.to_string(), base.clone()))?;
        let source = ImageRef {
            repository: located.repository.clone(),
            tag: tag.clone(),
            digest: Some(digest.clone()),
        };
        let destination = ImageRef {
            repository: destination_repository.clone(),
            tag,
            digest: None,
        };

        let lock = {
            let mut in_flight = self.in_flight.lock().await;
            // Forget the locks nobody holds: the map stays as small as what is in flight.
            in_flight.retain(|_, lock| Arc::strong_count(lock) > 1);
            in_flight
                .entry(format!("{destination_repository}@{digest}"))
                .or_default()
                .clone()
        };
        let _guard = lock.lock().await;

        let job = CopyJob {
            // By digest alone: the tag was checked against it when the signal was read.
            source: ImageRef {
                tag: None,
                ..source.clone()
            },
            destination: destination.clone(),
            source_identity: self.identity.clone(),
            destination_identity: self.identity.clone(),
            options: CopyOptions::default(),
        };
        let destination_client = self
            .transport
            .job_client(
                &self.identity,
                &destination_repository,
                "pull,push",
                Some(&located.repository),
            )
            .await?;
        // The promotion record's config blob goes up beside the copy.
        let (copied, target) = tokio::join!(
            copy(&self.transport, &job, Arc::new(Progress::default())),
            evidence::prepare_promotion_target(
                &destination_client,
                &destination_repository,
                Some(&located.repository)
            )
        );
        let report = copied.map_err(|e| {
            if e.is_transient() {
                PromoteError::Registry(e)
            } else {
                PromoteError::rejected(e.to_string(), base.clone())
            }
        })?;
        let target = target?;

        // A gate's record names the tag of its evidence record (`StageRecords::evidence_for`); the
        // evidence record holds the event's own id (known already for the one just written).
        let event_ids =
            futures::future::try_join_all(satisfied_by.iter().map(|record| async move {
                if let Some(id) = records.known_event_id(&record.event_id) {
                    return Ok::<_, EvidenceError>(id.to_owned());
                }
                let full =
                    evidence::read_signal(stage_client, &located.repository, &record.event_id)
                        .await?;
                Ok(full
                    .map(|f| f.event_id)
                    .unwrap_or_else(|| record.event_id.clone()))
            }))
            .await?;
        let evidence_items: Vec<EvidenceRecord> = satisfied_by
            .iter()
            .zip(event_ids)
            .map(|(record, id)| EvidenceRecord {
                kind: record.kind.to_string(),
                id,
                time: record.time,
            })
            .collect();
        let trigger = trigger_of(signal);
        // A fresh copy cannot have a record yet; only an image already there may.
        let already_recorded = report.already_present
            && evidence::load(&destination_client, &destination_repository)
                .await?
                .promoted_at
                .contains_key(digest);
        let record = PromotionRecord {
            image: destination.to_string(),
            digest: digest.to_string(),
            source_image: source.to_string(),
            from_stage: promotion.from().to_string(),
            to_stage: promotion.to().to_string(),
            trigger: trigger.clone(),
            evidence: evidence_items.clone(),
            identity: self.identity_name().await,
            time: Utc::now(),
        };
        let write_record = async {
            if already_recorded {
                return Ok(());
            }
            // The copy's top manifest is the subject: the same bytes in both stages.
            let subject = Descriptor {
                media_type: report.media_type.clone(),
                digest: digest.to_string(),
                size: report.manifest_size,
                artifact_type: None,
                annotations: None,
                platform: None,
                urls: None,
            };
            target
                .record(digest, &subject, &record)
                .await
                .map_err(PromoteError::from)
        };
        let announcement = publish::Promoted {
            image: destination.to_string(),
            digest: digest.to_string(),
            source_image: source.to_string(),
            from_stage: promotion.from().to_string(),
            to_stage: promotion.to().to_string(),
            trigger,
            evidence: evidence_items,
            copy: report.clone(),
            destination_repository: destination_repository.to_string(),
        };
        // The record and the announcement are independent; if either fails, the redelivery
        // finds the image in place and does what is missing.
        let (recorded, announced) = tokio::join!(
            write_record,
            self.announce(|source, now| announcement.to_event(source, now))
        );
        recorded?;
        announced?;
        base.decision = if report.already_present && already_recorded {
            Decision::AlreadyPromoted
        } else {
            Decision::Promoted
        };
        base.reason = match base.decision {
            Decision::AlreadyPromoted => format!("{destination} already holds {digest}"),
            _ => format!("promoted {source} to {destination}"),
        };
        base.image = Some(destination.to_string());
        base.copy = Some(report);
        Ok(base)
    }
}

/// How a signal is recorded: a digest signal with the digest and the tag it was named by; an
/// alert signal about the image in the stage.
fn signal_record(signal: &RawSignal, located: &Located, digest: Option<&Digest>) -> SignalRecord {
    SignalRecord {
        kind: signal.kind.as_str().into(),
        event_id: signal.event_id.clone(),
        event_source: signal.event_source.clone(),
        event_type: signal.event_type.clone(),
        time: signal.time.unwrap_or_else(Utc::now),
        repository: located.repository.to_string(),
        stage: located.stage.to_string(),
        digest: digest.map(|d| d.to_string()),
        tag: digest.and(located.tag.as_ref()).map(|t| t.to_string()),
    }
}

fn trigger_of(signal: &RawSignal) -> TriggerRecord {
    TriggerRecord {
        event_type: signal.event_type.clone(),
        id: signal.event_id.clone(),
        source: signal.event_source.clone(),
    }
}

fn pending_reason(
    promotion: &Promotion,
    missing: &[String],
    not_before: Option<DateTime<Utc>>,
    entry_time_unknown: bool,
) -> String {
    let mut parts = Vec::new();
    if entry_time_unknown {
        parts.push(format!(
            "no record of when the digest entered {}, so its minimum time there cannot be checked",
            promotion.from()
        ));
    }
    if !missing.is_empty() {
        parts.push(format!("waiting for {}", missing.join(", ")));
    }
    if let Some(time) = not_before {
        parts.push(format!(
            "minimum time in {} ends at {}",
            promotion.from(),
            time.to_rfc3339()
        ));
    }
    format!(
        "promotion {} -> {} pending: {}",
        promotion.from(),
        promotion.to(),
        parts.join("; ")
    )
}

/// Finds what the event names in its stage: the digest (checked against the tag when both are
/// given) and a descriptor of it.
async fn resolve_in_stage(
    client: &RegistryClient,
    located: &Located,
    digest: Option<&Digest>,
    event_id: &str,
    base: &Outcome,
) -> Result<(Digest, Descriptor), PromoteError> {
    let repository = &located.repository;
    let by_tag = match &located.tag {
        Some(tag) => Some(
            client
                .head_descriptor(repository, tag.as_str())
                .await?
                .ok_or_else(|| {
                    PromoteError::rejected(
                        format!(
                            "event {event_id}: {repository}:{tag} is not in stage {}",
                            located.stage
                        ),
                        base.clone(),
                    )
                })?,
        ),
        None => None,
    };
    match (digest, by_tag) {
        (Some(digest), Some((tagged, descriptor))) => {
            if &tagged != digest {
                return Err(PromoteError::rejected(
                    format!(
                        "event {event_id}: {repository}:{} is {tagged}, not {digest}",
                        located.tag.as_ref().map(Tag::as_str).unwrap_or_default()
                    ),
                    base.clone(),
                ));
            }
            Ok((tagged, descriptor))
        }
        (None, Some(found)) => Ok(found),
        (Some(digest), None) => client
            .head_descriptor(repository, digest.as_str())
            .await?
            .ok_or_else(|| {
                PromoteError::rejected(
                    format!(
                        "event {event_id}: {repository}@{digest} is not in stage {}",
                        located.stage
                    ),
                    base.clone(),
                )
            }),
        (None, None) => Err(PromoteError::rejected(
            format!("event {event_id}: no tag or digest"),
            base.clone(),
        )),
    }
}

/// The default service account's email, when a metadata server answers quickly (Cloud Run, GCE,
/// or `GCE_METADATA_HOST` in tests).
async fn metadata_service_account() -> Option<String> {
    let host = crate::config::var(crate::config::GCE_METADATA_HOST).or_else(|| {
        crate::config::var(crate::config::K_SERVICE).map(|_| "metadata.google.internal".to_owned())
    })?;
    let url = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/email");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .ok()?;
    let response = client
        .get(url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response
        .text()
        .await
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}
