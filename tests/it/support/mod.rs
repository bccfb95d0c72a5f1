//! Real parts for the tests, started on loopback by the tests themselves: the distribution
//! registry (`registry`), Google's metadata server and Artifact Registry's token realm faked at
//! the network boundary (`google`), a fault-injecting proxy (`proxy`), and the promoter binary.

pub mod google;
pub mod harness;
pub mod proxy;
pub mod pubsub;
pub mod registry;
pub mod service;

use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

pub use registry::{Auth, Registry};

/// The repository root, where `tools/make-image` lives.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port nobody listens on at the moment it is returned: only for tests where nobody listening
/// is the point (an unreachable registry; a service that must refuse to start before it binds).
/// Never hand it to something that should listen on it: another process can take it between this
/// returning and that binding. Whatever listens binds port 0 itself and says which port it got
/// (`Registry::start`, `ServiceProcess::start`, `PubSubFake::start`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// What `tools/make-image` pushed.
#[derive(Debug, serde::Deserialize)]
pub struct Seeded {
    pub digest: String,
}

impl Seeded {
    /// The cosign signature tag and the referrers fallback tag of the image.
    pub fn signature_tag(&self) -> String {
        format!("{}.sig", self.digest.replace(':', "-"))
    }
    pub fn fallback_tag(&self) -> String {
        self.digest.replace(':', "-")
    }
}

/// Writes an image with `tools/make-image ARGS` and pushes it with skopeo to `repository`.
pub fn seed(
    work: &Path,
    repository: &str,
    tag: &str,
    args: &[&str],
    creds: Option<&str>,
) -> Seeded {
    let layout = work.join(format!("layout-{}", rand_suffix()));
    let mut command = std::process::Command::new("python3");
    command
        .arg(repo_root().join("tools/make-image"))
        .arg(&layout)
        .args(["--tag", tag, "--push", repository])
        .args(args);
    if let Some(creds) = creds {
        command.args(["--creds", creds]);
    }
    let output = command.output().expect("python3 runs tools/make-image");
    assert!(
        output.status.success(),
        "make-image failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("make-image prints JSON")
}

/// The exact manifest bytes at `reference`, as skopeo sees them (the independent cross-check).
pub fn skopeo_raw(reference: &str, creds: Option<&str>) -> Option<Vec<u8>> {
    let mut command = std::process::Command::new("skopeo");
    command.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--creds", creds]);
    }
    let output = command
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo runs");
    output.status.success().then_some(output.stdout)
}

/// The tags of a repository, as skopeo lists them.
pub fn list_tags(repository: &str) -> Vec<String> {
    let output = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repository}"))
        .output()
        .expect("skopeo runs");
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    listing["Tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that every tag is byte-identical in both repositories.
pub fn assert_same_bytes(source: &str, destination: &str, tags: &[String], creds: Option<&str>) {
    for tag in tags {
        let from = skopeo_raw(&format!("{source}:{tag}"), creds)
            .unwrap_or_else(|| panic!("{source}:{tag} missing"));
        let to = skopeo_raw(&format!("{destination}:{tag}"), creds)
            .unwrap_or_else(|| panic!("{destination}:{tag} was not copied"));
        assert!(from == to, "{destination}:{tag} differs from the source");
    }
}

pub fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A promoter process with a clean environment: no docker config, no Google credentials,
/// nothing inherited that could change which identity it uses.
pub struct Promoter {
    home: TempDir,
    env: Vec<(String, String)>,
}

impl Promoter {
    pub fn new() -> Self {
        Promoter {
            home: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Writes `~/.docker/config.json`.
    pub fn docker_config(self, json: serde_json::Value) -> Self {
        let dir = self.home.path().join(".docker");
        std::fs::create_dir_all(&dir).expect("docker config dir");
        std::fs::write(dir.join("config.json"), json.to_string()).expect("docker config");
        self
    }

    pub async fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_promoter"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        // An empty ADC search path: no gcloud credentials of whoever runs the tests.
        command.env("CLOUDSDK_CONFIG", self.home.path().join("gcloud"));
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.output().await.expect("promoter runs")
    }
}

/// `promote IMAGE` between two stages of one registry, as corectl's flags spell it.
pub fn promote_args(host: &str, image: &str, from: &str, to: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "promote",
        image,
        "--source-registry",
        host,
        "--source-stage",
        from,
    ]
    .into_iter()
    .chain(["--dest-registry", host, "--dest-stage", to])
    .map(str::to_owned)
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The JSON report of a successful `--output json` run.
pub fn report(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "promoter failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
