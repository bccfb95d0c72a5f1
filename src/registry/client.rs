//! The Registry HTTP API as promoter needs it ([OCI distribution spec]): raw manifests, streamed
//! blobs, cross-repository mounts, tag lists, referrers and deletes, behind the registry's auth
//! handshake ([token authentication]).
//!
//! This module owns the one retry layer. Every registry operation (a manifest GET or PUT, a blob
//! HEAD, a mount, one page of tags, a referrers list, a delete, a small blob upload) is one call
//! of [`RetryPolicy::run`] around single attempts; a streamed blob copy (`copy.rs`) is one such
//! call around its whole attempt (a new upload session and a new GET each time). Nothing an
//! attempt calls retries by itself, token requests included: nested loops would multiply their
//! attempts.
//!
//! Built on reqwest rather than oci-client because the copy needs what that client does not do:
//! raw manifest bytes with their Content-Type, monolithic streamed uploads (Artifact Registry
//! refuses chunked ones), a mount that may legally answer 202, retries that honour
//! `Retry-After`, and a fresh identity per job.
//!
//! [OCI distribution spec]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md
//! [token authentication]: https://distribution.github.io/distribution/spec/auth/token/

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::Mutex;

use super::auth::{Credential, IdentityChoice, Secret};
use super::manifest::{Descriptor, OCI_INDEX, RawManifest};
use super::{Digest, RegistryError, RegistryHost, Repository, is_retryable_status};

/// Every manifest kind the copy engine copies, in the order a registry should prefer.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Registries refuse manifests over 4 MiB (distribution's limit); so do we, before buffering one.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Tags asked for per page. Registries may ignore it (distribution 2.8 answers every tag at once).
const TAG_PAGE_SIZE: u32 = 1000;

/// A tag listing longer than this many pages is a registry sending us round in circles.
const MAX_TAG_PAGES: usize = 10_000;

/// How often and how patiently a registry operation is tried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts of one operation in all (the first one included).
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
    /// Runs one registry operation: `attempt` (given its number, from 1) again while
    /// `retryable` says its failure may pass, `attempts` times at most, waiting as the
    /// registry's `Retry-After` said ([RFC 9110 §10.2.3]) or backing off. Returns the first
    /// success or the last failure. This is the only retry loop: what `attempt` calls must
    /// send each request once.
    ///
    /// [RFC 9110 §10.2.3]: https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3
    pub async fn run<T, F, Attempt>(
        &self,
        what: &str,
        retryable: impl Fn(&RegistryError, u32) -> bool,
        mut attempt: F,
    ) -> Result<T, RegistryError>
    where
        F: FnMut(u32) -> Attempt,
        Attempt: Future<Output = Result<T, RegistryError>>,
    {
        let attempts = self.attempts.max(1);
        let mut number = 0;
        loop {
            number += 1;
            match attempt(number).await {
                Err(error) if number < attempts && retryable(&error, number) => {
                    let wait = self.delay(number, error.retry_after());
                    tracing::debug!(what, attempt = number, %error, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                }
                result => return result,
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
    /// Blobs this process has placed in a repository: the small config blob every evidence
    /// record names is placed once per repository, not checked before every record.
    known_blobs: Arc<std::sync::Mutex<KnownBlobs>>,
}

/// How many repository blobs the cache remembers before it starts again.
const KNOWN_BLOBS: usize = 100_000;

/// What [`Transport`] remembers of blobs: one cell per `repository@digest`, filled once the blob
/// is placed there (writers that arrive together wait for the one placing it, rather than each
/// uploading it), and per `host digest` a repository that holds it, to mount it from.
#[derive(Debug, Default)]
struct KnownBlobs {
    placed: std::collections::HashMap<String, Arc<tokio::sync::OnceCell<()>>>,
    /// Most recent first, at most [`BLOB_HOMES`] per `host digest`.
    homes: std::collections::HashMap<String, Vec<Repository>>,
}

/// How many repositories holding a blob [`KnownBlobs`] remembers per host: enough that a job
/// finds one among its own repositories (a mount source outside the job's token scope would
/// cost another token).
const BLOB_HOMES: usize = 16;

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
            known_blobs: Arc::default(),
        })
    }

    /// The cell that is filled once `digest` is placed in `repository`: fill it with
    /// `get_or_try_init`, so concurrent writers place the blob once.
    pub fn blob_placement(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Arc<tokio::sync::OnceCell<()>> {
        let Ok(mut known) = self.known_blobs.lock() else {
            return Arc::default();
        };
        if known.placed.len() >= KNOWN_BLOBS {
            known.placed.clear();
        }
        known
            .placed
            .entry(format!("{repository}@{digest}"))
            .or_default()
            .clone()
    }

    /// A repository on `repository`'s host that this process placed `digest` in, other than
    /// `repository` itself, and that `usable` accepts (one the job may pull from): where to
    /// mount it from.
    pub fn blob_home(
        &self,
        repository: &Repository,
        digest: &Digest,
        usable: impl Fn(&Repository) -> bool,
    ) -> Option<Repository> {
        let known = self.known_blobs.lock().ok()?;
        known
            .homes
            .get(&format!("{} {digest}", repository.registry))?
            .iter()
            .find(|home| *home != repository && usable(home))
            .cloned()
    }

    /// Remembers that `repository` holds `digest`, as a place to mount it from.
    pub fn remember_blob_home(&self, repository: &Repository, digest: &Digest) {
        if let Ok(mut known) = self.known_blobs.lock() {
            let homes = known
                .homes
                .entry(format!("{} {digest}", repository.registry))
                .or_default();
            homes.retain(|home| home != repository);
            homes.insert(0, repository.clone());
            homes.truncate(BLOB_HOMES);
        }
    }

    /// Forgets `digest` in `repository`: the registry said it is unknown after all (a garbage
    /// collection took it). The next writer places it again.
    pub fn forget_blob(&self, repository: &Repository, digest: &Digest) {
        if let Ok(mut known) = self.known_blobs.lock() {
            known.placed.remove(&format!("{repository}@{digest}"));
            if let Some(homes) = known
                .homes
                .get_mut(&format!("{} {digest}", repository.registry))
            {
                homes.retain(|home| home != repository);
            }
        }
    }

    fn scheme_for(&self, registry: &RegistryHost) -> &'static str {
        if registry.is_loopback() || self.insecure_hosts.iter().any(|h| h == registry.as_str()) {
            "http"
        } else {
            "https"
        }
    }

    /// A client for one job on one registry host, for several repositories there: the
    /// identity's credential for the host, asked for now and once (a Google access token
    /// expires within the hour, so a job never reuses an older one), and one token handshake
    /// covering every `(repository, actions)` pair, e.g. `[(stage, "pull,push,delete"),
    /// (previous_stage, "pull")]`. Actions are the token scope's, comma-separated
    /// (`repository:NAME:ACTIONS`, [token scope grammar]); pairs for one repository are merged.
    /// Pairs naming a repository on another host are left out: this registry's token cannot
    /// cover them.
    ///
    /// [token scope grammar]: https://distribution.github.io/distribution/spec/auth/scope/
    pub async fn registry_client(
        &self,
        identity: &IdentityChoice,
        registry: &RegistryHost,
        scopes: &[(&Repository, &str)],
    ) -> Result<RegistryClient, RegistryError> {
        let credential = identity.resolve(registry).await?;
        Ok(self.client(registry.clone(), credential, merge_scopes(registry, scopes)))
    }

    /// A client for one job on `repository` with `actions` there and, on the same host, pull
    /// on `mount_from` (a cross-repository mount needs both in one token).
    pub async fn job_client(
        &self,
        identity: &IdentityChoice,
        repository: &Repository,
        actions: &str,
        mount_from: Option<&Repository>,
    ) -> Result<RegistryClient, RegistryError> {
        let mut scopes = vec![(repository, actions)];
        scopes.extend(mount_from.map(|from| (from, "pull")));
        self.registry_client(identity, &repository.registry, &scopes)
            .await
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
            challenged_scopes: std::sync::Mutex::new(Vec::new()),
            authorization: Mutex::new(None),
            lacks_referrers_api: AtomicBool::new(false),
        }
    }
}

