//! Publishing outbound CloudEvents to Pub/Sub (docs/events.md "Outbound events").
//!
//! Events go out in the CloudEvents Pub/Sub binding's binary mode: the event
//! attributes become `ce-*` message attributes, `data` is the message body and
//! `content-type` says what the body is.
//!
//! Build one [`EventPublisher`] per process, inside the Tokio runtime that will
//! use it, and share it (`Clone` is cheap): the underlying client keeps a gRPC
//! channel and spawns a background batching task on the runtime it was built
//! in; a publisher built in one runtime and used from another fails with
//! [`PublishError::Shutdown`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::retry_policy::RetryableErrors;

/// How long one publish may take, retries included, unless configured
/// otherwise. The client's own default is 600 s of retries, which would hold a
/// push request far past Pub/Sub's ack deadline when Pub/Sub is unreachable.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time on top of the retry budget before we stop waiting ourselves.
/// The retry policy normally ends the publish first (with the real error);
/// this guard only matters if something below it never completes.
const TIMEOUT_GRACE: Duration = Duration::from_secs(2);

/// Pub/Sub limits (https://cloud.google.com/pubsub/quotas#resource_limits).
/// Checked here so that oversize input is a clear permanent error instead of a
/// server `InvalidArgument` after a round trip.
const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 1024;
const MAX_ORDERING_KEY_BYTES: usize = 1024;
const MAX_MESSAGE_BYTES: usize = 10_000_000;

/// Why a publish (or building the publisher) failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The topic name is not `projects/P/topics/T`.
    #[error("invalid topic name {0:?}: want projects/PROJECT/topics/TOPIC")]
    InvalidTopic(String),
    /// The message breaks a Pub/Sub limit; retrying cannot help.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The client could not be built (credentials, endpoint).
    #[error("cannot create the Pub/Sub publisher: {0}")]
    Build(#[source] google_cloud_gax::client_builder::Error),
    /// The publish did not finish within the timeout plus a grace period.
    /// Normally the client's bounded retry budget ends first, as `Rpc`.
    #[error("publish did not complete within {0:?}")]
    Timeout(Duration),
    /// The RPC failed; `transient` says whether trying later can succeed.
    #[error("publish failed: {source}")]
    Rpc {
        transient: bool,
        #[source]
        source: std::sync::Arc<google_cloud_pubsub::Error>,
    },
    /// An earlier publish with the same ordering key failed, so the client
    /// refused this one to keep the key's order. The key has been resumed;
    /// publishing again can succeed.
    #[error("publishing was paused for this ordering key after an earlier failure")]
    OrderingKeyPaused,
    /// The publisher's background task is gone (runtime shutting down, or the
    /// publisher was built in another runtime).
    #[error("the publisher has shut down")]
    Shutdown,
    /// A failure this code does not know (the client's error type is
    /// `non_exhaustive`); treated as transient, the safe side for an event
    /// that must go out.
    #[error("publish failed: {0}")]
    Other(String),
}

impl PublishError {
    /// Whether the same publish can succeed later, i.e. whether an inbound
    /// delivery should be answered with 503 (Pub/Sub redelivers) rather than
    /// acked as permanently failed.
    pub fn is_transient(&self) -> bool {
        match self {
            PublishError::InvalidTopic(_) | PublishError::InvalidMessage(_) => false,
            PublishError::Build(_) => false,
            PublishError::Timeout(_) => true,
            PublishError::Rpc { transient, .. } => *transient,
            PublishError::OrderingKeyPaused => true,
            // The process is going away; another instance can publish it.
            PublishError::Shutdown => true,
            PublishError::Other(_) => true,
        }
    }
}

/// Classifies a client error: transient when it is about reaching the
/// service (unavailable, deadline, connection, retry budget spent), not about
/// the request itself (not found, permission denied, invalid argument).
fn is_transient_rpc(e: &google_cloud_pubsub::Error) -> bool {
    if e.is_timeout() || e.is_exhausted() {
        return true;
    }
    if let Some(status) = e.status() {
        return matches!(
            status.code,
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
        );
    }
    if let Some(code) = e.http_status_code() {
        return matches!(code, 408 | 429 | 500..=599);
    }
    // Credential errors say themselves whether they are transient (a
    // metadata-server hiccup is, a missing key file is not).
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<google_cloud_auth::errors::CredentialsError>() {
            return c.is_transient();
        }
        source = s.source();
    }
    // What is left are connection, I/O and transport failures: the service
    // was not reached, so trying again later is the right answer.
    true
}

