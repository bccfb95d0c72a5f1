//! Promotion rules: the pipeline (stages, promotions between them, which images may move), read
//! from the rules file or built from the environment, and the pure decisions made with it —
//! which stage an event's image is in, which promotions a signal concerns, and whether a gate
//! is open given the recorded evidence (docs/rules.md).
//!
//! Nothing here does I/O or reads the clock: the environment comes through a lookup closure,
//! `now` and the evidence are parameters, so every decision is reproducible in tests and
//! identical on every instance that reads the same records.

mod default;
mod duration;
mod error;
mod freeze;
mod gate;
mod glob;
mod locate;
mod model;
mod select;
mod yaml;

pub use duration::parse as parse_duration;
pub use error::{Origin, Problem, RulesError, SignalList};
pub use freeze::FreezeWindow;
pub use gate::{Evidence, Frozen, Gate, Record, Soak, Waiting, evaluate, soak_clock};
pub use glob::ImageGlob;
pub use locate::{Located, names_registry};
pub use model::{ApproverPattern, Gates, Pipeline, Promotion, Select, Stage, StageName};
pub use select::{Candidate, Destination, NewestHeld, Skip, Verdict, judge, move_order};

#[cfg(test)]
mod tests;