/// The scope string of the token auth spec for a repository.
pub fn scope(repository: &Repository, actions: &str) -> String {
    format!("repository:{}:{actions}", repository.path)
}

/// One scope per repository on `registry`, its actions merged in the order first given.
fn merge_scopes(registry: &RegistryHost, scopes: &[(&Repository, &str)]) -> Vec<String> {
    let mut merged: Vec<(&Repository, Vec<&str>)> = Vec::new();
    for (repository, actions) in scopes.iter().filter(|(r, _)| &r.registry == registry) {
        let index = match merged.iter().position(|(r, _)| r == repository) {
            Some(index) => index,
            None => {
                merged.push((repository, Vec::new()));
                merged.len() - 1
            }
        };
        let listed = &mut merged[index].1;
        for action in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !listed.contains(&action) {
                listed.push(action);
            }
        }
    }
    merged
        .into_iter()
        .map(|(repository, actions)| scope(repository, &actions.join(",")))
        .collect()
}

/// A registry, as one job sees it.
pub struct RegistryClient {
    transport: Transport,
    registry: RegistryHost,
    base: String,
    credential: Credential,
    scopes: Vec<String>,
    /// Scopes the registry's challenges asked for beyond `scopes`: kept, so that each later
    /// token covers them too rather than trading one for another.
    challenged_scopes: std::sync::Mutex<Vec<String>>,
    /// The `Authorization` header value learned from the registry's challenge.
    authorization: Mutex<Option<Secret>>,
    /// The registry answered 404 to the referrers API once: it does not have it (OCI
    /// distribution spec: a registry with the API answers 200, with an empty index if need be).
    lacks_referrers_api: AtomicBool,
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

/// What a manifest HEAD told us.
enum Head {
    Absent,
    Described(Digest, Descriptor),
    /// The registry left out a header a descriptor needs: the manifest itself must be read.
    Undescribed,
}

impl RegistryClient {
    /// Whether this job's token scopes let it pull from `repository` (so that a mount from it
    /// needs no other token).
    pub fn may_pull(&self, repository: &Repository) -> bool {
        if repository.registry != self.registry {
            return false;
        }
        let prefix = format!("repository:{}:", repository.path);
        self.scopes.iter().any(|scope| {
            scope
                .strip_prefix(&prefix)
                .is_some_and(|actions| actions.split(',').any(|a| a == "pull"))
        })
    }

    pub fn registry(&self) -> &RegistryHost {
        &self.registry
    }

    /// The process-wide machinery this client belongs to.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.transport.retry
    }

