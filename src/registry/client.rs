//! The Registry HTTP API (OCI distribution spec) as promoter needs it: raw manifests, streamed
//! blobs, cross-repository mounts, tag lists and referrers, behind the registry's auth handshake
//! and a retry policy that honours `Retry-After`.
//!
//! Built on reqwest rather than oci-client's `Client` because the copy needs what that client does
//! not do (NOTES.md): raw manifest bytes with their Content-Type, monolithic streamed uploads, a
//! mount that may answer 202, retries, and a fresh identity per job.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;

use super::auth::{Credential, IdentityChoice, Secret};
use super::manifest::{Descriptor, RawManifest};
use super::{Digest, RegistryError, RegistryHost, Repository, is_retryable_status};

/// Every manifest kind the copy engine copies, in the order a registry should prefer.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Registries refuse manifests over 4 MiB (distribution's limit); so do we, before buffering one.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How often and how patiently a request is retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Sends what `request` builds, again after a connection failure or a 408/429/5xx, waiting
    /// as the answer's `Retry-After` says or backing off. Returns the last answer or error.
    pub async fn send(
        &self,
        what: &str,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Response, reqwest::Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match request().send().await {
                Ok(response)
                    if is_retryable_status(response.status().as_u16())
                        && attempt < self.attempts =>
                {
                    let wait = self.delay(attempt, retry_after(response.headers()));
                    tracing::debug!(what, status = %response.status(), ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(error) if attempt < self.attempts => {
                    let wait = self.delay(attempt, None);
                    tracing::debug!(what, %error, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                answer => return answer,
            }
        }
    }

    /// The wait before attempt `attempt + 1`: the registry's `Retry-After` when it gave one
    /// (capped), else exponential backoff with jitter.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_delay);
        }
        let exponential = self.base_delay.saturating_mul(2u32.saturating_pow(attempt));
        let jitter = rand::random_range(0.5..1.0);
        exponential.min(self.max_delay).mul_f64(jitter)
    }
}

/// The process-wide HTTP machinery: one connection pool, and which hosts speak plain HTTP.
#[derive(Clone, Debug)]
pub struct Transport {
    http: reqwest::Client,
    insecure_hosts: Arc<Vec<String>>,
    pub retry: RetryPolicy,
}

impl Transport {
    /// `insecure_hosts` are `host:port` entries reached over plain HTTP besides loopback
    /// (`PROMOTER_INSECURE_REGISTRIES`).
    pub fn new(insecure_hosts: Vec<String>) -> Result<Self, RegistryError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("promoter/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A stalled stream must fail (and be retried) rather than hang a promotion forever.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .build()
            .map_err(|e| RegistryError::Unreachable {
                registry: "(any)".into(),
                what: "building the HTTP client".into(),
                cause: e.to_string(),
            })?;
        Ok(Transport {
            http,
            insecure_hosts: Arc::new(
                insecure_hosts
                    .into_iter()
                    .map(|h| h.trim().to_ascii_lowercase())
                    .collect(),
            ),
            retry: RetryPolicy::default(),
        })
    }

