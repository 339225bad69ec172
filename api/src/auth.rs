//! Bearer JWT authentication.
//!
//! jobstream only *verifies* tokens; an identity provider (Google, Auth0, Keycloak …)
//! signs them. The verifier holds a pinned [`KeySet`]:
//! - public keys from a PEM file (one key, RS256 / ES256 / EdDSA by its type) or a
//!   JWKS file (several keys, chosen by the token's `kid`);
//! - in development, an HS256 secret, only when one is configured explicitly.
//!
//! Each key is pinned to one algorithm, taken from the key itself (its type, or the
//! JWKS `alg`), never from the token header: a token whose `alg` differs from its
//! key's is refused, so `alg: none` or an HS256 token "signed" with a public key
//! never verifies. `exp`, `sub`, `iss` and `aud` are required and checked against the
//! configuration, `nbf` is honoured, with a small leeway for clock skew. Roles come
//! from a configurable claim (a string or an array of strings, a dotted path for nested
//! claims): `admin` or `user`.

use std::path::Path;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
pub use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default claim holding the caller's role(s).
pub const DEFAULT_ROLE_CLAIM: &str = "role";
/// Longest `sub` accepted (identity providers use far shorter ones).
pub const MAX_SUB_LEN: usize = 512;

/// Development token settings: an HS256 secret plus the issuer and audience.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub hs256_secret: SecretString,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
}

/// What a verified token must say, besides its signature.
#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (the token's `aud` may be a list containing it).
    pub audience: String,
    /// Claim holding the role(s): a string (`"admin"`) or an array (`["user", "admin"]`).
    pub role_claim: String,
    /// Clock-skew allowance for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl VerifyPolicy {
    /// A policy with the default role claim and leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        VerifyPolicy {
            issuer: issuer.into(),
            audience: audience.into(),
            role_claim: DEFAULT_ROLE_CLAIM.to_owned(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Why a key file or key could not be used. Reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The content is not a usable public key or key set.
    #[error("{0}")]
    Invalid(String),
    /// Two keys share a `kid`.
    #[error("two keys have the kid {0:?}: kids must be unique")]
    DuplicateKid(String),
    /// Nothing to verify with.
    #[error(
        "no verification key configured: set JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE (production), or JWT_SECRET / JWT_SECRET_FILE (development)"
    )]
    NoKeys,
}

/// One verification key, pinned to one algorithm.
#[derive(Clone)]
pub struct PinnedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl PinnedKey {
    /// A public key in PEM (SPKI `PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`): RSA → RS256,
    /// EC P-256 → ES256 (P-384 → ES384), Ed25519 → EdDSA. Private keys are refused.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, KeyError> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY") {
            return Err(KeyError::Invalid(
                "the PEM holds a private key; give jobstream the issuer's PUBLIC key only".into(),
            ));
        }
        if text.contains("BEGIN CERTIFICATE") {
            return Err(KeyError::Invalid(
                "the PEM is a certificate; extract its public key (openssl x509 -pubkey -noout) or use the issuer's JWKS".into(),
            ));
        }
        let (alg, key) = if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            (Algorithm::EdDSA, k)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            // The uncompressed point is 0x04 || x || y: 65 bytes on P-256, 97 on P-384.
            let alg = match k.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65) => Algorithm::ES256,
                Ok(97) => Algorithm::ES384,
                _ => {
                    return Err(KeyError::Invalid(
                        "unsupported EC curve (use P-256 or P-384)".into(),
                    ));
                }
            };
            (alg, k)
        } else if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (Algorithm::RS256, k)
        } else {
            return Err(KeyError::Invalid(
                "not a PEM public key (RSA, EC P-256 or Ed25519)".into(),
            ));
        };
        Ok(PinnedKey { kid, alg, key })
    }

    /// One key of a JWKS. The algorithm is the key's `alg` when given (it must suit the
    /// key type), otherwise derived from the type: RSA → RS256, EC → ES256/ES384 by curve,
    /// OKP Ed25519 → EdDSA. Symmetric (`oct`) keys are refused: a key set is public.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let kid = jwk.common.key_id.clone();
        let name = kid.as_deref().unwrap_or("(no kid)");
        let bad = |why: &str| KeyError::Invalid(format!("JWKS key {name}: {why}"));
        let declared = jwk.common.key_algorithm;
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => match declared {
                None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
                Some(KeyAlgorithm::RS384) => Algorithm::RS384,
                Some(KeyAlgorithm::RS512) => Algorithm::RS512,
                Some(KeyAlgorithm::PS256) => Algorithm::PS256,
                Some(KeyAlgorithm::PS384) => Algorithm::PS384,
                Some(KeyAlgorithm::PS512) => Algorithm::PS512,
                Some(other) => return Err(bad(&format!("alg {other:?} does not suit an RSA key"))),
            },
            AlgorithmParameters::EllipticCurve(p) => {
                let by_curve = match p.curve {
                    EllipticCurve::P256 => Algorithm::ES256,
                    EllipticCurve::P384 => Algorithm::ES384,
                    ref c => return Err(bad(&format!("unsupported curve {c:?}"))),
                };
                match declared {
                    None => by_curve,
                    Some(KeyAlgorithm::ES256) if by_curve == Algorithm::ES256 => by_curve,
                    Some(KeyAlgorithm::ES384) if by_curve == Algorithm::ES384 => by_curve,
                    Some(other) => {
                        return Err(bad(&format!(
                            "alg {other:?} does not suit curve {:?}",
                            p.curve
                        )));
                    }
                }
            }
            AlgorithmParameters::OctetKeyPair(p) => match (&p.curve, declared) {
                (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
                (c, _) => return Err(bad(&format!("unsupported OKP key (curve {c:?})"))),
            },
            AlgorithmParameters::OctetKey(_) => {
                return Err(bad(
                    "symmetric (oct) keys do not belong in a public key set; use JWT_SECRET for HS256 development tokens",
                ));
            }
            _ => return Err(bad("unsupported key type")),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(&e.to_string()))?;
        Ok(PinnedKey { kid, alg, key })
    }

    /// An HS256 secret (development only), without a kid.
    pub fn hs256(secret: &SecretString) -> Self {
        PinnedKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
        }
    }

    /// The key id, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

