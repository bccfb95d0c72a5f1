//! What promoter attests: an in-toto Statement v1 ([statement]) about the digest in the
//! destination repository, whose predicate is a SLSA Verification Summary Attestation v1
//! ([VSA]): promoter, as the verifier, checked the digest against the promotion's gate (the
//! policy) on the evidence of the signal records (the input attestations), and it passed, at
//! the level of the stage it was promoted into.
//!
//! [statement]: https://github.com/in-toto/attestation/blob/v1.0/spec/v1/statement.md
//! [VSA]: https://slsa.dev/spec/v1.0/verification_summary

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::registry::Digest;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const VSA_PREDICATE_TYPE: &str = "https://slsa.dev/verification_summary/v1";
pub const PASSED: &str = "PASSED";

/// A ResourceDescriptor ([in-toto ResourceDescriptor]): what a subject, a policy or an input is.
///
/// [in-toto ResourceDescriptor]: https://github.com/in-toto/attestation/blob/v1.0/spec/v1/resource_descriptor.md
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
}

impl ResourceDescriptor {
    /// `{"sha256": hex}` of a digest.
    pub fn sha256(digest: &Digest) -> BTreeMap<String, String> {
        BTreeMap::from([("sha256".to_owned(), digest.hex().to_owned())])
    }
}

/// An in-toto Statement v1, its predicate left as JSON (a verifier reads it by type).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

/// The VSA v1 predicate's fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSummary {
    pub verifier: Verifier,
    pub time_verified: String,
    pub resource_uri: String,
    pub policy: ResourceDescriptor,
    #[serde(default)]
    pub input_attestations: Vec<ResourceDescriptor>,
    pub verification_result: String,
    #[serde(default)]
    pub verified_levels: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verifier {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
}

/// The level a promotion into `stage` attests: `PROMOTER_<STAGE>`, upper case, `-` → `_` (a
/// custom level: it must not start with `SLSA_`, which only SLSA's own levels use).
pub fn level(stage: &str) -> String {
    let stage: String = stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PROMOTER_{stage}")
}

/// The policy a promotion was judged by: the effective rules, by URI and digest.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub uri: String,
    /// sha256 hex of the effective pipeline (what `promoter rules check` prints).
    pub sha256: String,
}

/// What one attestation says.
pub struct Claim<'a> {
    /// The verifier: the service's name (`//promoter/{K_SERVICE or hostname}`).
    pub verifier_id: &'a str,
    pub time: DateTime<Utc>,
    /// The destination repository (`registry/path/image`): the subject's name and the
    /// resource URI, so an attestation of one stage never passes for another.
    pub repository: &'a str,
    pub digest: &'a Digest,
    pub stage: &'a str,
    pub policy: &'a Policy,
    pub inputs: Vec<ResourceDescriptor>,
}

impl Claim<'_> {
    pub fn statement(&self) -> Statement {
        let predicate = VerificationSummary {
            verifier: Verifier {
                id: self.verifier_id.to_owned(),
                version: BTreeMap::from([(
                    "promoter".to_owned(),
                    env!("CARGO_PKG_VERSION").to_owned(),
                )]),
            },
            time_verified: self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
            resource_uri: self.repository.to_owned(),
            policy: ResourceDescriptor {
                name: None,
                uri: Some(self.policy.uri.clone()),
                digest: BTreeMap::from([("sha256".to_owned(), self.policy.sha256.clone())]),
            },
            input_attestations: self.inputs.clone(),
            verification_result: PASSED.to_owned(),
            verified_levels: vec![level(self.stage)],
        };
        Statement {
            statement_type: STATEMENT_TYPE.to_owned(),
            subject: vec![ResourceDescriptor {
                name: Some(self.repository.to_owned()),
                uri: None,
                digest: ResourceDescriptor::sha256(self.digest),
            }],
            predicate_type: VSA_PREDICATE_TYPE.to_owned(),
            // A struct of strings and maps always converts.
            predicate: serde_json::to_value(predicate).unwrap_or_default(),
        }
    }
}

/// What a verifier expects of an attestation: about this digest, in this repository, at this
/// stage's level.
pub struct Expected<'a> {
    pub digest: &'a Digest,
    pub repository: &'a str,
    pub stage: &'a str,
}

