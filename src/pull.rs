//! The `promoter pull --subscription projects/P/subscriptions/S` worker:
//! StreamingPull, one handler call per message, ack or nack by its answer.
//!
//! Delivery is at least once: the same message id can arrive twice, so the
//! handler must be idempotent (it is the same handling as push deliveries).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use google_cloud_pubsub::client::Subscriber;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What the handler decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Done with it (including "permanently bad, logged"): never redeliver.
    Ack,
    /// Could not handle it now (transient failure): redeliver soon.
    Nack,
}

/// A message as delivered by the subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The subscription it came from (the CloudEvent `source` fallback).
    pub subscription: String,
    /// The body.
    pub data: Bytes,
    /// Message attributes (`ce-*`, `content-type`, ...).
    pub attributes: HashMap<String, String>,
    /// Server-assigned id (the CloudEvent `id` fallback); the same on every
    /// redelivery.
    pub message_id: String,
    /// When Pub/Sub accepted the message.
    pub publish_time: Option<DateTime<Utc>>,
    /// Empty when published without one.
    pub ordering_key: String,
    /// Set only when the subscription has a dead-letter policy.
    pub delivery_attempt: Option<i32>,
}

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The subscription name is not `projects/P/subscriptions/S`.
    #[error("invalid subscription name {0:?}: want projects/PROJECT/subscriptions/SUBSCRIPTION")]
    InvalidSubscription(String),
    /// The client could not be built (credentials, endpoint).
    #[error("cannot create the Pub/Sub subscriber: {0}")]
    Build(#[source] google_cloud_gax::client_builder::Error),
    /// The stream failed permanently (e.g. the subscription does not exist,
    /// or permission denied). Transient failures are retried by the client
    /// and never end up here.
    #[error("streaming pull failed: {0}")]
    Stream(#[source] google_cloud_pubsub::Error),
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// `Some("http://HOST:PORT")`: an emulator, plaintext and anonymous.
    /// `None`: pubsub.googleapis.com with Application Default Credentials.
    pub emulator_endpoint: Option<String>,
    /// Handlers running at once. 1 keeps each ordering key's messages in
    /// order (they are handled one after the other, in delivery order);
    /// more is faster but gives up that order.
    pub max_concurrent: usize,
    /// Messages the server may hand this worker before it acks any.
    pub max_outstanding_messages: i64,
    /// Longest time the client keeps a message leased (it extends the ack
    /// deadline while the handler runs). Default 60 min; a handler running
    /// longer loses the message to redelivery.
    pub max_lease: Duration,
}

impl PullConfig {
    /// From the environment (`PUBSUB_EMULATOR_HOST`), one handler at a time.
    pub fn from_env() -> Self {
        Self {
            emulator_endpoint: crate::config::pubsub_emulator_endpoint(),
            max_concurrent: 1,
            // Small: messages held unprocessed in this worker are invisible to
            // other workers until their lease lapses.
            max_outstanding_messages: 10,
            max_lease: Duration::from_secs(60 * 60),
        }
    }
}

/// Counts of what a run did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PullSummary {
    pub received: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Handlers that panicked; their messages were nacked.
    pub panicked: u64,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    nacked: AtomicU64,
}

/// A connected subscriber client. Build once; [`run`](Self::run) may be
/// called for several subscriptions.
#[derive(Debug, Clone)]
pub struct PullWorker {
    subscriber: Subscriber,
    config: PullConfig,
}

impl PullWorker {
    /// Connects as the environment says (see [`PullConfig::from_env`]).
    pub async fn from_env() -> Result<Self, PullError> {
        Self::new(PullConfig::from_env()).await
    }

