//! `promoter serve`, the real binary, on a loopback port, and requests in the exact shapes Pub/Sub,
//! Eventarc, gcloud and CloudEvents clients send.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tempfile::TempDir;

pub struct ServiceProcess {
    child: Child,
    dir: TempDir,
    /// The port the service bound, as its "serving" log line names it.
    pub port: u16,
    pub url: String,
    pub http: reqwest::Client,
}

impl ServiceProcess {
    /// Starts `promoter serve` with exactly `env` (plus HOME and PATH) and waits for `/healthz`.
    ///
    /// The service binds `PORT=0` itself and logs the port it got: a port picked here and handed
    /// over could be taken by another process in between (tests run in parallel).
    pub async fn start(env: &[(&str, String)]) -> ServiceProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("service.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_promoter"));
        command
            .arg("serve")
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CLOUDSDK_CONFIG", dir.path().join("gcloud"))
            .env("PORT", "0")
            .env("RUST_LOG", "info");
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("promoter serve starts");
        let mut service = ServiceProcess {
            child,
            dir,
            port: 0,
            url: String::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        };
        service.port = service.bound_port(Duration::from_secs(20));
        service.url = format!("http://127.0.0.1:{}", service.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(response) = service
                .http
                .get(format!("{}/healthz", service.url))
                .send()
                .await
                && response.status() == 200
            {
                return service;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("promoter serve did not become healthy: {}", service.log());
    }

    /// The `port` of the "serving" log line, once it is written.
    fn bound_port(&mut self, wait: Duration) -> u16 {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(port) = self.log().lines().find_map(serving_port) {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "promoter serve exited ({status}) before serving: {}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!("promoter serve logged no \"serving\" line: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM, as Cloud Run does, and waits for the process to exit.
    pub fn terminate(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    /// POSTs to `/` and returns the status and the JSON body (or the body text as a string).
    pub async fn post(&self, request: &PushRequest) -> (u16, serde_json::Value) {
        let mut builder = self
            .http
            .post(format!("{}/", self.url))
            .body(request.body.clone());
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let response = builder.send().await.expect("the service answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

/// The port of a "serving" line of the service's log (Cloud Logging JSON, one object a line).
fn serving_port(line: &str) -> Option<u16> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry["message"] != "serving" {
        return None;
    }
    entry["port"].as_u64().and_then(|p| u16::try_from(p).ok())
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request as a sender would make it.
#[derive(Clone, Debug)]
pub struct PushRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl PushRequest {
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// A Pub/Sub message: attributes and data, as published.
#[derive(Clone, Debug)]
pub struct Message {
    pub id: String,
    pub attributes: HashMap<String, String>,
    pub data: Vec<u8>,
}

pub const PUSH_SUBSCRIPTION: &str = "projects/test-project/subscriptions/p2p-events-push";
const PUBLISH_TIME: &str = "2026-11-26T04:00:00.123Z";
const PUBSUB_USER_AGENT: &str =
    "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)";

impl Message {
    /// `gcloud pubsub topics publish p2p-events --message=DATA --attribute=ce-specversion=1.0,
    /// ce-type=TYPE,ce-source=//manual,ce-id=ID,content-type=application/json` (README).
    pub fn binary_cloudevent(event_type: &str, data: serde_json::Value) -> Message {
        let id = format!("{:016x}", rand::random::<u64>());
        let attributes = HashMap::from([
            ("ce-specversion".to_owned(), "1.0".to_owned()),
            ("ce-type".to_owned(), event_type.to_owned()),
            ("ce-source".to_owned(), "//manual".to_owned()),
            ("ce-id".to_owned(), format!("event-{id}")),
            ("content-type".to_owned(), "application/json".to_owned()),
        ]);
        Message {
            id: format!("1{}", rand::random::<u32>()),
            attributes,
            data: data.to_string().into_bytes(),
        }
    }

    /// A structured-mode CloudEvent in a message (`content-type: application/cloudevents+json`).
    pub fn structured_cloudevent(event_type: &str, data: serde_json::Value) -> Message {
        let event = serde_json::json!({
            "specversion": "1.0", "type": event_type, "source": "//ci/pipeline",
            "id": format!("event-{:016x}", rand::random::<u64>()), "time": "2026-11-26T03:59:00Z",
            "datacontenttype": "application/json", "data": data,
        });
        let attributes = HashMap::from([(
            "content-type".to_owned(),
            "application/cloudevents+json".to_owned(),
        )]);
        Message {
            id: format!("2{}", rand::random::<u32>()),
            attributes,
            data: event.to_string().into_bytes(),
        }
    }

    /// What a person types: `--attribute=ce-type=test-passed` and nothing else.
    pub fn manual(event_type: &str, data: serde_json::Value) -> Message {
        let attributes = HashMap::from([("ce-type".to_owned(), event_type.to_owned())]);
        Message {
            id: format!("3{}", rand::random::<u32>()),
            attributes,
            data: data.to_string().into_bytes(),
        }
    }

    fn json(&self) -> serde_json::Value {
        // Pub/Sub sends both spellings of the id and time fields (push docs, "Receive messages").
        serde_json::json!({
            "attributes": self.attributes,
            "data": BASE64.encode(&self.data),
            "messageId": self.id, "message_id": self.id,
            "publishTime": PUBLISH_TIME, "publish_time": PUBLISH_TIME,
        })
    }

    /// A push subscription's default (wrapped) request.
    pub fn wrapped_push(&self) -> PushRequest {
        let body = serde_json::json!({"message": self.json(), "subscription": PUSH_SUBSCRIPTION});
        PushRequest {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("user-agent".into(), PUBSUB_USER_AGENT.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }

    /// A push subscription with payload unwrapping and write metadata: the data is the body, the
    /// attributes are headers, the message's metadata `x-goog-pubsub-*` headers.
    pub fn unwrapped_push(&self) -> PushRequest {
        let mut headers = vec![
            ("user-agent".to_owned(), PUBSUB_USER_AGENT.to_owned()),
            (
                "x-goog-pubsub-subscription-name".to_owned(),
                PUSH_SUBSCRIPTION.to_owned(),
            ),
            ("x-goog-pubsub-message-id".to_owned(), self.id.clone()),
            (
                "x-goog-pubsub-publish-time".to_owned(),
                PUBLISH_TIME.to_owned(),
            ),
        ];
        headers.extend(self.attributes.iter().map(|(k, v)| (k.clone(), v.clone())));
        PushRequest {
            headers,
            body: self.data.clone(),
        }
    }

    /// Eventarc's `google.cloud.pubsub.topic.v1.messagePublished`: a binary-mode CloudEvent whose
    /// data is the push envelope.
    pub fn eventarc(&self) -> PushRequest {
        let body = serde_json::json!({
            "message": self.json(),
            "subscription": "projects/test-project/subscriptions/eventarc-europe-west2-promoter-sub-123",
        });
        PushRequest {
            headers: vec![
                (
                    "content-type".into(),
                    "application/json; charset=utf-8".into(),
                ),
                ("ce-specversion".into(), "1.0".into()),
                (
                    "ce-type".into(),
                    "google.cloud.pubsub.topic.v1.messagePublished".into(),
                ),
                (
                    "ce-source".into(),
                    "//pubsub.googleapis.com/projects/test-project/topics/p2p-events".into(),
                ),
                ("ce-id".into(), self.id.clone()),
                ("ce-time".into(), PUBLISH_TIME.into()),
                ("user-agent".into(), PUBSUB_USER_AGENT.into()),
            ],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A CloudEvents HTTP binary-mode request (what a CloudEvents SDK sends by default).
pub fn http_binary(event_type: &str, data: serde_json::Value) -> PushRequest {
    PushRequest {
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("ce-specversion".into(), "1.0".into()),
            ("ce-type".into(), event_type.into()),
            ("ce-source".into(), "//ci/pipeline".into()),
            (
                "ce-id".into(),
                format!("event-{:016x}", rand::random::<u64>()),
            ),
        ],
        body: data.to_string().into_bytes(),
    }
}

/// A CloudEvents HTTP structured-mode request.
pub fn http_structured(event_type: &str, data: serde_json::Value) -> PushRequest {
    let event = serde_json::json!({
        "specversion": "1.0", "type": event_type, "source": "//ci/pipeline",
        "id": format!("event-{:016x}", rand::random::<u64>()), "datacontenttype": "application/json", "data": data,
    });
    PushRequest {
        headers: vec![(
            "content-type".into(),
            "application/cloudevents+json; charset=utf-8".into(),
        )],
        body: event.to_string().into_bytes(),
    }
}
