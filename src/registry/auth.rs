//! Who promoter is at each registry (docs/configuration.md), and the secrets that prove it.
//!
//! A side of a copy (source or destination) resolves to one [`Credential`], in this order:
//! `*_ACCESS_TOKEN` → auth-override file → Google Application Default Credentials (Google
//! registries, or any host that docker's `config.json` hands to the `gcloud` helper, as
//! `gcloud auth configure-docker` sets up) → docker `config.json` (`auths`, `credHelpers`,
//! `credsStore`) → anonymous. Google access tokens are asked for at the start of every job: they
//! expire in about an hour, so a long-lived service must never hold one beyond its life (the
//! credentials refresh it before it expires).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::reference::RegistryHost;

/// The scope that lets an access token act on Artifact Registry and Container Registry.
const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Why a credential could not be had. Each names where it looked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The auth-override file could not be read or is not a Google credentials file.
    #[error("auth override file {path}: {cause}")]
    OverrideFile { path: PathBuf, cause: String },
    /// Google credentials could not be built or produced no access token.
    #[error("Google credentials for {registry}: {cause}")]
    Google {
        registry: String,
        cause: String,
        transient: bool,
    },
    /// docker's config.json could not be read or parsed.
    #[error("docker config {path}: {cause}")]
    DockerConfig { path: PathBuf, cause: String },
    /// A docker credential helper failed.
    #[error("docker credential helper docker-credential-{helper} for {registry}: {cause}")]
    CredentialHelper {
        helper: String,
        registry: String,
        cause: String,
    },
}

impl AuthError {
    /// Whether trying again later can help (a metadata server or token endpoint hiccup).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AuthError::Google {
                transient: true,
                ..
            }
        )
    }
}

/// A string that never prints: tokens, passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What is presented to a registry (or its token realm) as Basic credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    /// `user:password`. A Google access token is `oauth2accesstoken:<token>`, exactly as
    /// `gcloud auth configure-docker`'s helper presents it.
    Basic {
        username: String,
        password: Secret,
    },
}

impl Credential {
    pub fn google_access_token(token: &str) -> Self {
        Credential::Basic {
            username: "oauth2accesstoken".into(),
            password: Secret::new(token),
        }
    }

    /// The value of an `Authorization: Basic` header, if there is anything to present.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Anonymous => None,
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                BASE64.encode(format!("{username}:{}", password.expose()))
            )),
        }
    }

    /// A short description for messages: who, never the secret.
    pub fn describe(&self) -> String {
        match self {
            Credential::Anonymous => "anonymous".into(),
            Credential::Basic { username, .. } => format!("user {username}"),
        }
    }
}

/// How one side of a copy chooses its identity (from the command line or the service config).
#[derive(Clone, Debug, Default)]
pub struct IdentityChoice {
    /// An OAuth2 access token given outright (`SOURCE_ACCESS_TOKEN` / `DEST_ACCESS_TOKEN`).
    pub access_token: Option<Secret>,
    /// A Google credentials JSON file used instead of the ambient identity.
    pub override_file: Option<PathBuf>,
}

impl IdentityChoice {
    /// Resolves the credential for `registry`. Called once per job, so Google tokens are fresh.
    pub async fn resolve(&self, registry: &RegistryHost) -> Result<Credential, AuthError> {
        if let Some(token) = &self.access_token {
            return Ok(Credential::google_access_token(token.expose()));
        }
        if let Some(path) = &self.override_file {
            return google_token_from_file(path, registry).await;
        }
        let docker = DockerConfig::load()?;
        if registry.is_google() || docker.helper_for(registry).as_deref() == Some("gcloud") {
            return google_token_from_adc(registry).await;
        }
        docker.credential_for(registry).await
    }
}

async fn google_token_from_adc(registry: &RegistryHost) -> Result<Credential, AuthError> {
    let token = adc_access_token(registry.as_str()).await?;
    Ok(Credential::google_access_token(token.expose()))
}

