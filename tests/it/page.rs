//! The pipeline page in a real browser: Debian's chromium, driven by Playwright
//! (`tests/browser/check-page.mjs`), against `promoter serve` on the real registry with a
//! pipeline in several states. It checks what a person would see and saves a screenshot
//! (`target/browser/pipeline.png`; the README's `docs/pipeline.png` is one of these).

use crate::pipeline_view::pipeline_in_several_states;
use crate::support::repo_root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_each_image_what_waits_and_why_in_chromium() {
    let harness = pipeline_in_several_states().await;
    let browser_tests = repo_root().join("tests/browser");
    assert!(
        browser_tests.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (scripts/test does)"
    );
    let screenshot = repo_root().join("target/browser/pipeline.png");
    std::fs::create_dir_all(screenshot.parent().expect("a folder")).expect("screenshot folder");
    let _ = std::fs::remove_file(&screenshot);
    let output = tokio::process::Command::new("node")
        .arg(browser_tests.join("check-page.mjs"))
        .arg(format!("{}/", harness.service.url))
        .arg(&screenshot)
        .current_dir(&browser_tests)
        .output()
        .await
        .expect("node runs (apt-get install nodejs)");
    assert!(
        output.status.success(),
        "in chromium:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is not a PNG"
    );
}
