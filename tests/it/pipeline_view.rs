//! The pipeline view (docs/routes.md): `GET /api/pipeline`, the page's HTML, and `promoter
//! status` without an argument and with an image's name, on a pipeline with several images,
//! versions and states — checked field by field, not as a snapshot of times.

use serde_json::{Value, json};

use crate::support::harness::{Harness, decision};
use crate::support::stderr;

/// Four images in the states a page must tell apart:
/// - `app`: 1.0.0 in prod; 1.1.0 in extended-test, waiting for its soak;
/// - `api`: 2.0.0 soaked in extended-test while an alert fires (blocked);
/// - `svc`: 3.0.0 soaked and clear, but prod is frozen;
/// - `web`: 4.0.0 failed its tests in fast-feedback.
pub async fn pipeline_in_several_states() -> Harness {
    let mut harness = Harness::start(None).await;
    harness.arrive("app", "1.0.0").await;
    assert_eq!(decision(&harness.soak("app", "1.0.0").await), "pending");
    assert_eq!(
        decision(&harness.alert("app", "alert-clear").await),
        "promoted"
    );
    harness.arrive("app", "1.1.0").await;

    harness.arrive("api", "2.0.0").await;
    assert_eq!(
        decision(&harness.alert("api", "alert-firing").await),
        "recorded"
    );
    assert_eq!(decision(&harness.soak("api", "2.0.0").await), "pending");

    harness.arrive("svc", "3.0.0").await;
    assert_eq!(
        decision(
            &harness
                .post(
                    "freeze",
                    json!({"stage": "prod", "reason": "quarter-end freeze"})
                )
                .await
        ),
        "recorded"
    );
    assert_eq!(
        decision(&harness.alert("svc", "alert-clear").await),
        "pending"
    );
    assert_eq!(decision(&harness.soak("svc", "3.0.0").await), "pending");

    harness.push("web", "4.0.0");
    let failed = harness
        .post(
            "test-failed",
            json!({"image": format!("{}:4.0.0", harness.repository("fast-feedback", "web"))}),
        )
        .await;
    assert_eq!(decision(&failed), "recorded", "{failed:?}");
    harness
}

fn image<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["images"]
        .as_array()
        .and_then(|images| images.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("{name} is not in the view: {view}"))
}

