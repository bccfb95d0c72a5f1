//! Carrying out a plan with the job's clients: copy each digest that moves (with its referrers),
//! record the promotion in the destination, announce it — and for every candidate say what
//! became of it.
//!
//! Order matters for what a crash or a retry leaves behind. A digest is claimed in the
//! destination's promoted index beside its copy, so a concurrent older candidate sees it; the
//! promotion record and the `promoted` event follow the copy; the waiting index forgets a digest
//! only once its announcement is out. A failure after the copy is never a refusal: the delivery
//! is answered 503 and its redelivery finds the copy in place (docs/routes.md "Answers").

use std::sync::Arc;

use chrono::Utc;

use crate::events::SignalKind;
use crate::evidence::{
    ArrivalRecord, ArrivalsIndex, CopySummary, DigestRecords, PromotedIndex, PromotionRecord,
    SignalRecord, Toggle, ToggleLog, WaitingEntry, WaitingIndex,
};
use crate::publish::{self, EvidenceRecord, TriggerRecord};
use crate::registry::copy::Progress;
use crate::registry::manifest::Descriptor;
use crate::registry::{Copier, CopyOptions, CopyReport, ImageRef, RegistryError};
use crate::rules::{self, Candidate, Destination, Gate, Select, Skip, Verdict};

use super::job::Job;
use super::outcome::{CandidateOutcome, Fate, PromoteError};
use super::plan::{Found, Plan, PromotionPlan, pending_reason};
use super::service::Service;

/// What executing a plan came to.
pub struct Executed {
    pub outcomes: Vec<CandidateOutcome>,
    /// Candidates whose every fate in the plan is final.
    pub finished: Vec<usize>,
}

impl Executed {
    /// Whether a freeze holds one of the candidates.
    pub fn held_by_freeze(&self) -> bool {
        self.outcomes.iter().any(|o| {
            matches!(
                &o.fate,
                Fate::Pending {
                    frozen: Some(_),
                    ..
                }
            )
        })
    }
}

impl Service {
    /// Executes `plan`: each promotion's candidates, in the order its `select` says.
    ///
    /// `opened_by` is the digest signal being handled (`None` for an alert clearing or a
    /// reconcile): a digest already promoted is announced again only when that signal could
    /// have opened its gate, so a redelivery after a lost announcement announces, and a failed
    /// test arriving after the promotion does not.
    pub(super) async fn execute(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        trigger: &TriggerRecord,
        opened_by: Option<SignalKind>,
    ) -> Result<Executed, PromoteError> {
        let mut outcomes = Vec::new();
        let mut finished = vec![true; plan.found.len()];
        for promotion_plan in &plan.promotions {
            let announce_again = opened_by
                .as_ref()
                .is_none_or(|kind| promotion_plan.promotion.require().contains(kind));
            let fates = self
                .execute_promotion(job, plan, promotion_plan, trigger, announce_again)
                .await?;
            for (i, fate) in fates.into_iter().enumerate() {
                finished[i] &= fate.is_final();
                let found = &plan.found[i];
                outcomes.push(CandidateOutcome {
                    digest: found.digest.to_string(),
                    tag: found.tag.as_ref().map(|t| t.to_string()),
                    from_stage: plan.place.stage.to_string(),
                    to_stage: promotion_plan.promotion.to().to_string(),
                    fate,
                });
            }
        }
        Ok(Executed {
            outcomes,
            finished: finished
                .iter()
                .enumerate()
                .filter(|(_, done)| **done)
                .map(|(i, _)| i)
                .collect(),
        })
    }

