//! Tests of the pipeline as a whole: the rules file, the embedded default, locating images,
//! which promotions a signal concerns, and the description. Gate verdicts are tested in `gate`.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::events::SignalKind;
use crate::registry::reference::{ReferenceError, Repository};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// docs/rules.md's first example, verbatim.
const FIRST_EXAMPLE: &str = r#"stages:
  - name: fast-feedback
    registry: europe-west2-docker.pkg.dev/dev-proj/tenant/acme
    path: fast-feedback            # default: the name
  - name: extended-test
    registry: europe-west2-docker.pkg.dev/dev-proj/tenant/acme
  - name: prod
    registry: europe-west2-docker.pkg.dev/prod-proj/tenant/acme
promotions:
  - from: fast-feedback
    to: extended-test
    require: [test-passed]
  - from: extended-test
    to: prod
    require: [soak-complete, alert-clear]
    block_on: [alert-firing, test-failed]
    min_time_in_stage: 30m         # optional
images: ["*"]                      # optional allowlist of image names (globs)
"#;

fn design() -> Pipeline {
    Pipeline::from_yaml(FIRST_EXAMPLE).expect("the first example of docs/rules.md is valid")
}

/// The error for `text`, which must be invalid.
fn yaml_error(text: &str) -> RulesError {
    match Pipeline::from_yaml(text) {
        Ok(p) => panic!("expected an error, got {p:?}"),
        Err(e) => e,
    }
}

/// A small valid file with `extra` lines appended to the second promotion.
fn two_stage(promotion_lines: &str) -> String {
    format!(
        "stages:\n  - name: a\n    registry: r.example/x\n  - name: b\n    registry: r.example/x\npromotions:\n  - from: a\n    to: b\n{promotion_lines}"
    )
}

fn line_of(error: &RulesError) -> Option<u64> {
    match error {
        RulesError::Syntax {
            at: Origin::Line(l),
            ..
        }
        | RulesError::Invalid {
            at: Origin::Line(l),
            ..
        } => Some(*l),
        _ => None,
    }
}

// ---- the rules file ----

#[test]
fn reads_the_design_example() {
    let p = design();
    let names: Vec<&str> = p.stages().iter().map(|s| s.name().as_str()).collect();
    assert_eq!(names, ["fast-feedback", "extended-test", "prod"]);
    let ff = p.stage("fast-feedback").expect("stage");
    assert_eq!(
        ff.registry(),
        "europe-west2-docker.pkg.dev/dev-proj/tenant/acme"
    );
    assert_eq!(ff.path(), "fast-feedback");
    assert_eq!(ff.host().as_str(), "europe-west2-docker.pkg.dev");
    assert_eq!(
        ff.prefix(),
        "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback"
    );
    let et = p.stage("extended-test").expect("stage");
    assert_eq!(et.path(), "extended-test", "path defaults to the name");
    let repo = et.repository("my-app").expect("valid");
    assert_eq!(
        repo.to_string(),
        "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/extended-test/my-app"
    );
    let prod = p.promotion("extended-test", "prod").expect("promotion");
    assert_eq!(
        prod.require(),
        [SignalKind::SoakComplete, SignalKind::AlertClear]
    );
    assert_eq!(
        prod.block_on(),
        [SignalKind::AlertFiring, SignalKind::TestFailed]
    );
    assert_eq!(prod.min_time_in_stage(), Some(Duration::from_secs(1800)));
    let first = p
        .promotion("fast-feedback", "extended-test")
        .expect("promotion");
    assert_eq!(first.require(), [SignalKind::TestPassed]);
    assert!(first.block_on().is_empty());
    assert_eq!(first.min_time_in_stage(), None);
    assert_eq!(p.images(), [ImageGlob::any()]);
}

#[test]
fn images_default_to_everything_and_globs_are_kept() {
    let p = Pipeline::from_yaml(&two_stage("    require: [test-passed]\n")).expect("valid");
    assert_eq!(p.images(), [ImageGlob::any()]);
    let p = Pipeline::from_yaml(&two_stage(
        "    require: [test-passed]\nimages: [\"billing-*\", api]\n",
    ))
    .expect("valid");
    assert!(p.allows("billing-api"));
    assert!(p.allows("api"));
    assert!(!p.allows("web"));
}