    fn url(&self, repository: &Repository, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, repository.path)
    }

    /// One operation with the usual rule: retried after a failed connection, a 408/429/5xx or
    /// an unavailable token realm.
    async fn retrying<T, Attempt>(
        &self,
        what: &str,
        attempt: impl FnMut(u32) -> Attempt,
    ) -> Result<T, RegistryError>
    where
        Attempt: Future<Output = Result<T, RegistryError>>,
    {
        self.transport
            .retry
            .run(what, |error, _| error.retry_now(), attempt)
            .await
    }

    /// One attempt of a request whose body can be sent again: with the current authorization
    /// and, when the registry challenges it (401), once more after the handshake. Answering a
    /// challenge is the auth protocol, not a retry; a second 401 is the answer. `what`
    /// describes the request for error messages.
    async fn send_once(
        &self,
        what: &str,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: Option<&Bytes>,
    ) -> Result<Response, RegistryError> {
        let mut answered_challenge = false;
        loop {
            let authorization = self.authorization.lock().await.clone();
            let mut request = self
                .transport
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(authorization) = &authorization {
                request = request.header(header::AUTHORIZATION, authorization.expose());
            }
            if let Some(body) = body {
                request = request.body(body.clone());
            }
            let response = request
                .send()
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

    /// One attempt with a body that cannot be sent again (a streamed blob): no challenge is
    /// answered here; the caller's loop starts the whole blob over.
    async fn send_stream(
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
        let authorization = self.authorization.lock().await.clone();
        if let Some(authorization) = &authorization {
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

    /// An answer that is not what the API promises (a bad header, a body that is not JSON).
    fn bad_answer(&self, what: &str, status: u16, detail: String) -> RegistryError {
        RegistryError::Status {
            registry: self.registry.to_string(),
            what: what.to_owned(),
            status,
            detail,
            retry_after: None,
        }
    }

    /// Turns an unexpected response into an error naming the request and the registry's words.
    pub async fn error_from(&self, what: &str, response: Response) -> RegistryError {
        let answer = ErrorAnswer::read(response).await;
        self.error_for(what, answer)
    }

    fn error_for(&self, what: &str, answer: ErrorAnswer) -> RegistryError {
        let detail = answer.detail();
        if answer.status == 401 || answer.status == 403 {
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
            status: answer.status,
            detail,
            retry_after: answer.retry_after,
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

    /// One token request. Its failures are the operation's: a realm that is down or throttling
    /// is `TokenRealm { transient: true }`, which the operation's loop retries.
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
        let challenged: Vec<String> = match self.challenged_scopes.lock() {
            Ok(mut challenged) => {
                if let Some(asked) = challenge.param("scope") {
                    for scope in asked.split(' ').filter(|s| !s.is_empty()) {
                        if !self.scopes.iter().any(|s| s == scope)
                            && !challenged.iter().any(|s| s == scope)
                        {
                            challenged.push(scope.to_owned());
                        }
                    }
                }
                challenged.clone()
            }
            Err(_) => challenge
                .param("scope")
                .map(|asked| asked.split(' ').map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let mut scopes: Vec<&str> = self.scopes.iter().map(String::as_str).collect();
        scopes.extend(challenged.iter().map(String::as_str));
        scopes.sort_unstable();
        scopes.dedup();
        query.extend(scopes.iter().map(|s| ("scope", *s)));

        // Credentials go only to the registries named. A realm on another host (a malicious or
        // misconfigured registry could name any) gets an anonymous request.
        let basic = if self.realm_may_see_credentials(&realm_url) {
            self.credential.basic_header()
        } else {
            if self.credential != Credential::Anonymous {
                tracing::warn!(registry = %self.registry, realm = %realm_url.host_str().unwrap_or_default(),
                    "token realm is on another host; asking it anonymously");
            }
            None
        };
        let mut request = self.transport.http.get(realm_url.clone()).query(&query);
        if let Some(basic) = &basic {
            request = request.header(header::AUTHORIZATION, basic);
        }
        let response = request
            .send()
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
        let headers = accept(MANIFEST_ACCEPT);
        let url = self.url(repository, &format!("manifests/{reference}"));
        // Each attempt's future holds references only (it must be `Send` in the service).
        let (what, headers, url) = (&what, &headers, &url);
        self.retrying(what, move |_| async move {
            let response = self
                .send_once(what, Method::GET, url, headers, None)
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !response.status().is_success() {
                return Err(self.error_from(what, response).await);
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
            // A connection cut while the body arrives is this attempt's failure, retried.
            let bytes = response
                .bytes()
                .await
                .map_err(|e| self.unreachable(what, &e))?;
            RawManifest::new(bytes, content_type)
                .map(Some)
                .map_err(|cause| RegistryError::BadManifest {
                    image: format!("{repository}:{reference}"),
                    cause,
                })
        })
        .await
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
        let headers = accept(MANIFEST_ACCEPT);
        let url = self.url(repository, &format!("manifests/{reference}"));
        let (what, headers, url) = (&what, &headers, &url);
        let head = self
            .retrying(what, move |_| async move {
                let response = self
                    .send_once(what, Method::HEAD, url, headers, None)
                    .await?;
                if response.status() == StatusCode::NOT_FOUND {
                    return Ok(Head::Absent);
                }
                if !response.status().is_success() {
                    return Err(self.error_from(what, response).await);
                }
                let header =
                    |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                let digest = header("docker-content-digest").and_then(|v| Digest::try_from(v).ok());
                let media_type = header("content-type")
                    .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
                let size = header("content-length").and_then(|v| v.parse::<u64>().ok());
                Ok(match (digest, media_type, size) {
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
                        Head::Described(digest, descriptor)
                    }
                    _ => Head::Undescribed,
                })
            })
            .await?;
        match head {
            Head::Absent => Ok(None),
            Head::Described(digest, descriptor) => Ok(Some((digest, descriptor))),
            // Some registries omit headers on HEAD; the bytes are the truth.
            Head::Undescribed => Ok(self
                .get_manifest(repository, reference)
                .await?
                .map(|m| (m.digest.clone(), m.descriptor()))),
        }
    }

    /// Uploads a small blob held in memory (evidence records' config), unless it is already
    /// there.
    pub async fn push_blob_bytes(
        &self,
        repository: &Repository,
        digest: &Digest,
        bytes: Bytes,
    ) -> Result<(), RegistryError> {
        if self.blob_exists(repository, digest).await? {
            return Ok(());
        }
        self.upload_blob_bytes(repository, digest, bytes, None)
            .await
    }

    /// Uploads a small blob held in memory in one monolithic PUT, into `session` when a refused
    /// mount opened one, else into a new upload session. A dropped connection or a 5xx starts
    /// the upload over in a new session: the old one's state is unknown.
    pub async fn upload_blob_bytes(
        &self,
        repository: &Repository,
        digest: &Digest,
        bytes: Bytes,
        session: Option<String>,
    ) -> Result<(), RegistryError> {
        let what = format!("upload blob {digest} to {repository}");
        let (session, bytes) = (&session, &bytes);
        self.retrying(&what, move |attempt| async move {
            let location = match session {
                Some(location) if attempt == 1 => location.clone(),
                _ => self.start_upload(repository).await?,
            };
            let put = format!("PUT blob {repository}@{digest}");
            let url = self.upload_url(&put, &location, digest)?;
            let headers = blob_headers(bytes.len() as u64);
            let response = self
                .send_once(&put, Method::PUT, url.as_str(), &headers, Some(bytes))
                .await?;
            if response.status() != StatusCode::CREATED {
                return Err(self.error_from(&put, response).await);
            }
            Ok(())
        })
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
        // Another writer re-linking the same blob (a concurrent mount into this repository) can
        // make a blob look absent for a moment: distribution's filesystem storage truncates a
        // link before rewriting it. Seen with two instances promoting one image at once; the
        // same loop retries it as any passing failure.
        let retryable = |error: &RegistryError, _: u32| {
            error.retry_now()
                || matches!(error, RegistryError::Status { status: 400, detail, .. }
                    if detail.contains("MANIFEST_BLOB_UNKNOWN"))
        };
        let (what, headers, url) = (&what, &headers, &url);
        let response = self
            .transport
            .retry
            .run(what, retryable, move |_| async move {
                let response = self
                    .send_once(what, Method::PUT, url, headers, Some(&manifest.bytes))
                    .await?;
                if response.status().is_success() {
                    Ok(response)
                } else {
                    Err(self.error_from(what, response).await)
                }
            })
            .await?;
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

    /// Deletes the manifest `digest` from `repository` ([Deleting Manifests]): `Ok(true)` when
    /// the registry deleted it, `Ok(false)` when it was not there (which is also what a retry
    /// finds when the answer to an attempt that did delete it was lost). A registry that does
    /// not allow deletes (405, or the `UNSUPPORTED` error code) is
    /// [`RegistryError::DeleteRefused`]. Under token auth, ask for `delete` on the repository
    /// when making the client ([`Transport::registry_client`]), so the job's one token covers
    /// it.
    ///
    /// [Deleting Manifests]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#deleting-manifests
    pub async fn delete_manifest(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("DELETE manifest {repository}@{digest}");
        let url = self.url(repository, &format!("manifests/{digest}"));
        let (what, url) = (&what, &url);
        self.retrying(what, move |_| async move {
            let response = self
                .send_once(what, Method::DELETE, url, &HeaderMap::new(), None)
                .await?;
            if response.status().is_success() {
                return Ok(true);
            }
            if response.status() == StatusCode::NOT_FOUND {
                return Ok(false);
            }
            let answer = ErrorAnswer::read(response).await;
            if answer.status == 405 || answer.has_code("UNSUPPORTED") {
                return Err(RegistryError::DeleteRefused {
                    registry: self.registry.to_string(),
                    what: format!("manifest {repository}@{digest}"),
                    detail: answer.detail(),
                });
            }
            Err(self.error_for(what, answer))
        })
        .await
    }

    pub async fn blob_exists(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<bool, RegistryError> {
        let what = format!("HEAD blob {repository}@{digest}");
        let url = self.url(repository, &format!("blobs/{digest}"));
        let (what, url) = (&what, &url);
        self.retrying(what, move |_| async move {
            let response = self
                .send_once(what, Method::HEAD, url, &HeaderMap::new(), None)
                .await?;
            match response.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.error_from(what, response).await),
            }
        })
        .await
    }

    /// Opens a blob for streaming, in one attempt: the caller reads the body chunk by chunk and
    /// retries the whole blob.
    pub async fn get_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Response, RegistryError> {
        let what = format!("GET blob {repository}@{digest}");
        let url = self.url(repository, &format!("blobs/{digest}"));
        let response = self
            .send_once(&what, Method::GET, &url, &HeaderMap::new(), None)
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

    /// Reads a small blob into memory (an attestation envelope): at most `limit` bytes, its
    /// digest checked, retried as any read.
    pub async fn get_small_blob(
        &self,
        repository: &Repository,
        digest: &Digest,
        limit: usize,
    ) -> Result<Bytes, RegistryError> {
        let what = format!("GET blob {repository}@{digest}");
        let what = &what;
        let bytes = self
            .retrying(what, move |_| async move {
                let response = self.get_blob(repository, digest).await?;
                if response
                    .content_length()
                    .is_some_and(|n| n as usize > limit)
                {
                    return Err(RegistryError::BadManifest {
                        image: format!("blob {repository}@{digest}"),
                        cause: format!("larger than {limit} bytes"),
                    });
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| self.unreachable(what, &e))
            })
            .await?;
        if bytes.len() > limit {
            return Err(RegistryError::BadManifest {
                image: format!("blob {repository}@{digest}"),
                cause: format!("larger than {limit} bytes"),
            });
        }
        let actual = Digest::sha256_of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                image: format!("blob {repository}@{digest}"),
                registry: self.registry.to_string(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Asks the registry to mount a blob from another repository on the same host
    /// ([Mounting a blob from another repository]).
    ///
    /// [Mounting a blob from another repository]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#mounting-a-blob-from-another-repository
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
        let empty = Bytes::new();
        let (what, url, empty) = (&what, &url, &empty);
        self.retrying(what, move |_| async move {
            let response = self
                .send_once(what, Method::POST, url, &HeaderMap::new(), Some(empty))
                .await?;
            match response.status() {
                StatusCode::CREATED => Ok(MountOutcome::Mounted),
                StatusCode::ACCEPTED => Ok(MountOutcome::UploadAt(self.location(what, &response)?)),
                _ => Err(self.error_from(what, response).await),
            }
        })
        .await
    }

    /// Opens an upload session, in one attempt (an upload is retried whole, in a new session);
    /// returns its location.
    pub async fn start_upload(&self, repository: &Repository) -> Result<String, RegistryError> {
        let what = format!("start blob upload to {repository}");
        let url = self.url(repository, "blobs/uploads/");
        let response = self
            .send_once(
                &what,
                Method::POST,
                &url,
                &HeaderMap::new(),
                Some(&Bytes::new()),
            )
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.error_from(&what, response).await);
        }
        self.location(&what, &response)
    }

    fn location(&self, what: &str, response: &Response) -> Result<String, RegistryError> {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.bad_answer(what, status, ": no Location header".into()))?;
        // The spec allows a relative location.
        let base = url::Url::parse(&self.base)
            .map_err(|e| self.bad_answer(what, status, format!(": {e}")))?;
        base.join(location)
            .map(String::from)
            .map_err(|e| self.bad_answer(what, status, format!(": bad Location {location:?}: {e}")))
    }

    /// The upload session's URL with the blob's digest, which completes it in one PUT.
    fn upload_url(
        &self,
        what: &str,
        location: &str,
        digest: &Digest,
    ) -> Result<url::Url, RegistryError> {
        let mut url = url::Url::parse(location)
            .map_err(|e| self.bad_answer(what, 0, format!(": bad upload location: {e}")))?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        Ok(url)
    }

    /// Completes an upload session in one monolithic PUT whose body streams from `body`
    /// ([Pushing a blob monolithically]; Artifact Registry refuses chunked uploads). One
    /// attempt: the stream cannot be replayed, so the caller retries the whole blob.
    ///
    /// [Pushing a blob monolithically]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#pushing-a-blob-monolithically
    pub async fn put_blob(
        &self,
        location: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let what = format!("PUT blob {digest}");
        let url = self.upload_url(&what, location, digest)?;
        let response = self
            .send_stream(&what, Method::PUT, url.as_str(), blob_headers(size), body)
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.error_from(&what, response).await);
        }
        Ok(())
    }

    /// Every tag of a repository, following `Link` pagination ([Listing Tags], [RFC 8288]). A
    /// repository the registry does not know has no tags. A `Link` that cannot be followed is an
    /// error, never a shorter list.
    ///
    /// [Listing Tags]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-tags
    /// [RFC 8288]: https://www.rfc-editor.org/rfc/rfc8288
    pub async fn list_tags(&self, repository: &Repository) -> Result<Vec<String>, RegistryError> {
        let what = format!("list tags of {repository}");
        let first = self.url(repository, &format!("tags/list?n={TAG_PAGE_SIZE}"));
        let mut current = url::Url::parse(&first)
            .map_err(|e| self.bad_answer(&what, 0, format!(": bad URL {first:?}: {e}")))?;
        let mut read: HashSet<url::Url> = HashSet::new();
        let mut tags = Vec::new();
        loop {
            let first_page = read.is_empty();
            if !read.insert(current.clone()) || read.len() > MAX_TAG_PAGES {
                return Err(self.bad_answer(
                    &what,
                    200,
                    format!(": its Link header leads round in circles (back to {current})"),
                ));
            }
            let (what, page) = (&what, &current);
            let answer = self
                .retrying(what, move |_| async move {
                    let response = self
                        .send_once(what, Method::GET, page.as_str(), &HeaderMap::new(), None)
                        .await?;
                    // Only the first page may say the repository is unknown: a later 404 would
                    // leave the list short.
                    if response.status() == StatusCode::NOT_FOUND && first_page {
                        return Ok(None);
                    }
                    if !response.status().is_success() {
                        return Err(self.error_from(what, response).await);
                    }
                    let next = next_page(response.headers().get_all(header::LINK), page)
                        .map_err(|cause| self.bad_answer(what, 200, format!(": {cause}")))?;
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| self.unreachable(what, &e))?;
                    #[derive(serde::Deserialize)]
                    struct TagList {
                        tags: Option<Vec<String>>,
                    }
                    let list: TagList = serde_json::from_slice(&body).map_err(|e| {
                        self.bad_answer(what, 200, format!(": tag list is not JSON: {e}"))
                    })?;
                    Ok(Some((list.tags.unwrap_or_default(), next)))
                })
                .await?;
            let Some((page_tags, next)) = answer else {
                return Ok(tags);
            };
            tags.extend(page_tags);
            match next {
                Some(next) => current = next,
                None => return Ok(tags),
            }
        }
    }

    /// The image's referrers from the OCI 1.1 referrers API ([Listing Referrers]): `None` when
    /// the registry has no such API (it answers 404, remembered for this client, and the caller
    /// reads the `sha256-<hex>` fallback tag, as the spec's [Unavailable Referrers API] says)
    /// or answers something that is not an image index. Any other answer is an error, so a
    /// registry that has the API never has its referrers skipped: 5xx (after retries) and 403
    /// are [transient](RegistryError::is_transient), 401 and other statuses are not.
    ///
    /// [Listing Referrers]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#listing-referrers
    /// [Unavailable Referrers API]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#unavailable-referrers-api
    pub async fn referrers(
        &self,
        repository: &Repository,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        if self.lacks_referrers_api.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let what = format!("list referrers of {repository}@{digest}");
        let url = self.url(repository, &format!("referrers/{digest}"));
        let headers = accept(OCI_INDEX);
        let (what, url, headers) = (&what, &url, &headers);
        self.retrying(what, move |_| async move {
            let response = self
                .send_once(what, Method::GET, url, headers, None)
                .await?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                self.lacks_referrers_api.store(true, Ordering::Relaxed);
                return Ok(None);
            }
            if !status.is_success() {
                let answer = ErrorAnswer::read(response).await;
                return Err(RegistryError::Referrers {
                    registry: self.registry.to_string(),
                    what: what.clone(),
                    status: answer.status,
                    detail: answer.detail(),
                    retry_after: answer.retry_after,
                });
            }
            let is_index = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(OCI_INDEX));
            if !is_index {
                return Ok(None);
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| self.unreachable(what, &e))?;
            let index =
                RawManifest::new(bytes, None).map_err(|cause| RegistryError::BadManifest {
                    image: format!("referrers of {repository}@{digest}"),
                    cause,
                })?;
            Ok(Some(index.children().to_vec()))
        })
        .await
    }
}

