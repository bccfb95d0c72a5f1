//! The service end to end (issue 3): every inbound form, built byte-for-byte as its sender builds
//! it, promotes a test-passed image fast-feedback → extended-test and announces `promoted` on the
//! Pub/Sub fake; bad input is answered as docs/routes.md says with nothing copied.

use std::time::Duration;

use serde_json::json;

use crate::support::pubsub::{Collector, PROMOTIONS_SUBSCRIPTION, PROMOTIONS_TOPIC, PubSubFake};
use crate::support::service::{Message, PushRequest, ServiceProcess, http_binary, http_structured};
use crate::support::{Auth, Registry, Seeded, assert_same_bytes, seed, skopeo_raw};

pub struct Stack {
    pub registry: Registry,
    pub pubsub: PubSubFake,
    pub service: ServiceProcess,
    pub promotions: Collector,
    pub seeded: Seeded,
    /// `REGISTRY/fast-feedback/my-app:1.2.4`
    pub image: String,
    environment: Vec<(String, String)>,
    pub _work: tempfile::TempDir,
}

impl Stack {
    /// A registry with a signed two-platform image in fast-feedback, the Pub/Sub fake, and
    /// `promoter serve` on the embedded default pipeline.
    pub async fn start(extra_env: &[(&str, String)]) -> Stack {
        Self::start_inner(extra_env, None).await
    }

    /// The same with a rules file; `REGISTRY_HOST` in `text` becomes the registry's address.
    pub async fn start_with_rules(text: &str, path: &std::path::Path) -> Stack {
        Self::start_inner(&[], Some((text, path))).await
    }

    async fn start_inner(
        extra_env: &[(&str, String)],
        rules: Option<(&str, &std::path::Path)>,
    ) -> Stack {
        let registry = Registry::start(Auth::None);
        let pubsub = PubSubFake::start();
        let work = tempfile::tempdir().expect("temp dir");
        let host = registry.host();
        let seeded = seed(
            work.path(),
            &format!("{host}/fast-feedback/my-app"),
            "1.2.4",
            &["--sign"],
            None,
        );
        let mut env = vec![
            ("REGISTRY", host.clone()),
            ("PUBSUB_EMULATOR_HOST", pubsub.host.clone()),
            ("PROMOTER_EVENTS_TOPIC", PROMOTIONS_TOPIC.to_owned()),
            ("PROMOTER_PUSH_AUTH", "none".to_owned()),
            ("K_SERVICE", "promoter-test".to_owned()),
        ];
        if let Some((text, path)) = rules {
            std::fs::write(path, text.replace("REGISTRY_HOST", &host)).expect("rules file");
            env.push(("PROMOTER_CONFIG", path.display().to_string()));
        }
        env.extend(extra_env.iter().map(|(k, v)| (*k, v.clone())));
        let service = ServiceProcess::start(&env).await;
        let promotions = Collector::start(&pubsub.host, PROMOTIONS_SUBSCRIPTION).await;
        let environment = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        Stack {
            image: format!("{host}/fast-feedback/my-app:1.2.4"),
            registry,
            pubsub,
            service,
            promotions,
            seeded,
            environment,
            _work: work,
        }
    }

    /// The environment the service runs with, for a second instance.
    pub fn environment(&self) -> Vec<(&str, String)> {
        self.environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }

    pub fn extended_test(&self) -> String {
        format!("{}/extended-test/my-app", self.registry.host())
    }

    pub fn assert_promoted_bytes(&self) {
        assert_same_bytes(
            &format!("{}/fast-feedback/my-app", self.registry.host()),
            &self.extended_test(),
            &["1.2.4".into(), self.seeded.signature_tag()],
            None,
        );
    }

    pub fn assert_nothing_in_extended_test(&self) {
        assert!(
            skopeo_raw(&format!("{}:1.2.4", self.extended_test()), None).is_none(),
            "something was promoted"
        );
        assert_eq!(
            self.registry.requests("PUT", "/v2/extended-test/"),
            0,
            "something was written to extended-test"
        );
    }

