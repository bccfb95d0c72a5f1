//! Promotion attestations (docs/attestations.md), end to end: the real registry, the real binary, and
//! verifiers promoter's authors did not write (securesystemslib's DSSE verification, openssl for
//! key ids, p256 for the fake KMS's signatures). Only what cannot run here — Cloud KMS, Binary
//! Authorization and Container Analysis — is faked, at the network boundary, in the exact REST
//! shapes of those APIs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::google::{MetadataServer, serve};
use crate::support::harness::{Harness, decision};
use crate::support::service::{ServiceProcess, http_binary};
use crate::support::{Promoter, seed, stderr};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DSSE: &str = "application/vnd.dsse.envelope.v1+json";

/// An ECDSA P-256 key pair made by openssl, and its key id as promoter names a local key:
/// `sha256:` + hex of the public key's SPKI DER, computed here from openssl's DER.
struct Keys {
    private: PathBuf,
    public: PathBuf,
    id: String,
}

fn make_key(dir: &Path, name: &str) -> Keys {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
        output.stdout
    };
    let (private_text, public_text) = (private.display().to_string(), public.display().to_string());
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &private_text,
    ]);
    openssl(&[
        "pkey",
        "-in",
        &private_text,
        "-pubout",
        "-out",
        &public_text,
    ]);
    let der = openssl(&["pkey", "-in", &private_text, "-pubout", "-outform", "DER"]);
    Keys {
        private,
        public,
        id: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&der))),
    }
}

fn att_tag(digest: &str) -> String {
    format!("{}.att", digest.replace(':', "-"))
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The registry's HTTP API, spoken directly: what a verifier or another tool reads and writes.
struct Api {
    host: String,
    http: reqwest::Client,
}

impl Api {
    fn new(host: &str) -> Api {
        Api {
            host: host.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `repository` is `host/path`.
    fn path<'a>(&self, repository: &'a str) -> &'a str {
        repository
            .strip_prefix(&format!("{}/", self.host))
            .unwrap_or(repository)
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Option<Vec<u8>> {
        let url = format!(
            "http://{}/v2/{}/manifests/{reference}",
            self.host,
            self.path(repository)
        );
        let response = self
            .http
            .get(url)
            .header(
                "accept",
                format!("{OCI_MANIFEST}, application/vnd.oci.image.index.v1+json"),
            )
            .send()
            .await
            .expect("the registry answers");
        response
            .status()
            .is_success()
            .then_some(response.bytes().await.expect("a body").to_vec())
    }

    async fn json(&self, repository: &str, reference: &str) -> Option<Value> {
        self.manifest(repository, reference)
            .await
            .map(|bytes| serde_json::from_slice(&bytes).expect("a JSON manifest"))
    }

    async fn blob(&self, repository: &str, digest: &str) -> Vec<u8> {
        let url = format!(
            "http://{}/v2/{}/blobs/{digest}",
            self.host,
            self.path(repository)
        );
        let response = self
            .http
            .get(url)
            .send()
            .await
            .expect("the registry answers");
        assert!(
            response.status().is_success(),
            "blob {digest} in {repository}"
        );
        response.bytes().await.expect("a body").to_vec()
    }

    async fn put_blob(&self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let start = format!(
            "http://{}/v2/{}/blobs/uploads/",
            self.host,
            self.path(repository)
        );
        let response = self
            .http
            .post(start)
            .send()
            .await
            .expect("an upload session");
        let location = response.headers()["location"]
            .to_str()
            .expect("a location")
            .to_owned();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.host)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let response = self
            .http
            .put(format!("{location}{separator}digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(response.status().as_u16(), 201, "uploading {digest}");
        digest
    }

    async fn put_manifest(&self, repository: &str, reference: &str, bytes: &[u8]) {
        let url = format!(
            "http://{}/v2/{}/manifests/{reference}",
            self.host,
            self.path(repository)
        );
        let response = self
            .http
            .put(url)
            .header("content-type", OCI_MANIFEST)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(
            response.status().as_u16(),
            201,
            "putting {repository}:{reference}"
        );
    }

    /// Writes `layers` (each `(envelope, annotations)`) as a cosign attestations manifest under
    /// `tag`, as another tool would.
    async fn put_attestations(&self, repository: &str, tag: &str, layers: &[(Vec<u8>, Value)]) {
        let mut listed = Vec::new();
        for (envelope, annotations) in layers {
            let digest = self.put_blob(repository, envelope).await;
            listed.push(json!({"mediaType": DSSE, "digest": digest, "size": envelope.len(), "annotations": annotations}));
        }
        let config =
            br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let config_digest = self.put_blob(repository, config).await;
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": listed,
        });
        self.put_manifest(
            repository,
            tag,
            &serde_json::to_vec(&manifest).expect("json"),
        )
        .await;
    }
}

fn layers(manifest: &Value) -> Vec<Value> {
    manifest["layers"].as_array().cloned().unwrap_or_default()
}

/// promoter's layers for `stage` in an attestations manifest.
fn promoter_layers(manifest: &Value, stage: &str) -> Vec<Value> {
    layers(manifest)
        .into_iter()
        .filter(|l| l["annotations"]["dev.promoter.attestation.stage"] == stage)
        .collect()
}

/// The interpreter with securesystemslib and cryptography (`scripts/lib.sh`,
/// `ensure_python_verifiers`).
fn verifier_python() -> PathBuf {
    let path = std::env::var_os("PROMOTER_DSSE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/promoter-test-tools/verifiers/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run `. scripts/lib.sh && ensure_python_verifiers` (scripts/test does) for securesystemslib",
        path.display()
    );
    path
}

/// securesystemslib's DSSE verification of `envelope` with `public`: the statement, or why not.
fn securesystemslib_verify(envelope: &[u8], public: &Path, keyid: &str) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("envelope.json");
    std::fs::write(&file, envelope).expect("write the envelope");
    let output = std::process::Command::new(verifier_python())
        .arg(crate::support::repo_root().join("tests/it/support/dsse_verify.py"))
        .arg(&file)
        .arg(public)
        .arg(keyid)
        .output()
        .expect("python runs");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the payload is JSON"))
    } else {
        Err(stderr(&output))
    }
}

