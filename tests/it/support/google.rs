//! Google's side of the identity chain, faked at the network boundary because it cannot run
//! here: the metadata server (reached through `GCE_METADATA_HOST`, as on Cloud Run) and an
//! Artifact-Registry-style token realm that takes `oauth2accesstoken:<access token>` and answers
//! with a JWT the real distribution registry verifies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;

/// Serves `router` on a loopback port for the rest of the test.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    address
}

/// The metadata server: hands out access tokens for the default service account.
#[derive(Clone, Default)]
pub struct MetadataServer {
    issued: Arc<Mutex<Vec<String>>>,
}

impl MetadataServer {
    pub async fn start() -> (MetadataServer, SocketAddr) {
        let server = MetadataServer::default();
        let router = Router::new()
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(Self::token),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                get(|| async { "promoter@test-project.iam.gserviceaccount.com" }),
            )
            .route(
                "/computeMetadata/v1/universe/universe-domain",
                get(|| async { "googleapis.com" }),
            )
            .with_state(server.clone());
        let address = serve(router).await;
        (server, address)
    }

    async fn token(State(server): State<MetadataServer>, headers: HeaderMap) -> Response {
        if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
            return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
        }
        let mut issued = server.issued.lock().expect("lock");
        let token = format!("ya29.metadata-token-{}", issued.len() + 1);
        issued.push(token.clone());
        axum::Json(
            serde_json::json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
        )
        .into_response()
    }

    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().expect("lock").clone()
    }
}

/// A token realm in Artifact Registry's manner.
#[derive(Clone)]
pub struct TokenRealm {
    key: Arc<jsonwebtoken::EncodingKey>,
    cert_der_base64: String,
    pub service: String,
    pub issuer: String,
    /// Access tokens accepted as `oauth2accesstoken:<token>`; a closure so tests can accept
    /// whatever the metadata server issued.
    accept: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    seen: Arc<Mutex<Vec<RealmRequest>>>,
}

/// What the realm was asked.
#[derive(Clone, Debug)]
pub struct RealmRequest {
    pub username: Option<String>,
    pub password: Option<String>,
    pub scopes: Vec<String>,
}

impl TokenRealm {
    /// Starts the realm; returns it, its URL and the certificate the registry must trust.
    pub async fn start(
        dir: &Path,
        accept: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> (TokenRealm, String, PathBuf) {
        let key_path = dir.join("realm-key.pem");
        let cert_path = dir.join("realm-cert.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=promoter-test-realm",
            ])
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl could not make the realm's key");
        let key_pem = std::fs::read(&key_path).expect("key");
        let cert_pem = std::fs::read_to_string(&cert_path).expect("cert");
        let cert_der_base64: String = cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let realm = TokenRealm {
            key: Arc::new(jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).expect("RSA key")),
            cert_der_base64,
            service: "promoter-test-registry".into(),
            issuer: "promoter-test-realm".into(),
            accept: Arc::new(accept),
            seen: Arc::default(),
        };
        let address = serve(
            Router::new()
                .route("/v2/token", get(Self::token))
                .with_state(realm.clone()),
        )
        .await;
        (realm, format!("http://{address}/v2/token"), cert_path)
    }

    pub fn seen(&self) -> Vec<RealmRequest> {
        self.seen.lock().expect("lock").clone()
    }

    async fn token(
        State(realm): State<TokenRealm>,
        Query(query): Query<Vec<(String, String)>>,
        headers: HeaderMap,
    ) -> Response {
        let basic = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .and_then(|v| String::from_utf8(v).ok());
        let (username, password) = match basic.as_deref().and_then(|b| b.split_once(':')) {
            Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
            None => (None, None),
        };
        let scopes: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.clone())
            .collect();
        realm.seen.lock().expect("lock").push(RealmRequest {
            username: username.clone(),
            password: password.clone(),
            scopes: scopes.clone(),
        });
        let authorized = username.as_deref() == Some("oauth2accesstoken")
            && password.as_deref().is_some_and(|p| (realm.accept)(p));
        if username.is_some() && !authorized {
            return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
        }
        // Anonymous callers get a token with no access, as a private Artifact Registry repo does.
        let access: Vec<serde_json::Value> = if authorized {
            scopes
                .iter()
                .filter_map(|s| {
                    let mut parts = s.splitn(3, ':');
                    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                    Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
                })
                .collect()
        } else {
            Vec::new()
        };
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": realm.issuer, "aud": realm.service, "sub": username.unwrap_or_default(),
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand::random::<u32>()),
            "access": access,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5c = Some(vec![realm.cert_der_base64.clone()]);
        match jsonwebtoken::encode(&header, &claims, &realm.key) {
            Ok(token) => axum::Json(
                serde_json::json!({"token": token, "access_token": token, "expires_in": 300}),
            )
            .into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }
}

/// The `HashMap` a test uses to accept a fixed set of tokens.
pub fn accept_only(tokens: &[&str]) -> impl Fn(&str) -> bool + Send + Sync + 'static {
    let tokens: HashMap<String, ()> = tokens.iter().map(|t| (t.to_string(), ())).collect();
    move |token| tokens.contains_key(token)
}

/// Google's OIDC token issuer for push subscriptions, faked: a key pair, its JWKS on loopback, and
/// tokens minted the way Pub/Sub mints them for a push subscription's service account.
#[derive(Clone)]
pub struct OidcIssuer {
    key: Arc<jsonwebtoken::EncodingKey>,
    kid: String,
}

impl OidcIssuer {
    /// A key pair (not served anywhere by itself).
    pub fn new(dir: &Path, kid: &str) -> OidcIssuer {
        let key_path = dir.join(format!("oidc-{kid}.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&key_path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl could not make an OIDC key");
        let pem = std::fs::read(&key_path).expect("key");
        OidcIssuer {
            key: Arc::new(jsonwebtoken::EncodingKey::from_rsa_pem(&pem).expect("RSA key")),
            kid: kid.to_owned(),
        }
    }

    /// Serves this issuer's key set; returns its URL (for `PROMOTER_JWKS_URL`).
    pub async fn serve_jwks(&self) -> String {
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&self.key, jsonwebtoken::Algorithm::RS256)
                .expect("a JWK");
        jwk.common.key_id = Some(self.kid.clone());
        let set = serde_json::json!({ "keys": [jwk] });
        let address = serve(Router::new().route(
            "/jwks",
            get(move || {
                let set = set.clone();
                async move { axum::Json(set) }
            }),
        ))
        .await;
        format!("http://{address}/jwks")
    }

    /// A push token: Google's issuer, the audience, the service account, `exp` in `lifetime_seconds`.
    pub fn mint(&self, audience: &str, email: &str, lifetime_seconds: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": "https://accounts.google.com", "aud": audience, "azp": "1234567890",
            "email": email, "email_verified": true, "sub": "1234567890",
            "iat": now - 60, "exp": now + lifetime_seconds,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("a token")
    }

    /// The token as a Cloud Run service with IAM invocation sees it: signature replaced.
    pub fn mint_as_cloud_run_passes_it(&self, audience: &str, email: &str) -> String {
        let token = self.mint(audience, email, 3600);
        let mut parts: Vec<&str> = token.split('.').collect();
        parts[2] = "SIGNATURE_REMOVED_BY_GOOGLE";
        parts.join(".")
    }
}
