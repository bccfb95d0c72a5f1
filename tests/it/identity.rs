//! Identity (docs/configuration.md): docker config basic auth, and the whole Google chain — metadata
//! server → access token → `oauth2accesstoken` at the registry's token realm → a JWT the real
//! registry verifies.

use std::sync::Arc;

use crate::support::google::{MetadataServer, TokenRealm, accept_only};
use crate::support::{
    Auth, Promoter, Registry, assert_same_bytes, promote_args, report, seed, stderr,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_comes_from_docker_config_and_its_absence_is_explained() {
    let registry = Registry::start(Auth::Basic {
        user: "ci".into(),
        password: "s3cret-pass".into(),
    });
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/fast-feedback/app"),
        "1",
        &[],
        Some("ci:s3cret-pass"),
    );

    let args = promote_args(
        &host,
        "app:1",
        "fast-feedback",
        "prod",
        &["--output", "json"],
    );
    let anonymous = Promoter::new().run(&args).await;
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(
        stderr(&anonymous).contains("anonymous") && stderr(&anonymous).contains(&host),
        "{}",
        stderr(&anonymous)
    );

    let auth = base64_encode("ci:s3cret-pass");
    let promoter =
        Promoter::new().docker_config(serde_json::json!({"auths": {host.clone(): {"auth": auth}}}));
    report(&promoter.run(&args).await);
    assert_same_bytes(
        &format!("{host}/fast-feedback/app"),
        &format!("{host}/prod/app"),
        &["1".into()],
        Some("ci:s3cret-pass"),
    );
}

