//! Signal names: the built-in ones and those a rules file declares (`signals:`), and the
//! vocabulary that tells the parser which CloudEvent types and Cloud Build triggers are signals.

use std::fmt;
use std::sync::Arc;

use super::clip;

/// A signal name as rules files and event types spell it: `[a-z][a-z0-9-]{0,39}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SignalName(Arc<str>);

impl SignalName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` is a valid signal name.
    pub fn is_valid(text: &str) -> bool {
        let mut bytes = text.bytes();
        text.len() <= 40
            && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }
}

impl TryFrom<&str> for SignalName {
    type Error = String;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        if SignalName::is_valid(value) {
            Ok(SignalName(Arc::from(value)))
        } else {
            Err(format!(
                "signal name {:?} must be 1-40 characters of [a-z0-9-], starting with a letter",
                clip(value)
            ))
        }
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignalName({})", self.0)
    }
}

/// The kinds of signal promoter's gates understand (docs/events.md, docs/rules.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    TestPassed,
    TestFailed,
    SoakComplete,
    AlertFiring,
    AlertClear,
    /// An approval of a digest; its record carries the approver.
    Approved,
    /// A signal the rules file declares (`signals:`): about a digest, like `test-passed`.
    Declared(SignalName),
}

impl SignalKind {
    /// Every built-in kind, in a stable order.
    pub const BUILT_IN: [SignalKind; 6] = [
        SignalKind::TestPassed,
        SignalKind::TestFailed,
        SignalKind::SoakComplete,
        SignalKind::AlertFiring,
        SignalKind::AlertClear,
        SignalKind::Approved,
    ];

    /// The kind's name as events and rules spell it: `test-passed`, ...
    pub fn as_str(&self) -> &str {
        match self {
            SignalKind::TestPassed => "test-passed",
            SignalKind::TestFailed => "test-failed",
            SignalKind::SoakComplete => "soak-complete",
            SignalKind::AlertFiring => "alert-firing",
            SignalKind::AlertClear => "alert-clear",
            SignalKind::Approved => "approved",
            SignalKind::Declared(name) => name.as_str(),
        }
    }

    /// Alert signals describe an image in a stage, not a digest (docs/events.md "Types").
    pub fn is_alert(&self) -> bool {
        matches!(self, SignalKind::AlertFiring | SignalKind::AlertClear)
    }

    /// The built-in kind named `name`, else the declared one.
    pub fn named(name: &str, declared: &[SignalName]) -> Option<SignalKind> {
        SignalKind::BUILT_IN
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .or_else(|| {
                declared
                    .iter()
                    .find(|d| d.as_str() == name)
                    .map(|d| SignalKind::Declared(d.clone()))
            })
    }

    /// The kind a CloudEvent `type` names: the bare name, or any type ending in `.<name>`
    /// (`com.acme.p2p.test-passed`), of a built-in or declared signal. Matching is exact
    /// (case-sensitive), as CloudEvents types are.
    pub fn from_event_type(event_type: &str, declared: &[SignalName]) -> Option<SignalKind> {
        let name = event_type
            .rsplit_once('.')
            .map_or(event_type, |(_, last)| last);
        SignalKind::named(name, declared)
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SignalKind {
    type Err = String;

    /// Parses the exact name of a built-in signal (`test-passed`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignalKind::named(s, &[]).ok_or_else(|| {
            format!(
                "unknown signal {:?}: expected one of test-passed, test-failed, soak-complete, \
                 alert-firing, alert-clear, approved, or a name the rules file declares",
                clip(s)
            )
        })
    }
}

/// What the rules make a Cloud Build of one trigger mean (docs/rules.md "Cloud Build triggers").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTrigger {
    /// The trigger's name (`substitutions.TRIGGER_NAME`) or id (`buildTriggerId`).
    pub trigger: String,
    /// The signal of a `SUCCESS`, if any.
    pub on_success: Option<SignalKind>,
    /// The signal of a `FAILURE` or `TIMEOUT`, if any.
    pub on_failure: Option<SignalKind>,
}

/// Which event types and builds are signals: the declared signals and the Cloud Build triggers
/// of the rules. The default knows the built-ins, and every successful build is `test-passed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    pub declared: Vec<SignalName>,
    pub cloud_build: Vec<BuildTrigger>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_types_built_in_and_declared() {
        let nft = SignalName::try_from("nft-passed").expect("a name");
        let declared = [nft.clone()];
        assert_eq!(
            SignalKind::from_event_type("test-passed", &declared),
            Some(SignalKind::TestPassed)
        );
        assert_eq!(
            SignalKind::from_event_type("com.acme.p2p.alert-clear", &declared),
            Some(SignalKind::AlertClear)
        );
        assert_eq!(
            SignalKind::from_event_type("com.acme.nft-passed", &declared),
            Some(SignalKind::Declared(nft))
        );
        assert_eq!(
            SignalKind::from_event_type("com.acme.nft-passed", &[]),
            None
        );
        assert_eq!(
            SignalKind::from_event_type("com.acme.p2ptest-passed", &[]),
            None
        );
        assert_eq!(SignalKind::from_event_type("test-passed.v1", &[]), None);
        assert_eq!(SignalKind::from_event_type("Test-Passed", &[]), None);
        assert_eq!(SignalKind::from_event_type("", &[]), None);
        for kind in SignalKind::BUILT_IN {
            assert_eq!(kind.as_str().parse::<SignalKind>(), Ok(kind));
        }
    }

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "nft-passed", "security-scan-passed", &"a".repeat(40)] {
            assert!(SignalName::try_from(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "Nft",
            "nft_passed",
            "nft.passed",
            &"a".repeat(41),
        ] {
            assert!(SignalName::try_from(bad).is_err(), "{bad}");
        }
    }
}
