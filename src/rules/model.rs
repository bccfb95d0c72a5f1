//! The pipeline's types. Every value is checked once, when the pipeline is built (from YAML or
//! from the environment), so code holding a `Pipeline` never re-validates anything.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::events::{BuildTrigger, SignalKind, SignalName, Vocabulary};
use crate::registry::reference::{ReferenceError, RegistryHost, Repository};

use super::duration;
use super::error::{Origin, Problem, RulesError, SignalList};
use super::freeze::{FreezeWindow, WindowProblem};
use super::glob::ImageGlob;

/// A stage's name: 1-63 characters of `[a-z0-9-]`, not starting or ending with `-`. That is
/// also a valid repository path component, so a stage's path can default to its name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageName(String);

impl StageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for StageName {
    type Error = Problem;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = !value.is_empty()
            && value.len() <= 63
            && !value.starts_with('-')
            && !value.ends_with('-')
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(StageName(value.to_owned()))
        } else {
            Err(Problem::InvalidStageName(value.to_owned()))
        }
    }
}

impl AsRef<str> for StageName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StageName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StageName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StageName({})", self.0)
    }
}

/// A stage: where its images live, `{registry}/{path}/{image}` (docs/rules.md "Stages").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    name: StageName,
    host: RegistryHost,
    /// `host[/path]`, normalized (host lowercased, no trailing `/`).
    registry: String,
    /// The stage path below the registry (`fast-feedback`, or several components).
    path: String,
    /// The repository path of the stage below the host: registry path (if any) + stage path.
    /// Kept precomputed because `locate` compares against it for every event.
    repository_prefix: String,
}

impl Stage {
    /// A stage from its parts: `registry` is `host[/path]` (the host must look like a registry
    /// host: a dot, a port, or `localhost`), `path` defaults to the name.
    pub fn new(name: StageName, registry: &str, path: Option<&str>) -> Result<Stage, Problem> {
        let (host, registry_path) = parse_registry(registry)?;
        let path = path.unwrap_or(name.as_str()).to_owned();
        let repository_prefix = match &registry_path {
            Some(prefix) => format!("{prefix}/{path}"),
            None => path.clone(),
        };
        // Validates the stage path and the combination (length limits) with the registry's
        // own grammar: a bad path is reported as the path, a bad registry path was caught above.
        Repository::new(host.clone(), &path).map_err(|error| Problem::InvalidPath {
            stage: name.clone(),
            value: path.clone(),
            error,
        })?;
        Repository::new(host.clone(), &repository_prefix).map_err(|error| {
            Problem::InvalidPath {
                stage: name.clone(),
                value: path.clone(),
                error,
            }
        })?;
        let registry = match &registry_path {
            Some(prefix) => format!("{host}/{prefix}"),
            None => host.to_string(),
        };
        Ok(Stage {
            name,
            host,
            registry,
            path,
            repository_prefix,
        })
    }

    pub fn name(&self) -> &StageName {
        &self.name
    }

    /// `host[/path]` as configured (normalized).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    pub fn host(&self) -> &RegistryHost {
        &self.host
    }

    /// The stage path below the registry.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `{registry}/{path}`: images of this stage live at `{prefix}/{image name}`.
    pub fn prefix(&self) -> String {
        format!("{}/{}", self.host, self.repository_prefix)
    }

    /// The repository path below the host that every image of this stage starts with (without
    /// the trailing `/`).
    pub(super) fn repository_prefix(&self) -> &str {
        &self.repository_prefix
    }

    /// The repository of `image_name` in this stage: `{registry}/{path}/{image_name}`.
    pub fn repository(&self, image_name: &str) -> Result<Repository, ReferenceError> {
        Repository::new(
            self.host.clone(),
            &format!("{}/{image_name}", self.repository_prefix),
        )
    }
}