/// A registry's error answer, read once: its status, `Retry-After` and body.
struct ErrorAnswer {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

impl ErrorAnswer {
    async fn read(response: Response) -> ErrorAnswer {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        ErrorAnswer {
            status,
            retry_after,
            body,
        }
    }

    fn detail(&self) -> String {
        registry_error_detail(&self.body)
    }

    /// Whether the body lists this error code ([Error Codes]).
    ///
    /// [Error Codes]: https://github.com/opencontainers/distribution-spec/blob/v1.1.0/spec.md#error-codes
    fn has_code(&self, code: &str) -> bool {
        serde_json::from_str::<RegistryErrors>(&self.body).is_ok_and(|errors| {
            errors
                .errors
                .iter()
                .any(|e| e.code.as_deref() == Some(code))
        })
    }
}

/// An `Accept` header with one value.
fn accept(media_types: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(media_types));
    headers
}

/// The headers of a monolithic blob PUT of `size` bytes.
fn blob_headers(size: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers
}

/// The next page of a listing, from its `Link` headers ([RFC 8288 §3]: `<URI-Reference>;
/// rel="next"`, the reference resolved against the URL of the page that carried it). No
/// `Link` header: the last page. A `Link` header that names no next page, cannot be parsed, or
/// leads to another host (this registry's credentials go nowhere else) is an error.
///
/// [RFC 8288 §3]: https://www.rfc-editor.org/rfc/rfc8288#section-3
fn next_page<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    page: &url::Url,
) -> Result<Option<url::Url>, String> {
    let mut seen = Vec::new();
    for value in values {
        let text = value
            .to_str()
            .map_err(|_| "its Link header is not text".to_owned())?;
        seen.push(text);
        let links = parse_links(text).map_err(|cause| {
            format!("its Link header {text:?} is not an RFC 8288 link: {cause}")
        })?;
        let Some(next) = links.iter().find(|link| link.is("next")) else {
            continue;
        };
        let url = page.join(&next.target).map_err(|e| {
            format!(
                "its Link header {text:?} names a bad URL {:?}: {e}",
                next.target
            )
        })?;
        if url.origin() != page.origin() {
            return Err(format!(
                "its Link header {text:?} leads to another host ({url}), which gets no credentials for this registry"
            ));
        }
        return Ok(Some(url));
    }
    if seen.is_empty() {
        Ok(None)
    } else {
        Err(format!(
            "its Link header {:?} has no rel=\"next\" link",
            seen.join(", ")
        ))
    }
}

