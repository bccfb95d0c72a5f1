//! The service: a signal in, an answer out (docs/rules.md). For each signal it locates the
//! image in the pipeline, records the signal, plans (reads and judges, writing nothing) and
//! executes the plan with the job's clients.
//!
//! - A digest signal (`test-passed`, `soak-complete`, `test-failed`) decides its own digest.
//! - An image signal (`alert-clear`) decides every digest of the image waiting in its stage.
//! - `reconcile` decides every digest waiting (for an alert or for time), image by image.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::job::{Access, Job};
use super::outcome::{Answer, CandidateOutcome, Decision, Fate, PromoteError};
use super::plan::{Known, Place};
use crate::events::{
    Delivery, EventsError, RawSignal, Reconcile, SignalKind, StageEvent, Vocabulary,
};
use crate::evidence::{
    self, DigestRecords, SignalRecord, StageEventRecord, StateRepository, Toggle, ToggleLog,
    WaitingEntry, WaitingIndex,
};
use crate::publish::{self, EventPublisher, PublishError, TriggerRecord};
use crate::registry::auth::IdentityChoice;
use crate::registry::manifest::Descriptor;
use crate::registry::{Digest, RegistryClient, Repository, Tag, Transport};
use crate::rules::{Located, Pipeline, Promotion, StageName};

/// Reads the time: `Utc::now` in production; tests may hold it still or move it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

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
    /// Where promoter keeps its indexes.
    pub state: StateRepository,
    /// The rules' signals and Cloud Build triggers, for reading events.
    vocabulary: Vocabulary,
    clock: Clock,
    /// One job at a time per destination repository in this process: duplicate deliveries wait
    /// for the first and find its promotion, and two versions of one image are never judged
    /// against each other half-done.
    locks: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events this instance already saw through to a promotion (copied and announced). Pub/Sub
    /// delivers at least once, often to the same instance; a redelivery is answered from here
    /// without touching the registry. Another instance, or this one after a restart, takes the
    /// full path, which is idempotent.
    done: std::sync::Mutex<HashMap<String, Answer>>,
}

/// How many finished events an instance remembers before it forgets them all (a redelivery after
/// that takes the full, idempotent path).
const REMEMBERED_EVENTS: usize = 10_000;

/// How many images a `reconcile` decides at once.
const RECONCILE_CONCURRENCY: usize = 8;

impl Service {
    pub fn new(
        pipeline: Pipeline,
        transport: Transport,
        identity: IdentityChoice,
        publisher: Option<EventPublisher>,
        event_source: String,
        state: StateRepository,
    ) -> Self {
        Service {
            vocabulary: pipeline.vocabulary(),
            pipeline,
            transport,
            identity,
            identity_name: tokio::sync::OnceCell::new(),
            publisher,
            event_source,
            state,
            clock: Arc::new(Utc::now),
            locks: tokio::sync::Mutex::default(),
            done: std::sync::Mutex::default(),
        }
    }

