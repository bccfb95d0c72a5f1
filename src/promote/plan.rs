//! Deciding, without writing: for an image in a stage and the digests that are candidates to
//! leave it, read what the gates need — each digest's latest signal of every type its gates name,
//! when it arrived, the image's alert state, what each destination holds — judge every gate, and
//! say what to do with every candidate (`rules::judge`).
//!
//! Every read is by name (a tag derived from the digest, or one of promoter's small indexes), so
//! what a plan reads grows with the number of candidates and gates, never with the history of
//! the repositories (docs/evidence.md "Cost and concurrency").

use chrono::{DateTime, Utc};

use crate::events::SignalKind;
use crate::evidence::{
    ArrivalRecord, DigestRecords, LogRecord, PromotedIndex, SignalRecord, StageEventRecord, Toggle,
    ToggleLog,
};
use crate::registry::manifest::Descriptor;
use crate::registry::{Digest, Repository, Tag};
use crate::rules::{
    self, Candidate, Destination, Evidence, Frozen, Gate, NewestHeld, Promotion, Record, StageName,
    Verdict, Waiting,
};

use super::job::Job;
use super::outcome::PromoteError;
use super::service::Service;

/// The image in a stage that a job is about.
#[derive(Clone, Debug)]
pub struct Place {
    pub stage: StageName,
    /// The name below the stage's prefix, the same in every stage.
    pub image_name: String,
    /// `{stage registry}/{stage path}/{image_name}`.
    pub repository: Repository,
}

/// What a job already knows about a candidate before planning.
#[derive(Clone, Debug)]
pub struct Known {
    pub digest: Digest,
    /// The version tag, when the signal named it.
    pub tag: Option<Tag>,
    /// The digest's manifest in the stage, when the job has just seen it there.
    pub present: Option<Descriptor>,
    pub arrival: Option<ArrivalRecord>,
    /// The signal being handled, counted as recorded even while its write is landing.
    pub own: Option<(SignalKind, SignalRecord)>,
    /// For an approval being handled: the destinations it counts for (verified, and named by
    /// their promotions' `approvers`).
    pub approves_for: Vec<StageName>,
}

/// A candidate as the plan found it.
#[derive(Clone, Debug)]
pub struct Found {
    pub digest: Digest,
    pub tag: Option<Tag>,
    /// Its manifest in the stage (`None`: gone from the stage).
    pub subject: Option<Descriptor>,
    pub arrival: Option<ArrivalRecord>,
    /// The latest signal of each digest type the gates name.
    pub signals: Vec<(SignalKind, SignalRecord)>,
    /// For each promotion that names approvers, the latest approval that counts for it.
    pub approvals: Vec<(StageName, Option<SignalRecord>)>,
}

/// One promotion's judgement of every candidate.
#[derive(Clone, Debug)]
pub struct PromotionPlan<'p> {
    pub promotion: &'p Promotion,
    pub destination: Repository,
    /// Per candidate, in the order of [`Plan::found`].
    pub candidates: Vec<Candidate>,
    pub verdicts: Vec<Verdict>,
}

/// What to do.
#[derive(Clone, Debug)]
pub struct Plan<'p> {
    pub place: Place,
    pub found: Vec<Found>,
    /// The image's alert records in the stage (when a gate reads the alert state).
    pub alerts: Vec<LogRecord>,
    pub promotions: Vec<PromotionPlan<'p>>,
}

impl Plan<'_> {
    /// Whether executing it writes anything: a digest moves, or one already there is announced
    /// again.
    pub fn acts(&self) -> bool {
        self.promotions.iter().any(|p| {
            p.verdicts
                .iter()
                .any(|v| matches!(v, Verdict::Move | Verdict::AlreadyPromoted))
        })
    }
}