    fn scheme_for(&self, registry: &RegistryHost) -> &'static str {
        if registry.is_loopback() || self.insecure_hosts.iter().any(|h| h == registry.as_str()) {
            "http"
        } else {
            "https"
        }
    }

    /// A client for one job on `repository`: the identity's credential for its registry, asked
    /// now (a fresh token per job, DESIGN.md §4), and a token covering `actions` there and, on
    /// the same host, pull on `mount_from` (a cross-repository mount needs both in one token).
    pub async fn job_client(
        &self,
        identity: &IdentityChoice,
        repository: &Repository,
        actions: &str,
        mount_from: Option<&Repository>,
    ) -> Result<RegistryClient, RegistryError> {
        let credential = identity.resolve(&repository.registry).await?;
        let mut scopes = vec![scope(repository, actions)];
        if let Some(from) = mount_from.filter(|from| from.registry == repository.registry) {
            scopes.push(scope(from, "pull"));
        }
        Ok(self.client(repository.registry.clone(), credential, scopes))
    }

    /// A client for one registry and one job, holding that job's credential and the scopes it
    /// needs (`repository:NAME:pull` / `pull,push`), asked for in one token.
    pub fn client(
        &self,
        registry: RegistryHost,
        credential: Credential,
        scopes: Vec<String>,
    ) -> RegistryClient {
        let base = format!("{}://{}", self.scheme_for(&registry), registry.api_host());
        RegistryClient {
            transport: self.clone(),
            registry,
            base,
            credential,
            scopes,
            authorization: Mutex::new(None),
            lacks_referrers_api: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// The scope string of the token auth spec for a repository.
pub fn scope(repository: &Repository, actions: &str) -> String {
    format!("repository:{}:{actions}", repository.path)
}

/// A registry, as one job sees it.
pub struct RegistryClient {
    transport: Transport,
    registry: RegistryHost,
    base: String,
    credential: Credential,
    scopes: Vec<String>,
    /// The `Authorization` header value learned from the registry's challenge.
    authorization: Mutex<Option<Secret>>,
    /// The registry answered 404 to the referrers API once: it does not have it (OCI
    /// distribution spec: a registry with the API answers 200, with an empty index if need be).
    lacks_referrers_api: std::sync::atomic::AtomicBool,
}

/// What a cross-repository mount request achieved.
pub enum MountOutcome {
    /// The blob is now in the destination repository; no bytes moved.
    Mounted,
    /// The registry declined and opened an upload session instead (a legal 202).
    UploadAt(String),
}

/// What a manifest PUT told us.
pub struct PutManifestOutcome {
    /// The registry indexes `subject` itself (OCI 1.1 referrers API), so no fallback tag is needed.
    pub registry_tracks_subject: bool,
}

impl RegistryClient {
    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.transport.retry
    }

    fn url(&self, repository: &Repository, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, repository.path)
    }

    /// Forgets the current token, so the next request repeats the handshake.
    pub async fn invalidate_authorization(&self) {
        *self.authorization.lock().await = None;
    }

    /// Sends a request with the current authorization, answering one 401 challenge, retrying
    /// transient failures. `what` describes the request for error messages.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, RegistryError> {
        let mut answered_challenge = false;
        loop {
            let authorization = self.authorization.lock().await.clone();
            let build = || {
                let mut request = self
                    .transport
                    .http
                    .request(method.clone(), url)
                    .headers(headers.clone());
                if let Some(authorization) = &authorization {
                    request = request.header(header::AUTHORIZATION, authorization.expose());
                }
                if let Some(body) = &body {
                    request = request.body(body.clone());
                }
                request
            };
            let response = self
                .transport
                .retry
                .send(what, build)
                .await
                .map_err(|error| self.unreachable(what, &error))?;
            if response.status() == StatusCode::UNAUTHORIZED && !answered_challenge {
                answered_challenge = true;
                self.answer_challenge(response.headers()).await?;
                continue;
            }
            return Ok(response);
        }
    }

    /// Sends once with a body that cannot be replayed (a streamed blob). The caller retries.
    pub async fn send_stream(
        &self,
        what: &str,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: reqwest::Body,
    ) -> Result<Response, RegistryError> {
        let mut request = self
            .transport
            .http
            .request(method, url)
            .headers(headers)
            .body(body);
        if let Some(authorization) = self.authorization.lock().await.as_ref() {
            request = request.header(header::AUTHORIZATION, authorization.expose());
        }
        request.send().await.map_err(|e| self.unreachable(what, &e))
    }

    fn unreachable(&self, what: &str, error: &reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            registry: self.registry.to_string(),
            what: what.to_owned(),
            cause: error_chain(error),
        }
    }

    /// Turns an unexpected response into an error naming the request and the registry's words.
    pub async fn error_from(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        let detail = registry_error_detail(&body);
        if status == 401 || status == 403 {
            return RegistryError::Unauthorized {
                registry: self.registry.to_string(),
                scope: what.to_owned(),
                credential: self.credential.describe(),
                detail,
            };
        }
        RegistryError::Status {
            registry: self.registry.to_string(),
            what: what.to_owned(),
            status,
            detail,
        }
    }

    /// Answers a `WWW-Authenticate` challenge: Basic gets the credential; Bearer gets a token
    /// from the realm for every scope this job needs.
    async fn answer_challenge(&self, headers: &HeaderMap) -> Result<(), RegistryError> {
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(Challenge::parse)
            .unwrap_or_default();
        let authorization = match challenge.scheme.to_ascii_lowercase().as_str() {
            "bearer" => Some(self.fetch_token(&challenge).await?),
            // A Basic challenge with nothing to present leaves the 401 for the caller to report.
            _ => self.credential.basic_header().map(Secret::new),
        };
        *self.authorization.lock().await = authorization;
        Ok(())
    }

    async fn fetch_token(&self, challenge: &Challenge) -> Result<Secret, RegistryError> {
        let realm = challenge.param("realm").unwrap_or_default();
        let realm_error = |cause: String, transient: bool| RegistryError::TokenRealm {
            registry: self.registry.to_string(),
            realm: realm.to_owned(),
            cause,
            transient,
        };
        let realm_url =
            url::Url::parse(realm).map_err(|e| realm_error(format!("not a URL: {e}"), false))?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(("service", service));
        }
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        if let Some(asked) = challenge.param("scope") {
            scopes.extend(asked.split(' '));
        }
        scopes.sort_unstable();
        scopes.dedup();
        query.extend(scopes.iter().map(|s| ("scope", *s)));

        // DESIGN.md §4: credentials go only to the registries named. A realm on another host
        // (a malicious or misconfigured registry could name any) gets an anonymous request.
        let basic = if self.realm_may_see_credentials(&realm_url) {
            self.credential.basic_header()
        } else {
            if self.credential != Credential::Anonymous {
                tracing::warn!(registry = %self.registry, realm = %realm_url.host_str().unwrap_or_default(),
                    "token realm is on another host; asking it anonymously");
            }
            None
        };
        let build = || {
            let request = self.transport.http.get(realm_url.clone()).query(&query);
            match &basic {
                Some(basic) => request.header(header::AUTHORIZATION, basic),
                None => request,
            }
        };
        let response = self
            .transport
            .retry
            .send("token request", build)
            .await
            .map_err(|e| realm_error(error_chain(&e), true))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.to_string(),
                    scope: scopes.join(" "),
                    credential: self.credential.describe(),
                    detail: registry_error_detail(&body),
                });
            }
            return Err(realm_error(
                format!("answered {status}{}", registry_error_detail(&body)),
                is_retryable_status(status.as_u16()),
            ));
        }
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| realm_error(format!("answer is not a token: {e}"), false))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| realm_error("answer has no token".into(), false))?;
        Ok(Secret::new(format!("Bearer {token}")))
    }

    fn realm_may_see_credentials(&self, realm: &url::Url) -> bool {
        let Some(realm_host) = realm.host_str() else {
            return false;
        };
        let registry_host = self
            .registry
            .hostname()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let realm_host = realm_host.trim_start_matches('[').trim_end_matches(']');
        realm_host.eq_ignore_ascii_case(registry_host)
            || (self.registry.as_str() == RegistryHost::DOCKER_HUB
                && realm_host == "auth.docker.io")
    }

    /// Fetches a manifest's exact bytes. `None` when the registry does not have it.
    pub async fn get_manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<RawManifest>, RegistryError> {
        let what = format!("GET manifest {repository}:{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let url = self.url(repository, &format!("manifests/{reference}"));
        let response = self.send(&what, Method::GET, &url, headers, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.error_from(&what, response).await);
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_MANIFEST_BYTES)
        {
            return Err(RegistryError::BadManifest {
                image: format!("{repository}:{reference}"),
                cause: format!("manifest is larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(&what, &e))?;
        RawManifest::new(bytes, content_type)
            .map(Some)
            .map_err(|cause| RegistryError::BadManifest {
                image: format!("{repository}:{reference}"),
                cause,
            })
    }

    /// The digest a tag or digest resolves to, without fetching the manifest. `None` when absent.
    pub async fn head_manifest(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        Ok(self
            .head_descriptor(repository, reference)
            .await?
            .map(|(digest, _)| digest))
    }

    /// What a tag or digest resolves to — digest, and a descriptor to name it as a `subject` —
    /// without fetching the manifest. `None` when absent.
    pub async fn head_descriptor(
        &self,
        repository: &Repository,
        reference: &str,
    ) -> Result<Option<(Digest, Descriptor)>, RegistryError> {
        let what = format!("HEAD manifest {repository}:{reference}");
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let url = self.url(repository, &format!("manifests/{reference}"));
        let response = self.send(&what, Method::HEAD, &url, headers, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.error_from(&what, response).await);
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
        let digest = header("docker-content-digest").and_then(|v| Digest::try_from(v).ok());
        let media_type =
            header("content-type").map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let size = header("content-length").and_then(|v| v.parse::<u64>().ok());
        match (digest, media_type, size) {
            (Some(digest), Some(media_type), Some(size))
                if media_type.starts_with("application/vnd.") =>
            {
                let descriptor = Descriptor {
                    media_type,
                    digest: digest.to_string(),
                    size,
                    artifact_type: None,
                    annotations: None,
                    platform: None,
                    urls: None,
                };
                Ok(Some((digest, descriptor)))
            }
            // Some registries omit headers on HEAD; the bytes are the truth.
            _ => Ok(self
                .get_manifest(repository, reference)
                .await?
                .map(|m| (m.digest.clone(), m.descriptor()))),
        }
    }

    /// Uploads a small blob held in memory (evidence records), unless it is already there.
    pub async fn push_blob_bytes(
        &self,
        repository: &Repository,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        if self.blob_exists(repository, digest).await? {
            return Ok(());
        }
        let location = self.start_upload(repository).await?;
        let size = bytes.len() as u64;
        self.put_blob(&location, digest, size, reqwest::Body::from(bytes))
            .await
    }

    /// Stores a manifest's exact bytes under `reference` (its digest, or a tag).
    pub async fn put_manifest(
        &self,
        repository: &Repository,
        reference: &str,
        manifest: &RawManifest,
    ) -> Result<PutManifestOutcome, RegistryError> {
        let what = format!("PUT manifest {repository}:{reference}");
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(&manifest.media_type).map_err(|_| {
            RegistryError::BadManifest {
                image: format!("{repository}@{}", manifest.digest),
                cause: format!(
                    "media type {:?} is not a valid header value",
                    manifest.media_type
                ),
            }
        })?;
        headers.insert(header::CONTENT_TYPE, content_type);
        let url = self.url(repository, &format!("manifests/{reference}"));
        let mut attempt = 0;
        let response = loop {
            let response = self
                .send(
                    &what,
                    Method::PUT,
                    &url,
                    headers.clone(),
                    Some(manifest.bytes.clone()),
                )
                .await?;
            if response.status().is_success() {
                break response;
            }
            let error = self.error_from(&what, response).await;
            // Another writer re-linking the same blob (a concurrent mount into this repository)
            // can make a blob look absent for a moment: the filesystem storage driver truncates a
            // link before rewriting it. Seen with two instances promoting one image at once.
            let blob_unknown = matches!(&error, RegistryError::Status { status: 400, detail, .. } if detail.contains("MANIFEST_BLOB_UNKNOWN"));
            attempt += 1;
            if !blob_unknown || attempt >= 3 {
                return Err(error);
            }
            tokio::time::sleep(self.transport.retry.delay(attempt, None)).await;
        };
        let stored = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::try_from(v).ok());
        if let Some(stored) = stored
            && stored != manifest.digest
        {
            return Err(RegistryError::DigestMismatch {
                image: format!("{repository}:{reference}"),
                registry: self.registry.to_string(),
                expected: manifest.digest.clone(),
                actual: stored,
            });
        }
        Ok(PutManifestOutcome {
            registry_tracks_subject: response.headers().contains_key("oci-subject"),
        })
    }

    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {repository}@{digest}");
        let url = self.url(repository, &format!("blobs/{digest}"));
        let response = self
            .send(&what, Method::HEAD, &url, HeaderMap::new(), None)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(&what, response).await),
        }
    }

    /// Opens a blob for streaming. The response body is read by the caller, chunk by chunk.
    pub async fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Response, RegistryError> {
        let what = format!("GET blob {repository}@{digest}");
        let url = self.url(repository, &format!("blobs/{digest}"));
        let response = self
            .send(&what, Method::GET, &url, HeaderMap::new(), None)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                image: format!("blob {repository}@{digest}"),
                registry: self.registry.to_string(),
            }),
            _ => Err(self.error_from(&what, response).await),
        }
    }

    /// Asks the registry to mount a blob from another repository on the same host.
    pub async fn mount_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        from: &Repository,
    ) -> Result<MountOutcome, RegistryError> {
        let what = format!("mount blob {digest} from {} into {repository}", from.path);
        let url = format!(
            "{}?mount={digest}&from={}",
            self.url(repository, "blobs/uploads/"),
            from.path
        );
        let response = self
            .send(
                &what,
                Method::POST,
                &url,
                HeaderMap::new(),
                Some(Bytes::new()),
            )
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(MountOutcome::Mounted),
            StatusCode::ACCEPTED => Ok(MountOutcome::UploadAt(self.location(&what, &response)?)),
            _ => Err(self.error_from(&what, response).await),
        }
    }

    /// Opens an upload session; returns its location.
    pub async fn start_upload(&self, repository: &Repository) -> Result<String, RegistryError> {
        let what = format!("start blob upload to {repository}");
        let url = self.url(repository, "blobs/uploads/");
        let response = self
            .send(
                &what,
                Method::POST,
                &url,
                HeaderMap::new(),
                Some(Bytes::new()),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.error_from(&what, response).await);
        }
        self.location(&what, &response)
    }

    fn location(&self, what: &str, response: &Response) -> Result<String, RegistryError> {
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::Status {
                registry: self.registry.to_string(),
                what: what.to_owned(),
                status: response.status().as_u16(),
                detail: ": no Location header".into(),
            })?;
        // The spec allows a relative location.
        let base = url::Url::parse(&self.base).map_err(|e| RegistryError::Status {
            registry: self.registry.to_string(),
            what: what.to_owned(),
            status: response.status().as_u16(),
            detail: format!(": {e}"),
        })?;
        base.join(location)
            .map(String::from)
            .map_err(|e| RegistryError::Status {
                registry: self.registry.to_string(),
                what: what.to_owned(),
                status: response.status().as_u16(),
                detail: format!(": bad Location {location:?}: {e}"),
            })
    }

    /// Completes an upload session in one monolithic PUT whose body streams from `body`
    /// (Artifact Registry refuses chunked uploads; NOTES.md).
    pub async fn put_blob(
        &self,
        location: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let what = format!("PUT blob {digest}");
        let mut url = url::Url::parse(location).map_err(|e| RegistryError::Status {
            registry: self.registry.to_string(),
            what: what.clone(),
            status: 0,
            detail: format!(": bad upload location: {e}"),
        })?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        let response = self
            .send_stream(&what, Method::PUT, url.as_str(), headers, body)
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.error_from(&what, response).await);
        }
        Ok(())
    }

    /// Every tag of a repository, following `Link` pagination.
    pub async fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, RegistryError> {
        let what = format!("list tags of {repository}");
        let mut url = self.url(repository, "tags/list?n=1000");
        let mut tags = Vec::new();
        loop {
            let response = self
                .send(&what, Method::GET, &url, HeaderMap::new(), None)
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !response.status().is_success() {
                return Err(self.error_from(&what, response).await);
            }
            let next = response
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|link| link.split(';').next())
                .map(|target| {
                    target
                        .trim()
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                        .to_owned()
                });
            #[derive(serde::Deserialize)]
            struct TagList {
                tags: Option<Vec<String>>,
            }
            let page: TagList = response.json().await.map_err(|e| RegistryError::Status {
                registry: self.registry.to_string(),
                what: what.clone(),
                status: 200,
                detail: format!(": tag list is not JSON: {e}"),
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) if !next.is_empty() => {
                    url = url::Url::parse(&self.base)
                        .and_then(|base| base.join(&next))
                        .map(String::from)
                        .unwrap_or_default();
                    if url.is_empty() {
                        return Ok(tags);
                    }
                }
                _ => return Ok(tags),
            }
        }
    }

    /// Deletes a manifest by digest (and, on distribution, every tag naming it). `false` when
    /// it was not there.
    pub async fn delete_manifest(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("DELETE manifest {repository}@{digest}");
        let url = self.url(repository, &format!("manifests/{digest}"));
        let response = self
            .send(&what, Method::DELETE, &url, HeaderMap::new(), None)
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.error_from(&what, response).await),
        }
    }

    /// The OCI 1.1 referrers API. `None` when the registry does not implement it.
    pub async fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        if self
            .lacks_referrers_api
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(None);
        }
        let what = format!("list referrers of {repository}@{digest}");
        let url = self.url(repository, &format!("referrers/{digest}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.oci.image.index.v1+json"),
        );
        let response = self.send(&what, Method::GET, &url, headers, None).await?;
        let is_index = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/vnd.oci.image.index.v1+json"));
        // Registries without the API answer 404 (unknown route) or something that is not an index.
        if !response.status().is_success() || !is_index {
            if response.status() == StatusCode::NOT_FOUND {
                self.lacks_referrers_api
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            return Ok(None);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(&what, &e))?;
        let index = RawManifest::new(bytes, None).map_err(|cause| RegistryError::BadManifest {
            image: format!("referrers of {repository}@{digest}"),
            cause,
        })?;
        Ok(Some(index.children().to_vec()))
    }
}