/// Splits `host[/path]` and checks both halves.
fn parse_registry(value: &str) -> Result<(RegistryHost, Option<String>), Problem> {
    let invalid = |reason: &str| Problem::InvalidRegistry {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    // People paste `host/path/` from consoles; a trailing slash changes nothing, so allow it.
    let trimmed = value.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.contains("://") {
        return Err(invalid("leave out the scheme (https://)"));
    }
    let (host, path) = match trimmed.split_once('/') {
        Some((host, path)) => (host, Some(path)),
        None => (trimmed, None),
    };
    // The same rule image references use to tell a registry from a Docker Hub path: without a
    // dot, port or `localhost`, `acme/app` would be read back as `docker.io/acme/app`.
    let looks_like_host = host.contains('.')
        || host.contains(':')
        || host.eq_ignore_ascii_case("localhost")
        || host.starts_with('[');
    if !looks_like_host {
        return Err(invalid(&format!(
            "{host:?} is not a registry host (it needs a dot, a port, or to be localhost)"
        )));
    }
    let host = RegistryHost::try_from(host).map_err(|e| invalid(&e.to_string()))?;
    let path = match path {
        Some(path) => {
            Repository::new(host.clone(), path).map_err(|e| invalid(&e.to_string()))?;
            Some(path.to_owned())
        }
        None => None,
    };
    Ok((host, path))
}

/// Which of the digests whose gate is open a promotion moves (docs/rules.md "Many versions
/// in one stage").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select {
    /// Only the digest that entered the from-stage last; older ones are superseded, so the next
    /// stage never goes back to an older version.
    #[default]
    Newest,
    /// Every open digest, oldest first.
    All,
}

impl Select {
    pub fn as_str(self) -> &'static str {
        match self {
            Select::Newest => "newest",
            Select::All => "all",
        }
    }
}

impl std::str::FromStr for Select {
    type Err = Problem;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "newest" => Ok(Select::Newest),
            "all" => Ok(Select::All),
            other => Err(Problem::InvalidSelect {
                value: other.to_owned(),
            }),
        }
    }
}

/// Who may approve a promotion: an email address, or every address of a domain (`*@acme.com`).
/// Compared without regard to case, as email addresses are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverPattern(String);

impl ApproverPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the verified address `email` is one this pattern names.
    pub fn matches(&self, email: &str) -> bool {
        let email = email.to_ascii_lowercase();
        match self.0.strip_prefix("*@") {
            Some(domain) => email
                .rsplit_once('@')
                .is_some_and(|(local, d)| !local.is_empty() && d == domain),
            None => email == self.0,
        }
    }
}

impl TryFrom<&str> for ApproverPattern {
    type Error = Problem;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let invalid = || Problem::InvalidApprover {
            value: value.to_owned(),
        };
        let (local, domain) = value.split_once('@').ok_or_else(invalid)?;
        let plain = |part: &str| {
            !part.is_empty()
                && !part.contains(['@', '*'])
                && !part.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if !(local == "*" || plain(local)) || !plain(domain) || !domain.contains('.') {
            return Err(invalid());
        }
        Ok(ApproverPattern(value.to_ascii_lowercase()))
    }
}

/// What guards a promotion, beside its stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    pub require: Vec<SignalKind>,
    pub block_on: Vec<SignalKind>,
    pub min_time_in_stage: Option<Duration>,
    pub soak: Option<Duration>,
    pub select: Select,
    pub approvers: Vec<ApproverPattern>,
}

/// A move between two stages and the gate guarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    from: StageName,
    to: StageName,
    gates: Gates,
}

impl Promotion {
    /// A promotion that requires and blocks on signals, with an optional minimum time.
    pub fn new(
        from: StageName,
        to: StageName,
        require: Vec<SignalKind>,
        block_on: Vec<SignalKind>,
        min_time_in_stage: Option<Duration>,
    ) -> Result<Promotion, Problem> {
        Promotion::gated(
            from,
            to,
            Gates {
                require,
                block_on,
                min_time_in_stage,
                ..Gates::default()
            },
        )
    }

    /// A promotion, checked on its own (that the stages exist is the pipeline's business).
    /// Repeated signals in a list are dropped, keeping the first.
    pub fn gated(from: StageName, to: StageName, gates: Gates) -> Result<Promotion, Problem> {
        if from == to {
            return Err(Problem::SelfPromotion { stage: from });
        }
        let require = dedup(gates.require);
        let block_on = dedup(gates.block_on);
        // A gate with nothing to wait for would open the moment a digest arrived; time (a
        // minimum stay, a soak) is something to wait for.
        if require.is_empty() && gates.min_time_in_stage.is_none() && gates.soak.is_none() {
            return Err(Problem::EmptyRequire { from, to });
        }
        if let Some(signal) = block_on.iter().find(|k| require.contains(k)) {
            return Err(Problem::RequiredAndBlocking {
                signal: signal.clone(),
                from,
                to,
            });
        }
        Ok(Promotion {
            from,
            to,
            gates: Gates {
                require,
                block_on,
                ..gates
            },
        })
    }

