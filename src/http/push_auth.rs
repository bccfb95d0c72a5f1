//! Authentication of Pub/Sub push requests (`PROMOTER_PUSH_AUTH`, docs/routes.md).
//!
//! A push subscription configured with an OIDC service account sends
//! `Authorization: Bearer <Google-signed ID token>` whose claims name the subscription's service
//! account (`email`, `email_verified`) and the audience chosen for the subscription (`aud`,
//! by default the push endpoint URL). This module owns deciding whether such a request may be
//! processed, in one of three modes:
//!
//! - `cloud-run` (default): Cloud Run's IAM check has already verified the token and, as Cloud
//!   Run does for tokens it verified, replaced its signature with `SIGNATURE_REMOVED_BY_GOOGLE`
//!   (<https://cloud.google.com/run/docs/troubleshooting#signature-removed>). The claims are read
//!   without a signature check. A token that still carries a signature was *not* checked by Cloud
//!   Run (the service is public), so it is refused rather than trusted.
//! - `verify`: the signature is verified too, with google-cloud-auth's ID-token verifier against
//!   `PROMOTER_JWKS_URL` (default: Google's key set); `PROMOTER_PUSH_AUDIENCE` is then required.
//! - `none`: every request is accepted (local runs only).
//!
//! In `cloud-run` and `verify` mode the claims must show: issuer Google, `exp` not past, `aud` ==
//! the configured audience (when configured), `email_verified: true`, and `email` in the
//! configured allowlist (when configured). Failures are 401 for the token itself and 403 for a
//! valid token whose identity is not allowed ([`PushAuthError::status`]).
//!
//! The token is never kept, logged, or put into an error message or `Debug` output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use google_cloud_auth::credentials::idtoken::verifier::{self, Verifier};
use google_cloud_auth::errors::CredentialsError;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// The placeholder Cloud Run puts where the signature of a token it verified was.
pub const SIGNATURE_REMOVED_BY_GOOGLE: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// The issuers of Google ID tokens (the verifier accepts the same two).
const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Tolerated clock difference for `exp`, the same as the verifier's default.
const CLOCK_SKEW: Duration = Duration::from_secs(10);

/// JWT segments are unpadded base64url; padded ones are tolerated.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// `PROMOTER_PUSH_AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushAuthMode {
    /// Cloud Run verified the token: check its claims.
    #[default]
    CloudRun,
    /// Verify the token's signature too.
    Verify,
    /// Accept everything (local only).
    None,
}

impl PushAuthMode {
    /// The mode's name as `PROMOTER_PUSH_AUTH` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PushAuthMode::CloudRun => "cloud-run",
            PushAuthMode::Verify => "verify",
            PushAuthMode::None => "none",
        }
    }
}

impl fmt::Display for PushAuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PushAuthMode {
    type Err = PushAuthConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "cloud-run" => Ok(PushAuthMode::CloudRun),
            "verify" => Ok(PushAuthMode::Verify),
            "none" => Ok(PushAuthMode::None),
            other => Err(PushAuthConfigError::UnknownMode(other.to_owned())),
        }
    }
}

/// A configuration that cannot work; reported at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthConfigError {
    /// `PROMOTER_PUSH_AUTH` is not one of the three modes.
    #[error("PROMOTER_PUSH_AUTH={0:?} is not a mode: expected cloud-run, verify or none")]
    UnknownMode(String),
    /// `verify` mode without `PROMOTER_PUSH_AUDIENCE`: the verifier needs an audience, and a
    /// Google-signed token minted for any other service must not be accepted.
    #[error(
        "PROMOTER_PUSH_AUTH=verify needs PROMOTER_PUSH_AUDIENCE (the push subscription's OIDC \
         audience, by default the push endpoint URL)"
    )]
    AudienceRequired,
}

/// Who sent an accepted push request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushIdentity {
    /// The service account in the token's `email` claim; `None` in mode `none`.
    pub email: Option<String>,
}