/// The digest signal types the gates of `promotions` name, each once.
fn digest_kinds(promotions: &[&Promotion]) -> Vec<SignalKind> {
    let mut kinds: Vec<SignalKind> = promotions
        .iter()
        .flat_map(|p| p.require().iter().chain(p.block_on()))
        .filter(|k| !k.is_alert())
        .cloned()
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

impl Service {
    /// Plans `promotions` out of `place` for `candidates`, as of `now`.
    pub(crate) async fn plan<'p>(
        &self,
        job: &Job,
        place: &Place,
        promotions: &[&'p Promotion],
        candidates: Vec<Known>,
        now: DateTime<Utc>,
    ) -> Result<Plan<'p>, PromoteError> {
        let stage_client = job.client(&place.repository)?;
        let records = DigestRecords {
            client: stage_client,
            repository: &place.repository,
        };
        let kinds = digest_kinds(promotions);
        let approving: Vec<StageName> = promotions
            .iter()
            .filter(|p| !p.approvers().is_empty() && p.require().contains(&SignalKind::Approved))
            .map(|p| p.to().clone())
            .collect();
        let needs_alerts = promotions.iter().any(|p| p.names_alerts());
        let alerts_repository = self.state.alerts(&place.stage, &place.image_name)?;
        let alerts = async {
            if !needs_alerts {
                return Ok(Vec::new());
            }
            let log = ToggleLog {
                client: job.client(&alerts_repository)?,
                repository: &alerts_repository,
                toggle: Toggle::Alert,
            };
            Ok::<_, PromoteError>(log.list().await?)
        };
        let found = futures::future::try_join_all(candidates.into_iter().map(|known| {
            find(
                records,
                known,
                &kinds,
                &approving,
                self.pipeline.is_promoted_into(place.stage.as_str()),
            )
        }));
        let destinations = futures::future::try_join_all(
            promotions
                .iter()
                .map(|promotion| self.destination_of(job, place, promotion, now)),
        );
        let (alerts, found, destinations) =
            futures::future::try_join3(alerts, found, destinations).await?;

        let mut plans = Vec::with_capacity(promotions.len());
        for (promotion, (destination, newest_held, frozen)) in promotions.iter().zip(destinations) {
            let destination_client = job.client(&destination)?;
            let sides =
                futures::future::try_join_all(found.iter().map(|candidate| {
                    destination_side(destination_client, &destination, candidate)
                }))
                .await?;
            let candidates: Vec<Candidate> = found
                .iter()
                .zip(sides)
                .map(|(candidate, destination)| {
                    let evidence = evidence(promotion, candidate, &alerts, frozen.clone());
                    Candidate {
                        digest: candidate.digest.clone(),
                        arrived_at: candidate.arrival.as_ref().map(|a| a.time),
                        gate: rules::evaluate(promotion, &evidence, now),
                        gone: candidate.subject.is_none(),
                        has_tag: candidate.tag.is_some(),
                        destination,
                    }
                })
                .collect();
            let verdicts = rules::judge(&candidates, newest_held.as_ref());
            plans.push(PromotionPlan {
                promotion,
                destination,
                candidates,
                verdicts,
            });
        }
        Ok(Plan {
            place: place.clone(),
            found,
            alerts,
            promotions: plans,
        })
    }

    /// What holds promotions into `stage` at `now`: a `freeze` not yet followed by its
    /// `unfreeze` (until then), else an open window of the rules (until it ends).
    pub(crate) async fn frozen(
        &self,
        job: &Job,
        stage: &StageName,
        now: DateTime<Utc>,
    ) -> Result<Option<Frozen>, PromoteError> {
        let repository = self.state.freezes(stage)?;
        let log = ToggleLog {
            client: job.client(&repository)?,
            repository: &repository,
            toggle: Toggle::Freeze,
        };
        let latest = log
            .list()
            .await?
            .into_iter()
            .max_by(|a, b| (a.time, &a.tag).cmp(&(b.time, &b.tag)));
        if let Some(latest) = latest.filter(|r| r.on) {
            let record: Option<StageEventRecord> = log.read(&latest.tag).await?;
            return Ok(Some(Frozen {
                name: None,
                reason: Some(
                    record
                        .and_then(|r| r.reason)
                        .unwrap_or_else(|| format!("frozen since {}", latest.time.to_rfc3339())),
                ),
                until: None,
            }));
        }
        Ok(self
            .pipeline
            .freezes()
            .iter()
            .filter(|w| w.applies_to(stage))
            .filter_map(|w| w.open_until(now).map(|until| (until, w)))
            .max_by_key(|(until, _)| *until)
            .map(|(until, window)| Frozen {
                name: Some(window.name().to_owned()),
                reason: None,
                until: Some(until),
            }))
    }

    /// The destination repository of `promotion` for this image, and the newest digest promoter
    /// promoted there that the destination still holds.
    async fn destination_of(
        &self,
        job: &Job,
        place: &Place,
        promotion: &Promotion,
        now: DateTime<Utc>,
    ) -> Result<(Repository, Option<NewestHeld>, Option<Frozen>), PromoteError> {
        let destination = self.destination_repository(promotion, &place.image_name)?;
        let index_repository = self.state.promoted(promotion.to(), &place.image_name)?;
        let index = PromotedIndex {
            client: job.client(&index_repository)?,
            repository: &index_repository,
        };
        let (claims, frozen) = futures::future::try_join(
            async { Ok(index.list().await?) },
            self.frozen(job, promotion.to(), now),
        )
        .await?;
        let newest = claims.into_iter().next_back();
        let newest_held = match newest {
            Some((arrived_at, digest)) => {
                // A version someone deleted from the destination (a rollback) supersedes nothing.
                let held = job
                    .client(&destination)?
                    .head_manifest(&destination, digest.as_str())
                    .await?
                    .is_some();
                held.then_some(NewestHeld { digest, arrived_at })
            }
            None => None,
        };
        Ok((destination, newest_held, frozen))
    }
}

