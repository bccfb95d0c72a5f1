//! Everything that talks to OCI registries: references, identity, the HTTP client with its auth
//! handshake and its one retry layer, the exact-copy engine, and the errors all of them report.

pub mod auth;
pub mod client;
pub mod copy;
pub mod manifest;
pub mod reference;

pub use client::{RegistryClient, Transport};
pub use copy::{Copier, CopyOptions, CopyReport};
pub use reference::{Digest, ImageRef, ReferenceError, RegistryHost, Repository, Tag};

use std::time::Duration;

/// What went wrong talking to a registry. Every variant names the registry or image and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached (DNS, refused, reset, timed out) after retries.
    #[error("registry {registry} is unreachable ({what}): {cause}")]
    Unreachable {
        registry: String,
        what: String,
        cause: String,
    },
    /// The registry answered with an error status (after retries where retrying could help).
    #[error("registry {registry} answered {status} to {what}{detail}")]
    Status {
        registry: String,
        what: String,
        status: u16,
        detail: String,
        /// How long the registry asked us to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The registry has a referrers API but would not list an image's referrers. The copy stops
    /// rather than leave the signatures and attestations behind.
    #[error(
        "registry {registry} answered {status} to {what}{detail}; only a 404 says a registry has no referrers API, so the image is not promoted without its referrers"
    )]
    Referrers {
        registry: String,
        what: String,
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The registry does not allow deleting (OCI distribution spec: registries MAY disable it).
    #[error(
        "registry {registry} refused to delete {what}{detail}; deletes are turned off there: allow them (distribution: `storage.delete.enabled: true`; Artifact Registry: grant the identity `roles/artifactregistry.repoAdmin` on that repository)"
    )]
    DeleteRefused {
        registry: String,
        what: String,
        detail: String,
    },
    /// The registry wants credentials that were not given or were refused.
    #[error(
        "registry {registry} refused {credential} credentials for {scope}{detail}; check the identity has access (docker login / gcloud auth / *_AUTH_OVERRIDE)"
    )]
    Unauthorized {
        registry: String,
        scope: String,
        credential: String,
        detail: String,
    },
    /// The token realm the registry sent us to failed.
    #[error("token realm {realm} for registry {registry}: {cause}")]
    TokenRealm {
        registry: String,
        realm: String,
        cause: String,
        transient: bool,
    },
    /// The image (tag or digest) is not in the repository.
    #[error("{image} not found in registry {registry}")]
    NotFound { image: String, registry: String },
    /// Tags are immutable in a path to production: the destination tag already names other content.
    #[error(
        "destination tag {image} already holds {existing}, not {wanted}; tags are immutable in the path to production, so nothing was copied"
    )]
    TagConflict {
        image: String,
        existing: Digest,
        wanted: Digest,
    },
    /// The tag and the digest given for one image name different content.
    #[error("{image}: tag {tag} points at {tag_digest}, not at the digest given")]
    TagDigestMismatch {
        image: String,
        tag: String,
        tag_digest: Digest,
    },
    /// The registry served content whose digest is not what was asked for.
    #[error(
        "{image}: registry {registry} served content with digest {actual}, expected {expected}"
    )]
    DigestMismatch {
        image: String,
        registry: String,
        expected: Digest,
        actual: Digest,
    },
    /// A manifest that cannot be copied (not JSON, unknown kind, too large).
    #[error("{image}: {cause}")]
    BadManifest { image: String, cause: String },
    /// No identity could be had for the registry.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

impl RegistryError {
    /// Whether trying the same thing later can succeed: the registry or a token endpoint was
    /// unavailable or throttling. Everything else is final for the same input.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Referrers { status, .. } => {
                // A registry that lists referrers and then refuses one image's list (403) is
                // taken as passing (access being granted, a quota): copying without them would
                // promote an image without its signatures, so the delivery is tried again later.
                is_retryable_status(*status) || *status == 403
            }
            RegistryError::Auth(e) => e.is_transient(),
            other => other.retry_now(),
        }
    }

    /// Whether the same request, sent again in a moment, may succeed: the connection failed, the
    /// registry answered 408/429/5xx, or its token realm was unavailable. This is what the retry
    /// layer retries; [`RegistryError::is_transient`] also covers what only a later delivery can
    /// fix.
    pub(crate) fn retry_now(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } | RegistryError::Referrers { status, .. } => {
                is_retryable_status(*status)
            }
            RegistryError::TokenRealm { transient, .. } => *transient,
            _ => false,
        }
    }

    /// How long the registry asked for before the next attempt (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. }
            | RegistryError::Referrers { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// 408, 429 and 5xx: the statuses after which the same request may succeed.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}
