//! Push authentication end to end (docs/routes.md): tokens minted with a local
//! key set the way Pub/Sub mints them, checked by the running service.

use serde_json::json;

use crate::service::Stack;
use crate::support::google::OidcIssuer;
use crate::support::service::Message;

const AUDIENCE: &str = "https://promoter-test.a.run.app/";
const PUSHER: &str = "p2p-push@test-project.iam.gserviceaccount.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_mode_accepts_only_valid_tokens_from_the_push_identity() {
    let keys = tempfile::tempdir().expect("temp dir");
    let google = OidcIssuer::new(keys.path(), "google-key-1");
    let forger = OidcIssuer::new(keys.path(), "google-key-1");
    let jwks = google.serve_jwks().await;
    let stack = Stack::start(&[
        ("PROMOTER_PUSH_AUTH", "verify".to_owned()),
        ("PROMOTER_PUSH_AUDIENCE", AUDIENCE.to_owned()),
        ("PROMOTER_PUSH_SERVICE_ACCOUNTS", PUSHER.to_owned()),
        ("PROMOTER_JWKS_URL", jwks),
    ])
    .await;
    let request =
        Message::binary_cloudevent("test-passed", json!({"image": stack.image})).wrapped_push();
    let refused = [
        ("no token", None, 401),
        ("forged", Some(forger.mint(AUDIENCE, PUSHER, 3600)), 401),
        ("expired", Some(google.mint(AUDIENCE, PUSHER, -600)), 401),
        (
            "wrong audience",
            Some(google.mint("https://other-service.a.run.app/", PUSHER, 3600)),
            401,
        ),
        (
            "another service account",
            Some(google.mint(
                AUDIENCE,
                "intruder@evil-project.iam.gserviceaccount.com",
                3600,
            )),
            403,
        ),
    ];
    for (name, token, status) in &refused {
        let request = match token {
            Some(token) => request
                .clone()
                .with_header("authorization", &format!("Bearer {token}")),
            None => request.clone(),
        };
        let (got, body) = stack.service.post(&request).await;
        assert_eq!(got, *status, "{name}: {body}");
    }
    stack.assert_nothing_in_extended_test();

    let valid = google.mint(AUDIENCE, PUSHER, 3600);
    let (status, body) = stack
        .service
        .post(
            &request
                .clone()
                .with_header("authorization", &format!("Bearer {valid}")),
        )
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    stack.assert_promoted_bytes();

    let log = stack.service.log();
    for (_, token, _) in refused.iter().chain([&("valid", Some(valid), 200)]) {
        if let Some(token) = token {
            let signature = token.rsplit('.').next().unwrap_or_default();
            assert!(!log.contains(signature), "a token reached the log");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_run_mode_checks_the_claims_cloud_run_left() {
    let keys = tempfile::tempdir().expect("temp dir");
    let google = OidcIssuer::new(keys.path(), "google-key-2");
    let stack = Stack::start(&[
        ("PROMOTER_PUSH_AUTH", "cloud-run".to_owned()),
        ("PROMOTER_PUSH_AUDIENCE", AUDIENCE.to_owned()),
        ("PROMOTER_PUSH_SERVICE_ACCOUNTS", PUSHER.to_owned()),
    ])
    .await;
    let request =
        Message::binary_cloudevent("test-passed", json!({"image": stack.image})).wrapped_push();
    let wrong_email = google.mint_as_cloud_run_passes_it(
        AUDIENCE,
        "someone-else@test-project.iam.gserviceaccount.com",
    );
    let (status, body) = stack
        .service
        .post(
            &request
                .clone()
                .with_header("authorization", &format!("Bearer {wrong_email}")),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    stack.assert_nothing_in_extended_test();

    let right = google.mint_as_cloud_run_passes_it(AUDIENCE, PUSHER);
    let (status, body) = stack
        .service
        .post(&request.with_header("authorization", &format!("Bearer {right}")))
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
}
