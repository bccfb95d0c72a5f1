//! Faults registries and networks really produce. Each ends in a successful retry or a clear
//! error, never a half-written destination tag.

use std::time::Duration;

use promoter::evidence;
use promoter::registry::auth::Credential;
use promoter::registry::{Repository, Transport};

use crate::support::proxy::{Fault, FaultProxy};
use crate::support::{
    Auth, Promoter, Registry, assert_same_bytes, free_port, report, seed, skopeo_raw, stderr,
};

struct Setup {
    _source: Registry,
    destination: Registry,
    proxy: FaultProxy,
    _work: tempfile::TempDir,
    seeded: crate::support::Seeded,
}

/// An image in a source registry reached through the fault proxy, and an empty destination.
async fn setup(args: &[&str]) -> Setup {
    let source = Registry::start(Auth::None);
    let destination = Registry::start(Auth::None);
    let work = tempfile::tempdir().expect("temp dir");
    let seeded = seed(
        work.path(),
        &format!("{}/fast-feedback/app", source.host()),
        "1",
        args,
        None,
    );
    let proxy = FaultProxy::start(&source.host()).await;
    Setup {
        _source: source,
        destination,
        proxy,
        _work: work,
        seeded,
    }
}

async fn copy_through(setup: &Setup) -> std::process::Output {
    Promoter::new()
        .run(&[
            "copy",
            &format!("{}/fast-feedback/app:1", setup.proxy.host),
            &format!("{}/extended-test/app", setup.destination.host()),
            "--output",
            "json",
        ])
        .await
}

