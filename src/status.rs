//! `promoter status`: where a digest is in the pipeline and why — the stages that hold it, the
//! signals recorded for it, and each gate's state — read and judged exactly as the service reads
//! and judges them (the same plan), without writing anything.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::events::SignalKind;
use crate::evidence;
use crate::promote::FrozenAnswer;
use crate::promote::job::{Access, Job};
use crate::promote::plan::pending_reason;
use crate::promote::plan::{Known, Place};
use crate::promote::{PromoteError, Service};
use crate::registry::{Digest, RegistryError, Repository};
use crate::rules::{self, Gate, Promotion, Skip, Soak, Verdict};

/// Why a status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The image is not in the pipeline's stages.
    #[error(transparent)]
    Rules(#[from] rules::RulesError),
    /// The image has no tag or digest, or the stage does not hold it.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    #[error(transparent)]
    Promote(#[from] PromoteError),
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub image: String,
    pub digest: String,
    pub stages: Vec<StageStatus>,
    pub gates: Vec<GateStatus>,
}

#[derive(Debug, Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub repository: String,
    pub holds_digest: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entered_at: Option<DateTime<Utc>>,
    pub signals: Vec<SignalStatus>,
    /// promoter's attestations of the promotion into this stage, as the stage's `.att` tag
    /// lists them (by key id; `promoter verify` checks their signatures).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationStatus>,
}

#[derive(Debug, Serialize)]
pub struct AttestationStatus {
    /// The key id: a Cloud KMS key version, or `sha256:<hex>` of a local key's SPKI DER.
    pub key: String,
    /// The digest of the attestation's envelope (its layer under `tag`).
    pub envelope: String,
    pub tag: String,
}

#[derive(Debug, Serialize)]
pub struct SignalStatus {
    #[serde(rename = "type")]
    pub kind: String,
    pub time: DateTime<Utc>,
    pub event_id: String,
    /// `digest` for test and soak signals, `image in stage` for alerts.
    pub about: String,
}

#[derive(Debug, Serialize)]
pub struct GateStatus {
    pub from: String,
    pub to: String,
    /// `done` (the digest is in the next stage), `open`, `pending`, `blocked`, `superseded`,
    /// `skipped`, `not-in-stage`.
    pub state: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The freeze holding the promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<FrozenAnswer>,
    /// The soak clock, for a promotion that soaks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakStatus>,
}

/// A soak clock as status shows it.
#[derive(Debug, Serialize)]
pub struct SoakStatus {
    /// `running` (clear since `started_at`, met at `met_at`) or `stopped` (an alert firing since
    /// `firing_since`).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firing_since: Option<DateTime<Utc>>,
}

impl From<Soak> for SoakStatus {
    fn from(soak: Soak) -> Self {
        match soak {
            Soak::Running { started_at, met_at } => SoakStatus {
                state: "running",
                started_at: Some(started_at),
                met_at: Some(met_at),
                firing_since: None,
            },
            Soak::Stopped { firing_since } => SoakStatus {
                state: "stopped",
                started_at: None,
                met_at: None,
                firing_since: Some(firing_since),
            },
        }
    }
}

