//! What the service answers (docs/routes.md "The answer"): outcomes are values — what became of
//! each candidate digest, and what the signal as a whole came to — and errors are failures that
//! know whether a retry can help. `http::ack` turns both into a status, an ack or a nack.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::evidence::EvidenceError;
use crate::publish::PublishError;
use crate::registry::{CopyReport, RegistryError};
use crate::rules::Frozen;

/// What the service decided about a signal: the `decision` of docs/routes.md "Answers".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    Promoted,
    AlreadyPromoted,
    Pending,
    Recorded,
    Rejected,
    Ignored,
    Reconciled,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Promoted => "promoted",
            Decision::AlreadyPromoted => "already-promoted",
            Decision::Pending => "pending",
            Decision::Recorded => "recorded",
            Decision::Rejected => "rejected",
            Decision::Ignored => "ignored",
            Decision::Reconciled => "reconciled",
        }
    }
}

/// What became of one candidate digest for one promotion.
#[derive(Clone, Debug, PartialEq)]
pub enum Fate {
    /// Copied, recorded and announced.
    Promoted { image: String, copy: CopyReport },
    /// The destination already held it with its promotion record. `copy` is set when it was
    /// announced again (under the same id) because the signal could have opened its gate: a
    /// redelivery after a lost announcement.
    AlreadyPromoted {
        image: String,
        copy: Option<CopyReport>,
    },
    /// Its gate waits.
    Pending {
        missing: Vec<String>,
        not_before: Option<DateTime<Utc>>,
        /// A freeze holds it (docs/rules.md "Freezes").
        frozen: Option<Frozen>,
        reason: String,
    },
    /// A digest of the image that entered the from-stage later moved instead.
    Superseded { by: String, reason: String },
    /// It can never move.
    Skipped { reason: String },
}

impl Fate {
    /// Which fate speaks for a signal that decided several (lowest first); `None` for fates that
    /// only ever appear in the `skipped` and `superseded` lists.
    fn rank(&self) -> Option<u8> {
        match self {
            Fate::Promoted { .. } => Some(0),
            Fate::AlreadyPromoted { .. } => Some(1),
            Fate::Pending { .. } => Some(2),
            Fate::Superseded { .. } | Fate::Skipped { .. } => None,
        }
    }

    /// Final: nothing later can change it, so the digest stops waiting.
    pub fn is_final(&self) -> bool {
        !matches!(self, Fate::Pending { .. })
    }

    pub fn reason(&self) -> String {
        match self {
            Fate::Promoted { image, copy } => format!("promoted {} to {image}", copy.source),
            Fate::AlreadyPromoted { image, .. } => format!("{image} already holds it"),
            Fate::Pending { reason, .. }
            | Fate::Superseded { reason, .. }
            | Fate::Skipped { reason } => reason.clone(),
        }
    }
}

/// A freeze as an answer shows it: the window's `name` or the freeze event's `reason`, and
/// `until` when it ends by itself.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FrozenAnswer {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub until: Option<DateTime<Utc>>,
}

impl From<&Frozen> for FrozenAnswer {
    fn from(frozen: &Frozen) -> Self {
        FrozenAnswer {
            name: frozen.name.clone(),
            reason: frozen.reason.clone(),
            until: frozen.until,
        }
    }
}

/// One candidate's fate, with what names it.
#[derive(Clone, Debug, PartialEq)]
pub struct CandidateOutcome {
    pub digest: String,
    pub tag: Option<String>,
    pub from_stage: String,
    pub to_stage: String,
    pub fate: Fate,
}

/// An entry of the `skipped` and `superseded` lists of an answer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Listed {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub to_stage: String,
    pub reason: String,
}

/// One candidate as it appears in `candidates` when a signal decided more than one.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub to_stage: String,
    pub decision: &'static str,
    pub reason: String,
}

/// What a signal came to: the response body of docs/routes.md, and the decision log line.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Answer {
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
    /// `{"name"|"reason", "until"}` of the freeze that holds a pending promotion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen: Option<FrozenAnswer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyReport>,
    /// `reconcile` only: the references promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted: Option<Vec<String>>,
    /// `reconcile` only: how many digests still wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Listed>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<Listed>,
    /// Every candidate, when the signal decided more than one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Summary>,
}

impl Answer {
    /// An answer with nothing known but the decision and the reason.
    pub fn new(decision: Decision, reason: impl Into<String>) -> Answer {
        Answer {
            decision,
            reason: reason.into(),
            event_id: None,
            image: None,
            digest: None,
            from_stage: None,
            to_stage: None,
            missing: Vec::new(),
            not_before: None,
            frozen: None,
            copy: None,
            promoted: None,
            waiting: None,
            skipped: Vec::new(),
            superseded: Vec::new(),
            candidates: Vec::new(),
        }
    }

