//! The service: a signal in, an answer out (docs/rules.md). For each signal it locates the
//! image in the pipeline, records the signal, plans (reads and judges, writing nothing) and
//! executes the plan with the job's clients.
//!
//! - A digest signal (`test-passed`, `soak-complete`, `test-failed`) decides its own digest.
//! - An image signal (`alert-clear`) decides every digest of the image waiting in its stage.
//! - `reconcile` decides every digest waiting (for an alert or for time), image by image.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::job::{Access, Job};
use super::outcome::{Answer, Decision, PromoteError};
use super::plan::Place;
use crate::events::{Delivery, EventsError, RawSignal, Vocabulary};
use crate::evidence::{self, StateRepository};
use crate::publish::{self, EventPublisher, PublishError, TriggerRecord};
use crate::registry::auth::IdentityChoice;
use crate::registry::{RegistryError, Repository, Transport};
use crate::rules::{Pipeline, Promotion, StageName};

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
    /// Signs promotion attestations, when `PROMOTER_ATTESTATION_KEY` is set (docs/attestations.md).
    pub attester: Option<Arc<crate::attest::Attester>>,
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
    /// Images this instance already put in the images index: each is written once per process.
    known_images: std::sync::Mutex<std::collections::HashSet<String>>,
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
pub(super) const RECONCILE_CONCURRENCY: usize = 8;

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
            attester: None,
            event_source,
            state,
            clock: Arc::new(Utc::now),
            locks: tokio::sync::Mutex::default(),
            known_images: std::sync::Mutex::default(),
            done: std::sync::Mutex::default(),
        }
    }

    /// The same service attesting every promotion with `attester`.
    pub fn with_attester(self, attester: Option<crate::attest::Attester>) -> Self {
        Service {
            attester: attester.map(Arc::new),
            ..self
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
        let known = self
            .known_images
            .lock()
            .is_ok_and(|known| known.contains(image));
        let images = evidence::ImagesIndex {
            client: job.client(&images_repository)?,
            repository: &images_repository,
        };
        futures::future::try_join(arrivals.add(&entry), async {
            if known {
                return Ok(());
            }
            images.add(image).await?;
            if let Ok(mut known) = self.known_images.lock() {
                known.insert(image.to_owned());
            }
            Ok(())
        })
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
        // Every repository the job may touch, so that one token covers them all: a registry
        // behind token auth answers a repository outside the token's scope with a challenge,
        // and each challenge costs another token request.
        let mut repositories = vec![
            (place.repository.clone(), Access::Write),
            (
                self.state.alerts(&place.stage, &place.image_name)?,
                Access::Own,
            ),
            (self.state.waiting()?, Access::Own),
            (
                self.state.arrivals(&place.stage, &place.image_name)?,
                Access::Own,
            ),
            (self.state.images()?, Access::Write),
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
            repositories.push((
                self.state.arrivals(promotion.to(), &place.image_name)?,
                Access::Own,
            ));
            repositories.push((self.state.freezes(promotion.to())?, Access::Read));
        }
        Ok(repositories)
    }

    pub(crate) async fn job(
        &self,
        place: &Place,
        promotions: &[&Promotion],
    ) -> Result<Job, PromoteError> {
        let repositories = self.job_repositories(place, promotions)?;
        Ok(self.job_for(&repositories).await?)
    }

    /// A job touching exactly `repositories`, with this service's identity.
    pub(crate) async fn job_for(
        &self,
        repositories: &[(Repository, Access)],
    ) -> Result<Job, RegistryError> {
        Job::new(&self.transport, &self.identity, repositories).await
    }

    /// Holds this process's lock on every destination of `promotions` for the image.
    pub(super) async fn lock(
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

pub(super) fn trigger_of(signal: &RawSignal) -> TriggerRecord {
    TriggerRecord {
        event_type: signal.event_type.clone(),
        id: signal.event_id.clone(),
        source: signal.event_source.clone(),
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