/// Reads what is not yet known about one candidate.
async fn find(
    records: DigestRecords<'_>,
    known: Known,
    kinds: &[SignalKind],
    approving: &[StageName],
    promoted_into: bool,
) -> Result<Found, PromoteError> {
    let digest = known.digest.clone();
    let subject = async {
        match known.present.clone() {
            Some(present) => Ok(Some(present)),
            None => Ok::<_, PromoteError>(
                records
                    .client
                    .head_descriptor(records.repository, digest.as_str())
                    .await?
                    .map(|(_, descriptor)| descriptor),
            ),
        }
    };
    let arrival = async {
        match known.arrival.clone() {
            Some(arrival) => Ok(Some(arrival)),
            None => Ok::<_, PromoteError>(records.arrival(&digest, promoted_into).await?),
        }
    };
    let own = |kind: &SignalKind| {
        known
            .own
            .as_ref()
            .filter(|(own_kind, _)| own_kind == kind)
            .map(|(_, record)| record.clone())
    };
    let signals = futures::future::try_join_all(kinds.iter().map(|kind| {
        let own = own(kind);
        let digest = &digest;
        async move {
            let record = match own {
                Some(own) => Some(own),
                None => records.latest_signal(digest, kind).await?,
            };
            Ok::<_, PromoteError>(record.map(|r| (kind.clone(), r)))
        }
    }));
    let approvals = futures::future::try_join_all(approving.iter().map(|to| {
        let digest = &digest;
        // The approval being handled counts here only if it was recorded as counting here.
        let own = known
            .own
            .as_ref()
            .filter(|(kind, _)| *kind == SignalKind::Approved)
            .filter(|_| known.approves_for.contains(to))
            .map(|(_, record)| record.clone());
        async move {
            let record = match own {
                Some(own) => Some(own),
                None => records.approval_for(digest, to.as_str()).await?,
            };
            Ok::<_, PromoteError>((to.clone(), record))
        }
    }));
    let (subject, arrival, signals, approvals) =
        futures::future::try_join4(subject, arrival, signals, approvals).await?;
    let signals: Vec<(SignalKind, SignalRecord)> = signals.into_iter().flatten().collect();
    // The version: as the signal named it, else as promoter knew it when the digest arrived,
    // else as any of its signals named it.
    let tag = known
        .tag
        .or_else(|| {
            arrival
                .as_ref()
                .and_then(|a| a.tag.as_deref())
                .and_then(|t| Tag::try_from(t).ok())
        })
        .or_else(|| {
            signals
                .iter()
                .find_map(|(_, r)| r.tag.as_deref().and_then(|t| Tag::try_from(t).ok()))
        });
    Ok(Found {
        digest,
        tag,
        subject,
        arrival,
        signals,
        approvals,
    })
}

/// What `promotion`'s gate is judged on for one candidate.
fn evidence(
    promotion: &Promotion,
    candidate: &Found,
    alerts: &[LogRecord],
    frozen: Option<Frozen>,
) -> Evidence {
    let record = |kind: &SignalKind, r: &SignalRecord| Record {
        kind: kind.clone(),
        event_id: r.event_id.clone(),
        time: r.time,
    };
    let approval_for = candidate
        .approvals
        .iter()
        .find(|(to, _)| to == promotion.to())
        .map(|(_, approval)| approval.as_ref());
    let mut digest_signals: Vec<Record> = candidate
        .signals
        .iter()
        // With approvers, only an approval recorded as counting for this promotion counts.
        .filter(|(kind, _)| *kind != SignalKind::Approved || approval_for.is_none())
        .map(|(kind, r)| record(kind, r))
        .collect();
    let mut approval_refused = None;
    if let Some(counted) = approval_for {
        match counted {
            Some(approval) => digest_signals.push(record(&SignalKind::Approved, approval)),
            None => {
                approval_refused = candidate
                    .signals
                    .iter()
                    .find(|(kind, _)| *kind == SignalKind::Approved)
                    .map(|(_, latest)| refusal(promotion, latest));
            }
        }
    }
    Evidence {
        digest_signals,
        // An alert record's tag stands in for its event id until a promotion needs the id.
        alert_signals: alerts
            .iter()
            .map(|alert| Record {
                kind: if alert.on {
                    SignalKind::AlertFiring
                } else {
                    SignalKind::AlertClear
                },
                event_id: alert.tag.clone(),
                time: alert.time,
            })
            .collect(),
        entered_stage_at: candidate.arrival.as_ref().map(|a| a.time),
        frozen,
        approval_refused,
    }
}