/// A registry in Artifact Registry's manner: token auth whose realm accepts
/// `oauth2accesstoken:<token>` for the tokens `accept` approves.
async fn token_registry(
    dir: &std::path::Path,
    realm_host: &str,
    accept: impl Fn(&str) -> bool + Send + Sync + 'static,
) -> (Registry, TokenRealm) {
    let (realm, url, cert) = TokenRealm::start(dir, accept).await;
    let url = url.replace("127.0.0.1", realm_host);
    let registry = Registry::start(Auth::Token {
        realm: url,
        service: realm.service.clone(),
        issuer: realm.issuer.clone(),
        cert,
    });
    (registry, realm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_default_credentials_flow_from_the_metadata_server_to_the_registry() {
    let work = tempfile::tempdir().expect("temp dir");
    let (metadata, metadata_address) = MetadataServer::start().await;
    let issued = metadata.clone();
    let accept =
        move |token: &str| token == "seed-token" || issued.issued().iter().any(|t| t == token);
    let (registry, realm) = token_registry(work.path(), "127.0.0.1", accept).await;
    let host = registry.host();
    let creds = "oauth2accesstoken:seed-token";
    let seeded = seed(
        work.path(),
        &format!("{host}/fast-feedback/app"),
        "1.2.4",
        &["--sign"],
        Some(creds),
    );

    // `gcloud auth configure-docker HOST` hands the host to the gcloud helper: promoter then
    // uses Application Default Credentials, here the metadata server as on Cloud Run.
    let promoter = Promoter::new()
        .env("GCE_METADATA_HOST", metadata_address.to_string())
        .docker_config(serde_json::json!({"credHelpers": {host.clone(): "gcloud"}}));
    let json = report(
        &promoter
            .run(&promote_args(
                &host,
                "app:1.2.4",
                "fast-feedback",
                "extended-test",
                &["--output", "json"],
            ))
            .await,
    );
    assert_eq!(json["digest"], seeded.digest);
    assert_eq!(
        json["bytes_copied"], 0,
        "mounted across repositories under one token"
    );
    assert_same_bytes(
        &format!("{host}/fast-feedback/app"),
        &format!("{host}/extended-test/app"),
        &["1.2.4".into(), seeded.signature_tag()],
        Some(creds),
    );

    let tokens = metadata.issued();
    assert!(
        !tokens.is_empty(),
        "the access token must come from the metadata server"
    );
    let promoter_requests: Vec<_> = realm
        .seen()
        .into_iter()
        .filter(|r| r.password.as_deref() != Some("seed-token"))
        .collect();
    assert!(!promoter_requests.is_empty());
    for request in &promoter_requests {
        assert_eq!(request.username.as_deref(), Some("oauth2accesstoken"));
        assert!(
            tokens.contains(request.password.as_ref().expect("a token")),
            "the realm must get the metadata token"
        );
    }
    assert!(
        promoter_requests.iter().any(|r| r
            .scopes
            .contains(&"repository:extended-test/app:pull,push".to_owned())
            && r.scopes
                .contains(&"repository:fast-feedback/app:pull".to_owned())),
        "the destination token must cover the mount's source: {promoter_requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_from_the_environment_are_used_per_side_and_never_printed() {
    let work = tempfile::tempdir().expect("temp dir");
    let (registry, _realm) = token_registry(
        work.path(),
        "127.0.0.1",
        accept_only(&["seed-token", "source-token", "dest-token"]),
    )
    .await;
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/a/app"),
        "1",
        &[],
        Some("oauth2accesstoken:seed-token"),
    );

    let ok = Promoter::new()
        .env("SOURCE_ACCESS_TOKEN", "source-token")
        .env("DEST_ACCESS_TOKEN", "dest-token")
        .run(&[
            "copy",
            &format!("{host}/a/app:1"),
            &format!("{host}/b/app"),
            "--output",
            "json",
        ])
        .await;
    report(&ok);

    let refused = Promoter::new()
        .env("SOURCE_ACCESS_TOKEN", "source-token")
        .env("DEST_ACCESS_TOKEN", "expired-secret-token")
        .env("RUST_LOG", "debug")
        .run(&["copy", &format!("{host}/a/app:1"), &format!("{host}/c/app")])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    let printed = format!(
        "{}{}",
        stderr(&refused),
        String::from_utf8_lossy(&refused.stdout)
    );
    assert!(
        printed.contains("refused") && printed.contains(&host),
        "{printed}"
    );
    for secret in ["expired-secret-token", "source-token"] {
        assert!(!printed.contains(secret), "a token was printed: {printed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_withheld_from_a_token_realm_on_another_host() {
    let work = tempfile::tempdir().expect("temp dir");
    // The registry is reached as 127.0.0.1 but sends clients to a realm named `localhost`.
    let (registry, realm) =
        token_registry(work.path(), "localhost", accept_only(&["seed-token"])).await;
    let host = registry.host();
    let seed_realm = Arc::new(realm);
    let output = Promoter::new()
        .env("SOURCE_ACCESS_TOKEN", "seed-token")
        .env("DEST_ACCESS_TOKEN", "seed-token")
        .run(&["copy", &format!("{host}/a/app:1"), &format!("{host}/b/app")])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let seen = seed_realm.seen();
    assert!(!seen.is_empty(), "the realm was asked");
    assert!(
        seen.iter().all(|r| r.password.is_none()),
        "a credential reached another host: {seen:?}"
    );
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_override_file_is_that_sides_identity() {
    const KEY_EMAIL: &str = "ci-promoter@test-project.iam.gserviceaccount.com";
    let work = tempfile::tempdir().expect("temp dir");
    // A service-account key signs its own access tokens (a JWT whose issuer is the account), so
    // the realm accepts exactly the tokens that key made.
    let accept = |token: &str| {
        token == "seed-token" || jwt_claim(token, "iss").as_deref() == Some(KEY_EMAIL)
    };
    let (registry, realm) = token_registry(work.path(), "127.0.0.1", accept).await;
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/a/app"),
        "1",
        &[],
        Some("oauth2accesstoken:seed-token"),
    );

    let key_pem = work.path().join("sa.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key_pem)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let key_file = work.path().join("ci-key.json");
    std::fs::write(
        &key_file,
        serde_json::json!({
            "type": "service_account", "project_id": "test-project", "private_key_id": "key-1",
            "private_key": std::fs::read_to_string(&key_pem).expect("pem"),
            "client_email": KEY_EMAIL, "client_id": "1234567890",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string(),
    )
    .expect("key file");

    // The source side reads with a plain token; the destination writes as the key file's account.
    let output = Promoter::new()
        .env("SOURCE_ACCESS_TOKEN", "seed-token")
        .run(&[
            "copy",
            &format!("{host}/a/app:1"),
            &format!("{host}/b/app"),
            "--dest-auth-override",
            key_file.to_str().expect("path"),
            "--output",
            "json",
        ])
        .await;
    report(&output);
    assert_same_bytes(
        &format!("{host}/a/app"),
        &format!("{host}/b/app"),
        &["1".into()],
        Some("oauth2accesstoken:seed-token"),
    );
    let pushed_as_key = realm.seen().iter().any(|r| {
        r.password
            .as_deref()
            .and_then(|t| jwt_claim(t, "iss"))
            .as_deref()
            == Some(KEY_EMAIL)
            && r.scopes.iter().any(|s| s == "repository:b/app:pull,push")
    });
    assert!(
        pushed_as_key,
        "the destination token must come from the override file"
    );

    let missing = Promoter::new()
        .run(&[
            "copy",
            &format!("{host}/a/app:1"),
            &format!("{host}/c/app"),
            "--dest-auth-override",
            "/nonexistent/key.json",
        ])
        .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("/nonexistent/key.json"),
        "{}",
        stderr(&missing)
    );
}

/// A claim of a JWT, read without verifying it (the realm's view of a self-signed access token).
fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims[claim].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_credential_helper_is_asked_as_docker_asks_it() {
    let registry = Registry::start(Auth::Basic {
        user: "ci".into(),
        password: "helper-pass".into(),
    });
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/a/app"),
        "1",
        &[],
        Some("ci:helper-pass"),
    );
    // docker-credential-<name> get: the server on stdin, {"Username","Secret"} on stdout.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\n[ \"$server\" = \"{host}\" ] || exit 1\necho '{{\"ServerURL\":\"{host}\",\"Username\":\"ci\",\"Secret\":\"helper-pass\"}}'\n"),
    )
    .expect("helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Promoter::new()
        .env("PATH", path)
        .docker_config(serde_json::json!({"credHelpers": {host.clone(): "testhelper"}}))
        .run(&[
            "copy",
            &format!("{host}/a/app:1"),
            &format!("{host}/b/app"),
            "--output",
            "json",
        ])
        .await;
    report(&output);
    assert_same_bytes(
        &format!("{host}/a/app"),
        &format!("{host}/b/app"),
        &["1".into()],
        Some("ci:helper-pass"),
    );
    assert!(!stderr(&output).contains("helper-pass"));
}

/// The service behind a registry with token auth (Artifact Registry's manner, the access token
/// from the metadata server as on Cloud Run): each decision's job asks the realm once, whatever
/// repositories of the stages and of promoter's state it touches, and however many images the
/// process has promoted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_asks_the_token_realm_once_per_promotion() {
    use crate::support::service::{Message, ServiceProcess};
    let work = tempfile::tempdir().expect("temp dir");
    let (metadata, metadata_address) = MetadataServer::start().await;
    let issued = metadata.clone();
    let accept =
        move |token: &str| token == "seed-token" || issued.issued().iter().any(|t| t == token);
    let (registry, realm) = token_registry(work.path(), "127.0.0.1", accept).await;
    let host = registry.host();
    let creds = "oauth2accesstoken:seed-token";
    let images = ["app", "other", "third"];
    for image in images {
        seed(
            work.path(),
            &format!("{host}/fast-feedback/{image}"),
            "1.0.0",
            &["--sign", "--platforms", "2"],
            Some(creds),
        );
    }
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).expect("docker dir");
    std::fs::write(
        docker.join("config.json"),
        serde_json::json!({"credHelpers": {host.clone(): "gcloud"}}).to_string(),
    )
    .expect("docker config");
    let service = ServiceProcess::start(&[
        ("REGISTRY", host.clone()),
        ("PROMOTER_PUSH_AUTH", "none".to_owned()),
        ("GCE_METADATA_HOST", metadata_address.to_string()),
        ("DOCKER_CONFIG", docker.display().to_string()),
    ])
    .await;
    for image in images {
        let asked_before = realm.seen().len();
        let (status, answer) = service
            .post(
                &Message::binary_cloudevent(
                    "test-passed",
                    serde_json::json!({"image": format!("{host}/fast-feedback/{image}:1.0.0")}),
                )
                .wrapped_push(),
            )
            .await;
        assert_eq!(
            (status, answer["decision"].as_str()),
            (200, Some("promoted")),
            "{answer}"
        );
        let asked: Vec<_> = realm.seen().into_iter().skip(asked_before).collect();
        assert_eq!(asked.len(), 1, "{image}: token requests {asked:?}");
        assert_same_bytes(
            &format!("{host}/fast-feedback/{image}"),
            &format!("{host}/extended-test/{image}"),
            &["1.0.0".into()],
            Some(creds),
        );
    }
}
