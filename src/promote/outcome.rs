//! What the service answers: a decision per signal, or an error that knows whether a retry can
//! help (DESIGN.md §5 "Routes").

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::evidence::EvidenceError;
use crate::publish::PublishError;
use crate::registry::{CopyReport, RegistryError};

/// What the service decided about a signal: the `decision` of DESIGN.md §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Promoted,
    AlreadyPromoted,
    Pending,
    Recorded,
    Rejected,
    Ignored,
}

impl Decision {
    /// Which decision speaks for a request that carried several signals (lowest first).
    pub fn rank(self) -> u8 {
        match self {
            Decision::Promoted => 0,
            Decision::AlreadyPromoted => 1,
            Decision::Pending => 2,
            Decision::Recorded => 3,
            Decision::Rejected => 4,
            Decision::Ignored => 5,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promoted => "promoted",
            Decision::AlreadyPromoted => "already-promoted",
            Decision::Pending => "pending",
            Decision::Recorded => "recorded",
            Decision::Rejected => "rejected",
            Decision::Ignored => "ignored",
        }
    }
}

/// The answer to one signal.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub decision: Decision,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_stage: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
}

impl Outcome {
    /// A rejection with nothing known but the reason.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Outcome::new(Decision::Rejected, reason)
    }

    pub(crate) fn new(decision: Decision, reason: impl Into<String>) -> Self {
        Outcome {
            decision,
            reason: reason.into(),
            event_id: None,
            image: None,
            digest: None,
            from_stage: None,
            to_stage: None,
            missing: Vec::new(),
            not_before: None,
            copy: None,
        }
    }
}

/// Why a signal could not be handled. Each variant says whether a retry can help; exactly one
/// place (`http::ack`) turns that into a status code or an ack.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The signal is wrong or the rules refuse it; retrying the same signal cannot help.
    #[error("{reason}")]
    Rejected {
        reason: String,
        outcome: Box<Outcome>,
    },
    /// A registry failed.
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// Recording or reading evidence failed.
    #[error("{0}")]
    Evidence(#[from] EvidenceError),
    /// Publishing the outcome failed.
    #[error("publishing to {topic}: {source}")]
    Publish { topic: String, source: PublishError },
}

impl PromoteError {
    pub fn is_transient(&self) -> bool {
        match self {
            PromoteError::Rejected { .. } => false,
            PromoteError::Registry(e) => e.is_transient(),
            PromoteError::Evidence(e) => e.is_transient(),
            PromoteError::Publish { source, .. } => source.is_transient(),
        }
    }

    pub(crate) fn rejected(reason: impl Into<String>, outcome: Outcome) -> Self {
        let reason = reason.into();
        PromoteError::Rejected {
            outcome: Box::new(Outcome {
                decision: Decision::Rejected,
                reason: reason.clone(),
                ..outcome
            }),
            reason,
        }
    }
}

/// Of several outcomes (one signal, several promotions or digests), the one to answer with.
pub(crate) fn most_significant(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by_key(|o| o.decision.rank());
    outcomes
        .into_iter()
        .next()
        .unwrap_or_else(|| Outcome::new(Decision::Recorded, "nothing to decide"))
}