/// An OAuth2 access token of the process's own identity (Application Default Credentials), for
/// `what` (a registry, or a Google API such as Cloud KMS): the token registries are given, and
/// the one the attester presents to Cloud KMS and Container Analysis.
pub async fn adc_access_token(what: &str) -> Result<Secret, AuthError> {
    let google_error = |cause: String, transient: bool| AuthError::Google {
        registry: what.to_owned(),
        cause,
        transient,
    };
    // One set of credentials per process: it caches the access token and refreshes it before it
    // expires, so every job presents a valid token without a metadata round trip per job.
    static ADC: tokio::sync::OnceCell<google_cloud_auth::credentials::AccessTokenCredentials> =
        tokio::sync::OnceCell::const_new();
    let credentials = ADC
        .get_or_try_init(|| async {
            google_cloud_auth::credentials::Builder::default()
                .with_scopes([CLOUD_PLATFORM_SCOPE])
                .build_access_token_credentials()
        })
        .await
        .map_err(|e| google_error(format!("no Application Default Credentials: {e}"), false))?;
    let token = credentials
        .access_token()
        .await
        .map_err(|e| google_error(format!("no access token: {e}"), e.is_transient()))?;
    Ok(Secret::new(token.token))
}

async fn google_token_from_file(
    path: &Path,
    registry: &RegistryHost,
) -> Result<Credential, AuthError> {
    use google_cloud_auth::credentials::{
        external_account, impersonated, service_account, user_account,
    };
    let file_error = |cause: String| AuthError::OverrideFile {
        path: path.to_owned(),
        cause,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| file_error(format!("not JSON: {e}")))?;
    let kind = json
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned();
    let scopes = [CLOUD_PLATFORM_SCOPE];
    let built = match kind.as_str() {
        "service_account" => service_account::Builder::new(json)
            .with_access_specifier(service_account::AccessSpecifier::from_scopes(scopes))
            .build_access_token_credentials(),
        "external_account" => external_account::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        "authorized_user" => user_account::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        "impersonated_service_account" => impersonated::Builder::new(json)
            .with_scopes(scopes)
            .build_access_token_credentials(),
        other => {
            return Err(file_error(format!(
                "type {other:?} is not a Google credentials file (expected service_account, external_account, authorized_user or impersonated_service_account)"
            )));
        }
    };
    let credentials = built.map_err(|e| file_error(e.to_string()))?;
    let token = credentials
        .access_token()
        .await
        .map_err(|e| AuthError::Google {
            registry: registry.to_string(),
            cause: format!("no access token from {}: {e}", path.display()),
            transient: e.is_transient(),
        })?;
    Ok(Credential::google_access_token(&token.token))
}

