//! Gate evaluation: given the durable records for a digest and its image's alert state, may the
//! digest move now? Pure: the caller reads the records and supplies `now`, so the decision can be
//! re-made from the registry at any time by any instance with the same result.

use chrono::{DateTime, TimeDelta, Utc};

use crate::events::SignalKind;

use super::model::Promotion;

/// One recorded signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: SignalKind,
    /// The CloudEvent id that carried it.
    pub event_id: String,
    /// When it happened (the event's `time`, else when it was recorded).
    pub time: DateTime<Utc>,
}

/// A freeze holding promotions into the destination (docs/rules.md "Freezes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    /// The window's name, for a window of the rules.
    pub name: Option<String>,
    /// The `freeze` event's reason, for a freeze someone sent.
    pub reason: Option<String>,
    /// When the window ends; `None` for a freeze that lasts until its `unfreeze`.
    pub until: Option<DateTime<Utc>>,
}

/// What a gate is judged on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Signals about the digest in the from-stage (test-passed, test-failed, soak-complete,
    /// declared ones, an approval that counts for this promotion).
    pub digest_signals: Vec<Record>,
    /// `alert-firing`, `alert-clear` recorded for the image in the from-stage (any digest).
    pub alert_signals: Vec<Record>,
    /// When the digest entered the from-stage, if known.
    pub entered_stage_at: Option<DateTime<Utc>>,
    /// A freeze holding promotions into the destination now, if any.
    pub frozen: Option<Frozen>,
    /// Why an approval that was recorded does not count here (no verified approver, or one
    /// the promotion's `approvers` do not name), for people.
    pub approval_refused: Option<String>,
}

/// The soak clock of a digest (docs/rules.md "Soak").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Soak {
    /// Clear since `started_at`; met at `met_at`.
    Running {
        started_at: DateTime<Utc>,
        met_at: DateTime<Utc>,
    },
    /// An alert has been firing since this time: the clock is stopped until it clears.
    Stopped { firing_since: DateTime<Utc> },
}

/// Why a gate waits. Every part that holds it is filled in, so one answer says everything that
/// is still missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Required signals not (or, for alert state, not currently) satisfied, in `require` order.
    pub missing: Vec<SignalKind>,
    /// Time (`min_time_in_stage`, `soak`) is not met before this instant.
    pub not_before: Option<DateTime<Utc>>,
    /// `min_time_in_stage` or `soak` is configured but when the digest entered the stage is
    /// unknown, so it cannot be judged met.
    pub entry_time_unknown: bool,
    /// The soak clock, when the promotion soaks.
    pub soak: Option<Soak>,
    /// A freeze holds the promotion.
    pub frozen: Option<Frozen>,
    /// Why a recorded approval does not count.
    pub approval_refused: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Promote. `satisfied_by` has one record per required signal, in `require` order: the
    /// evidence for the promotion record and the outbound event.
    Open { satisfied_by: Vec<Record> },
    /// Not yet.
    Pending(Waiting),
    /// Not while this record stands: an `alert-firing` that is the latest alert record (until
    /// a later `alert-clear`), or a `test-failed` (for good).
    Blocked { by: Record },
}

/// The image's alert state: the latest alert record (at equal times `alert-firing` wins, since
/// promoting on a tie could ship into a firing alert; then the event id, only so that the
/// choice does not depend on the order the records were listed in).
fn alert_state(evidence: &Evidence) -> Option<&Record> {
    evidence
        .digest_signals
        .iter()
        .chain(&evidence.alert_signals)
        .filter(|r| r.kind.is_alert())
        .max_by(|a, b| {
            (a.time, a.kind == SignalKind::AlertFiring, &a.event_id).cmp(&(
                b.time,
                b.kind == SignalKind::AlertFiring,
                &b.event_id,
            ))
        })
}

