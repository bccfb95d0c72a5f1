//! The pipeline page (`GET /` for browsers) and its JSON (`GET /api/pipeline`): the pipeline
//! view of `promote::view`, rendered server-side with askama into one self-contained HTML page
//! — no scripts, no external assets, refreshing itself with a `<meta http-equiv="refresh">` — so it
//! works on a locked-down network and without JavaScript.

use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::promote::view::{PipelineView, short_digest};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 30;

/// How long one reading of the pipeline serves every page and API request.
const VIEW_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The latest pipeline view, shared by every request for a few seconds: a page open in many
/// browsers costs the registry one reading per few seconds, not one per browser.
#[derive(Default)]
pub struct ViewCache {
    latest: tokio::sync::Mutex<Option<(std::time::Instant, std::sync::Arc<PipelineView>)>>,
}

impl ViewCache {
    /// The view, read again when the one held is older than a few seconds.
    pub async fn get(
        &self,
        service: &crate::promote::Service,
    ) -> Result<std::sync::Arc<PipelineView>, crate::promote::PromoteError> {
        let mut latest = self.latest.lock().await;
        if let Some((at, view)) = latest.as_ref()
            && at.elapsed() < VIEW_FRESH_FOR
        {
            return Ok(view.clone());
        }
        let view = std::sync::Arc::new(service.pipeline_view().await?);
        *latest = Some((std::time::Instant::now(), view.clone()));
        Ok(view)
    }
}

#[derive(Template)]
#[template(path = "pipeline.html")]
struct PipelinePage {
    refresh_seconds: u32,
    generated: String,
    generated_iso: String,
    stages: Vec<String>,
    columns: usize,
    images: Vec<ImageRow>,
}

struct ImageRow {
    name: String,
    /// For the row's `id`: the name with `/` made safe.
    anchor: String,
    cells: Vec<CellText>,
    waiting: Vec<WaitingText>,
    promotions: Vec<PromotionText>,
}

struct CellText {
    stage: String,
    tag: Option<String>,
    digest: String,
    short_digest: Option<String>,
    arrived: String,
    arrived_iso: String,
}

struct WaitingText {
    label: String,
    stage: String,
    to_stage: String,
    /// The state as a word (also its CSS class, so colour is never the only signal).
    state: String,
    state_text: String,
    reason: String,
}

struct PromotionText {
    time: String,
    time_iso: String,
    label: String,
    from_stage: String,
    to_stage: String,
    trigger: String,
    copy: Option<String>,
}

fn human(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn iso(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A version as people name it: its tag, else the start of its digest.
fn label(tag: Option<&str>, digest: &str) -> String {
    match tag {
        Some(tag) => format!("{tag} ({})", short_digest(digest)),
        None => short_digest(digest),
    }
}

fn state_text(state: &str) -> &'static str {
    match state {
        "pending" => "waiting",
        "blocked" => "blocked",
        "frozen" => "frozen",
        "superseded" => "superseded",
        "skipped" => "skipped",
        "open" => "open",
        "promoted" => "promoted",
        _ => "unknown",
    }
}

/// The page for `view`.
pub fn render(view: &PipelineView) -> Result<String, askama::Error> {
    let images = view
        .images
        .iter()
        .map(|image| ImageRow {
            name: image.name.clone(),
            anchor: image.name.replace('/', "--"),
            cells: image
                .stages
                .iter()
                .map(|cell| CellText {
                    stage: cell.stage.clone(),
                    tag: cell.tag.clone(),
                    digest: cell.digest.clone().unwrap_or_default(),
                    short_digest: cell.short_digest(),
                    arrived: cell.arrived_at.map(human).unwrap_or_default(),
                    arrived_iso: cell.arrived_at.map(iso).unwrap_or_default(),
                })
                .collect(),
            waiting: image
                .waiting
                .iter()
                .map(|wait| WaitingText {
                    label: label(wait.tag.as_deref(), &wait.digest),
                    stage: wait.stage.clone(),
                    to_stage: wait.to_stage.clone(),
                    state: wait.state.clone(),
                    state_text: state_text(&wait.state).to_owned(),
                    reason: wait.reason.clone(),
                })
                .collect(),
            promotions: image
                .promotions
                .iter()
                .map(|promotion| PromotionText {
                    time: human(promotion.time),
                    time_iso: iso(promotion.time),
                    label: label(promotion.tag.as_deref(), &promotion.digest),
                    from_stage: promotion.from_stage.clone(),
                    to_stage: promotion.to_stage.clone(),
                    trigger: promotion.trigger.clone(),
                    copy: promotion.copy.as_ref().map(|copy| {
                        format!(
                            "{} blobs: {} copied, {} mounted; {} bytes; {} ms",
                            copy.blobs_total,
                            copy.blobs_copied,
                            copy.blobs_mounted,
                            copy.bytes_copied,
                            copy.duration_ms
                        )
                    }),
                })
                .collect(),
        })
        .collect();
    PipelinePage {
        refresh_seconds: REFRESH_SECONDS,
        generated: human(view.generated_at),
        generated_iso: iso(view.generated_at),
        columns: view.stages.len() + 1,
        stages: view.stages.clone(),
        images,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promote::view::{Cell, ImageView, WaitingView};

    fn at(minute: u32) -> DateTime<Utc> {
        use chrono::TimeZone as _;
        Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn the_page_escapes_what_it_shows_and_names_states_in_words() {
        let view = PipelineView {
            generated_at: at(0),
            stages: vec!["fast-feedback".into(), "prod".into()],
            images: vec![ImageView {
                name: "team/app".into(),
                stages: vec![
                    Cell {
                        stage: "fast-feedback".into(),
                        tag: Some("1.2.4".into()),
                        digest: Some(format!("sha256:{}", "ab".repeat(32))),
                        arrived_at: Some(at(1)),
                    },
                    Cell {
                        stage: "prod".into(),
                        tag: None,
                        digest: None,
                        arrived_at: None,
                    },
                ],
                waiting: vec![WaitingView {
                    stage: "fast-feedback".into(),
                    to_stage: "prod".into(),
                    tag: Some("1.2.4".into()),
                    digest: format!("sha256:{}", "ab".repeat(32)),
                    state: "pending".into(),
                    reason: "waiting for <script>alert-clear</script>".into(),
                    missing: vec!["alert-clear".into()],
                    not_before: None,
                    blocked_since: None,
                    frozen: None,
                    soak_started_at: None,
                    soak_met_at: None,
                    superseded_by: None,
                }],
                promotions: vec![],
            }],
        };
        let page = render(&view).expect("renders");
        assert!(page.contains("<th scope=\"row\">team/app</th>"), "{page}");
        assert!(page.contains("abababababab"), "{page}");
        assert!(page.contains("nothing yet"), "{page}");
        assert!(page.contains(">waiting</span>"), "{page}");
        assert!(!page.contains("<script>"), "unescaped: {page}");
        assert!(page.contains("&#60;script&#62;"), "{page}");
    }
}
