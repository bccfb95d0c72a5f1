//! Reading the rules file (docs/rules.md).
//!
//! serde-saphyr deserializes into raw, span-carrying structs (unknown fields denied, duplicate
//! keys refused), then `Builder` turns them into a `Pipeline`, reporting the first problem with
//! the line of the offending value.

use serde::Deserialize;
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::error::{Origin, RulesError};
use super::model::{Builder, FreezeInput, Pipeline, PromotionInput, Sourced, TriggerInput};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    stages: Spanned<Vec<Spanned<RawStage>>>,
    promotions: Spanned<Vec<Spanned<RawPromotion>>>,
    #[serde(default)]
    images: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    signals: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    freezes: Option<Spanned<Vec<Spanned<RawFreeze>>>>,
    #[serde(default)]
    cloud_build: Option<Spanned<Vec<Spanned<RawTrigger>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    name: Spanned<String>,
    #[serde(default)]
    into: Option<Spanned<Vec<Spanned<String>>>>,
    cron: Spanned<String>,
    duration: Spanned<String>,
    #[serde(default)]
    timezone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    trigger: Spanned<String>,
    #[serde(default)]
    on_success: Option<Spanned<String>>,
    #[serde(default)]
    on_failure: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: Spanned<String>,
    registry: Spanned<String>,
    #[serde(default)]
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPromotion {
    from: Spanned<String>,
    to: Spanned<String>,
    require: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    block_on: Option<Spanned<Vec<Spanned<String>>>>,
    // Read as text even when YAML sees a number (`30`), so the message can say a unit is missing.
    #[serde(default)]
    min_time_in_stage: Option<Spanned<String>>,
    #[serde(default)]
    soak: Option<Spanned<String>>,
    #[serde(default)]
    select: Option<Spanned<String>>,
    #[serde(default)]
    approvers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The line of `location`, or the field's path when the parser could not tell (line 0).
fn origin(location: &Location, field: impl FnOnce() -> String) -> Origin {
    match location.line() {
        0 => Origin::Field(field()),
        line => Origin::Line(line),
    }
}

fn sourced<'a>(value: &'a Spanned<String>, field: impl FnOnce() -> String) -> Sourced<'a> {
    Sourced {
        value: &value.value,
        at: origin(&value.referenced, field),
    }
}

fn signal_list<'a>(
    items: &'a Spanned<Vec<Spanned<String>>>,
    promotion: usize,
    name: &str,
) -> Vec<Sourced<'a>> {
    items
        .value
        .iter()
        .enumerate()
        .map(|(j, item)| sourced(item, || format!("promotions[{promotion}].{name}[{j}]")))
        .collect()
}

/// An optional list of strings, each with where it came from.
fn strings<'a>(
    items: &'a Option<Spanned<Vec<Spanned<String>>>>,
    field: &dyn Fn(usize) -> String,
) -> Vec<Sourced<'a>> {
    items
        .as_ref()
        .map(|items| {
            items
                .value
                .iter()
                .enumerate()
                .map(|(j, item)| sourced(item, || field(j)))
                .collect()
        })
        .unwrap_or_default()
}

fn syntax_error(error: &serde_saphyr::Error) -> RulesError {
    let at = match error.location() {
        Some(location) if location.line() > 0 => Origin::Line(location.line()),
        _ => Origin::File,
    };
    let message = serde_saphyr::DefaultMessageFormatter.format_message(error.without_snippet());
    // The message may quote the file's own text; keep it on one line for logs.
    let message: String = message
        .chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect();
    RulesError::Syntax { at, message }
}

impl Pipeline {
    /// The pipeline a rules file describes, or the first problem in it, with its line.
    pub fn from_yaml(text: &str) -> Result<Pipeline, RulesError> {
        // The parser would say "unexpected end of input at line 1", which hides the likelier
        // cause: an empty or commented-out file (a ConfigMap or secret mounted empty).
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(RulesError::Syntax {
                at: Origin::File,
                message: "the rules file is empty: it needs stages and promotions".to_owned(),
            });
        }
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e))?;
        let mut builder = Builder::default();
        for (i, stage) in raw.stages.value.iter().enumerate() {
            let field = |name: &str| format!("stages[{i}].{name}");
            builder.stage(
                sourced(&stage.value.name, || field("name")),
                sourced(&stage.value.registry, || field("registry")),
                stage
                    .value
                    .path
                    .as_ref()
                    .map(|p| sourced(p, || field("path"))),
                origin(&stage.referenced, || format!("stages[{i}]")),
            )?;
        }
        builder.signals(&strings(&raw.signals, &|j| format!("signals[{j}]")))?;
        for (i, freeze) in raw.freezes.iter().flat_map(|f| f.value.iter()).enumerate() {
            let field = |name: &str| format!("freezes[{i}].{name}");
            let f = &freeze.value;
            builder.freeze(FreezeInput {
                name: sourced(&f.name, || field("name")),
                into: strings(&f.into, &|j| format!("freezes[{i}].into[{j}]")),
                cron: sourced(&f.cron, || field("cron")),
                duration: sourced(&f.duration, || field("duration")),
                timezone: f
                    .timezone
                    .as_ref()
                    .map(|t| sourced(t, || field("timezone"))),
            })?;
        }
        for (i, trigger) in raw
            .cloud_build
            .iter()
            .flat_map(|t| t.value.iter())
            .enumerate()
        {
            let field = |name: &str| format!("cloud_build[{i}].{name}");
            let t = &trigger.value;
            builder.trigger(TriggerInput {
                trigger: sourced(&t.trigger, || field("trigger")),
                on_success: t
                    .on_success
                    .as_ref()
                    .map(|s| sourced(s, || field("on_success"))),
                on_failure: t
                    .on_failure
                    .as_ref()
                    .map(|s| sourced(s, || field("on_failure"))),
            })?;
        }
        for (i, promotion) in raw.promotions.value.iter().enumerate() {
            let field = |name: &str| format!("promotions[{i}].{name}");
            let p = &promotion.value;
            let list = |items, name| signal_list(items, i, name);
            builder.promotion(PromotionInput {
                from: sourced(&p.from, || field("from")),
                to: sourced(&p.to, || field("to")),
                require: list(&p.require, "require"),
                require_at: origin(&p.require.referenced, || field("require")),
                block_on: p
                    .block_on
                    .as_ref()
                    .map(|b| list(b, "block_on"))
                    .unwrap_or_default(),
                min_time_in_stage: p
                    .min_time_in_stage
                    .as_ref()
                    .map(|m| sourced(m, || field("min_time_in_stage"))),
                soak: p.soak.as_ref().map(|s| sourced(s, || field("soak"))),
                select: p.select.as_ref().map(|s| sourced(s, || field("select"))),
                approvers: strings(&p.approvers, &|j| format!("promotions[{i}].approvers[{j}]")),
                at: origin(&promotion.referenced, || format!("promotions[{i}]")),
            })?;
        }
        let images = raw.images.as_ref().map(|images| {
            let items = images
                .value
                .iter()
                .enumerate()
                .map(|(i, glob)| sourced(glob, || format!("images[{i}]")))
                .collect();
            (items, origin(&images.referenced, || "images".to_owned()))
        });
        builder.finish(
            images,
            origin(&raw.stages.referenced, || "stages".to_owned()),
            origin(&raw.promotions.referenced, || "promotions".to_owned()),
        )
    }
}
