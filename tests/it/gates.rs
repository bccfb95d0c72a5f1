//! Alert-based promotion after soak (issue 4): multi-signal gates decided from records in the real
//! registry, in every order signals really arrive, concurrently, and from Cloud Monitoring.

use std::time::Duration;

use serde_json::json;

use crate::service::Stack;
use crate::support::service::{Message, PushRequest, ServiceProcess, http_binary};
use crate::support::{Promoter, assert_same_bytes, skopeo_raw, stderr};

/// A stack whose image was promoted into extended-test by a test-passed event.
async fn soaking(extra_env: &[(&str, String)]) -> Stack {
    let mut stack = Stack::start(extra_env).await;
    let (status, body) = stack
        .service
        .post(&http_binary("test-passed", json!({"image": stack.image})))
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    stack.expect_promoted_event().await;
    stack
}

impl Stack {
    fn prod(&self) -> String {
        format!("{}/prod/my-app", self.registry.host())
    }

    async fn signal(&self, event_type: &str, data: serde_json::Value) -> (u16, serde_json::Value) {
        self.service.post(&http_binary(event_type, data)).await
    }

    async fn soak_complete(&self) -> (u16, serde_json::Value) {
        self.signal(
            "soak-complete",
            json!({"image": format!("{}:1.2.4", self.extended_test())}),
        )
        .await
    }

    /// Alert signals name the repository in the stage, without a version.
    async fn alert(&self, state: &str) -> (u16, serde_json::Value) {
        self.signal(state, json!({"image": self.extended_test()}))
            .await
    }

    fn in_prod(&self) -> bool {
        skopeo_raw(&format!("{}:1.2.4", self.prod()), None).is_some()
    }

    fn assert_in_prod(&self) {
        assert_same_bytes(
            &self.extended_test(),
            &self.prod(),
            &["1.2.4".into(), self.seeded.signature_tag()],
            None,
        );
    }
}