    /// The same service reading time from `clock`.
    pub fn with_clock(self, clock: Clock) -> Self {
        Service { clock, ..self }
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Which event types and builds are signals under these rules.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

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
        let job = Job::new(
            &self.transport,
            &self.identity,
            &[(repository.clone(), Access::Own)],
        )
        .await?;
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

    /// Handles one signal. A signal refused for good is announced as `promotion-rejected`.
    pub async fn handle(&self, signal: &RawSignal) -> Result<Answer, PromoteError> {
        let key = format!(
            "{}\0{}\0{}\0{}",
            signal.event_source, signal.event_id, signal.kind, signal.image
        );
        if let Some(mut answer) = self
            .done
            .lock()
            .ok()
            .and_then(|done| done.get(&key).cloned())
        {
            answer.decision = Decision::AlreadyPromoted;
            answer.reason = format!(
                "event {} was already handled: {}",
                signal.event_id, answer.reason
            );
            return Ok(answer);
        }
        let mut answer = match self.pipeline.locate(&signal.image, signal.stage.as_deref()) {
            Err(error) => Answer::rejected(error.to_string()),
            Ok(located) if signal.kind.is_alert() => {
                self.handle_image_signal(signal, &located).await?
            }
            Ok(located) => self.handle_digest_signal(signal, &located).await?,
        };
        answer.event_id = Some(signal.event_id.clone());
        if answer.image.is_none() {
            answer.image = Some(signal.image.clone());
        }
        if matches!(
            answer.decision,
            Decision::Promoted | Decision::AlreadyPromoted
        ) && let Ok(mut done) = self.done.lock()
        {
            if done.len() >= REMEMBERED_EVENTS {
                done.clear();
            }
            done.insert(key, answer.clone());
        }
        if answer.is_rejected() {
            let announcement = publish::Rejected {
                image: Some(signal.image.clone()),
                digest: answer.digest.clone().or_else(|| signal.digest.clone()),
                from_stage: answer.from_stage.clone(),
                to_stage: answer.to_stage.clone(),
                trigger: trigger_of(signal),
                reason: answer.reason.clone(),
            };
            self.announce_rejection(&announcement).await?;
        }
        Ok(answer)
    }

    /// Announces a signal that failed for good (a permanent error of a registry or of
    /// Pub/Sub), so that it does not vanish when its delivery is acked.
    pub async fn reject_failed(
        &self,
        signal: &RawSignal,
        error: &PromoteError,
    ) -> Result<(), PromoteError> {
        let announcement = publish::Rejected {
            image: Some(signal.image.clone()),
            digest: signal.digest.clone(),
            from_stage: None,
            to_stage: None,
            trigger: trigger_of(signal),
            reason: error.to_string(),
        };
        self.announce_rejection(&announcement).await
    }

    /// The service account on Cloud Run (from the metadata server), else the host's name.
    pub(super) async fn identity_name(&self) -> String {
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
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let publish_error = |source: PublishError| PromoteError::Publish {
            topic: publisher.topic().to_owned(),
            source,
        };
        let event = announcement
            .to_event(&self.event_source, Utc::now())
            .map_err(publish_error)?;
        publisher
            .publish_event(&event)
            .await
            .map(|_| ())
            .map_err(publish_error)
    }

    /// The repository of `image_name` in the destination of `promotion`.
    pub(super) fn destination_repository(
        &self,
        promotion: &Promotion,
        image_name: &str,
    ) -> Result<Repository, PromoteError> {
        stage_repository(&self.pipeline, promotion.to(), image_name)
    }

    /// Whether a digest arriving in `stage` waits in the waiting index: some promotion out of it
    /// can be opened by an alert clearing or by time.
    pub(super) fn waits_in(&self, stage: &StageName) -> bool {
        self.pipeline
            .promotions_from(stage.as_str())
            .any(|p| self.pipeline.opens_without_digest_signal(p))
    }

    /// Indexes an arrival (in the stage's arrivals, and the image among the images) for the
    /// pipeline view, which then needs no listing of stage repositories.
    pub(super) async fn index_arrival(
        &self,
        job: &Job,
        stage: &StageName,
        image: &str,
        arrival: &evidence::ArrivalRecord,
    ) -> Result<(), PromoteError> {
        let arrivals_repository = self.state.arrivals(stage, image)?;
        let images_repository = self.state.images()?;
        let arrivals = evidence::ArrivalsIndex {
            client: job.client(&arrivals_repository)?,
            repository: &arrivals_repository,
        };
        let entry = evidence::ArrivalEntry {
            digest: arrival.digest.clone(),
            tag: arrival.tag.clone(),
            arrived_ms: arrival.time.timestamp_millis(),
        };
        futures::future::try_join(
            arrivals.add(&entry),
            evidence::ImagesIndex {
                client: job.client(&images_repository)?,
                repository: &images_repository,
            }
            .add(image),
        )
        .await?;
        // Cleaning the index up needs a listing: one arrival in eight pays for it.
        if entry.arrived_ms % 8 == 0 {
            arrivals.compact().await;
        }
        Ok(())
    }

    /// Every repository a job on `place` for `promotions` touches, with how.
    fn job_repositories(
        &self,
        place: &Place,
        promotions: &[&Promotion],
    ) -> Result<Vec<(Repository, Access)>, PromoteError> {
        let mut repositories = vec![
            (place.repository.clone(), Access::Write),
            (
                self.state.alerts(&place.stage, &place.image_name)?,
                Access::Own,
            ),
            (self.state.waiting()?, Access::Own),
        ];
        for promotion in promotions {
            repositories.push((
                self.destination_repository(promotion, &place.image_name)?,
                Access::Write,
            ));
            repositories.push((
                self.state.promoted(promotion.to(), &place.image_name)?,
                Access::Own,
            ));
        }
        Ok(repositories)
    }

    pub(crate) async fn job(
        &self,
        place: &Place,
        promotions: &[&Promotion],
    ) -> Result<Job, PromoteError> {
        let repositories = self.job_repositories(place, promotions)?;
        Ok(Job::new(&self.transport, &self.identity, &repositories).await?)
    }

    /// Holds this process's lock on every destination of `promotions` for the image.
    async fn lock(
        &self,
        place: &Place,
        promotions: &[&Promotion],
    ) -> Result<Vec<tokio::sync::OwnedMutexGuard<()>>, PromoteError> {
        let mut keys: Vec<String> = promotions
            .iter()
            .map(|p| {
                self.destination_repository(p, &place.image_name)
                    .map(|r| r.to_string())
            })
            .collect::<Result<_, _>>()?;
        keys.sort();
        keys.dedup();
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut map = self.locks.lock().await;
            // Forget the locks nobody holds: the map stays as small as what is in flight.
            map.retain(|_, lock| Arc::strong_count(lock) > 1);
            keys.iter()
                .map(|key| map.entry(key.clone()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        // In sorted order, so two jobs needing the same locks never wait for each other.
        for lock in locks {
            guards.push(lock.lock_owned().await);
        }
        Ok(guards)
    }

    /// test-passed, test-failed, soak-complete: about one digest in one stage.
    async fn handle_digest_signal(
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
        let known_arrival = records.arrival(&digest).await?;
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

    /// Whether a plan over `promotions` judged every promotion out of the stage that keeps
    /// digests in the waiting index: only then may a digest final for all of them leave it.
    fn plan_covers_waiting(&self, place: &Place, promotions: &[&Promotion]) -> bool {
        self.pipeline
            .promotions_from(place.stage.as_str())
            .all(|p| promotions.iter().any(|q| q.to() == p.to()))
    }

    /// alert-firing, alert-clear: about the image in a stage, whatever its digest.
    async fn handle_image_signal(
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

    /// Decides every digest of `place`'s image waiting in its stage for `promotions`, and
    /// forgets those that will never wait again.
    async fn decide_waiting(
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
        let index_job = Job::new(
            &self.transport,
            &self.identity,
            &[(waiting_repository.clone(), Access::Own)],
        )
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

fn routes(promotions: &[&Promotion]) -> String {
    promotions
        .iter()
        .map(|p| format!("promotion {} -> {}", p.from(), p.to()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn place_of(located: &Located) -> Place {
    Place {
        stage: located.stage.clone(),
        image_name: located.image_name.clone(),
        repository: located.repository.clone(),
    }
}

fn stage_repository(
    pipeline: &Pipeline,
    stage: &StageName,
    image_name: &str,
) -> Result<Repository, PromoteError> {
    let stage = pipeline.stage(stage.as_str()).ok_or_else(|| {
        PromoteError::Evidence(evidence::EvidenceError::Name {
            what: format!("stage {stage}"),
            cause: "not in the pipeline".into(),
        })
    })?;
    stage.repository(image_name).map_err(|e| {
        PromoteError::Evidence(evidence::EvidenceError::Name {
            what: format!("{image_name} in stage {}", stage.name()),
            cause: e.to_string(),
        })
    })
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

fn trigger_of(signal: &RawSignal) -> TriggerRecord {
    TriggerRecord {
        event_type: signal.event_type.clone(),
        id: signal.event_id.clone(),
        source: signal.event_source.clone(),
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
