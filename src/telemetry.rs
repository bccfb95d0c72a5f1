//! Logs: one JSON object per line in Cloud Logging's format (docs/configuration.md "Logs"), through
//! tracing-stackdriver, with the request's trace lifted to `logging.googleapis.com/trace` so Cloud
//! Logging groups a request's lines under its trace.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where the log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// A long-running process (`serve`, `pull`): stdout, which Cloud Run collects.
    Stdout,
    /// A command whose answer is its stdout (`reconcile`): the lines stay out of the answer.
    Stderr,
}

/// Installs the Cloud Logging JSON subscriber for the service. `project` names the Google Cloud
/// project for trace correlation (`projects/P/traces/T`).
pub fn init_service_logging(project: Option<String>, to: LogTo) {
    let filter =
        EnvFilter::try_from_env(crate::config::RUST_LOG).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = TraceLiftingWriter { project, to };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_stackdriver::layer().with_writer(writer))
        .try_init();
}

/// The trace id of a request, from W3C `traceparent` or Google's `X-Cloud-Trace-Context`.
pub fn trace_id(headers: &http::HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(traceparent) = header("traceparent") {
        // version-traceid-spanid-flags
        let mut parts = traceparent.split('-');
        if let (Some(_), Some(trace)) = (parts.next(), parts.next())
            && trace.len() == 32
            && trace.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Some(trace.to_ascii_lowercase());
        }
    }
    let context = header("x-cloud-trace-context")?;
    let trace = context.split('/').next()?.trim();
    (!trace.is_empty() && trace.len() <= 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| trace.to_owned())
}

/// Writes each line tracing-stackdriver formats, adding `logging.googleapis.com/trace` when the
/// line's request span carries a `trace` field. tracing-stackdriver only emits that key through
/// OpenTelemetry, which promoter does not otherwise need.
#[derive(Clone)]
struct TraceLiftingWriter {
    project: Option<String>,
    to: LogTo,
}

impl<'a> MakeWriter<'a> for TraceLiftingWriter {
    type Writer = LineWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            project: self.project.clone(),
            to: self.to,
            buffer: Vec::new(),
        }
    }
}

struct LineWriter {
    project: Option<String>,
    to: LogTo,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let line = lift_trace(&self.buffer, self.project.as_deref())
            .unwrap_or_else(|| self.buffer.clone());
        // Each line in one write, under the stream's lock, so concurrent lines never interleave.
        match self.to {
            LogTo::Stdout => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(&line);
                let _ = stdout.flush();
            }
            LogTo::Stderr => {
                let _ = std::io::stderr().lock().write_all(&line);
            }
        }
    }
}

fn lift_trace(line: &[u8], project: Option<&str>) -> Option<Vec<u8>> {
    // Lines outside a request (start-up, shutdown) have no trace: not worth parsing.
    if !line.windows(8).any(|w| w == b"\"trace\":") {
        return None;
    }
    let mut entry: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).ok()?;
    let trace = entry
        .get("spans")
        .and_then(|spans| spans.as_array())
        .and_then(|spans| {
            spans
                .iter()
                .find_map(|span| span.get("trace").and_then(|t| t.as_str()))
        })
        .map(str::to_owned)?;
    let value = match project {
        Some(project) => format!("projects/{project}/traces/{trace}"),
        None => trace,
    };
    entry.insert(
        "logging.googleapis.com/trace".into(),
        serde_json::Value::String(value),
    );
    let mut out = serde_json::to_vec(&entry).ok()?;
    out.push(b'\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_trace_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            trace_id(&headers).as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            trace_id(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn lifts_the_request_trace_into_cloud_loggings_key() {
        let line = br#"{"severity":"INFO","message":"decided","spans":[{"name":"request","trace":"abc123"}]}"#;
        let lifted: serde_json::Value =
            serde_json::from_slice(&lift_trace(line, Some("proj")).expect("lifted")).expect("json");
        assert_eq!(
            lifted["logging.googleapis.com/trace"],
            "projects/proj/traces/abc123"
        );
        assert_eq!(lifted["severity"], "INFO");
        assert!(lift_trace(br#"{"message":"no span"}"#, None).is_none());
    }
}
