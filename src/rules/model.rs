//! The pipeline's types. Every value is checked once, when the pipeline is built (from YAML or
//! from the environment), so code holding a `Pipeline` never re-validates anything.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::events::SignalKind;
use crate::registry::reference::{ReferenceError, RegistryHost, Repository};

use super::duration;
use super::error::{Origin, Problem, RulesError, SignalList};
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

/// A stage: where its images live, `{registry}/{path}/{image}` (DESIGN.md §1).
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

/// Which of the digests whose gate is open a promotion moves (DESIGN.md §7 "Which waiting
/// digest moves").
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

/// A move between two stages and the gate guarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    from: StageName,
    to: StageName,
    require: Vec<SignalKind>,
    block_on: Vec<SignalKind>,
    min_time_in_stage: Option<Duration>,
    select: Select,
}

impl Promotion {
    /// A promotion, checked on its own (that the stages exist is the pipeline's business).
    /// Repeated signals in a list are dropped, keeping the first.
    pub fn new(
        from: StageName,
        to: StageName,
        require: Vec<SignalKind>,
        block_on: Vec<SignalKind>,
        min_time_in_stage: Option<Duration>,
    ) -> Result<Promotion, Problem> {
        if from == to {
            return Err(Problem::SelfPromotion { stage: from });
        }
        let require = dedup(require);
        let block_on = dedup(block_on);
        if require.is_empty() {
            return Err(Problem::EmptyRequire { from, to });
        }
        if let Some(&signal) = block_on.iter().find(|k| require.contains(k)) {
            return Err(Problem::RequiredAndBlocking { from, to, signal });
        }
        Ok(Promotion {
            from,
            to,
            require,
            block_on,
            min_time_in_stage,
            select: Select::default(),
        })
    }

    /// The same promotion choosing its digests by `select`.
    pub fn with_select(self, select: Select) -> Promotion {
        Promotion { select, ..self }
    }

    /// Which open digests move.
    pub fn select(&self) -> Select {
        self.select
    }

    /// Whether something other than a signal about the digest itself can open this gate: an
    /// alert clearing for the image in the stage, or time passing. Digests waiting for such a
    /// gate are kept in the waiting index, where those signals (and `reconcile`) find them.
    pub fn opens_without_digest_signal(&self) -> bool {
        self.min_time_in_stage.is_some()
            || self
                .require
                .iter()
                .chain(&self.block_on)
                .any(|&k| is_alert(k))
    }

    pub fn from(&self) -> &StageName {
        &self.from
    }

    pub fn to(&self) -> &StageName {
        &self.to
    }

    /// Every one of these must be present for the gate to open (never empty).
    pub fn require(&self) -> &[SignalKind] {
        &self.require
    }

    /// Any of these closes the gate (disjoint from `require`).
    pub fn block_on(&self) -> &[SignalKind] {
        &self.block_on
    }

    /// How long the digest must have been in the from-stage.
    pub fn min_time_in_stage(&self) -> Option<Duration> {
        self.min_time_in_stage
    }

    /// Whether the gate names `kind` at all.
    pub fn mentions(&self, kind: SignalKind) -> bool {
        self.require.contains(&kind) || self.block_on.contains(&kind)
    }
}

fn dedup(kinds: Vec<SignalKind>) -> Vec<SignalKind> {
    let mut out = Vec::with_capacity(kinds.len());
    for kind in kinds {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out
}

/// Alert signals describe an image in a stage, not a digest (DESIGN.md "Inbound events").
pub(super) fn is_alert(kind: SignalKind) -> bool {
    matches!(kind, SignalKind::AlertFiring | SignalKind::AlertClear)
}

/// The whole path to production: stages, the promotions between them, which images may move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    pub(super) stages: Vec<Stage>,
    pub(super) promotions: Vec<Promotion>,
    pub(super) images: Vec<ImageGlob>,
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
    pub fn promotions_from<'a>(&'a self, stage: &'a str) -> impl Iterator<Item = &'a Promotion> {
        self.promotions.iter().filter(move |p| p.from == stage)
    }

    /// The promotions out of `stage` that a `kind` signal about an image in `stage` should
    /// re-evaluate: those whose gate names `kind`. For alert signals, those whose gate names any
    /// alert signal: an `alert-clear` matters to a gate that only blocks on `alert-firing`,
    /// because it ends the firing state.
    pub fn triggered_by(&self, stage: &str, kind: SignalKind) -> Vec<&Promotion> {
        self.promotions
            .iter()
            .filter(|p| p.from == stage)
            .filter(|p| {
                p.mentions(kind)
                    || (is_alert(kind) && p.require.iter().chain(&p.block_on).any(|&k| is_alert(k)))
            })
            .collect()
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
            out.push_str(&format!("    require:           {}\n", list(&p.require)));
            out.push_str(&format!("    block on:          {}\n", list(&p.block_on)));
            out.push_str(&format!("    select:            {}\n", p.select.as_str()));
            if let Some(min) = p.min_time_in_stage {
                out.push_str(&format!(
                    "    min time in stage: {}\n",
                    duration::format(min)
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
    pub select: Option<Sourced<'a>>,
    pub at: Origin,
}

/// Builds a `Pipeline` item by item, checking each against what came before, so both the YAML
/// reader and the embedded default share every rule and report the first problem where it is.
#[derive(Default)]
pub(super) struct Builder {
    stages: Vec<(Stage, Origin)>,
    promotions: Vec<Promotion>,
    promotion_at: HashMap<(StageName, StageName), Origin>,
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
        let signals = |items: &[Sourced<'_>], list: SignalList| {
            items
                .iter()
                .map(|item| {
                    SignalKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == item.value)
                        .map(|k| (k, item.at.clone()))
                        .ok_or_else(|| {
                            invalid(
                                item.at.clone(),
                                Problem::UnknownSignal {
                                    from: from.clone(),
                                    to: to.clone(),
                                    list,
                                    signal: item.value.to_owned(),
                                },
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let require = signals(&input.require, SignalList::Require)?;
        let block_on = signals(&input.block_on, SignalList::BlockOn)?;
        let min_time = match &input.min_time_in_stage {
            Some(text) => Some(duration::parse(text.value).ok_or_else(|| {
                invalid(
                    text.at.clone(),
                    Problem::InvalidDuration {
                        value: text.value.to_owned(),
                    },
                )
            })?),
            None => None,
        };
        let select = match &input.select {
            Some(text) => text
                .value
                .parse::<Select>()
                .map_err(|problem| invalid(text.at.clone(), problem))?,
            None => Select::default(),
        };
        let promotion = Promotion::new(
            from.clone(),
            to.clone(),
            require.iter().map(|(k, _)| *k).collect(),
            block_on.iter().map(|(k, _)| *k).collect(),
            min_time,
        )
        .map(|p| p.with_select(select))
        .map_err(|problem| {
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
        })
    }
}