    async fn execute_promotion(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        promotion_plan: &PromotionPlan<'_>,
        trigger: &TriggerRecord,
        announce_again: bool,
    ) -> Result<Vec<Fate>, PromoteError> {
        let promotion = promotion_plan.promotion;
        let mut fates: Vec<Option<Fate>> = promotion_plan
            .verdicts
            .iter()
            .zip(&plan.found)
            .map(|(verdict, found)| match verdict {
                Verdict::Move | Verdict::AlreadyPromoted => None,
                Verdict::Pending(gate) => {
                    let (missing, not_before, reason) = pending_reason(promotion, gate);
                    let frozen = match gate {
                        Gate::Pending(waiting) => waiting.frozen.clone(),
                        _ => None,
                    };
                    Some(Fate::Pending {
                        missing,
                        not_before,
                        frozen,
                        reason,
                    })
                }
                Verdict::Superseded { by } => Some(Fate::Superseded {
                    by: by.to_string(),
                    reason: format!(
                        "{} holds {by}, which entered {} after {}: an older version never follows a newer one",
                        promotion_plan.destination,
                        promotion.from(),
                        found.digest
                    ),
                }),
                Verdict::Skipped(skip) => Some(Fate::Skipped {
                    reason: skip_reason(plan, promotion_plan, found, skip),
                }),
            })
            .collect();

        for (i, verdict) in promotion_plan.verdicts.iter().enumerate() {
            if *verdict == Verdict::AlreadyPromoted {
                fates[i] = Some(if announce_again {
                    let gate = &promotion_plan.candidates[i].gate;
                    self.announce_again(job, plan, promotion_plan, &plan.found[i], gate)
                        .await?
                } else {
                    Fate::AlreadyPromoted {
                        image: format!(
                            "{}:{}",
                            promotion_plan.destination,
                            plan.found[i]
                                .tag
                                .as_ref()
                                .map(|t| t.as_str())
                                .unwrap_or_default()
                        ),
                        copy: None,
                    }
                });
            }
        }
        let order = rules::move_order(
            promotion,
            &promotion_plan.candidates,
            &promotion_plan.verdicts,
        );
        let mut winner: Option<String> = None;
        for i in order {
            if let Some(by) = &winner {
                fates[i] = Some(Fate::Superseded {
                    by: by.clone(),
                    reason: format!(
                        "{by} entered {} after {} and was promoted to {} instead (select: newest)",
                        promotion.from(),
                        plan.found[i].digest,
                        promotion.to()
                    ),
                });
                continue;
            }
            let candidate = &promotion_plan.candidates[i];
            let fate = self
                .promote_one(
                    job,
                    plan,
                    promotion_plan,
                    &plan.found[i],
                    candidate,
                    trigger,
                )
                .await?;
            if matches!(fate, Fate::Promoted { .. }) && promotion.select() == Select::Newest {
                winner = Some(plan.found[i].digest.to_string());
            }
            fates[i] = Some(fate);
        }
        Ok(fates
            .into_iter()
            .map(|fate| {
                fate.unwrap_or_else(|| Fate::Skipped {
                    reason: "not decided".into(),
                })
            })
            .collect())
    }

