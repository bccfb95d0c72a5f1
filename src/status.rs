//! `promoter status`: where a digest is in the pipeline and why — the stages that hold it, the
//! signals recorded for it, and each gate's state — read from the same records the service
//! decides from.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::evidence::{self, StageRecords};
use crate::registry::auth::IdentityChoice;
use crate::registry::{Digest, RegistryError, Transport};
use crate::rules::{self, Gate, Pipeline};

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
    /// `done` (the digest is in the next stage), `open`, `pending`, `blocked`, `not-in-stage`.
    pub state: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Reads the status of `image` (a reference in one of the pipeline's stages).
pub async fn status(
    pipeline: &Pipeline,
    transport: &Transport,
    identity: &IdentityChoice,
    image: &str,
) -> Result<StatusReport, StatusError> {
    let located = pipeline.locate(image, None)?;
    let home = transport
        .job_client(identity, &located.repository, "pull", None)
        .await?;
    let reference = located
        .image_ref()
        .api_reference()
        .ok_or_else(|| StatusError::NotFound(format!("{image} names no tag or digest")))?;
    let digest: Digest = home
        .head_manifest(&located.repository, &reference)
        .await?
        .ok_or_else(|| {
            StatusError::NotFound(format!("{image} is not in stage {}", located.stage))
        })?;

    let mut stages = Vec::new();
    let mut records_by_stage = Vec::new();
    for stage in pipeline.stages() {
        let repository = stage
            .repository(&located.image_name)
            .map_err(|e| StatusError::NotFound(e.to_string()))?;
        let client = transport
            .job_client(identity, &repository, "pull", None)
            .await?;
        let holds_digest = client
            .head_manifest(&repository, digest.as_str())
            .await?
            .is_some();
        let records = if holds_digest {
            evidence::load(&client, &repository).await?
        } else {
            StageRecords::default()
        };
        let mut signals = Vec::new();
        for (recorded, about) in records
            .for_digest(&digest)
            .iter()
            .map(|r| (r, "digest"))
            .chain(records.alerts.iter().map(|r| (r, "image in stage")))
        {
            let event_id = evidence::read_signal(&client, &repository, &recorded.tag)
                .await?
                .map(|record| record.event_id)
                .unwrap_or_else(|| recorded.tag.clone());
            signals.push(SignalStatus {
                kind: recorded.kind.to_string(),
                time: recorded.time,
                event_id,
                about: about.into(),
            });
        }
        signals.sort_by_key(|s| s.time);
        stages.push(StageStatus {
            stage: stage.name().to_string(),
            repository: repository.to_string(),
            holds_digest,
            entered_at: records.promoted_at.get(&digest).copied(),
            signals,
        });
        records_by_stage.push((stage.name().to_string(), holds_digest, records));
    }

    let now = Utc::now();
    let mut gates = Vec::new();
    for promotion in pipeline.promotions() {
        let find = |name: &str| records_by_stage.iter().find(|(stage, _, _)| stage == name);
        let (Some((_, in_from, records)), Some((_, in_to, _))) = (
            find(promotion.from().as_str()),
            find(promotion.to().as_str()),
        ) else {
            continue;
        };
        let mut gate = GateStatus {
            from: promotion.from().to_string(),
            to: promotion.to().to_string(),
            state: String::new(),
            missing: Vec::new(),
            detail: None,
        };
        if *in_to {
            gate.state = "done".into();
        } else if !*in_from {
            gate.state = "not-in-stage".into();
        } else {
            let evidence = records.evidence_for(&digest);
            match rules::evaluate(promotion, &evidence, now) {
                Gate::Open { .. } => gate.state = "open".into(),
                Gate::Pending {
                    missing,
                    not_before,
                    entry_time_unknown,
                } => {
                    gate.state = "pending".into();
                    gate.missing = missing.iter().map(|k| k.to_string()).collect();
                    gate.detail = match (not_before, entry_time_unknown) {
                        (Some(time), _) => Some(format!(
                            "minimum time in stage ends at {}",
                            time.to_rfc3339()
                        )),
                        (None, true) => Some("entry time into the stage unknown".into()),
                        _ => None,
                    };
                }
                Gate::Blocked { by } => {
                    gate.state = "blocked".into();
                    gate.detail = Some(format!("{} at {}", by.kind, by.time.to_rfc3339()));
                }
            }
        }
        gates.push(gate);
    }
    Ok(StatusReport {
        image: image.to_owned(),
        digest: digest.to_string(),
        stages,
        gates,
    })
}

impl StatusReport {
    /// The table printed by `promoter status`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{}\n  digest {}\n", self.image, self.digest);
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<25} REPOSITORY",
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
                "{:<16} {:<8} {:<25} {}",
                stage.stage, holds, entered, stage.repository
            );
        }
        let _ = writeln!(
            out,
            "
{:<16} {:<15} {:<25} EVENT ID",
            "STAGE", "SIGNAL", "TIME"
        );
        for stage in &self.stages {
            for signal in &stage.signals {
                let _ = writeln!(
                    out,
                    "{:<16} {:<15} {:<25} {}",
                    stage.stage,
                    signal.kind,
                    signal
                        .time
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    signal.event_id
                );
            }
        }
        let _ = writeln!(
            out,
            "
{:<32} {:<13} MISSING / DETAIL",
            "GATE", "STATE"
        );
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