fn destination_tag(setup: &Setup) -> Option<Vec<u8>> {
    skopeo_raw(
        &format!("{}/extended-test/app:1", setup.destination.host()),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_after_the_registry_says() {
    let setup = setup(&[]).await;
    setup.proxy.inject(
        "GET",
        "/blobs/sha256:",
        Fault::Status {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    report(&copy_through(&setup).await);
    let seen = setup.proxy.seen();
    let throttled = seen
        .iter()
        .position(|s| s.faulted)
        .expect("the fault fired");
    let retry = seen[throttled + 1..]
        .iter()
        .find(|s| s.path == seen[throttled].path)
        .expect("retried");
    assert!(
        retry.at.duration_since(seen[throttled].at) >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured"
    );
    assert_same_bytes(
        &format!("{}/fast-feedback/app", setup.proxy.host),
        &format!("{}/extended-test/app", setup.destination.host()),
        &["1".into()],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_or_a_dropped_connection_mid_blob_is_retried() {
    let setup = setup(&["--layer-size", "1048576"]).await;
    setup.proxy.inject(
        "GET",
        "/blobs/sha256:",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        2,
    );
    setup.proxy.inject(
        "GET",
        "/blobs/sha256:",
        Fault::CutBody { after: 300_000 },
        2,
    );
    let json = report(&copy_through(&setup).await);
    assert_eq!(json["blobs_copied"], 6);
    assert_eq!(setup.proxy.seen().iter().filter(|s| s.faulted).count(), 4);
    assert_same_bytes(
        &format!("{}/fast-feedback/app", setup.proxy.host),
        &format!("{}/extended-test/app", setup.destination.host()),
        &["1".into()],
        None,
    );
    // bytes_copied counts what landed, not the attempts that broke.
    let layers: u64 = 4 * 1_048_576;
    let bytes = json["bytes_copied"].as_u64().expect("a number");
    assert!(
        bytes >= layers && bytes < layers + 10_000,
        "bytes_copied {bytes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_is_named_in_the_error() {
    let setup = setup(&[]).await;
    let nowhere = format!("127.0.0.1:{}", free_port());
    let output = Promoter::new()
        .run(&[
            "copy",
            &format!("{}/fast-feedback/app:1", setup.proxy.host),
            &format!("{nowhere}/extended-test/app"),
        ])
        .await;
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains(&nowhere) && message.contains("unreachable"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_pointing_at_a_missing_blob_fails_without_a_destination_tag() {
    let setup = setup(&[]).await;
    let index: serde_json::Value = serde_json::from_slice(
        &skopeo_raw(&format!("{}/fast-feedback/app:1", setup.proxy.host), None).expect("seeded"),
    )
    .expect("json");
    let platform = index["manifests"][1]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    let manifest: serde_json::Value = serde_json::from_slice(
        &skopeo_raw(
            &format!("{}/fast-feedback/app@{platform}", setup.proxy.host),
            None,
        )
        .expect("platform"),
    )
    .expect("json");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest");
    setup._source.lose_blob(layer);

    let output = copy_through(&setup).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(layer) || stderr(&output).contains("blob"),
        "{}",
        stderr(&output)
    );
    assert!(
        destination_tag(&setup).is_none(),
        "a half-copied image must not be tagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_copy_resumes_moving_only_what_is_missing() {
    let setup = setup(&["--sign"]).await;
    let proxy = FaultProxy::start(&setup.destination.host()).await;
    // The destination refuses the tag for longer than the retries last.
    proxy.inject(
        "PUT",
        "/manifests/1",
        Fault::Status {
            status: 503,
            retry_after: None,
        },
        50,
    );
    let source = format!("{}/fast-feedback/app:1", setup.proxy.host);
    let failed = Promoter::new()
        .run(&[
            "copy",
            &source,
            &format!("{}/extended-test/app", proxy.host),
        ])
        .await;
    assert_eq!(failed.status.code(), Some(1));
    assert!(stderr(&failed).contains("503"), "{}", stderr(&failed));
    assert!(destination_tag(&setup).is_none());

    let json = report(
        &Promoter::new()
            .run(&[
                "copy",
                &source,
                &format!("{}/extended-test/app", setup.destination.host()),
                "--output",
                "json",
            ])
            .await,
    );
    assert_eq!(
        json["blobs_copied"], 0,
        "every blob of the image was already there"
    );
    assert_eq!(json["blobs_skipped"], json["blobs_total"]);
    assert_eq!(
        json["referrers_copied"], 0,
        "the signature went up beside the first attempt"
    );
    assert_eq!(
        json["manifests"], 1,
        "only the index, which the failed run could not tag; the platform manifests were there"
    );
    assert_same_bytes(
        &format!("{}/fast-feedback/app", setup.proxy.host),
        &format!("{}/extended-test/app", setup.destination.host()),
        &["1".into(), setup.seeded.signature_tag()],
        None,
    );
}

/// The digests an index lists.
fn listed(index: &[u8]) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_slice(index).expect("an index");
    index["manifests"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|m| m["digest"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_are_copied_when_the_referrers_endpoint_fails_for_a_moment() {
    let setup = setup(&["--sign", "--sbom"]).await;
    setup.proxy.inject(
        "GET",
        "/referrers/",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        2,
    );
    let json = report(&copy_through(&setup).await);
    assert_eq!(
        setup.proxy.seen().iter().filter(|s| s.faulted).count(),
        2,
        "the faults fired"
    );
    assert_eq!(
        json["referrers_copied"], 2,
        "the signature and the SBOM referrer"
    );
    let source = format!("{}/fast-feedback/app", setup.proxy.host);
    let destination = format!("{}/extended-test/app", setup.destination.host());
    assert_same_bytes(
        &source,
        &destination,
        &[
            "1".into(),
            setup.seeded.signature_tag(),
            setup.seeded.fallback_tag(),
        ],
        None,
    );
    let fallback = skopeo_raw(&format!("{source}:{}", setup.seeded.fallback_tag()), None)
        .expect("the source's fallback tag");
    let referrers = listed(&fallback);
    assert!(!referrers.is_empty());
    for digest in referrers {
        assert_eq!(
            skopeo_raw(&format!("{destination}@{digest}"), None),
            skopeo_raw(&format!("{source}@{digest}"), None),
            "referrer {digest}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrers_endpoint_that_keeps_failing_stops_the_copy_before_the_tag() {
    let setup = setup(&["--sign", "--sbom"]).await;
    setup.proxy.inject(
        "GET",
        "/referrers/",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        usize::MAX,
    );
    let output = copy_through(&setup).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("referrers of")
            && message.contains(&setup.proxy.host)
            && message.contains("500"),
        "{message}"
    );
    assert!(
        destination_tag(&setup).is_none(),
        "an image whose referrers could not be read must not be tagged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_config_blob_goes_up_despite_a_dropped_connection() {
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.host()).await;
    let config = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    let has_config = |repository: &str| {
        let url = format!("http://{}/v2/{repository}/blobs/{config}", registry.host());
        async move {
            reqwest::Client::new()
                .head(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    };
    let repository = |path: &str| {
        Repository::try_from(format!("{}/{path}", proxy.host).as_str()).expect("a repository")
    };
    // Into a new upload session, and into the session a refused mount opened; each by a fresh
    // process's transport, which knows no repository holding the blob yet.
    let mut transports = Vec::new();
    for (path, mount_from) in [("prod/app", None), ("qa/app", Some("empty/app"))] {
        let transport = Transport::new(Vec::new()).expect("transport");
        let client = transport.client(
            proxy.host.as_str().try_into().expect("a host"),
            Credential::Anonymous,
            Vec::new(),
        );
        proxy.inject("PUT", "/blobs/uploads/", Fault::DropConnection, 1);
        let from = mount_from.map(repository);
        evidence::DigestRecords {
            client: &client,
            repository: &repository(path),
        }
        .prepare(from.as_ref())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(has_config(path).await, "{path} lacks the blob");
        transports.push(transport);
    }
    let seen = proxy.seen();
    assert_eq!(seen.iter().filter(|s| s.faulted).count(), 2, "{seen:?}");

    // A transport that placed it once mounts it from there into the next repository of a job
    // that may pull from there: one request.
    let client = transports[0].client(
        proxy.host.as_str().try_into().expect("a host"),
        Credential::Anonymous,
        vec![
            "repository:staging/app:pull,push".to_owned(),
            "repository:prod/app:pull".to_owned(),
        ],
    );
    evidence::DigestRecords {
        client: &client,
        repository: &repository("staging/app"),
    }
    .prepare(None)
    .await
    .expect("mounted");
    assert!(
        has_config("staging/app").await,
        "staging/app lacks the blob"
    );
    let after: Vec<String> = proxy.seen()[seen.len()..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0].contains("/v2/staging/app/blobs/uploads/")
            && after[0].contains(&format!("mount={config}"))
            && after[0].contains("from=prod/app"),
        "{after:?}"
    );

    // A job whose token may not pull from any repository known to hold it does not mount from
    // one (behind token auth that would cost another token): it uploads.
    let before = proxy.seen().len();
    let client = transports[0].client(
        proxy.host.as_str().try_into().expect("a host"),
        Credential::Anonymous,
        vec!["repository:other/app:pull,push".to_owned()],
    );
    evidence::DigestRecords {
        client: &client,
        repository: &repository("other/app"),
    }
    .prepare(None)
    .await
    .expect("uploaded");
    assert!(has_config("other/app").await, "other/app lacks the blob");
    let after: Vec<String> = proxy.seen()[before..]
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert!(
        after.iter().all(|path| !path.contains("mount=")),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_arriving_together_put_the_records_config_blob_up_once() {
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.host()).await;
    let transport = Transport::new(Vec::new()).expect("transport");
    let client = transport.client(
        proxy.host.as_str().try_into().expect("a host"),
        Credential::Anonymous,
        Vec::new(),
    );
    let stage =
        Repository::try_from(format!("{}/prod/app", proxy.host).as_str()).expect("a repository");
    let records = evidence::DigestRecords {
        client: &client,
        repository: &stage,
    };
    let prepared = futures::future::join_all((0..8).map(|_| records.prepare(None))).await;
    assert!(prepared.iter().all(Result::is_ok), "{prepared:?}");
    let uploads: Vec<String> = proxy
        .seen()
        .into_iter()
        .map(|s| s.path)
        .filter(|path| path.contains("/blobs/"))
        .collect();
    // One look (absent), one session, one PUT: not eight of each.
    assert_eq!(uploads.len(), 3, "{uploads:?}");
}

/// A promotion whose waiting-index entry could not be written (the registry failing that write
/// through every retry) is answered 503; its redelivery finds the promotion recorded and writes
/// the entry, so a gate that opens by time alone still opens: `promoter reconcile` promotes the
/// digest to prod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_waiting_entry_is_written_again_by_the_redelivery() {
    use crate::support::service::{Message, ServiceProcess};
    let registry = Registry::start(Auth::None);
    let proxy = FaultProxy::start(&registry.host()).await;
    let work = tempfile::tempdir().expect("temp dir");
    seed(
        work.path(),
        &format!("{}/fast-feedback/app", registry.host()),
        "1.0.0",
        &[],
        None,
    );
    let rules = work.path().join("rules.yaml");
    std::fs::write(
        &rules,
        format!(
            "stages:\n  - name: fast-feedback\n    registry: {host}\n  - name: extended-test\n    registry: {host}\n  - name: prod\n    registry: {host}\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n  - from: extended-test\n    to: prod\n    require: []\n    min_time_in_stage: 1s\n",
            host = proxy.host
        ),
    )
    .expect("rules file");
    let environment = [
        ("REGISTRY", proxy.host.clone()),
        ("PROMOTER_CONFIG", rules.display().to_string()),
        ("PROMOTER_PUSH_AUTH", "none".to_owned()),
    ];
    let service = ServiceProcess::start(&environment).await;
    // Every attempt at the waiting entry fails (the client makes 5).
    proxy.inject(
        "PUT",
        "/v2/promoter-state/waiting/manifests/",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
        5,
    );
    let request = Message::binary_cloudevent(
        "test-passed",
        serde_json::json!({"image": format!("{}/fast-feedback/app:1.0.0", proxy.host)}),
    )
    .wrapped_push();
    let (status, answer) = service.post(&request).await;
    assert_eq!(status, 503, "{answer}");
    let (status, answer) = service.post(&request).await;
    assert_eq!(
        (status, answer["decision"].as_str()),
        (200, Some("already-promoted")),
        "{answer}"
    );

    let mut promoter = Promoter::new();
    for (name, value) in &environment {
        promoter = promoter.env(name, value.clone());
    }
    let prod = format!("{}/prod/app:1.0.0", registry.host());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while skopeo_raw(&prod, None).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "reconcile never promoted the digest to prod"
        );
        let output = promoter.run(&["reconcile"]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_same_bytes(
        &format!("{}/fast-feedback/app", registry.host()),
        &format!("{}/prod/app", registry.host()),
        &["1.0.0".into()],
        None,
    );
}