/// Why the latest approval does not count for `promotion`.
fn refusal(promotion: &Promotion, latest: &SignalRecord) -> String {
    let allowed: Vec<&str> = promotion
        .approvers()
        .iter()
        .map(rules::ApproverPattern::as_str)
        .collect();
    match &latest.approver {
        None => format!(
            "the approval of event {} has no verified approver (it came through Pub/Sub or without an identity token): promotion {} -> {} counts approvals by {} sent with `promoter approve`",
            latest.event_id,
            promotion.from(),
            promotion.to(),
            allowed.join(", ")
        ),
        Some(approver) => format!(
            "{approver} approved (event {}), but promotion {} -> {} counts approvals by {} only",
            latest.event_id,
            promotion.from(),
            promotion.to(),
            allowed.join(", ")
        ),
    }
}

/// What the destination holds under the candidate's tag.
async fn destination_side(
    client: &crate::registry::RegistryClient,
    destination: &Repository,
    candidate: &Found,
) -> Result<Destination, PromoteError> {
    let Some(tag) = &candidate.tag else {
        return Ok(Destination::Absent);
    };
    match client.head_manifest(destination, tag.as_str()).await? {
        None => Ok(Destination::Absent),
        Some(held) if held == candidate.digest => {
            let recorded = DigestRecords {
                client,
                repository: destination,
            }
            .is_recorded_as_promoted(&candidate.digest)
            .await?;
            Ok(Destination::Holds { recorded })
        }
        Some(other) => Ok(Destination::TagHoldsOther(other)),
    }
}

/// Why a gate waits, for people: what is missing, until when, and the whole sentence.
pub(crate) fn pending_reason(
    promotion: &Promotion,
    gate: &Gate,
) -> (Vec<String>, Option<DateTime<Utc>>, String) {
    let route = format!("promotion {} -> {}", promotion.from(), promotion.to());
    match gate {
        Gate::Pending(waiting) => {
            let Waiting {
                missing,
                not_before,
                entry_time_unknown,
                soak,
                frozen,
                approval_refused,
            } = waiting;
            let missing: Vec<String> = missing.iter().map(|k| k.to_string()).collect();
            let mut parts = Vec::new();
            if let Some(frozen) = frozen {
                parts.push(frozen_reason(frozen));
            }
            if *entry_time_unknown {
                parts.push(format!(
                    "no record of when the digest entered {}, so its time there cannot be checked",
                    promotion.from()
                ));
            }
            if !missing.is_empty() {
                parts.push(format!("waiting for {}", missing.join(", ")));
            }
            if let Some(refused) = approval_refused {
                parts.push(refused.clone());
            }
            match soak {
                Some(rules::Soak::Running { started_at, met_at })
                    if Some(*met_at) == *not_before =>
                {
                    parts.push(format!(
                        "soaking in {} since {}, clear of alerts until {}",
                        promotion.from(),
                        started_at.to_rfc3339(),
                        met_at.to_rfc3339()
                    ))
                }
                Some(rules::Soak::Stopped { firing_since }) => parts.push(format!(
                    "soak stopped: an alert has been firing since {}",
                    firing_since.to_rfc3339()
                )),
                _ => {}
            }
            if let Some(time) = not_before
                && !matches!(soak, Some(rules::Soak::Running { met_at, .. }) if met_at == time)
            {
                parts.push(format!(
                    "minimum time in {} ends at {}",
                    promotion.from(),
                    time.to_rfc3339()
                ));
            }
            let reason = format!("{route} pending: {}", parts.join("; "));
            (missing, *not_before, reason)
        }
        Gate::Blocked { by } => (
            Vec::new(),
            None,
            format!(
                "{route} is blocked by {} (recorded {})",
                by.kind,
                by.time.to_rfc3339()
            ),
        ),
        Gate::Open { .. } => (Vec::new(), None, format!("{route} is open")),
    }
}

/// A freeze, for people.
pub(crate) fn frozen_reason(frozen: &Frozen) -> String {
    match (&frozen.name, &frozen.reason, frozen.until) {
        (Some(name), _, Some(until)) => {
            format!("frozen by window {name} until {}", until.to_rfc3339())
        }
        (_, Some(reason), _) => format!("frozen: {reason} (until an unfreeze)"),
        _ => "frozen".to_owned(),
    }
}