/// One outbound CloudEvent, before it is mapped to Pub/Sub attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// `id`; derived from destination and digest so duplicates share it.
    pub id: String,
    /// `source`, e.g. `//promoter/{K_SERVICE}`.
    pub source: String,
    /// `type`: `promoted` or `promotion-rejected`.
    pub ty: String,
    /// `subject`: the destination reference.
    pub subject: Option<String>,
    /// `time`.
    pub time: DateTime<Utc>,
    /// The JSON body.
    pub data: Bytes,
    /// Pub/Sub ordering key (the destination repository). Empty: unordered.
    pub ordering_key: String,
}

impl OutboundEvent {
    /// The Pub/Sub attributes of the binary-mode binding.
    pub fn attributes(&self) -> HashMap<String, String> {
        let mut a = HashMap::with_capacity(7);
        a.insert("ce-specversion".into(), "1.0".into());
        a.insert("ce-id".into(), self.id.clone());
        a.insert("ce-source".into(), self.source.clone());
        a.insert("ce-type".into(), self.ty.clone());
        if let Some(subject) = &self.subject {
            a.insert("ce-subject".into(), subject.clone());
        }
        a.insert(
            "ce-time".into(),
            self.time.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        a.insert("content-type".into(), "application/json".into());
        a
    }
}

/// How to reach Pub/Sub.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// `Some("http://HOST:PORT")`: an emulator, plaintext and anonymous.
    /// `None`: pubsub.googleapis.com with Application Default Credentials.
    pub emulator_endpoint: Option<String>,
    /// Upper bound for one publish, retries included.
    pub timeout: Duration,
}

impl PublisherConfig {
    /// From the environment: `PUBSUB_EMULATOR_HOST`, default timeout.
    pub fn from_env() -> Self {
        Self {
            emulator_endpoint: crate::config::pubsub_emulator_endpoint(),
            timeout: DEFAULT_PUBLISH_TIMEOUT,
        }
    }
}

/// A publisher bound to one topic. Cheap to clone; build once per process.
#[derive(Debug, Clone)]
pub struct EventPublisher {
    inner: Publisher,
    topic: String,
    timeout: Duration,
}

impl EventPublisher {
    /// Connects as `PUBSUB_EMULATOR_HOST` says (see [`PublisherConfig::from_env`]).
    pub async fn from_env(topic: &str) -> Result<Self, PublishError> {
        Self::new(topic, PublisherConfig::from_env()).await
    }

    /// Builds the client. No RPC is made: the gRPC channel connects lazily on
    /// the first publish, so an unreachable service is reported by
    /// [`publish`](Self::publish), not here. Without any ADC configured this
    /// still succeeds (ADC falls back to the metadata server); publishes then
    /// fail, as transient, when the token fetch runs out of time.
    ///
    /// Cost: well under 1 ms for the emulator, ~100 ms with ADC (TLS setup).
    pub async fn new(topic: &str, config: PublisherConfig) -> Result<Self, PublishError> {
        validate_topic(topic)?;
        let mut builder = Publisher::builder(topic)
            // The client retries transient errors itself; bounding its retry
            // budget makes it give up with the real error (e.g. Unavailable)
            // instead of retrying for its default 10 minutes.
            .with_retry_policy(RetryableErrors.with_time_limit(config.timeout))
            // One event per request: wait at most 1 ms for company instead of
            // the default 10 ms before sending a batch.
            .set_delay_threshold(Duration::from_millis(1));
        if let Some(endpoint) = &config.emulator_endpoint {
            builder = builder.with_endpoint(endpoint.clone()).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let inner = builder.build().await.map_err(PublishError::Build)?;
        Ok(Self {
            inner,
            topic: topic.to_string(),
            timeout: config.timeout,
        })
    }

    /// The topic this publisher writes to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes one CloudEvent and returns the server-assigned message id.
    pub async fn publish_event(&self, event: &OutboundEvent) -> Result<String, PublishError> {
        self.publish(event.data.clone(), event.attributes(), &event.ordering_key)
            .await
    }

    /// Publishes one message and returns the server-assigned message id.
    ///
    /// Fails within the configured timeout (plus a small grace). A message
    /// whose publish timed out on our side may still reach the topic later:
    /// the client keeps it until its own retry budget is spent. Consumers
    /// must tolerate duplicates anyway (delivery is at least once).
    pub async fn publish(
        &self,
        data: Bytes,
        attributes: HashMap<String, String>,
        ordering_key: &str,
    ) -> Result<String, PublishError> {
        validate_message(&data, &attributes, ordering_key)?;
        let msg = Message::new()
            .set_data(data)
            .set_attributes(attributes)
            .set_ordering_key(ordering_key);
        let started = Instant::now();
        let result =
            match tokio::time::timeout(self.timeout + TIMEOUT_GRACE, self.inner.publish(msg)).await
            {
                Err(_elapsed) => Err(PublishError::Timeout(self.timeout)),
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => Err(map_publish_error(e)),
            };
        if result.is_err() && !ordering_key.is_empty() {
            // After a failure the client pauses the ordering key and refuses
            // every later message with that key until resumed, for the life of
            // the process. Our caller retries the whole event (via Pub/Sub
            // redelivery), so keep the key usable.
            self.inner.resume_publish(ordering_key);
        }
        tracing::debug!(
            topic = %self.topic,
            ordering_key,
            elapsed_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "pubsub publish"
        );
        result
    }

    /// Sends everything still buffered; call before the process exits.
    pub async fn flush(&self) {
        self.inner.flush().await;
    }
}

fn map_publish_error(e: google_cloud_pubsub::error::PublishError) -> PublishError {
    use google_cloud_pubsub::error::PublishError as E;
    match e {
        // A spent retry budget (`is_exhausted`) lands here too, carrying the
        // last attempt's error (e.g. connection refused): kept for the log.
        E::Rpc(source) => PublishError::Rpc {
            transient: is_transient_rpc(&source),
            source,
        },
        E::OrderingKeyPaused => PublishError::OrderingKeyPaused,
        E::Shutdown => PublishError::Shutdown,
        other => PublishError::Other(other.to_string()),
    }
}

fn validate_topic(topic: &str) -> Result<(), PublishError> {
    let parts: Vec<&str> = topic.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "topics", t] if !p.is_empty() && !t.is_empty() => Ok(()),
        _ => Err(PublishError::InvalidTopic(topic.to_string())),
    }
}

