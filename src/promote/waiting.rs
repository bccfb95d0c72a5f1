//! What waits, decided again: the digests of an image waiting in a stage (when an alert clears),
//! every digest waiting (`reconcile`), and what a stage's freeze held (`freeze` / `unfreeze`)
//! (docs/rules.md, "Gates that open by time" and "Freezes"). Read from the waiting index, so the cost grows with
//! what waits, not with the images or their history.

use std::collections::BTreeMap;

use super::job::{Access, Job};
use super::outcome::{Answer, CandidateOutcome, Decision, Fate, PromoteError};
use super::plan::{Known, Place};
use super::service::{RECONCILE_CONCURRENCY, Service};
use crate::events::{Reconcile, StageEvent};
use crate::evidence::{self, StageEventRecord, Toggle, ToggleLog, WaitingEntry, WaitingIndex};
use crate::publish::TriggerRecord;
use crate::rules::{Promotion, StageName};

impl Service {
    /// `freeze` / `unfreeze` of a stage: recorded in the stage's freeze log; an `unfreeze`
    /// decides at once every digest waiting for a promotion into the stage.
    pub async fn handle_stage_event(&self, event: &StageEvent) -> Result<Answer, PromoteError> {
        let Some(stage) = self.pipeline.stage(&event.stage) else {
            return Ok(Answer::rejected(format!(
                "event {}: stage {:?} is not one of {}",
                event.event_id,
                event.stage,
                self.pipeline
                    .stages()
                    .iter()
                    .map(|s| s.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let stage = stage.name().clone();
        let repository = self.state.freezes(&stage)?;
        let job = self.job_for(&[(repository.clone(), Access::Own)]).await?;
        let log = ToggleLog {
            client: job.client(&repository)?,
            repository: &repository,
            toggle: Toggle::Freeze,
        };
        let record = StageEventRecord {
            freeze: event.freeze,
            stage: stage.to_string(),
            reason: event.reason.clone(),
            event_id: event.event_id.clone(),
            event_source: event.event_source.clone(),
            event_type: event.event_type.clone(),
            time: event.time.unwrap_or_else(|| self.now()),
        };
        log.record(
            event.freeze,
            record.time,
            &record.event_source,
            &record.event_id,
            &record,
        )
        .await?;
        log.compact(&log.list().await?).await;
        let mut answer = if event.freeze {
            Answer::new(
                Decision::Recorded,
                format!(
                    "promotions into {stage} are frozen{} until an unfreeze",
                    event
                        .reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
            )
        } else {
            let trigger = TriggerRecord {
                event_type: event.event_type.clone(),
                id: event.event_id.clone(),
                source: event.event_source.clone(),
            };
            let decided = self
                .decide_every_waiting(None, None, Some(&stage), &trigger)
                .await?;
            let decision = if decided.promoted.as_ref().is_some_and(|p| !p.is_empty()) {
                Decision::Promoted
            } else {
                Decision::Recorded
            };
            Answer {
                decision,
                reason: format!("{stage} unfrozen: {}", decided.reason),
                ..decided
            }
        };
        answer.event_id = Some(event.event_id.clone());
        answer.to_stage = Some(stage.to_string());
        Ok(answer)
    }

    /// Whether a plan over `promotions` judged every promotion out of the stage that keeps
    /// digests in the waiting index: only then may a digest final for all of them leave it.
    pub(super) fn plan_covers_waiting(&self, place: &Place, promotions: &[&Promotion]) -> bool {
        self.pipeline
            .promotions_from(place.stage.as_str())
            .all(|p| promotions.iter().any(|q| q.to() == p.to()))
    }

    /// Decides every digest of `place`'s image waiting in its stage for `promotions`, and
    /// forgets those that will never wait again.
    pub(super) async fn decide_waiting(
        &self,
        job: &Job,
        place: &Place,
        promotions: &[&Promotion],
        trigger: &TriggerRecord,
    ) -> Result<Vec<CandidateOutcome>, PromoteError> {
        let waiting_repository = self.state.waiting()?;
        let waiting = WaitingIndex {
            client: job.client(&waiting_repository)?,
            repository: &waiting_repository,
        };
        let group = WaitingEntry::group(place.stage.as_str(), &place.image_name);
        let listed = waiting.list(Some(&group)).await?;
        if listed.is_empty() || promotions.is_empty() {
            return Ok(Vec::new());
        }
        let candidates: Vec<Known> = listed
            .iter()
            .map(|w| Known {
                digest: w.digest.clone(),
                tag: None,
                present: None,
                arrival: None,
                own: None,
                approves_for: Vec::new(),
            })
            .collect();
        let plan = self
            .plan(job, place, promotions, candidates, self.now())
            .await?;
        let executed = self.execute(job, &plan, trigger, None).await?;
        if self.plan_covers_waiting(place, promotions) {
            let finished: Vec<WaitingEntry> = executed
                .finished
                .iter()
                .map(|&i| WaitingEntry {
                    stage: place.stage.to_string(),
                    image: place.image_name.clone(),
                    digest: plan.found[i].digest.to_string(),
                })
                .collect();
            waiting.remove(&finished).await;
        }
        Ok(executed.outcomes)
    }

    /// `reconcile`: decides again every digest waiting (for an alert or for time), narrowed to
    /// one stage or image when asked. Its cost grows with the number of digests waiting.
    pub async fn reconcile(&self, request: &Reconcile) -> Result<Answer, PromoteError> {
        let trigger = TriggerRecord {
            event_type: request.event_type.clone(),
            id: request.event_id.clone(),
            source: request.event_source.clone(),
        };
        self.decide_every_waiting(
            request.stage.as_deref(),
            request.image.as_deref(),
            None,
            &trigger,
        )
        .await
        .map(|answer| Answer {
            event_id: Some(request.event_id.clone()),
            ..answer
        })
    }

    /// Decides every digest waiting, or those waiting in `stage`, of `image`, or for a
    /// promotion `into` a stage: the work of `reconcile` and of an `unfreeze`.
    async fn decide_every_waiting(
        &self,
        stage: Option<&str>,
        image: Option<&str>,
        into: Option<&StageName>,
        trigger: &TriggerRecord,
    ) -> Result<Answer, PromoteError> {
        let waiting_repository = self.state.waiting()?;
        let index_job = self
            .job_for(&[(waiting_repository.clone(), Access::Own)])
            .await?;
        let index = WaitingIndex {
            client: index_job.client(&waiting_repository)?,
            repository: &waiting_repository,
        };
        let listed = index.list(None).await?;
        let mut groups: BTreeMap<String, Vec<evidence::state::Waiting>> = BTreeMap::new();
        for waiting in listed {
            groups
                .entry(waiting.group.clone())
                .or_default()
                .push(waiting);
        }
        // Which image and stage a group is: read from one of its entries.
        let places = futures::future::try_join_all(groups.values().map(|entries| async {
            Ok::<_, PromoteError>(match entries.first() {
                Some(first) => index.read(first).await?,
                None => None,
            })
        }))
        .await?;
        let mut work = Vec::new();
        let mut stale = Vec::new();
        for ((group, entries), entry) in groups.iter().zip(places) {
            let Some(entry) = entry else { continue };
            if WaitingEntry::group(&entry.stage, &entry.image) != *group {
                continue;
            }
            if stage.is_some_and(|s| s != entry.stage)
                || image.is_some_and(|i| !names_image(i, &entry.image))
            {
                continue;
            }
            match self.place_for(&entry.stage, &entry.image) {
                Some(place) => work.push((place, entries.len())),
                // The stage left the pipeline, or the image its allowlist: nothing there moves.
                None => stale.extend(entries.iter().map(|w| WaitingEntry {
                    digest: w.digest.to_string(),
                    ..entry.clone()
                })),
            }
        }
        index.remove(&stale).await;

        use futures::StreamExt as _;
        // Boxed so the stream's futures have one nameable type (rustc cannot yet prove a
        // closure-built stream of borrowing futures `Send`: rust-lang/rust#102211).
        let turns: Vec<
            futures::future::BoxFuture<'_, Result<Vec<CandidateOutcome>, PromoteError>>,
        > = work
            .iter()
            .map(|(place, _)| Box::pin(self.reconcile_image(place, into, trigger)) as _)
            .collect();
        let results: Vec<Result<Vec<CandidateOutcome>, PromoteError>> =
            futures::stream::iter(turns)
                .buffer_unordered(RECONCILE_CONCURRENCY)
                .collect()
                .await;
        let mut outcomes = Vec::new();
        let mut failure = None;
        for result in results {
            match result {
                Ok(decided) => outcomes.extend(decided),
                Err(error) if failure.is_none() => failure = Some(error),
                Err(_) => {}
            }
        }
        // The other images' decisions stand (they are idempotent); the delivery comes back for
        // the one that failed.
        if let Some(error) = failure {
            return Err(error);
        }
        let promoted: Vec<String> = outcomes
            .iter()
            .filter_map(|o| match &o.fate {
                Fate::Promoted { image, .. } => Some(image.clone()),
                _ => None,
            })
            .collect();
        let mut pending: Vec<&str> = outcomes
            .iter()
            .filter(|o| !o.fate.is_final())
            .map(|o| o.digest.as_str())
            .collect();
        pending.sort_unstable();
        pending.dedup();
        let mut answer = Answer::new(Decision::Reconciled, "")
            .decided(&outcomes, Answer::new(Decision::Reconciled, ""));
        answer.decision = Decision::Reconciled;
        answer.reason = format!(
            "reconciled {} image(s): {} promoted, {} still waiting",
            work.len(),
            promoted.len(),
            pending.len()
        );
        answer.promoted = Some(promoted);
        answer.waiting = Some(pending.len());
        Ok(answer)
    }

    /// One image's turn in a `reconcile`: every promotion out of its stage that an alert or time
    /// can open, decided for its waiting digests.
    async fn reconcile_image(
        &self,
        place: &Place,
        into: Option<&StageName>,
        trigger: &TriggerRecord,
    ) -> Result<Vec<CandidateOutcome>, PromoteError> {
        let promotions: Vec<&Promotion> = self
            .pipeline
            .promotions_from(place.stage.as_str())
            .filter(|p| into.is_none_or(|into| p.to() == into))
            .collect();
        if promotions.is_empty() {
            return Ok(Vec::new());
        }
        let job = self.job(place, &promotions).await?;
        let _locks = self.lock(place, &promotions).await?;
        self.decide_waiting(&job, place, &promotions, trigger).await
    }

    /// The place of a waiting entry's image, if the pipeline still has its stage and allows it.
    fn place_for(&self, stage: &str, image: &str) -> Option<Place> {
        let stage = self.pipeline.stage(stage)?;
        if !self.pipeline.allows(image) {
            return None;
        }
        Some(Place {
            stage: stage.name().clone(),
            image_name: image.to_owned(),
            repository: stage.repository(image).ok()?,
        })
    }
}

/// Whether a reconcile's `image` (a bare name, or a repository ending in it) names `name`.
fn names_image(asked: &str, name: &str) -> bool {
    asked == name || asked.ends_with(&format!("/{name}"))
}