    /// Copies one digest whose gate is open, records the promotion and announces it.
    async fn promote_one(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        promotion_plan: &PromotionPlan<'_>,
        found: &Found,
        candidate: &Candidate,
        trigger: &TriggerRecord,
    ) -> Result<Fate, PromoteError> {
        let promotion = promotion_plan.promotion;
        let gate = &candidate.gate;
        let (Some(tag), Some(subject)) = (&found.tag, &found.subject) else {
            return Ok(Fate::Skipped {
                reason: "no version tag or manifest for the digest".into(),
            });
        };
        let place = &plan.place;
        let destination_repository = &promotion_plan.destination;
        let (source, destination) = references(plan, promotion_plan, found, tag);
        let mut copier = copier(job, plan, promotion_plan)?;
        // The plan has just looked: what it saw is what the copy starts from.
        copier.options.destination_tag_seen_absent = candidate.destination == Destination::Absent;
        let destination_client = copier.destination;
        let index_repository = self.state.promoted(promotion.to(), &place.image_name)?;
        let index = PromotedIndex {
            client: job.client(&index_repository)?,
            repository: &index_repository,
        };
        let destination_records = DigestRecords {
            client: destination_client,
            repository: destination_repository,
        };
        let arrived_at = found
            .arrival
            .as_ref()
            .map(|a| a.time)
            .unwrap_or_else(|| self.now());

        let arrivals_repository = self.state.arrivals(promotion.to(), &place.image_name)?;
        let arrivals = ArrivalsIndex {
            client: job.client(&arrivals_repository)?,
            repository: &arrivals_repository,
        };
        let prepared = async {
            futures::future::try_join(
                destination_records.prepare(Some(&place.repository)),
                arrivals.prepare(),
            )
            .await
        };
        // Claimed beside the copy: a concurrent decision for an older digest of this image sees
        // the claim and stands down.
        let (copied, claimed, prepared) = tokio::join!(
            copier.copy(&source, &destination),
            index.claim(&found.digest, arrived_at),
            prepared,
        );
        let report = match copied {
            Ok(report) => report,
            Err(error) if error.is_transient() => return Err(error.into()),
            Err(error) => {
                return Ok(Fate::Skipped {
                    reason: format!("copying to {destination} failed: {error}"),
                });
            }
        };
        claimed?;
        prepared?;

        // Another instance may have promoted a newer digest of this image while this one was
        // copying: then this one is not announced, so the stage never steps back in time.
        let satisfied_by = match gate {
            Gate::Open { satisfied_by } => satisfied_by.clone(),
            _ => Vec::new(),
        };
        let (claims, evidence) = futures::future::try_join(
            async { index.list().await.map_err(PromoteError::from) },
            self.evidence_records(job, plan, &satisfied_by),
        )
        .await?;
        if let Some((_, newest)) = claims.last()
            && newest != &found.digest
            && destination_client
                .head_manifest(destination_repository, newest.as_str())
                .await?
                .is_some()
        {
            return Ok(Fate::Superseded {
                by: newest.to_string(),
                reason: format!(
                    "{newest} was promoted to {} at the same moment and entered {} later: {} was copied but not announced",
                    promotion.to(),
                    promotion.from(),
                    found.digest
                ),
            });
        }

        let now = self.now();
        let subject = Descriptor {
            size: report.manifest_size.max(subject.size),
            ..copied_subject(&report)
        };
        // Attested before it is recorded and announced: a promotion that is announced is
        // attested.
        let attestation = self
            .attest(
                job,
                plan,
                promotion_plan,
                found,
                &subject,
                &satisfied_by,
                &destination,
            )
            .await?;
        let record = PromotionRecord {
            image: destination.to_string(),
            digest: found.digest.to_string(),
            source_image: ImageRef {
                tag: Some(tag.clone()),
                ..source.clone()
            }
            .to_string(),
            from_stage: promotion.from().to_string(),
            to_stage: promotion.to().to_string(),
            trigger: trigger.clone(),
            evidence,
            identity: self.identity_name().await,
            time: now,
            copy: Some(CopySummary::from(&report)),
            attestation,
        };
        let arrival = ArrivalRecord::of_promotion(&record, tag.as_str());
        // The records, the arrival's index entries and (when an alert or time can open a gate
        // out of the destination) the digest's place in the waiting index go up together. When
        // one fails after the promotion record is in, the redelivery finds the record and
        // `announce_again` writes the others again.
        let recorded = futures::future::try_join3(
            async {
                Ok::<_, PromoteError>(
                    destination_records
                        .record_promotion(&found.digest, &subject, &record)
                        .await?,
                )
            },
            self.index_arrival(job, promotion.to(), &place.image_name, &arrival),
            self.wait_in_destination(job, plan, promotion_plan, found),
        );
        let (recorded, announced) = tokio::join!(
            recorded,
            self.announce_promotion(&record, &report, destination_repository)
        );
        recorded?;
        announced?;
        // One line per promotion, whichever event decided it (a signal, a reconcile, an
        // unfreeze): what the promotions metric counts and the copy's figures.
        tracing::info!(
            image = %destination,
            digest = %found.digest,
            from_stage = %promotion.from(),
            to_stage = %promotion.to(),
            event_id = trigger.id,
            event_type = trigger.event_type,
            copy_ms = report.duration_ms,
            blobs_copied = report.blobs_copied,
            blobs_mounted = report.blobs_mounted,
            bytes_copied = report.bytes_copied,
            referrers_copied = report.referrers_copied,
            "promotion"
        );
        index.compact(&claims).await;
        Ok(Fate::Promoted {
            image: destination.to_string(),
            copy: report,
        })
    }