fn validate_message(
    data: &Bytes,
    attributes: &HashMap<String, String>,
    ordering_key: &str,
) -> Result<(), PublishError> {
    if ordering_key.len() > MAX_ORDERING_KEY_BYTES {
        return Err(PublishError::InvalidMessage(format!(
            "ordering key is {} bytes, limit {MAX_ORDERING_KEY_BYTES}",
            ordering_key.len()
        )));
    }
    let mut size = data.len() + ordering_key.len();
    for (k, v) in attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY_BYTES || k.starts_with("goog") {
            return Err(PublishError::InvalidMessage(format!(
                "attribute key {k:?} is empty, longer than {MAX_ATTRIBUTE_KEY_BYTES} bytes or reserved"
            )));
        }
        if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(PublishError::InvalidMessage(format!(
                "attribute {k:?} is {} bytes, limit {MAX_ATTRIBUTE_VALUE_BYTES}",
                v.len()
            )));
        }
        size += k.len() + v.len();
    }
    if size > MAX_MESSAGE_BYTES {
        return Err(PublishError::InvalidMessage(format!(
            "message is {size} bytes, limit {MAX_MESSAGE_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic("projects/p/topics/t").is_ok());
        for bad in [
            "",
            "projects/p/topics/",
            "projects/p/subscriptions/s",
            "t",
            "projects/p/topics/t/x",
        ] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_mode_attributes() {
        let ev = OutboundEvent {
            id: "abc".into(),
            source: "//promoter/test".into(),
            ty: "promoted".into(),
            subject: Some("reg/prod/app:1".into()),
            time: DateTime::from_timestamp(1_700_000_000, 5_000_000).unwrap_or_default(),
            data: Bytes::from_static(b"{}"),
            ordering_key: "reg/prod/app".into(),
        };
        let a = ev.attributes();
        assert_eq!(a["ce-specversion"], "1.0");
        assert_eq!(a["ce-time"], "2023-11-14T22:13:20.005Z");
        assert_eq!(a["content-type"], "application/json");
        assert_eq!(a.len(), 7);
    }

    #[test]
    fn limits() {
        let long = "x".repeat(1025);
        let attrs = HashMap::from([("k".to_string(), long.clone())]);
        assert!(validate_message(&Bytes::new(), &attrs, "").is_err());
        assert!(validate_message(&Bytes::new(), &HashMap::new(), &long).is_err());
        let reserved = HashMap::from([("googclient_x".to_string(), String::new())]);
        assert!(validate_message(&Bytes::new(), &reserved, "").is_err());
    }

    #[test]
    fn classification() {
        use google_cloud_gax::error::rpc::Status;
        let svc = |c| google_cloud_pubsub::Error::service(Status::default().set_code(c));
        assert!(is_transient_rpc(&svc(Code::Unavailable)));
        assert!(is_transient_rpc(&svc(Code::DeadlineExceeded)));
        assert!(!is_transient_rpc(&svc(Code::NotFound)));
        assert!(!is_transient_rpc(&svc(Code::PermissionDenied)));
        assert!(PublishError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(!PublishError::InvalidMessage(String::new()).is_transient());
    }
}
