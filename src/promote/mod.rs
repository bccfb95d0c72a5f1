//! The one orchestrator that the command line and the service both call.
//!
//! [`copy`] runs one copy job with the identities resolved for it. [`Service`] takes a signal,
//! finds its stage with the pipeline (`rules`), records it (`evidence`), plans what its gates
//! allow without writing (`plan`), and executes the plan: copies, records the promotion and
//! announces the outcome (`execute`, `publish`). Outcomes are values (`outcome`); only failures
//! that a retry may mend are errors.

use std::sync::Arc;

use crate::registry::auth::IdentityChoice;
use crate::registry::copy::Progress;
use crate::registry::{Copier, CopyOptions, CopyReport, ImageRef, RegistryError, Transport};

/// One copy job.
#[derive(Clone, Debug)]
pub struct CopyJob {
    pub source: ImageRef,
    pub destination: ImageRef,
    pub source_identity: IdentityChoice,
    pub destination_identity: IdentityChoice,
    pub options: CopyOptions,
}

/// Runs a copy job with credentials resolved now (a fresh token per job, docs/configuration.md).
/// Credentials are only sent to the two registries the job names.
pub async fn copy(
    transport: &Transport,
    job: &CopyJob,
    progress: Arc<Progress>,
) -> Result<CopyReport, RegistryError> {
    let (source, destination) = (&job.source.repository, &job.destination.repository);
    let source_client = transport
        .job_client(&job.source_identity, source, "pull", None)
        .await?;
    let destination_client = transport
        .job_client(
            &job.destination_identity,
            destination,
            "pull,push",
            Some(source),
        )
        .await?;
    let copier = Copier {
        source: &source_client,
        destination: &destination_client,
        options: job.options.clone(),
        progress,
    };
    copier.copy(&job.source, &job.destination).await
}

mod execute;
pub(crate) mod job;
mod outcome;
pub(crate) mod plan;
mod service;
mod signals;
pub mod view;
mod waiting;

pub use outcome::{Answer, CandidateOutcome, Decision, Fate, FrozenAnswer, Listed, PromoteError};
pub use service::{Clock, Service};