/// One link-value of a `Link` header: its target and parameters (names in lower case).
#[derive(Debug)]
struct Link {
    target: String,
    params: Vec<(String, String)>,
}

impl Link {
    /// Whether the link's relation types include `relation`. Only the first `rel` counts, and
    /// it may list several types separated by spaces (RFC 8288 §3.3).
    fn is(&self, relation: &str) -> bool {
        self.params
            .iter()
            .find(|(name, _)| name == "rel")
            .is_some_and(|(_, value)| {
                value
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(relation))
            })
    }
}

/// Parses a `Link` header value: `#link-value`, each `"<" URI-Reference ">" *( OWS ";" OWS
/// link-param )`, a `link-param` being `token BWS [ "=" BWS ( token / quoted-string ) ]`
/// (RFC 8288 §3, RFC 9110 §5.6).
fn parse_links(text: &str) -> Result<Vec<Link>, String> {
    let is_space = |c: char| c == ' ' || c == '\t';
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut links = Vec::new();
    let mut rest = text;
    loop {
        // Empty list elements are allowed (RFC 9110 §5.6.1).
        rest = rest.trim_start_matches(|c: char| c == ',' || is_space(c));
        if rest.is_empty() {
            return Ok(links);
        }
        let Some(after) = rest.strip_prefix('<') else {
            return Err("a link must start with <URL>".into());
        };
        let Some(end) = after.find('>') else {
            return Err("its <URL> is not closed".into());
        };
        let target = after[..end].to_owned();
        rest = &after[end + 1..];
        let mut params = Vec::new();
        loop {
            rest = rest.trim_start_matches(is_space);
            match rest.chars().next() {
                None | Some(',') => break,
                Some(';') => rest = &rest[1..],
                Some(c) => return Err(format!("{c:?} where a ';' or ',' belongs")),
            }
            rest = rest.trim_start_matches(is_space);
            let name_end = rest.find(|c: char| !is_tchar(c)).unwrap_or(rest.len());
            if name_end == 0 {
                return Err("a parameter has no name".into());
            }
            let name = rest[..name_end].to_ascii_lowercase();
            rest = rest[name_end..].trim_start_matches(is_space);
            let mut value = String::new();
            if let Some(after_equals) = rest.strip_prefix('=') {
                rest = after_equals.trim_start_matches(is_space);
                if let Some(quoted) = rest.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut closed_at = None;
                    while let Some((at, c)) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next().map(|(_, escaped)| escaped)),
                            '"' => {
                                closed_at = Some(at + 1);
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    let Some(closed_at) = closed_at else {
                        return Err(format!("the value of {name} is not closed"));
                    };
                    rest = &quoted[closed_at..];
                } else {
                    let end = rest.find(|c: char| !is_tchar(c)).unwrap_or(rest.len());
                    if end == 0 {
                        return Err(format!("{name} has an empty value"));
                    }
                    value = rest[..end].to_owned();
                    rest = &rest[end..];
                }
            }
            params.push((name, value));
        }
        links.push(Link { target, params });
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

/// An error answer's body (`{"errors":[{"code","message"}]}`).
#[derive(serde::Deserialize)]
struct RegistryErrors {
    errors: Vec<RegistryErrorEntry>,
}

#[derive(serde::Deserialize)]
struct RegistryErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

/// The registry's own error words, for messages.
fn registry_error_detail(body: &str) -> String {
    match serde_json::from_str::<RegistryErrors>(body) {
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

/// A registry stand-in on loopback for unit tests: answers each request as a test says and
/// records what it was asked.
#[cfg(test)]
pub(crate) mod stand_in {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::Request;
    use axum::response::Response;

    use super::{RetryPolicy, Transport};
    use crate::registry::RegistryHost;
    use crate::registry::auth::Credential;

    /// One request, as a stand-in's answer sees it.
    pub struct Asked<'a> {
        pub method: &'a str,
        /// The path and query.
        pub target: &'a str,
        /// The `Host` header: where the stand-in is listening.
        pub host: &'a str,
    }

    /// What a stand-in answers.
    pub type Answer = fn(&Asked<'_>) -> Response;

    /// The requests a stand-in saw, as `METHOD /path?query`.
    #[derive(Clone, Default)]
    pub struct Seen(Arc<Mutex<Vec<String>>>);

    impl Seen {
        pub fn take(&self) -> Vec<String> {
            self.0
                .lock()
                .map(|mut seen| std::mem::take(&mut *seen))
                .unwrap_or_default()
        }

        fn push(&self, line: String) {
            if let Ok(mut seen) = self.0.lock() {
                seen.push(line);
            }
        }
    }

    /// Starts a stand-in on 127.0.0.1:0; returns its host and what it sees.
    pub async fn start(answer: Answer) -> (RegistryHost, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let seen = Seen::default();
        let log = seen.clone();
        let router = axum::Router::new().fallback(move |request: Request| {
            let log = log.clone();
            async move {
                let target = request
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                log.push(format!("{} {target}", request.method()));
                let host = request
                    .headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                answer(&Asked {
                    method: request.method().as_str(),
                    target: &target,
                    host,
                })
            }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let host = RegistryHost::try_from(address.to_string().as_str()).expect("a host");
        (host, seen)
    }

    /// A quick policy: three attempts, a millisecond apart.
    pub fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    /// An anonymous client of `host` under [`policy`].
    pub fn client(host: &RegistryHost) -> super::RegistryClient {
        let mut transport = Transport::new(Vec::new()).expect("transport");
        transport.retry = policy();
        transport.client(host.clone(), Credential::Anonymous, Vec::new())
    }

    pub fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response
            .body(axum::body::Body::from(body.to_owned()))
            .expect("a response")
    }
}

#[cfg(test)]
mod tests {
    use super::stand_in::{self, answer};
    use super::*;

    fn repository(host: &RegistryHost, path: &str) -> Repository {
        Repository::new(host.clone(), path).expect("a repository")
    }

    fn digest() -> Digest {
        Digest::sha256_of(b"{}")
    }

    #[tokio::test]
    async fn every_operation_is_tried_as_often_as_the_policy_says_and_no_more() {
        let (host, seen) = stand_in::start(|_| answer(503, &[], "down")).await;
        let client = stand_in::client(&host);
        let repo = repository(&host, "team/app");
        let other = repository(&host, "other/app");
        let manifest = RawManifest::new(
            Bytes::from_static(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#,
            ),
            None,
        )
        .expect("a manifest");
        let attempts = stand_in::policy().attempts as usize;
        let expect = |name: &str, result: Result<(), RegistryError>| {
            let error = result.expect_err("the registry is down");
            assert!(error.is_transient(), "{name}: {error}");
            assert!(error.to_string().contains(host.as_str()), "{name}: {error}");
            let requests = seen.take();
            assert_eq!(requests.len(), attempts, "{name}: {requests:?}");
        };
        expect(
            "GET manifest",
            client.get_manifest(&repo, "1").await.map(drop),
        );
        expect(
            "HEAD manifest",
            client.head_manifest(&repo, "1").await.map(drop),
        );
        expect(
            "PUT manifest",
            client.put_manifest(&repo, "1", &manifest).await.map(drop),
        );
        expect(
            "HEAD blob",
            client.blob_exists(&repo, &digest()).await.map(drop),
        );
        expect(
            "mount blob",
            client.mount_blob(&repo, &digest(), &other).await.map(drop),
        );
        // The existence check is the operation that fails here.
        expect(
            "push blob bytes",
            client
                .push_blob_bytes(&repo, &digest(), Bytes::from_static(b"{}"))
                .await,
        );
        expect(
            "upload blob bytes",
            client
                .upload_blob_bytes(&repo, &digest(), Bytes::from_static(b"{}"), None)
                .await,
        );
        expect("list tags", client.list_tags(&repo).await.map(drop));
        expect(
            "referrers",
            client.referrers(&repo, &digest()).await.map(drop),
        );
        expect(
            "DELETE manifest",
            client.delete_manifest(&repo, &digest()).await.map(drop),
        );
    }

    #[tokio::test]
    async fn a_small_blob_upload_is_retried_whole_in_a_new_session_each_time() {
        let (host, seen) = stand_in::start(|asked| match asked.method {
            "HEAD" => answer(404, &[], ""),
            "POST" => answer(202, &[("location", "/v2/team/app/blobs/uploads/u")], ""),
            _ => answer(502, &[], "bad gateway"),
        })
        .await;
        let client = stand_in::client(&host);
        let repo = repository(&host, "team/app");
        let error = client
            .push_blob_bytes(&repo, &digest(), Bytes::from_static(b"{}"))
            .await
            .expect_err("every PUT fails");
        assert!(error.to_string().contains("502"), "{error}");
        let requests = seen.take();
        let count = |prefix: &str| requests.iter().filter(|r| r.starts_with(prefix)).count();
        let attempts = stand_in::policy().attempts as usize;
        assert_eq!(count("HEAD "), 1, "{requests:?}");
        assert_eq!(count("POST "), attempts, "{requests:?}");
        assert_eq!(count("PUT "), attempts, "{requests:?}");
    }

    #[tokio::test]
    async fn a_token_realm_that_is_down_is_asked_once_per_attempt() {
        let (host, seen) = stand_in::start(|asked| {
            if asked.target.starts_with("/token") {
                return answer(503, &[], "realm down");
            }
            let challenge = format!(
                r#"Bearer realm="http://{}/token",service="stand-in""#,
                asked.host
            );
            answer(401, &[("www-authenticate", &challenge)], "")
        })
        .await;
        let client = stand_in::client(&host);
        let error = client
            .get_manifest(&repository(&host, "team/app"), "1")
            .await
            .expect_err("no token to be had");
        assert!(
            matches!(
                error,
                RegistryError::TokenRealm {
                    transient: true,
                    ..
                }
            ),
            "{error}"
        );
        let requests = seen.take();
        let attempts = stand_in::policy().attempts as usize;
        let realm = requests
            .iter()
            .filter(|r| r.starts_with("GET /token"))
            .count();
        assert_eq!(realm, attempts, "{requests:?}");
        assert_eq!(requests.len(), 2 * attempts, "{requests:?}");
    }

    #[tokio::test]
    async fn tags_are_listed_across_pages_by_their_rfc_8288_links() {
        let (host, _) = stand_in::start(|asked| match asked.target {
            "/v2/two/tags/list?n=1000" => answer(
                200,
                &[("link", r#"</v2/two/tags/list?n=1000&last=b>; rel="next""#)],
                r#"{"name":"two","tags":["a","b"]}"#,
            ),
            "/v2/two/tags/list?n=1000&last=b" => answer(200, &[], r#"{"name":"two","tags":["c"]}"#),
            // A Link without <...>: not a link. A client that followed it anyway would get a
            // short list from the next answer.
            "/v2/bad/tags/list?n=1000" => answer(
                200,
                &[("link", "/v2/bad/tags/list?n=1000&last=a; rel=next")],
                r#"{"name":"bad","tags":["a"]}"#,
            ),
            "/v2/bad/tags/list?n=1000&last=a" => answer(200, &[], r#"{"name":"bad","tags":[]}"#),
            _ => answer(404, &[], ""),
        })
        .await;
        let client = stand_in::client(&host);
        let tags = client
            .list_tags(&repository(&host, "two"))
            .await
            .expect("two pages");
        assert_eq!(tags, ["a", "b", "c"]);

        let error = client
            .list_tags(&repository(&host, "bad"))
            .await
            .expect_err("a bad Link is an error");
        let message = error.to_string();
        assert!(
            message.contains(&format!("list tags of {host}/bad")) && message.contains("Link"),
            "{message}"
        );
        assert!(!error.is_transient(), "{message}");
    }

    #[test]
    fn link_headers_are_read_as_rfc_8288_says() {
        let page = url::Url::parse("http://127.0.0.1:5000/v2/a/tags/list?n=1000").expect("a URL");
        let next = |values: &[&str]| {
            let values: Vec<HeaderValue> = values
                .iter()
                .map(|v| HeaderValue::from_str(v).expect("a header"))
                .collect();
            next_page(&values, &page).map(|url| url.map(String::from))
        };
        let at = |path: &str| Ok(Some(format!("http://127.0.0.1:5000{path}")));
        assert_eq!(next(&[]), Ok(None));
        assert_eq!(
            next(&[r#"</v2/a/tags/list?last=b>; rel="next""#]),
            at("/v2/a/tags/list?last=b")
        );
        assert_eq!(
            next(&["<http://127.0.0.1:5000/v2/a/tags/list?last=b>;rel=next"]),
            at("/v2/a/tags/list?last=b")
        );
        // Relative to the page that carried it, not to the host's root.
        assert_eq!(
            next(&["<list?last=b>; rel=next"]),
            at("/v2/a/tags/list?last=b")
        );
        assert_eq!(
            next(&[r#"</v2/a/prev>; rel="prev", </v2/a/next>; title="a, b; c"; REL="next""#]),
            at("/v2/a/next")
        );
        assert_eq!(
            next(&[r#"</v2/a/both>; rel="prev next""#]),
            at("/v2/a/both")
        );
        assert_eq!(
            next(&[r#"</v2/a/prev>; rel="prev""#, r#"</v2/a/next>; rel="next""#]),
            at("/v2/a/next")
        );
        for bad in [
            "/v2/a/tags/list?last=b; rel=next",
            r#"</v2/a/tags/list?last=b; rel="next""#,
            r#"</v2/a/prev>; rel="prev""#,
            r#"</v2/a/x>; rel="next"#,
            r#"</v2/a/x> rel="next""#,
            r#"<http://[::1>; rel="next""#,
            r#"<https://elsewhere.example/v2/a/tags/list>; rel="next""#,
        ] {
            assert!(next(&[bad]).is_err(), "{bad} was accepted");
        }
    }

    #[tokio::test]
    async fn referrers_are_an_index_nothing_or_an_error_never_a_silent_fallback() {
        let (host, seen) = stand_in::start(|asked| {
            let path = asked.target.split("/referrers/").next().unwrap_or_default();
            match path {
                "/v2/index" => answer(
                    200,
                    &[("content-type", OCI_INDEX)],
                    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#,
                ),
                "/v2/page" => answer(200, &[("content-type", "text/html")], "<html>"),
                "/v2/forbidden" => answer(403, &[], r#"{"errors":[{"code":"DENIED"}]}"#),
                "/v2/teapot" => answer(418, &[], ""),
                "/v2/broken" => answer(500, &[], "oops"),
                _ => answer(404, &[], "404 page not found"),
            }
        })
        .await;
        let referrers = |path: &'static str| {
            let client = stand_in::client(&host);
            let repo = repository(&host, path);
            async move { client.referrers(&repo, &digest()).await }
        };
        let listed = referrers("index").await.expect("an index");
        assert_eq!(listed.map(|l| l.len()), Some(1));
        assert!(referrers("page").await.expect("not an index").is_none());
        let _ = seen.take();

        for (path, status, transient) in [
            ("forbidden", 403, true),
            ("broken", 500, true),
            ("teapot", 418, false),
        ] {
            let error = referrers(path).await.expect_err("an error, not a fallback");
            let message = error.to_string();
            assert!(
                message.contains(&format!("referrers of {host}/{path}@{}", digest()))
                    && message.contains(&status.to_string()),
                "{message}"
            );
            assert_eq!(error.is_transient(), transient, "{message}");
        }

        // 404: no referrers API, and the client remembers it.
        let client = stand_in::client(&host);
        let repo = repository(&host, "absent");
        let _ = seen.take();
        assert!(
            client
                .referrers(&repo, &digest())
                .await
                .expect("404")
                .is_none()
        );
        assert!(
            client
                .referrers(&repo, &digest())
                .await
                .expect("remembered")
                .is_none()
        );
        assert_eq!(seen.take().len(), 1, "a 404 is remembered");
    }

    #[tokio::test]
    async fn deleting_where_deletes_are_off_says_how_to_allow_them() {
        let (host, _) = stand_in::start(|asked| match (asked.method, asked.target) {
            // distribution 2.8's answer with `storage.delete.enabled: false`.
            ("DELETE", t) if t.starts_with("/v2/off/") => answer(
                405,
                &[("content-type", "application/json")],
                r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#,
            ),
            ("DELETE", t) if t.starts_with("/v2/on/") => answer(202, &[], ""),
            _ => answer(404, &[], ""),
        })
        .await;
        let client = stand_in::client(&host);
        let error = client
            .delete_manifest(&repository(&host, "off"), &digest())
            .await
            .expect_err("refused");
        let message = error.to_string();
        assert!(
            matches!(error, RegistryError::DeleteRefused { .. }),
            "{message}"
        );
        assert!(!error.is_transient());
        assert!(
            message.contains(&format!("{host}/off@{}", digest()))
                && message.contains("storage.delete.enabled: true")
                && message.contains("roles/artifactregistry.repoAdmin"),
            "{message}"
        );
        assert!(
            client
                .delete_manifest(&repository(&host, "on"), &digest())
                .await
                .expect("deleted")
        );
        assert!(
            !client
                .delete_manifest(&repository(&host, "gone"), &digest())
                .await
                .expect("nothing there")
        );
    }

    #[test]
    fn one_token_scope_per_repository_on_the_clients_host() {
        let host = RegistryHost::try_from("europe-docker.pkg.dev").expect("a host");
        let elsewhere = RegistryHost::try_from("ghcr.io").expect("a host");
        let stage = repository(&host, "p/r/stage");
        let previous = repository(&host, "p/r/previous");
        let foreign = repository(&elsewhere, "x/y");
        let scopes = merge_scopes(
            &host,
            &[
                (&stage, "pull,push"),
                (&previous, "pull"),
                (&stage, "delete,pull"),
                (&foreign, "pull"),
            ],
        );
        assert_eq!(
            scopes,
            [
                "repository:p/r/stage:pull,push,delete",
                "repository:p/r/previous:pull"
            ]
        );
    }

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