/// Why a push request was refused. Messages name the claim and the cause, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthError {
    /// No `Authorization: Bearer ...` header.
    #[error("no bearer token: the request has no Authorization: Bearer header")]
    MissingToken,
    /// The bearer token is not a JWT with readable header and claims.
    #[error("the bearer token is malformed: {reason}")]
    Malformed { reason: String },
    /// Mode `cloud-run`, but the token still carries its signature: Cloud Run did not verify it.
    #[error(
        "the bearer token's signature was not removed by Cloud Run, so Cloud Run did not verify \
         it: require authentication on the service (IAM invoker) or set PROMOTER_PUSH_AUTH=verify"
    )]
    NotVerifiedByCloudRun,
    /// The token's signature does not verify against the key set (forged, or unknown `kid`), or
    /// the verifier refused it for another reason given in `reason`.
    #[error("the bearer token failed verification: {reason}")]
    InvalidSignature { reason: String },
    /// `exp` is in the past.
    #[error("the bearer token expired at {expired_at} (Unix time)")]
    Expired { expired_at: i64 },
    /// `aud` is not the configured audience.
    #[error("the bearer token's audience {found:?} is not {expected:?}")]
    WrongAudience {
        expected: String,
        found: Vec<String>,
    },
    /// `iss` is not Google.
    #[error("the bearer token's issuer {found:?} is not Google (accounts.google.com)")]
    WrongIssuer { found: String },
    /// The key set could not be fetched (network, 5xx): transient, so the push is retried.
    #[error("the key set to verify the bearer token is unavailable: {reason}")]
    KeysUnavailable { reason: String },
    /// A valid token without an `email` claim: no identity to allow.
    #[error("the bearer token has no email claim")]
    MissingEmail,
    /// `email_verified` is not `true`.
    #[error("the bearer token's email {email} is not verified (email_verified is not true)")]
    EmailNotVerified { email: String },
    /// `email` is not in `PROMOTER_PUSH_SERVICE_ACCOUNTS`.
    #[error("{email} is not an allowed push service account (PROMOTER_PUSH_SERVICE_ACCOUNTS)")]
    EmailNotAllowed { email: String },
}

impl PushAuthError {
    /// The HTTP status to answer: 401 when the token itself is missing or bad, 403 when a valid
    /// token's identity is not allowed, 503 when the key set cannot be fetched (Pub/Sub retries).
    pub fn status(&self) -> StatusCode {
        match self {
            PushAuthError::MissingToken
            | PushAuthError::Malformed { .. }
            | PushAuthError::NotVerifiedByCloudRun
            | PushAuthError::InvalidSignature { .. }
            | PushAuthError::Expired { .. }
            | PushAuthError::WrongAudience { .. }
            | PushAuthError::WrongIssuer { .. } => StatusCode::UNAUTHORIZED,
            PushAuthError::MissingEmail
            | PushAuthError::EmailNotVerified { .. }
            | PushAuthError::EmailNotAllowed { .. } => StatusCode::FORBIDDEN,
            PushAuthError::KeysUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The push authenticator, built once from the environment and shared by requests.
pub struct PushAuth {
    mode: PushAuthMode,
    audience: Option<String>,
    allowed_emails: Vec<String>,
    /// `verify` mode only. google-cloud-auth's verifier takes its key cache with `try_write`, so
    /// concurrent `verify` calls fail with "failed to obtain lock" (in 1.18); calls are
    /// serialized here. A verification from cache takes microseconds, so this costs nothing
    /// measurable; while keys load, other requests wait instead of failing.
    verifier: Option<Mutex<Verifier>>,
}

impl fmt::Debug for PushAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushAuth")
            .field("mode", &self.mode)
            .field("audience", &self.audience)
            .field("allowed_emails", &self.allowed_emails)
            .finish_non_exhaustive()
    }
}

impl PushAuth {
    /// Builds the authenticator from `PROMOTER_PUSH_AUTH`, `PROMOTER_PUSH_AUDIENCE`,
    /// `PROMOTER_PUSH_SERVICE_ACCOUNTS` (already split on commas) and `PROMOTER_JWKS_URL`.
    /// Empty strings count as unset.
    pub fn new(
        mode: PushAuthMode,
        audience: Option<String>,
        allowed_emails: Vec<String>,
        jwks_url: Option<String>,
    ) -> Result<Self, PushAuthConfigError> {
        let audience = audience
            .map(|audience| audience.trim().to_owned())
            .filter(|audience| !audience.is_empty());
        let allowed_emails: Vec<String> = allowed_emails
            .iter()
            .map(|email| email.trim().to_owned())
            .filter(|email| !email.is_empty())
            .collect();
        let verifier = match (mode, &audience) {
            (PushAuthMode::Verify, None) => return Err(PushAuthConfigError::AudienceRequired),
            (PushAuthMode::Verify, Some(audience)) => {
                let mut builder = verifier::Builder::new([audience.clone()]);
                if let Some(url) = jwks_url.filter(|url| !url.trim().is_empty()) {
                    builder = builder.with_jwks_url(url.trim());
                }
                Some(Mutex::new(builder.build()))
            }
            _ => None,
        };
        Ok(PushAuth {
            mode,
            audience,
            allowed_emails,
            verifier,
        })
    }

    /// The configured mode.
    pub fn mode(&self) -> PushAuthMode {
        self.mode
    }