    /// The same promotion choosing its digests by `select`.
    pub fn with_select(mut self, select: Select) -> Promotion {
        self.gates.select = select;
        self
    }

    /// Which open digests move.
    pub fn select(&self) -> Select {
        self.gates.select
    }

    /// Whether something other than a signal about the digest itself can open this gate: an
    /// alert clearing for the image in the stage, or time passing (a minimum stay, a soak).
    /// Digests waiting for such a gate are kept in the waiting index, where those signals (and
    /// `reconcile`) find them. Freezes count too: see [`Pipeline::opens_without_digest_signal`].
    pub fn opens_without_digest_signal(&self) -> bool {
        self.gates.min_time_in_stage.is_some() || self.gates.soak.is_some() || self.names_alerts()
    }

    /// Whether the gate reads the image's alert state: it names an alert signal or soaks.
    pub fn names_alerts(&self) -> bool {
        self.gates.soak.is_some()
            || self
                .gates
                .require
                .iter()
                .chain(&self.gates.block_on)
                .any(SignalKind::is_alert)
    }

    pub fn from(&self) -> &StageName {
        &self.from
    }

    pub fn to(&self) -> &StageName {
        &self.to
    }

    /// Every one of these must be present for the gate to open.
    pub fn require(&self) -> &[SignalKind] {
        &self.gates.require
    }

    /// Any of these closes the gate (disjoint from `require`).
    pub fn block_on(&self) -> &[SignalKind] {
        &self.gates.block_on
    }

    /// How long the digest must have been in the from-stage.
    pub fn min_time_in_stage(&self) -> Option<Duration> {
        self.gates.min_time_in_stage
    }

    /// How long the image's alert state must have been clear in the from-stage while the digest
    /// was there (docs/rules.md "Soak").
    pub fn soak(&self) -> Option<Duration> {
        self.gates.soak
    }

    /// Who may approve; empty: any `approved` counts.
    pub fn approvers(&self) -> &[ApproverPattern] {
        &self.gates.approvers
    }

    /// Whether the gate names `kind` at all.
    pub fn mentions(&self, kind: &SignalKind) -> bool {
        self.gates.require.contains(kind) || self.gates.block_on.contains(kind)
    }
}

fn dedup(kinds: Vec<SignalKind>) -> Vec<SignalKind> {
    let mut out: Vec<SignalKind> = Vec::with_capacity(kinds.len());
    for kind in kinds {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out
}

/// The whole path to production: stages, the promotions between them, which images may move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub(super) stages: Vec<Stage>,
    pub(super) promotions: Vec<Promotion>,
    pub(super) images: Vec<ImageGlob>,
    /// Signals beyond the built-ins (`signals:`).
    pub(super) declared: Vec<SignalName>,
    pub(super) freezes: Vec<FreezeWindow>,
    pub(super) cloud_build: Vec<BuildTrigger>,
}

impl Pipeline {
    /// Stages in definition order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// Promotions in definition order.
    pub fn promotions(&self) -> &[Promotion] {
        &self.promotions
    }