/// A `WWW-Authenticate` challenge: a scheme and `key="value"` parameters.
#[derive(Default, Debug)]
struct Challenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl Challenge {
    fn parse(value: &str) -> Challenge {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                value = chars.by_ref().take_while(|c| *c != ',').collect();
            }
            params.push((key.trim().to_ascii_lowercase(), value));
        }
        Challenge {
            scheme: scheme.to_owned(),
            params,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .ok()
}

/// The registry's own error words (`{"errors":[{"code","message"}]}`), for messages.
fn registry_error_detail(body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(errors) if !errors.errors.is_empty() => {
            let words: Vec<String> = errors
                .errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e.code.as_deref().unwrap_or(""),
                        e.message.as_deref().unwrap_or("")
                    )
                    .trim()
                    .to_owned()
                })
                .collect();
            format!(": {}", words.join("; "))
        }
        _ => {
            let text: String = body.chars().take(200).collect();
            if text.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", text.trim())
            }
        }
    }
}

/// reqwest's errors hide the useful part (refused, reset) in their sources.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges_with_quoted_commas() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://europe-west2-docker.pkg.dev/v2/token",service="europe-west2-docker.pkg.dev",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(challenge.scheme, "Bearer");
        assert_eq!(
            challenge.param("realm"),
            Some("https://europe-west2-docker.pkg.dev/v2/token")
        );
        assert_eq!(challenge.param("scope"), Some("repository:a/b:pull,push"));
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(20)).to_rfc2822();
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&later).expect("header"),
        );
        assert!(retry_after(&headers).is_some_and(|d| d > Duration::from_secs(15)));
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_hosts() {
        let transport = Transport::new(vec!["Registry.Internal:5000".into()]).expect("transport");
        let scheme =
            |host: &str| transport.scheme_for(&RegistryHost::try_from(host).expect("host"));
        assert_eq!(scheme("registry.internal:5000"), "http");
        assert_eq!(scheme("localhost:5000"), "http");
        assert_eq!(scheme("127.0.0.1:5000"), "http");
        assert_eq!(scheme("[::1]:5000"), "http");
        assert_eq!(scheme("registry.internal:5001"), "https");
        assert_eq!(scheme("europe-west2-docker.pkg.dev"), "https");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy::default();
        assert!(policy.delay(1, None) <= Duration::from_millis(400));
        assert!(policy.delay(30, None) <= policy.max_delay);
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(120))),
            policy.max_delay
        );
    }
}
