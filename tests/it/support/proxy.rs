//! A reverse proxy in front of a real registry that injects the faults registries and networks
//! really produce: throttling with `Retry-After`, server errors, connections dropped mid-stream
//! or before any answer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// What to do to a matching request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds) without forwarding.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Forward, then cut the response body after this many bytes (the connection drops).
    CutBody { after: usize },
    /// Read the request, forward nothing, and close the connection without an answer: a
    /// registry or load balancer that died while the request was in flight.
    DropConnection,
}

#[derive(Clone, Debug)]
struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    times: usize,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub at: Instant,
    pub faulted: bool,
}

#[derive(Clone)]
pub struct FaultProxy {
    upstream: String,
    http: reqwest::Client,
    rules: Arc<Mutex<Vec<Rule>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub host: String,
}

impl FaultProxy {
    pub async fn start(upstream_host: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let host = listener.local_addr().expect("address").to_string();
        let proxy = FaultProxy {
            upstream: format!("http://{upstream_host}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            rules: Arc::default(),
            seen: Arc::default(),
            host,
        };
        let router = Router::new()
            .fallback(Self::forward)
            .with_state(proxy.clone());
        tokio::spawn(async move {
            let _ = axum::serve(
                FaultListener(listener),
                router.into_make_service_with_connect_info::<KillSwitch>(),
            )
            .await;
        });
        proxy
    }

    /// Applies `fault` to the next `times` requests with `method` whose path contains `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().expect("lock").push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            times,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().expect("lock");
        let rule = rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains))?;
        rule.times -= 1;
        Some(rule.fault.clone())
    }

    async fn forward(
        State(proxy): State<FaultProxy>,
        ConnectInfo(connection): ConnectInfo<KillSwitch>,
        request: Request,
    ) -> Response {
        let method = request.method().to_string();
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let fault = proxy.take_fault(&method, &path_and_query);
        proxy.seen.lock().expect("lock").push(Seen {
            path: path_and_query.clone(),
            at: Instant::now(),
            faulted: fault.is_some(),
        });
        if let Some(Fault::Status {
            status,
            retry_after,
        }) = fault
        {
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "injected fault",
            )
                .into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(seconds));
            }
            // Drain the request body so the client is not left writing into a closed socket.
            let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
            return response;
        }
        if let Some(Fault::DropConnection) = fault {
            let _ = axum::body::to_bytes(request.into_body(), usize::MAX).await;
            // Every later read or write on this connection fails, so hyper closes it without
            // writing this response: the client sees the connection end with no answer.
            connection.kill();
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let (parts, body) = request.into_parts();
        let mut upstream = proxy
            .http
            .request(
                parts.method.clone(),
                format!("{}{path_and_query}", proxy.upstream),
            )
            .body(reqwest::Body::wrap_stream(body.into_data_stream()));
        for (name, value) in &parts.headers {
            if name != "connection" && name != "transfer-encoding" {
                upstream = upstream.header(name, value);
            }
        }
        let response = match upstream.send().await {
            Ok(response) => response,
            Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
        let mut builder = Response::builder().status(response.status().as_u16());
        for (name, value) in response.headers() {
            if name != "connection" && name != "transfer-encoding" {
                builder = builder.header(
                    HeaderName::from_bytes(name.as_str().as_bytes()).expect("name"),
                    value.as_bytes(),
                );
            }
        }
        let stream = response.bytes_stream();
        let body = match fault {
            Some(Fault::CutBody { after }) => {
                let mut sent = 0usize;
                Body::from_stream(stream.map(move |chunk| {
                    let chunk = chunk.map_err(std::io::Error::other)?;
                    if sent + chunk.len() > after {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "injected cut",
                        ));
                    }
                    sent += chunk.len();
                    Ok(chunk)
                }))
            }
            _ => Body::from_stream(stream),
        };
        builder
            .body(body)
            .unwrap_or_else(|e| (StatusCode::BAD_GATEWAY, e.to_string()).into_response())
    }
}

/// Lets a fault end the connection its request came on.
#[derive(Clone, Default)]
struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "injected dropped connection",
            ))
        } else {
            Ok(())
        }
    }
}

/// The proxy's listener: each connection it accepts carries a [`KillSwitch`].
struct FaultListener(TcpListener);

impl Listener for FaultListener {
    type Io = KillableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // A failed accept (the peer gave up first) leaves the listener usable.
            if let Ok((stream, address)) = self.0.accept().await {
                let stream = KillableStream {
                    stream,
                    switch: KillSwitch::default(),
                };
                return (stream, address);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, FaultListener>> for KillSwitch {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.io().switch.clone()
    }
}

/// A TCP stream whose reads and writes fail once its switch is killed.
struct KillableStream {
    stream: TcpStream,
    switch: KillSwitch,
}

impl AsyncRead for KillableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.switch.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.switch.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.switch.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