/// Reads the status of `image` (a reference in one of the pipeline's stages).
pub async fn status(service: &Service, image: &str) -> Result<StatusReport, StatusError> {
    let pipeline = &service.pipeline;
    let located = pipeline.locate(image, None)?;
    let places: Vec<Place> = pipeline
        .stages()
        .iter()
        .map(|stage| {
            Ok::<_, StatusError>(Place {
                stage: stage.name().clone(),
                image_name: located.image_name.clone(),
                repository: stage
                    .repository(&located.image_name)
                    .map_err(|e| StatusError::NotFound(e.to_string()))?,
            })
        })
        .collect::<Result<_, _>>()?;
    let mut repositories: Vec<(Repository, Access)> = Vec::new();
    for place in &places {
        repositories.push((place.repository.clone(), Access::Read));
        repositories.push((
            service.state.alerts(&place.stage, &place.image_name)?,
            Access::Read,
        ));
        repositories.push((
            service.state.promoted(&place.stage, &place.image_name)?,
            Access::Read,
        ));
    }
    let job = Job::new(&service.transport, &service.identity, &repositories).await?;

    let reference = located
        .image_ref()
        .api_reference()
        .ok_or_else(|| StatusError::NotFound(format!("{image} names no tag or digest")))?;
    let digest: Digest = job
        .client(&located.repository)?
        .head_manifest(&located.repository, &reference)
        .await?
        .ok_or_else(|| {
            StatusError::NotFound(format!("{image} is not in stage {}", located.stage))
        })?;

    let holds = futures::future::try_join_all(places.iter().map(|place| {
        let job = &job;
        let digest = &digest;
        async move {
            Ok::<_, StatusError>(
                job.client(&place.repository)?
                    .head_manifest(&place.repository, digest.as_str())
                    .await?
                    .is_some(),
            )
        }
    }))
    .await?;

    let now = Utc::now();
    let mut stages = Vec::new();
    let mut gates = Vec::new();
    for (place, &holds_digest) in places.iter().zip(&holds) {
        let promotions: Vec<&Promotion> = pipeline.promotions_from(place.stage.as_str()).collect();
        let mut stage = StageStatus {
            stage: place.stage.to_string(),
            repository: place.repository.to_string(),
            holds_digest,
            entered_at: None,
            signals: Vec::new(),
            attestations: Vec::new(),
        };
        if !holds_digest {
            for promotion in &promotions {
                gates.push(gate(promotion, "not-in-stage", Vec::new(), None));
            }
            stages.push(stage);
            continue;
        }
        let known = Known {
            digest: digest.clone(),
            tag: located.tag.clone(),
            present: None,
            arrival: None,
            own: None,
            approves_for: Vec::new(),
        };
        let plan = service
            .plan(&job, place, &promotions, vec![known], now)
            .await?;
        if let Some(found) = plan.found.first() {
            stage.entered_at = found.arrival.as_ref().map(|a| a.time);
            for (kind, record) in &found.signals {
                stage.signals.push(SignalStatus {
                    kind: kind.to_string(),
                    time: record.time,
                    event_id: record.event_id.clone(),
                    about: "digest".into(),
                });
            }
            let alerts_repository = service.state.alerts(&place.stage, &place.image_name)?;
            let log = evidence::ToggleLog {
                client: job.client(&alerts_repository)?,
                repository: &alerts_repository,
                toggle: evidence::Toggle::Alert,
            };
            for alert in &plan.alerts {
                let event_id = log
                    .read::<evidence::SignalRecord>(&alert.tag)
                    .await?
                    .map(|r| r.event_id)
                    .unwrap_or_else(|| alert.tag.clone());
                let kind = if alert.on {
                    SignalKind::AlertFiring
                } else {
                    SignalKind::AlertClear
                };
                stage.signals.push(SignalStatus {
                    kind: kind.to_string(),
                    time: alert.time,
                    event_id,
                    about: "image in stage".into(),
                });
            }
        }
        stage.signals.sort_by_key(|s| s.time);
        stage.attestations = attestations(job.client(&place.repository)?, place, &digest).await?;
        for promotion_plan in &plan.promotions {
            let promotion = promotion_plan.promotion;
            let in_destination = places
                .iter()
                .zip(&holds)
                .any(|(p, held)| &p.stage == promotion.to() && *held);
            let Some(verdict) = promotion_plan.verdicts.first() else {
                continue;
            };
            gates.push(match verdict {
                _ if in_destination => gate(promotion, "done", Vec::new(), None),
                Verdict::AlreadyPromoted => gate(promotion, "done", Vec::new(), None),
                Verdict::Move => gate(promotion, "open", Vec::new(), None),
                Verdict::Pending(Gate::Blocked { by }) => gate(
                    promotion,
                    "blocked",
                    Vec::new(),
                    Some(format!("{} at {}", by.kind, by.time.to_rfc3339())),
                ),
                Verdict::Pending(Gate::Pending(waiting)) => {
                    let (missing, _, reason) =
                        pending_reason(promotion, &Gate::Pending(waiting.clone()));
                    let mut status = gate(promotion, "pending", missing, Some(reason));
                    status.frozen = waiting.frozen.as_ref().map(FrozenAnswer::from);
                    status.soak = waiting.soak.map(SoakStatus::from);
                    status
                }
                Verdict::Pending(Gate::Open { .. }) => gate(promotion, "open", Vec::new(), None),
                Verdict::Superseded { by } => gate(
                    promotion,
                    "superseded",
                    Vec::new(),
                    Some(format!(
                        "{} holds {by}, which entered {} later",
                        promotion.to(),
                        promotion.from()
                    )),
                ),
                Verdict::Skipped(Skip::Blocked(by)) => gate(
                    promotion,
                    "blocked",
                    Vec::new(),
                    Some(format!(
                        "{} at {} (for good)",
                        by.kind,
                        by.time.to_rfc3339()
                    )),
                ),
                Verdict::Skipped(skip) => gate(
                    promotion,
                    "skipped",
                    Vec::new(),
                    Some(match skip {
                        Skip::Gone => "no longer in the stage".to_owned(),
                        Skip::NoTag => "no signal named it by a tag".to_owned(),
                        Skip::TagConflict { existing } => {
                            format!("the destination tag holds {existing}")
                        }
                        Skip::Blocked(by) => by.kind.to_string(),
                    }),
                ),
            });
        }
        stages.push(stage);
    }
    Ok(StatusReport {
        image: image.to_owned(),
        digest: digest.to_string(),
        stages,
        gates,
    })
}