/// `promoter verify ARGS` with the harness's registry in the environment (so it knows the
/// stages), exit status and output.
async fn promoter_verify(host: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    Promoter::new().env("REGISTRY", host).run(&all).await
}

#[tokio::test]
async fn promotions_are_attested_verified_by_others_and_refused_when_wrong() {
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let keys = make_key(keys_dir.path(), "attest");
    let other = make_key(keys_dir.path(), "other");
    let started = chrono::Utc::now();
    let mut harness = Harness::start_with(
        None,
        &[(
            "PROMOTER_ATTESTATION_KEY",
            keys.private.display().to_string(),
        )],
    )
    .await;
    let host = harness.registry.host();
    let api = Api::new(&host);
    let (ff, et, prod) = (
        harness.repository("fast-feedback", "app"),
        harness.repository("extended-test", "app"),
        harness.repository("prod", "app"),
    );
    // Signed, with another tool's attestation beside it.
    let digest = seed(
        harness.work.path(),
        &ff,
        "1.0.0",
        &["--sign", "--attest"],
        None,
    )
    .digest;
    let tag = att_tag(&digest);
    let theirs = layers(
        &api.json(&ff, &tag)
            .await
            .expect("the other tool's attestations"),
    );
    assert_eq!(theirs.len(), 1);

    let answer = harness.test_passed("app", "1.0.0").await;
    assert_eq!(decision(&answer), "promoted", "{answer:?}");
    let et_attestations = api
        .json(&et, &tag)
        .await
        .expect("extended-test's attestations");
    let et_layers = layers(&et_attestations);
    assert_eq!(et_layers.len(), 2, "{et_attestations}");
    assert_eq!(
        et_layers[0], theirs[0],
        "the other tool's layer, byte for byte"
    );
    let ours_et = promoter_layers(&et_attestations, "extended-test");
    assert_eq!(ours_et.len(), 1, "{et_attestations}");
    assert_eq!(ours_et[0]["mediaType"], DSSE);
    assert_eq!(
        ours_et[0]["annotations"]["dev.promoter.attestation.key"],
        keys.id
    );
    assert_eq!(
        ours_et[0]["annotations"]["dev.cosignproject.cosign/signature"],
        ""
    );
    assert_eq!(
        ours_et[0]["annotations"]["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    assert_eq!(
        et_attestations["subject"]["digest"], digest,
        "a referrer of the image"
    );
    // Listed in the referrers fallback tag too (distribution has no referrers API).
    let fallback = api
        .json(&et, &digest.replace(':', "-"))
        .await
        .expect("a referrers tag");
    let att_digest = sha256(&api.manifest(&et, &tag).await.expect("bytes"));
    assert!(
        fallback["manifests"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["digest"] == att_digest)),
        "{fallback}"
    );

    // A later copy of the same digest keeps promoter's layer, and brings what the source gained
    // (the other tool attested again there).
    let copy_again = || async {
        let output = Promoter::new()
            .run(&crate::support::promote_args(
                &host,
                "app:1.0.0",
                "fast-feedback",
                "extended-test",
                &[],
            ))
            .await;
        assert!(output.status.success(), "{}", stderr(&output));
    };
    copy_again().await;
    assert_eq!(
        api.json(&et, &tag).await,
        Some(et_attestations.clone()),
        "nothing to merge"
    );
    let mut source_layers: Vec<(Vec<u8>, Value)> = Vec::new();
    for layer in &theirs {
        let digest = layer["digest"].as_str().expect("a digest");
        source_layers.push((api.blob(&ff, digest).await, layer["annotations"].clone()));
    }
    let second = br#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"MEUCIQDsecond"}]}"#.to_vec();
    source_layers.push((second.clone(), json!({"dev.cosignproject.cosign/signature": "", "predicateType": "https://slsa.dev/provenance/v1"})));
    api.put_attestations(&ff, &tag, &source_layers).await;
    copy_again().await;
    let merged = api.json(&et, &tag).await.expect("merged attestations");
    let digests: BTreeSet<String> = layers(&merged)
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or_default().to_owned())
        .collect();
    let wanted: BTreeSet<String> = [
        theirs[0]["digest"].as_str().unwrap_or_default().to_owned(),
        sha256(&second),
        ours_et[0]["digest"].as_str().unwrap_or_default().to_owned(),
    ]
    .into();
    assert_eq!(digests, wanted, "{merged}");

    // Into prod: extended-test's attestations come along, and prod's is appended.
    assert_eq!(decision(&harness.soak("app", "1.0.0").await), "pending");
    let answer = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&answer), "promoted", "{answer:?}");
    let prod_attestations = api.json(&prod, &tag).await.expect("prod's attestations");
    assert_eq!(layers(&prod_attestations).len(), 4, "{prod_attestations}");
    assert_eq!(
        promoter_layers(&prod_attestations, "extended-test"),
        ours_et
    );
    let ours_prod = promoter_layers(&prod_attestations, "prod");
    assert_eq!(ours_prod.len(), 1, "{prod_attestations}");
    let envelope_digest = ours_prod[0]["digest"]
        .as_str()
        .expect("a digest")
        .to_owned();
    let envelope = api.blob(&prod, &envelope_digest).await;

    // securesystemslib verifies it with the public key; then the statement, field by field.
    let statement = securesystemslib_verify(&envelope, &keys.public, &keys.id).expect("verifies");
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(
        statement["subject"],
        json!([{"name": prod, "digest": {"sha256": digest.trim_start_matches("sha256:")}}])
    );
    assert_eq!(
        statement["predicateType"],
        "https://slsa.dev/verification_summary/v1"
    );
    let predicate = &statement["predicate"];
    assert_eq!(predicate["verifier"]["id"], "//promoter/promoter-test");
    assert_eq!(
        predicate["verifier"]["version"]["promoter"],
        env!("CARGO_PKG_VERSION")
    );
    let verified_at =
        chrono::DateTime::parse_from_rfc3339(predicate["timeVerified"].as_str().expect("a time"))
            .expect("RFC 3339");
    assert!(
        verified_at >= started && verified_at <= chrono::Utc::now(),
        "{verified_at}"
    );
    assert_eq!(predicate["resourceUri"], prod);
    assert_eq!(
        predicate["policy"]["uri"],
        "promoter:embedded-default-pipeline"
    );
    // The policy digest is that of the effective pipeline, as `promoter rules check` prints it.
    let rules = Promoter::new()
        .env("REGISTRY", &host)
        .run(&["rules", "check"])
        .await;
    assert!(rules.status.success(), "{}", stderr(&rules));
    assert_eq!(
        predicate["policy"]["digest"]["sha256"],
        hex::encode(sha2::Sha256::digest(&rules.stdout))
    );
    assert_eq!(predicate["verificationResult"], "PASSED");
    assert_eq!(predicate["verifiedLevels"], json!(["PROMOTER_PROD"]));
    // The signal records it was decided on, each a manifest in the registry with that digest.
    let inputs = predicate["inputAttestations"].as_array().expect("inputs");
    let names: BTreeSet<&str> = inputs
        .iter()
        .filter_map(|i| i["name"].as_str()?.split(' ').next())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["alert-clear", "soak-complete"]),
        "{inputs:?}"
    );
    for input in inputs {
        let uri = input["uri"].as_str().expect("a uri");
        let (repository, record) = uri.split_once('@').expect("repository@digest");
        assert_eq!(
            input["digest"]["sha256"],
            record.trim_start_matches("sha256:")
        );
        let bytes = api
            .manifest(repository, record)
            .await
            .unwrap_or_else(|| panic!("{uri} is not in the registry"));
        assert_eq!(sha256(&bytes), record);
    }
    let et_envelope = api
        .blob(&et, ours_et[0]["digest"].as_str().expect("a digest"))
        .await;
    let et_statement =
        securesystemslib_verify(&et_envelope, &keys.public, &keys.id).expect("verifies");
    assert_eq!(
        et_statement["predicate"]["verifiedLevels"],
        json!(["PROMOTER_EXTENDED_TEST"])
    );
    assert_eq!(et_statement["predicate"]["resourceUri"], et);

    // promoter verify, with the public key and with the private key file.
    let prod_ref = format!("{prod}:1.0.0");
    for key in [&keys.public, &keys.private] {
        let output =
            promoter_verify(&host, &[&prod_ref, "--key", &key.display().to_string()]).await;
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{text}\n{}", stderr(&output));
        assert!(
            text.contains(&format!(
                "verified: {digest} is attested as promoted into prod"
            )),
            "{text}"
        );
        assert!(text.contains("ok   signature"), "{text}");
    }
    let json_output = promoter_verify(
        &host,
        &[
            &prod_ref,
            "--key",
            &keys.public.display().to_string(),
            "--output",
            "json",
        ],
    )
    .await;
    let report: Value = serde_json::from_slice(&json_output.stdout).expect("one JSON object");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["key"], keys.id);

    // status and the promoted event say it is attested, and by which key.
    let status = Promoter::new()
        .env("REGISTRY", &host)
        .run(&["status", &prod_ref, "--output", "json"])
        .await;
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let prod_stage = status["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["stage"] == "prod"))
        .cloned();
    let prod_stage = prod_stage.expect("prod in status");
    assert_eq!(prod_stage["attestations"][0]["key"], keys.id, "{status}");
    assert_eq!(prod_stage["attestations"][0]["envelope"], envelope_digest);
    let events = harness.promotions.drain(Duration::from_millis(700)).await;
    let announced = events
        .iter()
        .find(|e| {
            e.attributes
                .get("ce-subject")
                .is_some_and(|s| s.starts_with(&prod))
        })
        .expect("the promoted event for prod");
    assert_eq!(
        announced.data["attestation"]["key"], keys.id,
        "{:?}",
        announced.data
    );
    assert_eq!(announced.data["attestation"]["envelope"], envelope_digest);

    // A wrong key fails both verifiers.
    let wrong =
        securesystemslib_verify(&envelope, &other.public, &keys.id).expect_err("another key");
    assert!(wrong.contains("VerificationError"), "{wrong}");
    let output = promoter_verify(
        &host,
        &[&prod_ref, "--key", &other.public.display().to_string()],
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("signature"), "{}", stderr(&output));

    // A tampered envelope: the statement changed under its signature.
    let mut tampered: Value = serde_json::from_slice(&envelope).expect("json");
    let body = BASE64
        .decode(tampered["payload"].as_str().expect("payload"))
        .expect("base64");
    let body = String::from_utf8(body)
        .expect("utf-8")
        .replace("PROMOTER_PROD", "PROMOTER_PROD_TOO");
    tampered["payload"] = Value::String(BASE64.encode(body));
    let tampered = serde_json::to_vec(&tampered).expect("json");
    assert!(securesystemslib_verify(&tampered, &keys.public, &keys.id).is_err());
    api.put_attestations(
        &prod,
        &tag,
        &[(tampered, ours_prod[0]["annotations"].clone())],
    )
    .await;
    let output = promoter_verify(
        &host,
        &[&prod_ref, "--key", &keys.public.display().to_string()],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr(&output).contains("signature: "),
        "{}",
        stderr(&output)
    );

    // extended-test's attestations presented for prod: valid signatures, wrong stage.
    api.put_manifest(&prod, &tag, &api.manifest(&et, &tag).await.expect("bytes"))
        .await;
    let output = promoter_verify(
        &host,
        &[&prod_ref, "--key", &keys.public.display().to_string()],
    )
    .await;
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let why = stderr(&output);
    assert!(
        why.contains("resourceUri")
            && why.contains("verifiedLevels")
            && why.contains("PROMOTER_PROD"),
        "{why}"
    );
}

