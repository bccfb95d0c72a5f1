//! What can go wrong when loading a pipeline or placing an event's image in it.

use std::fmt;

use crate::events::{SignalKind, SignalName};
use crate::registry::reference::{ReferenceError, RegistryHost};

use super::model::StageName;

/// Where a bad value came from, so the message can point the user at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the rules file, 1-based.
    Line(u64),
    /// A field of the rules file whose line the YAML parser could not tell, by its path
    /// (`promotions[1].require`).
    Field(String),
    /// The rules file as a whole: the parser reported no position at all.
    File,
    /// An environment variable read for the embedded default pipeline.
    Env(&'static str),
    /// The embedded default pipeline's own fixed parts (stage names, signals).
    Builtin,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Line(line) => write!(f, "rules file line {line}"),
            Origin::Field(path) => write!(f, "rules file, field {path}"),
            Origin::File => f.write_str("rules file"),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Builtin => f.write_str("embedded default pipeline"),
        }
    }
}

/// Which list of a promotion a signal was named in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalList {
    /// The promotion's `require`.
    Require,
    /// The promotion's `block_on`.
    BlockOn,
}

impl SignalList {
    fn verb(self) -> &'static str {
        match self {
            SignalList::Require => "requires",
            SignalList::BlockOn => "blocks on",
        }
    }
}

/// What is wrong with a well-formed rules file (or the environment of the embedded default).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// `stages` is an empty list.
    #[error("no stages are defined: a pipeline needs at least two stages")]
    NoStages,
    /// `promotions` is an empty list: nothing would ever move.
    #[error("no promotions are defined: nothing would ever be promoted")]
    NoPromotions,
    /// A stage name outside `[a-z0-9-]`, empty, too long, or with a leading/trailing `-`.
    #[error(
        "stage name {0:?} is not valid: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
    )]
    InvalidStageName(String),
    /// Two stages share a name.
    #[error("stage {name} is defined twice{}", first_at(*first_line))]
    DuplicateStage {
        name: StageName,
        first_line: Option<u64>,
    },
    /// A stage's `registry` is not `host[/path]` with a registry host first.
    #[error("registry {value:?} is not host[/path]: {reason}")]
    InvalidRegistry { value: String, reason: String },
    /// A stage's `path` is not a repository path a registry would accept.
    #[error("stage {stage} path {value:?} is not a valid repository path: {error}")]
    InvalidPath {
        stage: StageName,
        value: String,
        error: ReferenceError,
    },
    /// Two stages resolve to the same `{registry}/{path}`, so an image could not tell which
    /// stage it is in.
    #[error("stages {first} and {second} are both at {location}: each stage needs its own place")]
    SameLocation {
        first: StageName,
        second: StageName,
        location: String,
    },
    /// A promotion's `from` or `to` names no defined stage.
    #[error(
        "promotion {from} -> {to} names unknown stage {stage:?} (stages are: {})",
        join(known)
    )]
    UnknownStage {
        from: String,
        to: String,
        stage: String,
        known: Vec<StageName>,
    },
    /// A promotion from a stage to itself: the copy would be a no-op that looks like progress.
    #[error("promotion {stage} -> {stage} promotes a stage to itself")]
    SelfPromotion { stage: StageName },
    /// The same `(from, to)` pair twice: two gates for one move would contradict each other.
    #[error("promotion {from} -> {to} is defined twice{}", first_at(*first_line))]
    DuplicatePromotion {
        from: StageName,
        to: StageName,
        first_line: Option<u64>,
    },
    /// A name in `require` or `block_on` that is neither built in nor declared: a typo would
    /// otherwise wait forever.
    #[error(
        "promotion {route} {} unknown signal {signal:?} (expected one of {}{known}; declare new signals under `signals:`)",
        list.verb(),
        join(&SignalKind::BUILT_IN)
    )]
    UnknownSignal {
        /// `from -> to`.
        route: String,
        list: SignalList,
        signal: String,
        /// `, or the declared a, b` when the rules declare signals.
        known: String,
    },
    /// `require` is empty and nothing else is waited for: a gate without evidence would
    /// promote every image at once.
    #[error(
        "promotion {from} -> {to} requires nothing: list at least one signal in `require`, or set `soak` or `min_time_in_stage` (a gate with nothing to wait for would promote every image)"
    )]
    EmptyRequire { from: StageName, to: StageName },
    /// A `signals:` entry that is not a signal name.
    #[error("signal {value:?}: {reason}")]
    InvalidSignalName { value: String, reason: String },
    /// A `signals:` entry that names a built-in signal.
    #[error("signal {name:?} is built in: it needs no declaring")]
    DeclaredBuiltIn { name: String },
    /// An `approvers` entry that is neither an email address nor `*@domain`.
    #[error("approver {value:?} is neither an email address nor *@domain")]
    InvalidApprover { value: String },
    /// A freeze window that cannot be used.
    #[error("freeze {name:?} {reason}")]
    InvalidFreeze { name: String, reason: String },
    /// A `cloud_build` entry that cannot be used.
    #[error("cloud_build trigger {trigger:?} {reason}")]
    InvalidTrigger { trigger: String, reason: String },
    /// A signal both required and blocking: the gate could never open.
    #[error(
        "promotion {from} -> {to} both requires and blocks on {signal}: the gate could never open"
    )]
    RequiredAndBlocking {
        from: StageName,
        to: StageName,
        signal: SignalKind,
    },
    /// A duration (`min_time_in_stage`, `soak`, a freeze's `duration`) is not `<n><unit>`...
    /// with units s, m, h, d.
    #[error(
        "{field} {value:?} is not a duration: expected whole numbers with units s, m, h or d (90s, 30m, 2h, 1d, 1h30m), at most {max_days}d",
        max_days = super::duration::MAX_DAYS
    )]
    InvalidDuration { field: &'static str, value: String },
    /// `select` is neither `newest` nor `all`.
    #[error("select {value:?} is not one of newest, all")]
    InvalidSelect { value: String },
    /// An `images` entry that is empty or could never match an image name.
    #[error("image glob {pattern:?} {reason}")]
    InvalidGlob {
        pattern: String,
        reason: &'static str,
    },
    /// `images: []`: no image could ever be promoted.
    #[error("images is empty: no image could ever be promoted (leave it out to allow every image)")]
    EmptyImages,
}