    /// The signal was refused: bad input, or the rules refuse its digest for good.
    pub fn rejected(reason: impl Into<String>) -> Answer {
        Answer::new(Decision::Rejected, reason)
    }

    pub fn is_rejected(&self) -> bool {
        self.decision == Decision::Rejected
    }

    /// The answer for a signal that decided `outcomes`. The headline is the best fate: promoted,
    /// then already promoted, then pending. Fates that cannot move are listed under `skipped`
    /// and `superseded`. With no headline, the answer is `nothing`: `recorded` with its reason,
    /// or `rejected` for a digest signal whose own digest can never move.
    pub fn decided(mut self, outcomes: &[CandidateOutcome], nothing: Answer) -> Answer {
        for outcome in outcomes {
            let listed = || Listed {
                digest: outcome.digest.clone(),
                tag: outcome.tag.clone(),
                to_stage: outcome.to_stage.clone(),
                reason: outcome.fate.reason(),
            };
            match &outcome.fate {
                Fate::Skipped { .. } => self.skipped.push(listed()),
                Fate::Superseded { .. } => self.superseded.push(listed()),
                _ => {}
            }
        }
        if outcomes.len() > 1 {
            self.candidates = outcomes
                .iter()
                .map(|o| Summary {
                    digest: o.digest.clone(),
                    tag: o.tag.clone(),
                    to_stage: o.to_stage.clone(),
                    decision: match &o.fate {
                        Fate::Promoted { .. } => "promoted",
                        Fate::AlreadyPromoted { .. } => "already-promoted",
                        Fate::Pending { .. } => "pending",
                        Fate::Superseded { .. } => "superseded",
                        Fate::Skipped { .. } => "skipped",
                    },
                    reason: o.fate.reason(),
                })
                .collect();
        }
        let headline = outcomes
            .iter()
            .filter_map(|o| o.fate.rank().map(|rank| (rank, o)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, o)| o);
        let Some(headline) = headline else {
            return Answer {
                decision: nothing.decision,
                reason: nothing.reason,
                skipped: self.skipped,
                superseded: self.superseded,
                candidates: self.candidates,
                digest: self.digest.or(nothing.digest),
                to_stage: outcomes
                    .first()
                    .map(|o| o.to_stage.clone())
                    .or(self.to_stage),
                ..self
            };
        };
        self.reason = headline.fate.reason();
        self.digest = Some(headline.digest.clone());
        self.from_stage = Some(headline.from_stage.clone());
        self.to_stage = Some(headline.to_stage.clone());
        match &headline.fate {
            Fate::Promoted { image, copy } => {
                self.decision = Decision::Promoted;
                self.image = Some(image.clone());
                self.copy = Some(copy.clone());
            }
            Fate::AlreadyPromoted { image, copy } => {
                self.decision = Decision::AlreadyPromoted;
                self.image = Some(image.clone());
                self.copy = copy.clone();
            }
            Fate::Pending {
                missing,
                not_before,
                frozen,
                ..
            } => {
                self.decision = Decision::Pending;
                self.missing = missing.clone();
                self.not_before = *not_before;
                self.frozen = frozen.as_ref().map(FrozenAnswer::from);
            }
            Fate::Superseded { .. } | Fate::Skipped { .. } => {}
        }
        self
    }
}

/// Why a signal could not be decided now. Each variant says whether a retry can help; exactly
/// one place (`http::ack`) turns that into a status code or an ack.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// A registry failed.
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// Recording or reading evidence failed.
    #[error("{0}")]
    Evidence(#[from] EvidenceError),
    /// The `promoted` event of a digest already copied and recorded could not be published.
    /// Always retried: the redelivery finds the copy in place and publishes the same event id.
    #[error("{image} was promoted, but announcing it on {topic} failed: {source}")]
    Announce {
        image: String,
        topic: String,
        source: PublishError,
    },
    /// A digest was copied but its promotion attestation could not be written (a signing key
    /// or API that failed). Always retried: the copy stays, it is not announced without its
    /// attestation, and the redelivery finds the copy in place and attests it.
    #[error("{image} was copied, but attesting the promotion failed: {source}")]
    Attest {
        image: String,
        source: Box<crate::attest::AttestError>,
    },
    /// Publishing a `promotion-rejected` failed.
    #[error("publishing to {topic}: {source}")]
    Publish { topic: String, source: PublishError },
}

impl PromoteError {
    pub fn is_transient(&self) -> bool {
        match self {
            PromoteError::Registry(e) => e.is_transient(),
            PromoteError::Evidence(e) => e.is_transient(),
            PromoteError::Announce { .. } | PromoteError::Attest { .. } => true,
            PromoteError::Publish { source, .. } => source.is_transient(),
        }
    }
}