/// One request to the fake Google APIs: method, path below `/v1/`, bearer token, JSON body.
type Asked = (String, String, Option<String>, Value);

/// Cloud KMS, Binary Authorization and Container Analysis, faked at the network boundary: one
/// HTTP server answering their REST paths (`/v1/...`) exactly as the APIs shape them. KMS signs
/// with a real ECDSA P-256 key the test holds.
#[derive(Clone)]
struct GoogleApis {
    key: p256::ecdsa::SigningKey,
    key_version: String,
    /// `asymmetricSign` calls still to answer 503 (a KMS outage).
    failures: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Asked>>>,
}

impl GoogleApis {
    fn public_pem(&self) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("PEM")
    }

    async fn start(key_version: &str) -> (GoogleApis, String) {
        let apis = GoogleApis {
            key: p256::ecdsa::SigningKey::from_bytes(&rand::random::<[u8; 32]>().into())
                .expect("a valid scalar"),
            key_version: key_version.to_owned(),
            failures: Arc::default(),
            seen: Arc::default(),
        };
        let router = Router::new()
            .route("/v1/{*rest}", axum::routing::any(Self::answer))
            .with_state(apis.clone());
        let address = serve(router).await;
        (apis, format!("http://{address}"))
    }

    /// What was asked: (method, path, bearer token, JSON body).
    fn seen(&self, path_suffix: &str) -> Vec<Asked> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, path, _, _)| path.ends_with(path_suffix))
            .cloned()
            .collect()
    }

    async fn answer(
        State(apis): State<GoogleApis>,
        method: Method,
        UrlPath(rest): UrlPath<String>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> Response {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        apis.seen.lock().expect("lock").push((
            method.to_string(),
            rest.clone(),
            token.clone(),
            json_body.clone(),
        ));
        if token
            .as_deref()
            .is_none_or(|t| !t.starts_with("ya29.metadata-token-"))
        {
            return error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            );
        }
        let signing = format!("{}:asymmetricSign", apis.key_version);
        let public_key = format!("{}/publicKey", apis.key_version);
        match (method, rest.as_str()) {
            (Method::POST, path) if path == signing => {
                if apis
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return error(503, "UNAVAILABLE", "The service is currently unavailable.");
                }
                let Some(digest) = json_body["digest"]["sha256"]
                    .as_str()
                    .and_then(|d| BASE64.decode(d).ok())
                else {
                    return error(400, "INVALID_ARGUMENT", "digest.sha256 is required");
                };
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let signature: p256::ecdsa::DerSignature = match apis.key.sign_prehash(&digest) {
                    Ok(signature) => signature,
                    Err(_) => return error(400, "INVALID_ARGUMENT", "bad digest"),
                };
                axum::Json(json!({
                    "signature": BASE64.encode(signature.as_bytes()),
                    "signatureCrc32c": "0",
                    "verifiedDigestCrc32c": false,
                    "name": apis.key_version,
                    "verifiedDataCrc32c": false,
                    "protectionLevel": "SOFTWARE",
                }))
                .into_response()
            }
            (Method::GET, path) if path == public_key => axum::Json(json!({
                "pem": apis.public_pem(),
                "algorithm": "EC_SIGN_P256_SHA256",
                "pemCrc32c": "0",
                "name": apis.key_version,
                "protectionLevel": "SOFTWARE",
            }))
            .into_response(),
            (Method::GET, "projects/attestor-proj/attestors/promoter") => axum::Json(json!({
                "name": "projects/attestor-proj/attestors/promoter",
                "userOwnedGrafeasNote": {
                    "noteReference": "projects/attestor-proj/notes/promoter",
                    "publicKeys": [{
                        "id": format!("//cloudkms.googleapis.com/v1/{}", apis.key_version),
                        "pkixPublicKey": {"publicKeyPem": apis.public_pem(), "signatureAlgorithm": "ECDSA_P256_SHA256"},
                    }],
                    "delegationServiceAccountEmail": "service-1@gcp-sa-binaryauthorization.iam.gserviceaccount.com",
                },
                "updateTime": "2026-11-26T04:00:00Z",
            }))
            .into_response(),
            (Method::POST, "projects/attestor-proj/occurrences") => {
                let mut created = json_body.clone();
                created["name"] = json!("projects/attestor-proj/occurrences/0b5e8a1c");
                created["kind"] = json!("ATTESTATION");
                created["createTime"] = json!("2026-11-26T04:00:01Z");
                axum::Json(created).into_response()
            }
            _ => error(404, "NOT_FOUND", "Requested entity was not found."),
        }
    }
}

