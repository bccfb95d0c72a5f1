//! Signals about a digest (`test-passed`, `soak-complete`, `test-failed`, declared ones,
//! `approved`) and about an image in a stage (`alert-firing`, `alert-clear`): each is recorded,
//! then decided from what the registry holds (docs/rules.md, "Many versions in one stage").

use chrono::{DateTime, Utc};

use super::outcome::{Answer, Decision, PromoteError};
use super::plan::{Known, Place};
use super::service::{Service, trigger_of};
use crate::events::{RawSignal, SignalKind};
use crate::evidence::{
    self, DigestRecords, SignalRecord, Toggle, ToggleLog, WaitingEntry, WaitingIndex,
};
use crate::registry::manifest::Descriptor;
use crate::registry::{Digest, RegistryClient, Tag};
use crate::rules::{Located, Promotion, StageName};

impl Service {
    /// test-passed, test-failed, soak-complete: about one digest in one stage.
    pub(super) async fn handle_digest_signal(
        &self,
        signal: &RawSignal,
        located: &Located,
    ) -> Result<Answer, PromoteError> {
        let mut base = Answer::new(Decision::Recorded, "");
        base.from_stage = Some(located.stage.to_string());
        let given = match &signal.digest {
            Some(text) => match Digest::try_from(text.as_str()) {
                Ok(digest) => Some(digest),
                Err(e) => return Ok(Answer::rejected(format!("event {}: {e}", signal.event_id))),
            },
            None => None,
        };
        let named_digest = match (&located.digest, &given) {
            (Some(a), Some(b)) if a != b => {
                return Ok(Answer::rejected(format!(
                    "event {}: image {} and data.digest {b} disagree",
                    signal.event_id, signal.image
                )));
            }
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        if located.tag.is_none() && named_digest.is_none() {
            return Ok(Answer::rejected(format!(
                "event {}: image {} names no tag or digest",
                signal.event_id, signal.image
            )));
        }
        let place = place_of(located);
        let promotions = self
            .pipeline
            .triggered_by(located.stage.as_str(), &signal.kind);
        let job = self.job(&place, &promotions).await?;
        let _locks = self.lock(&place, &promotions).await?;
        let stage_client = job.client(&place.repository)?;
        let (digest, subject) =
            match resolve_in_stage(stage_client, located, named_digest.as_ref()).await? {
                Ok(found) => found,
                Err(refusal) => {
                    return Ok(Answer::rejected(format!(
                        "event {}: {refusal}",
                        signal.event_id
                    )));
                }
            };
        base.digest = Some(digest.to_string());
        let records = DigestRecords {
            client: stage_client,
            repository: &place.repository,
        };
        let record = signal_record(signal, located, &digest, self.now());
        let known_arrival = records
            .arrival(
                &digest,
                self.pipeline.is_promoted_into(place.stage.as_str()),
            )
            .await?;
        let first_arrival = known_arrival
            .is_none()
            .then(|| evidence::digest::first_signal_arrival(&digest, &record, self.now()));
        let waiting_repository = self.state.waiting()?;
        let waiting = WaitingIndex {
            client: job.client(&waiting_repository)?,
            repository: &waiting_repository,
        };
        let entry = WaitingEntry {
            stage: place.stage.to_string(),
            image: place.image_name.clone(),
            digest: digest.to_string(),
        };
        let indexed = promotions
            .iter()
            .any(|p| self.pipeline.opens_without_digest_signal(p));
        // An approval counts where its approver is verified and named by the promotion's
        // approvers: there it is recorded under that promotion's approval tag too.
        let approves_for: Vec<StageName> = match (&signal.kind, &signal.caller) {
            (SignalKind::Approved, Some(approver)) => self
                .pipeline
                .promotions_from(place.stage.as_str())
                .filter(|p| p.approvers().iter().any(|a| a.matches(approver)))
                .map(|p| p.to().clone())
                .collect(),
            _ => Vec::new(),
        };
        let approval_tags: Vec<String> = approves_for
            .iter()
            .map(|to| evidence::digest::approval_tag(&digest, to.as_str()))
            .collect();
        // The signal's records, its arrival if it is the digest's first, and (when an alert or
        // time can open its gate) its place in the waiting index: all written before a decision
        // is taken from what the registry holds, so of two signals arriving together the later
        // reader sees both.
        let writes = async {
            let signal_written = async {
                records
                    .record_signal(&digest, &subject, &signal.kind, &record, &approval_tags)
                    .await
                    .map_err(PromoteError::from)
            };
            let arrival_written = async {
                let Some(arrival) = &first_arrival else {
                    return Ok(());
                };
                let recorded = async {
                    records
                        .record_arrival(&digest, &subject, arrival)
                        .await
                        .map_err(PromoteError::from)
                };
                futures::future::try_join(
                    recorded,
                    self.index_arrival(&job, &place.stage, &place.image_name, arrival),
                )
                .await
                .map(|_| ())
            };
            let indexed_written = async {
                if indexed {
                    waiting.add(&entry).await.map_err(PromoteError::from)
                } else {
                    Ok(())
                }
            };
            futures::future::try_join3(signal_written, arrival_written, indexed_written)
                .await
                .map(|_| ())
        };
        if promotions.is_empty() {
            writes.await?;
            base.reason = format!(
                "{} recorded for {digest} in {}; no promotion out of {} uses it",
                signal.kind, located.stage, located.stage
            );
            return Ok(base);
        }
        let known = Known {
            digest: digest.clone(),
            tag: located.tag.clone(),
            present: Some(subject.clone()),
            arrival: known_arrival.or(first_arrival.clone()),
            own: Some((signal.kind.clone(), record.clone())),
            approves_for,
        };
        let trigger = trigger_of(signal);
        // A first decision is taken while the records are written: when it moves a digest, the
        // copy overlaps the writes (the gate is open whatever else lands meanwhile). When it
        // does not, the decision is taken again once the writes are in.
        let early = async {
            let plan = self
                .plan(&job, &place, &promotions, vec![known.clone()], self.now())
                .await?;
            if plan.acts() {
                Ok::<_, PromoteError>(Some(
                    self.execute(&job, &plan, &trigger, Some(signal.kind.clone()))
                        .await?,
                ))
            } else {
                Ok(None)
            }
        };
        let (written, early) = tokio::join!(writes, early);
        written?;
        let executed = match early? {
            Some(executed) => executed,
            None => {
                let plan = self
                    .plan(&job, &place, &promotions, vec![known], self.now())
                    .await?;
                self.execute(&job, &plan, &trigger, Some(signal.kind.clone()))
                    .await?
            }
        };
        if indexed && !executed.finished.is_empty() && self.plan_covers_waiting(&place, &promotions)
        {
            waiting.remove(std::slice::from_ref(&entry)).await;
        }
        if !indexed && executed.held_by_freeze() {
            // Held by a freeze: its end (an unfreeze, or the reconcile after a window) must find
            // the digest, so it waits in the index like a digest waiting for an alert.
            waiting.add(&entry).await?;
        }
        // A signal that only blocks (a failed test) is recorded; it is the promotions it blocks
        // that are refused, when a signal asks for them.
        let blocks_only = promotions
            .iter()
            .all(|p| p.block_on().contains(&signal.kind) && !p.require().contains(&signal.kind));
        let nothing = if blocks_only {
            Answer {
                reason: format!(
                    "{} recorded for {digest}: it blocks {}",
                    signal.kind,
                    routes(&promotions)
                ),
                ..Answer::new(Decision::Recorded, "")
            }
        } else {
            let reason = executed
                .outcomes
                .first()
                .map(|o| o.fate.reason())
                .unwrap_or_else(|| format!("{} recorded", signal.kind));
            Answer::rejected(reason)
        };
        Ok(base.decided(&executed.outcomes, nothing))
    }

    /// alert-firing, alert-clear: about the image in a stage, whatever its digest.
    pub(super) async fn handle_image_signal(
        &self,
        signal: &RawSignal,
        located: &Located,
    ) -> Result<Answer, PromoteError> {
        let place = place_of(located);
        let promotions = self
            .pipeline
            .triggered_by(located.stage.as_str(), &signal.kind);
        let job = self.job(&place, &promotions).await?;
        let _locks = self.lock(&place, &promotions).await?;
        let alerts_repository = self.state.alerts(&place.stage, &place.image_name)?;
        let log = ToggleLog {
            client: job.client(&alerts_repository)?,
            repository: &alerts_repository,
            toggle: Toggle::Alert,
        };
        let record = signal_record_base(signal, located, self.now());
        let firing = signal.kind == SignalKind::AlertFiring;
        log.record(
            firing,
            record.time,
            &record.event_source,
            &record.event_id,
            &record,
        )
        .await?;
        let mut base = Answer::new(
            Decision::Recorded,
            format!(
                "{} recorded for {} in {}",
                signal.kind, located.repository, located.stage
            ),
        );
        base.from_stage = Some(located.stage.to_string());
        if firing || promotions.is_empty() {
            log.compact(&log.list().await?).await;
            return Ok(base);
        }
        // The alert cleared: every digest of the image waiting in this stage may now move.
        let nothing = Answer::new(
            Decision::Recorded,
            format!(
                "{} recorded for {}; no digest in {} is waiting",
                signal.kind, located.repository, located.stage
            ),
        );
        let outcomes = self
            .decide_waiting(&job, &place, &promotions, &trigger_of(signal))
            .await?;
        log.compact(&log.list().await?).await;
        let nothing = if outcomes.is_empty() {
            nothing
        } else {
            Answer {
                reason: format!(
                    "{} recorded for {}; no waiting digest could move",
                    signal.kind, located.repository
                ),
                ..nothing
            }
        };
        Ok(base.decided(&outcomes, nothing))
    }
}

fn routes(promotions: &[&Promotion]) -> String {
    promotions
        .iter()
        .map(|p| format!("promotion {} -> {}", p.from(), p.to()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn place_of(located: &Located) -> Place {
    Place {
        stage: located.stage.clone(),
        image_name: located.image_name.clone(),
        repository: located.repository.clone(),
    }
}

/// How a signal is recorded, before its digest is known.
fn signal_record_base(signal: &RawSignal, located: &Located, now: DateTime<Utc>) -> SignalRecord {
    SignalRecord {
        kind: signal.kind.as_str().into(),
        event_id: signal.event_id.clone(),
        event_source: signal.event_source.clone(),
        event_type: signal.event_type.clone(),
        time: signal.time.unwrap_or(now),
        repository: located.repository.to_string(),
        stage: located.stage.to_string(),
        digest: None,
        tag: None,
        approver: (signal.kind == SignalKind::Approved)
            .then(|| signal.caller.clone())
            .flatten(),
    }
}

/// How a digest signal is recorded: with the digest and the tag it was named by.
fn signal_record(
    signal: &RawSignal,
    located: &Located,
    digest: &Digest,
    now: DateTime<Utc>,
) -> SignalRecord {
    SignalRecord {
        digest: Some(digest.to_string()),
        tag: located.tag.as_ref().map(|t| t.to_string()),
        ..signal_record_base(signal, located, now)
    }
}

/// Finds what the event names in its stage: the digest (checked against the tag when both are
/// given) and a descriptor of it. The inner `Err` is why the event is refused.
async fn resolve_in_stage(
    client: &RegistryClient,
    located: &Located,
    digest: Option<&Digest>,
) -> Result<Result<(Digest, Descriptor), String>, PromoteError> {
    let repository = &located.repository;
    let by_tag = match &located.tag {
        Some(tag) => match client.head_descriptor(repository, tag.as_str()).await? {
            Some(found) => Some(found),
            None => {
                return Ok(Err(format!(
                    "{repository}:{tag} is not in stage {}",
                    located.stage
                )));
            }
        },
        None => None,
    };
    Ok(match (digest, by_tag) {
        (Some(digest), Some((tagged, descriptor))) => {
            if &tagged != digest {
                Err(format!(
                    "{repository}:{} is {tagged}, not {digest}",
                    located.tag.as_ref().map(Tag::as_str).unwrap_or_default()
                ))
            } else {
                Ok((tagged, descriptor))
            }
        }
        (None, Some(found)) => Ok(found),
        (Some(digest), None) => match client.head_descriptor(repository, digest.as_str()).await? {
            Some(found) => Ok(found),
            None => Err(format!(
                "{repository}@{digest} is not in stage {}",
                located.stage
            )),
        },
        (None, None) => Err("no tag or digest".into()),
    })
}
