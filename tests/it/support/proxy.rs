//! A reverse proxy in front of a real registry that injects the faults registries and networks
//! really produce: throttling with `Retry-After`, server errors, connections dropped mid-stream.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

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
            let _ = axum::serve(listener, router).await;
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

    async fn forward(State(proxy): State<FaultProxy>, request: Request) -> Response {
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