fn error(code: u16, status: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": code, "message": message, "status": status}})),
    )
        .into_response()
}

#[tokio::test]
async fn a_kms_key_signs_and_binary_authorization_gets_its_occurrence() {
    let key_version = "projects/kms-proj/locations/europe-west2/keyRings/promoter/cryptoKeys/attest/cryptoKeyVersions/1";
    let (apis, endpoint) = GoogleApis::start(key_version).await;
    let (_metadata, metadata_address) = MetadataServer::start().await;
    let rules = "stages:\n  - name: fast-feedback\n    registry: REGISTRY_HOST\n  - name: extended-test\n    registry: REGISTRY_HOST\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n";
    apis.failures.store(3, Ordering::SeqCst);
    let harness = Harness::start_with(
        Some(rules.to_owned()),
        &[
            (
                "PROMOTER_ATTESTATION_KEY",
                format!("gcpkms://{key_version}"),
            ),
            (
                "PROMOTER_BINAUTHZ_ATTESTOR",
                "projects/attestor-proj/attestors/promoter".to_owned(),
            ),
            ("PROMOTER_KMS_ENDPOINT", endpoint.clone()),
            ("PROMOTER_BINAUTHZ_ENDPOINT", endpoint.clone()),
            ("PROMOTER_CONTAINER_ANALYSIS_ENDPOINT", endpoint.clone()),
            ("GCE_METADATA_HOST", metadata_address.to_string()),
        ],
    )
    .await;
    let host = harness.registry.host();
    let api = Api::new(&host);
    let (ff, et) = (
        harness.repository("fast-feedback", "app"),
        harness.repository("extended-test", "app"),
    );
    let digest = seed(harness.work.path(), &ff, "2.0.0", &["--sign"], None).digest;
    let tag = att_tag(&digest);

    // KMS is down (every attempt of one delivery): the copy stays, nothing is announced
    // unattested, and the delivery comes back.
    let event = http_binary("test-passed", json!({"image": format!("{ff}:2.0.0")}));
    let (status, body) = harness.service.post(&event).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string().contains("attesting the promotion failed"),
        "{body}"
    );
    assert!(
        harness.held("extended-test", "app", "2.0.0").is_some(),
        "the copy is not undone"
    );
    assert!(
        api.json(&et, &tag)
            .await
            .is_none_or(|m| promoter_layers(&m, "extended-test").is_empty())
    );
    assert!(
        apis.seen("/occurrences").is_empty(),
        "no occurrence without the signature"
    );

    // The redelivery finds the copy in place and attests it.
    let (status, body) = harness.service.post(&event).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "promoted", "{body}");
    assert_eq!(body["copy"]["already_present"], true, "{body}");
    let attestations = api.json(&et, &tag).await.expect("attestations");
    let ours = promoter_layers(&attestations, "extended-test");
    assert_eq!(ours.len(), 1, "{attestations}");
    assert_eq!(
        ours[0]["annotations"]["dev.promoter.attestation.key"],
        key_version
    );
    let envelope = api
        .blob(&et, ours[0]["digest"].as_str().expect("a digest"))
        .await;

    // Signed by the key the test holds: the asymmetricSign request was exactly the API's, and
    // its digest is the SHA-256 of the envelope's PAE.
    let signs = apis.seen(":asymmetricSign");
    let envelope_json: Value = serde_json::from_slice(&envelope).expect("json");
    let payload = BASE64
        .decode(envelope_json["payload"].as_str().expect("payload"))
        .expect("base64");
    let pae = [
        format!("DSSEv1 28 application/vnd.in-toto+json {} ", payload.len()).into_bytes(),
        payload.clone(),
    ]
    .concat();
    let wanted = BASE64.encode(sha2::Sha256::digest(&pae));
    let (method, _, token, request) = signs
        .iter()
        .find(|(_, _, _, body)| body["digest"]["sha256"] == wanted)
        .cloned()
        .expect("KMS was asked to sign the SHA-256 of the envelope's PAE");
    assert_eq!(method, "POST");
    assert!(token.is_some_and(|t| t.starts_with("ya29.metadata-token-")));
    let keys: Vec<&String> = request
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["digest"], "{request}");
    assert_eq!(envelope_json["signatures"][0]["keyid"], key_version);
    let dir = tempfile::tempdir().expect("temp dir");
    let public = dir.path().join("kms.pub.pem");
    std::fs::write(&public, apis.public_pem()).expect("write");
    let statement = securesystemslib_verify(&envelope, &public, key_version).expect("verifies");
    assert_eq!(statement["predicate"]["resourceUri"], et);
    assert_eq!(
        statement["predicate"]["verifiedLevels"],
        json!(["PROMOTER_EXTENDED_TEST"])
    );
    let reference = format!("{et}:2.0.0");
    for key in [
        public.display().to_string(),
        format!("gcpkms://{key_version}"),
    ] {
        let output = Promoter::new()
            .env("PROMOTER_KMS_ENDPOINT", &endpoint)
            .env("GCE_METADATA_HOST", metadata_address.to_string())
            .run(&[
                "verify",
                &reference,
                "--key",
                &key,
                "--stage",
                "extended-test",
            ])
            .await;
        assert!(
            output.status.success(),
            "{key}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
    }
    assert!(!apis.seen("/publicKey").is_empty());

    // Binary Authorization: one occurrence for the attestor's note, exactly the API's shape,
    // whose PKIX signature verifies with the key over gcloud's signature payload.
    let occurrences = apis.seen("projects/attestor-proj/occurrences");
    assert_eq!(occurrences.len(), 1, "{occurrences:?}");
    let (method, _, token, occurrence) = occurrences[0].clone();
    assert_eq!(method, "POST");
    assert!(token.is_some());
    let fields: BTreeSet<&str> = occurrence
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        BTreeSet::from(["attestation", "noteName", "resourceUri"]),
        "{occurrence}"
    );
    assert_eq!(occurrence["resourceUri"], format!("https://{et}@{digest}"));
    assert_eq!(
        occurrence["noteName"],
        "projects/attestor-proj/notes/promoter"
    );
    let signatures = occurrence["attestation"]["signatures"]
        .as_array()
        .expect("signatures");
    assert_eq!(signatures.len(), 1);
    assert_eq!(
        signatures[0]["publicKeyId"],
        format!("//cloudkms.googleapis.com/v1/{key_version}")
    );
    let payload = BASE64
        .decode(
            occurrence["attestation"]["serializedPayload"]
                .as_str()
                .expect("a payload"),
        )
        .expect("base64");
    let parsed: Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(
        parsed,
        json!({"critical": {"identity": {"docker-reference": et}, "image": {"docker-manifest-digest": digest}, "type": "Google cloud binauthz container signature"}})
    );
    use p256::ecdsa::signature::Verifier as _;
    let signature = p256::ecdsa::DerSignature::try_from(
        BASE64
            .decode(signatures[0]["signature"].as_str().expect("a signature"))
            .expect("base64")
            .as_slice(),
    )
    .expect("DER");
    apis.key
        .verifying_key()
        .verify(&payload, &signature)
        .expect("the PKIX signature verifies");
}

