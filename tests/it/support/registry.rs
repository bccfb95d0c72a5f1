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

/// How a config names the address to listen on before the registry has chosen a port.
const ANY_PORT: &str = "127.0.0.1:0";

impl Registry {
    /// Starts a registry on a port it binds itself (`http.addr: 127.0.0.1:0`) and reads from its
    /// log: no port is chosen here and handed over, so none can be taken by another process in
    /// between.
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
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
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {ANY_PORT}\n{auth_section}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let child = Self::spawn(&config_path, dir.path());
        let mut registry = Registry {
            child,
            config_path,
            dir,
            port: 0,
        };
        registry.port = registry.wait_listening(0);
        // A restart (after an outage) must come back where the clients know it is.
        let config = std::fs::read_to_string(&registry.config_path).expect("registry config");
        std::fs::write(
            &registry.config_path,
            config.replace(ANY_PORT, &format!("127.0.0.1:{}", registry.port)),
        )
        .expect("registry config");
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

    /// Brings the registry back on the same address with the same content. The port was free
    /// for the outage; if another process took it meanwhile, this fails, naming the log.
    pub fn restart(&mut self) {
        let before = self.listening_lines().len();
        self.child = Self::spawn(&self.config_path, self.dir.path());
        let port = self.wait_listening(before);
        assert_eq!(port, self.port, "the registry came back on another port");
    }

    /// The port of the first "listening on" line after the first `skip` of them (distribution
    /// logs it once it has bound, with the address bound), waiting for it.
    fn wait_listening(&mut self, skip: usize) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = self.listening_lines().get(skip) {
                return *port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the registry exited ({status}) before listening: {}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "the registry logged no \"listening on\" line: {}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The ports of every `msg="listening on 127.0.0.1:PORT"` line of the log, in order.
    fn listening_lines(&self) -> Vec<u16> {
        self.log()
            .lines()
            .filter_map(|line| {
                let (_, rest) = line.split_once("msg=\"listening on ")?;
                let (address, _) = rest.split_once('"')?;
                address.rsplit(':').next()?.parse().ok()
            })
            .collect()
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
