//! A stack for decisions over several versions: a registry, the Pub/Sub fake and `promoter
//! serve`, with versions of images promoted into extended-test by their tests, and the events a
//! pipeline sends, in the shapes their senders send them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::pubsub::{Collector, PROMOTIONS_SUBSCRIPTION, PROMOTIONS_TOPIC, PubSubFake};
use super::service::{PushRequest, ServiceProcess, http_binary};
use super::{Auth, Promoter, Registry, Seeded, seed, skopeo_raw};

/// A registry, the Pub/Sub fake and `promoter serve`, with versions of images promoted into
/// extended-test by their tests.
pub struct Harness {
    pub registry: Registry,
    _pubsub: PubSubFake,
    pub service: ServiceProcess,
    pub promotions: Collector,
    pub environment: Vec<(String, String)>,
    pub work: tempfile::TempDir,
    /// image -> tag -> what was seeded.
    versions: BTreeMap<(String, String), Seeded>,
    /// A push token to send with every request, when the service checks them.
    pub token: Option<String>,
}

/// The embedded default's prod gate with `select` and `min_time_in_stage` lines added.
pub fn rules(extra_prod_lines: &str) -> String {
    format!(
        "stages:\n  - name: fast-feedback\n    registry: REGISTRY_HOST\n  - name: extended-test\n    registry: REGISTRY_HOST\n  - name: prod\n    registry: REGISTRY_HOST\npromotions:\n  - from: fast-feedback\n    to: extended-test\n    require: [test-passed]\n    block_on: [test-failed]\n  - from: extended-test\n    to: prod\n    require: [soak-complete, alert-clear]\n    block_on: [alert-firing, test-failed]\n{extra_prod_lines}"
    )
}

impl Harness {
    pub async fn start(rules: Option<String>) -> Harness {
        Harness::start_with(rules, &[]).await
    }

    /// The same with more environment for the service (push authentication, say).
    pub async fn start_with(rules: Option<String>, extra: &[(&str, String)]) -> Harness {
        let registry = Registry::start(Auth::None);
        let pubsub = PubSubFake::start();
        let work = tempfile::tempdir().expect("temp dir");
        let host = registry.host();
        let mut env = vec![
            ("REGISTRY".to_owned(), host.clone()),
            ("PUBSUB_EMULATOR_HOST".to_owned(), pubsub.host.clone()),
            (
                "PROMOTER_EVENTS_TOPIC".to_owned(),
                PROMOTIONS_TOPIC.to_owned(),
            ),
            ("K_SERVICE".to_owned(), "promoter-test".to_owned()),
        ];
        if !extra.iter().any(|(name, _)| *name == "PROMOTER_PUSH_AUTH") {
            env.push(("PROMOTER_PUSH_AUTH".to_owned(), "none".to_owned()));
        }
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        if let Some(text) = rules {
            let path = work.path().join("rules.yaml");
            std::fs::write(&path, text.replace("REGISTRY_HOST", &host)).expect("rules file");
            env.push(("PROMOTER_CONFIG".to_owned(), path.display().to_string()));
        }
        let pairs: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let service = ServiceProcess::start(&pairs).await;
        let promotions = Collector::start(&pubsub.host, PROMOTIONS_SUBSCRIPTION).await;
        Harness {
            registry,
            _pubsub: pubsub,
            service,
            promotions,
            environment: env,
            work,
            versions: BTreeMap::new(),
            token: None,
        }
    }

    pub fn repository(&self, stage: &str, image: &str) -> String {
        format!("{}/{stage}/{image}", self.registry.host())
    }

    /// Seeds `image:tag` (signed, two platforms) in fast-feedback; returns its digest.
    pub fn push(&mut self, image: &str, tag: &str) -> String {
        let seeded = seed(
            self.work.path(),
            &self.repository("fast-feedback", image),
            tag,
            &["--sign"],
            None,
        );
        let digest = seeded.digest.clone();
        self.versions
            .insert((image.to_owned(), tag.to_owned()), seeded);
        digest
    }

    /// Seeds `image:tag` and promotes it into extended-test with a `test-passed`, as CI
    /// would; returns its digest.
    pub async fn arrive(&mut self, image: &str, tag: &str) -> String {
        let digest = self.push(image, tag);
        let answer = self.test_passed(image, tag).await;
        assert_eq!(decision(&answer), "promoted", "{answer:?}");
        digest
    }

