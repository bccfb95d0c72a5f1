//! Freeze windows (docs/rules.md "Freezes"): times when promotions into some stages are held, as
//! a 5-field cron for when a window opens, in an IANA time zone, and how long it stays open.
//!
//! Parsing and the calendar are the maintained crates' (`croner` for cron patterns, `chrono-tz`
//! for the tz database): a window opening at 17:00 Europe/London opens at 17:00 local time on
//! both sides of a daylight-saving change, and a wall-clock time that does not exist or exists
//! twice on the day of a change is resolved the way `croner` resolves it.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::model::StageName;

/// One freeze window of the rules file.
#[derive(Debug, Clone)]
pub struct FreezeWindow {
    name: String,
    /// The stages promotions into which are held; empty: every stage.
    into: Vec<StageName>,
    cron: Cron,
    cron_text: String,
    duration: Duration,
    timezone: Tz,
}

impl PartialEq for FreezeWindow {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.name,
            &self.into,
            &self.cron_text,
            self.duration,
            self.timezone,
        ) == (
            &other.name,
            &other.into,
            &other.cron_text,
            other.duration,
            other.timezone,
        )
    }
}

impl Eq for FreezeWindow {}

/// Why a window could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowProblem {
    Cron(String),
    Timezone(String),
}

impl FreezeWindow {
    /// A window from its parts; `cron` must have exactly five fields (minute hour day month
    /// weekday), as crontab writes them.
    pub fn new(
        name: String,
        into: Vec<StageName>,
        cron: &str,
        duration: Duration,
        timezone: Option<&str>,
    ) -> Result<FreezeWindow, WindowProblem> {
        let fields = cron.split_whitespace().count();
        if fields != 5 {
            return Err(WindowProblem::Cron(format!(
                "cron {cron:?} has {fields} fields: it needs five (minute hour day-of-month month day-of-week)"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let parsed = parser
            .parse(cron)
            .map_err(|e| WindowProblem::Cron(format!("cron {cron:?}: {e}")))?;
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                WindowProblem::Timezone(format!(
                    "timezone {name:?} is not an IANA time zone name (Europe/London, America/New_York, UTC)"
                ))
            })?,
        };
        Ok(FreezeWindow {
            name,
            into,
            cron: parsed,
            cron_text: cron.to_owned(),
            duration,
            timezone,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn into_stages(&self) -> &[StageName] {
        &self.into
    }

    pub fn cron(&self) -> &str {
        &self.cron_text
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// Whether the window holds promotions into `stage`.
    pub fn applies_to(&self, stage: &StageName) -> bool {
        self.into.is_empty() || self.into.contains(stage)
    }

    /// When the window that is open at `now` closes, or `None` when none is open. The latest
    /// opening at or before `now` is the one that reaches furthest, so only it is looked at.
    pub fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone);
        let opened = self.cron.find_previous_occurrence(&local, true).ok()?;
        let until = opened.with_timezone(&Utc) + TimeDelta::from_std(self.duration).ok()?;
        (now < until).then_some(until)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn weekend() -> FreezeWindow {
        FreezeWindow::new(
            "weekend".into(),
            vec![],
            "0 17 * * FRI",
            Duration::from_secs(64 * 3600),
            Some("Europe/London"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_weekly_window_is_open_from_friday_evening_to_monday_morning_local_time() {
        let window = weekend();
        // Friday 2026-11-27, 17:00 London is 17:00 UTC in winter.
        assert_eq!(window.open_until(utc(2026, 11, 27, 16, 59)), None);
        assert_eq!(
            window.open_until(utc(2026, 11, 27, 17, 0)),
            Some(utc(2026, 11, 30, 9, 0))
        );
        assert_eq!(
            window.open_until(utc(2026, 11, 30, 8, 59)),
            Some(utc(2026, 11, 30, 9, 0))
        );
        assert_eq!(window.open_until(utc(2026, 11, 30, 9, 0)), None);
        // In summer (BST, UTC+1) the same local 17:00 is 16:00 UTC.
        assert_eq!(
            window.open_until(utc(2026, 7, 3, 16, 0)),
            Some(utc(2026, 7, 6, 8, 0))
        );
        assert_eq!(window.open_until(utc(2026, 7, 3, 15, 59)), None);
    }

    #[test]
    fn a_window_across_a_daylight_saving_change_keeps_its_length_in_real_time() {
        // The clocks go forward at 01:00 UTC on Sunday 2026-03-29 in London: the window opened
        // Friday 17:00 GMT and lasts 64 real hours, to Monday 09:00 UTC = 10:00 BST.
        let window = weekend();
        assert_eq!(
            window.open_until(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 30, 9, 0))
        );
        // They go back at 01:00 UTC on Sunday 2026-10-25: opened Friday 17:00 BST = 16:00 UTC.
        assert_eq!(
            window.open_until(utc(2026, 10, 25, 12, 0)),
            Some(utc(2026, 10, 26, 8, 0))
        );
        assert_eq!(window.open_until(utc(2026, 10, 23, 15, 59)), None);
    }

    #[test]
    fn an_opening_in_the_hour_a_spring_change_skips_is_resolved_not_lost() {
        // 01:30 London does not exist on 2026-03-29; the window still opens that day.
        let window = FreezeWindow::new(
            "nightly".into(),
            vec![],
            "30 1 * * *",
            Duration::from_secs(3600),
            Some("Europe/London"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let open = window.open_until(utc(2026, 3, 29, 1, 45));
        assert!(open.is_some(), "no window on the day of the change");
    }

    #[test]
    fn bad_windows_say_why() {
        let bad = |cron: &str, tz: Option<&str>| {
            FreezeWindow::new("w".into(), vec![], cron, Duration::from_secs(60), tz)
        };
        assert!(matches!(bad("0 17 * *", None), Err(WindowProblem::Cron(_))));
        assert!(matches!(
            bad("0 0 17 * * FRI", None),
            Err(WindowProblem::Cron(_))
        ));
        assert!(matches!(
            bad("0 25 * * *", None),
            Err(WindowProblem::Cron(_))
        ));
        assert!(matches!(
            bad("0 17 * * FRI", Some("Europe/Londres")),
            Err(WindowProblem::Timezone(_))
        ));
        assert!(bad("0 17 * * FRI", Some("UTC")).is_ok());
    }
}
