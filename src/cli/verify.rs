//! `promoter verify <IMAGE_REF> --key PEM|gcpkms://… [--stage S]` (docs/attestations.md): finds the
//! promotion attestations of the image's digest in its repository (cosign's
//! `sha256-<hex>.att`), verifies each one's DSSE signature with the key and its statement
//! against a promotion into the stage — the reference's own stage in the rules, or `--stage` —
//! and prints what it checked. Exit 0 when one verifies, 1 when none does (naming why), 2 for
//! a usage error.

use std::process::ExitCode;

use crate::attest::key::{self, KeySpec};
use crate::attest::statement::Expected;
use crate::attest::verify::{self, Verification};
use crate::attest::{self, Settings};
use crate::config;
use crate::registry::auth::IdentityChoice;
use crate::registry::{Digest, ImageRef, Transport};

use super::Output;

pub async fn verify(image: &str, key: &str, stage: Option<String>, output: Output) -> ExitCode {
    match run(image, key, stage, output).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Usage(problem)) => {
            eprintln!("error: {problem}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(problem)) => {
            eprintln!("error: verifying {image}: {problem}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

async fn run(
    image: &str,
    key: &str,
    stage: Option<String>,
    output: Output,
) -> Result<bool, Failure> {
    let reference = ImageRef::try_from(image)
        .map_err(|e| Failure::Usage(format!("bad image reference {image:?}: {e}")))?;
    let spec: KeySpec = key
        .parse()
        .map_err(|e| Failure::Usage(format!("--key {e}")))?;
    let stage = match stage {
        Some(stage) => stage,
        None => {
            let located = super::service::load_pipeline()
                .map_err(|e| format!("{e:#}"))
                .and_then(|pipeline| {
                    pipeline
                        .locate(image, None)
                        .map(|located| located.stage.to_string())
                        .map_err(|e| e.to_string())
                });
            located.map_err(|problem| {
                Failure::Usage(format!(
                    "cannot tell which stage {image} is in ({problem}); pass --stage"
                ))
            })?
        }
    };
    // Only the endpoints matter here; a key or attestor setting of the environment does not.
    let settings = Settings::from_lookup(|name| {
        (name != config::PROMOTER_ATTESTATION_KEY && name != config::PROMOTER_BINAUTHZ_ATTESTOR)
            .then(|| config::var(name))
            .flatten()
    })
    .map_err(Failure::Usage)?;
    let failed = |e: &dyn std::fmt::Display| Failure::Failed(e.to_string());
    let public = key::verifying_key(&spec, &settings.kms_endpoint)
        .await
        .map_err(|e| failed(&e))?;
    let transport = Transport::new(config::insecure_registries()).map_err(|e| failed(&e))?;
    let repository = &reference.repository;
    let client = transport
        .job_client(&IdentityChoice::default(), repository, "pull", None)
        .await
        .map_err(|e| failed(&e))?;
    let digest: Digest = match &reference.digest {
        Some(digest) => digest.clone(),
        None => {
            let tag = reference
                .tag
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or("latest");
            client
                .head_manifest(repository, tag)
                .await
                .map_err(|e| failed(&e))?
                .ok_or_else(|| Failure::Failed(format!("{repository}:{tag} not found")))?
        }
    };
    let repository_text = repository.to_string();
    let expected = Expected {
        digest: &digest,
        repository: &repository_text,
        stage: &stage,
    };
    let found = verify::verify_all(&client, repository, &expected, &public, false)
        .await
        .map_err(|e| failed(&e))?;
    let layers = found.map(|(_, layers)| layers).unwrap_or_default();
    let report = Verification {
        image: image.to_owned(),
        repository: repository_text,
        digest: digest.to_string(),
        stage,
        tag: attest::cosign::tag(&digest).to_string(),
        key: public.id().to_owned(),
        verified: layers.iter().any(|l| l.ok),
        layers,
    };
    match output {
        Output::Json => match serde_json::to_string(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => return Err(failed(&e)),
        },
        Output::Text => print!("{}", report.to_text()),
    }
    if report.verified {
        if output == Output::Text {
            let layer = report
                .layers
                .iter()
                .find(|l| l.ok)
                .map(|l| l.layer.as_str());
            println!(
                "\nverified: {} is attested as promoted into {} (layer {})",
                report.digest,
                report.stage,
                layer.unwrap_or_default()
            );
        }
        Ok(true)
    } else {
        eprintln!("error: {}", report.failure());
        Ok(false)
    }
}