/// The parts of docker's `config.json` that say how to log in to a registry.
#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(skip)]
    path: PathBuf,
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl fmt::Debug for DockerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; absent means no credentials.
    fn load() -> Result<Self, AuthError> {
        let dir = std::env::var_os(crate::config::DOCKER_CONFIG)
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")));
        let Some(path) = dir.map(|d| d.join("config.json")) else {
            return Ok(DockerConfig::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig::default());
            }
            Err(e) => {
                return Err(AuthError::DockerConfig {
                    path,
                    cause: e.to_string(),
                });
            }
        };
        let mut config: DockerConfig =
            serde_json::from_str(&text).map_err(|e| AuthError::DockerConfig {
                path: path.clone(),
                cause: format!("not valid JSON: {e}"),
            })?;
        config.path = path;
        Ok(config)
    }

    /// The keys docker itself would look under for this registry.
    fn keys_for(registry: &RegistryHost) -> Vec<String> {
        let host = registry.as_str();
        let mut keys = vec![
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
        ];
        if host == RegistryHost::DOCKER_HUB {
            keys.push("https://index.docker.io/v1/".into());
        }
        keys
    }

    fn helper_for(&self, registry: &RegistryHost) -> Option<String> {
        Self::keys_for(registry)
            .iter()
            .find_map(|key| self.cred_helpers.get(key).cloned())
            .or_else(|| self.creds_store.clone())
    }

    async fn credential_for(&self, registry: &RegistryHost) -> Result<Credential, AuthError> {
        let entry = Self::keys_for(registry)
            .into_iter()
            .find_map(|key| self.auths.get(&key));
        if let Some(entry) = entry {
            let bad = |cause: &str| AuthError::DockerConfig {
                path: self.path.clone(),
                cause: format!("auths entry for {registry}: {cause}"),
            };
            if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                return Ok(Credential::Basic {
                    username: username.clone(),
                    password: Secret::new(password),
                });
            }
            if let Some(auth) = &entry.auth {
                let decoded = BASE64
                    .decode(auth.trim())
                    .map_err(|_| bad("\"auth\" is not base64"))?;
                let decoded =
                    String::from_utf8(decoded).map_err(|_| bad("\"auth\" is not UTF-8"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("\"auth\" is not user:password"))?;
                return Ok(Credential::Basic {
                    username: username.to_owned(),
                    password: Secret::new(password),
                });
            }
        }
        match self.helper_for(registry) {
            Some(helper) => run_credential_helper(&helper, registry).await,
            None => Ok(Credential::Anonymous),
        }
    }
}

/// Runs `docker-credential-<helper> get` as docker does: the server on stdin, JSON on stdout.
async fn run_credential_helper(
    helper: &str,
    registry: &RegistryHost,
) -> Result<Credential, AuthError> {
    use tokio::io::AsyncWriteExt as _;
    let helper_error = |cause: String| AuthError::CredentialHelper {
        helper: helper.to_owned(),
        registry: registry.to_string(),
        cause,
    };
    let mut child = tokio::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| helper_error(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(registry.as_str().as_bytes())
            .await
            .map_err(|e| helper_error(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| helper_error(e.to_string()))?;
    if !output.status.success() {
        // "credentials not found" (on stdout, as docker-credential-helpers print it) is how
        // helpers say "anonymous".
        let message = String::from_utf8_lossy(&output.stdout);
        if message.contains("credentials not found") {
            return Ok(Credential::Anonymous);
        }
        return Err(helper_error(format!("exited with {}", output.status)));
    }
    #[derive(Deserialize)]
    struct HelperAnswer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|e| helper_error(format!("answered something that is not its JSON: {e}")))?;
    Ok(Credential::Basic {
        username: answer.username,
        password: Secret::new(answer.secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let credential = Credential::google_access_token("ya29.very-secret");
        let printed = format!("{credential:?} {}", credential.describe());
        assert!(!printed.contains("very-secret"), "{printed}");
        assert_eq!(
            credential.basic_header().as_deref(),
            Some(
                format!(
                    "Basic {}",
                    BASE64.encode("oauth2accesstoken:ya29.very-secret")
                )
                .as_str()
            )
        );
    }

    #[tokio::test]
    async fn docker_config_auths_are_read_by_host() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"}},"credHelpers":{"europe-docker.pkg.dev":"gcloud"}}"#,
        )
        .expect("valid");
        let host = RegistryHost::try_from("127.0.0.1:5000").expect("valid");
        let credential = config.credential_for(&host).await.expect("found");
        assert_eq!(
            credential,
            Credential::Basic {
                username: "alice".into(),
                password: Secret::new("s3cret")
            }
        );
        let google = RegistryHost::try_from("europe-docker.pkg.dev").expect("valid");
        assert_eq!(config.helper_for(&google).as_deref(), Some("gcloud"));
        let other = RegistryHost::try_from("other.example").expect("valid");
        assert_eq!(
            config.credential_for(&other).await.expect("anonymous"),
            Credential::Anonymous
        );
    }
}
