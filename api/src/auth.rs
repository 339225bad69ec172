//! Bearer JWT authentication.
//!
//! Development signs and verifies with an HS256 secret (`jobstream dev` creates one);
//! `exp`, `iss`, `aud` and `sub` are required, the algorithm is pinned.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::AppState;

/// Token verification settings.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// HS256 shared secret.
    pub hs256_secret: SecretString,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
}

/// Claims jobstream reads.
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
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `sub` claim.
    pub sub: String,
    /// Admins see every job.
    pub is_admin: bool,
}

impl Caller {
    /// Whether the caller may see a job owned by `owner`.
    pub fn may_see(&self, owner: &str) -> bool {
        self.is_admin || self.sub == owner
    }
}

/// Verifies bearer tokens.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// A verifier for HS256 tokens with the given issuer and audience.
    pub fn new(config: &AuthConfig) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        validation.validate_nbf = true;
        Verifier {
            key: DecodingKey::from_secret(config.hs256_secret.expose_secret().as_bytes()),
            validation,
        }
    }

    /// The caller a token stands for, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::Unauthorized(format!("invalid bearer token: {e}")))?;
        if data.claims.sub.is_empty() {
            return Err(ApiError::Unauthorized(
                "invalid bearer token: empty sub".into(),
            ));
        }
        Ok(Caller {
            is_admin: data.claims.role.as_deref() == Some("admin"),
            sub: data.claims.sub,
        })
    }
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
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(secret: &str) -> AuthConfig {
        AuthConfig {
            hs256_secret: SecretString::from(secret.to_owned()),
            issuer: "iss".into(),
            audience: "aud".into(),
        }
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_role() {
        let c = config("s3cret");
        let v = Verifier::new(&c);
        let t = mint_hs256(&c, "alice", false, Duration::from_secs(60)).unwrap();
        assert_eq!(
            v.verify(&t).unwrap(),
            Caller {
                sub: "alice".into(),
                is_admin: false
            }
        );
        let a = mint_hs256(&c, "root", true, Duration::from_secs(60)).unwrap();
        assert!(v.verify(&a).unwrap().is_admin);
    }

    #[test]
    fn wrong_secret_audience_or_expiry_is_refused() {
        let v = Verifier::new(&config("s3cret"));
        let other = mint_hs256(&config("other"), "alice", false, Duration::from_secs(60)).unwrap();
        assert!(v.verify(&other).is_err());
        let mut wrong_aud = config("s3cret");
        wrong_aud.audience = "elsewhere".into();
        assert!(
            v.verify(&mint_hs256(&wrong_aud, "alice", false, Duration::from_secs(60)).unwrap())
                .is_err()
        );
        let expired = Claims {
            sub: "a".into(),
            exp: 1_000,
            iss: "iss".into(),
            aud: "aud".into(),
            role: None,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(b"s3cret"),
        )
        .unwrap();
        assert!(v.verify(&t).is_err());
    }
}
