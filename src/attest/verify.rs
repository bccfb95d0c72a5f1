//! Verifying promotion attestations: each DSSE layer under an image's `sha256-<hex>.att` tag,
//! its envelope, its signature with the key the verifier trusts, and its statement against
//! what a promotion into the stage must say. The service uses the same checks to find an
//! attestation it already wrote; `promoter verify` reports every one.

use serde::Serialize;

use crate::registry::{Digest, RegistryClient, Repository};

use super::AttestError;
use super::cosign;
use super::dsse::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use super::key::PublicKey;
use super::statement::{self, Check, Expected};

/// Envelopes are small (a few KiB); a layer claiming more is not read.
const MAX_ENVELOPE_BYTES: u64 = 1024 * 1024;

/// What was found about one attestation layer.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerVerdict {
    pub layer: String,
    /// promoter's stage annotation, when the layer is promoter's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub checks: Vec<Check>,
    pub ok: bool,
}

impl LayerVerdict {
    /// The failed checks, for a message.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.check, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Verifies one DSSE layer of `repository`'s attestations.
pub async fn verify_layer(
    client: &RegistryClient,
    repository: &Repository,
    layer: (&Digest, u64),
    expected: &Expected<'_>,
    key: &PublicKey,
) -> Result<LayerVerdict, AttestError> {
    let (digest, size) = layer;
    let mut checks = Vec::new();
    let verdict = |checks: Vec<Check>| LayerVerdict {
        layer: digest.to_string(),
        stage: None,
        key: None,
        ok: !checks.is_empty() && checks.iter().all(|c| c.ok),
        checks,
    };
    let fail = |check: &str, detail: String| Check {
        check: check.to_owned(),
        ok: false,
        detail,
    };
    if size > MAX_ENVELOPE_BYTES {
        checks.push(fail(
            "envelope",
            format!("{size} bytes: larger than an attestation envelope"),
        ));
        return Ok(verdict(checks));
    }
    let bytes = client
        .get_small_blob(repository, digest, MAX_ENVELOPE_BYTES as usize)
        .await?;
    let envelope = match Envelope::parse(&bytes) {
        Ok(envelope) => envelope,
        Err(cause) => {
            checks.push(fail("envelope", cause));
            return Ok(verdict(checks));
        }
    };
    checks.push(Check {
        check: "payloadType".into(),
        ok: envelope.payload_type == IN_TOTO_PAYLOAD_TYPE,
        detail: envelope.payload_type.clone(),
    });
    let signed = match envelope.signed_bytes() {
        Ok(signed) => signed,
        Err(cause) => {
            checks.push(fail("envelope", cause));
            return Ok(verdict(checks));
        }
    };
    let mut problems = Vec::new();
    let verified = envelope
        .signatures()
        .into_iter()
        .any(|(keyid, signature)| match signature {
            Ok(signature) => match key.verify(&signed, &signature) {
                Ok(()) => true,
                Err(problem) => {
                    problems.push(format!("signature by {keyid:?}: {problem}"));
                    false
                }
            },
            Err(problem) => {
                problems.push(problem);
                false
            }
        });
    checks.push(Check {
        check: "signature".into(),
        ok: verified,
        detail: if verified {
            format!("DSSE signature verifies with key {}", key.id())
        } else if problems.is_empty() {
            "the envelope has no signature".into()
        } else {
            problems.join("; ")
        },
    });
    match envelope.body() {
        Ok(body) => checks.extend(statement::check(&body, expected)),
        Err(cause) => checks.push(fail("payload", cause)),
    }
    Ok(verdict(checks))
}

/// Verifies every DSSE layer of `repository`'s attestations of `expected.digest` (all of them,
/// or only promoter's for the stage with `only_promoters`). `None`: there is no `.att` tag.
pub async fn verify_all(
    client: &RegistryClient,
    repository: &Repository,
    expected: &Expected<'_>,
    key: &PublicKey,
    only_promoters: bool,
) -> Result<Option<(crate::registry::manifest::RawManifest, Vec<LayerVerdict>)>, AttestError> {
    let tag = cosign::tag(expected.digest);
    let Some(manifest) = client.get_manifest(repository, tag.as_str()).await? else {
        return Ok(None);
    };
    let layers = cosign::layers(&manifest).map_err(|cause| AttestError::Layout {
        what: format!("{repository}:{tag}"),
        cause,
    })?;
    let mut verdicts = Vec::new();
    for (digest, size, stage, key_annotation) in cosign::envelope_layers(&layers) {
        if only_promoters
            && (stage.as_deref() != Some(expected.stage)
                || key_annotation.as_deref() != Some(key.id()))
        {
            continue;
        }
        let mut verdict = verify_layer(client, repository, (&digest, size), expected, key).await?;
        verdict.stage = stage;
        verdict.key = key_annotation;
        verdicts.push(verdict);
    }
    Ok(Some((manifest, verdicts)))
}

/// What `promoter verify` found.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub image: String,
    pub repository: String,
    pub digest: String,
    pub stage: String,
    pub tag: String,
    pub key: String,
    pub layers: Vec<LayerVerdict>,
    pub verified: bool,
}

impl Verification {
    /// What it checked, for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}\n  digest {}\n  stage  {} (level {})\n  key    {}\n  tag    {}: {} attestation layer(s)",
            self.image,
            self.digest,
            self.stage,
            statement::level(&self.stage),
            self.key,
            self.tag,
            self.layers.len()
        );
        for layer in &self.layers {
            let whose = match (&layer.stage, &layer.key) {
                (Some(stage), Some(key)) => format!("promoter, stage {stage}, key {key}"),
                _ => "not promoter's".to_owned(),
            };
            let _ = writeln!(
                out,
                "\n  layer {} ({whose}): {}",
                layer.layer,
                if layer.ok { "VERIFIED" } else { "failed" }
            );
            for check in &layer.checks {
                let _ = writeln!(
                    out,
                    "    {:<4} {:<19} {}",
                    if check.ok { "ok" } else { "FAIL" },
                    check.check,
                    check.detail
                );
            }
        }
        out
    }

    /// Why nothing verified, naming each layer's failed checks.
    pub fn failure(&self) -> String {
        if self.layers.is_empty() {
            return format!(
                "{} has no attestation layer under {}",
                self.repository, self.tag
            );
        }
        format!(
            "no attestation of {}@{} verifies for stage {} with key {}: {}",
            self.repository,
            self.digest,
            self.stage,
            self.key,
            self.layers
                .iter()
                .map(|l| format!("layer {}: {}", l.layer, l.failures()))
                .collect::<Vec<_>>()
                .join(" | ")
        )
    }
}
