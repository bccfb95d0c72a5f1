//! The CNCF distribution registry (`docker-registry` from Debian), one per test, on loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How the registry authenticates.
pub enum Auth {
    None,
    /// htpasswd basic auth with one user.
    Basic {
        user: String,
        password: String,
    },
    /// Token auth: `realm` answers with JWTs signed by the key whose certificate is `cert`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        cert: PathBuf,
    },
}

pub struct Registry {
    child: Child,
    config_path: PathBuf,
    dir: TempDir,
    pub port: u16,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = super::free_port();
        let auth_section = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let hash = bcrypt::hash(password, 5).expect("bcrypt");
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{user}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token {
                realm,
                service,
                issuer,
                cert,
            } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_section}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Self::spawn(&config_path, dir.path());
        let registry = Registry {
            child,
            config_path,
            dir,
            port,
        };
        registry.wait_ready();
        registry
    }

    fn spawn(config_path: &std::path::Path, dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))
            .expect("registry log");
        Command::new("docker-registry")
            .arg("serve")
            .arg(config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs (apt-get install docker-registry)")
    }

    /// Takes the registry down (an outage); [`Registry::restart`] brings it back with its content.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config_path, self.dir.path());
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "registry on port {} did not start: {}",
            self.port,
            self.log()
        );
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Requests the registry logged with this method on a path starting with `path_prefix`.
    pub fn requests(&self, method: &str, path_prefix: &str) -> usize {
        self.logged(method, path_prefix).count()
    }

    /// Requests the registry logged as succeeded (2xx).
    pub fn succeeded(&self, method: &str, path_prefix: &str) -> usize {
        self.logged(method, path_prefix)
            .filter(|l| l.contains("http.response.status=2"))
            .count()
    }

    fn logged(&self, method: &str, path_prefix: &str) -> std::vec::IntoIter<String> {
        let method = format!("http.request.method={method} ");
        // logrus quotes a value only when it has characters that need it.
        let quoted = format!("http.request.uri=\"{path_prefix}");
        let bare = format!("http.request.uri={path_prefix}");
        self.log()
            .lines()
            .filter(|l| l.contains("response completed") && l.contains(&method))
            .filter(|l| l.contains(&quoted) || l.contains(&bare))
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Blob upload requests (PATCH or PUT on an upload session) into `repository`.
    pub fn blob_uploads(&self, repository: &str) -> usize {
        let prefix = format!("/v2/{repository}/blobs/uploads/");
        self.requests("PUT", &prefix) + self.requests("PATCH", &prefix)
    }

    /// Deletes a blob's data from storage, as a broken or garbage-collected registry would have.
    pub fn lose_blob(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let path: PathBuf = self.dir.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        std::fs::remove_file(&path)
            .unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