/// promoter's attestations of `digest`'s promotion into `place`'s stage.
async fn attestations(
    client: &crate::registry::RegistryClient,
    place: &Place,
    digest: &Digest,
) -> Result<Vec<AttestationStatus>, StatusError> {
    let tag = crate::attest::cosign::tag(digest);
    let Some(manifest) = client.get_manifest(&place.repository, tag.as_str()).await? else {
        return Ok(Vec::new());
    };
    let layers = crate::attest::cosign::layers(&manifest).unwrap_or_default();
    Ok(crate::attest::cosign::promoter_layers(&layers)
        .into_iter()
        .filter(|l| l.stage == place.stage.as_str())
        .map(|l| AttestationStatus {
            key: l.key,
            envelope: l.digest.to_string(),
            tag: tag.to_string(),
        })
        .collect())
}

fn gate(
    promotion: &Promotion,
    state: &str,
    missing: Vec<String>,
    detail: Option<String>,
) -> GateStatus {
    GateStatus {
        from: promotion.from().to_string(),
        to: promotion.to().to_string(),
        state: state.into(),
        missing,
        detail,
        frozen: None,
        soak: None,
    }
}

impl StatusReport {
    /// The table printed by `promoter status`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{}\n  digest {}\n", self.image, self.digest);
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<29} REPOSITORY",
            "STAGE", "HOLDS", "ENTERED"
        );
        for stage in &self.stages {
            let entered = stage
                .entered_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "-".into());
            let holds = if stage.holds_digest { "yes" } else { "no" };
            let _ = writeln!(
                out,
                "{:<16} {:<8} {:<29} {}",
                stage.stage, holds, entered, stage.repository
            );
        }
        let _ = writeln!(
            out,
            "\n{:<16} {:<15} {:<29} EVENT ID",
            "STAGE", "SIGNAL", "TIME"
        );
        for stage in &self.stages {
            for signal in &stage.signals {
                let _ = writeln!(
                    out,
                    "{:<16} {:<15} {:<29} {}",
                    stage.stage,
                    signal.kind,
                    signal
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    signal.event_id
                );
            }
        }
        if self.stages.iter().any(|s| !s.attestations.is_empty()) {
            let _ = writeln!(out, "\n{:<16} {:<73} KEY", "STAGE", "ATTESTED (ENVELOPE)");
            for stage in &self.stages {
                for attestation in &stage.attestations {
                    let _ = writeln!(
                        out,
                        "{:<16} {:<73} {}",
                        stage.stage, attestation.envelope, attestation.key
                    );
                }
            }
        }
        let _ = writeln!(out, "\n{:<32} {:<13} MISSING / DETAIL", "GATE", "STATE");
        for gate in &self.gates {
            let mut detail = gate.missing.join(", ");
            if let Some(extra) = &gate.detail {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                detail.push_str(extra);
            }
            let _ = writeln!(
                out,
                "{:<32} {:<13} {}",
                format!("{} -> {}", gate.from, gate.to),
                gate.state,
                detail
            );
        }
        out
    }
}

