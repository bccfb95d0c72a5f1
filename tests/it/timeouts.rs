//! Read timeouts of `promoter serve` (`PROMOTER_READ_TIMEOUT`), the real binary over real TCP:
//! a client that stalls in its headers or its body is answered 408 or disconnected, and the
//! service goes on answering everyone else.
//!
//! The clients here write raw bytes: an HTTP client library would not send half a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::service::ServiceProcess;

/// Far longer than the 1 s timeout the service runs with: the answer must come well before this,
/// but how much before is the machine's business, not the test's.
const PATIENCE: Duration = Duration::from_secs(15);

async fn service() -> ServiceProcess {
    ServiceProcess::start(&[
        ("PROMOTER_READ_TIMEOUT", "1s".to_owned()),
        ("PROMOTER_PUSH_AUTH", "none".to_owned()),
        // Never contacted: no request here gets as far as a decision.
        ("REGISTRY", "127.0.0.1:9".to_owned()),
    ])
    .await
}

/// Everything the server sends until it closes the connection. A reset counts as a close.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    match tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => answer,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => answer,
        Ok(Err(error)) => panic!("reading the answer failed: {error}"),
        Err(_) => panic!(
            "the connection was still open after {PATIENCE:?}; received so far: {:?}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

/// A stalled body's answer: nothing (closed), or a 408 in problem+json.
fn assert_408_or_closed(answer: &[u8], service: &ServiceProcess) {
    if answer.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(answer);
    assert!(
        text.starts_with("HTTP/1.1 408 "),
        "expected 408 or a closed connection, got: {text}\n{}",
        service.log()
    );
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{text}"
    );
    assert!(text.contains("\"status\":408"), "{text}");
}

async fn assert_still_healthy(service: &ServiceProcess) {
    let response = service
        .http
        .get(format!("{}/healthz", service.url))
        .send()
        .await
        .expect("the service still answers");
    assert_eq!(response.status(), 200, "{}", service.log());
}

const POST_HEADERS: &str =
    "POST / HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_or_a_closed_connection_and_the_service_still_answers() {
    let service = service().await;
    let mut client = TcpStream::connect(("127.0.0.1", service.port))
        .await
        .expect("connect");
    let request = format!("{POST_HEADERS}content-length: 1000\r\n\r\n{{\"message\"");
    assert_eq!(
        request.len() - request.find("\r\n\r\n").expect("headers") - 4,
        10
    );
    client
        .write_all(request.as_bytes())
        .await
        .expect("send the headers and 10 bytes of body");
    // ... and the other 990 never come.
    let answer = until_closed(&mut client).await;
    assert_408_or_closed(&answer, &service);
    if !answer.is_empty() {
        assert!(
            service.log().contains("did not arrive within"),
            "the refusal is logged: {}",
            service.log()
        );
    }
    assert_still_healthy(&service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_past_the_deadline_is_cut_off_too() {
    // The deadline is on the whole body, not on each chunk: a byte every 200 ms never lets a
    // 1 s per-chunk timeout fire, and would hold the connection for 20 s.
    let service = service().await;
    let mut client = TcpStream::connect(("127.0.0.1", service.port))
        .await
        .expect("connect");
    client
        .write_all(format!("{POST_HEADERS}content-length: 100\r\n\r\n").as_bytes())
        .await
        .expect("send the headers");
    let (mut reader, mut writer) = client.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let read = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer)).await;
    trickle.abort();
    match read {
        Ok(Ok(_)) => {}
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(error)) => panic!("reading the answer failed: {error}"),
        Err(_) => panic!("a trickling body held the connection for {PATIENCE:?}"),
    }
    assert_408_or_closed(&answer, &service);
    assert_still_healthy(&service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_line_is_disconnected() {
    let service = service().await;
    let mut client = TcpStream::connect(("127.0.0.1", service.port))
        .await
        .expect("connect");
    client.write_all(b"GET /heal").await.expect("send");
    let answer = until_closed(&mut client).await;
    assert!(
        answer.is_empty(),
        "stalled headers get the connection closed, not an answer: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_still_healthy(&service).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_on_a_stalled_client_beyond_the_read_timeout() {
    let mut service = service().await;
    let mut stalled = TcpStream::connect(("127.0.0.1", service.port))
        .await
        .expect("connect");
    stalled
        .write_all(format!("{POST_HEADERS}content-length: 1000\r\n\r\n{{").as_bytes())
        .await
        .expect("send");
    let exit = tokio::task::spawn_blocking(move || {
        let status = service.terminate(PATIENCE);
        (status, service)
    })
    .await
    .expect("terminate");
    let (status, service) = exit;
    assert!(
        status.is_some_and(|s| s.success()),
        "the service must exit cleanly: {status:?}\n{}",
        service.log()
    );
    let answer = until_closed(&mut stalled).await;
    assert_408_or_closed(&answer, &service);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_read_timeout_is_a_start_up_error_naming_the_variable() {
    for bad in ["10", "ten seconds", "0s", "2h"] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoter"))
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("PROMOTER_PUSH_AUTH", "none")
            .env("REGISTRY", "127.0.0.1:9")
            .env("PROMOTER_READ_TIMEOUT", bad)
            .output()
            .await
            .expect("promoter serve runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("PROMOTER_READ_TIMEOUT") && stderr.contains(bad),
            "{bad:?}: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&output.stdout).contains("\"serving\""),
            "{bad:?}: it must not start serving"
        );
    }
}
