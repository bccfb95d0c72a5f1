//! Which of the digests waiting in a stage move, and what becomes of the others (docs/rules.md):
//! each candidate is judged on its own, so one that cannot move never stops another, and the
//! promotion's `select` says which of the open ones go.
//!
//! Pure, like the rest of `rules`: the caller reads what the registry holds and passes it in.

use chrono::{DateTime, Utc};

use crate::registry::Digest;

use super::gate::{Gate, Record};
use super::model::{Promotion, Select};

/// What the registry holds for one candidate digest, as far as one promotion is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    /// When the digest entered the from-stage (promoted there, or first seen there).
    pub arrived_at: Option<DateTime<Utc>>,
    /// The gate judged on the digest's records.
    pub gate: Gate,
    /// The from-stage no longer holds the digest (a cleanup policy deleted it).
    pub gone: bool,
    /// Whether a version tag is known for the digest (the destination gets the same tag).
    pub has_tag: bool,
    /// What the destination holds under the digest's tag.
    pub destination: Destination,
}

/// The destination's side of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Neither the tag nor the digest is there.
    Absent,
    /// The tag holds this digest; `recorded` when its promotion record is there too.
    Holds { recorded: bool },
    /// The tag holds another digest (tags are immutable in a path to production).
    TagHoldsOther(Digest),
}

/// The newest digest the destination holds, by when it entered the from-stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestHeld {
    pub digest: Digest,
    pub arrived_at: DateTime<Utc>,
}

/// What becomes of one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its gate is open: copy it (or finish a copy that was not recorded).
    Move,
    /// The destination holds it with its promotion record: nothing to copy (announce again,
    /// under the same id, in case the first announcement was lost).
    AlreadyPromoted,
    /// Not yet: the gate waits for signals, time, or an alert to clear.
    Pending(Gate),
    /// A digest of the image that entered the from-stage later is (or is being) promoted.
    Superseded { by: Digest },
    /// It can never move.
    Skipped(Skip),
}

/// Why a candidate can never move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// The from-stage no longer holds it.
    Gone,
    /// No signal named it by a tag, so there is no version to promote it under.
    NoTag,
    /// A signal about the digest itself blocks it for good (a failed test).
    Blocked(Record),
    /// The destination tag holds another digest.
    TagConflict { existing: Digest },
}

/// Judges each candidate on its own. `newest_held` is the newest digest the destination holds
/// (by arrival in the from-stage): an older candidate is superseded by it. Every candidate whose
/// gate is open comes back as [`Verdict::Move`]; [`move_order`] says which of them go.
pub fn judge(candidates: &[Candidate], newest_held: Option<&NewestHeld>) -> Vec<Verdict> {
    candidates
        .iter()
        .map(|candidate| judge_one(candidate, newest_held))
        .collect()
}

fn judge_one(candidate: &Candidate, newest_held: Option<&NewestHeld>) -> Verdict {
    if candidate.gone {
        return Verdict::Skipped(Skip::Gone);
    }
    if candidate.destination == (Destination::Holds { recorded: true }) {
        return Verdict::AlreadyPromoted;
    }
    // Older than what the destination holds: it can never move, whatever its gate says.
    if let Some(newest) = newest_held
        && newest.digest != candidate.digest
        && !arrived_after(candidate, newest)
    {
        return Verdict::Superseded {
            by: newest.digest.clone(),
        };
    }
    match &candidate.gate {
        Gate::Open { .. } => {}
        // A digest signal (a failed test) is a fact about the digest that never goes away; an
        // alert ends when it clears, so a gate it blocks waits.
        Gate::Blocked { by } if !by.kind.is_alert() => {
            return Verdict::Skipped(Skip::Blocked(by.clone()));
        }
        waiting => return Verdict::Pending(waiting.clone()),
    }
    if !candidate.has_tag {
        return Verdict::Skipped(Skip::NoTag);
    }
    if let Destination::TagHoldsOther(existing) = &candidate.destination {
        return Verdict::Skipped(Skip::TagConflict {
            existing: existing.clone(),
        });
    }
    Verdict::Move
}

/// Whether `candidate` entered the from-stage after the destination's newest. An unknown
/// arrival counts as older: promoting it could take the destination back in time.
fn arrived_after(candidate: &Candidate, newest: &NewestHeld) -> bool {
    candidate
        .arrived_at
        .is_some_and(|at| (at, &candidate.digest) > (newest.arrived_at, &newest.digest))
}