/// The pinned set of keys tokens may be signed with.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<PinnedKey>,
}

impl KeySet {
    /// An empty set.
    pub fn new() -> Self {
        KeySet::default()
    }

    /// Adds a key; kids must be unique.
    pub fn add(&mut self, key: PinnedKey) -> Result<(), KeyError> {
        if let Some(kid) = &key.kid
            && self.keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            return Err(KeyError::DuplicateKid(kid.clone()));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Adds every signing key of a JWKS document (`{"keys": [...]}`). Keys marked
    /// `"use": "enc"` are skipped; any other unusable key is an error.
    pub fn add_jwks(&mut self, json: &[u8]) -> Result<(), KeyError> {
        #[derive(Deserialize)]
        struct RawSet {
            keys: Vec<Value>,
        }
        let raw: RawSet = serde_json::from_slice(json).map_err(|e| {
            KeyError::Invalid(format!("not a JWKS document ({{\"keys\": [...]}}): {e}"))
        })?;
        let mut added = 0;
        for (i, value) in raw.keys.into_iter().enumerate() {
            let jwk: Jwk = serde_json::from_value(value)
                .map_err(|e| KeyError::Invalid(format!("JWKS key #{i}: {e}")))?;
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            self.add(PinnedKey::from_jwk(&jwk)?)?;
            added += 1;
        }
        if added == 0 {
            return Err(KeyError::Invalid("the JWKS has no signing key".into()));
        }
        Ok(())
    }

    /// Adds the public key of a PEM file.
    pub fn add_pem_file(&mut self, path: &Path, kid: Option<String>) -> Result<(), KeyError> {
        let pem = read(path)?;
        let key = PinnedKey::from_pem(&pem, kid)
            .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
        self.add(key)
    }

    /// Adds the keys of a JWKS file.
    pub fn add_jwks_file(&mut self, path: &Path) -> Result<(), KeyError> {
        let json = read(path)?;
        self.add_jwks(&json).map_err(|e| match e {
            KeyError::Invalid(m) => KeyError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in the order they were added.
    pub fn keys(&self) -> &[PinnedKey] {
        &self.keys
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Claims of a development token minted by [`mint_hs256`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user's stable id.
    pub sub: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// `user` (default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `sub` claim.
    pub sub: String,
    /// Admins see every job.
    pub is_admin: bool,
    /// The `name` claim, when present.
    pub name: Option<String>,
    /// The `email` claim, when present (and not marked `email_verified: false`).
    pub email: Option<String>,
}

impl Caller {
    /// Whether the caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_admin || self.sub == owner
    }

    /// `403` unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this route needs the admin role".into(),
            ))
        }
    }
}

/// Verifies bearer tokens against a pinned key set and a policy.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    policy: VerifyPolicy,
}

impl Verifier {
    /// A development verifier: HS256 with the configured secret, default role claim and leeway.
    pub fn new(config: &AuthConfig) -> Self {
        Verifier {
            keys: KeySet {
                keys: vec![PinnedKey::hs256(&config.hs256_secret)],
            },
            policy: VerifyPolicy::new(&config.issuer, &config.audience),
        }
    }