    /// The `promoted` event of this stack's image, checked field by field.
    pub async fn expect_promoted_event(&mut self) -> serde_json::Value {
        let event = self
            .promotions
            .next(Duration::from_secs(15))
            .await
            .expect("a promoted event on the topic");
        let attributes = &event.attributes;
        assert_eq!(
            attributes.get("ce-type").map(String::as_str),
            Some("promoted"),
            "{attributes:?}"
        );
        assert_eq!(
            attributes.get("ce-specversion").map(String::as_str),
            Some("1.0")
        );
        assert_eq!(
            attributes.get("ce-source").map(String::as_str),
            Some("//promoter/promoter-test")
        );
        assert_eq!(
            attributes.get("ce-subject"),
            Some(&format!("{}:1.2.4", self.extended_test()))
        );
        assert_eq!(
            attributes.get("content-type").map(String::as_str),
            Some("application/json")
        );
        assert_eq!(event.ordering_key, self.extended_test());
        let data = &event.data;
        assert_eq!(data["digest"], self.seeded.digest);
        assert_eq!(data["image"], format!("{}:1.2.4", self.extended_test()));
        assert_eq!(data["from_stage"], "fast-feedback");
        assert_eq!(data["to_stage"], "extended-test");
        assert_eq!(data["copy"]["digest"], self.seeded.digest);
        assert!(
            data["trigger"]["id"].is_string() && data["trigger"]["type"].is_string(),
            "{data}"
        );
        assert_eq!(data["evidence"][0]["type"], "test-passed");
        event
            .data
            .clone()
            .as_object()
            .map(|_| json!({"id": attributes.get("ce-id"), "data": data}))
            .unwrap_or_default()
    }
}

fn test_passed(image: &str) -> serde_json::Value {
    json!({ "image": image })
}