#[tokio::test]
async fn two_instances_attest_at_once_and_no_attestation_is_lost() {
    let keys_dir = tempfile::tempdir().expect("temp dir");
    let keys = make_key(keys_dir.path(), "attest");
    let harness = Harness::start_with(
        None,
        &[(
            "PROMOTER_ATTESTATION_KEY",
            keys.private.display().to_string(),
        )],
    )
    .await;
    let second = ServiceProcess::start(&harness.environment()).await;
    let host = harness.registry.host();
    let api = Api::new(&host);
    let ff = |image: &str| harness.repository("fast-feedback", image);
    let et = |image: &str| harness.repository("extended-test", image);
    let attested = |image: &str| {
        seed(
            harness.work.path(),
            &ff(image),
            "1.0.0",
            &["--attest"],
            None,
        )
        .digest
    };
    let test_passed = |image: &str| {
        http_binary(
            "test-passed",
            json!({"image": format!("{}:1.0.0", ff(image))}),
        )
    };
    let one = attested("app-a");
    let two = attested("app-b");

    // Two digests into one stage, one on each instance, at the same moment.
    let first = test_passed("app-a");
    let other = test_passed("app-b");
    let (a, b) = tokio::join!(harness.service.post(&first), second.post(&other));
    assert_eq!(a.1["decision"], "promoted", "{a:?}");
    assert_eq!(b.1["decision"], "promoted", "{b:?}");
    // One digest, delivered twice at once (Pub/Sub's at-least-once), to both instances: both
    // copy, both attest into the one `.att` tag.
    let three = attested("app-c");
    let duplicate = test_passed("app-c");
    let (a, b) = tokio::join!(harness.service.post(&duplicate), second.post(&duplicate));
    for answer in [&a, &b] {
        assert_eq!(answer.0, 200, "{answer:?}");
        let decided = answer.1["decision"].as_str().unwrap_or_default();
        assert!(
            decided == "promoted" || decided == "already-promoted",
            "{answer:?}"
        );
    }

    for (digest, image) in [(&one, "app-a"), (&two, "app-b"), (&three, "app-c")] {
        let attestations = api
            .json(&et(image), &att_tag(digest))
            .await
            .expect("attestations");
        // The other tool's layer survived every write, and an attestation for the stage is there.
        assert!(
            layers(&attestations)
                .iter()
                .any(|l| l["annotations"]["dev.promoter.attestation.stage"].is_null()),
            "{attestations}"
        );
        let ours = promoter_layers(&attestations, "extended-test");
        assert!(!ours.is_empty(), "{digest}: {attestations}");
        let output = promoter_verify(
            &host,
            &[
                &format!("{}:1.0.0", et(image)),
                "--key",
                &keys.public.display().to_string(),
            ],
        )
        .await;
        assert!(
            output.status.success(),
            "{image}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn a_bad_attestation_key_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    for (value, cause) in [
        (
            "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k".to_owned(),
            "is not a Cloud KMS key version",
        ),
        (not_a_key.display().to_string(), "not-a-key.pem"),
    ] {
        let output = Promoter::new()
            .env("REGISTRY", "127.0.0.1:1")
            .env("PROMOTER_PUSH_AUTH", "none")
            .env("PORT", "0")
            .env("PROMOTER_ATTESTATION_KEY", &value)
            .run(&["serve"])
            .await;
        assert!(!output.status.success(), "{value}: served");
        let why = stderr(&output);
        assert!(
            why.contains("PROMOTER_ATTESTATION_KEY") && why.contains(cause),
            "{value}: {why}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).contains("\"serving\""));
    }
}