    /// Puts a digest just promoted in the waiting index of its destination, when a gate out of
    /// the destination can open by an alert or by time (which no signal about the digest
    /// brings).
    async fn wait_in_destination(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        promotion_plan: &PromotionPlan<'_>,
        found: &Found,
    ) -> Result<(), PromoteError> {
        let stage = promotion_plan.promotion.to();
        if !self.waits_in(stage) {
            return Ok(());
        }
        let waiting_repository = self.state.waiting()?;
        WaitingIndex {
            client: job.client(&waiting_repository)?,
            repository: &waiting_repository,
        }
        .add(&WaitingEntry {
            stage: stage.to_string(),
            image: plan.place.image_name.clone(),
            digest: found.digest.to_string(),
        })
        .await?;
        Ok(())
    }

    /// A digest the destination already holds with its promotion record: completes the copy
    /// (referrers added since), makes sure its attestation is there (a race may have lost it,
    /// or attestations were turned on since), and announces it again under the same id, in
    /// case the first announcement did not go out.
    async fn announce_again(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        promotion_plan: &PromotionPlan<'_>,
        found: &Found,
        gate: &Gate,
    ) -> Result<Fate, PromoteError> {
        let Some(tag) = &found.tag else {
            return Ok(Fate::Skipped {
                reason: "no version tag for the digest".into(),
            });
        };
        let destination_repository = &promotion_plan.destination;
        let (source, destination) = references(plan, promotion_plan, found, tag);
        let copier = copier(job, plan, promotion_plan)?;
        let destination_client = copier.destination;
        let (report, record) = futures::future::try_join(
            async {
                copier
                    .copy(&source, &destination)
                    .await
                    .map_err(PromoteError::from)
            },
            async {
                DigestRecords {
                    client: destination_client,
                    repository: destination_repository,
                }
                .promotion(&found.digest)
                .await
                .map_err(PromoteError::from)
            },
        )
        .await?;
        if let Some(mut record) = record {
            let subject = copied_subject(&report);
            // The records the gate is open on now, else those the promotion recorded.
            let satisfied_by: Vec<rules::Record> = match gate {
                Gate::Open { satisfied_by } => satisfied_by.clone(),
                _ => record
                    .evidence
                    .iter()
                    .filter_map(|e| {
                        found
                            .signals
                            .iter()
                            .find(|(kind, r)| kind.as_str() == e.kind && r.event_id == e.id)
                            .map(|(kind, r)| rules::Record {
                                kind: kind.clone(),
                                event_id: r.event_id.clone(),
                                time: r.time,
                            })
                    })
                    .collect(),
            };
            if let Some(attestation) = self
                .attest(
                    job,
                    plan,
                    promotion_plan,
                    found,
                    &subject,
                    &satisfied_by,
                    &destination,
                )
                .await?
            {
                record.attestation = Some(attestation);
            }
            // In case the first delivery failed between its promotion record and these.
            let arrival = ArrivalRecord::of_promotion(&record, tag.as_str());
            futures::future::try_join3(
                self.announce_promotion(&record, &report, destination_repository),
                self.index_arrival(
                    job,
                    promotion_plan.promotion.to(),
                    &plan.place.image_name,
                    &arrival,
                ),
                self.wait_in_destination(job, plan, promotion_plan, found),
            )
            .await?;
        }
        Ok(Fate::AlreadyPromoted {
            image: destination.to_string(),
            copy: Some(report),
        })
    }