    /// Authenticates one push request by its headers.
    pub async fn check(&self, headers: &HeaderMap) -> Result<PushIdentity, PushAuthError> {
        if self.mode == PushAuthMode::None {
            return Ok(PushIdentity { email: None });
        }
        let token = bearer_token(headers)?;
        let parts = Jwt::split(token)?;
        let claims = match (&self.verifier, self.mode) {
            (Some(verifier), PushAuthMode::Verify) => {
                self.verified_claims(verifier, token, &parts).await?
            }
            _ => {
                if parts.signature != SIGNATURE_REMOVED_BY_GOOGLE {
                    return Err(PushAuthError::NotVerifiedByCloudRun);
                }
                parts.claims()?
            }
        };
        self.check_claims(&claims, unix_now())
    }

    /// `verify` mode: the claims of a token whose signature verified.
    async fn verified_claims(
        &self,
        verifier: &Mutex<Verifier>,
        token: &str,
        parts: &Jwt<'_>,
    ) -> Result<Map<String, Value>, PushAuthError> {
        // Read before verifying, so a malformed token is named as such, and the verifier (which
        // requires a key id) is not asked to look up a key that cannot exist.
        let header = parts.header()?;
        if header
            .get("kid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(PushAuthError::Malformed {
                reason: "the token header has no kid (key id)".into(),
            });
        }
        let unverified = parts.claims()?;
        let result = {
            let verifier = verifier.lock().await;
            verifier.verify(token).await
        };
        match result {
            Ok(claims) => Ok(claims),
            Err(err) if err.is_load_cert() && is_transient(&err) => {
                Err(PushAuthError::KeysUnavailable {
                    reason: err.to_string(),
                })
            }
            Err(err) if err.is_decode() => Err(PushAuthError::Malformed {
                reason: err.to_string(),
            }),
            Err(err) => {
                // Name the precise cause when the claims show it (expired, another audience);
                // otherwise the signature (or key id) is what failed.
                self.check_token_claims(&unverified, unix_now())?;
                Err(PushAuthError::InvalidSignature {
                    reason: err.to_string(),
                })
            }
        }
    }

    /// Every claim check, token first (401), identity second (403).
    ///
    /// A verified identity that is not a push identity comes back as
    /// [`PushAuthError::EmailNotAllowed`] carrying its address: a person, whom the HTTP layer
    /// lets send an approval and nothing else. In `cloud-run` mode such a person's token is not
    /// held to the push audience: Cloud Run accepted it for this service already, and a user's
    /// `gcloud auth print-identity-token` carries gcloud's own audience
    /// (<https://cloud.google.com/run/docs/authenticating/developers>).
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<PushIdentity, PushAuthError> {
        self.check_issuer_and_expiry(claims, now)?;
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|email| !email.is_empty())
            .ok_or(PushAuthError::MissingEmail)?;
        // Google writes a boolean; some issuers write the string "true".
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => *verified,
            Some(Value::String(text)) => text == "true",
            _ => false,
        };
        if !verified {
            return Err(PushAuthError::EmailNotVerified {
                email: email.to_owned(),
            });
        }
        let pusher = self.allowed_emails.is_empty()
            || self
                .allowed_emails
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(email));
        if pusher || self.mode != PushAuthMode::CloudRun {
            self.check_audience(claims)?;
        }
        if !pusher {
            return Err(PushAuthError::EmailNotAllowed {
                email: email.to_owned(),
            });
        }
        Ok(PushIdentity {
            email: Some(email.to_owned()),
        })
    }

    /// The checks of the token itself: issuer, expiry, audience.
    fn check_token_claims(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<(), PushAuthError> {
        self.check_issuer_and_expiry(claims, now)?;
        self.check_audience(claims)
    }

    fn check_issuer_and_expiry(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<(), PushAuthError> {
        let issuer = claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !GOOGLE_ISSUERS.contains(&issuer) {
            return Err(PushAuthError::WrongIssuer {
                found: clip(issuer),
            });
        }
        let expires_at =
            claims
                .get("exp")
                .and_then(Value::as_i64)
                .ok_or_else(|| PushAuthError::Malformed {
                    reason: "the token has no numeric exp claim".into(),
                })?;
        let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(0);
        if now > expires_at.saturating_add(skew) {
            return Err(PushAuthError::Expired {
                expired_at: expires_at,
            });
        }
        Ok(())
    }

    fn check_audience(&self, claims: &Map<String, Value>) -> Result<(), PushAuthError> {
        if let Some(expected) = &self.audience {
            let found: Vec<String> = match claims.get("aud") {
                Some(Value::String(audience)) => vec![audience.clone()],
                Some(Value::Array(audiences)) => audiences
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            if !found.iter().any(|audience| audience == expected) {
                return Err(PushAuthError::WrongAudience {
                    expected: expected.clone(),
                    found: found.iter().map(|audience| clip(audience)).collect(),
                });
            }
        }
        Ok(())
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, as RFC 6750 allows).
fn bearer_token(headers: &HeaderMap) -> Result<&str, PushAuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(PushAuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| PushAuthError::Malformed {
        reason: "the Authorization header is not ASCII".into(),
    })?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(PushAuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(PushAuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(PushAuthError::Malformed {
            reason: "the bearer token is empty".into(),
        });
    }
    Ok(token)
}

/// A compact JWT split into its three segments (still encoded).
struct Jwt<'a> {
    header: &'a str,
    claims: &'a str,
    signature: &'a str,
}

impl<'a> Jwt<'a> {
    fn split(token: &'a str) -> Result<Self, PushAuthError> {
        let mut segments = token.split('.');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some(header), Some(claims), Some(signature), None) => Ok(Jwt {
                header,
                claims,
                signature,
            }),
            _ => Err(PushAuthError::Malformed {
                reason: "a JWT has three dot-separated segments".into(),
            }),
        }
    }

    fn header(&self) -> Result<Map<String, Value>, PushAuthError> {
        decode_segment(self.header, "header")
    }

    fn claims(&self) -> Result<Map<String, Value>, PushAuthError> {
        decode_segment(self.claims, "claims")
    }
}

