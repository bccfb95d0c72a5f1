//! The copy engine through the command line: exact copies, idempotence, refusals, resumption;
//! and the registry client's delete, against the real registry.

use promoter::registry::auth::{IdentityChoice, Secret};
use promoter::registry::{Digest, RegistryHost, Repository, Transport};

use crate::support::google::{TokenRealm, accept_only};
use crate::support::{
    Auth, Promoter, Registry, assert_same_bytes, promote_args, report, seed, skopeo_raw, stderr,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_promote_copies_a_signed_multi_platform_image_byte_for_byte_by_mounting() {
    let registry = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    let seeded = seed(
        work.path(),
        &format!("{host}/fast-feedback/my-app"),
        "1.2.4",
        &["--sign", "--sbom"],
        None,
    );

    // corectl's call, with the variables P2P sets.
    let output = Promoter::new()
        .env("SOURCE_REGISTRY", &host)
        .env("REGISTRY", &host)
        .run(&[
            "p2p",
            "promote",
            "my-app:1.2.4",
            "--source-stage",
            "fast-feedback",
            "--dest-stage",
            "extended-test",
            "--output",
            "json",
        ])
        .await;
    let json = report(&output);
    assert_eq!(json["digest"], seeded.digest);
    assert_eq!(json["already_present"], false);
    assert_eq!(json["manifests"], 3, "index and two platform manifests");
    assert_eq!(json["blobs_total"], 6, "two configs and four layers");
    assert_eq!(json["blobs_mounted"], 6);
    assert_eq!(json["bytes_copied"], 0);
    assert_eq!(
        json["referrers_copied"], 2,
        "the cosign signature and the SBOM referrer"
    );
    assert_eq!(
        registry.blob_uploads("extended-test/my-app"),
        0,
        "no layer bytes may move within one registry"
    );

    assert_same_bytes(
        &format!("{host}/fast-feedback/my-app"),
        &format!("{host}/extended-test/my-app"),
        &[
            "1.2.4".into(),
            seeded.signature_tag(),
            seeded.fallback_tag(),
        ],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_across_registries_keeps_a_docker_manifest_list_exact() {
    let source = Registry::start(Auth::None);
    let destination = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let from = format!("{}/team/app", source.host());
    let to = format!("{}/mirror/app", destination.host());
    let seeded = seed(
        work.path(),
        &from,
        "v7",
        &["--format", "docker", "--platforms", "3", "--sign"],
        None,
    );

    let json = report(
        &Promoter::new()
            .run(&["copy", &format!("{from}:v7"), &to, "--output", "json"])
            .await,
    );
    assert_eq!(
        json["media_type"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    assert_eq!(json["blobs_copied"], 9);
    assert_eq!(json["blobs_mounted"], 0);
    assert!(json["bytes_copied"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(json["destination"], format!("{to}:v7"));
    assert_same_bytes(&from, &to, &["v7".into(), seeded.signature_tag()], None);
    // And by digest: every platform manifest is there.
    let index: serde_json::Value =
        serde_json::from_slice(&skopeo_raw(&format!("{to}:v7"), None).expect("copied"))
            .expect("json");
    for child in index["manifests"].as_array().expect("a list") {
        let digest = child["digest"].as_str().expect("digest");
        assert!(
            skopeo_raw(&format!("{to}@{digest}"), None).is_some(),
            "platform {digest} missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_non_image_artifacts_and_single_platform_images() {
    let registry = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/charts/demo"),
        "0.3.0",
        &["--artifact", "helm"],
        None,
    );
    seed(
        work.path(),
        &format!("{host}/images/single"),
        "1",
        &["--platforms", "0"],
        None,
    );
    for (from, to, tag) in [
        ("charts/demo", "released/demo", "0.3.0"),
        ("images/single", "released/single", "1"),
    ] {
        let output = Promoter::new()
            .run(&[
                "copy",
                &format!("{host}/{from}:{tag}"),
                &format!("{host}/{to}"),
                "--output",
                "json",
            ])
            .await;
        let json = report(&output);
        assert_eq!(
            json["media_type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_same_bytes(
            &format!("{host}/{from}"),
            &format!("{host}/{to}"),
            &[tag.to_owned()],
            None,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_promotion_is_already_present_and_writes_nothing() {
    let registry = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    seed(
        work.path(),
        &format!("{host}/fast-feedback/app"),
        "2.0.0",
        &[],
        None,
    );
    let promoter = Promoter::new();
    let args = promote_args(
        &host,
        "app:2.0.0",
        "fast-feedback",
        "extended-test",
        &["--output", "json"],
    );
    assert_eq!(report(&promoter.run(&args).await)["already_present"], false);
    let writes_before = registry.requests("PUT", "/v2/extended-test/")
        + registry.requests("POST", "/v2/extended-test/");

    let again = report(&promoter.run(&args).await);
    assert_eq!(again["already_present"], true);
    assert_eq!(again["bytes_copied"], 0);
    let writes_after = registry.requests("PUT", "/v2/extended-test/")
        + registry.requests("POST", "/v2/extended-test/");
    assert_eq!(
        writes_before, writes_after,
        "an idempotent run must not write"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_tag_holding_other_content_is_refused_and_left_alone() {
    let registry = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    let wanted = seed(
        work.path(),
        &format!("{host}/fast-feedback/app"),
        "1.0.0",
        &[],
        None,
    );
    let existing = seed(
        work.path(),
        &format!("{host}/extended-test/app"),
        "1.0.0",
        &[],
        None,
    );

    let output = Promoter::new()
        .run(&promote_args(
            &host,
            "app:1.0.0",
            "fast-feedback",
            "extended-test",
            &[],
        ))
        .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("immutable")
            && message.contains(&existing.digest)
            && message.contains(&wanted.digest),
        "{message}"
    );
    let now = skopeo_raw(&format!("{host}/extended-test/app:1.0.0"), None).expect("still there");
    assert_eq!(
        support_digest(&now),
        existing.digest,
        "the destination tag must not move"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_and_writes_nothing() {
    let source = Registry::start(Auth::None);
    let destination = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let from = format!("{}/a/app", source.host());
    seed(work.path(), &from, "1", &["--sign"], None);
    let to = format!("{}/b/app", destination.host());
    let json = report(
        &Promoter::new()
            .run(&[
                "copy",
                &format!("{from}:1"),
                &to,
                "--dry-run",
                "--output",
                "json",
            ])
            .await,
    );
    assert_eq!(json["blobs_copied"], 6, "what a real run would copy");
    assert_eq!(json["bytes_copied"], 0);
    assert_eq!(
        destination.requests("PUT", "/v2/") + destination.requests("POST", "/v2/"),
        0
    );
    assert!(skopeo_raw(&format!("{to}:1"), None).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_says_what_is_missing() {
    let promoter = Promoter::new();
    let output = promoter
        .run(&[
            "promote",
            "app:1",
            "--source-stage",
            "a",
            "--dest-registry",
            "r.example",
            "--dest-stage",
            "b",
        ])
        .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--source-registry")
            && stderr(&output).contains("SOURCE_REGISTRY"),
        "{}",
        stderr(&output)
    );

    let output = promoter
        .run(&[
            "promote",
            "app:1",
            "--source-registry",
            "r.example",
            "--source-stage",
            "a",
            "--dest-stage",
            "b",
        ])
        .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("DEST_REGISTRY or REGISTRY"),
        "{}",
        stderr(&output)
    );

    for bad in [
        "App:1",
        "app:-x",
        "app@sha256:123",
        "app",
        "app:1 ",
        "app:1\n",
    ] {
        let output = promoter
            .run(&[
                "promote",
                bad,
                "--source-registry",
                "127.0.0.1:1",
                "--source-stage",
                "a",
                "--dest-registry",
                "127.0.0.1:1",
                "--dest-stage",
                "b",
            ])
            .await;
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(bad.split(':').next().unwrap_or(bad)),
            "{}",
            stderr(&output)
        );
    }
    let output = promoter.run(&["copy", "127.0.0.1:1/a/b:1", "127.0.0.1:1/c/d@sha256:0000000000000000000000000000000000000000000000000000000000000000"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr(&output).contains("panicked"));
    // A padded reference is refused, as skopeo and crane refuse it, never trimmed and copied.
    let output = promoter
        .run(&["copy", "127.0.0.1:1/a/b:1 ", "127.0.0.1:1/c/d"])
        .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("whitespace"),
        "{}",
        stderr(&output)
    );
}

fn support_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_shows_on_a_terminal_and_nothing_but_the_result_when_piped() {
    let source = Registry::start(Auth::None);
    let destination = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let from = format!("{}/a/app", source.host());
    seed(work.path(), &from, "1", &["--layer-size", "1048576"], None);

    let piped = Promoter::new()
        .run(&[
            "copy",
            &format!("{from}:1"),
            &format!("{}/piped/app", destination.host()),
        ])
        .await;
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(
        stderr(&piped).is_empty(),
        "piped output must be the result only: {}",
        stderr(&piped)
    );
    assert!(String::from_utf8_lossy(&piped.stdout).starts_with("promoted: "));

    // `script` gives the command a terminal, as a person running it has.
    let command = format!(
        "{} copy {from}:1 {}/terminal/app",
        env!("CARGO_BIN_EXE_promoter"),
        destination.host()
    );
    let on_terminal = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("HOME", work.path())
        .output()
        .expect("script runs");
    assert!(on_terminal.status.success());
    let screen = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(
        screen.contains("blobs") && screen.contains("MiB copied"),
        "{screen}"
    );
    assert!(screen.contains("promoted: "), "{screen}");
}

fn repository(host: &str, path: &str) -> Repository {
    Repository::try_from(format!("{host}/{path}").as_str()).expect("a repository")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_is_deleted_once_and_then_is_not_there() {
    let registry = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    let seeded = seed(
        work.path(),
        &format!("{host}/stage/app"),
        "1",
        &["--platforms", "0"],
        None,
    );
    let stage = repository(&host, "stage/app");
    let client = Transport::new(Vec::new())
        .expect("transport")
        .registry_client(
            &IdentityChoice::default(),
            &stage.registry,
            &[(&stage, "pull,push,delete")],
        )
        .await
        .expect("a client");
    let digest = Digest::try_from(seeded.digest.as_str()).expect("a digest");
    assert!(
        client
            .delete_manifest(&stage, &digest)
            .await
            .expect("deleted")
    );
    assert!(
        skopeo_raw(&format!("{host}/stage/app@{digest}"), None).is_none(),
        "the manifest is still there"
    );
    assert!(
        !client
            .delete_manifest(&stage, &digest)
            .await
            .expect("nothing left to delete"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_token_auth_one_token_covers_a_delete_and_another_repository() {
    let work = tempfile::tempdir().expect("temp dir");
    let (realm, url, cert) = TokenRealm::start(work.path(), accept_only(&["seed-token"])).await;
    let registry = Registry::start(Auth::Token {
        realm: url,
        service: realm.service.clone(),
        issuer: realm.issuer.clone(),
        cert,
    });
    let host = registry.host();
    let creds = "oauth2accesstoken:seed-token";
    let seeded = seed(
        work.path(),
        &format!("{host}/stage/app"),
        "1",
        &["--platforms", "0"],
        Some(creds),
    );
    seed(
        work.path(),
        &format!("{host}/previous/app"),
        "1",
        &["--platforms", "0"],
        Some(creds),
    );
    let (stage, previous) = (
        repository(&host, "stage/app"),
        repository(&host, "previous/app"),
    );
    let identity = IdentityChoice {
        access_token: Some(Secret::new("seed-token")),
        override_file: None,
    };
    let asked_before = realm.seen().len();
    let registry_host = RegistryHost::try_from(host.as_str()).expect("a host");
    let client = Transport::new(Vec::new())
        .expect("transport")
        .registry_client(
            &identity,
            &registry_host,
            &[(&stage, "pull,push,delete"), (&previous, "pull")],
        )
        .await
        .expect("a client");
    assert!(
        client
            .head_manifest(&previous, "1")
            .await
            .expect("readable")
            .is_some()
    );
    let digest = Digest::try_from(seeded.digest.as_str()).expect("a digest");
    assert!(
        client
            .delete_manifest(&stage, &digest)
            .await
            .expect("deleted")
    );
    // What promoter asked the realm (skopeo's own requests come after).
    let asked: Vec<_> = realm.seen().into_iter().skip(asked_before).collect();
    assert!(skopeo_raw(&format!("{host}/stage/app:1"), Some(creds)).is_none());

    assert_eq!(asked.len(), 1, "one token handshake: {asked:?}");
    for scope in [
        "repository:stage/app:pull,push,delete",
        "repository:previous/app:pull",
    ] {
        assert!(
            asked[0].scopes.iter().any(|s| s == scope),
            "{scope} not asked for: {asked:?}"
        );
    }
}