    /// The allowlist of image names (`["*"]` unless configured).
    pub fn images(&self) -> &[ImageGlob] {
        &self.images
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The promotion `from -> to`, if configured.
    pub fn promotion(&self, from: &str, to: &str) -> Option<&Promotion> {
        self.promotions
            .iter()
            .find(|p| p.from == from && p.to == to)
    }

    /// Promotions out of `stage`, in definition order (a stage may have several).
    /// Whether some promotion leads into `stage` (so a digest there may have been put there by
    /// promoter, with a promotion record).
    pub fn is_promoted_into(&self, stage: &str) -> bool {
        self.promotions.iter().any(|p| p.to == stage)
    }

    pub fn promotions_from<'a>(&'a self, stage: &'a str) -> impl Iterator<Item = &'a Promotion> {
        self.promotions.iter().filter(move |p| p.from == stage)
    }

    /// The promotions out of `stage` that a `kind` signal about an image in `stage` should
    /// re-evaluate: those whose gate names `kind`. For alert signals, those whose gate names any
    /// alert signal: an `alert-clear` matters to a gate that only blocks on `alert-firing`,
    /// because it ends the firing state.
    pub fn triggered_by(&self, stage: &str, kind: &SignalKind) -> Vec<&Promotion> {
        self.promotions
            .iter()
            .filter(|p| p.from == stage)
            .filter(|p| p.mentions(kind) || (kind.is_alert() && p.names_alerts()))
            .collect()
    }

    /// The signals the rules declare beyond the built-ins.
    pub fn declared_signals(&self) -> &[SignalName] {
        &self.declared
    }

    /// The freeze windows, in definition order.
    pub fn freezes(&self) -> &[FreezeWindow] {
        &self.freezes
    }

    /// What the parser needs to know of the rules: declared signals and Cloud Build triggers.
    pub fn vocabulary(&self) -> Vocabulary {
        Vocabulary {
            declared: self.declared.clone(),
            cloud_build: self.cloud_build.clone(),
        }
    }

    /// Whether something other than a signal about the digest can open `promotion`'s gate:
    /// an alert clearing, time, or a freeze window into its destination ending.
    pub fn opens_without_digest_signal(&self, promotion: &Promotion) -> bool {
        promotion.opens_without_digest_signal()
            || self.freezes.iter().any(|w| w.applies_to(promotion.to()))
    }

    /// Whether `image_name` is on the allowlist.
    pub fn allows(&self, image_name: &str) -> bool {
        self.images.iter().any(|g| g.matches(image_name))
    }

    /// The effective pipeline, for people (`promoter rules check`).
    pub fn describe(&self) -> String {
        let width = self
            .stages
            .iter()
            .map(|s| s.name.as_str().len())
            .max()
            .unwrap_or(0);
        let mut out = format!("stages ({}):\n", self.stages.len());
        for stage in &self.stages {
            out.push_str(&format!(
                "  {:width$}  {}/<image>\n",
                stage.name.as_str(),
                stage.prefix()
            ));
        }
        out.push_str(&format!("promotions ({}):\n", self.promotions.len()));
        for p in &self.promotions {
            out.push_str(&format!("  {} -> {}\n", p.from, p.to));
            out.push_str(&format!("    require:           {}\n", list(p.require())));
            out.push_str(&format!("    block on:          {}\n", list(p.block_on())));
            out.push_str(&format!("    select:            {}\n", p.select().as_str()));
            if let Some(min) = p.min_time_in_stage() {
                out.push_str(&format!(
                    "    min time in stage: {}\n",
                    duration::format(min)
                ));
            }
            if let Some(soak) = p.soak() {
                out.push_str(&format!(
                    "    soak:              {} clear of alerts\n",
                    duration::format(soak)
                ));
            }
            if !p.approvers().is_empty() {
                let approvers: Vec<&str> =
                    p.approvers().iter().map(ApproverPattern::as_str).collect();
                out.push_str(&format!(
                    "    approvers:         {} (verified)\n",
                    approvers.join(", ")
                ));
            }
            let frozen_by: Vec<&str> = self
                .freezes
                .iter()
                .filter(|w| w.applies_to(p.to()))
                .map(FreezeWindow::name)
                .collect();
            if !frozen_by.is_empty() {
                out.push_str(&format!(
                    "    frozen by:         {}\n",
                    frozen_by.join(", ")
                ));
            }
        }
        if !self.declared.is_empty() {
            let names: Vec<&str> = self.declared.iter().map(SignalName::as_str).collect();
            out.push_str(&format!("signals: {}\n", names.join(", ")));
        }
        if !self.freezes.is_empty() {
            out.push_str(&format!("freezes ({}):\n", self.freezes.len()));
            for w in &self.freezes {
                let into: Vec<&str> = w.into_stages().iter().map(StageName::as_str).collect();
                out.push_str(&format!(
                    "  {}: opens at \"{}\" ({}) for {}, into {}\n",
                    w.name(),
                    w.cron(),
                    w.timezone(),
                    duration::format(w.duration()),
                    if into.is_empty() {
                        "every stage".to_owned()
                    } else {
                        into.join(", ")
                    }
                ));
            }
        }
        if !self.cloud_build.is_empty() {
            out.push_str("cloud build triggers:\n");
            for t in &self.cloud_build {
                let name = |k: &Option<SignalKind>| {
                    k.as_ref().map_or("(nothing)".to_owned(), |k| k.to_string())
                };
                out.push_str(&format!(
                    "  {}: SUCCESS -> {}, FAILURE/TIMEOUT -> {}\n",
                    t.trigger,
                    name(&t.on_success),
                    name(&t.on_failure)
                ));
            }
        }
        let images: Vec<&str> = self.images.iter().map(ImageGlob::as_str).collect();
        out.push_str(&format!("images: {}\n", images.join(", ")));
        out
    }
}

fn list(kinds: &[SignalKind]) -> String {
    if kinds.is_empty() {
        return "(nothing)".to_owned();
    }
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A value from the rules file or environment, with where it came from for error messages.
pub(super) struct Sourced<'a> {
    pub value: &'a str,
    pub at: Origin,
}

/// The parts of one promotion as read, before checking.
pub(super) struct PromotionInput<'a> {
    pub from: Sourced<'a>,
    pub to: Sourced<'a>,
    pub require: Vec<Sourced<'a>>,
    pub require_at: Origin,
    pub block_on: Vec<Sourced<'a>>,
    pub min_time_in_stage: Option<Sourced<'a>>,
    pub soak: Option<Sourced<'a>>,
    pub select: Option<Sourced<'a>>,
    pub approvers: Vec<Sourced<'a>>,
    pub at: Origin,
}