async fn promotes_through(make: impl Fn(&Stack) -> PushRequest) {
    let mut stack = Stack::start(&[]).await;
    let (status, body) = stack.service.post(&make(&stack)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "promoted", "{body}");
    assert_eq!(body["digest"], stack.seeded.digest);
    stack.assert_promoted_bytes();
    stack.expect_promoted_event().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_push_wrapped_binary_cloudevent() {
    promotes_through(|s| {
        Message::binary_cloudevent("test-passed", test_passed(&s.image)).wrapped_push()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_push_wrapped_structured_cloudevent() {
    promotes_through(|s| {
        Message::structured_cloudevent("com.acme.p2p.test-passed", test_passed(&s.image))
            .wrapped_push()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_push_wrapped_manual_gcloud_message() {
    promotes_through(|s| Message::manual("test-passed", test_passed(&s.image)).wrapped_push())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_push_unwrapped_with_metadata() {
    promotes_through(|s| {
        Message::binary_cloudevent("test-passed", test_passed(&s.image)).unwrapped_push()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventarc_message_published() {
    promotes_through(|s| {
        Message::binary_cloudevent("test-passed", test_passed(&s.image)).eventarc()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_http_binary_and_structured() {
    promotes_through(|s| {
        http_binary(
            "test-passed",
            json!({"image": s.image, "digest": s.seeded.digest}),
        )
    })
    .await;
    promotes_through(|s| {
        http_structured(
            "test-passed",
            json!({"image": format!("{}@{}", s.image, s.seeded.digest)}),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_build_success_notification() {
    promotes_through(|s| {
        // A Cloud Build notification on the cloud-builds topic: attributes buildId and status,
        // data the Build resource (Cloud Build docs, "Subscribing to build notifications").
        let build = json!({
            "id": "8a6e7c3c-5f1e-4a5b-9d7e-0c1f2a3b4c5d", "projectId": "test-project", "status": "SUCCESS",
            "finishTime": "2026-11-26T03:58:00.000Z",
            "results": {"images": [{"name": s.image, "digest": s.seeded.digest, "pushTiming": {}}]},
            "images": [s.image],
        });
        let message = Message {
            id: "4242".into(),
            attributes: [("buildId", "8a6e7c3c-5f1e-4a5b-9d7e-0c1f2a3b4c5d"), ("status", "SUCCESS")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            data: build.to_string().into_bytes(),
        };
        message.wrapped_push()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_deliveries_copy_once_and_announce_one_id() {
    let mut stack = Stack::start(&[]).await;
    let request =
        Message::binary_cloudevent("test-passed", test_passed(&stack.image)).wrapped_push();
    let (first, second) = tokio::join!(stack.service.post(&request), stack.service.post(&request));
    let mut decisions = vec![first.1["decision"].clone(), second.1["decision"].clone()];
    decisions.sort_by_key(|d| d.to_string());
    assert_eq!(
        decisions,
        vec![json!("already-promoted"), json!("promoted")],
        "{first:?} {second:?}"
    );
    let (again, body) = stack.service.post(&request).await;
    assert_eq!(
        (again, body["decision"].clone()),
        (200, json!("already-promoted"))
    );
    let events = stack.promotions.drain(Duration::from_secs(3)).await;
    assert!(!events.is_empty());
    let ids: std::collections::BTreeSet<_> = events
        .iter()
        .filter_map(|e| e.attributes.get("ce-id").cloned())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "every announcement of one promotion carries one id: {ids:?}"
    );
    stack.assert_promoted_bytes();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_copies_nothing() {
    let mut stack = Stack::start(&[]).await;
    let image = stack.image.clone();
    let host = stack.registry.host();
    let mut wrong_base64 =
        Message::binary_cloudevent("test-passed", test_passed(&image)).wrapped_push();
    wrong_base64.body = String::from_utf8_lossy(&wrong_base64.body)
        .replace("\"data\":\"", "\"data\":\"***")
        .into_bytes();
    let absent = format!("{host}/fast-feedback/my-app:9.9.9");
    let other_digest = format!("sha256:{}", "0".repeat(64));

    let cases: Vec<(&str, PushRequest, u16, &str)> = vec![
        (
            "not JSON, through Pub/Sub",
            PushRequest {
                headers: vec![("content-type".into(), "application/json".into())],
                body: b"{not json".to_vec(),
            },
            400,
            "rejected",
        ),
        ("wrong base64", wrong_base64, 200, "rejected"),
        (
            "unknown type",
            Message::binary_cloudevent("build-started", test_passed(&image)).wrapped_push(),
            200,
            "ignored",
        ),
        (
            "missing image",
            Message::binary_cloudevent("test-passed", json!({"digest": stack.seeded.digest}))
                .wrapped_push(),
            200,
            "rejected",
        ),
        (
            "tag and digest disagree",
            Message::binary_cloudevent(
                "test-passed",
                json!({"image": image, "digest": other_digest}),
            )
            .wrapped_push(),
            200,
            "rejected",
        ),
        (
            "absent from the source",
            Message::binary_cloudevent("test-passed", test_passed(&absent)).wrapped_push(),
            200,
            "rejected",
        ),
        (
            "direct caller, rejected by the rules",
            http_binary("test-passed", test_passed(&absent)),
            422,
            "rejected",
        ),
        (
            "direct caller, malformed",
            http_structured("test-passed", json!(null)).with_header("x-test", "1"),
            400,
            "rejected",
        ),
        (
            "image padded with a space, through Pub/Sub",
            Message::binary_cloudevent("test-passed", test_passed(&format!("{image} ")))
                .wrapped_push(),
            200,
            "rejected",
        ),
        (
            "image with a trailing newline, direct caller",
            http_binary("test-passed", test_passed(&format!("{image}\n"))),
            400,
            "rejected",
        ),
    ];
    for (name, request, status, decision) in cases {
        let (got, body) = stack.service.post(&request).await;
        assert_eq!(got, status, "{name}: {body}");
        if status != 400 {
            assert_eq!(body["decision"], decision, "{name}: {body}");
        } else {
            assert!(
                body["detail"].is_string(),
                "{name}: 400 is problem+json: {body}"
            );
        }
    }
    // A build that did not succeed is not a signal.
    let failed_build = Message {
        id: "4343".into(),
        attributes: [("buildId", "b-1"), ("status", "FAILURE")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        data: json!({"id": "b-1", "status": "FAILURE", "results": {"images": [{"name": image, "digest": stack.seeded.digest}]}}).to_string().into_bytes(),
    };
    let (status, body) = stack.service.post(&failed_build.wrapped_push()).await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("ignored")),
        "{body}"
    );
    // 2 MiB: refused before it is read.
    let huge = PushRequest {
        headers: vec![("content-type".into(), "application/json".into())],
        body: vec![b' '; 2 * 1024 * 1024],
    };
    assert_eq!(stack.service.post(&huge).await.0, 413);
    stack.assert_nothing_in_extended_test();
    // Bad Pub/Sub messages are acked and announced.
    let rejected = stack.promotions.drain(Duration::from_secs(3)).await;
    assert!(
        rejected
            .iter()
            .all(|e| e.attributes.get("ce-type").map(String::as_str) == Some("promotion-rejected"))
    );
    assert!(rejected.len() >= 4, "{rejected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_on_an_unconfigured_host_is_rejected_without_contacting_it() {
    let stack = Stack::start(&[]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let elsewhere = format!(
        "{}/fast-feedback/my-app:1.2.4",
        listener.local_addr().expect("address")
    );
    let (status, body) = stack
        .service
        .post(&Message::binary_cloudevent("test-passed", test_passed(&elsewhere)).wrapped_push())
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("rejected")),
        "{body}"
    );
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("127.0.0.1")),
        "{body}"
    );
    assert!(
        listener.accept().is_err(),
        "promoter connected to a host it was not configured for"
    );
    stack.assert_nothing_in_extended_test();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_a_503_and_the_redelivery_promotes() {
    let mut stack = Stack::start(&[]).await;
    let request =
        Message::binary_cloudevent("test-passed", test_passed(&stack.image)).wrapped_push();
    stack.registry.stop();
    let (status, body) = stack.service.post(&request).await;
    assert_eq!(status, 503, "{body}");
    stack.registry.restart();
    let (status, body) = stack.service.post(&request).await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    stack.assert_promoted_bytes();
    stack.expect_promoted_event().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_outage_is_a_503_and_the_redelivery_announces_with_the_same_id_after_one_copy() {
    let mut stack = Stack::start(&[]).await;
    let request =
        Message::binary_cloudevent("test-passed", test_passed(&stack.image)).wrapped_push();
    let port = stack.pubsub.port();
    drop(std::mem::replace(&mut stack.promotions, Collector::idle()));
    drop(std::mem::replace(
        &mut stack.pubsub,
        PubSubFake::placeholder(),
    ));

    let (status, body) = stack.service.post(&request).await;
    assert_eq!(
        status, 503,
        "a promotion that could not be announced must be redelivered: {body}"
    );

    stack.pubsub = PubSubFake::start_on(port);
    stack.promotions = Collector::start(&stack.pubsub.host, PROMOTIONS_SUBSCRIPTION).await;
    let (status, body) = stack.service.post(&request).await;
    assert_eq!(status, 200, "{body}");
    let event = stack.expect_promoted_event().await;
    // The id a consumer dedupes on depends only on the destination and the digest (docs/events.md),
    // so the attempt that failed to announce would have used the same one.
    assert_eq!(
        event["id"],
        json!(promoted_event_id(
            &stack.extended_test(),
            &stack.seeded.digest
        ))
    );
    let again = stack.service.post(&request).await;
    assert_eq!(again.1["decision"], "already-promoted");
    assert_eq!(
        stack
            .registry
            .succeeded("PUT", "/v2/extended-test/my-app/manifests/1.2.4"),
        1,
        "the image was tagged once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_through_the_emulator_with_promoter_pull() {
    use crate::support::pubsub::{EVENTS_SUBSCRIPTION, EVENTS_TOPIC};
    let registry = Registry::start(Auth::None);
    let pubsub = PubSubFake::start();
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    let seeded = seed(
        work.path(),
        &format!("{host}/fast-feedback/my-app"),
        "1.2.4",
        &["--sign"],
        None,
    );
    let mut promotions = Collector::start(&pubsub.host, PROMOTIONS_SUBSCRIPTION).await;

    let environment = [
        ("REGISTRY", host.clone()),
        ("PUBSUB_EMULATOR_HOST", pubsub.host.clone()),
        ("PROMOTER_EVENTS_TOPIC", PROMOTIONS_TOPIC.to_owned()),
    ];
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"));
    worker
        .args(["pull", "--subscription", EVENTS_SUBSCRIPTION])
        .env_clear()
        .env("HOME", work.path());
    for (name, value) in &environment {
        worker.env(name, value);
    }
    let mut worker = worker
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("promoter pull starts");

    let published = crate::support::Promoter::new()
        .env("PUBSUB_EMULATOR_HOST", pubsub.host.clone())
        .run(&[
            "publish",
            "test-passed",
            &format!("{host}/fast-feedback/my-app:1.2.4"),
            "--topic",
            EVENTS_TOPIC,
        ])
        .await;
    assert!(
        published.status.success(),
        "{}",
        crate::support::stderr(&published)
    );

    let event = promotions
        .next(Duration::from_secs(30))
        .await
        .expect("a promoted event");
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        event.attributes.get("ce-type").map(String::as_str),
        Some("promoted")
    );
    assert_eq!(event.data["digest"], seeded.digest);
    assert_same_bytes(
        &format!("{host}/fast-feedback/my-app"),
        &format!("{host}/extended-test/my-app"),
        &["1.2.4".into(), seeded.signature_tag()],
        None,
    );
}

/// The `promoted` event id for a destination repository and digest, as docs/events.md says.
fn promoted_event_id(repository: &str, digest: &str) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in ["promoted", repository, digest] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_promotion_finish_and_logs_are_cloud_logging_json() {
    use crate::support::proxy::{Fault, FaultProxy};
    let registry = Registry::start(Auth::None);
    let pubsub = PubSubFake::start();
    let work = tempfile::tempdir().expect("temp dir");
    let seeded = seed(
        work.path(),
        &format!("{}/fast-feedback/my-app", registry.host()),
        "1.2.4",
        &[],
        None,
    );
    // The service reaches the registry through a proxy that throttles once, so the promotion is
    // still running when SIGTERM arrives.
    let proxy = FaultProxy::start(&registry.host()).await;
    proxy.inject(
        "HEAD",
        "/v2/fast-feedback/my-app/manifests/1.2.4",
        Fault::Status {
            status: 429,
            retry_after: Some(2),
        },
        1,
    );
    let mut service = ServiceProcess::start(&[
        ("REGISTRY", proxy.host.clone()),
        ("PUBSUB_EMULATOR_HOST", pubsub.host.clone()),
        ("PROMOTER_EVENTS_TOPIC", PROMOTIONS_TOPIC.to_owned()),
        ("PROMOTER_PUSH_AUTH", "none".to_owned()),
    ])
    .await;
    let image = format!("{}/fast-feedback/my-app:1.2.4", proxy.host);
    let request = Message::binary_cloudevent("test-passed", test_passed(&image))
        .wrapped_push()
        .with_header(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1",
        );
    let url = service.url.clone();
    let in_flight = tokio::spawn(async move {
        let mut builder = reqwest::Client::new()
            .post(format!("{url}/"))
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder
            .send()
            .await
            .expect("an answer before the process exits");
        (
            response.status().as_u16(),
            response
                .json::<serde_json::Value>()
                .await
                .unwrap_or_default(),
        )
    });
    // SIGTERM once the throttle has answered: the promotion is then waiting out its Retry-After,
    // in flight by construction rather than by a guess at how long start-up takes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !proxy.seen().iter().any(|seen| seen.faulted) {
        assert!(
            std::time::Instant::now() < deadline,
            "the injected 429 never fired: {:?}\n{}",
            proxy.seen(),
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = tokio::task::spawn_blocking(move || {
        let status = service.terminate(Duration::from_secs(15));
        (status, service)
    })
    .await
    .expect("terminate");
    let (status, body) = in_flight.await.expect("request task");
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    assert_eq!(body["digest"], seeded.digest);
    assert_eq!(
        proxy.seen().iter().filter(|seen| seen.faulted).count(),
        1,
        "the throttle fired once, and the promotion went on past it"
    );
    let (exit_status, service) = exit;
    assert!(
        exit_status.is_some_and(|s| s.success()),
        "the service must exit cleanly after draining: {exit_status:?}"
    );

    // Every line is a Cloud Logging JSON object; the decision line names the event, the image,
    // the digest, the stages and the outcome, under the request's trace.
    let log = service.log();
    let mut decision_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["severity"].is_string(), "{line}");
        if entry["message"] == "decision" {
            decision_lines += 1;
            assert_eq!(entry["decision"], "promoted", "{line}");
            assert_eq!(entry["digest"], seeded.digest, "{line}");
            assert_eq!(entry["fromStage"], "fast-feedback", "{line}");
            assert_eq!(entry["toStage"], "extended-test", "{line}");
            assert!(
                entry["eventId"].is_string() && entry["image"].is_string(),
                "{line}"
            );
            assert_eq!(
                entry["logging.googleapis.com/trace"], "105445aa7843bc8bf206b12000100000",
                "{line}"
            );
        }
    }
    assert_eq!(decision_lines, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_deliveries_in_flight_ride_out_a_registry_restart() {
    let mut stack = Stack::start(&[]).await;
    let host = stack.registry.host();
    let mut images = vec![stack.image.clone()];
    for n in 0..9 {
        let repository = format!("{host}/fast-feedback/app-{n}");
        crate::support::seed(stack._work.path(), &repository, "1.0.0", &[], None);
        images.push(format!("{repository}:1.0.0"));
    }
    let url = format!("{}/", stack.service.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let deliveries: Vec<_> = images
        .iter()
        .map(|image| {
            let request =
                Message::binary_cloudevent("test-passed", test_passed(image)).wrapped_push();
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut builder = client.post(url).body(request.body.clone());
                for (name, value) in &request.headers {
                    builder = builder.header(name.as_str(), value.as_str());
                }
                let response = builder.send().await.expect("an answer");
                let status = response.status().as_u16();
                (
                    status,
                    response
                        .json::<serde_json::Value>()
                        .await
                        .unwrap_or_default(),
                )
            })
        })
        .collect();
    // Once the deliveries are writing their records, the registry goes away for 1.5 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stack.registry.requests("PUT", "/v2/fast-feedback/") == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        stack.registry.requests("PUT", "/v2/fast-feedback/") > 0,
        "the deliveries never reached the registry"
    );
    stack.registry.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.registry.restart();
    let mut answers = Vec::new();
    for delivery in deliveries {
        answers.push(delivery.await.expect("delivery task"));
    }
    // The fault hit deliveries in flight: some of their requests were served after the restart.
    let log = stack.registry.log();
    let after_restart = log
        .rsplit_once("listening on")
        .map(|(_, after)| after.matches("response completed").count())
        .unwrap_or_default();
    assert!(
        after_restart > 0,
        "no delivery was in flight across the restart"
    );
    for (image, (status, body)) in images.iter().zip(&answers) {
        assert_eq!(
            (*status, body["decision"].clone()),
            (200, json!("promoted")),
            "{image}: the retries did not ride out the restart: {body}"
        );
        let destination = image.replace("/fast-feedback/", "/extended-test/");
        assert_eq!(
            skopeo_raw(&destination, None),
            skopeo_raw(image, None),
            "{destination} is not the same bytes"
        );
    }
}
