//! Binary Authorization (optional, `PROMOTER_BINAUTHZ_ATTESTOR=projects/P/attestors/A`): beside
//! each promotion attestation, an attestation occurrence in Container Analysis for the
//! attestor's note, so a Binary Authorization policy that requires the attestor admits only
//! images promoter promoted ([creating attestations]).
//!
//! The occurrence carries Binary Authorization's signature payload for the image (the JSON
//! `gcloud container binauthz create-signature-payload` writes) and a PKIX signature of it by
//! the same Cloud KMS key that signs the promotion attestations, named by the public key id the
//! attestor lists for that key ([Attestor], [Occurrence]). The attestor is read once, on first
//! use, for its note and that id (its identity needs `binaryauthorization.attestors.get`).
//!
//! [creating attestations]: https://cloud.google.com/binary-authorization/docs/making-attestations
//! [Attestor]: https://cloud.google.com/binary-authorization/docs/reference/rest/v1/projects.attestors
//! [Occurrence]: https://cloud.google.com/container-analysis/docs/reference/rest/v1/projects.occurrences

use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::registry::{Digest, Repository};

use super::AttestError;
use super::google::GoogleApi;
use super::key::{AttestationKey, PublicKey};

/// `projects/P/attestors/A`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestorName {
    name: String,
    project: String,
}

impl AttestorName {
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl FromStr for AttestorName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        match parts.as_slice() {
            ["projects", project, "attestors", attestor]
                if !project.is_empty() && !attestor.is_empty() =>
            {
                Ok(AttestorName {
                    name: text.trim().to_owned(),
                    project: (*project).to_owned(),
                })
            }
            _ => Err(format!(
                "{text:?} is not an attestor name (projects/P/attestors/A)"
            )),
        }
    }
}

/// The signature payload of Binary Authorization's PKIX attestations, field for field as
/// gcloud's `create-signature-payload` writes it (keys sorted, two-space indent, a final
/// newline).
#[derive(Serialize)]
struct SignaturePayload<'a> {
    critical: Critical<'a>,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: Image<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct Image<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

pub const PAYLOAD_TYPE: &str = "Google cloud binauthz container signature";

/// The payload signed for `repository@digest`.
pub fn signature_payload(repository: &str, digest: &Digest) -> Vec<u8> {
    let payload = SignaturePayload {
        critical: Critical {
            identity: Identity {
                docker_reference: repository,
            },
            image: Image {
                docker_manifest_digest: digest.as_str(),
            },
            kind: PAYLOAD_TYPE,
        },
    };
    let mut bytes = serde_json::to_vec_pretty(&payload).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The attestor as `attestors.get` returns it: the fields promoter reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attestor {
    user_owned_grafeas_note: Option<UserOwnedGrafeasNote>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserOwnedGrafeasNote {
    note_reference: String,
    #[serde(default)]
    public_keys: Vec<AttestorPublicKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestorPublicKey {
    #[serde(default)]
    id: String,
    pkix_public_key: Option<PkixPublicKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PkixPublicKey {
    #[serde(default)]
    public_key_pem: String,
}

/// What the attestor says about promoter's key: its note and the key's id there.
#[derive(Clone, Debug)]
struct Resolved {
    note: String,
    public_key_id: String,
}

/// The occurrence `projects.occurrences.create` answers with: its name.
#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    name: String,
}

pub struct BinAuthz {
    attestor: AttestorName,
    binauthz: GoogleApi,
    container_analysis: GoogleApi,
    resolved: tokio::sync::OnceCell<Resolved>,
}

impl BinAuthz {
    pub fn new(
        attestor: AttestorName,
        binauthz_endpoint: &str,
        container_analysis_endpoint: &str,
    ) -> Result<BinAuthz, AttestError> {
        Ok(BinAuthz {
            attestor,
            binauthz: GoogleApi::new("Binary Authorization", binauthz_endpoint)?,
            container_analysis: GoogleApi::new("Container Analysis", container_analysis_endpoint)?,
            resolved: tokio::sync::OnceCell::new(),
        })
    }

    pub fn attestor(&self) -> &AttestorName {
        &self.attestor
    }

    async fn resolve(&self, key: &AttestationKey) -> Result<Resolved, AttestError> {
        self.resolved
            .get_or_try_init(|| async {
                let attestor: Attestor = self.binauthz.get(self.attestor.as_str()).await?;
                let wrong = |cause: String| AttestError::Key {
                    what: format!("Binary Authorization attestor {}", self.attestor.as_str()),
                    cause,
                };
                let note = attestor
                    .user_owned_grafeas_note
                    .ok_or_else(|| wrong("it has no user-owned note".into()))?;
                let public = key.public_key().await?;
                let kms_id = key.kms_name().map(|name| name.attestor_key_id());
                let matching = note.public_keys.iter().find(|listed| {
                    Some(&listed.id) == kms_id.as_ref()
                        || listed
                            .pkix_public_key
                            .as_ref()
                            .and_then(|pkix| PublicKey::from_pem(&pkix.public_key_pem).ok())
                            .is_some_and(|listed| listed.to_pem() == public.to_pem())
                });
                let Some(matching) = matching else {
                    return Err(wrong(format!(
                        "none of its public keys ({}) is promoter's attestation key {}",
                        note.public_keys
                            .iter()
                            .map(|k| k.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        key.id()
                    )));
                };
                Ok(Resolved {
                    note: note.note_reference,
                    public_key_id: matching.id.clone(),
                })
            })
            .await
            .cloned()
    }

    /// Creates the attestation occurrence for `repository@digest`; returns its name.
    pub async fn attest(
        &self,
        key: &AttestationKey,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<String, AttestError> {
        let resolved = self.resolve(key).await?;
        let reference = repository.to_string();
        let payload = signature_payload(&reference, digest);
        let signature = key.sign(&payload).await?;
        // Binary Authorization names images by `https://` URLs (gcloud's NormalizeArtifactUrl).
        let body = serde_json::json!({
            "resourceUri": format!("https://{reference}@{digest}"),
            "noteName": resolved.note,
            "attestation": {
                "serializedPayload": BASE64.encode(&payload),
                "signatures": [{
                    "publicKeyId": resolved.public_key_id,
                    "signature": BASE64.encode(&signature),
                }],
            },
        });
        let created: Created = self
            .container_analysis
            .post(
                &format!("projects/{}/occurrences", self.attestor.project),
                &body,
            )
            .await?;
        Ok(created.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_gclouds() {
        let digest = Digest::sha256_of(b"image");
        let payload = signature_payload("europe-west2-docker.pkg.dev/p/r/prod/app", &digest);
        let expected = format!(
            "{{\n  \"critical\": {{\n    \"identity\": {{\n      \"docker-reference\": \"europe-west2-docker.pkg.dev/p/r/prod/app\"\n    }},\n    \"image\": {{\n      \"docker-manifest-digest\": \"{digest}\"\n    }},\n    \"type\": \"Google cloud binauthz container signature\"\n  }}\n}}\n"
        );
        assert_eq!(String::from_utf8(payload).expect("utf-8"), expected);
    }

    #[test]
    fn attestor_names_parse() {
        let name: AttestorName = "projects/p/attestors/promoter".parse().expect("a name");
        assert_eq!(name.project, "p");
        for bad in ["projects/p", "projects//attestors/a", "p/attestors/a", ""] {
            assert!(bad.parse::<AttestorName>().is_err(), "{bad}");
        }
    }
}
