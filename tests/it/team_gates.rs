//! Gates teams use (docs/rules.md): declared test suites, a soak that completes itself, freeze
//! windows and stop-the-line freezes, verified approvals, Cloud Build triggers — end to end on
//! the real registry with `promoter serve`, decided by the events their senders send.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::google::OidcIssuer;
use crate::support::harness::{Harness, decision};
use crate::support::service::{Message, ServiceProcess, http_binary};
use crate::support::{Promoter, skopeo_raw, stderr};

/// A rules file of the three stages, with `extra` lines appended and the prod promotion's
/// gate lines given.
fn rules_with(prod_gate: &str, extra: &str) -> String {
    format!(
        "stages:\n  - name: fast-feedback\n    registry: REGISTRY_HOST\n  - name: extended-test\n    registry: REGISTRY_HOST\n  - name: prod\n    registry: REGISTRY_HOST\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n    block_on: [test-failed]\n  - from: extended-test\n    to: prod\n{prod_gate}{extra}"
    )
}

/// Runs `reconcile` (as Cloud Scheduler sends it) until it promotes something or `deadline`.
async fn reconcile_until_promoted(harness: &Harness, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let request = harness.authorized(Message::manual("reconcile", json!({})).wrapped_push());
        let (status, body) = harness.service.post(&request).await;
        assert_eq!(
            (status, body["decision"].clone()),
            (200, json!("reconciled")),
            "{body}"
        );
        if body["promoted"].as_array().is_some_and(|p| !p.is_empty()) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "reconcile never promoted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The record promoter wrote under `tag` of `repository`.
fn record(repository: &str, tag: &str) -> Value {
    let manifest = skopeo_raw(&format!("{repository}:{tag}"), None)
        .unwrap_or_else(|| panic!("{repository}:{tag} is missing"));
    let manifest: Value = serde_json::from_slice(&manifest).expect("json");
    serde_json::from_str(
        manifest["annotations"]["dev.promoter.record"]
            .as_str()
            .expect("a promoter record"),
    )
    .expect("record json")
}

fn time_of(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

/// When promoter recorded `image:tag`'s promotion into prod.
fn promoted_at(harness: &Harness, image: &str, tag: &str) -> chrono::DateTime<chrono::Utc> {
    let digest = harness.digest(image, tag).replace(':', "-");
    time_of(
        &record(
            &harness.repository("prod", image),
            &format!("{digest}.p2p.promoted"),
        )["time"],
    )
}

/// When `image:tag` arrived in extended-test, as promoter recorded it: promoter put it there,
/// so its promotion record says when.
fn arrived_at(harness: &Harness, image: &str, tag: &str) -> chrono::DateTime<chrono::Utc> {
    let digest = harness.digest(image, tag).replace(':', "-");
    time_of(
        &record(
            &harness.repository("extended-test", image),
            &format!("{digest}.p2p.promoted"),
        )["time"],
    )
}

// ---- declared signals ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_declared_suites_and_a_clear_gate_prod_in_every_arrival_order() {
    let rules = rules_with(
        "    require: [functional-tests-passed, nft-passed, alert-clear]\n    block_on: [alert-firing, test-failed]\n",
        "signals: [functional-tests-passed, nft-passed]\n",
    );
    let mut harness = Harness::start(Some(rules)).await;
    let events = [
        "com.acme.functional-tests-passed",
        "nft-passed",
        "alert-clear",
    ];
    let orders: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (n, order) in orders.iter().enumerate() {
        let image = format!("suite-{n}");
        harness.arrive(&image, "1.0.0").await;
        for (step, &event) in order.iter().enumerate() {
            let answer = if events[event] == "alert-clear" {
                harness.alert(&image, "alert-clear").await
            } else {
                harness.signal(events[event], &image, "1.0.0").await
            };
            let last = step == order.len() - 1;
            let expected = match (last, events[event]) {
                (true, _) => "promoted",
                // A clear with nothing waiting ready still finds the digest waiting.
                (false, _) => "pending",
            };
            assert_eq!(
                decision(&answer),
                expected,
                "order {order:?}, step {step}: {answer:?}"
            );
        }
        assert_eq!(
            harness.held("prod", &image, "1.0.0"),
            Some(harness.digest(&image, "1.0.0")),
            "order {order:?}"
        );
    }
    // An event of a type nobody declared is not a signal.
    let (status, body) = harness
        .signal("security-scan-passed", "suite-0", "1.0.0")
        .await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("ignored")),
        "{body}"
    );
    // status names the declared signals it saw.
    let promoter = harness.cli();
    let output = promoter
        .run(&[
            "status",
            &format!("{}:1.0.0", harness.repository("extended-test", "suite-0")),
            "--output",
            "json",
        ])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let kinds: Vec<&str> = report["stages"][1]["signals"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["type"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        kinds.contains(&"functional-tests-passed") && kinds.contains(&"nft-passed"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_a_gate_stops_start_up_and_rules_check_naming_the_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    let text = rules_with(
        "    require: [nft-pased, alert-clear]\n",
        "signals: [nft-passed]\n",
    )
    .replace("REGISTRY_HOST", "registry.example");
    std::fs::write(&path, text).expect("rules");
    let check = Promoter::new()
        .run(&["rules", "check", path.to_str().expect("path")])
        .await;
    assert_eq!(check.status.code(), Some(1));
    let message = stderr(&check);
    assert!(
        message.contains("line 15")
            && message.contains("nft-pased")
            && message.contains("nft-passed"),
        "{message}"
    );
    let serve = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
        .arg("serve")
        .env_clear()
        .env("PROMOTER_CONFIG", &path)
        .env("PORT", "0")
        .output()
        .expect("promoter serve runs");
    assert_eq!(serve.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&serve.stderr).contains("line 15"),
        "{}",
        String::from_utf8_lossy(&serve.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_check_prints_soak_freezes_approvers_and_triggers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rules.yaml");
    let text = rules_with(
        "    require: [nft-passed, approved]\n    block_on: [alert-firing, test-failed]\n    soak: 24h\n    approvers: [\"alice@acme.com\", \"*@sre.acme.com\"]\n",
        "signals: [nft-passed]\nfreezes:\n  - name: weekend\n    into: [prod]\n    cron: \"0 17 * * FRI\"\n    duration: 64h\n    timezone: Europe/London\ncloud_build:\n  - trigger: nft-suite\n    on_success: nft-passed\n    on_failure: test-failed\n",
    )
    .replace("REGISTRY_HOST", "registry.example");
    std::fs::write(&path, text).expect("rules");
    let check = Promoter::new()
        .run(&["rules", "check", path.to_str().expect("path")])
        .await;
    assert!(check.status.success(), "{}", stderr(&check));
    let printed = String::from_utf8_lossy(&check.stdout);
    for expected in [
        "soak:              1d clear of alerts",
        "approvers:         alice@acme.com, *@sre.acme.com",
        "frozen by:         weekend",
        "weekend: opens at \"0 17 * * FRI\" (Europe/London) for 2d16h, into prod",
        "nft-suite: SUCCESS -> nft-passed, FAILURE/TIMEOUT -> test-failed",
        "signals: nft-passed",
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in:\n{printed}"
        );
    }
}

// ---- soak ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_is_met_by_time_alone_and_promoted_by_reconcile() {
    let rules = rules_with(
        "    require: []\n    block_on: [alert-firing, test-failed]\n    soak: 2s\n",
        "",
    );
    let mut harness = Harness::start(Some(rules)).await;
    harness.arrive("app", "1.0.0").await;
    let answer = reconcile_until_promoted(&harness, Duration::from_secs(30)).await;
    assert_eq!(
        answer["promoted"],
        json!([format!("{}:1.0.0", harness.repository("prod", "app"))])
    );
    let soaked = promoted_at(&harness, "app", "1.0.0") - arrived_at(&harness, "app", "1.0.0");
    assert!(
        soaked >= chrono::Duration::seconds(2),
        "promoted after {soaked} of soak"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_that_fires_and_clears_during_the_soak_restarts_its_clock() {
    let rules = rules_with(
        "    require: []\n    block_on: [alert-firing, test-failed]\n    soak: 3s\n",
        "",
    );
    let mut harness = Harness::start(Some(rules)).await;
    harness.arrive("app", "1.0.0").await;
    assert_eq!(
        decision(&harness.alert("app", "alert-firing").await),
        "recorded"
    );
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "pending", "{clear:?}");
    let restarted_until = time_of(&clear.1["not_before"]);
    // status shows the clock: running since the clear, met at the answer's not_before.
    let promoter = harness.cli();
    let output = promoter
        .run(&[
            "status",
            &format!("{}:1.0.0", harness.repository("extended-test", "app")),
            "--output",
            "json",
        ])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let soak = report["gates"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["to"] == "prod"))
        .map(|g| g["soak"].clone())
        .unwrap_or_default();
    assert_eq!(soak["state"], "running", "{report}");
    assert_eq!(time_of(&soak["met_at"]), restarted_until, "{report}");
    let answer = reconcile_until_promoted(&harness, Duration::from_secs(30)).await;
    assert!(!answer["promoted"].as_array().is_some_and(Vec::is_empty));
    let at = promoted_at(&harness, "app", "1.0.0");
    assert!(
        at >= restarted_until,
        "promoted at {at}, before the restarted soak ended at {restarted_until}"
    );
    assert!(
        restarted_until - arrived_at(&harness, "app", "1.0.0") > chrono::Duration::seconds(3),
        "the clock did not restart at the clear"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_firing_when_the_soak_would_end_keeps_it_pending() {
    let rules = rules_with(
        "    require: []\n    block_on: [test-failed]\n    soak: 2s\n",
        "",
    );
    let mut harness = Harness::start(Some(rules)).await;
    harness.arrive("app", "1.0.0").await;
    let met_at = arrived_at(&harness, "app", "1.0.0") + chrono::Duration::seconds(2);
    // Nothing reconciles until the soak's time has come; then an alert fires.
    while chrono::Utc::now() < met_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        decision(&harness.alert("app", "alert-firing").await),
        "recorded"
    );
    let request = harness.authorized(Message::manual("reconcile", json!({})).wrapped_push());
    let (_, body) = harness.service.post(&request).await;
    assert_eq!(body["decision"], "reconciled", "{body}");
    assert_eq!(body["promoted"], json!([]), "{body}");
    assert_eq!(body["waiting"], 1, "{body}");
    assert!(harness.held("prod", "app", "1.0.0").is_none());
}

// ---- freezes ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_open_now_holds_the_promotion_and_its_end_releases_it_at_the_next_reconcile() {
    use chrono::Timelike as _;
    // A window in London time that opened at the start of this minute and ends 10 s from now.
    let london: chrono_tz::Tz = "Europe/London".parse().expect("a zone");
    let now = chrono::Utc::now().with_timezone(&london);
    let elapsed = now.second() as i64;
    let cron = format!("{} {} * * *", now.minute(), now.hour());
    let rules = rules_with(
        "    require: [soak-complete]\n",
        &format!(
            "freezes:\n  - name: release-window\n    into: [extended-test]\n    cron: \"{cron}\"\n    duration: {}s\n    timezone: Europe/London\n",
            elapsed + 10
        ),
    );
    let opened = now
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("a minute");
    let until = opened.with_timezone(&chrono::Utc) + chrono::Duration::seconds(elapsed + 10);
    let mut harness = Harness::start(Some(rules)).await;
    harness.push("app", "1.0.0");
    let held = harness.test_passed("app", "1.0.0").await;
    assert_eq!(decision(&held), "pending", "{held:?}");
    assert_eq!(held.1["frozen"]["name"], "release-window", "{held:?}");
    assert_eq!(time_of(&held.1["frozen"]["until"]), until, "{held:?}");
    assert!(harness.held("extended-test", "app", "1.0.0").is_none());
    reconcile_until_promoted(&harness, Duration::from_secs(30)).await;
    assert!(chrono::Utc::now() >= until);
    assert_eq!(
        harness.held("extended-test", "app", "1.0.0"),
        Some(harness.digest("app", "1.0.0"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_holds_prod_and_its_unfreeze_releases_at_once() {
    let mut harness = Harness::start(None).await;
    harness.arrive("app", "1.0.0").await;
    let freeze = harness
        .post(
            "freeze",
            json!({"stage": "prod", "reason": "incident INC-42"}),
        )
        .await;
    assert_eq!(decision(&freeze), "recorded", "{freeze:?}");
    assert_eq!(decision(&harness.soak("app", "1.0.0").await), "pending");
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "pending", "{clear:?}");
    assert_eq!(clear.1["frozen"]["reason"], "incident INC-42", "{clear:?}");
    assert!(clear.1["frozen"]["until"].is_null(), "{clear:?}");
    assert!(harness.held("prod", "app", "1.0.0").is_none());
    let unfreeze = harness.post("unfreeze", json!({"stage": "prod"})).await;
    assert_eq!(decision(&unfreeze), "promoted", "{unfreeze:?}");
    assert_eq!(
        unfreeze.1["promoted"],
        json!([format!("{}:1.0.0", harness.repository("prod", "app"))])
    );
    assert_eq!(
        harness.held("prod", "app", "1.0.0"),
        Some(harness.digest("app", "1.0.0"))
    );
    // A freeze of a stage the pipeline does not have is refused, naming the stages.
    let (status, body) = harness.post("freeze", json!({"stage": "production"})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains("prod")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_recording_a_freeze_and_an_unfreeze_at_once_lose_neither() {
    let mut harness = Harness::start(None).await;
    let second = ServiceProcess::start(&harness.environment()).await;
    let log = |harness: &Harness| {
        crate::support::list_tags(&format!(
            "{}/promoter-state/freezes/prod",
            harness.registry.host()
        ))
    };
    let at = |offset_ms: i64| {
        (chrono::Utc::now() + chrono::Duration::milliseconds(offset_ms))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // A freeze and the unfreeze that follows it, sent to two instances at the same moment: both
    // are recorded and the later one, by its time, is the state.
    let freeze = http_binary(
        "freeze",
        json!({"stage": "prod", "reason": "change freeze"}),
    )
    .with_header("ce-time", &at(0));
    let unfreeze = http_binary("unfreeze", json!({"stage": "prod"})).with_header("ce-time", &at(5));
    let (a, b) = tokio::join!(harness.service.post(&freeze), second.post(&unfreeze));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    let tags = log(&harness);
    assert!(
        tags.iter().any(|t| t.starts_with("freeze."))
            && tags.iter().any(|t| t.starts_with("unfreeze.")),
        "both records must survive: {tags:?}"
    );
    harness.arrive("app", "1.0.0").await;
    assert_eq!(decision(&harness.soak("app", "1.0.0").await), "pending");
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(
        decision(&clear),
        "promoted",
        "the unfreeze came last: {clear:?}"
    );

    // The other way round: an unfreeze and a later freeze. Prod ends frozen, whichever instance
    // wrote last.
    let unfreeze = http_binary("unfreeze", json!({"stage": "prod"})).with_header("ce-time", &at(0));
    let freeze = http_binary(
        "freeze",
        json!({"stage": "prod", "reason": "second freeze"}),
    )
    .with_header("ce-time", &at(5));
    let (a, b) = tokio::join!(harness.service.post(&unfreeze), second.post(&freeze));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    harness.arrive("app", "2.0.0").await;
    let soak = harness.soak("app", "2.0.0").await;
    assert_eq!(decision(&soak), "pending", "{soak:?}");
    assert_eq!(soak.1["frozen"]["reason"], "second freeze", "{soak:?}");
}

// ---- approvals ---------------------------------------------------------------------------------

const AUDIENCE: &str = "https://promoter-test.a.run.app/";
const PUSHER: &str = "p2p-push@test-project.iam.gserviceaccount.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_verified_approver_the_promotion_names_counts() {
    let keys = tempfile::tempdir().expect("temp dir");
    let google = OidcIssuer::new(keys.path(), "google-key-1");
    let forger = OidcIssuer::new(keys.path(), "google-key-1");
    let jwks = google.serve_jwks().await;
    let rules = rules_with(
        "    require: [soak-complete, approved]\n    block_on: [test-failed]\n    approvers: [\"alice@acme.com\", \"*@sre.acme.com\"]\n",
        "",
    );
    let mut harness = Harness::start_with(
        Some(rules),
        &[
            ("PROMOTER_PUSH_AUTH", "verify".to_owned()),
            ("PROMOTER_PUSH_AUDIENCE", AUDIENCE.to_owned()),
            ("PROMOTER_PUSH_SERVICE_ACCOUNTS", PUSHER.to_owned()),
            ("PROMOTER_JWKS_URL", jwks),
        ],
    )
    .await;
    harness.token = Some(google.mint(AUDIENCE, PUSHER, 3600));
    for image in ["app", "other"] {
        harness.arrive(image, "1.0.0").await;
        assert_eq!(decision(&harness.soak(image, "1.0.0").await), "pending");
    }
    let reference = |image: &str| format!("{}:1.0.0", harness.repository("extended-test", image));
    let approve = |image: String, token: String| {
        let url = harness.service.url.clone();
        async move {
            Promoter::new()
                .run(&["approve", &image, "--service", &url, "--token", &token])
                .await
        }
    };
    let status_of = |image: String| {
        let promoter = harness.cli();
        async move {
            let output = promoter.run(&["status", &image, "--output", "json"]).await;
            assert!(output.status.success(), "{}", stderr(&output));
            let report: Value = serde_json::from_slice(&output.stdout).expect("json");
            report["gates"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["to"] == "prod").cloned())
                .unwrap_or_default()
        }
    };

    // Refused at the door: a forged token and an expired one.
    for token in [
        forger.mint(AUDIENCE, "alice@acme.com", 3600),
        google.mint(AUDIENCE, "alice@acme.com", -600),
    ] {
        let output = approve(reference("app"), token).await;
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        assert!(stderr(&output).contains("401"), "{}", stderr(&output));
    }
    // A verified approver the promotion does not name.
    let eve = approve(
        reference("app"),
        google.mint(AUDIENCE, "eve@acme.com", 3600),
    )
    .await;
    assert!(eve.status.success(), "{}", stderr(&eve));
    let gate = status_of(reference("app")).await;
    assert_eq!(gate["state"], "pending", "{gate}");
    assert!(
        gate["detail"]
            .as_str()
            .is_some_and(|d| d.contains("eve@acme.com")),
        "{gate}"
    );
    // An approval through Pub/Sub has no verified approver.
    let pushed = harness.authorized(
        Message::binary_cloudevent("approved", json!({"image": reference("other")})).wrapped_push(),
    );
    let (status, body) = harness.service.post(&pushed).await;
    assert_eq!(
        (status, body["decision"].clone()),
        (200, json!("pending")),
        "{body}"
    );
    let gate = status_of(reference("other")).await;
    assert!(
        gate["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no verified approver")),
        "{gate}"
    );
    assert!(harness.held("prod", "other", "1.0.0").is_none());
    // Someone of the SRE domain, verified: it counts.
    let sre = approve(
        reference("app"),
        google.mint(AUDIENCE, "bob@sre.acme.com", 3600),
    )
    .await;
    assert!(sre.status.success(), "{}", stderr(&sre));
    let answer: Value = serde_json::from_slice(&sre.stdout).expect("the service's answer");
    assert_eq!(answer["decision"], "promoted", "{answer}");
    let events = harness.prod_announcements("app", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    // The promotion record names the approver's event; no token reached the log.
    let digest = harness.digest("app", "1.0.0").replace(':', "-");
    let promoted = record(
        &harness.repository("prod", "app"),
        &format!("{digest}.p2p.promoted"),
    );
    assert!(
        promoted["evidence"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["type"] == "approved")),
        "{promoted}"
    );
    let log = harness.service.log();
    assert!(!log.contains("eyJ"), "a token reached the log");
}

// ---- Cloud Build -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_of_a_mapped_trigger_are_its_signals_and_others_keep_the_default() {
    let rules = rules_with(
        "    require: [nft-passed, alert-clear]\n    block_on: [alert-firing, test-failed]\n",
        "signals: [nft-passed]\ncloud_build:\n  - trigger: nft-suite\n    on_success: nft-passed\n    on_failure: test-failed\n",
    );
    let mut harness = Harness::start(Some(rules)).await;
    for image in ["passes", "fails", "times-out"] {
        harness.arrive(image, "1.0.0").await;
    }
    // Cloud Build's notification (Pub/Sub topic cloud-builds): attributes buildId and status,
    // data the Build resource with the trigger's name among the substitutions.
    let build = |image: &str, status: &str, trigger: &str| {
        let name = format!("{}:1.0.0", harness.repository("extended-test", image));
        let id = format!("{:08x}-5f1e-4a5b-9d7e-0c1f2a3b4c5d", rand::random::<u32>());
        let data = json!({
            "id": id, "projectId": "test-project", "status": status,
            "buildTriggerId": "0f1e2d3c-trigger", "substitutions": {"TRIGGER_NAME": trigger, "REPO_NAME": "app"},
            "finishTime": "2026-11-26T03:58:00.000Z",
            "results": {"images": if status == "SUCCESS" { json!([{"name": name, "digest": harness.digest(image, "1.0.0")}]) } else { json!([]) }},
            "images": [name],
        });
        harness.authorized(
            Message {
                id: format!("5{}", rand::random::<u32>()),
                attributes: [("buildId", id.as_str()), ("status", status)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                data: data.to_string().into_bytes(),
            }
            .wrapped_push(),
        )
    };
    let (_, passed) = harness
        .service
        .post(&build("passes", "SUCCESS", "nft-suite"))
        .await;
    assert_eq!(passed["decision"], "pending", "{passed}");
    assert_eq!(
        passed["missing"],
        json!(["alert-clear"]),
        "nft-passed recorded: {passed}"
    );
    for (image, status) in [("fails", "FAILURE"), ("times-out", "TIMEOUT")] {
        let (_, failed) = harness
            .service
            .post(&build(image, status, "nft-suite"))
            .await;
        assert_eq!(failed["decision"], "recorded", "{image}: {failed}");
        assert!(
            failed["skipped"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("test-failed")),
            "{image}: {failed}"
        );
    }
    // A build of a trigger the rules do not list: SUCCESS is test-passed, as always.
    let (_, other) = harness
        .service
        .post(&build("passes", "SUCCESS", "unit-tests"))
        .await;
    assert_eq!(other["decision"], "recorded", "{other}");
    assert!(
        other["reason"]
            .as_str()
            .is_some_and(|r| r.contains("test-passed")),
        "{other}"
    );
    let (_, failed_other) = harness
        .service
        .post(&build("passes", "FAILURE", "unit-tests"))
        .await;
    assert_eq!(failed_other["decision"], "ignored", "{failed_other}");
    // The clear promotes only the one whose suite passed.
    for image in ["passes", "fails", "times-out"] {
        let answer = harness.alert(image, "alert-clear").await;
        let expected = if image == "passes" {
            "promoted"
        } else {
            "recorded"
        };
        assert_eq!(decision(&answer), expected, "{image}: {answer:?}");
    }
}
