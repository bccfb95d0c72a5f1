//! The one orchestrator that the command line and the service both call.
//!
//! [`copy`] runs one copy job with the identities resolved for it. [`Service`] takes a signal,
//! finds its stage with the pipeline (`rules`), records it next to the image (`evidence`),
//! evaluates the gates of the promotions it may open, copies, records the promotion, and
//! announces the outcome (`publish`).

use std::sync::Arc;

use crate::registry::auth::IdentityChoice;
use crate::registry::client::scope;
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

/// Runs a copy job with credentials resolved now (a fresh Google token per job, DESIGN.md §4).
/// Credentials are only sent to the two registries the job names.
pub async fn copy(
    transport: &Transport,
    job: &CopyJob,
    progress: Arc<Progress>,
) -> Result<CopyReport, RegistryError> {
    let source_host = &job.source.repository.registry;
    let destination_host = &job.destination.repository.registry;
    let source_credential = job.source_identity.resolve(source_host).await?;
    let destination_credential = job.destination_identity.resolve(destination_host).await?;

    let mut destination_scopes = vec![scope(&job.destination.repository, "pull,push")];
    if source_host == destination_host {
        // A cross-repository mount needs pull on the source repository in the same token.
        destination_scopes.push(scope(&job.source.repository, "pull"));
    }
    let source_client = transport.client(
        source_host.clone(),
        source_credential,
        vec![scope(&job.source.repository, "pull")],
    );
    let destination_client = transport.client(
        destination_host.clone(),
        destination_credential,
        destination_scopes,
    );
    let copier = Copier {
        source: &source_client,
        destination: &destination_client,
        options: job.options.clone(),
        progress,
    };
    copier.copy(&job.source, &job.destination).await
}

mod outcome;
mod service;

pub use outcome::{Decision, Outcome, PromoteError};
pub use service::Service;
