//! promoter: promotes immutable container images through a path to production, exactly.
//!
//! Data flows one way: the inbound transports (`http` for Pub/Sub push and direct CloudEvents,
//! `pull` for StreamingPull, `cli` for people and CI) turn what arrives into signals (`events`) or
//! copy jobs; `promote` decides with the pipeline (`rules`) and the records in the registry
//! (`evidence`), copies with the `registry` engine, attests the promotion (`attest`) and
//! announces the outcome (`publish`).

pub mod attest;
pub mod cli;
pub mod config;
pub mod events;
pub mod evidence;
pub mod http;
pub mod promote;
pub mod publish;
pub mod pull;
pub mod registry;
pub mod rules;
pub mod status;
pub mod telemetry;