#[test]
fn registry_host_only_and_multi_component_paths() {
    let p = Pipeline::from_yaml(
        "stages:\n  - name: dev\n    registry: LOCALHOST:5000/\n    path: team/dev\n  - name: prod\n    registry: localhost:5000\npromotions:\n  - {from: dev, to: prod, require: [test-passed]}\n",
    )
    .expect("valid");
    let dev = p.stage("dev").expect("stage");
    assert_eq!(dev.registry(), "localhost:5000", "normalized");
    assert_eq!(dev.prefix(), "localhost:5000/team/dev");
    assert_eq!(
        p.stage("prod").expect("stage").prefix(),
        "localhost:5000/prod"
    );
}

#[test]
fn a_stage_may_have_several_promotions_out() {
    let p = Pipeline::from_yaml(
        "stages:\n  - {name: a, registry: r.example}\n  - {name: b, registry: r.example}\n  - {name: c, registry: r.example}\npromotions:\n  - {from: a, to: b, require: [test-passed]}\n  - {from: a, to: c, require: [soak-complete]}\n  - {from: c, to: a, require: [test-passed]}\n",
    )
    .expect("valid: fan-out and cycles are allowed");
    let out: Vec<&str> = p.promotions_from("a").map(|p| p.to().as_str()).collect();
    assert_eq!(out, ["b", "c"]);
}

#[test]
fn unknown_signal_names_the_line_promotion_and_choices() {
    let text = FIRST_EXAMPLE.replace(
        "require: [soak-complete, alert-clear]",
        "require: [soak-done, alert-clear]",
    );
    let e = yaml_error(&text);
    assert_eq!(
        e.to_string(),
        "rules file line 15: promotion extended-test -> prod requires unknown signal \"soak-done\" (expected one of test-passed, test-failed, soak-complete, alert-firing, alert-clear, approved; declare new signals under `signals:`)"
    );
    let e = yaml_error(&two_stage(
        "    require: [test-passed]\n    block_on:\n      - alert-fire\n",
    ));
    assert_eq!(line_of(&e), Some(11));
    assert!(
        e.to_string()
            .contains("blocks on unknown signal \"alert-fire\""),
        "{e}"
    );
}

#[test]
fn unknown_stage_in_a_promotion() {
    let e = yaml_error(&FIRST_EXAMPLE.replace("to: prod", "to: production"));
    assert_eq!(line_of(&e), Some(14));
    assert_eq!(
        e.to_string(),
        "rules file line 14: promotion extended-test -> production names unknown stage \"production\" (stages are: fast-feedback, extended-test, prod)"
    );
    let e = yaml_error(&FIRST_EXAMPLE.replace("from: fast-feedback", "from: ff"));
    assert_eq!(line_of(&e), Some(10));
}

#[test]
fn duplicate_stage_name_points_at_the_second_and_mentions_the_first() {
    let e = yaml_error(&FIRST_EXAMPLE.replace("name: prod", "name: extended-test"));
    assert_eq!(
        e.to_string(),
        "rules file line 7: stage extended-test is defined twice (first at line 5)"
    );
}

#[test]
fn duplicate_promotion() {
    let e = yaml_error(&two_stage(
        "    require: [test-passed]\n  - from: a\n    to: b\n    require: [soak-complete]\n",
    ));
    assert_eq!(line_of(&e), Some(10));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::DuplicatePromotion {
                first_line: Some(7),
                ..
            },
            ..
        }
    ));
    assert!(
        e.to_string()
            .contains("promotion a -> b is defined twice (first at line 7)")
    );
}

#[test]
fn promotion_to_itself() {
    let e = yaml_error(
        "stages:\n  - {name: a, registry: r.example}\npromotions:\n  - from: a\n    to: a\n    require: [test-passed]\n",
    );
    assert_eq!(line_of(&e), Some(5));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::SelfPromotion { .. },
            ..
        }
    ));
}