    /// A verifier over `keys` (at least one) with `policy`.
    pub fn with_keys(keys: KeySet, policy: VerifyPolicy) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Verifier { keys, policy })
    }

    /// The pinned keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The caller a token stands for, or why it is refused (always a `401`).
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let refuse = |why: String| ApiError::Unauthorized(format!("invalid bearer token: {why}"));
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refuse(format!("malformed or unsupported header ({e})")))?;
        // RFC 7515 §4.1.11: critical extensions must be understood, and we understand none.
        if let Some(crit) = &header.crit {
            return Err(refuse(format!(
                "the header names critical extensions this verifier does not understand (crit {crit:?})"
            )));
        }
        let key = self.choose_key(&header).map_err(refuse)?;
        let mut validation = Validation::new(key.alg);
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.policy.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| refuse(e.to_string()))?;
        let claims = data.claims;
        let sub = match claims.get("sub").and_then(Value::as_str) {
            // A sub is stored as the owner of jobs: no store holds NUL, no log wants controls.
            Some(s) if s.chars().any(char::is_control) => {
                return Err(refuse("sub must not contain control characters".into()));
            }
            Some(s) if !s.trim().is_empty() && s.len() <= MAX_SUB_LEN => s.to_owned(),
            Some(s) if s.len() > MAX_SUB_LEN => {
                return Err(refuse(format!("sub longer than {MAX_SUB_LEN} bytes")));
            }
            _ => return Err(refuse("sub must be a non-empty string".into())),
        };
        let is_admin = match role_claim(&claims, &self.policy.role_claim) {
            Some(Value::String(r)) => r == "admin",
            Some(Value::Array(rs)) => rs.iter().any(|r| r.as_str() == Some("admin")),
            _ => false,
        };
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                // Profile claims are stored with the user: one no store can hold is dropped.
                .filter(|s| !s.is_empty() && jobstream_core::limits::check_text(s).is_ok())
                .map(str::to_owned)
        };
        let email =
            text("email").filter(|_| claims.get("email_verified") != Some(&Value::Bool(false)));
        Ok(Caller {
            sub,
            is_admin,
            name: text("name"),
            email,
        })
    }

    /// The key for a token: by `kid` when the token has one (only from the pinned set),
    /// otherwise the set's keys without a kid; among those, the one pinned to the header's
    /// algorithm. The key decides the algorithm; the header can only fail to match it.
    fn choose_key(&self, header: &Header) -> Result<&PinnedKey, String> {
        let kid = header.kid.as_deref();
        let candidates: Vec<&PinnedKey> = self
            .keys
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == kid)
            .collect();
        if candidates.is_empty() {
            return Err(match kid {
                Some(k) => {
                    let shown: String = k.chars().take(64).collect();
                    format!("unknown key id (kid {shown:?} is not in the configured key set)")
                }
                None => "the token has no kid, and every configured key has one".into(),
            });
        }
        candidates
            .iter()
            .find(|k| k.alg == header.alg)
            .copied()
            .ok_or_else(|| {
                let pinned: Vec<String> =
                    candidates.iter().map(|k| format!("{:?}", k.alg)).collect();
                format!(
                    "algorithm {:?} is not allowed for this key (pinned to {})",
                    header.alg,
                    pinned.join(", ")
                )
            })
    }
}

/// The role claim: the claim of that exact name (Auth0's namespaced claims contain dots),
/// else a dotted path into nested objects (Keycloak's `realm_access.roles`).
fn role_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut v = claims.get(parts.next()?)?;
    for part in parts {
        v = v.get(part)?;
    }
    Some(v)
}

/// Signs a development token (HS256) for `sub`, valid for `ttl`.
pub fn mint_hs256(
    config: &AuthConfig,
    sub: &str,
    admin: bool,
    ttl: std::time::Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let exp = jsonwebtoken::get_current_timestamp() + ttl.as_secs();
    let claims = Claims {
        sub: sub.to_owned(),
        exp,
        iss: config.issuer.clone(),
        aud: config.audience.clone(),
        role: Some(if admin { "admin" } else { "user" }.to_owned()),
        name: None,
        email: None,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(config.hs256_secret.expose_secret().as_bytes()),
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized("missing Authorization: Bearer <token> header".into())
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .ok_or_else(|| {
                ApiError::Unauthorized("Authorization header must be 'Bearer <token>'".into())
            })?;
        let caller = state.verifier.verify(token.trim())?;
        tracing::Span::current().record("sub", caller.sub.as_str());
        // A user's first authenticated request registers them (once; see `users`).
        let request_id = crate::http::RequestId::from_headers(&parts.headers);
        crate::users::ensure_registered(state, &caller, request_id.as_deref()).await;
        Ok(caller)
    }
}

#[cfg(test)]
mod tests;