/// The candidates judged [`Verdict::Move`], in the order to try them: for `newest` the newest
/// first (the first that succeeds supersedes the rest), for `all` the oldest first (each is
/// promoted and announced in the order they entered the from-stage).
pub fn move_order(
    promotion: &Promotion,
    candidates: &[Candidate],
    verdicts: &[Verdict],
) -> Vec<usize> {
    let mut moves: Vec<usize> = verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| **v == Verdict::Move)
        .map(|(i, _)| i)
        .collect();
    // Unknown arrivals sort first (oldest); equal times are ordered by digest so every instance
    // makes the same choice.
    moves.sort_by(|&a, &b| {
        let key = |i: usize| (candidates[i].arrived_at, &candidates[i].digest);
        key(a).cmp(&key(b))
    });
    if promotion.select() == Select::Newest {
        moves.reverse();
    }
    moves
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::events::SignalKind;
    use crate::rules::{StageName, Waiting};

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, minute, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn open() -> Gate {
        Gate::Open {
            satisfied_by: vec![],
        }
    }

    fn candidate(n: u8, minute: u32, gate: Gate) -> Candidate {
        Candidate {
            digest: digest(n),
            arrived_at: Some(at(minute)),
            gate,
            gone: false,
            has_tag: true,
            destination: Destination::Absent,
        }
    }

    fn record(kind: SignalKind) -> Record {
        Record {
            kind,
            event_id: "e".into(),
            time: at(0),
        }
    }

    fn promotion(select: Select) -> Promotion {
        let stage = |name: &str| StageName::try_from(name).unwrap_or_else(|e| panic!("{e}"));
        Promotion::new(
            stage("extended-test"),
            stage("prod"),
            vec![SignalKind::SoakComplete, SignalKind::AlertClear],
            vec![SignalKind::AlertFiring, SignalKind::TestFailed],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .with_select(select)
    }

    #[test]
    fn each_candidate_is_judged_on_its_own() {
        let gone = Candidate {
            gone: true,
            ..candidate(1, 1, open())
        };
        let failed = candidate(
            2,
            2,
            Gate::Blocked {
                by: record(SignalKind::TestFailed),
            },
        );
        let firing = candidate(
            3,
            3,
            Gate::Blocked {
                by: record(SignalKind::AlertFiring),
            },
        );
        let waiting = candidate(
            4,
            4,
            Gate::Pending(Waiting {
                missing: vec![SignalKind::SoakComplete],
                ..Waiting::default()
            }),
        );
        let untagged = Candidate {
            has_tag: false,
            ..candidate(5, 5, open())
        };
        let conflict = Candidate {
            destination: Destination::TagHoldsOther(digest(99)),
            ..candidate(6, 6, open())
        };
        let there = Candidate {
            destination: Destination::Holds { recorded: true },
            ..candidate(7, 7, open())
        };
        let half_done = Candidate {
            destination: Destination::Holds { recorded: false },
            ..candidate(8, 8, open())
        };
        let ready = candidate(9, 9, open());
        let verdicts = judge(
            &[
                gone,
                failed,
                firing.clone(),
                waiting.clone(),
                untagged,
                conflict,
                there,
                half_done,
                ready,
            ],
            None,
        );
        assert_eq!(
            verdicts,
            vec![
                Verdict::Skipped(Skip::Gone),
                Verdict::Skipped(Skip::Blocked(record(SignalKind::TestFailed))),
                Verdict::Pending(firing.gate),
                Verdict::Pending(waiting.gate),
                Verdict::Skipped(Skip::NoTag),
                Verdict::Skipped(Skip::TagConflict {
                    existing: digest(99)
                }),
                Verdict::AlreadyPromoted,
                Verdict::Move,
                Verdict::Move,
            ]
        );
    }

    #[test]
    fn an_older_digest_than_the_destination_holds_is_superseded_whatever_its_gate() {
        let newest = NewestHeld {
            digest: digest(9),
            arrived_at: at(30),
        };
        let verdicts = judge(
            &[
                candidate(1, 10, open()),
                candidate(
                    2,
                    20,
                    Gate::Pending(Waiting {
                        missing: vec![SignalKind::AlertClear],
                        ..Waiting::default()
                    }),
                ),
                Candidate {
                    arrived_at: None,
                    ..candidate(3, 0, open())
                },
                candidate(4, 40, open()),
            ],
            Some(&newest),
        );
        assert_eq!(
            verdicts,
            vec![
                Verdict::Superseded { by: digest(9) },
                Verdict::Superseded { by: digest(9) },
                Verdict::Superseded { by: digest(9) },
                Verdict::Move,
            ]
        );
    }

    #[test]
    fn newest_moves_the_last_arrival_first_and_all_moves_everyone_oldest_first() {
        let candidates = [
            candidate(1, 20, open()),
            candidate(2, 10, open()),
            candidate(
                3,
                30,
                Gate::Pending(Waiting {
                    missing: vec![SignalKind::SoakComplete],
                    ..Waiting::default()
                }),
            ),
            candidate(4, 15, open()),
        ];
        let verdicts = judge(&candidates, None);
        assert_eq!(
            move_order(&promotion(Select::Newest), &candidates, &verdicts),
            vec![0, 3, 1]
        );
        assert_eq!(
            move_order(&promotion(Select::All), &candidates, &verdicts),
            vec![1, 3, 0]
        );
    }

    #[test]
    fn equal_arrivals_are_ordered_by_digest_the_same_everywhere() {
        let a = candidate(1, 5, open());
        let b = candidate(2, 5, open());
        let forward = [a.clone(), b.clone()];
        let backward = [b, a];
        let order = |c: &[Candidate]| {
            let verdicts = judge(c, None);
            move_order(&promotion(Select::Newest), c, &verdicts)
                .into_iter()
                .map(|i| c[i].digest.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(&forward), order(&backward));
    }
}