/// One check of a statement, for people: what was checked and what was found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Checks a statement against what is expected, field by field; every check is reported.
pub fn check(statement_bytes: &[u8], expected: &Expected<'_>) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut push = |check: &str, ok: bool, detail: String| {
        checks.push(Check {
            check: check.to_owned(),
            ok,
            detail,
        })
    };
    let statement: Statement = match serde_json::from_slice(statement_bytes) {
        Ok(statement) => statement,
        Err(e) => {
            push(
                "statement",
                false,
                format!("the payload is not an in-toto Statement: {e}"),
            );
            return checks;
        }
    };
    push(
        "_type",
        statement.statement_type == STATEMENT_TYPE,
        statement.statement_type.clone(),
    );
    let hex = expected.digest.hex();
    let subject = statement
        .subject
        .iter()
        .find(|s| s.digest.get("sha256").is_some_and(|d| d == hex));
    push(
        "subject digest",
        subject.is_some(),
        match subject {
            Some(s) => format!("sha256:{hex} ({})", s.name.as_deref().unwrap_or("no name")),
            None => format!(
                "no subject has sha256:{hex}; subjects: {}",
                statement
                    .subject
                    .iter()
                    .map(|s| format!(
                        "{}@sha256:{}",
                        s.name.as_deref().unwrap_or("?"),
                        s.digest.get("sha256").map(String::as_str).unwrap_or("?")
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    );
    push(
        "predicateType",
        statement.predicate_type == VSA_PREDICATE_TYPE,
        statement.predicate_type.clone(),
    );
    let summary: VerificationSummary = match serde_json::from_value(statement.predicate.clone()) {
        Ok(summary) => summary,
        Err(e) => {
            push(
                "predicate",
                false,
                format!("not a verification summary: {e}"),
            );
            return checks;
        }
    };
    push(
        "resourceUri",
        summary.resource_uri == expected.repository,
        if summary.resource_uri == expected.repository {
            summary.resource_uri.clone()
        } else {
            format!(
                "{}, not {} (an attestation for another repository or stage)",
                summary.resource_uri, expected.repository
            )
        },
    );
    push(
        "verificationResult",
        summary.verification_result == PASSED,
        summary.verification_result.clone(),
    );
    let wanted = level(expected.stage);
    let has_level = summary.verified_levels.contains(&wanted);
    push(
        "verifiedLevels",
        has_level,
        if has_level {
            summary.verified_levels.join(", ")
        } else {
            format!(
                "{} has no {wanted}",
                if summary.verified_levels.is_empty() {
                    "(none)".to_owned()
                } else {
                    summary.verified_levels.join(", ")
                }
            )
        },
    );
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_bytes(repository: &str, stage: &str, digest: &Digest) -> Vec<u8> {
        let policy = Policy {
            uri: "file:///rules.yaml".into(),
            sha256: "ab".repeat(32),
        };
        let claim = Claim {
            verifier_id: "//promoter/test",
            time: DateTime::parse_from_rfc3339("2026-11-26T05:24:29.903Z")
                .expect("a time")
                .with_timezone(&Utc),
            repository,
            digest,
            stage,
            policy: &policy,
            inputs: vec![ResourceDescriptor {
                name: Some("test-passed e1".into()),
                uri: Some(format!("{repository}@{digest}")),
                digest: ResourceDescriptor::sha256(digest),
            }],
        };
        serde_json::to_vec(&claim.statement()).expect("json")
    }

    #[test]
    fn levels_are_the_stage_in_upper_case() {
        assert_eq!(level("extended-test"), "PROMOTER_EXTENDED_TEST");
        assert_eq!(level("prod"), "PROMOTER_PROD");
    }

    #[test]
    fn a_statement_has_the_vsa_fields() {
        let digest = Digest::sha256_of(b"image");
        let bytes = claim_bytes("r.example/prod/app", "prod", &digest);
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(json["_type"], STATEMENT_TYPE);
        assert_eq!(json["predicateType"], VSA_PREDICATE_TYPE);
        assert_eq!(json["subject"][0]["name"], "r.example/prod/app");
        assert_eq!(json["subject"][0]["digest"]["sha256"], digest.hex());
        let predicate = &json["predicate"];
        assert_eq!(predicate["verifier"]["id"], "//promoter/test");
        assert_eq!(predicate["timeVerified"], "2026-11-26T05:24:29.903Z");
        assert_eq!(predicate["resourceUri"], "r.example/prod/app");
        assert_eq!(predicate["policy"]["uri"], "file:///rules.yaml");
        assert_eq!(predicate["policy"]["digest"]["sha256"], "ab".repeat(32));
        assert_eq!(predicate["verificationResult"], "PASSED");
        assert_eq!(predicate["verifiedLevels"][0], "PROMOTER_PROD");
        assert_eq!(
            predicate["inputAttestations"][0]["digest"]["sha256"],
            digest.hex()
        );
    }

    #[test]
    fn checks_fail_for_another_stage_or_digest() {
        let digest = Digest::sha256_of(b"image");
        let bytes = claim_bytes("r.example/extended-test/app", "extended-test", &digest);
        let expected = Expected {
            digest: &digest,
            repository: "r.example/prod/app",
            stage: "prod",
        };
        let failed: Vec<String> = check(&bytes, &expected)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.check)
            .collect();
        assert_eq!(failed, ["resourceUri", "verifiedLevels"]);
        let other = Digest::sha256_of(b"other");
        let expected = Expected {
            digest: &other,
            repository: "r.example/extended-test/app",
            stage: "extended-test",
        };
        let failed: Vec<String> = check(&bytes, &expected)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.check)
            .collect();
        assert_eq!(failed, ["subject digest"]);
        assert!(check(b"not json", &expected).iter().any(|c| !c.ok));
    }
}