    /// Makes sure the promotion of `found` into the destination is attested, when the service
    /// has a key: `None` without one.
    #[allow(clippy::too_many_arguments)]
    async fn attest(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        promotion_plan: &PromotionPlan<'_>,
        found: &Found,
        subject: &Descriptor,
        satisfied_by: &[rules::Record],
        destination: &ImageRef,
    ) -> Result<Option<crate::attest::Attestation>, PromoteError> {
        let Some(attester) = &self.attester else {
            return Ok(None);
        };
        let failed = |source| PromoteError::Attest {
            image: destination.to_string(),
            source: Box::new(source),
        };
        let inputs = self
            .input_attestations(job, plan, found, satisfied_by)
            .await?;
        let attested = attester
            .ensure(
                job.client(&promotion_plan.destination)?,
                &crate::attest::Subject {
                    repository: &promotion_plan.destination,
                    digest: &found.digest,
                    descriptor: subject,
                    stage: promotion_plan.promotion.to().as_str(),
                },
                inputs,
                self.now(),
            )
            .await
            .map_err(failed)?;
        Ok(Some(attested))
    }

    /// The signal records a promotion was decided on, by the digest of their record manifests
    /// in the registry: a digest signal's record next to the image in the from-stage (its
    /// manifest is deterministic, so its digest is computed, even while its write is landing),
    /// an alert's in promoter's alert log.
    async fn input_attestations(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        found: &Found,
        satisfied_by: &[rules::Record],
    ) -> Result<Vec<crate::attest::ResourceDescriptor>, PromoteError> {
        use crate::attest::ResourceDescriptor;
        let alerts_repository = self
            .state
            .alerts(&plan.place.stage, &plan.place.image_name)?;
        let mut inputs = Vec::new();
        for record in satisfied_by {
            let name = Some(format!("{} {}", record.kind, record.event_id));
            let is_alert_tag = plan.alerts.iter().any(|a| a.tag == record.event_id);
            let located = if is_alert_tag {
                job.client(&alerts_repository)?
                    .head_manifest(&alerts_repository, &record.event_id)
                    .await?
                    .map(|digest| (alerts_repository.clone(), digest))
            } else {
                let signal = found
                    .signals
                    .iter()
                    .map(|(_, r)| r)
                    .chain(found.approvals.iter().filter_map(|(_, r)| r.as_ref()))
                    .find(|r| r.kind == record.kind.as_str() && r.event_id == record.event_id);
                match (signal, &found.subject) {
                    (Some(signal), Some(stage_subject)) => Some((
                        plan.place.repository.clone(),
                        crate::evidence::digest::signal_record_digest(
                            &plan.place.repository,
                            stage_subject,
                            signal,
                        )?,
                    )),
                    _ => None,
                }
            };
            if let Some((repository, digest)) = located {
                inputs.push(ResourceDescriptor {
                    name,
                    uri: Some(format!("{repository}@{digest}")),
                    digest: ResourceDescriptor::sha256(&digest),
                });
            }
        }
        Ok(inputs)
    }

    /// The evidence of a promotion: each record that satisfied the gate, with its event's id
    /// (an alert record is read for it; a digest signal's is known).
    async fn evidence_records(
        &self,
        job: &Job,
        plan: &Plan<'_>,
        satisfied_by: &[rules::Record],
    ) -> Result<Vec<EvidenceRecord>, PromoteError> {
        let alerts_repository = self
            .state
            .alerts(&plan.place.stage, &plan.place.image_name)?;
        futures::future::try_join_all(satisfied_by.iter().map(|record| {
            let alerts_repository = &alerts_repository;
            async move {
                let is_alert_tag = plan.alerts.iter().any(|a| a.tag == record.event_id);
                let id = if is_alert_tag {
                    ToggleLog {
                        client: job.client(alerts_repository)?,
                        repository: alerts_repository,
                        toggle: Toggle::Alert,
                    }
                    .read::<SignalRecord>(&record.event_id)
                    .await?
                    .map(|r| r.event_id)
                    .unwrap_or_else(|| record.event_id.clone())
                } else {
                    record.event_id.clone()
                };
                Ok::<_, PromoteError>(EvidenceRecord {
                    kind: record.kind.to_string(),
                    id,
                    time: record.time,
                })
            }
        }))
        .await
    }

