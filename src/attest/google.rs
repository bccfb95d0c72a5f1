//! The Google REST APIs an attester calls — Cloud KMS ([asymmetricSign], [getPublicKey]),
//! Binary Authorization ([attestors.get]) and Container Analysis ([occurrences.create]) — with
//! the process's own identity: an OAuth2 access token from Application Default Credentials,
//! exactly as the registry code gets one (metadata server on Cloud Run, `GCE_METADATA_HOST`
//! in tests). Each API's endpoint can be pointed elsewhere (an emulator, a test's fake) through
//! its variable; the default is Google's.
//!
//! [asymmetricSign]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/asymmetricSign
//! [getPublicKey]: https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys.cryptoKeyVersions/getPublicKey
//! [attestors.get]: https://cloud.google.com/binary-authorization/docs/reference/rest/v1/projects.attestors/get
//! [occurrences.create]: https://cloud.google.com/container-analysis/docs/reference/rest/v1/projects.occurrences/create

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::AttestError;

/// Attempts of one call in all: a 429, a 5xx or a dropped connection is tried again after a
/// short wait; what still fails is a transient error, and the delivery comes back later.
const ATTEMPTS: u32 = 3;

/// One Google API: its base URL and the process's HTTP client.
#[derive(Clone, Debug)]
pub struct GoogleApi {
    /// For messages: `Cloud KMS`, `Container Analysis`.
    pub api: &'static str,
    /// `https://cloudkms.googleapis.com`, or what its variable says.
    pub endpoint: String,
    http: reqwest::Client,
}

impl GoogleApi {
    pub fn new(api: &'static str, endpoint: &str) -> Result<GoogleApi, AttestError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("promoter/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AttestError::Google {
                api: api.to_owned(),
                what: "building the HTTP client".into(),
                status: None,
                cause: e.to_string(),
                transient: false,
            })?;
        Ok(GoogleApi {
            api,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// `GET {endpoint}/v1/{path}`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, AttestError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    /// `POST {endpoint}/v1/{path}` with a JSON body.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, AttestError> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AttestError> {
        let url = format!("{}/v1/{path}", self.endpoint);
        let what = format!("{method} {url}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.once(&method, &url, &what, body).await;
            match result {
                Err(error) if attempt < ATTEMPTS && error.is_transient() => {
                    tracing::info!(api = self.api, %error, attempt, "retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                result => return result,
            }
        }
    }

    async fn once<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &Method,
        url: &str,
        what: &str,
        body: Option<&B>,
    ) -> Result<T, AttestError> {
        let failed = |status: Option<u16>, cause: String, transient: bool| AttestError::Google {
            api: self.api.to_owned(),
            what: what.to_owned(),
            status,
            cause,
            transient,
        };
        let token = crate::registry::auth::adc_access_token(self.api)
            .await
            .map_err(|e| failed(None, e.to_string(), e.is_transient()))?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| failed(None, format!("unreachable: {e}"), true))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| failed(Some(status.as_u16()), format!("answer cut off: {e}"), true))?;
        if !status.is_success() {
            let transient = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error();
            return Err(failed(
                Some(status.as_u16()),
                error_message(&text),
                transient,
            ));
        }
        serde_json::from_str(&text).map_err(|e| {
            failed(
                Some(status.as_u16()),
                format!("answer is not the API's JSON: {e}"),
                false,
            )
        })
    }
}

/// The message of a Google API error body (`{"error": {"code", "message", "status"}}`, [AIP-193]),
/// else the body's start.
///
/// [AIP-193]: https://google.aip.dev/193
fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    match parsed.as_ref().and_then(|v| v["error"]["message"].as_str()) {
        Some(message) => {
            let status = parsed
                .as_ref()
                .and_then(|v| v["error"]["status"].as_str())
                .unwrap_or_default();
            if status.is_empty() {
                message.to_owned()
            } else {
                format!("{status}: {message}")
            }
        }
        None => body.chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::error_message;

    #[test]
    fn google_errors_are_read_for_their_message() {
        assert_eq!(
            error_message(
                r#"{"error":{"code":403,"message":"Permission 'cloudkms.cryptoKeyVersions.useToSign' denied","status":"PERMISSION_DENIED"}}"#
            ),
            "PERMISSION_DENIED: Permission 'cloudkms.cryptoKeyVersions.useToSign' denied"
        );
        assert_eq!(
            error_message("upstream connect error"),
            "upstream connect error"
        );
    }
}
