//! Google's Pub/Sub fake (`pstest`, from Debian's golang-google-cloud-dev, built by
//! `tools/pubsub-fake/build`) over real gRPC, and a collector that pulls what promoter publishes.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use promoter::pull::{Disposition, PullConfig, PullWorker, ReceivedMessage};
use tokio::sync::mpsc;

pub const EVENTS_TOPIC: &str = "projects/test-project/topics/p2p-events";
pub const PROMOTIONS_TOPIC: &str = "projects/test-project/topics/p2p-promotions";
/// Where the tests read what promoter announced.
pub const PROMOTIONS_SUBSCRIPTION: &str = "projects/test-project/subscriptions/promotions-watch";
/// What `promoter pull` reads in the end-to-end test.
pub const EVENTS_SUBSCRIPTION: &str = "projects/test-project/subscriptions/p2p-events-pull";

pub struct PubSubFake {
    child: Option<Child>,
    // Held open: the fake exits when its stdin closes, so it never outlives the test.
    _stdin: Option<ChildStdin>,
    pub host: String,
    port: u16,
}

fn fake_binary() -> std::path::PathBuf {
    let binary = super::repo_root().join("target/pubsub-fake");
    if !binary.exists() {
        let status = Command::new(super::repo_root().join("tools/pubsub-fake/build"))
            .arg(&binary)
            .status()
            .expect("tools/pubsub-fake/build runs");
        assert!(status.success(), "building the Pub/Sub fake failed");
    }
    binary
}

impl PubSubFake {
    /// Starts on a port the fake picks itself and prints: no port is chosen here and handed over,
    /// so none can be taken by another process in between.
    pub fn start() -> PubSubFake {
        Self::spawn(None)
    }

    /// Starts on a given port: a restarted fake is the same endpoint, empty, as after an outage.
    pub fn start_on(port: u16) -> PubSubFake {
        Self::spawn(Some(port))
    }

    fn spawn(port: Option<u16>) -> PubSubFake {
        let mut command = Command::new(fake_binary());
        if let Some(port) = port {
            command.args(["-port", &port.to_string()]);
        }
        let mut child = command
            .args(["-topic", EVENTS_TOPIC, "-topic", PROMOTIONS_TOPIC])
            .args([
                "-subscription",
                &format!("{PROMOTIONS_SUBSCRIPTION}={PROMOTIONS_TOPIC}"),
            ])
            .args([
                "-subscription",
                &format!("{EVENTS_SUBSCRIPTION}={EVENTS_TOPIC}"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the Pub/Sub fake starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the fake prints its address");
        let host = line
            .trim()
            .strip_prefix("PUBSUB_EMULATOR_HOST=")
            .unwrap_or_else(|| panic!("PUBSUB_EMULATOR_HOST=HOST:PORT, got {line:?}"))
            .to_owned();
        let port = host
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {host:?}"));
        PubSubFake {
            child: Some(child),
            _stdin: Some(stdin),
            host,
            port,
        }
    }

    /// No fake at all: what is left after an outage takes it down.
    pub fn placeholder() -> PubSubFake {
        PubSubFake {
            child: None,
            _stdin: None,
            host: String::new(),
            port: 0,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PubSubFake {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A message promoter published.
#[derive(Debug, Clone)]
pub struct Published {
    /// The fake numbers messages as it receives them (`m0`, `m1`, ...).
    pub message_id: String,
    pub attributes: std::collections::HashMap<String, String>,
    pub data: serde_json::Value,
    pub ordering_key: String,
}

/// Pulls a subscription in the background, acking everything, for the test to read.
pub struct Collector {
    receiver: mpsc::UnboundedReceiver<Published>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Collector {
    /// A collector that collects nothing (while the fake is down).
    pub fn idle() -> Collector {
        let (_, receiver) = mpsc::unbounded_channel();
        Collector {
            receiver,
            stop: None,
        }
    }

    pub async fn start(host: &str, subscription: &str) -> Collector {
        let config = PullConfig {
            emulator_endpoint: Some(format!("http://{host}")),
            max_concurrent: 4,
            max_outstanding_messages: 100,
            max_lease: Duration::from_secs(600),
        };
        let worker = PullWorker::new(config)
            .await
            .expect("a subscriber for the fake");
        let (sender, receiver) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let subscription = subscription.to_owned();
        tokio::spawn(async move {
            let _ = worker
                .run(
                    &subscription,
                    move |message: ReceivedMessage| {
                        let sender = sender.clone();
                        async move {
                            let data = serde_json::from_slice(&message.data)
                                .unwrap_or(serde_json::Value::Null);
                            let _ = sender.send(Published {
                                message_id: message.message_id,
                                attributes: message.attributes,
                                data,
                                ordering_key: message.ordering_key,
                            });
                            Disposition::Ack
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
        });
        Collector {
            receiver,
            stop: Some(stop),
        }
    }

    /// The next message, or `None` after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Published> {
        tokio::time::timeout(wait, self.receiver.recv())
            .await
            .ok()
            .flatten()
    }

    /// Everything that arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Published> {
        let mut all = Vec::new();
        while let Some(message) = self.next(wait).await {
            all.push(message);
        }
        all
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