fn decision(answer: &(u16, serde_json::Value)) -> String {
    assert!(answer.0 == 200 || answer.0 == 422, "{answer:?}");
    answer.1["decision"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_then_clear_promotes_to_prod() {
    let stack = soaking(&[]).await;
    let soak = stack.soak_complete().await;
    assert_eq!(decision(&soak), "pending");
    assert_eq!(soak.1["missing"], json!(["alert-clear"]), "{soak:?}");
    assert!(!stack.in_prod());
    let clear = stack.alert("alert-clear").await;
    assert_eq!(decision(&clear), "promoted", "{clear:?}");
    assert_eq!(clear.1["to_stage"], "prod");
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_then_soak_promotes_to_prod() {
    let stack = soaking(&[]).await;
    // The digest promoted into extended-test waits there; the clear finds it missing its soak.
    let clear = stack.alert("alert-clear").await;
    assert_eq!(decision(&clear), "pending", "{clear:?}");
    assert_eq!(clear.1["missing"], json!(["soak-complete"]), "{clear:?}");
    assert!(!stack.in_prod());
    assert_eq!(decision(&stack.soak_complete().await), "promoted");
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firing_then_soak_then_clear_promotes_only_after_the_clear() {
    let stack = soaking(&[]).await;
    assert_eq!(decision(&stack.alert("alert-firing").await), "recorded");
    let soak = stack.soak_complete().await;
    assert_eq!(decision(&soak), "pending", "{soak:?}");
    assert!(
        soak.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("alert-firing")),
        "{soak:?}"
    );
    assert!(!stack.in_prod());
    // No pause: a clear within the same second as the firing still comes after it.
    assert_eq!(decision(&stack.alert("alert-clear").await), "promoted");
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_then_firing_blocks_then_clear_promotes() {
    let stack = soaking(&[]).await;
    assert_eq!(decision(&stack.soak_complete().await), "pending");
    assert_eq!(decision(&stack.alert("alert-firing").await), "recorded");
    assert!(!stack.in_prod());
    assert_eq!(decision(&stack.alert("alert-clear").await), "promoted");
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_test_blocks_the_digest_for_good() {
    let stack = soaking(&[]).await;
    let failed = stack
        .signal(
            "test-failed",
            json!({"image": format!("{}:1.2.4", stack.extended_test())}),
        )
        .await;
    assert_eq!(decision(&failed), "recorded");
    // The digest can never move, so it no longer waits: the answer lists it as skipped, and an
    // alert clearing later finds nothing waiting.
    assert!(
        failed.1["skipped"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("test-failed")),
        "{failed:?}"
    );
    let clear = stack.alert("alert-clear").await;
    assert_eq!(decision(&clear), "recorded", "{clear:?}");
    let soak = stack.soak_complete().await;
    assert_eq!(
        soak.0, 422,
        "a direct caller is told the rules refused it: {soak:?}"
    );
    assert!(
        soak.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("test-failed")),
        "{soak:?}"
    );
    assert!(!stack.in_prod());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimum_time_in_stage_holds_then_releases() {
    let rules = tempfile::NamedTempFile::new().expect("rules file");
    let stack_registry_placeholder = "REGISTRY_HOST";
    let text = format!(
        "stages:\n  - name: fast-feedback\n    registry: {stack_registry_placeholder}\n  - name: extended-test\n    registry: {stack_registry_placeholder}\n  - name: prod\n    registry: {stack_registry_placeholder}\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n  - from: extended-test\n    to: prod\n    require: [soak-complete, alert-clear]\n    block_on: [alert-firing, test-failed]\n    min_time_in_stage: 4s\n"
    );
    // The registry's port is only known once it runs: the stack writes the file through a hook.
    let stack = Stack::start_with_rules(&text, rules.path()).await;
    let (status, body) = stack
        .service
        .post(&http_binary("test-passed", json!({"image": stack.image})))
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    assert_eq!(decision(&stack.soak_complete().await), "pending");
    let early = stack.alert("alert-clear").await;
    assert_eq!(decision(&early), "pending", "{early:?}");
    assert!(early.1["not_before"].is_string(), "{early:?}");
    assert!(!stack.in_prod());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(decision(&stack.alert("alert-clear").await), "promoted");
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_never_in_extended_test_cannot_go_to_prod() {
    let stack = Stack::start(&[]).await;
    // The image exists in fast-feedback only: a soak-complete naming it in extended-test is refused.
    let soak = stack.soak_complete().await;
    assert_eq!(soak.0, 422, "{soak:?}");
    assert!(
        soak.1["reason"]
            .as_str()
            .is_some_and(|r| r.contains("extended-test")),
        "{soak:?}"
    );
    assert_eq!(decision(&stack.alert("alert-clear").await), "recorded");
    assert!(!stack.in_prod());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signals_are_all_recorded_and_promote_once() {
    let mut stack = soaking(&[]).await;
    let second = ServiceProcess::start(&stack.environment()).await;
    let mut requests = Vec::new();
    for n in 0..6 {
        requests.push(http_binary(
            "soak-complete",
            json!({"image": format!("{}:1.2.4", stack.extended_test())}),
        ));
        if n % 2 == 0 {
            requests.push(http_binary(
                "alert-clear",
                json!({"image": stack.extended_test()}),
            ));
        }
    }
    let answers = futures::future::join_all(requests.iter().enumerate().map(|(n, r)| {
        if n % 2 == 0 {
            stack.service.post(r)
        } else {
            second.post(r)
        }
    }))
    .await;
    for answer in &answers {
        assert_eq!(answer.0, 200, "{answer:?}");
    }
    assert!(
        answers.iter().any(|a| a.1["decision"] == "promoted"),
        "{answers:?}"
    );
    stack.assert_in_prod();
    // Every signal survived: each soak is its own record, none overwrote another; the alert
    // state is the clears' (the older clears are compacted away once a later one stands).
    let tags = crate::support::list_tags(&stack.extended_test());
    let soaks = tags
        .iter()
        .filter(|t| t.contains(".p2p.soak-complete."))
        .count();
    assert_eq!(soaks, 6, "{tags:?}");
    let alerts = crate::support::list_tags(&format!(
        "{}/promoter-state/alerts/extended-test/my-app",
        stack.registry.host()
    ));
    assert!(
        !alerts.is_empty() && alerts.iter().all(|t| t.starts_with("alert-clear.")),
        "{alerts:?}"
    );
    let events = stack.promotions.drain(Duration::from_secs(3)).await;
    let prod_ids: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|e| {
            e.attributes
                .get("ce-subject")
                .is_some_and(|s| s.contains("/prod/"))
        })
        .filter_map(|e| e.attributes.get("ce-id").cloned())
        .collect();
    assert_eq!(prod_ids.len(), 1, "{events:?}");
    let prod_tag_writes = stack
        .registry
        .succeeded("PUT", "/v2/prod/my-app/manifests/1.2.4");
    assert!(
        (1..=2).contains(&prod_tag_writes),
        "one copy per instance at most: {prod_tag_writes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_monitoring_incidents_gate_the_prod_promotion() {
    let stack = soaking(&[]).await;
    assert_eq!(decision(&stack.soak_complete().await), "pending");
    let incident = |state: &str, started: i64, ended: Option<i64>| {
        // Schema 1.2, as a Monitoring Pub/Sub notification channel sends it (no attributes).
        let data = json!({
            "version": "1.2",
            "incident": {
                "incident_id": "0.nbw9oe8kmyzr", "scoping_project_id": "test-project", "scoping_project_number": 12345,
                "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.nbw9oe8kmyzr?project=test-project",
                "started_at": started, "ended_at": ended, "state": state,
                "summary": "Error rate for my-app in extended-test is above the threshold.",
                "apigee_url": "", "observed_value": "0.2", "resource": {"type": "cloud_run_revision", "labels": {"service_name": "my-app"}},
                "resource_type_display_name": "Cloud Run Revision", "resource_id": "", "resource_display_name": "my-app",
                "resource_name": "projects/test-project/locations/europe-west2/services/my-app",
                "metric": {"type": "run.googleapis.com/request_count", "displayName": "Request Count", "labels": {}},
                "metadata": {"system_labels": {}, "user_labels": {}},
                "policy_name": "projects/test-project/alertPolicies/1234567890",
                "policy_user_labels": {"promoter_image": "my-app", "promoter_stage": "extended-test"},
                "documentation": {"content": "", "mime_type": "text/markdown", "subject": "", "links": []},
                "condition": {"name": "projects/test-project/alertPolicies/1234567890/conditions/1", "displayName": "error rate"},
                "condition_name": "error rate", "threshold_value": "0.1",
            }
        });
        Message {
            id: format!("9{}", rand::random::<u32>()),
            attributes: Default::default(),
            data: data.to_string().into_bytes(),
        }
        .wrapped_push()
    };
    let now = chrono::Utc::now().timestamp();
    let test_notification = PushRequest {
        headers: vec![("content-type".into(), "application/json".into())],
        body: json!({"version": "test", "incident": {"incident_id": "12345", "state": "OPEN", "started_at": 0, "policy_name": "projects/test-project/alertPolicies/123", "summary": "This is a test"}}).to_string().into_bytes(),
    };
    let (status, body) = stack.service.post(&test_notification).await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("ignored")),
        "{body}"
    );

    let (status, body) = stack.service.post(&incident("open", now, None)).await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("recorded")),
        "{body}"
    );
    assert!(!stack.in_prod());
    let (status, body) = stack
        .service
        .post(&incident("closed", now, Some(now + 2)))
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("promoted")),
        "{body}"
    );
    stack.assert_in_prod();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_stages_signals_and_gates() {
    let stack = soaking(&[]).await;
    assert_eq!(decision(&stack.soak_complete().await), "pending");
    let output = Promoter::new()
        .env("REGISTRY", stack.registry.host())
        .run(&[
            "status",
            &format!("{}:1.2.4", stack.extended_test()),
            "--output",
            "json",
        ])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["digest"], stack.seeded.digest);
    let holds: Vec<_> = report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .map(|s| (s["stage"].clone(), s["holds_digest"].clone()))
        .collect();
    assert_eq!(
        holds,
        vec![
            (json!("fast-feedback"), json!(true)),
            (json!("extended-test"), json!(true)),
            (json!("prod"), json!(false))
        ]
    );
    let gates = report["gates"].as_array().expect("gates");
    assert_eq!(gates[0]["state"], "done");
    assert_eq!(gates[1]["state"], "pending");
    assert_eq!(gates[1]["missing"], json!(["alert-clear"]));
    let signals = report["stages"][1]["signals"].as_array().expect("signals");
    assert!(
        signals.iter().any(|s| s["type"] == "soak-complete"
            && s["event_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("event-"))),
        "{signals:?}"
    );

    let text = Promoter::new()
        .env("REGISTRY", stack.registry.host())
        .run(&["status", &format!("{}:1.2.4", stack.extended_test())])
        .await;
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(
        table.contains("extended-test -> prod") && table.contains("alert-clear"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_files_are_checked_with_the_line_of_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "stages:\n  - name: fast-feedback\n    registry: europe-west2-docker.pkg.dev/dev-proj/tenant/acme\n  - name: extended-test\n    registry: europe-west2-docker.pkg.dev/dev-proj/tenant/acme\n  - name: prod\n    registry: europe-west2-docker.pkg.dev/prod-proj/tenant/acme\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n  - from: extended-test\n    to: prod\n    require: [soak-complete, alert-clear]\n    block_on: [alert-firing, test-failed]\n    min_time_in_stage: 30m\nimages: [\"my-*\"]\n").expect("write");
    let output = Promoter::new()
        .run(&["rules", "check", good.to_str().expect("path")])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("europe-west2-docker.pkg.dev/prod-proj/tenant/acme/prod")
            && printed.contains("30m"),
        "{printed}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "stages:\n  - name: fast-feedback\n    registry: r.example/acme\npromotions:\n  - from: fast-feedback\n    to: prod\n    require: [test-passed]\n").expect("write");
    let output = Promoter::new()
        .run(&["rules", "check", bad.to_str().expect("path")])
        .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("line 6") && stderr(&output).contains("prod"),
        "{}",
        stderr(&output)
    );

    // The service refuses to start on it, naming the line.
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("serve")
        .env_clear()
        .env("PROMOTER_CONFIG", &bad)
        .env("PORT", crate::support::free_port().to_string())
        .output()
        .expect("promoter serve runs");
    assert_eq!(serve.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("line 6"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_on_another_registry_gets_the_same_digest_streamed_across() {
    let prod_registry = crate::support::Registry::start(crate::support::Auth::None);
    let stack = soaking(&[("PROD_REGISTRY", prod_registry.host())]).await;
    assert_eq!(decision(&stack.soak_complete().await), "pending");
    let clear = stack.alert("alert-clear").await;
    assert_eq!(decision(&clear), "promoted", "{clear:?}");
    assert!(
        clear.1["copy"]["blobs_copied"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{clear:?}"
    );
    let prod = format!("{}/prod/my-app", prod_registry.host());
    assert_same_bytes(
        &stack.extended_test(),
        &prod,
        &["1.2.4".into(), stack.seeded.signature_tag()],
        None,
    );
    // The promotion is recorded in prod's own registry, where prod's gates would read it.
    let tags = crate::support::list_tags(&prod);
    assert!(
        tags.iter().any(|t| t.ends_with(".p2p.promoted")),
        "{tags:?}"
    );
    assert!(
        !stack.in_prod(),
        "nothing went to the first registry's prod"
    );
}
