//! The accept loop of `promoter serve`: HTTP/1.1 on a bound listener, a deadline on each request's
//! headers and another on its body, graceful shutdown.
//!
//! `axum::serve` sets no timer, and hyper's HTTP/1 header read timeout does nothing without one
//! (<https://docs.rs/hyper/1/hyper/server/conn/http1/struct.Builder.html#method.header_read_timeout>),
//! so a client that stalls in the middle of its headers or its body held a connection and a task
//! for as long as it liked. Here hyper gets Tokio's timer, and each request body is wrapped in a
//! [`ReadDeadline`].
//!
//! Only HTTP/1.1 is served. Cloud Run hands requests to the container as HTTP/1 unless the service
//! is configured for end-to-end HTTP/2 (<https://cloud.google.com/run/docs/configuring/http2>),
//! which infra/ does not do; and both other routes would reopen the hole this closes: hyper-util's
//! automatic version detection waits for the first 24 bytes with no deadline, and hyper's HTTP/2
//! server has no header read timeout.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn StdError + Send + Sync>;

/// `PROMOTER_READ_TIMEOUT` when unset.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest read timeout accepted: Cloud Run's longest request timeout (60 min). Waiting longer
/// for a request than any request may last is a typo, and a bound keeps deadline arithmetic (hyper
/// adds the timeout to `Instant::now()`) far from overflow.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// How `serve` reads requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeSettings {
    /// How long a client may take to send a request's headers, counted from when the server starts
    /// reading them (for a kept-alive connection, from the end of the previous response, so this
    /// is also how long an idle connection stays open); then, once they are in, how long it may
    /// take to send the whole body.
    pub read_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

impl ServeSettings {
    /// The settings named by `read_timeout` (`PROMOTER_READ_TIMEOUT`'s value; `None`: the default).
    pub fn from_read_timeout(read_timeout: Option<&str>) -> Result<ServeSettings, String> {
        Ok(ServeSettings {
            read_timeout: match read_timeout {
                Some(text) => parse_read_timeout(text)?,
                None => DEFAULT_READ_TIMEOUT,
            },
        })
    }
}

/// A read timeout: a whole number with a unit, `ms`, `s`, `m` or `h` (`10s`, `1500ms`, `2m`), more
/// than zero and at most [`MAX_READ_TIMEOUT`].
pub fn parse_read_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = "expected a whole number with a unit, ms, s, m or h (e.g. 10s)";
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: {expected}"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(format!("{text:?}: {expected}")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    if duration > MAX_READ_TIMEOUT {
        return Err(format!(
            "{text:?}: must be at most {}s",
            MAX_READ_TIMEOUT.as_secs()
        ));
    }
    Ok(duration)
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish and closes idle connections; returns when every connection is closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        let service = RequestService {
            router: router.clone(),
            body_timeout: settings.read_timeout,
        };
        let connection = graceful.watch(http1.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away, or sent no complete headers in time (which includes a
            // kept-alive connection left idle that long): nothing to answer, nothing to retry.
            if let Err(error) = connection.await {
                tracing::debug!(peer = %peer, error = %error, "connection closed");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// What `accept` failing means. A connection reset before it was accepted is the client's business;
/// anything else (EMFILE: out of file descriptors) would fail again at once, so wait a little, as
/// hyper 0.14's server and `axum::serve` do.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "cannot accept connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The router, with each request's body under a [`ReadDeadline`].
#[derive(Clone)]
struct RequestService {
    router: Router,
    body_timeout: Duration,
}

impl hyper::service::Service<http::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let mut router = self.router.clone();
        let timeout = self.body_timeout;
        let request = request.map(|body| Body::new(ReadDeadline::new(body, timeout)));
        Box::pin(async move {
            // A Router is always ready; asking keeps to tower's contract all the same.
            std::future::poll_fn(|cx| {
                tower_service::Service::<http::Request<Body>>::poll_ready(&mut router, cx)
            })
            .await?;
            tower_service::Service::call(&mut router, request).await
        })
    }
}

/// The body did not arrive in time: the answer is 408 (`http::receive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReadTimeout {
    pub limit: Duration,
}

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body did not arrive within {:?} of its headers",
            self.limit
        )
    }
}

impl StdError for BodyReadTimeout {}

impl BodyReadTimeout {
    /// The timeout somewhere in `error`'s chain of sources (axum wraps body errors twice).
    pub fn find(error: &(dyn StdError + 'static)) -> Option<BodyReadTimeout> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(timeout) = error.downcast_ref::<BodyReadTimeout>() {
                return Some(*timeout);
            }
            next = error.source();
        }
        None
    }
}

/// A body that must be read whole within `limit` of the request's headers: a total deadline, not
/// one per frame, so a client that trickles a byte at a time cannot stretch it.
pub struct ReadDeadline<B> {
    body: B,
    limit: Duration,
    deadline: Instant,
    // Made the first time the body is not ready: a body that came in with its headers (most do)
    // never registers a timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> ReadDeadline<B> {
    pub fn new(body: B, limit: Duration) -> Self {
        ReadDeadline {
            body,
            limit,
            deadline: Instant::now() + limit,
            sleep: None,
        }
    }
}

impl<B> http_body::Body for ReadDeadline<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout { limit: this.limit }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[test]
    fn read_timeouts_parse() {
        assert_eq!(parse_read_timeout("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_read_timeout(" 1s "), Ok(Duration::from_secs(1)));
        assert_eq!(
            parse_read_timeout("1500ms"),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(parse_read_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_read_timeout("60m"), Ok(MAX_READ_TIMEOUT));
        assert_eq!(parse_read_timeout("1h"), Ok(MAX_READ_TIMEOUT));
        for bad in [
            "",
            "10",
            "s",
            "0s",
            "0ms",
            "-1s",
            "1.5s",
            "10 s",
            "2h",
            "61m",
            "3601s",
            "10sec",
            "1s2s",
            "1d",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_read_timeout(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            ServeSettings::from_read_timeout(None),
            Ok(ServeSettings::default())
        );
        assert_eq!(ServeSettings::default().read_timeout, DEFAULT_READ_TIMEOUT);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_a_complete_one_does_not() {
        use futures::StreamExt as _;
        let limit = Duration::from_millis(100);
        // Ten bytes, then nothing, ever: what a stalled client sends.
        let first: Result<Frame<bytes::Bytes>, BoxError> =
            Ok(Frame::data(bytes::Bytes::from_static(b"0123456789")));
        let stalled = http_body_util::StreamBody::new(
            futures::stream::iter([first]).chain(futures::stream::pending()),
        );
        let error = ReadDeadline::new(stalled, limit)
            .collect()
            .await
            .expect_err("a stalled body is an error");
        assert_eq!(
            BodyReadTimeout::find(&*error),
            Some(BodyReadTimeout { limit })
        );

        let whole = ReadDeadline::new(http_body_util::Full::new(bytes::Bytes::from("{}")), limit)
            .collect()
            .await
            .expect("a body that is there is read")
            .to_bytes();
        assert_eq!(&whole[..], b"{}");
    }
}
