//! Placing an event's image in the pipeline (docs/events.md): which stage it is in,
//! its name, and its version if given. This is the gate that keeps events from pointing the
//! service at registries it was not configured for.

use crate::registry::reference::{Digest, ImageRef, Repository, Tag};

use super::error::RulesError;
use super::model::{Pipeline, Stage, StageName};

/// An event's image, placed in a configured stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub stage: StageName,
    /// The path below the stage's prefix (`my-app`; may contain `/` for nested names). The same
    /// in every stage.
    pub image_name: String,
    /// `{registry}/{stage path}/{image_name}`.
    pub repository: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
}

impl Located {
    /// The image as a reference (the repository alone when the event carried no version).
    pub fn image_ref(&self) -> ImageRef {
        ImageRef {
            repository: self.repository.clone(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// Whether `text` starts with a registry host, by the reference grammar's own rule (a first
/// component with a dot or a port, or `localhost`). Without one, `text` is an image name
/// relative to a stage: reading `my-app` as `docker.io/library/my-app`, as docker would, could
/// only ever end in "unconfigured location", and hides the real mistake (no stage given).
pub fn names_registry(text: &str) -> bool {
    text.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[')
    })
}

impl Pipeline {
    /// Places `image` (what the event carried) in a stage. `image` is a full reference
    /// (`{registry}/{stage path}/{name}[:tag][@digest]`), a repository without version (alert
    /// events), or, with `stage`, a bare name (`my-app`, `my-app:1.2`).
    pub fn locate(&self, image: &str, stage: Option<&str>) -> Result<Located, RulesError> {
        // Not trimmed: a padded reference is refused by the reference grammar, as skopeo and
        // crane refuse it, rather than promoted as if it named the image without the padding.
        let text = image;
        let given = stage
            .map(|name| {
                self.stage(name.trim())
                    .ok_or_else(|| RulesError::UnknownEventStage {
                        stage: name.to_owned(),
                        known: self.stages.iter().map(|s| s.name().clone()).collect(),
                    })
            })
            .transpose()?;
        let reference_error = |error| RulesError::Reference {
            text: text.to_owned(),
            error,
        };
        let (stage, parsed) = if names_registry(text) {
            let parsed = ImageRef::try_from(text).map_err(reference_error)?;
            let stage = self.stage_of(&parsed.repository).ok_or_else(|| {
                RulesError::UnconfiguredLocation {
                    image: text.to_owned(),
                    host: parsed.repository.registry.clone(),
                    prefixes: self
                        .stages
                        .iter()
                        .map(|s| format!("{}/", s.prefix()))
                        .collect(),
                }
            })?;
            if let Some(given) = given
                && given.name() != stage.name()
            {
                return Err(RulesError::StageMismatch {
                    image: text.to_owned(),
                    given: given.name().clone(),
                    actual: stage.name().clone(),
                });
            }
            (stage, parsed)
        } else {
            let stage = given.ok_or_else(|| RulesError::StageRequired {
                image: text.to_owned(),
            })?;
            if text.is_empty() {
                return Err(reference_error(
                    crate::registry::reference::ReferenceError::Empty,
                ));
            }
            // Let the reference grammar split name, tag and digest, in the given stage. A nested
            // stage's longest prefix does not apply here: the event said which stage.
            let full = format!("{}/{text}", stage.prefix());
            (
                stage,
                ImageRef::try_from(full.as_str()).map_err(reference_error)?,
            )
        };
        let image_name = parsed
            .repository
            .path
            .strip_prefix(stage.repository_prefix())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or_default()
            .to_owned();
        if !self.allows(&image_name) {
            return Err(RulesError::ImageNotAllowed {
                image_name,
                allowed: self.images.iter().map(|g| g.to_string()).collect(),
            });
        }
        Ok(Located {
            stage: stage.name().clone(),
            image_name,
            repository: parsed.repository,
            tag: parsed.tag,
            digest: parsed.digest,
        })
    }

    /// The stage whose `{registry}/{path}/` prefixes `repository`; the longest one when stages
    /// nest (`prod` and `prod/canary`), since the deeper stage is the more specific claim.
    pub fn stage_of(&self, repository: &Repository) -> Option<&Stage> {
        self.stages
            .iter()
            .filter(|s| {
                s.host() == &repository.registry
                    && repository
                        .path
                        .strip_prefix(s.repository_prefix())
                        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
            })
            .max_by_key(|s| s.repository_prefix().len())
    }
}
