//! The pipeline view (docs/routes.md): every image promoter has recorded or promoted, what each
//! stage holds of it, what waits and why, and its latest promotions — the model behind the page,
//! `GET /api/pipeline` and `promoter status` without an argument.
//!
//! Read from promoter's indexes (images, arrivals per stage, waiting digests) and judged by the
//! same plan a decision makes, so what it costs grows with the images and what they have waiting,
//! never with the history of the stage repositories.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::evidence::{
    self, ArrivalsIndex, DigestRecords, ImagesIndex, WaitingEntry, WaitingIndex,
};
use crate::registry::Digest;
use crate::rules::{Gate, Promotion, Soak, Verdict};

use super::job::{Access, Job};
use super::outcome::{FrozenAnswer, PromoteError};
use super::plan::{Known, Place, pending_reason};
use super::service::Service;

/// How many images are read at once.
const IMAGE_CONCURRENCY: usize = 8;
/// How many promotions of an image the view lists.
const LATEST_PROMOTIONS: usize = 5;

/// The whole pipeline, as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineView {
    pub generated_at: DateTime<Utc>,
    /// The stages in pipeline order: the page's columns.
    pub stages: Vec<String>,
    /// One per image, by name: the page's rows.
    pub images: Vec<ImageView>,
}

/// One image across the stages.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageView {
    pub name: String,
    /// One per stage, in the order of [`PipelineView::stages`].
    pub stages: Vec<Cell>,
    /// What waits to move on, and why.
    pub waiting: Vec<WaitingView>,
    /// Its latest promotions, newest first.
    pub promotions: Vec<PromotionView>,
}

/// What one stage holds of an image: the digest that arrived there last.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cell {
    pub stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<DateTime<Utc>>,
}

impl Cell {
    /// The digest as people read it: the first twelve hex digits.
    pub fn short_digest(&self) -> Option<String> {
        self.digest.as_deref().map(short_digest)
    }
}

/// `sha256:0123456789ab…` → `0123456789ab`.
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// A digest waiting in a stage for one promotion.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WaitingView {
    pub stage: String,
    pub to_stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    /// `pending`, `blocked` (by an alert, until it clears), `frozen`, `superseded`, `skipped`,
    /// or `open` (it moves at the next decision).
    pub state: String,
    /// Why, for people.
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    /// Since when an alert blocks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<FrozenAnswer>,
    /// The soak clock: started at, met at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_met_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
}

/// One promotion of the image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PromotionView {
    pub time: DateTime<Utc>,
    pub from_stage: String,
    pub to_stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    /// The event that opened the gate: its type and id.
    pub trigger: String,
    pub trigger_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<evidence::CopySummary>,
}

