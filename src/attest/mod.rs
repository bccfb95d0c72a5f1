//! Promotion attestations (docs/attestations.md): with `PROMOTER_ATTESTATION_KEY` set, every promotion
//! also writes a signed statement that promoter verified the digest against the promotion's
//! gate and promoted it into the stage.
//!
//! - [`key`]: the key — Cloud KMS (`gcpkms://…`, [`kms`]) or a local PEM — and key ids.
//! - [`dsse`]: the envelope and its pre-authentication encoding.
//! - [`statement`]: the in-toto Statement v1 with a SLSA VSA v1 predicate, and its checks.
//! - [`cosign`]: where it is stored — a layer of cosign's `sha256-<hex>.att` manifest.
//! - [`verify`]: verification, for `promoter verify` and for the service finding its own.
//! - [`binauthz`]: the optional Binary Authorization attestation occurrence.
//!
//! How an attestation is written, and why it is not lost: the `.att` manifest is shared — other
//! tools' attestations, the previous stage's (copied with the image), this stage's — and a
//! registry has no compare-and-swap for a tag, so [`Attester::ensure`] appends and then reads
//! the tag back until it holds a valid attestation for the stage by this key (its own, or one
//! another instance wrote for the same promotion, which says the same: same digest, repository,
//! policy and level). Every writer of the tag keeps every layer it read, so what a race between
//! two writers can drop is only a layer the loser wrote in the moment between the other's read
//! and write; the loser's read-back sees it and appends again.

pub mod binauthz;
pub mod cosign;
pub mod dsse;
mod google;
pub mod key;
mod kms;
pub mod statement;
pub mod verify;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{self, var};
use crate::registry::manifest::Descriptor;
use crate::registry::{Digest, RegistryClient, RegistryError, Repository};

pub use binauthz::{AttestorName, BinAuthz};
pub use key::{AttestationKey, KeySpec, PublicKey};
pub use statement::{Policy, ResourceDescriptor};

use dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use statement::{Claim, Expected, VSA_PREDICATE_TYPE};

/// How often [`Attester::ensure`] appends before it gives up for this delivery: each round is
/// one read, one write and one read back; losing more than a few in a row means writers keep
/// racing, and the redelivery tries again later.
const MAX_APPENDS: u32 = 5;

pub const DEFAULT_KMS_ENDPOINT: &str = "https://cloudkms.googleapis.com";
pub const DEFAULT_CONTAINER_ANALYSIS_ENDPOINT: &str = "https://containeranalysis.googleapis.com";
pub const DEFAULT_BINAUTHZ_ENDPOINT: &str = "https://binaryauthorization.googleapis.com";

/// Why an attestation could not be made, read or verified.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A key that cannot be used: a file that does not parse, a KMS key of another algorithm,
    /// an attestor that does not list the key.
    #[error("{what}: {cause}")]
    Key { what: String, cause: String },
    /// A Google API refused or failed.
    #[error("{api}: {what}{}: {cause}", status.map(|s| format!(" answered {s}")).unwrap_or_default())]
    Google {
        api: String,
        what: String,
        status: Option<u16>,
        cause: String,
        transient: bool,
    },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The `.att` tag holds something promoter cannot append to, or kept being overwritten.
    #[error("attestations {what}: {cause}")]
    Layout { what: String, cause: String },
}

impl AttestError {
    pub fn is_transient(&self) -> bool {
        match self {
            AttestError::Google { transient, .. } => *transient,
            AttestError::Registry(e) => e.is_transient(),
            AttestError::Key { .. } | AttestError::Layout { .. } => false,
        }
    }
}

/// An attestation as the promotion record, the `promoted` event and `promoter status` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Attestation {
    /// The key id: the KMS key version's name, or `sha256:<hex>` of the local key's SPKI DER.
    pub key: String,
    /// The cosign tag holding it, `sha256-<hex>.att`.
    pub tag: String,
    /// The digest of its envelope (its layer in the tag's manifest).
    pub envelope: String,
    pub predicate_type: String,
    /// The Binary Authorization attestation occurrence written with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binauthz_occurrence: Option<String>,
}

/// The attestation settings of the environment, read once at start-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub key: Option<KeySpec>,
    pub attestor: Option<AttestorName>,
    pub kms_endpoint: String,
    pub container_analysis_endpoint: String,
    pub binauthz_endpoint: String,
}