/// Why a pipeline could not be loaded, or why an event's image has no place in it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// The rules file is not YAML, or not of a rules file's shape: a syntax error, an unknown or
    /// missing field, a wrong type, a duplicate key.
    #[error("{at}: {message}")]
    Syntax { at: Origin, message: String },
    /// The rules file (or the environment of the embedded default) is well-formed but describes
    /// a pipeline that cannot work.
    #[error("{at}: {problem}")]
    Invalid { at: Origin, problem: Problem },
    /// A variable the embedded default pipeline needs is unset or empty.
    #[error(
        "environment variable {name} is not set: the embedded default pipeline needs it (or set {} to a rules file)",
        crate::config::PROMOTER_CONFIG
    )]
    MissingEnv { name: &'static str },
    /// An event's image is not a valid reference (or name, with a stage).
    #[error("invalid image reference {text:?}: {error}")]
    Reference { text: String, error: ReferenceError },
    /// An event's image lives under no configured stage. The caller must reject it without
    /// contacting `host`: events must not be able to point the service at arbitrary registries.
    #[error(
        "image {image:?} is not under any configured stage (registry host {host}; stages live under {})",
        join(prefixes)
    )]
    UnconfiguredLocation {
        image: String,
        host: RegistryHost,
        /// The configured `{registry}/{path}/` prefixes, for the message.
        prefixes: Vec<String>,
    },
    /// The image's name matches none of the `images` globs.
    #[error(
        "image {image_name:?} is not in the rules' images allowlist ({})",
        join(allowed)
    )]
    ImageNotAllowed {
        image_name: String,
        allowed: Vec<String>,
    },
    /// The event named a stage that is not configured.
    #[error("unknown stage {stage:?} (stages are: {})", join(known))]
    UnknownEventStage {
        stage: String,
        known: Vec<StageName>,
    },
    /// The event named a stage, and a full reference that lives in another stage.
    #[error("image {image:?} is in stage {actual}, but the event says stage {given}")]
    StageMismatch {
        image: String,
        given: StageName,
        actual: StageName,
    },
    /// A bare image name (no registry) without a stage to place it in.
    #[error(
        "image {image:?} names no registry: give the full reference ({{registry}}/{{stage path}}/{{image}}) or a \"stage\""
    )]
    StageRequired { image: String },
}

fn first_at(line: Option<u64>) -> String {
    line.map(|l| format!(" (first at line {l})"))
        .unwrap_or_default()
}

/// `, or the declared a, b` when the rules declare signals.
pub(super) fn declared_list(declared: &[SignalName]) -> String {
    if declared.is_empty() {
        String::new()
    } else {
        format!(", or the declared {}", join(declared))
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
