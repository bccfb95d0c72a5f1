//! Everything that talks to OCI registries: references, identity, the HTTP client with its auth
//! handshake and retries, and the exact-copy engine (DESIGN.md §3, §4).

pub mod auth;
pub mod client;
pub mod copy;
pub mod manifest;
pub mod reference;

pub use client::{RegistryClient, Transport};
pub use copy::{Copier, CopyOptions, CopyReport};
pub use reference::{Digest, ImageRef, ReferenceError, RegistryHost, Repository, Tag};

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
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => is_retryable_status(*status),
            RegistryError::TokenRealm { transient, .. } => *transient,
            RegistryError::Auth(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// 408, 429 and 5xx: the statuses after which the same request may succeed.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}