impl Settings {
    /// `PROMOTER_ATTESTATION_KEY`, `PROMOTER_BINAUTHZ_ATTESTOR` and the API endpoints; a bad
    /// value is an error naming its variable.
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_lookup(var)
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let key = lookup(config::PROMOTER_ATTESTATION_KEY)
            .map(|text| {
                text.parse::<KeySpec>()
                    .map_err(|e| format!("{} = {e}", config::PROMOTER_ATTESTATION_KEY))
            })
            .transpose()?;
        let attestor = lookup(config::PROMOTER_BINAUTHZ_ATTESTOR)
            .map(|text| {
                text.parse::<AttestorName>()
                    .map_err(|e| format!("{} = {e}", config::PROMOTER_BINAUTHZ_ATTESTOR))
            })
            .transpose()?;
        if attestor.is_some() && !matches!(key, Some(KeySpec::Kms(_))) {
            return Err(format!(
                "{} is set, so {} must be a {}… Cloud KMS key version: Binary Authorization attestations are signed with the same KMS key",
                config::PROMOTER_BINAUTHZ_ATTESTOR,
                config::PROMOTER_ATTESTATION_KEY,
                key::GCPKMS_SCHEME
            ));
        }
        let endpoint = |name: &str, default: &str| -> Result<String, String> {
            let value = lookup(name).unwrap_or_else(|| default.to_owned());
            match url::Url::parse(&value) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Ok(value.trim_end_matches('/').to_owned())
                }
                _ => Err(format!("{name} = {value:?} is not an http(s) URL")),
            }
        };
        Ok(Settings {
            key,
            attestor,
            kms_endpoint: endpoint(config::PROMOTER_KMS_ENDPOINT, DEFAULT_KMS_ENDPOINT)?,
            container_analysis_endpoint: endpoint(
                config::PROMOTER_CONTAINER_ANALYSIS_ENDPOINT,
                DEFAULT_CONTAINER_ANALYSIS_ENDPOINT,
            )?,
            binauthz_endpoint: endpoint(
                config::PROMOTER_BINAUTHZ_ENDPOINT,
                DEFAULT_BINAUTHZ_ENDPOINT,
            )?,
        })
    }
}

/// The image an attestation is about: its digest in the destination repository of a stage.
pub struct Subject<'a> {
    pub repository: &'a Repository,
    pub digest: &'a Digest,
    /// The image's top manifest, named as the attestations manifest's `subject`.
    pub descriptor: &'a Descriptor,
    pub stage: &'a str,
}

/// Writes promotion attestations with one key.
pub struct Attester {
    key: AttestationKey,
    verifier_id: String,
    policy: Policy,
    binauthz: Option<BinAuthz>,
    /// The stages whose promotions get a Binary Authorization occurrence: the end of the path.
    binauthz_stages: Vec<String>,
}

impl std::fmt::Debug for Attester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attester")
            .field("key", &self.key)
            .field("verifier_id", &self.verifier_id)
            .field("policy", &self.policy)
            .field(
                "binauthz",
                &self.binauthz.as_ref().map(|b| b.attestor().as_str()),
            )
            .finish()
    }
}

impl Attester {
    /// The attester `settings` ask for (none without a key). A local key is read now.
    pub fn from_settings(
        settings: &Settings,
        verifier_id: String,
        policy: Policy,
    ) -> Result<Option<Attester>, AttestError> {
        let Some(spec) = &settings.key else {
            return Ok(None);
        };
        let key = AttestationKey::load(spec, &settings.kms_endpoint)?;
        let binauthz = settings
            .attestor
            .clone()
            .map(|attestor| {
                BinAuthz::new(
                    attestor,
                    &settings.binauthz_endpoint,
                    &settings.container_analysis_endpoint,
                )
            })
            .transpose()?;
        Ok(Some(Attester {
            key,
            verifier_id,
            policy,
            binauthz,
            binauthz_stages: Vec::new(),
        }))
    }