/// `promoter status` without an argument: every image, what each stage holds, what waits.
pub fn overview_text(view: &crate::promote::view::PipelineView) -> String {
    use crate::promote::view::short_digest;
    use std::fmt::Write as _;
    let mut out = String::new();
    if view.images.is_empty() {
        return "no image has been recorded or promoted yet\n".to_owned();
    }
    let width = view
        .images
        .iter()
        .map(|i| i.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = write!(out, "{:<width$}", "IMAGE");
    for stage in &view.stages {
        let _ = write!(out, "  {:<26}", stage.to_uppercase());
    }
    out.push('\n');
    for image in &view.images {
        let _ = write!(out, "{:<width$}", image.name);
        for cell in &image.stages {
            let text = match (&cell.tag, &cell.digest) {
                (Some(tag), Some(digest)) => format!("{tag} ({})", short_digest(digest)),
                (None, Some(digest)) => short_digest(digest),
                _ => "-".to_owned(),
            };
            let _ = write!(out, "  {text:<26}");
        }
        out.push('\n');
    }
    let waiting: Vec<_> = view
        .images
        .iter()
        .flat_map(|i| i.waiting.iter().map(move |w| (i, w)))
        .collect();
    if !waiting.is_empty() {
        out.push_str("\nWAITING\n");
        for (image, wait) in waiting {
            let version = wait
                .tag
                .clone()
                .unwrap_or_else(|| short_digest(&wait.digest));
            let _ = writeln!(
                out,
                "  {}:{version} {} -> {}: {} — {}",
                image.name, wait.stage, wait.to_stage, wait.state, wait.reason
            );
        }
    }
    out
}

/// `promoter status NAME`: every version of the image promoter keeps, stage by stage, and what
/// waits.
pub fn versions_text(
    view: &crate::promote::view::ImageView,
    versions: &[(String, Vec<evidence::ArrivalEntry>)],
) -> String {
    use std::fmt::Write as _;
    let mut out = format!("{}\n", view.name);
    for (stage, entries) in versions {
        let _ = writeln!(out, "\n{stage}");
        if entries.is_empty() {
            out.push_str("  (no version)\n");
        }
        for entry in entries {
            let arrived = entry
                .arrived_at()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<16} {}  arrived {arrived}",
                entry.tag.as_deref().unwrap_or("-"),
                entry.digest
            );
        }
    }
    if !view.waiting.is_empty() {
        out.push_str("\nWAITING\n");
        for wait in &view.waiting {
            let _ = writeln!(
                out,
                "  {} {} -> {}: {} — {}",
                wait.tag.as_deref().unwrap_or(&wait.digest),
                wait.stage,
                wait.to_stage,
                wait.state,
                wait.reason
            );
        }
    }
    if !view.promotions.is_empty() {
        out.push_str("\nPROMOTIONS\n");
        for p in &view.promotions {
            let _ = writeln!(
                out,
                "  {} {} {} -> {} by {}",
                p.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                p.tag.as_deref().unwrap_or(&p.digest),
                p.from_stage,
                p.to_stage,
                p.trigger
            );
        }
    }
    out
}