    /// `test-passed` for `image:tag` in fast-feedback.
    pub async fn test_passed(&self, image: &str, tag: &str) -> (u16, Value) {
        self.post(
            "test-passed",
            json!({"image": format!("{}:{tag}", self.repository("fast-feedback", image))}),
        )
        .await
    }

    /// A digest signal of any type for `image:tag` in extended-test.
    pub async fn signal(&self, event_type: &str, image: &str, tag: &str) -> (u16, Value) {
        self.post(
            event_type,
            json!({"image": format!("{}:{tag}", self.repository("extended-test", image))}),
        )
        .await
    }

    pub fn digest(&self, image: &str, tag: &str) -> String {
        self.versions
            .get(&(image.to_owned(), tag.to_owned()))
            .map(|s| s.digest.clone())
            .unwrap_or_else(|| panic!("{image}:{tag} was not seeded"))
    }

    pub async fn post(&self, event_type: &str, data: Value) -> (u16, Value) {
        self.service
            .post(&self.authorized(http_binary(event_type, data)))
            .await
    }

    /// The bearer token every request of this harness carries (push authentication).
    pub fn authorized(&self, request: PushRequest) -> PushRequest {
        match &self.token {
            Some(token) => request.with_header("authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    pub async fn soak(&self, image: &str, tag: &str) -> (u16, Value) {
        self.post(
            "soak-complete",
            json!({"image": format!("{}:{tag}", self.repository("extended-test", image))}),
        )
        .await
    }

    pub async fn failed(&self, image: &str, tag: &str) -> (u16, Value) {
        self.post(
            "test-failed",
            json!({"image": format!("{}:{tag}", self.repository("extended-test", image))}),
        )
        .await
    }

    pub async fn alert(&self, image: &str, state: &str) -> (u16, Value) {
        self.post(
            state,
            json!({"image": self.repository("extended-test", image)}),
        )
        .await
    }

    /// The digest `stage` holds under `image:tag`, as skopeo sees it.
    pub fn held(&self, stage: &str, image: &str, tag: &str) -> Option<String> {
        skopeo_raw(&format!("{}:{tag}", self.repository(stage, image)), None).map(|bytes| {
            use sha2::Digest as _;
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
        })
    }

    /// What an Artifact Registry cleanup policy does: deletes the version's manifest.
    pub async fn delete(&self, stage: &str, image: &str, tag: &str) {
        let digest = self.digest(image, tag);
        let url = format!(
            "http://{}/v2/{stage}/{image}/manifests/{digest}",
            self.registry.host()
        );
        let response = reqwest::Client::new()
            .delete(url)
            .send()
            .await
            .expect("the registry answers");
        assert_eq!(response.status().as_u16(), 202, "deleting {image}:{tag}");
        assert!(self.held(stage, image, tag).is_none());
    }

    /// Every `promoted` event announcing a promotion into prod of `image`, in publishing order
    /// (the fake numbers messages as it receives them), waiting until `count` arrived.
    pub async fn prod_announcements(&mut self, image: &str, count: usize) -> Vec<Value> {
        let prefix = format!("{}:", self.repository("prod", image));
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < count && Instant::now() < deadline {
            match self.promotions.next(Duration::from_millis(500)).await {
                Some(event)
                    if event
                        .attributes
                        .get("ce-subject")
                        .is_some_and(|s| s.starts_with(&prefix)) =>
                {
                    seen.push(event)
                }
                _ => {}
            }
        }
        // Anything else announced for prod would be one too many.
        seen.extend(
            self.promotions
                .drain(Duration::from_millis(700))
                .await
                .into_iter()
                .filter(|e| {
                    e.attributes
                        .get("ce-subject")
                        .is_some_and(|s| s.starts_with(&prefix))
                }),
        );
        seen.sort_by_key(|e| {
            e.message_id
                .trim_start_matches('m')
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        seen.into_iter()
            .map(|e| {
                json!({"subject": e.attributes.get("ce-subject"), "id": e.attributes.get("ce-id"), "digest": e.data["digest"]})
            })
            .collect()
    }

    /// The command line, configured as the service is (registry, Pub/Sub, rules, state).
    pub fn cli(&self) -> Promoter {
        self.environment
            .iter()
            .fold(Promoter::new(), |promoter, (name, value)| {
                promoter.env(name, value.clone())
            })
    }

    pub fn environment(&self) -> Vec<(&str, String)> {
        self.environment
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect()
    }
}

pub fn decision(answer: &(u16, Value)) -> String {
    answer.1["decision"].as_str().unwrap_or_default().to_owned()
}