#[test]
fn empty_require_and_missing_require() {
    let e = yaml_error(&two_stage("    require: []\n"));
    assert_eq!(line_of(&e), Some(9));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::EmptyRequire { .. },
            ..
        }
    ));
    let e = yaml_error(&two_stage("    block_on: [test-failed]\n"));
    assert!(matches!(e, RulesError::Syntax { .. }), "{e:?}");
    // The parser reports a missing field inside the mapping that lacks it.
    assert!(matches!(line_of(&e), Some(7..=9)), "{e}");
    assert!(e.to_string().contains("missing field `require`"), "{e}");
}

#[test]
fn a_signal_both_required_and_blocking() {
    let e = yaml_error(&two_stage(
        "    require: [test-passed, alert-clear]\n    block_on:\n      - test-failed\n      - alert-clear\n",
    ));
    assert_eq!(line_of(&e), Some(12));
    assert_eq!(
        e.to_string(),
        "rules file line 12: promotion a -> b both requires and blocks on alert-clear: the gate could never open"
    );
}

#[test]
fn repeated_signals_are_merged() {
    let p = Pipeline::from_yaml(&two_stage("    require: [test-passed, test-passed]\n"))
        .expect("valid");
    assert_eq!(p.promotions()[0].require(), [SignalKind::TestPassed]);
}

#[test]
fn bad_registries() {
    for (registry, needle) in [
        ("acme/team", "not a registry host"),
        ("https://r.example/x", "scheme"),
        ("r.example/Upper", "invalid repository"),
        ("r.example//x", "invalid repository"),
        ("bad host.example", "invalid registry host"),
        ("\"\"", "empty"),
    ] {
        let text = format!(
            "stages:\n  - name: a\n    registry: {registry}\n  - {{name: b, registry: r.example}}\npromotions:\n  - {{from: a, to: b, require: [test-passed]}}\n"
        );
        let e = yaml_error(&text);
        assert_eq!(line_of(&e), Some(3), "{registry}: {e}");
        assert!(
            matches!(
                e,
                RulesError::Invalid {
                    problem: Problem::InvalidRegistry { .. },
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains(needle), "{registry}: {e}");
    }
}

#[test]
fn bad_paths_and_names() {
    let e = yaml_error(
        "stages:\n  - name: a\n    registry: r.example\n    path: Team/A\n  - {name: b, registry: r.example}\npromotions:\n  - {from: a, to: b, require: [test-passed]}\n",
    );
    assert_eq!(line_of(&e), Some(4));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::InvalidPath { .. },
            ..
        }
    ));
    for name in ["Prod", "-a", "a_b", "\"\""] {
        let e = yaml_error(&format!(
            "stages:\n  - registry: r.example\n    name: {name}\n  - {{name: b, registry: r.example}}\npromotions:\n  - {{from: a, to: b, require: [test-passed]}}\n"
        ));
        assert_eq!(line_of(&e), Some(3), "{name}");
        assert!(matches!(
            e,
            RulesError::Invalid {
                problem: Problem::InvalidStageName(_),
                ..
            }
        ));
    }
}

#[test]
fn two_stages_in_one_place() {
    // Same place through different spellings: default path vs explicit, host case.
    let e = yaml_error(
        "stages:\n  - {name: a, registry: r.example/x, path: shared}\n  - name: shared\n    registry: R.EXAMPLE/x\npromotions:\n  - {from: a, to: shared, require: [test-passed]}\n",
    );
    assert_eq!(line_of(&e), Some(3));
    assert_eq!(
        e.to_string(),
        "rules file line 3: stages a and shared are both at r.example/x/shared: each stage needs its own place"
    );
}

#[test]
fn unknown_fields_are_refused_with_their_line() {
    let e =
        yaml_error(&FIRST_EXAMPLE.replace("    path: fast-feedback", "    paht: fast-feedback"));
    assert_eq!(line_of(&e), Some(4));
    assert!(e.to_string().contains("unknown field `paht`"), "{e}");
    let e = yaml_error(&two_stage(
        "    require: [test-passed]\n    blockOn: [test-failed]\n",
    ));
    assert_eq!(line_of(&e), Some(10));
    let e = yaml_error(&format!("{FIRST_EXAMPLE}extra: 1\n"));
    assert_eq!(line_of(&e), Some(19));
    assert!(
        e.to_string()
            .starts_with("rules file line 19: unknown field `extra`"),
        "{e}"
    );
}