    /// Builds the client; no RPC is made until [`run`](Self::run).
    pub async fn new(config: PullConfig) -> Result<Self, PullError> {
        let mut builder = Subscriber::builder();
        if let Some(endpoint) = &config.emulator_endpoint {
            builder = builder.with_endpoint(endpoint.clone()).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let subscriber = builder.build().await.map_err(PullError::Build)?;
        Ok(Self { subscriber, config })
    }

    /// Pulls from `subscription` until `shutdown` completes, calling `handler`
    /// for each message and acking or nacking by its answer.
    ///
    /// On shutdown it stops taking new messages, waits for running handlers,
    /// then lets the client send the pending acks before returning. Messages
    /// the client had received but not yet handed out are redelivered later.
    /// A handler that panics nacks its message.
    ///
    /// Returns an error only for permanent stream failures; while Pub/Sub is
    /// unreachable it keeps reconnecting (with backoff) instead.
    pub async fn run<H, F, S>(
        &self,
        subscription: &str,
        handler: H,
        shutdown: S,
    ) -> Result<PullSummary, PullError>
    where
        H: Fn(ReceivedMessage) -> F + Send + Sync + 'static,
        F: Future<Output = Disposition> + Send + 'static,
        S: Future<Output = ()>,
    {
        validate_subscription(subscription)?;
        let handler = Arc::new(handler);
        let counters = Arc::new(Counters::default());
        let permits = Arc::new(Semaphore::new(self.config.max_concurrent.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut summary = PullSummary::default();

        let mut stream = self
            .subscriber
            .subscribe(subscription)
            .set_max_outstanding_messages(self.config.max_outstanding_messages)
            .set_max_lease(self.config.max_lease)
            .build();
        let token = stream.shutdown_token();
        tokio::pin!(shutdown);

        let result = loop {
            // Reap finished handlers as we go so panics are counted (and the
            // JoinSet does not grow without bound).
            while let Some(joined) = tasks.try_join_next() {
                note_join(joined, &mut summary);
            }
            // Wait for a free handler slot first, so we only take a message
            // from the stream when it can be handled at once (keeps order
            // with max_concurrent = 1, and leaves the rest for other workers).
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_closed) => break Ok(()), // never closed; be safe anyway
                },
            };
            let next = tokio::select! {
                biased;
                () = &mut shutdown => break Ok(()),
                n = stream.next() => n,
            };
            let (message, ack_handle) = match next {
                None => break Ok(()), // the client closed the stream
                Some(Err(e)) => break Err(PullError::Stream(e)),
                Some(Ok(pair)) => pair,
            };
            summary.received += 1;
            let received = ReceivedMessage {
                subscription: subscription.to_string(),
                delivery_attempt: ack_handle.delivery_attempt(),
                publish_time: message.publish_time.and_then(|t| {
                    std::time::SystemTime::try_from(t)
                        .ok()
                        .map(DateTime::<Utc>::from)
                }),
                data: message.data,
                attributes: message.attributes,
                message_id: message.message_id,
                ordering_key: message.ordering_key,
            };
            let handler = Arc::clone(&handler);
            let counters = Arc::clone(&counters);
            tasks.spawn(async move {
                let _permit = permit;
                // If the handler panics, `ack_handle` is dropped unanswered,
                // and dropping it nacks the message.
                match handler(received).await {
                    Disposition::Ack => {
                        ack_handle.ack();
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Disposition::Nack => {
                        ack_handle.nack();
                        counters.nacked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        };

        while let Some(joined) = tasks.join_next().await {
            note_join(joined, &mut summary);
        }
        // Signals the client to stop and waits until it has sent the acks and
        // nacks queued above.
        token.shutdown().await;
        summary.acked = counters.acked.load(Ordering::Relaxed);
        summary.nacked = counters.nacked.load(Ordering::Relaxed);
        result.map(|()| summary)
    }
}

fn note_join(joined: Result<(), tokio::task::JoinError>, summary: &mut PullSummary) {
    if let Err(e) = joined {
        summary.panicked += 1;
        tracing::error!(error = %e, "pull handler panicked; message nacked");
    }
}

fn validate_subscription(name: &str) -> Result<(), PullError> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", p, "subscriptions", s] if !p.is_empty() && !s.is_empty() => Ok(()),
        _ => Err(PullError::InvalidSubscription(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::validate_subscription;

    #[test]
    fn subscription_names() {
        assert!(validate_subscription("projects/p/subscriptions/s").is_ok());
        for bad in ["", "projects/p/topics/t", "s", "projects//subscriptions/s"] {
            assert!(validate_subscription(bad).is_err(), "{bad}");
        }
    }
}
