//! `min_time_in_stage` durations: whole numbers with units, `90s`, `30m`, `2h`, `1d`, `1h30m`.
//!
//! Deliberately small (no fractions, no months): soak times are minutes to days, and a unit that
//! means different lengths (a month) has no place in a gate.

use std::time::Duration;

/// The longest accepted duration, in days. Keeps `entered + min` far from chrono's range limits
/// and catches typos like `30d` meant as `30m` only if absurd, not otherwise.
pub const MAX_DAYS: u64 = 3650;

/// Parses `<n><unit>` repeated, units `s`, `m`, `h`, `d`. `None` for anything else.
pub fn parse(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = Some(
                number
                    .unwrap_or(0)
                    .checked_mul(10)?
                    .checked_add(u64::from(digit))?,
            );
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        // A unit without a number before it (`m`, `1hm`) is a typo, not zero.
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    // Trailing digits without a unit (`30`) are ambiguous: minutes? seconds? Refuse.
    if number.is_some() || total > MAX_DAYS * 86_400 {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// The shortest text `parse` reads back as `duration` (`1h30m`, `1d`, `0s`); sub-second parts,
/// which `parse` never produces, are dropped.
pub fn format(duration: Duration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, name) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            out.push_str(&(secs / unit).to_string());
            out.push(name);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("1d"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse(" 0s "), Some(Duration::ZERO));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "30",
            "m",
            "1hm",
            "1.5h",
            "30 m",
            "-1h",
            "1w",
            "1M",
            "3651d",
            "99999999999999999999s",
            "18446744073709551615d",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse("3650d"), Some(Duration::from_secs(3650 * 86_400)));
    }

    #[test]
    fn formats_back_to_what_parses() {
        for (secs, text) in [
            (0, "0s"),
            (90, "1m30s"),
            (1800, "30m"),
            (5400, "1h30m"),
            (86_400, "1d"),
            (90_061, "1d1h1m1s"),
        ] {
            assert_eq!(format(Duration::from_secs(secs)), text);
            assert_eq!(parse(text), Some(Duration::from_secs(secs)));
        }
    }
}