/// A base64url-encoded JSON object segment.
fn decode_segment(segment: &str, name: &str) -> Result<Map<String, Value>, PushAuthError> {
    let bytes = BASE64URL
        .decode(segment)
        .map_err(|err| PushAuthError::Malformed {
            reason: format!("the token {name} is not base64url: {err}"),
        })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(PushAuthError::Malformed {
            reason: format!("the token {name} is not a JSON object"),
        }),
        Err(err) => Err(PushAuthError::Malformed {
            reason: format!("the token {name} is not JSON: {err}"),
        }),
    }
}

/// True when a verifier error was caused by a transient failure (the key set could not be
/// fetched), as opposed to a key id the key set does not have.
fn is_transient(err: &verifier::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(credentials) = cause.downcast_ref::<CredentialsError>() {
            return credentials.is_transient();
        }
        source = cause.source();
    }
    false
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Claim values go into messages; keep them short.
fn clip(text: &str) -> String {
    const MAX: usize = 120;
    match text.char_indices().nth(MAX) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}...", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{Json, Router, routing::get};
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    const AUDIENCE: &str = "https://promoter-abc123-ew.a.run.app/";
    const PUSHER: &str = "pubsub-push@dev-proj.iam.gserviceaccount.com";
    const KID: &str = "test-key-1";

    /// The key Google would sign with (its public half is served as the JWKS). Generated for
    /// these tests only (`openssl genrsa -traditional 2048`); it signs nothing else.
    const GOOGLE_KEY: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEpAIBAAKCAQEA4KBRfS/+jeOoS67x2677XThlR0s3uVt4dMOABm3uv9E9cEPX\n\
3u2IISLapy0K5lwSW4WVV0DbT6Dkuvz5fhY9ih9KSJ8Epfz0rkdqXOmYDRTLgt/g\n\
19CBclFxg0XupvBhKy+teYNG28oTpF5/PzlBXTE7cQy57tbzg309x69qGCyZrQi8\n\
LPTmptE301ccI46iBvoFMMTuVEhu0Cfjn4orLiApMCLJjh3DGlW4VDrrukAv3yvb\n\
3eLyablzN3oohekWR/ZnEOr6oGslNpROJ11dEifZcBZl+eulLmomZVQAok6NotKs\n\
HiklhxY2aCr/hcGYQS+FDhCqJRC5CkVKC+KUbQIDAQABAoIBADNaI1cJzlmUxqhK\n\
vesZpUiJ+IlkdkBPW4niGdYecrrydGfCcsr5panhpHgckYXZXa8DqoEQiDK7lx7y\n\
b302S2pUvfA9PlxOKIfhNr03//VZoC7yzJ26AqXmXZuDtMwAX052r2N8sgnUOEpW\n\
+iMzjTBnbW3qWWVzSadxTdrlTM1qkwT0H/pz/gH8sUnbpdcE+VTQGH/yAqt3ZW9N\n\
0U8qyEqgT/r6lfR0M1ErKgV2s5/QeDD29MzIkQqtsSF6O1sx2JrYzvAxi6LIUAYz\n\
Yx2zDZYKdN/Ojuw21y0B6kEmPTrXGqEK5/DscJMuCNShuC/NSblMwT8tKwffcQ6g\n\
cK0uHpcCgYEA/YoIqVjInvxI094StoWH8Uf5bTGBEroNe0COJmKXV06OShF8NygA\n\
Rcz8mqpPrN+48s9TzbKt6RmiCtoiYeGvcjHvno9fGleR0lDYJcTsPuWfUFF7xp3I\n\
9zgeQUmcAd/dc19KiPH6Zlk6IxMF1/Y89YCnpNLm7H7b1oVuLZAtmH8CgYEA4s5x\n\
3Okjg+NikIcRd4nMfMoVj+xKTCks97w1l7u2ZJ2P/66LWqLWnA9tNNtLnvlZ1K5U\n\
Bc0Aon+js1IVzIMS3cjA+sZYitZgzFlGrpTLDo4hm33fGgdLxlJXJopSBj37E9HU\n\
Eg4Ce+YK9gJXtVYZWToYACZprxLcWhBrt3/WPRMCgYEA7C85MGC3y3sjcNLQRd2Q\n\
rREqZzEVl1dgla+mfFWdvEQ+wvsU5uDJmDyEGKSNQnLK/M5suBM6dQpe7JMWMm6m\n\
HNAt81yF8Kkg+3Y6VLzkgxcvWQf/MR/thXdun80tmoVr6z0a1wXsCIoYYXIoIG2P\n\
jfgCs8WQP0FSE74KzEEiaIsCgYAhwm7qXf1+VStHrgMokudQL9hTyu0oNvzNh0NG\n\
6Zb1lQppGXb+r7xYEGfF9VplOGJpqOUy09fjWDJqr640+dGmF4q6CSoGyHAyGpvN\n\
wrIS4Y8ZEPxTaICb7YexYedhrHoh8hqp8VHnVU+OXLznbgBp6p7F7vHOMHWCJm2S\n\
K8Ic5wKBgQDSCqPNU5tC7T9dm8j3iZ/E/Oe5rtmMbkrqIe9iZlmgrGaU1kXhYR82\n\
uuj5qp72+6vFTOnmCm+aaRlaVURZWgsKbv+2hHXMfoa0DzGnJe1RsgSakITvj6Bl\n\
ftFZ9FfEiihFL0OospycqzDzHeO00MGFNxCivw7S3EYhzsuLkH5X9A==\n\
-----END RSA PRIVATE KEY-----\n";
    /// Another key, for forged tokens.
    const FORGER_KEY: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEogIBAAKCAQEAjv0r6wh0t0RKyPUa3WYcK1oj3CYnac9Z/dGJ+3ASjZIBTyHb\n\