    /// Which stages' promotions also get a Binary Authorization attestation. Binary
    /// Authorization admits an image by its digest wherever it is stored, so an occurrence for a
    /// promotion into extended-test would admit the same digest in prod: only promotions into
    /// the stages where the path ends (prod) get one.
    pub fn with_binauthz_stages(self, stages: Vec<String>) -> Attester {
        Attester {
            binauthz_stages: stages,
            ..self
        }
    }

    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// Makes sure `subject`'s attestations hold a valid promotion attestation for its stage by
    /// this key, writing one (and its Binary Authorization occurrence) if none is there; returns
    /// the one that is. `inputs` are the signal records the promotion was decided on.
    pub async fn ensure(
        &self,
        client: &RegistryClient,
        subject: &Subject<'_>,
        inputs: Vec<ResourceDescriptor>,
        time: DateTime<Utc>,
    ) -> Result<Attestation, AttestError> {
        let public = self.key.public_key().await?;
        let repository = subject.repository.to_string();
        let expected = Expected {
            digest: subject.digest,
            repository: &repository,
            stage: subject.stage,
        };
        let tag = cosign::tag(subject.digest);
        let found = |envelope: &Digest, binauthz_occurrence: Option<String>| Attestation {
            key: public.id().to_owned(),
            tag: tag.to_string(),
            envelope: envelope.to_string(),
            predicate_type: VSA_PREDICATE_TYPE.to_owned(),
            binauthz_occurrence,
        };
        // This delivery's envelope, signed once however often it must be appended.
        let mut ours: Option<(Vec<u8>, Digest, Option<String>)> = None;
        for _ in 0..MAX_APPENDS {
            let existing = client
                .get_manifest(subject.repository, tag.as_str())
                .await?;
            if let Some(manifest) = &existing {
                let layers = cosign::layers(manifest).map_err(|cause| AttestError::Layout {
                    what: format!("{repository}:{tag}"),
                    cause,
                })?;
                for layer in cosign::promoter_layers(&layers)
                    .into_iter()
                    .filter(|l| l.stage == subject.stage && l.key == public.id())
                {
                    if let Some((_, digest, occurrence)) = &ours
                        && *digest == layer.digest
                    {
                        return Ok(found(digest, occurrence.clone()));
                    }
                    let verdict = verify::verify_layer(
                        client,
                        subject.repository,
                        (&layer.digest, layer.size),
                        &expected,
                        &public,
                    )
                    .await?;
                    if verdict.ok {
                        return Ok(found(
                            &layer.digest,
                            ours.as_ref().and_then(|(_, _, o)| o.clone()),
                        ));
                    }
                    tracing::warn!(
                        repository,
                        layer = %layer.digest,
                        failures = verdict.failures(),
                        "an attestation layer for this stage does not verify; writing a new one"
                    );
                }
            }
            if ours.is_none() {
                let statement = Claim {
                    verifier_id: &self.verifier_id,
                    time,
                    repository: &repository,
                    digest: subject.digest,
                    stage: subject.stage,
                    policy: &self.policy,
                    inputs: inputs.clone(),
                }
                .statement();
                let body = serde_json::to_vec(&statement).map_err(|e| AttestError::Layout {
                    what: format!("{repository}:{tag}"),
                    cause: format!("statement: {e}"),
                })?;
                let signature = self
                    .key
                    .sign(&dsse::pae(IN_TOTO_PAYLOAD_TYPE, &body))
                    .await?;
                let envelope =
                    Envelope::new(IN_TOTO_PAYLOAD_TYPE, &body, public.id(), &signature).to_json();
                // The occurrence goes first: an attestation layer in the registry then always
                // has its occurrence, so finding the layer later means nothing is missing.
                let occurrence = match &self.binauthz {
                    Some(binauthz) if self.binauthz_stages.iter().any(|s| s == subject.stage) => {
                        Some(
                            binauthz
                                .attest(&self.key, subject.repository, subject.digest)
                                .await?,
                        )
                    }
                    _ => None,
                };
                let digest = Digest::sha256_of(&envelope);
                ours = Some((envelope, digest, occurrence));
            }
            let Some((envelope, digest, _)) = &ours else {
                continue;
            };
            client
                .push_blob_bytes(
                    subject.repository,
                    digest,
                    bytes::Bytes::from(envelope.clone()),
                )
                .await?;
            let layer = cosign::layer(envelope, VSA_PREDICATE_TYPE, subject.stage, public.id());
            let written =
                cosign::append(existing.as_ref(), layer, subject.descriptor).map_err(|cause| {
                    AttestError::Layout {
                        what: format!("{repository}:{tag}"),
                        cause,
                    }
                })?;
            client
                .push_blob_bytes(
                    subject.repository,
                    &Digest::sha256_of(&written.config),
                    written.config.clone(),
                )
                .await?;
            let put = client
                .put_manifest(subject.repository, tag.as_str(), &written.manifest)
                .await?;
            if !put.registry_tracks_subject {
                // Listed where tools look for referrers on registries without the API.
                crate::registry::copy::update_fallback_tag(
                    client,
                    subject.repository,
                    subject.digest,
                    &[written.manifest.descriptor()],
                    None,
                )
                .await?;
            }
        }
        Err(AttestError::Layout {
            what: format!("{repository}:{tag}"),
            cause: format!(
                "other writers replaced it {MAX_APPENDS} times in a row before the attestation for {} could be read back",
                subject.stage
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn settings_name_the_variable_that_is_wrong() {
        let none = Settings::from_lookup(lookup(&[])).expect("no key is fine");
        assert_eq!(none.key, None);
        assert_eq!(none.kms_endpoint, DEFAULT_KMS_ENDPOINT);
        let bad = Settings::from_lookup(lookup(&[(
            "PROMOTER_ATTESTATION_KEY",
            "gcpkms://projects/p/keyRings/r",
        )]))
        .expect_err("a bad key");
        assert!(bad.starts_with("PROMOTER_ATTESTATION_KEY = "), "{bad}");
        let local_with_attestor = Settings::from_lookup(lookup(&[
            ("PROMOTER_ATTESTATION_KEY", "/keys/a.pem"),
            ("PROMOTER_BINAUTHZ_ATTESTOR", "projects/p/attestors/a"),
        ]))
        .expect_err("binauthz needs KMS");
        assert!(
            local_with_attestor.contains("PROMOTER_BINAUTHZ_ATTESTOR"),
            "{local_with_attestor}"
        );
        let endpoint = Settings::from_lookup(lookup(&[("PROMOTER_KMS_ENDPOINT", "localhost:1")]))
            .expect_err("not a URL");
        assert!(endpoint.starts_with("PROMOTER_KMS_ENDPOINT"), "{endpoint}");
        let fake = Settings::from_lookup(lookup(&[(
            "PROMOTER_CONTAINER_ANALYSIS_ENDPOINT",
            "http://127.0.0.1:9/",
        )]))
        .expect("a URL");
        assert_eq!(fake.container_analysis_endpoint, "http://127.0.0.1:9");
    }
}
