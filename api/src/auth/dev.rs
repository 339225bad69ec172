//! Development tokens: HS256 with a configured secret, minted by `jobstream token`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

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