#[test]
fn bad_durations() {
    for value in ["30", "1.5h", "30 minutes", "1w", "9999d", "\"\""] {
        let e = yaml_error(&two_stage(&format!(
            "    require: [test-passed]\n    min_time_in_stage: {value}\n"
        )));
        assert_eq!(line_of(&e), Some(10), "{value}: {e}");
        assert!(
            matches!(
                e,
                RulesError::Invalid {
                    problem: Problem::InvalidDuration { .. },
                    ..
                }
            ),
            "{value}: {e:?}"
        );
    }
    for (value, secs) in [("90s", 90), ("2h", 7200), ("1d", 86_400)] {
        let p = Pipeline::from_yaml(&two_stage(&format!(
            "    require: [test-passed]\n    min_time_in_stage: {value}\n"
        )))
        .expect("valid");
        assert_eq!(
            p.promotions()[0].min_time_in_stage(),
            Some(Duration::from_secs(secs))
        );
    }
}

#[test]
fn bad_images() {
    let e = yaml_error(&two_stage("    require: [test-passed]\nimages: []\n"));
    assert_eq!(line_of(&e), Some(10));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::EmptyImages,
            ..
        }
    ));
    let e = yaml_error(&two_stage(
        "    require: [test-passed]\nimages:\n  - ok-*\n  - Bad\n",
    ));
    assert_eq!(line_of(&e), Some(12));
    assert!(matches!(
        e,
        RulesError::Invalid {
            problem: Problem::InvalidGlob { .. },
            ..
        }
    ));
}