zZWSD5j4gZ1bo5zFz3ZGdBH8odf6rCoE0UQgR7e07ei7T7o/KXiWw7JaznNAlMFk\n\
yIoRZWBMGKAALcTUudqwOP79NVNbdmcHNxfY3jH6z5QkdfIUSmVBrkflV11ud0pi\n\
oGTEoWbXIz/kOTT6liyRxMRCm93t7bwJS0RQHH0LnCaxiRaMfsfZttPCC0DCR9n1\n\
OIbQKj+gkLBSwmrq6I3CqFYKJFHq3BsGU1wQXf6PP5gDQCAxVFBQy6rkOyEzhxd4\n\
MS0ewZwrIESV5yAVsw/rnBfxgYS/6x2nNGcb1wIDAQABAoIBADbT4ga1z9dEAu8K\n\
ePojALMo1a5BHQTIAsg+FAwLHboWHZVjtL4gV4jOjZ9ZoL1cTEcwIXS5PucqA08H\n\
r6A0YLJPQTumbUh1cGms+RZh6crWy5EelNAGjQQTyCn7FAZ4vl7jeYXpVFshsuT0\n\
PYKFDN2qSXNV6SMmp1wddnFm1QxJzrc3i0Vl+neEvhzTf4hJm1y0GpRGWqmqfTvg\n\
IKNvQO+fcxLVNcWE/zVD3N8z3FnPnyY0K1SBRLaJQ9l5y0Rgpptf31fdSxh5OsKb\n\
MBRkbTv5lYVBPzNrHR9LEx4rP6W5JZBTzXym27fCGR7MxOeOsJkr8ULN4emYmp/J\n\
+a+k0NkCgYEAybJ+2apxYXxVZ0qha5KfSKL5FMlXjnPdjK+0lr/f3mrf1GvRepWm\n\
PoFtsunMk7GvMySuAT/il9Gq150k/imAQaHwRCELqdE8/l2b/dIbxXJj9inMYvnG\n\
kXlT3Q7GG+ZB+Lzw3znlrOSmCvWbO/YpTQ2yXl5wixUqssnR4XyaLfkCgYEAtXxY\n\
jpRf+W6TuFUsDL1U13i0gv5rm/dqwtJywSYGgkzdE8uk/WK58iD0r3Oklqe5rUXi\n\
83Muw6NUiQd0KDmgSh3d0wtfJf/7LvJ1Pxo/fJBOy3umU3ODEM/3dhVi7DYT/dHA\n\
dlW8lX8zNaMkVad6Ol9dDFLy59eP347/BFPVTE8CgYB5DTTOpFn5/SownPz2WABb\n\
EtzVGeX/rBBq0EVdOHk+vvvpPHBz1v74gqt49pL+jWSuGDSKsXHoVkDnuPurwvKj\n\
8XIHIaIjYF3v9/SYSJK8VOQjqIBvYqNHSf8ILEbAFdjAVX1nLBNpSa1R5IgvW5T8\n\
Ft1Xf+yhvKlstm3Nm//Y2QKBgHeWnYAuc2OYosx3i1RFuk9V4ZTj86LNkVMZe7ac\n\
yPM5lQBDU9AIK0FKyBGJIW6IzUhJYfhL8QfHa5/0Am2zM1VDgvVba/JNUIYqDGpt\n\
cGIzcUiSjRI2bqo4b/cmto2yQNAjVDBl5KOaMvNoMjwi5N7sEhNZ4Wg2Wj7VKmP+\n\
nfHvAoGAHHUwiHRhqqE0Y/jzon0pS51+K9iANlWhvsjAY/jlAM1OpgkpVxeuIsEI\n\
8n42RiZDepT47TZJyea2P6CDqIqakI+5N29G27hHB7/KPcpJ4NcPC2C+qYsDv5H2\n\
c4JciaFReImNx+c1ORmHqD5sJWPjCk3Vwb7jKQlcVWJiSBK65pE=\n\
-----END RSA PRIVATE KEY-----\n";

    fn encoding_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).expect("test key")
    }

    fn now() -> i64 {
        unix_now()
    }

    /// Claims as a Pub/Sub push token has them.
    fn push_claims() -> Value {
        json!({
            "aud": AUDIENCE,
            "azp": "112233445566778899000",
            "email": PUSHER,
            "email_verified": true,
            "exp": now() + 3600,
            "iat": now(),
            "iss": "https://accounts.google.com",
            "sub": "112233445566778899000"
        })
    }

    fn mint(pem: &str, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &encoding_key(pem)).expect("mint token")
    }

    fn signed(claims: &Value) -> String {
        mint(GOOGLE_KEY, Some(KID), claims)
    }

    /// What Cloud Run forwards after verifying: the same header and claims, signature replaced.
    fn stripped(claims: &Value) -> String {
        let token = signed(claims);
        let (unsigned, _) = token.rsplit_once('.').expect("three segments");
        format!("{unsigned}.{SIGNATURE_REMOVED_BY_GOOGLE}")
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        headers
    }

    /// Serves the JWKS of [`GOOGLE_KEY`] on 127.0.0.1; returns its URL and a fetch counter.
    async fn jwks_server() -> (String, Arc<AtomicUsize>) {
        let mut jwk = Jwk::from_encoding_key(&encoding_key(GOOGLE_KEY), Algorithm::RS256)
            .expect("jwk from key");
        jwk.common.key_id = Some(KID.to_owned());
        let jwks = serde_json::to_value(JwkSet { keys: vec![jwk] }).expect("jwks json");
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let app = Router::new().route(
            "/oauth2/v3/certs",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let jwks = jwks.clone();
                async move { Json(jwks) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind jwks server");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}/oauth2/v3/certs"), fetches)
    }

    async fn verifying(allowed: &[&str]) -> (PushAuth, Arc<AtomicUsize>) {
        let (url, fetches) = jwks_server().await;
        let auth = PushAuth::new(
            PushAuthMode::Verify,
            Some(AUDIENCE.into()),
            allowed.iter().map(|email| (*email).to_owned()).collect(),
            Some(url),
        )
        .expect("verify config");
        (auth, fetches)
    }

    fn cloud_run(audience: Option<&str>, allowed: &[&str]) -> PushAuth {
        PushAuth::new(
            PushAuthMode::CloudRun,
            audience.map(str::to_owned),
            allowed.iter().map(|email| (*email).to_owned()).collect(),
            None,
        )
        .expect("cloud-run config")
    }

    /// Asserts the error, its status, and that neither its message nor its Debug output holds
    /// any part of the token.
    fn assert_refused(
        result: Result<PushIdentity, PushAuthError>,
        token: &str,
        status: StatusCode,
    ) -> PushAuthError {
        let err = match result {
            Err(err) => err,
            Ok(identity) => panic!("expected a refusal, got {identity:?}"),
        };
        assert_eq!(err.status(), status, "{err}");
        let shown = format!("{err} {err:?}");
        for segment in token.split('.').filter(|segment| segment.len() > 8) {
            assert!(
                !shown.contains(segment),
                "token segment leaked into {shown}"
            );
        }
        err
    }

    #[tokio::test]
    async fn verify_accepts_a_valid_token_and_caches_keys() {
        let (auth, fetches) = verifying(&[PUSHER]).await;
        let token = signed(&push_claims());
        for _ in 0..3 {
            let identity = auth.check(&bearer(&token)).await.expect("valid token");
            assert_eq!(identity.email.as_deref(), Some(PUSHER));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn verify_refuses_a_forged_token() {
        let (auth, _) = verifying(&[]).await;
        let token = mint(FORGER_KEY, Some(KID), &push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(
            matches!(err, PushAuthError::InvalidSignature { .. }),
            "{err:?}"
        );

        // Signed by an unknown key id.
        let token = mint(FORGER_KEY, Some("other-kid"), &push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(
            matches!(err, PushAuthError::InvalidSignature { .. }),
            "{err:?}"
        );

        // Without a key id at all.
        let token = mint(GOOGLE_KEY, None, &push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(matches!(err, PushAuthError::Malformed { .. }), "{err:?}");

        // Cloud Run's stripped token is not acceptable where signatures are verified.
        let token = stripped(&push_claims());
        assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
    }

    #[tokio::test]
    async fn verify_refuses_an_expired_token() {
        let (auth, _) = verifying(&[]).await;
        let mut claims = push_claims();
        claims["exp"] = json!(now() - 3600);
        claims["iat"] = json!(now() - 7200);
        let token = signed(&claims);
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(matches!(err, PushAuthError::Expired { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn verify_refuses_a_wrong_audience() {
        let (auth, _) = verifying(&[]).await;
        let mut claims = push_claims();
        claims["aud"] = json!("https://someone-else.a.run.app/");
        let token = signed(&claims);
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(
            matches!(err, PushAuthError::WrongAudience { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn verify_refuses_a_wrong_email_with_403() {
        let (auth, _) = verifying(&["other@dev-proj.iam.gserviceaccount.com"]).await;
        let token = signed(&push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::FORBIDDEN,
        );
        assert_eq!(
            err,
            PushAuthError::EmailNotAllowed {
                email: PUSHER.into()
            }
        );

        let mut claims = push_claims();
        claims["email_verified"] = json!(false);
        let token = signed(&claims);
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::FORBIDDEN,
        );
        assert!(
            matches!(err, PushAuthError::EmailNotVerified { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn verify_serializes_concurrent_checks() {
        let (auth, fetches) = verifying(&[PUSHER]).await;
        let auth = Arc::new(auth);
        let token = signed(&push_claims());
        let checks: Vec<_> = (0..32)
            .map(|_| {
                let auth = auth.clone();
                let headers = bearer(&token);
                tokio::spawn(async move { auth.check(&headers).await })
            })
            .collect();
        for check in checks {
            let result = check.await.expect("task");
            assert!(result.is_ok(), "{result:?}");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn verify_with_unreachable_key_set_is_transient() {
        // A port held by this test and never listened on: connecting is refused, and nothing
        // else can take the port while the test runs.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let addr = socket.local_addr().expect("addr");
        let auth = PushAuth::new(
            PushAuthMode::Verify,
            Some(AUDIENCE.into()),
            Vec::new(),
            Some(format!("http://{addr}/certs")),
        )
        .expect("config");
        let token = signed(&push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::SERVICE_UNAVAILABLE,
        );
        assert!(
            matches!(err, PushAuthError::KeysUnavailable { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn missing_or_malformed_header_is_401() {
        let (verify, _) = verifying(&[]).await;
        let cloud_run = cloud_run(Some(AUDIENCE), &[]);
        for auth in [&verify, &cloud_run] {
            let err = auth.check(&HeaderMap::new()).await;
            assert_eq!(err, Err(PushAuthError::MissingToken));

            let mut basic = HeaderMap::new();
            basic.insert(
                http::header::AUTHORIZATION,
                "Basic dXNlcjpwYXNz".parse().expect("value"),
            );
            assert_eq!(auth.check(&basic).await, Err(PushAuthError::MissingToken));

            for token in ["", "not-a-jwt", "a.b", "a.b.c.d", "!!.??.sig"] {
                let result = auth.check(&bearer(token)).await;
                let err = assert_refused(result, token, StatusCode::UNAUTHORIZED);
                assert!(
                    matches!(
                        err,
                        PushAuthError::Malformed { .. }
                            | PushAuthError::MissingToken
                            | PushAuthError::NotVerifiedByCloudRun
                    ),
                    "{token:?}: {err:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn cloud_run_reads_claims_of_a_stripped_token() {
        let auth = cloud_run(
            Some(AUDIENCE),
            &[PUSHER, "second@dev-proj.iam.gserviceaccount.com"],
        );
        let token = stripped(&push_claims());
        let identity = auth.check(&bearer(&token)).await.expect("stripped token");
        assert_eq!(identity.email.as_deref(), Some(PUSHER));

        // Nothing configured: any verified Google identity.
        let open = cloud_run(None, &[]);
        assert!(open.check(&bearer(&token)).await.is_ok());
    }

    #[tokio::test]
    async fn cloud_run_takes_a_person_with_gclouds_audience_as_a_person_not_a_pusher() {
        let auth = cloud_run(Some(AUDIENCE), &[PUSHER]);
        // `gcloud auth print-identity-token` of a user: gcloud's own client id as audience.
        let mut claims = push_claims();
        claims["email"] = json!("alice@acme.com");
        claims["aud"] = json!("32555940559.apps.googleusercontent.com");
        let token = stripped(&claims);
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::FORBIDDEN,
        );
        assert_eq!(
            err,
            PushAuthError::EmailNotAllowed {
                email: "alice@acme.com".into()
            }
        );
        // The push identity itself is still held to the push audience.
        let mut claims = push_claims();
        claims["aud"] = json!("32555940559.apps.googleusercontent.com");
        let token = stripped(&claims);
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert!(
            matches!(err, PushAuthError::WrongAudience { .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn cloud_run_checks_each_claim() {
        let auth = cloud_run(Some(AUDIENCE), &[PUSHER]);
        // (claim, value or None to remove it, expected status, expected refusal)
        type Expect = fn(&PushAuthError) -> bool;
        let cases: [(&str, Option<Value>, StatusCode, Expect); 6] = [
            (
                "aud",
                Some(json!("https://elsewhere/")),
                StatusCode::UNAUTHORIZED,
                |e| matches!(e, PushAuthError::WrongAudience { .. }),
            ),
            (
                "exp",
                Some(json!(now() - 60)),
                StatusCode::UNAUTHORIZED,
                |e| matches!(e, PushAuthError::Expired { .. }),
            ),
            (
                "iss",
                Some(json!("https://evil.example")),
                StatusCode::UNAUTHORIZED,
                |e| matches!(e, PushAuthError::WrongIssuer { .. }),
            ),
            (
                "email",
                Some(json!("intruder@other-proj.iam.gserviceaccount.com")),
                StatusCode::FORBIDDEN,
                |e| matches!(e, PushAuthError::EmailNotAllowed { .. }),
            ),
            (
                "email_verified",
                Some(json!(false)),
                StatusCode::FORBIDDEN,
                |e| matches!(e, PushAuthError::EmailNotVerified { .. }),
            ),
            ("email", None, StatusCode::FORBIDDEN, |e| {
                *e == PushAuthError::MissingEmail
            }),
        ];
        for (claim, value, status, expected) in cases {
            let mut claims = push_claims();
            match (claims.as_object_mut(), value) {
                (Some(object), Some(value)) => {
                    object.insert(claim.to_owned(), value);
                }
                (Some(object), None) => {
                    object.remove(claim);
                }
                (None, _) => panic!("push_claims is an object"),
            }
            let token = stripped(&claims);
            let err = assert_refused(auth.check(&bearer(&token)).await, &token, status);
            assert!(expected(&err), "{claim}: {err:?}");
        }
    }

    #[tokio::test]
    async fn cloud_run_refuses_a_token_cloud_run_did_not_verify() {
        let auth = cloud_run(Some(AUDIENCE), &[PUSHER]);
        // Signed, even validly: the signature is still there, so Cloud Run did not check it.
        let token = signed(&push_claims());
        let err = assert_refused(
            auth.check(&bearer(&token)).await,
            &token,
            StatusCode::UNAUTHORIZED,
        );
        assert_eq!(err, PushAuthError::NotVerifiedByCloudRun);
    }

    #[tokio::test]
    async fn none_accepts_everything() {
        let auth = PushAuth::new(PushAuthMode::None, None, Vec::new(), None).expect("config");
        assert_eq!(
            auth.check(&HeaderMap::new()).await,
            Ok(PushIdentity { email: None })
        );
        assert!(auth.check(&bearer("garbage")).await.is_ok());
    }

    #[test]
    fn configuration() {
        assert_eq!("cloud-run".parse(), Ok(PushAuthMode::CloudRun));
        assert_eq!("verify".parse(), Ok(PushAuthMode::Verify));
        assert_eq!("none".parse(), Ok(PushAuthMode::None));
        assert_eq!(PushAuthMode::default(), PushAuthMode::CloudRun);
        assert!("Verify".parse::<PushAuthMode>().is_err());
        assert_eq!(
            PushAuth::new(PushAuthMode::Verify, None, Vec::new(), None).map(|_| ()),
            Err(PushAuthConfigError::AudienceRequired)
        );
        assert_eq!(
            PushAuth::new(PushAuthMode::Verify, Some("  ".into()), Vec::new(), None).map(|_| ()),
            Err(PushAuthConfigError::AudienceRequired)
        );
        let auth = PushAuth::new(
            PushAuthMode::CloudRun,
            Some(AUDIENCE.into()),
            vec![" a@x ".into(), String::new()],
            None,
        )
        .expect("config");
        assert_eq!(auth.allowed_emails, vec!["a@x".to_owned()]);
        assert!(!format!("{auth:?}").is_empty());
    }
}