/// A freeze window as read, before checking.
pub(super) struct FreezeInput<'a> {
    pub name: Sourced<'a>,
    pub into: Vec<Sourced<'a>>,
    pub cron: Sourced<'a>,
    pub duration: Sourced<'a>,
    pub timezone: Option<Sourced<'a>>,
}

/// A Cloud Build trigger's mapping as read, before checking.
pub(super) struct TriggerInput<'a> {
    pub trigger: Sourced<'a>,
    pub on_success: Option<Sourced<'a>>,
    pub on_failure: Option<Sourced<'a>>,
}

/// Builds a `Pipeline` item by item, checking each against what came before, so both the YAML
/// reader and the embedded default share every rule and report the first problem where it is.
#[derive(Default)]
pub(super) struct Builder {
    stages: Vec<(Stage, Origin)>,
    promotions: Vec<Promotion>,
    promotion_at: HashMap<(StageName, StageName), Origin>,
    declared: Vec<SignalName>,
    freezes: Vec<FreezeWindow>,
    cloud_build: Vec<BuildTrigger>,
}

fn invalid(at: Origin, problem: Problem) -> RulesError {
    RulesError::Invalid { at, problem }
}

fn line_of(origin: &Origin) -> Option<u64> {
    match origin {
        Origin::Line(line) => Some(*line),
        _ => None,
    }
}

impl Builder {
    pub fn stage(
        &mut self,
        name: Sourced<'_>,
        registry: Sourced<'_>,
        path: Option<Sourced<'_>>,
        at: Origin,
    ) -> Result<(), RulesError> {
        let stage_name =
            StageName::try_from(name.value).map_err(|p| invalid(name.at.clone(), p))?;
        if let Some((_, first)) = self.stages.iter().find(|(s, _)| s.name == stage_name) {
            return Err(invalid(
                name.at,
                Problem::DuplicateStage {
                    name: stage_name,
                    first_line: line_of(first),
                },
            ));
        }
        // The registry first, on its own, so a bad registry is reported at its own line and
        // whatever `Stage::new` still rejects is the path's fault.
        parse_registry(registry.value).map_err(|p| invalid(registry.at.clone(), p))?;
        let stage = Stage::new(stage_name, registry.value, path.as_ref().map(|p| p.value))
            .map_err(|p| {
                let at = path.as_ref().map_or(at.clone(), |p| p.at.clone());
                invalid(at, p)
            })?;
        if let Some((other, _)) = self
            .stages
            .iter()
            .find(|(s, _)| s.host == stage.host && s.repository_prefix == stage.repository_prefix)
        {
            return Err(invalid(
                path.map_or(at, |p| p.at),
                Problem::SameLocation {
                    first: other.name.clone(),
                    second: stage.name.clone(),
                    location: stage.prefix(),
                },
            ));
        }
        self.stages.push((stage, name.at));
        Ok(())
    }