#[test]
fn empty_lists_and_documents() {
    let e = yaml_error("stages: []\npromotions: []\n");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                problem: Problem::NoStages,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(line_of(&e), Some(1));
    let e = yaml_error("stages:\n  - {name: a, registry: r.example}\npromotions: []\n");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                problem: Problem::NoPromotions,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(line_of(&e), Some(3));
    for text in ["", "  \n# only a comment\n"] {
        assert_eq!(
            yaml_error(text).to_string(),
            "rules file: the rules file is empty: it needs stages and promotions"
        );
    }
    for text in ["stages: [\n", "- a\n- b\n", "stages: 3\n"] {
        let e = yaml_error(text);
        assert!(matches!(e, RulesError::Syntax { .. }), "{text:?}: {e:?}");
        assert!(e.to_string().starts_with("rules file"), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let e = yaml_error(&two_stage(
        "    require: [test-passed]\n    require: [soak-complete]\n",
    ));
    assert_eq!(line_of(&e), Some(10));
    assert!(matches!(e, RulesError::Syntax { .. }));
}

#[test]
fn wrong_types_are_syntax_errors_with_lines() {
    let e = yaml_error(&two_stage("    require: test-passed\n"));
    assert!(matches!(e, RulesError::Syntax { .. }), "{e:?}");
    assert_eq!(line_of(&e), Some(9));
}

// ---- the embedded default ----

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn embedded_default_from_registry_alone() {
    let p = Pipeline::embedded_default(env(&[(
        crate::config::REGISTRY,
        "europe-west2-docker.pkg.dev/dev-proj/tenant/acme",
    )]))
    .expect("valid");
    let prefixes: Vec<String> = p.stages().iter().map(Stage::prefix).collect();
    assert_eq!(
        prefixes,
        [
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback",
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/extended-test",
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/prod",
        ]
    );
    let first = p
        .promotion("fast-feedback", "extended-test")
        .expect("promotion");
    assert_eq!(first.require(), [SignalKind::TestPassed]);
    assert_eq!(first.block_on(), [SignalKind::TestFailed]);
    let second = p.promotion("extended-test", "prod").expect("promotion");
    assert_eq!(
        second.require(),
        [SignalKind::SoakComplete, SignalKind::AlertClear]
    );
    assert_eq!(
        second.block_on(),
        [SignalKind::AlertFiring, SignalKind::TestFailed]
    );
    assert_eq!(second.min_time_in_stage(), None);
    assert_eq!(p.promotions().len(), 2);
    assert_eq!(p.images(), [ImageGlob::any()]);
}

#[test]
fn embedded_default_with_every_variable() {
    let p = Pipeline::embedded_default(env(&[
        ("REGISTRY", "localhost:5000/dev"),
        ("PROD_REGISTRY", "localhost:5001"),
        ("FAST_FEEDBACK_PATH", "ff"),
        ("EXTENDED_TEST_PATH", "team/et"),
        ("PROD_PATH", "live"),
    ]))
    .expect("valid");
    let prefixes: Vec<String> = p.stages().iter().map(Stage::prefix).collect();
    assert_eq!(
        prefixes,
        [
            "localhost:5000/dev/ff",
            "localhost:5000/dev/team/et",
            "localhost:5001/live"
        ]
    );
}

#[test]
fn embedded_default_errors_name_the_variable() {
    let e = Pipeline::embedded_default(env(&[])).expect_err("REGISTRY is required");
    assert_eq!(e, RulesError::MissingEnv { name: "REGISTRY" });
    assert!(e.to_string().contains("REGISTRY is not set"), "{e}");
    assert!(e.to_string().contains("PROMOTER_CONFIG"), "{e}");
    let e = Pipeline::embedded_default(env(&[("REGISTRY", "  ")])).expect_err("empty is unset");
    assert_eq!(e, RulesError::MissingEnv { name: "REGISTRY" });

    let e = Pipeline::embedded_default(env(&[("REGISTRY", "acme")])).expect_err("bad");
    assert!(
        e.to_string()
            .starts_with("environment variable REGISTRY: registry \"acme\""),
        "{e}"
    );
    let e =
        Pipeline::embedded_default(env(&[("REGISTRY", "r.example"), ("PROD_REGISTRY", "nope")]))
            .expect_err("bad");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                at: Origin::Env("PROD_REGISTRY"),
                ..
            }
        ),
        "{e:?}"
    );
    let e = Pipeline::embedded_default(env(&[("REGISTRY", "r.example"), ("PROD_PATH", "Prod")]))
        .expect_err("bad");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                at: Origin::Env("PROD_PATH"),
                ..
            }
        ),
        "{e:?}"
    );
    // Two stages in one place: reported at the variable that sets the later stage's path.
    let e = Pipeline::embedded_default(env(&[
        ("REGISTRY", "r.example"),
        ("FAST_FEEDBACK_PATH", "extended-test"),
    ]))
    .expect_err("collision");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                at: Origin::Env("EXTENDED_TEST_PATH"),
                problem: Problem::SameLocation { .. }
            }
        ),
        "{e:?}"
    );
    // PROD_REGISTRY unset: prod shares REGISTRY, so PROD_PATH=ff collides too.
    let e = Pipeline::embedded_default(env(&[
        ("REGISTRY", "r.example"),
        ("PROD_PATH", "fast-feedback"),
    ]))
    .expect_err("collision");
    assert!(
        matches!(
            e,
            RulesError::Invalid {
                at: Origin::Env("PROD_PATH"),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn embedded_default_equals_its_rules_file() {
    let from_env =
        Pipeline::embedded_default(env(&[("REGISTRY", "r.example/acme")])).expect("valid");
    let from_file = Pipeline::from_yaml(
        "stages:\n  - {name: fast-feedback, registry: r.example/acme}\n  - {name: extended-test, registry: r.example/acme}\n  - {name: prod, registry: r.example/acme}\npromotions:\n  - {from: fast-feedback, to: extended-test, require: [test-passed], block_on: [test-failed]}\n  - {from: extended-test, to: prod, require: [soak-complete, alert-clear], block_on: [alert-firing, test-failed]}\n",
    )
    .expect("valid");
    assert_eq!(from_env, from_file);
}

// ---- locating an event's image ----

const ET: &str = "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/extended-test";

#[test]
fn locates_a_full_reference_with_tag_and_digest() {
    let p = design();
    let text = format!("{ET}/my-app:1.2.4@sha256:{HEX}");
    let l = p.locate(&text, None).expect("located");
    assert_eq!(l.stage, "extended-test");
    assert_eq!(l.image_name, "my-app");
    assert_eq!(l.repository.to_string(), format!("{ET}/my-app"));
    assert_eq!(l.tag.as_ref().map(|t| t.as_str()), Some("1.2.4"));
    assert_eq!(l.digest.as_ref().map(|d| d.hex()), Some(HEX));
    assert_eq!(l.image_ref().to_string(), text);
    // The stage may be given too, if it agrees.
    assert_eq!(p.locate(&text, Some("extended-test")).expect("located"), l);
}

#[test]
fn locates_tag_only_digest_only_and_repository_only() {
    let p = design();
    let l = p
        .locate(&format!("{ET}/my-app:1.2.4"), None)
        .expect("located");
    assert!(l.digest.is_none());
    let l = p
        .locate(&format!("{ET}/my-app@sha256:{HEX}"), None)
        .expect("located");
    assert!(l.tag.is_none());
    // Alert events: the repository in the stage, no version.
    let l = p.locate(&format!("{ET}/my-app"), None).expect("located");
    assert_eq!((l.tag, l.digest), (None, None));
    assert_eq!(l.stage, "extended-test");
    assert_eq!(
        l.repository,
        Repository::try_from(format!("{ET}/my-app").as_str()).expect("valid")
    );
}

#[test]
fn locates_a_bare_name_with_a_stage() {
    let p = design();
    let l = p.locate("my-app", Some("extended-test")).expect("located");
    assert_eq!(l.repository.to_string(), format!("{ET}/my-app"));
    assert_eq!((l.tag.clone(), l.digest.clone()), (None, None));
    let l = p.locate("my-app:1.2", Some("prod")).expect("located");
    assert_eq!(
        l.repository.to_string(),
        "europe-west2-docker.pkg.dev/prod-proj/tenant/acme/prod/my-app"
    );
    assert_eq!(l.tag.as_ref().map(|t| t.as_str()), Some("1.2"));
    let l = p
        .locate(&format!("team/my-app@sha256:{HEX}"), Some("prod"))
        .expect("located");
    assert_eq!(l.image_name, "team/my-app");
}

#[test]
fn a_bare_name_needs_a_stage() {
    let e = design().locate("my-app", None).expect_err("no stage");
    assert_eq!(
        e,
        RulesError::StageRequired {
            image: "my-app".to_owned()
        }
    );
}

#[test]
fn unconfigured_locations_are_their_own_error_and_name_the_host() {
    let p = design();
    for (text, host) in [
        ("evil.example.com/x/my-app:1", "evil.example.com"),
        // Configured host, but outside every stage path.
        (
            "europe-west2-docker.pkg.dev/dev-proj/tenant/other/extended-test/my-app:1",
            "europe-west2-docker.pkg.dev",
        ),
        // The stage prefix itself is no image.
        (ET, "europe-west2-docker.pkg.dev"),
        // A stage path's prefix is not the stage (`extended-test-2` is not `extended-test`).
        (
            "europe-west2-docker.pkg.dev/dev-proj/tenant/acme/extended-test-2/my-app",
            "europe-west2-docker.pkg.dev",
        ),
        ("localhost:5000/extended-test/my-app", "localhost:5000"),
    ] {
        match p.locate(text, None) {
            Err(RulesError::UnconfiguredLocation { host: h, .. }) => {
                assert_eq!(h.as_str(), host, "{text}")
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    let e = p
        .locate("evil.example.com/x/my-app:1", Some("prod"))
        .expect_err("unconfigured");
    assert!(matches!(e, RulesError::UnconfiguredLocation { .. }));
    assert!(
        e.to_string().contains("registry host evil.example.com"),
        "{e}"
    );
}

#[test]
fn allowlist_applies_to_every_form() {
    let p = Pipeline::from_yaml(&format!(
        "{}images: [\"billing-*\"]\n",
        FIRST_EXAMPLE.replace("images: [\"*\"]", "")
    ))
    .expect("valid");
    assert!(p.locate(&format!("{ET}/billing-api:1"), None).is_ok());
    for (text, stage) in [
        (format!("{ET}/web:1"), None),
        (format!("{ET}/web"), None),
        ("web".to_owned(), Some("prod")),
    ] {
        let e = p.locate(&text, stage).expect_err("not allowed");
        assert_eq!(
            e,
            RulesError::ImageNotAllowed {
                image_name: "web".to_owned(),
                allowed: vec!["billing-*".to_owned()]
            }
        );
    }
}

#[test]
fn stage_disagreements_and_unknown_stages() {
    let p = design();
    let e = p
        .locate(&format!("{ET}/my-app:1"), Some("prod"))
        .expect_err("mismatch");
    assert!(matches!(e, RulesError::StageMismatch { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("image \"{ET}/my-app:1\" is in stage extended-test, but the event says stage prod")
    );
    let e = p.locate("my-app", Some("staging")).expect_err("unknown");
    assert!(matches!(e, RulesError::UnknownEventStage { .. }), "{e:?}");
    assert!(
        e.to_string().contains("fast-feedback, extended-test, prod"),
        "{e}"
    );
}

#[test]
fn malformed_references_wrap_the_reference_error() {
    let p = design();
    let e = p
        .locate(&format!("{ET}/my-app@sha256:abc"), None)
        .expect_err("bad digest");
    assert!(
        matches!(
            e,
            RulesError::Reference {
                error: ReferenceError::Digest(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&format!("{ET}/my-app@sha256:abc")),
        "{e}"
    );
    let e = p
        .locate(&format!("{ET}/My-App:1"), None)
        .expect_err("uppercase");
    assert!(
        matches!(
            e,
            RulesError::Reference {
                error: ReferenceError::Repository(_),
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.locate("my-app:-x", Some("prod")).expect_err("bad tag");
    assert!(
        matches!(
            e,
            RulesError::Reference {
                error: ReferenceError::Tag(_),
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.locate("", Some("prod")).expect_err("empty");
    assert!(
        matches!(
            e,
            RulesError::Reference {
                error: ReferenceError::Empty,
                ..
            }
        ),
        "{e:?}"
    );
    let e = p.locate("", None).expect_err("empty");
    assert!(matches!(e, RulesError::StageRequired { .. }), "{e:?}");
}

#[test]
fn nested_stages_longest_prefix_wins() {
    let p = Pipeline::from_yaml(
        "stages:\n  - {name: prod, registry: r.example}\n  - {name: canary, registry: r.example, path: prod/canary}\npromotions:\n  - {from: canary, to: prod, require: [soak-complete]}\n",
    )
    .expect("valid");
    let l = p
        .locate("r.example/prod/canary/app:1", None)
        .expect("located");
    assert_eq!((l.stage.as_str(), l.image_name.as_str()), ("canary", "app"));
    let l = p.locate("r.example/prod/app:1", None).expect("located");
    assert_eq!((l.stage.as_str(), l.image_name.as_str()), ("prod", "app"));
    // With the stage given, the name is taken in that stage as is.
    let l = p.locate("canary/app", Some("prod")).expect("located");
    assert_eq!(
        (l.stage.as_str(), l.image_name.as_str()),
        ("prod", "canary/app")
    );
}

#[test]
fn host_comparison_ignores_case() {
    let l = design()
        .locate(
            "Europe-West2-Docker.pkg.dev/prod-proj/tenant/acme/prod/my-app:1",
            None,
        )
        .expect("located");
    assert_eq!(l.stage, "prod");
}

// ---- which promotions a signal concerns ----

#[test]
fn triggered_by_follows_the_gates() {
    let p = design();
    let names = |stage, kind: SignalKind| -> Vec<String> {
        p.triggered_by(stage, &kind)
            .iter()
            .map(|p| format!("{}->{}", p.from(), p.to()))
            .collect()
    };
    assert_eq!(
        names("fast-feedback", SignalKind::TestPassed),
        ["fast-feedback->extended-test"]
    );
    assert!(names("fast-feedback", SignalKind::SoakComplete).is_empty());
    assert!(names("fast-feedback", SignalKind::AlertFiring).is_empty());
    assert_eq!(
        names("extended-test", SignalKind::SoakComplete),
        ["extended-test->prod"]
    );
    assert_eq!(
        names("extended-test", SignalKind::TestFailed),
        ["extended-test->prod"]
    );
    assert_eq!(
        names("extended-test", SignalKind::AlertClear),
        ["extended-test->prod"]
    );
    assert_eq!(
        names("extended-test", SignalKind::AlertFiring),
        ["extended-test->prod"]
    );
    assert!(names("extended-test", SignalKind::TestPassed).is_empty());
    assert!(names("prod", SignalKind::AlertFiring).is_empty());
    assert!(names("nowhere", SignalKind::TestPassed).is_empty());
}

#[test]
fn alert_clear_triggers_a_gate_that_only_blocks_on_firing() {
    let p = Pipeline::from_yaml(&two_stage(
        "    require: [soak-complete]\n    block_on: [alert-firing]\n",
    ))
    .expect("valid");
    assert_eq!(p.triggered_by("a", &SignalKind::AlertClear).len(), 1);
    assert!(p.triggered_by("a", &SignalKind::TestFailed).is_empty());
}

// ---- select ----

#[test]
fn select_defaults_to_newest_and_reads_all() {
    assert!(
        design()
            .promotions()
            .iter()
            .all(|p| p.select() == Select::Newest)
    );
    let pipeline = Pipeline::from_yaml(&two_stage("    require: [test-passed]\n    select: all\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pipeline.promotions()[0].select(), Select::All);
    let error = yaml_error(&two_stage(
        "    require: [test-passed]\n    select: latest\n",
    ));
    assert!(error.to_string().contains("newest, all"), "{error}");
    assert!(line_of(&error).is_some(), "{error}");
}

// ---- description ----

#[test]
fn describe_shows_the_effective_pipeline() {
    let text = design().describe();
    let expected = "\
stages (3):
  fast-feedback  europe-west2-docker.pkg.dev/dev-proj/tenant/acme/fast-feedback/<image>
  extended-test  europe-west2-docker.pkg.dev/dev-proj/tenant/acme/extended-test/<image>
  prod           europe-west2-docker.pkg.dev/prod-proj/tenant/acme/prod/<image>
promotions (2):
  fast-feedback -> extended-test
    require:           test-passed
    block on:          (nothing)
    select:            newest
  extended-test -> prod
    require:           soak-complete, alert-clear
    block on:          alert-firing, test-failed
    select:            newest
    min time in stage: 30m
images: *
";
    assert_eq!(text, expected);
}

#[test]
fn origins_read_as_places() {
    let problem = || Problem::NoStages;
    for (at, text) in [
        (Origin::Line(3), "rules file line 3: "),
        (
            Origin::Field("promotions[1].require".to_owned()),
            "rules file, field promotions[1].require: ",
        ),
        (Origin::File, "rules file: "),
        (Origin::Env("REGISTRY"), "environment variable REGISTRY: "),
        (Origin::Builtin, "embedded default pipeline: "),
    ] {
        let e = RulesError::Invalid {
            at,
            problem: problem(),
        };
        assert!(e.to_string().starts_with(text), "{e}");
    }
}

#[test]
fn the_readme_rules_file_is_a_valid_pipeline() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("One rules file using all of them:")
        .and_then(|i| readme[i..].find("```yaml").map(|j| i + j + "```yaml".len()))
        .expect("the README shows a rules file");
    let end = readme[start..]
        .find("```")
        .map(|k| start + k)
        .expect("closed");
    let pipeline = Pipeline::from_yaml(&readme[start..end]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pipeline.declared_signals().len(), 3);
    assert_eq!(pipeline.freezes().len(), 1);
    let to_prod = pipeline
        .promotion("extended-test", "prod")
        .expect("to prod");
    assert!(to_prod.soak().is_some() && !to_prod.approvers().is_empty());
}