    /// Publishes `promoted` for a recorded promotion. Its id depends only on the destination
    /// and the digest, so every announcement of one promotion carries one id.
    async fn announce_promotion(
        &self,
        record: &PromotionRecord,
        report: &CopyReport,
        destination_repository: &crate::registry::Repository,
    ) -> Result<(), PromoteError> {
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let announcement = publish::Promoted {
            image: record.image.clone(),
            digest: record.digest.clone(),
            source_image: record.source_image.clone(),
            from_stage: record.from_stage.clone(),
            to_stage: record.to_stage.clone(),
            trigger: record.trigger.clone(),
            evidence: record.evidence.clone(),
            copy: report.clone(),
            attestation: record.attestation.clone(),
            destination_repository: destination_repository.to_string(),
        };
        let failed = |source| PromoteError::Announce {
            image: record.image.clone(),
            topic: publisher.topic().to_owned(),
            source,
        };
        let event = announcement
            .to_event(&self.event_source, Utc::now())
            .map_err(failed)?;
        publisher
            .publish_event(&event)
            .await
            .map(|_| ())
            .map_err(failed)
    }
}

/// The copy's top manifest, the subject of what is recorded about the promotion: the same bytes
/// in both stages.
fn copied_subject(report: &CopyReport) -> Descriptor {
    Descriptor {
        media_type: report.media_type.clone(),
        digest: report.digest.to_string(),
        size: report.manifest_size,
        artifact_type: None,
        annotations: None,
        platform: None,
        urls: None,
    }
}

/// The copy's source (by digest: its tag was checked when the digest was found) and destination
/// (the same tag).
fn references(
    plan: &Plan<'_>,
    promotion_plan: &PromotionPlan<'_>,
    found: &Found,
    tag: &crate::registry::Tag,
) -> (ImageRef, ImageRef) {
    (
        ImageRef {
            repository: plan.place.repository.clone(),
            tag: None,
            digest: Some(found.digest.clone()),
        },
        ImageRef {
            repository: promotion_plan.destination.clone(),
            tag: Some(tag.clone()),
            digest: None,
        },
    )
}

/// A copier between the plan's stage and the promotion's destination, with the job's clients.
fn copier<'a>(
    job: &'a Job,
    plan: &Plan<'_>,
    promotion_plan: &PromotionPlan<'_>,
) -> Result<Copier<'a>, PromoteError> {
    Ok(Copier {
        source: job.client(&plan.place.repository)?,
        destination: job.client(&promotion_plan.destination)?,
        options: CopyOptions::default(),
        progress: Arc::new(Progress::default()),
    })
}

fn skip_reason(
    plan: &Plan<'_>,
    promotion_plan: &PromotionPlan<'_>,
    found: &Found,
    skip: &Skip,
) -> String {
    let promotion = promotion_plan.promotion;
    match skip {
        Skip::Gone => format!(
            "{}@{} is no longer in stage {} (deleted)",
            plan.place.repository, found.digest, plan.place.stage
        ),
        Skip::NoTag => format!(
            "no signal named {} by a tag, so there is no version to promote it under; send one naming {}:TAG",
            found.digest, plan.place.repository
        ),
        Skip::Blocked(by) => format!(
            "promotion {} -> {} of {} is blocked for good by {} (recorded {})",
            promotion.from(),
            promotion.to(),
            found.digest,
            by.kind,
            by.time.to_rfc3339()
        ),
        Skip::TagConflict { existing } => RegistryError::TagConflict {
            image: format!(
                "{}:{}",
                promotion_plan.destination,
                found.tag.as_ref().map(|t| t.as_str()).unwrap_or_default()
            ),
            existing: existing.clone(),
            wanted: found.digest.clone(),
        }
        .to_string(),
    }
}