    pub fn promotion(&mut self, input: PromotionInput<'_>) -> Result<(), RulesError> {
        let known: Vec<StageName> = self.stages.iter().map(|(s, _)| s.name.clone()).collect();
        let find = |end: &Sourced<'_>| {
            known
                .iter()
                .find(|n| *n == end.value)
                .cloned()
                .ok_or_else(|| {
                    invalid(
                        end.at.clone(),
                        Problem::UnknownStage {
                            from: input.from.value.to_owned(),
                            to: input.to.value.to_owned(),
                            stage: end.value.to_owned(),
                            known: known.clone(),
                        },
                    )
                })
        };
        let from = find(&input.from)?;
        let to = find(&input.to)?;
        if from == to {
            return Err(invalid(input.to.at, Problem::SelfPromotion { stage: from }));
        }
        if let Some(first) = self.promotion_at.get(&(from.clone(), to.clone())) {
            return Err(invalid(
                input.at,
                Problem::DuplicatePromotion {
                    from,
                    to,
                    first_line: line_of(first),
                },
            ));
        }
        let declared = &self.declared;
        let signals = |items: &[Sourced<'_>], list: SignalList| {
            items
                .iter()
                .map(|item| {
                    SignalKind::named(item.value, declared)
                        .map(|k| (k, item.at.clone()))
                        .ok_or_else(|| {
                            invalid(
                                item.at.clone(),
                                Problem::UnknownSignal {
                                    route: format!("{from} -> {to}"),
                                    list,
                                    signal: item.value.to_owned(),
                                    known: super::error::declared_list(declared),
                                },
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let require = signals(&input.require, SignalList::Require)?;
        let block_on = signals(&input.block_on, SignalList::BlockOn)?;
        let duration_of = |text: &Option<Sourced<'_>>, field: &'static str| match text {
            Some(text) => duration::parse(text.value).map(Some).ok_or_else(|| {
                invalid(
                    text.at.clone(),
                    Problem::InvalidDuration {
                        field,
                        value: text.value.to_owned(),
                    },
                )
            }),
            None => Ok(None),
        };
        let min_time = duration_of(&input.min_time_in_stage, "min_time_in_stage")?;
        let soak = duration_of(&input.soak, "soak")?;
        let select = match &input.select {
            Some(text) => text
                .value
                .parse::<Select>()
                .map_err(|problem| invalid(text.at.clone(), problem))?,
            None => Select::default(),
        };
        let approvers = input
            .approvers
            .iter()
            .map(|item| {
                ApproverPattern::try_from(item.value).map_err(|p| invalid(item.at.clone(), p))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let gates = Gates {
            require: require.iter().map(|(k, _)| k.clone()).collect(),
            block_on: block_on.iter().map(|(k, _)| k.clone()).collect(),
            min_time_in_stage: min_time,
            soak,
            select,
            approvers,
        };
        let promotion = Promotion::gated(from.clone(), to.clone(), gates).map_err(|problem| {
            // Point at the entry that caused it where there is one.
            let at = match &problem {
                Problem::EmptyRequire { .. } => input.require_at.clone(),
                Problem::RequiredAndBlocking { signal, .. } => block_on
                    .iter()
                    .find(|(k, _)| k == signal)
                    .map_or(input.at.clone(), |(_, at)| at.clone()),
                _ => input.at.clone(),
            };
            invalid(at, problem)
        })?;
        self.promotion_at.insert((from, to), input.at);
        self.promotions.push(promotion);
        Ok(())
    }

    /// The signals the rules declare (`signals:`), before any promotion names them.
    pub fn signals(&mut self, items: &[Sourced<'_>]) -> Result<(), RulesError> {
        for item in items {
            let name = SignalName::try_from(item.value).map_err(|reason| {
                invalid(
                    item.at.clone(),
                    Problem::InvalidSignalName {
                        value: item.value.to_owned(),
                        reason,
                    },
                )
            })?;
            if SignalKind::named(item.value, &[]).is_some() {
                return Err(invalid(
                    item.at.clone(),
                    Problem::DeclaredBuiltIn {
                        name: item.value.to_owned(),
                    },
                ));
            }
            if !self.declared.contains(&name) {
                self.declared.push(name);
            }
        }
        Ok(())
    }

    /// A freeze window, once the stages are in.
    pub fn freeze(&mut self, input: FreezeInput<'_>) -> Result<(), RulesError> {
        let name = input.name.value.to_owned();
        if name.trim().is_empty() {
            return Err(invalid(
                input.name.at,
                Problem::InvalidFreeze {
                    name,
                    reason: "needs a name".into(),
                },
            ));
        }
        if self.freezes.iter().any(|w| w.name() == name) {
            return Err(invalid(
                input.name.at,
                Problem::InvalidFreeze {
                    name,
                    reason: "is a second freeze of that name".into(),
                },
            ));
        }
        let known: Vec<StageName> = self.stages.iter().map(|(s, _)| s.name.clone()).collect();
        let mut into = Vec::new();
        for stage in &input.into {
            let found = known.iter().find(|k| *k == stage.value).cloned();
            let Some(found) = found else {
                return Err(invalid(
                    stage.at.clone(),
                    Problem::InvalidFreeze {
                        name,
                        reason: format!(
                            "holds promotions into stage {:?}, which is not one of {}",
                            stage.value,
                            known
                                .iter()
                                .map(StageName::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    },
                ));
            };
            into.push(found);
        }
        let duration = duration::parse(input.duration.value).ok_or_else(|| {
            invalid(
                input.duration.at.clone(),
                Problem::InvalidDuration {
                    field: "duration",
                    value: input.duration.value.to_owned(),
                },
            )
        })?;
        let window = FreezeWindow::new(
            name.clone(),
            into,
            input.cron.value,
            duration,
            input.timezone.as_ref().map(|t| t.value),
        )
        .map_err(|problem| match problem {
            WindowProblem::Cron(reason) => invalid(
                input.cron.at.clone(),
                Problem::InvalidFreeze {
                    name: name.clone(),
                    reason,
                },
            ),
            WindowProblem::Timezone(reason) => invalid(
                input
                    .timezone
                    .as_ref()
                    .map_or(input.cron.at.clone(), |t| t.at.clone()),
                Problem::InvalidFreeze {
                    name: name.clone(),
                    reason,
                },
            ),
        })?;
        self.freezes.push(window);
        Ok(())
    }

    /// A Cloud Build trigger's mapping, once the signals are declared.
    pub fn trigger(&mut self, input: TriggerInput<'_>) -> Result<(), RulesError> {
        let trigger = input.trigger.value.trim().to_owned();
        if trigger.is_empty() {
            return Err(invalid(
                input.trigger.at,
                Problem::InvalidTrigger {
                    trigger,
                    reason: "needs a trigger name or id".into(),
                },
            ));
        }
        let declared = &self.declared;
        let signal = |item: &Option<Sourced<'_>>| -> Result<Option<SignalKind>, RulesError> {
            let Some(item) = item else { return Ok(None) };
            let kind = SignalKind::named(item.value, declared).ok_or_else(|| {
                invalid(
                    item.at.clone(),
                    Problem::InvalidTrigger {
                        trigger: trigger.clone(),
                        reason: format!(
                            "names signal {:?}, which is neither built in nor declared under signals",
                            item.value
                        ),
                    },
                )
            })?;
            if kind.is_alert() {
                return Err(invalid(
                    item.at.clone(),
                    Problem::InvalidTrigger {
                        trigger: trigger.clone(),
                        reason: format!(
                            "maps a build to {kind}, which is about an image in a stage, not a built digest"
                        ),
                    },
                ));
            }
            Ok(Some(kind))
        };
        let on_success = signal(&input.on_success)?;
        let on_failure = signal(&input.on_failure)?;
        if on_success.is_none() && on_failure.is_none() {
            return Err(invalid(
                input.trigger.at,
                Problem::InvalidTrigger {
                    trigger,
                    reason: "maps nothing: give on_success, on_failure or both".into(),
                },
            ));
        }
        self.cloud_build.push(BuildTrigger {
            trigger,
            on_success,
            on_failure,
        });
        Ok(())
    }

    /// The pipeline, once every stage and promotion is in. `images` is `None` when not
    /// configured (every image allowed).
    pub fn finish(
        self,
        images: Option<(Vec<Sourced<'_>>, Origin)>,
        stages_at: Origin,
        promotions_at: Origin,
    ) -> Result<Pipeline, RulesError> {
        if self.stages.is_empty() {
            return Err(invalid(stages_at, Problem::NoStages));
        }
        if self.promotions.is_empty() {
            return Err(invalid(promotions_at, Problem::NoPromotions));
        }
        let images = match images {
            None => vec![ImageGlob::any()],
            Some((items, at)) => {
                if items.is_empty() {
                    return Err(invalid(at, Problem::EmptyImages));
                }
                items
                    .into_iter()
                    .map(|item| ImageGlob::try_from(item.value).map_err(|p| invalid(item.at, p)))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(Pipeline {
            stages: self.stages.into_iter().map(|(s, _)| s).collect(),
            promotions: self.promotions,
            images,
            declared: self.declared,
            freezes: self.freezes,
            cloud_build: self.cloud_build,
        })
    }
}
