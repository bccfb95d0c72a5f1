//! Decisions over a real repository's history (docs/rules.md): several versions of one image in
//! one stage — waiting, deleted by a cleanup policy, failed — each decided on its own; the newest
//! moves and the stage never steps back to an older version; time gates fire through
//! `reconcile` alone; a promotion that could not be announced is retried, never refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::harness::{Harness, decision, rules};
use crate::support::pubsub::PubSubFake;
use crate::support::service::{Message, ServiceProcess};
use crate::support::{Auth, Promoter, Registry, seed, skopeo_raw, stderr};

/// The tags named in an answer's `skipped` or `superseded` list.
fn listed(answer: &(u16, Value), list: &str) -> Vec<String> {
    let mut tags: Vec<String> = answer.1[list]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["tag"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

/// Three versions waiting in extended-test while an alert fires, all soaked.
async fn three_waiting(rules_text: Option<String>) -> Harness {
    let mut harness = Harness::start(rules_text).await;
    for tag in ["1.0.0", "1.1.0", "1.2.0"] {
        harness.arrive("app", tag).await;
    }
    assert_eq!(
        decision(&harness.alert("app", "alert-firing").await),
        "recorded"
    );
    for tag in ["1.0.0", "1.1.0", "1.2.0"] {
        let soak = harness.soak("app", tag).await;
        assert_eq!(decision(&soak), "pending", "{soak:?}");
        assert!(
            soak.1["reason"]
                .as_str()
                .is_some_and(|r| r.contains("alert-firing")),
            "{soak:?}"
        );
    }
    harness
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clear_moves_only_the_newest_of_three_waiting_versions() {
    let mut harness = three_waiting(None).await;
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(
        (clear.0, decision(&clear)),
        (200, "promoted".to_owned()),
        "{clear:?}"
    );
    assert_eq!(clear.1["digest"], harness.digest("app", "1.2.0"));
    assert_eq!(
        listed(&clear, "superseded"),
        vec!["1.0.0", "1.1.0"],
        "{clear:?}"
    );
    assert_eq!(
        harness.held("prod", "app", "1.2.0"),
        Some(harness.digest("app", "1.2.0"))
    );
    for older in ["1.0.0", "1.1.0"] {
        assert_eq!(
            harness.held("prod", "app", older),
            None,
            "{older} reached prod"
        );
    }
    let announced = harness.prod_announcements("app", 1).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["digest"], harness.digest("app", "1.2.0"));

    // The older versions stopped waiting: a later clear decides nothing, and says so.
    let again = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&again), "recorded", "{again:?}");
    // A late soak for an older version is refused: prod already holds a newer one.
    let late = harness.soak("app", "1.0.0").await;
    assert_eq!(late.0, 422, "{late:?}");
    assert_eq!(listed(&late, "superseded"), vec!["1.0.0"], "{late:?}");

    // status shows it as superseded.
    let output = Promoter::new()
        .env("REGISTRY", harness.registry.host())
        .run(&[
            "status",
            &format!("{}:1.0.0", harness.repository("extended-test", "app")),
            "--output",
            "json",
        ])
        .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    let to_prod = report["gates"]
        .as_array()
        .and_then(|gates| gates.iter().find(|g| g["to"] == "prod"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(to_prod["state"], "superseded", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_version_among_the_waiting_is_skipped_and_never_blocks_the_others() {
    let mut harness = three_waiting(None).await;
    harness.delete("extended-test", "app", "1.0.0").await;
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "promoted", "{clear:?}");
    assert_eq!(clear.1["digest"], harness.digest("app", "1.2.0"));
    assert_eq!(listed(&clear, "skipped"), vec!["1.0.0"], "{clear:?}");
    assert!(
        clear.1["skipped"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no longer in stage")),
        "{clear:?}"
    );
    assert_eq!(listed(&clear, "superseded"), vec!["1.1.0"], "{clear:?}");
    assert_eq!(
        harness.held("prod", "app", "1.2.0"),
        Some(harness.digest("app", "1.2.0"))
    );
    assert_eq!(harness.prod_announcements("app", 1).await.len(), 1);
    // Nothing is left stuck behind the deleted version.
    let again = harness.alert("app", "alert-clear").await;
    assert_eq!(
        (again.0, decision(&again)),
        (200, "recorded".to_owned()),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_newest_is_deleted_or_failed_the_next_newest_moves() {
    let mut harness = three_waiting(None).await;
    harness.delete("extended-test", "app", "1.2.0").await;
    let failed = harness.failed("app", "1.1.0").await;
    assert_eq!(decision(&failed), "recorded", "{failed:?}");
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "promoted", "{clear:?}");
    assert_eq!(clear.1["digest"], harness.digest("app", "1.0.0"));
    assert_eq!(listed(&clear, "skipped"), vec!["1.2.0"], "{clear:?}");
    assert_eq!(
        harness.held("prod", "app", "1.0.0"),
        Some(harness.digest("app", "1.0.0"))
    );
    assert_eq!(
        harness.held("prod", "app", "1.1.0"),
        None,
        "a failed version reached prod"
    );
    let announced = harness.prod_announcements("app", 1).await;
    assert_eq!(announced.len(), 1, "{announced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_all_promotes_every_open_version_oldest_first() {
    let mut harness = three_waiting(Some(rules("    select: all\n"))).await;
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "promoted", "{clear:?}");
    assert!(clear.1["superseded"].is_null(), "{clear:?}");
    for tag in ["1.0.0", "1.1.0", "1.2.0"] {
        assert_eq!(
            harness.held("prod", "app", tag),
            Some(harness.digest("app", tag))
        );
    }
    let announced = harness.prod_announcements("app", 3).await;
    let order: Vec<Value> = announced.iter().map(|a| a["digest"].clone()).collect();
    assert_eq!(
        order,
        vec![
            json!(harness.digest("app", "1.0.0")),
            json!(harness.digest("app", "1.1.0")),
            json!(harness.digest("app", "1.2.0"))
        ],
        "announced in the order they entered extended-test: {announced:?}"
    );
}

/// One event of the two-version model below.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    SoakOld,
    SoakNew,
    FailNew,
    Clear,
}

/// What the rules of docs/rules.md say prod should receive, event by event, for two versions
/// (old entered extended-test before new) that start waiting behind a firing alert.
fn model(order: &[Step]) -> Vec<&'static str> {
    let (mut soaked_old, mut soaked_new, mut failed_new, mut clear) = (false, false, false, false);
    let mut prod: Vec<&'static str> = Vec::new();
    let newest_in_prod = |prod: &[&str]| prod.contains(&"new");
    for step in order {
        match step {
            Step::SoakOld => {
                soaked_old = true;
                if clear && !prod.contains(&"old") && !newest_in_prod(&prod) {
                    prod.push("old");
                }
            }
            Step::SoakNew => {
                soaked_new = true;
                if clear && !failed_new && !prod.contains(&"new") {
                    prod.push("new");
                }
            }
            Step::FailNew => failed_new = true,
            Step::Clear => {
                clear = true;
                let open_old = soaked_old && !prod.contains(&"old") && !newest_in_prod(&prod);
                let open_new = soaked_new && !failed_new && !prod.contains(&"new");
                // The newest open one moves; the older is superseded by it.
                if open_new {
                    prod.push("new");
                } else if open_old {
                    prod.push("old");
                }
            }
        }
    }
    prod
}

fn permutations(steps: &[Step]) -> Vec<Vec<Step>> {
    if steps.len() <= 1 {
        return vec![steps.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..steps.len() {
        let mut rest = steps.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_of_soaks_a_failure_and_a_clear_across_two_versions() {
    use futures::StreamExt as _;
    let mut harness = Harness::start(None).await;
    let orders = permutations(&[Step::SoakOld, Step::SoakNew, Step::FailNew, Step::Clear]);
    assert_eq!(orders.len(), 24);
    // One image per order, all on one service: each order is its own history.
    for (n, _) in orders.iter().enumerate() {
        let image = format!("app-{n}");
        harness.arrive(&image, "1.0.0").await;
        harness.arrive(&image, "2.0.0").await;
        assert_eq!(
            decision(&harness.alert(&image, "alert-firing").await),
            "recorded"
        );
    }
    // The orders play side by side (each one's events one after the other).
    let harness_ref = &harness;
    futures::stream::iter(orders.iter().enumerate())
        .for_each_concurrent(4, |(n, order)| async move {
            let image = format!("app-{n}");
            for step in order {
                let answer = match step {
                    Step::SoakOld => harness_ref.soak(&image, "1.0.0").await,
                    Step::SoakNew => harness_ref.soak(&image, "2.0.0").await,
                    Step::FailNew => harness_ref.failed(&image, "2.0.0").await,
                    Step::Clear => harness_ref.alert(&image, "alert-clear").await,
                };
                assert!(
                    answer.0 == 200 || answer.0 == 422,
                    "order {order:?}, step {step:?}: {answer:?}"
                );
            }
        })
        .await;

    // What prod was sent, per image, in publishing order.
    let expected_total: usize = orders.iter().map(|o| model(o).len()).sum();
    let mut sent: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    let mut received = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received < expected_total && Instant::now() < deadline {
        if let Some(event) = harness.promotions.next(Duration::from_millis(500)).await {
            record_prod(&harness, &mut sent, event, &mut received);
        }
    }
    for event in harness.promotions.drain(Duration::from_secs(1)).await {
        record_prod(&harness, &mut sent, event, &mut received);
    }
    for (n, order) in orders.iter().enumerate() {
        let image = format!("app-{n}");
        let expected: Vec<String> = model(order)
            .iter()
            .map(|v| harness.digest(&image, if *v == "old" { "1.0.0" } else { "2.0.0" }))
            .collect();
        let mut announced = sent.remove(&image).unwrap_or_default();
        announced.sort();
        let announced: Vec<String> = announced.into_iter().map(|(_, digest)| digest).collect();
        assert_eq!(announced, expected, "order {order:?}: what prod was sent");
        // Never backwards: once the new version is in prod, the old one never follows it.
        if let Some(new_at) = announced
            .iter()
            .position(|d| *d == harness.digest(&image, "2.0.0"))
        {
            assert!(
                !announced[new_at..].contains(&harness.digest(&image, "1.0.0")),
                "order {order:?}: prod went back to the old version"
            );
        }
        for (tag, version) in [("1.0.0", "old"), ("2.0.0", "new")] {
            assert_eq!(
                harness.held("prod", &image, tag).is_some(),
                model(order).contains(&version),
                "order {order:?}: prod holding {tag}"
            );
        }
    }
    assert!(
        sent.is_empty(),
        "announcements for images no order touched: {sent:?}"
    );
}

/// Files a `promoted` event into prod under its image, with the fake's message number.
fn record_prod(
    harness: &Harness,
    sent: &mut BTreeMap<String, Vec<(u64, String)>>,
    event: crate::support::pubsub::Published,
    received: &mut usize,
) {
    let prod = format!("{}/prod/", harness.registry.host());
    let Some(image) = event
        .attributes
        .get("ce-subject")
        .and_then(|s| s.strip_prefix(&prod))
        .and_then(|s| s.split(':').next())
    else {
        return;
    };
    *received += 1;
    let number = event
        .message_id
        .trim_start_matches('m')
        .parse::<u64>()
        .unwrap_or(u64::MAX);
    sent.entry(image.to_owned()).or_default().push((
        number,
        event.data["digest"].as_str().unwrap_or_default().to_owned(),
    ));
}

/// The prod gate with a minimum time in extended-test, decided by `reconcile` alone once its
/// time has come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimum_time_in_stage_is_promoted_by_reconcile_alone() {
    let mut harness = Harness::start(Some(rules("    min_time_in_stage: 3s\n"))).await;
    let digest = harness.arrive("app", "1.0.0").await;
    assert_eq!(decision(&harness.soak("app", "1.0.0").await), "pending");
    let clear = harness.alert("app", "alert-clear").await;
    assert_eq!(decision(&clear), "pending", "{clear:?}");
    let not_before: chrono::DateTime<chrono::Utc> = clear.1["not_before"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no not_before: {clear:?}"));

    // Reconcile as Cloud Scheduler sends it: a Pub/Sub message with only `ce-type`.
    let reconcile = || Message::manual("reconcile", json!({})).wrapped_push();
    let deadline = Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        let asked_at = chrono::Utc::now();
        let (status, body) = harness.service.post(&reconcile()).await;
        assert_eq!(
            (status, body["decision"].clone()),
            (200, json!("reconciled")),
            "{body}"
        );
        let promoted = body["promoted"].as_array().cloned().unwrap_or_default();
        if !promoted.is_empty() {
            break (body, promoted);
        }
        // Still waiting is only right while its time has not come.
        assert!(
            asked_at < not_before + chrono::Duration::seconds(2),
            "time came but nothing moved: {body}"
        );
        assert_eq!(body["waiting"], 1, "{body}");
        assert!(Instant::now() < deadline, "reconcile never promoted it");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let (body, refs) = promoted;
    assert_eq!(
        refs,
        vec![json!(format!(
            "{}:1.0.0",
            harness.repository("prod", "app")
        ))],
        "{body}"
    );
    assert_eq!(body["waiting"], 0, "{body}");
    assert_eq!(harness.held("prod", "app", "1.0.0"), Some(digest));
    let record = skopeo_raw(
        &format!(
            "{}:{}.p2p.promoted",
            harness.repository("prod", "app"),
            harness.digest("app", "1.0.0").replace(':', "-")
        ),
        None,
    )
    .expect("the promotion record");
    let record: Value = serde_json::from_slice(&record).expect("json");
    let recorded: Value = serde_json::from_str(
        record["annotations"]["dev.promoter.record"]
            .as_str()
            .expect("record annotation"),
    )
    .expect("record json");
    let time: chrono::DateTime<chrono::Utc> = recorded["time"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("time");
    assert!(
        time >= not_before,
        "promoted at {time}, before its time {not_before}"
    );
    assert_eq!(recorded["trigger"]["type"], "reconcile");
    assert_eq!(harness.prod_announcements("app", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promoter_reconcile_and_pull_reconcile_every_promote_what_waits_on_time() {
    let mut harness = Harness::start(Some(rules("    min_time_in_stage: 2s\n"))).await;
    harness.arrive("app", "1.0.0").await;
    harness.arrive("other", "1.0.0").await;
    for image in ["app", "other"] {
        assert_eq!(decision(&harness.soak(image, "1.0.0").await), "pending");
        assert_eq!(
            decision(&harness.alert(image, "alert-clear").await),
            "pending"
        );
    }
    // `promoter reconcile --image app`, from the command line, once its time has come.
    let promoter = harness.cli();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = promoter.run(&["reconcile", "--image", "app"]).await;
        assert!(output.status.success(), "{}", stderr(&output));
        let answer: Value = serde_json::from_slice(&output.stdout).expect("one JSON answer");
        assert_eq!(answer["decision"], "reconciled", "{answer}");
        if answer["promoted"].as_array().is_some_and(|p| !p.is_empty()) {
            // The promotion has its log line (on stderr: stdout is the answer), naming the
            // reconcile that decided it.
            let promotion_lines: Vec<Value> = String::from_utf8_lossy(&output.stderr)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|line| line["message"] == "promotion")
                .collect();
            assert_eq!(promotion_lines.len(), 1, "{}", stderr(&output));
            let line = &promotion_lines[0];
            assert_eq!(line["toStage"], "prod", "{line}");
            assert_eq!(line["eventType"], "reconcile", "{line}");
            assert!(
                line["image"]
                    .as_str()
                    .is_some_and(|i| i.ends_with("/prod/app:1.0.0")),
                "{line}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "promoter reconcile never promoted: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(harness.held("prod", "app", "1.0.0").is_some());
    assert!(
        harness.held("prod", "other", "1.0.0").is_none(),
        "--image narrows"
    );

    // `promoter pull --reconcile-every 1s` promotes the other by itself.
    use crate::support::pubsub::EVENTS_SUBSCRIPTION;
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_promoter"));
    worker
        .args([
            "pull",
            "--subscription",
            EVENTS_SUBSCRIPTION,
            "--reconcile-every",
            "1s",
        ])
        .env_clear()
        .env("HOME", harness.work.path());
    for (name, value) in harness.environment() {
        worker.env(name, value);
    }
    let mut worker = worker
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("promoter pull starts");
    // Its announcement is the last thing a promotion does: once it is out, the worker is done.
    let announced = harness.prod_announcements("other", 1).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(
        announced.len(),
        1,
        "pull --reconcile-every never promoted it"
    );
    assert!(harness.held("prod", "other", "1.0.0").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_cannot_be_announced_is_retried_never_refused() {
    // The outcome topic does not exist: publishing fails for good, after the copy.
    let registry = Registry::start(Auth::None);
    let pubsub = PubSubFake::start();
    let work = tempfile::tempdir().expect("temp dir");
    let host = registry.host();
    let seeded = seed(
        work.path(),
        &format!("{host}/fast-feedback/app"),
        "1.0.0",
        &["--sign"],
        None,
    );
    let service = ServiceProcess::start(&[
        ("REGISTRY", host.clone()),
        ("PUBSUB_EMULATOR_HOST", pubsub.host.clone()),
        (
            "PROMOTER_EVENTS_TOPIC",
            "projects/test-project/topics/no-such-topic".to_owned(),
        ),
        ("PROMOTER_PUSH_AUTH", "none".to_owned()),
    ])
    .await;
    let request = Message::binary_cloudevent(
        "test-passed",
        json!({"image": format!("{host}/fast-feedback/app:1.0.0")}),
    )
    .wrapped_push();
    for attempt in 1..=2 {
        let (status, body) = service.post(&request).await;
        assert_eq!(
            status, 503,
            "attempt {attempt}: a copied digest is never refused: {body}"
        );
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("no-such-topic")),
            "attempt {attempt}: {body}"
        );
    }
    assert_eq!(
        skopeo_raw(&format!("{host}/extended-test/app:1.0.0"), None),
        skopeo_raw(&format!("{host}/fast-feedback/app:1.0.0"), None),
        "the copy is in place"
    );
    assert_eq!(
        registry.succeeded("PUT", "/v2/extended-test/app/manifests/1.0.0"),
        1,
        "copied once over both deliveries"
    );
    let _ = seeded;
}
