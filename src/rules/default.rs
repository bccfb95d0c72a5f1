//! The embedded default pipeline (docs/rules.md): what runs when no rules file is given, built
//! from the same `Builder` as a rules file so both obey the same rules.

use crate::config;

use super::error::{Origin, RulesError};
use super::model::{Builder, Pipeline, PromotionInput, Sourced};

impl Pipeline {
    /// `fast-feedback -> extended-test` on `test-passed` (blocked by `test-failed`);
    /// `extended-test -> prod` on `soak-complete` and `alert-clear` (blocked by `alert-firing`
    /// and `test-failed`). Registries and paths come from `REGISTRY`, `PROD_REGISTRY` and the
    /// `*_PATH` variables through `lookup` (empty counts as unset, as shells and Terraform
    /// produce both).
    pub fn embedded_default(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Pipeline, RulesError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let registry = get(config::REGISTRY).ok_or(RulesError::MissingEnv {
            name: config::REGISTRY,
        })?;
        let (prod_registry, prod_registry_at) = match get(config::PROD_REGISTRY) {
            Some(value) => (value, config::PROD_REGISTRY),
            None => (registry.clone(), config::REGISTRY),
        };
        let stages = [
            (
                "fast-feedback",
                &registry,
                config::REGISTRY,
                config::FAST_FEEDBACK_PATH,
            ),
            (
                "extended-test",
                &registry,
                config::REGISTRY,
                config::EXTENDED_TEST_PATH,
            ),
            ("prod", &prod_registry, prod_registry_at, config::PROD_PATH),
        ];
        let mut builder = Builder::default();
        for (name, registry, registry_var, path_var) in stages {
            let path = get(path_var);
            let fixed = |value| Sourced {
                value,
                at: Origin::Builtin,
            };
            builder.stage(
                fixed(name),
                Sourced {
                    value: registry,
                    at: Origin::Env(registry_var),
                },
                path.as_deref().map(|value| Sourced {
                    value,
                    at: Origin::Env(path_var),
                }),
                // Where a collision of two stages' places is reported: the variable that sets
                // (or, unset, would set) this stage's path is the one to change.
                Origin::Env(path_var),
            )?;
        }
        let promotions: [(&str, &str, &[&str], &[&str]); 2] = [
            (
                "fast-feedback",
                "extended-test",
                &["test-passed"],
                &["test-failed"],
            ),
            (
                "extended-test",
                "prod",
                &["soak-complete", "alert-clear"],
                &["alert-firing", "test-failed"],
            ),
        ];
        for (from, to, require, block_on) in promotions {
            let fixed = |value| Sourced {
                value,
                at: Origin::Builtin,
            };
            builder.promotion(PromotionInput {
                from: fixed(from),
                to: fixed(to),
                require: require.iter().map(|s| fixed(s)).collect(),
                require_at: Origin::Builtin,
                block_on: block_on.iter().map(|s| fixed(s)).collect(),
                min_time_in_stage: None,
                soak: None,
                select: None,
                approvers: Vec::new(),
                at: Origin::Builtin,
            })?;
        }
        builder.finish(None, Origin::Builtin, Origin::Builtin)
    }
}