impl Service {
    /// The pipeline as it stands now.
    pub async fn pipeline_view(&self) -> Result<PipelineView, PromoteError> {
        use futures::StreamExt as _;
        let now = self.now();
        let images_repository = self.state.images()?;
        let waiting_repository = self.state.waiting()?;
        let index_job = self
            .job_for(&[
                (images_repository.clone(), Access::Read),
                (waiting_repository.clone(), Access::Read),
            ])
            .await?;
        let (images, waiting) = futures::future::try_join(
            async {
                ImagesIndex {
                    client: index_job.client(&images_repository)?,
                    repository: &images_repository,
                }
                .list()
                .await
                .map_err(PromoteError::from)
            },
            async {
                WaitingIndex {
                    client: index_job.client(&waiting_repository)?,
                    repository: &waiting_repository,
                }
                .list(None)
                .await
                .map_err(PromoteError::from)
            },
        )
        .await?;
        let mut waiting_by_group: BTreeMap<String, Vec<Digest>> = BTreeMap::new();
        for entry in waiting {
            waiting_by_group
                .entry(entry.group)
                .or_default()
                .push(entry.digest);
        }
        let allowed: Vec<String> = images
            .into_iter()
            .filter(|image| self.pipeline.allows(image))
            .collect();
        // Boxed so the stream's futures have one nameable type (rust-lang/rust#102211).
        let turns: Vec<futures::future::BoxFuture<'_, Result<ImageView, PromoteError>>> = allowed
            .iter()
            .map(|image| Box::pin(self.image_view(image, &waiting_by_group, now)) as _)
            .collect();
        let images: Vec<ImageView> = futures::stream::iter(turns)
            .buffered(IMAGE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(PipelineView {
            generated_at: now,
            stages: self
                .pipeline
                .stages()
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            images,
        })
    }

    /// One image with every version promoter keeps of it in each stage (`promoter status
    /// NAME`): its view, and the arrivals kept per stage, newest first.
    pub async fn image_versions(
        &self,
        image: &str,
    ) -> Result<(ImageView, Vec<(String, Vec<evidence::ArrivalEntry>)>), PromoteError> {
        let now = self.now();
        let waiting_repository = self.state.waiting()?;
        let index_job = self
            .job_for(&[(waiting_repository.clone(), Access::Read)])
            .await?;
        let group_of = |stage: &str| WaitingEntry::group(stage, image);
        let listed = WaitingIndex {
            client: index_job.client(&waiting_repository)?,
            repository: &waiting_repository,
        }
        .list(None)
        .await?;
        let mut waiting: BTreeMap<String, Vec<Digest>> = BTreeMap::new();
        for stage in self.pipeline.stages() {
            let group = group_of(stage.name().as_str());
            waiting.insert(
                group.clone(),
                listed
                    .iter()
                    .filter(|w| w.group == group)
                    .map(|w| w.digest.clone())
                    .collect(),
            );
        }
        let view = self.image_view(image, &waiting, now).await?;
        let mut versions = Vec::new();
        for stage in self.pipeline.stages() {
            let Ok(repository) = stage.repository(image) else {
                continue;
            };
            let place = Place {
                stage: stage.name().clone(),
                image_name: image.to_owned(),
                repository,
            };
            let arrivals_repository = self.state.arrivals(&place.stage, image)?;
            let job = self
                .job_for(&[(arrivals_repository.clone(), Access::Read)])
                .await?;
            let index = ArrivalsIndex {
                client: job.client(&arrivals_repository)?,
                repository: &arrivals_repository,
            };
            let listed = index.list().await?;
            let entries =
                futures::future::try_join_all(listed.iter().map(|(_, _, tag)| index.read(tag)))
                    .await?;
            versions.push((
                stage.name().to_string(),
                entries.into_iter().flatten().collect(),
            ));
        }
        Ok((view, versions))
    }

    /// One image: its newest arrival in each stage, its waiting digests judged, its latest
    /// promotions.
    async fn image_view(
        &self,
        image: &str,
        waiting: &BTreeMap<String, Vec<Digest>>,
        now: DateTime<Utc>,
    ) -> Result<ImageView, PromoteError> {
        let places: Vec<Place> = self
            .pipeline
            .stages()
            .iter()
            .filter_map(|stage| {
                Some(Place {
                    stage: stage.name().clone(),
                    image_name: image.to_owned(),
                    repository: stage.repository(image).ok()?,
                })
            })
            .collect();
        let mut repositories = Vec::new();
        for place in &places {
            repositories.push((place.repository.clone(), Access::Read));
            repositories.push((self.state.arrivals(&place.stage, image)?, Access::Read));
            repositories.push((self.state.alerts(&place.stage, image)?, Access::Read));
            repositories.push((self.state.promoted(&place.stage, image)?, Access::Read));
            repositories.push((self.state.freezes(&place.stage)?, Access::Read));
        }
        let job = self.job_for(&repositories).await?;

        let cells = futures::future::try_join_all(
            places.iter().map(|place| self.stage_arrivals(&job, place)),
        )
        .await?;
        let mut stages = Vec::new();
        let mut promotions = Vec::new();
        for (place, arrivals) in places.iter().zip(cells) {
            let newest = arrivals.first();
            stages.push(Cell {
                stage: place.stage.to_string(),
                tag: newest.and_then(|a| a.tag.clone()),
                digest: newest.map(|a| a.digest.clone()),
                arrived_at: newest.and_then(|a| a.arrived_at()),
            });
            promotions.extend(self.promotions_into(&job, place, &arrivals).await?);
        }
        promotions.sort_by_key(|p| std::cmp::Reverse(p.time));
        promotions.truncate(LATEST_PROMOTIONS);

        let mut waiting_views = Vec::new();
        for place in &places {
            let group = WaitingEntry::group(place.stage.as_str(), image);
            let Some(digests) = waiting.get(&group) else {
                continue;
            };
            let promotions: Vec<&Promotion> = self
                .pipeline
                .promotions_from(place.stage.as_str())
                .collect();
            if promotions.is_empty() {
                continue;
            }
            let candidates = digests
                .iter()
                .map(|digest| Known {
                    digest: digest.clone(),
                    tag: None,
                    present: None,
                    arrival: None,
                    own: None,
                    approves_for: Vec::new(),
                })
                .collect();
            let plan = self.plan(&job, place, &promotions, candidates, now).await?;
            for promotion_plan in &plan.promotions {
                for (found, verdict) in plan.found.iter().zip(&promotion_plan.verdicts) {
                    waiting_views.push(waiting_view(
                        place,
                        promotion_plan.promotion,
                        found.tag.as_ref().map(|t| t.to_string()),
                        &found.digest,
                        verdict,
                    ));
                }
            }
        }
        Ok(ImageView {
            name: image.to_owned(),
            stages,
            waiting: waiting_views,
            promotions,
        })
    }

    /// The arrivals kept for an image in a stage, newest first, with their version tags.
    async fn stage_arrivals(
        &self,
        job: &Job,
        place: &Place,
    ) -> Result<Vec<evidence::ArrivalEntry>, PromoteError> {
        let repository = self.state.arrivals(&place.stage, &place.image_name)?;
        let index = ArrivalsIndex {
            client: job.client(&repository)?,
            repository: &repository,
        };
        let listed = index.list().await?;
        let newest = listed.iter().take(LATEST_PROMOTIONS);
        let entries =
            futures::future::try_join_all(newest.map(|(_, _, tag)| index.read(tag))).await?;
        Ok(entries.into_iter().flatten().collect())
    }

    /// The promotions into `place`'s stage among its newest arrivals, read from their records.
    async fn promotions_into(
        &self,
        job: &Job,
        place: &Place,
        arrivals: &[evidence::ArrivalEntry],
    ) -> Result<Vec<PromotionView>, PromoteError> {
        let records = DigestRecords {
            client: job.client(&place.repository)?,
            repository: &place.repository,
        };
        let read = futures::future::try_join_all(arrivals.iter().map(|arrival| async move {
            let Ok(digest) = Digest::try_from(arrival.digest.as_str()) else {
                return Ok(None);
            };
            Ok::<_, PromoteError>(records.promotion(&digest).await?)
        }))
        .await?;
        Ok(arrivals
            .iter()
            .zip(read)
            .filter_map(|(arrival, record)| {
                let record = record?;
                Some(PromotionView {
                    time: record.time,
                    from_stage: record.from_stage,
                    to_stage: record.to_stage,
                    tag: arrival.tag.clone(),
                    digest: record.digest,
                    trigger: record.trigger.event_type,
                    trigger_id: record.trigger.id,
                    copy: record.copy,
                })
            })
            .collect())
    }
}

/// How a judged candidate shows on the page.
fn waiting_view(
    place: &Place,
    promotion: &Promotion,
    tag: Option<String>,
    digest: &Digest,
    verdict: &Verdict,
) -> WaitingView {
    let mut view = WaitingView {
        stage: place.stage.to_string(),
        to_stage: promotion.to().to_string(),
        tag,
        digest: digest.to_string(),
        state: String::new(),
        reason: String::new(),
        missing: Vec::new(),
        not_before: None,
        blocked_since: None,
        frozen: None,
        soak_started_at: None,
        soak_met_at: None,
        superseded_by: None,
    };
    match verdict {
        Verdict::Move => {
            view.state = "open".into();
            view.reason = format!(
                "promotion {} -> {} is open: it moves at the next decision",
                promotion.from(),
                promotion.to()
            );
        }
        Verdict::AlreadyPromoted => {
            view.state = "promoted".into();
            view.reason = format!("{} holds it", promotion.to());
        }
        Verdict::Pending(gate) => {
            let (missing, not_before, reason) = pending_reason(promotion, gate);
            view.missing = missing;
            view.not_before = not_before;
            view.reason = reason;
            view.state = "pending".into();
            match gate {
                Gate::Blocked { by } => {
                    view.state = "blocked".into();
                    view.blocked_since = Some(by.time);
                }
                Gate::Pending(waiting) => {
                    if let Some(frozen) = &waiting.frozen {
                        view.frozen = Some(FrozenAnswer::from(frozen));
                        // Frozen is the state when the freeze is all that holds it.
                        let only_the_freeze = waiting.missing.is_empty()
                            && waiting.not_before.is_none()
                            && !waiting.entry_time_unknown;
                        if only_the_freeze {
                            view.state = "frozen".into();
                        }
                    }
                    match waiting.soak {
                        Some(Soak::Running { started_at, met_at }) => {
                            view.soak_started_at = Some(started_at);
                            view.soak_met_at = Some(met_at);
                        }
                        Some(Soak::Stopped { firing_since }) => {
                            view.state = "blocked".into();
                            view.blocked_since = Some(firing_since);
                        }
                        None => {}
                    }
                }
                Gate::Open { .. } => {}
            }
        }
        Verdict::Superseded { by } => {
            view.state = "superseded".into();
            view.superseded_by = Some(by.to_string());
            view.reason = format!(
                "{} holds {}, which entered {} later: this one never follows it",
                promotion.to(),
                short_digest(by.as_str()),
                promotion.from()
            );
        }
        Verdict::Skipped(skip) => {
            view.state = "skipped".into();
            view.reason = match skip {
                crate::rules::Skip::Gone => format!("no longer in {} (deleted)", place.stage),
                crate::rules::Skip::NoTag => "no signal named it by a tag".into(),
                crate::rules::Skip::Blocked(by) => {
                    format!(
                        "blocked for good by {} at {}",
                        by.kind,
                        by.time.to_rfc3339()
                    )
                }
                crate::rules::Skip::TagConflict { existing } => format!(
                    "{}'s tag holds another digest ({})",
                    promotion.to(),
                    short_digest(existing.as_str())
                ),
            };
        }
    }
    view
}