fn cell<'a>(image: &'a Value, stage: &str) -> &'a Value {
    image["stages"]
        .as_array()
        .and_then(|cells| cells.iter().find(|c| c["stage"] == stage))
        .unwrap_or_else(|| panic!("no {stage} cell: {image}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_json_shows_every_image_its_stages_what_waits_and_its_promotions() {
    let harness = pipeline_in_several_states().await;
    let response = harness
        .service
        .http
        .get(format!("{}/api/pipeline", harness.service.url))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 200);
    let view: Value = response.json().await.expect("json");

    assert_eq!(
        view["stages"],
        json!(["fast-feedback", "extended-test", "prod"])
    );
    let names: Vec<&str> = view["images"]
        .as_array()
        .map(|i| i.iter().filter_map(|i| i["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["api", "app", "svc", "web"], "{view}");
    assert!(view["generated_at"].is_string());

    let app = image(&view, "app");
    assert_eq!(cell(app, "fast-feedback")["tag"], "1.1.0", "{app}");
    assert_eq!(cell(app, "extended-test")["tag"], "1.1.0", "{app}");
    assert_eq!(
        cell(app, "extended-test")["digest"],
        harness.digest("app", "1.1.0")
    );
    assert_eq!(cell(app, "prod")["tag"], "1.0.0", "{app}");
    assert_eq!(cell(app, "prod")["digest"], harness.digest("app", "1.0.0"));
    assert!(cell(app, "prod")["arrived_at"].is_string(), "{app}");
    let waiting = app["waiting"].as_array().expect("waiting");
    assert_eq!(waiting.len(), 1, "{app}");
    assert_eq!(waiting[0]["tag"], "1.1.0");
    assert_eq!(waiting[0]["stage"], "extended-test");
    assert_eq!(waiting[0]["to_stage"], "prod");
    assert_eq!(waiting[0]["state"], "pending");
    assert_eq!(waiting[0]["missing"], json!(["soak-complete"]));
    // Newest first: 1.1.0 into extended-test, 1.0.0 into prod, 1.0.0 into extended-test.
    let promotions: Vec<(String, String, String)> = app["promotions"]
        .as_array()
        .expect("promotions")
        .iter()
        .map(|p| {
            (
                p["tag"].as_str().unwrap_or_default().to_owned(),
                p["from_stage"].as_str().unwrap_or_default().to_owned(),
                p["to_stage"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        promotions,
        vec![
            (
                "1.1.0".into(),
                "fast-feedback".into(),
                "extended-test".into()
            ),
            ("1.0.0".into(), "extended-test".into(), "prod".into()),
            (
                "1.0.0".into(),
                "fast-feedback".into(),
                "extended-test".into()
            ),
        ],
        "{app}"
    );
    let to_prod = &app["promotions"][1];
    assert_eq!(to_prod["trigger"], "alert-clear", "{to_prod}");
    assert!(
        to_prod["copy"]["blobs_total"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{to_prod}"
    );

    let api = image(&view, "api");
    let blocked = &api["waiting"][0];
    assert_eq!(blocked["state"], "blocked", "{api}");
    assert!(blocked["blocked_since"].is_string(), "{api}");
    assert!(cell(api, "prod")["digest"].is_null(), "{api}");

    let svc = image(&view, "svc");
    let frozen = &svc["waiting"][0];
    assert_eq!(frozen["state"], "frozen", "{svc}");
    assert_eq!(frozen["frozen"]["reason"], "quarter-end freeze", "{svc}");

    let web = image(&view, "web");
    assert_eq!(cell(web, "fast-feedback")["tag"], "4.0.0", "{web}");
    assert!(cell(web, "extended-test")["digest"].is_null(), "{web}");
    assert_eq!(
        web["waiting"],
        json!([]),
        "a failed version waits for nothing: {web}"
    );

    // The page: HTML for a browser, with the same content.
    let page = harness
        .service
        .http
        .get(format!("{}/", harness.service.url))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .expect("an answer");
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        page.headers()
    );
    let html = page.text().await.expect("html");
    for expected in [
        "<th scope=\"row\">app</th>",
        "quarter-end freeze",
        "waiting for soak-complete",
        "http-equiv=\"refresh\"",
    ] {
        assert!(html.contains(expected), "missing {expected:?}");
    }
    assert!(!html.contains("<script"), "the page needs no script");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_whole_pipeline_and_every_version_of_one_image() {
    let harness = pipeline_in_several_states().await;
    let promoter = harness.cli();
    let overview = promoter.run(&["status"]).await;
    assert!(overview.status.success(), "{}", stderr(&overview));
    let text = String::from_utf8_lossy(&overview.stdout);
    let app_row = text
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap_or_else(|| panic!("no row for app:\n{text}"));
    assert!(
        app_row.contains("1.1.0") && app_row.contains("1.0.0"),
        "{text}"
    );
    assert!(text.contains("WAITING"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("api:2.0.0") && l.contains("blocked")),
        "{text}"
    );
    let json = promoter.run(&["status", "--output", "json"]).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let view: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(view["images"].as_array().map(Vec::len), Some(4), "{view}");

    let app = promoter.run(&["status", "app"]).await;
    assert!(app.status.success(), "{}", stderr(&app));
    let text = String::from_utf8_lossy(&app.stdout);
    let extended_test = text
        .split("\nextended-test\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .unwrap_or_else(|| panic!("no extended-test section:\n{text}"));
    assert!(
        extended_test.contains("1.0.0") && extended_test.contains("1.1.0"),
        "both versions in extended-test:\n{text}"
    );
    let json = promoter.run(&["status", "app", "--output", "json"]).await;
    assert!(json.status.success(), "{}", stderr(&json));
    let versions: Value = serde_json::from_slice(&json.stdout).expect("json");
    let tags: Vec<&str> = versions["versions"]["extended-test"]
        .as_array()
        .map(|v| v.iter().filter_map(|e| e["tag"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(tags, vec!["1.1.0", "1.0.0"], "newest first: {versions}");
}