/// The soak clock for `soak` on `evidence`: clear since the digest entered the stage, or since
/// the `alert-clear` that ended the latest `alert-firing`, whichever is later. `None` when the
/// entry time is unknown.
pub fn soak_clock(soak: std::time::Duration, evidence: &Evidence) -> Option<Soak> {
    let entered = evidence.entered_stage_at?;
    if let Some(state) = alert_state(evidence)
        && state.kind == SignalKind::AlertFiring
    {
        return Some(Soak::Stopped {
            firing_since: state.time,
        });
    }
    let alerts = || {
        evidence
            .alert_signals
            .iter()
            .chain(&evidence.digest_signals)
    };
    let latest_firing = alerts()
        .filter(|r| r.kind == SignalKind::AlertFiring)
        .map(|r| r.time)
        .max();
    let cleared_at = latest_firing.and_then(|firing| {
        alerts()
            .filter(|r| r.kind == SignalKind::AlertClear && r.time >= firing)
            .map(|r| r.time)
            .min()
    });
    let started_at = cleared_at.map_or(entered, |cleared| cleared.max(entered));
    Some(Soak::Running {
        started_at,
        met_at: later_by(started_at, soak),
    })
}

/// `time + duration`; the end of time where that overflows, so a gate is never met early.
fn later_by(time: DateTime<Utc>, duration: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|d| time.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Judges `promotion`'s gate on `evidence` at `now`.
///
/// Records are classified by their kind, whichever list they came in: digest kinds count if
/// present at all; for alert kinds only the latest alert record counts (the image's current
/// alert state). Blocked beats pending: a blocked gate reports why it is blocked, not what else
/// is missing; and a block for good (a digest signal) beats one that lasts until an alert clears.
pub fn evaluate(promotion: &Promotion, evidence: &Evidence, now: DateTime<Utc>) -> Gate {
    let alert_state = alert_state(evidence);
    // The record standing for `kind`: the current alert state for alert kinds, the first
    // record for digest kinds (the earliest is stable across redeliveries and later repeats,
    // so the evidence in the promotion record is deterministic).
    let standing = |kind: &SignalKind| -> Option<&Record> {
        if kind.is_alert() {
            alert_state.filter(|r| &r.kind == kind)
        } else {
            evidence
                .digest_signals
                .iter()
                .chain(&evidence.alert_signals)
                .filter(|r| &r.kind == kind)
                .min_by(|a, b| (a.time, &a.event_id).cmp(&(b.time, &b.event_id)))
        }
    };

    let mut blocks: Vec<&Record> = promotion.block_on().iter().filter_map(&standing).collect();
    blocks.sort_by_key(|r| r.kind.is_alert());
    if let Some(by) = blocks.first() {
        return Gate::Blocked { by: (*by).clone() };
    }

    let mut satisfied_by = Vec::new();
    let mut waiting = Waiting {
        frozen: evidence.frozen.clone(),
        ..Waiting::default()
    };
    for kind in promotion.require() {
        match standing(kind) {
            Some(record) => satisfied_by.push(record.clone()),
            None => waiting.missing.push(kind.clone()),
        }
    }
    if waiting.missing.contains(&SignalKind::Approved) {
        waiting.approval_refused = evidence.approval_refused.clone();
    }

    let mut wait_until = |ready: DateTime<Utc>| {
        // The end of time stands for "never" (a duration past chrono's range), not a moment
        // that could be reached.
        if now < ready || ready == DateTime::<Utc>::MAX_UTC {
            waiting.not_before = Some(waiting.not_before.map_or(ready, |t| t.max(ready)));
        }
    };
    if let Some(min) = promotion.min_time_in_stage() {
        match evidence.entered_stage_at {
            Some(entered) => wait_until(later_by(entered, min)),
            None => waiting.entry_time_unknown = true,
        }
    }
    if let Some(soak) = promotion.soak() {
        match soak_clock(soak, evidence) {
            Some(Soak::Running { started_at, met_at }) => {
                wait_until(met_at);
                waiting.soak = Some(Soak::Running { started_at, met_at });
            }
            Some(stopped) => {
                waiting.soak = Some(stopped);
                // Stopped until the alert clears, and then a whole soak from then on.
                if !waiting.missing.contains(&SignalKind::AlertClear) {
                    waiting.missing.push(SignalKind::AlertClear);
                }
            }
            None => waiting.entry_time_unknown = true,
        }
    }

    let holds = !waiting.missing.is_empty()
        || waiting.not_before.is_some()
        || waiting.entry_time_unknown
        || waiting.frozen.is_some();
    if holds {
        Gate::Pending(waiting)
    } else {
        Gate::Open { satisfied_by }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::rules::StageName;
    use SignalKind::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 12, minute, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn record(kind: SignalKind, id: &str, minute: u32) -> Record {
        Record {
            kind,
            event_id: id.to_owned(),
            time: at(minute),
        }
    }

    fn stage(name: &str) -> StageName {
        StageName::try_from(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The embedded default's `extended-test -> prod`, optionally with a minimum stage time.
    fn to_prod(min: Option<Duration>) -> Promotion {
        Promotion::new(
            stage("extended-test"),
            stage("prod"),
            vec![SoakComplete, AlertClear],
            vec![AlertFiring, TestFailed],
            min,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Signals arriving one by one: the gate after each, as the handler would evaluate it.
    fn replay(promotion: &Promotion, signals: &[Record]) -> Vec<Gate> {
        let mut evidence = Evidence::default();
        signals
            .iter()
            .map(|r| {
                if r.kind.is_alert() {
                    evidence.alert_signals.push(r.clone());
                } else {
                    evidence.digest_signals.push(r.clone());
                }
                let now = r.time;
                evaluate(promotion, &evidence, now)
            })
            .collect()
    }

    fn pending(missing: &[SignalKind]) -> Gate {
        Gate::Pending(Waiting {
            missing: missing.to_vec(),
            not_before: None,
            entry_time_unknown: false,
            ..Waiting::default()
        })
    }

    #[test]
    fn soak_then_clear() {
        let soak = record(SoakComplete, "soak", 1);
        let clear = record(AlertClear, "clear", 2);
        let gates = replay(&to_prod(None), &[soak.clone(), clear.clone()]);
        assert_eq!(gates[0], pending(&[AlertClear]));
        assert_eq!(
            gates[1],
            Gate::Open {
                satisfied_by: vec![soak, clear]
            }
        );
    }

    #[test]
    fn clear_then_soak() {
        let clear = record(AlertClear, "clear", 1);
        let soak = record(SoakComplete, "soak", 2);
        let gates = replay(&to_prod(None), &[clear.clone(), soak.clone()]);
        assert_eq!(gates[0], pending(&[SoakComplete]));
        // `satisfied_by` follows `require` order, not arrival order.
        assert_eq!(
            gates[1],
            Gate::Open {
                satisfied_by: vec![soak, clear]
            }
        );
    }

    #[test]
    fn firing_then_soak_then_clear() {
        let firing = record(AlertFiring, "firing", 1);
        let soak = record(SoakComplete, "soak", 2);
        let clear = record(AlertClear, "clear", 3);
        let gates = replay(
            &to_prod(None),
            &[firing.clone(), soak.clone(), clear.clone()],
        );
        assert_eq!(gates[0], Gate::Blocked { by: firing.clone() });
        assert_eq!(
            gates[1],
            Gate::Blocked { by: firing },
            "blocked beats pending and open"
        );
        assert_eq!(
            gates[2],
            Gate::Open {
                satisfied_by: vec![soak, clear]
            }
        );
    }

    #[test]
    fn soak_then_firing_blocks_then_clear_promotes() {
        let soak = record(SoakComplete, "soak", 1);
        let firing = record(AlertFiring, "firing", 2);
        let clear = record(AlertClear, "clear", 3);
        let gates = replay(
            &to_prod(None),
            &[soak.clone(), firing.clone(), clear.clone()],
        );
        assert_eq!(gates[0], pending(&[AlertClear]));
        assert_eq!(gates[1], Gate::Blocked { by: firing });
        assert_eq!(
            gates[2],
            Gate::Open {
                satisfied_by: vec![soak, clear]
            }
        );
    }

    #[test]
    fn clear_then_firing_is_blocked_even_with_soak() {
        let gates = replay(
            &to_prod(None),
            &[
                record(AlertClear, "clear", 1),
                record(SoakComplete, "soak", 2),
                record(AlertFiring, "firing", 3),
            ],
        );
        assert!(matches!(&gates[1], Gate::Open { .. }));
        assert_eq!(
            gates[2],
            Gate::Blocked {
                by: record(AlertFiring, "firing", 3)
            }
        );
    }

    #[test]
    fn test_failed_blocks_for_good() {
        let failed = record(TestFailed, "failed", 1);
        let gates = replay(
            &to_prod(None),
            &[
                failed.clone(),
                record(SoakComplete, "soak", 2),
                record(AlertClear, "clear", 3),
                record(TestPassed, "passed", 4),
                record(AlertClear, "clear-again", 5),
            ],
        );
        for gate in gates {
            assert_eq!(gate, Gate::Blocked { by: failed.clone() });
        }
    }

    #[test]
    fn a_failed_test_is_the_block_even_while_an_alert_fires() {
        let failed = record(TestFailed, "failed", 2);
        let gates = replay(
            &to_prod(None),
            &[
                record(AlertFiring, "firing", 1),
                failed.clone(),
                record(SoakComplete, "soak", 3),
            ],
        );
        assert_eq!(gates[1], Gate::Blocked { by: failed.clone() });
        assert_eq!(gates[2], Gate::Blocked { by: failed });
    }

    #[test]
    fn min_time_in_stage_not_met_then_met() {
        let promotion = to_prod(Some(Duration::from_secs(30 * 60)));
        let evidence = Evidence {
            digest_signals: vec![record(SoakComplete, "soak", 10)],
            alert_signals: vec![record(AlertClear, "clear", 11)],
            entered_stage_at: Some(at(0)),
            ..Evidence::default()
        };
        assert_eq!(
            evaluate(&promotion, &evidence, at(11)),
            Gate::Pending(Waiting {
                missing: vec![],
                not_before: Some(at(30)),
                entry_time_unknown: false,
                ..Waiting::default()
            })
        );
        assert_eq!(
            evaluate(&promotion, &evidence, at(30)),
            Gate::Open {
                satisfied_by: vec![
                    record(SoakComplete, "soak", 10),
                    record(AlertClear, "clear", 11)
                ]
            }
        );
        // Time alone is not enough: signals still missing are reported with the time.
        let early = Evidence {
            alert_signals: vec![],
            ..evidence.clone()
        };
        assert_eq!(
            evaluate(&promotion, &early, at(11)),
            Gate::Pending(Waiting {
                missing: vec![AlertClear],
                not_before: Some(at(30)),
                entry_time_unknown: false,
                ..Waiting::default()
            })
        );
        assert_eq!(evaluate(&promotion, &early, at(31)), pending(&[AlertClear]));
    }

    #[test]
    fn min_time_with_unknown_entry_is_pending_and_says_so() {
        let promotion = to_prod(Some(Duration::from_secs(60)));
        let evidence = Evidence {
            digest_signals: vec![record(SoakComplete, "soak", 1)],
            alert_signals: vec![record(AlertClear, "clear", 2)],
            entered_stage_at: None,
            ..Evidence::default()
        };
        assert_eq!(
            evaluate(&promotion, &evidence, at(59)),
            Gate::Pending(Waiting {
                missing: vec![],
                not_before: None,
                entry_time_unknown: true,
                ..Waiting::default()
            })
        );
        // Without a minimum the entry time is not needed.
        assert!(matches!(
            evaluate(&to_prod(None), &evidence, at(59)),
            Gate::Open { .. }
        ));
    }

    #[test]
    fn min_time_at_the_end_of_time_never_opens_early() {
        let promotion = to_prod(Some(Duration::from_secs(60)));
        let evidence = Evidence {
            digest_signals: vec![record(SoakComplete, "soak", 1)],
            alert_signals: vec![record(AlertClear, "clear", 2)],
            entered_stage_at: Some(DateTime::<Utc>::MAX_UTC),
            ..Evidence::default()
        };
        assert!(matches!(
            evaluate(&promotion, &evidence, DateTime::<Utc>::MAX_UTC),
            Gate::Pending(Waiting {
                not_before: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn no_alert_record_is_not_clear() {
        let gates = replay(&to_prod(None), &[record(SoakComplete, "soak", 1)]);
        assert_eq!(gates[0], pending(&[AlertClear]));
    }

    #[test]
    fn the_latest_alert_by_time_decides_not_arrival_order() {
        // A delayed `alert-firing` from before the `alert-clear` arrives last.
        let evidence = Evidence {
            digest_signals: vec![record(SoakComplete, "soak", 1)],
            alert_signals: vec![
                record(AlertClear, "clear", 5),
                record(AlertFiring, "old-firing", 3),
            ],
            entered_stage_at: None,
            ..Evidence::default()
        };
        assert_eq!(
            evaluate(&to_prod(None), &evidence, at(6)),
            Gate::Open {
                satisfied_by: vec![
                    record(SoakComplete, "soak", 1),
                    record(AlertClear, "clear", 5)
                ]
            }
        );
    }

    #[test]
    fn firing_wins_a_tie() {
        for alerts in [
            vec![
                record(AlertClear, "z-clear", 5),
                record(AlertFiring, "a-firing", 5),
            ],
            vec![
                record(AlertFiring, "a-firing", 5),
                record(AlertClear, "z-clear", 5),
            ],
        ] {
            let evidence = Evidence {
                digest_signals: vec![record(SoakComplete, "soak", 1)],
                alert_signals: alerts,
                entered_stage_at: None,
                ..Evidence::default()
            };
            assert_eq!(
                evaluate(&to_prod(None), &evidence, at(6)),
                Gate::Blocked {
                    by: record(AlertFiring, "a-firing", 5)
                }
            );
            // Not blocking on firing: the tie still means "not clear".
            let lenient = Promotion::new(
                stage("a"),
                stage("b"),
                vec![SoakComplete, AlertClear],
                vec![],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(evaluate(&lenient, &evidence, at(6)), pending(&[AlertClear]));
        }
    }

    #[test]
    fn evidence_is_deterministic_whatever_the_listing_order() {
        let first = record(SoakComplete, "b-first", 1);
        let again = record(SoakComplete, "a-again", 2);
        let same_time = record(SoakComplete, "c-same-time", 1);
        let clear = record(AlertClear, "clear", 3);
        let mut digest = vec![again.clone(), same_time.clone(), first.clone()];
        for _ in 0..3 {
            digest.rotate_left(1);
            let evidence = Evidence {
                digest_signals: digest.clone(),
                alert_signals: vec![clear.clone()],
                entered_stage_at: None,
                ..Evidence::default()
            };
            assert_eq!(
                evaluate(&to_prod(None), &evidence, at(4)),
                Gate::Open {
                    satisfied_by: vec![first.clone(), clear.clone()]
                }
            );
        }
    }

    #[test]
    fn records_count_by_kind_whichever_list_they_are_in() {
        let evidence = Evidence {
            digest_signals: vec![
                record(SoakComplete, "soak", 1),
                record(AlertClear, "clear", 2),
            ],
            alert_signals: vec![],
            entered_stage_at: None,
            ..Evidence::default()
        };
        assert!(matches!(
            evaluate(&to_prod(None), &evidence, at(3)),
            Gate::Open { .. }
        ));
    }

    #[test]
    fn test_passed_gate() {
        let promotion = Promotion::new(
            stage("fast-feedback"),
            stage("extended-test"),
            vec![TestPassed],
            vec![TestFailed],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            evaluate(&promotion, &Evidence::default(), at(0)),
            pending(&[TestPassed])
        );
        let passed = record(TestPassed, "p", 1);
        let gates = replay(&promotion, &[passed.clone(), record(TestFailed, "f", 2)]);
        assert_eq!(
            gates[0],
            Gate::Open {
                satisfied_by: vec![passed]
            }
        );
        assert_eq!(
            gates[1],
            Gate::Blocked {
                by: record(TestFailed, "f", 2)
            }
        );
        // Alerts do not concern a gate that names none.
        let gates = replay(
            &promotion,
            &[record(AlertFiring, "x", 1), record(TestPassed, "p", 2)],
        );
        assert!(matches!(&gates[1], Gate::Open { .. }));
    }

    #[test]
    fn promotion_new_rejects_impossible_gates() {
        use crate::rules::Problem;
        assert!(matches!(
            Promotion::new(stage("a"), stage("a"), vec![TestPassed], vec![], None),
            Err(Problem::SelfPromotion { .. })
        ));
        assert!(matches!(
            Promotion::new(stage("a"), stage("b"), vec![], vec![TestFailed], None),
            Err(Problem::EmptyRequire { .. })
        ));
        assert!(matches!(
            Promotion::new(
                stage("a"),
                stage("b"),
                vec![TestPassed],
                vec![TestPassed],
                None
            ),
            Err(Problem::RequiredAndBlocking {
                signal: TestPassed,
                ..
            })
        ));
    }
}
