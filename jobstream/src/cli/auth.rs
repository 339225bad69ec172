//! Token verification settings, and `jobstream token`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use super::parse::parse_duration;

/// Token verification.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// HS256 secret (development). Prefer JWT_SECRET_FILE.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,
    /// File holding the HS256 secret (`jobstream dev` writes data/jwt-secret, the default
    /// when no public key is configured; with public keys, HS256 is on only when this or
    /// JWT_SECRET is set).
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "JWT_ISSUER", default_value = "jobstream")]
    pub jwt_issuer: String,
    /// Required `aud` claim.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "jobstream")]
    pub jwt_audience: String,
    /// PEM file with the issuer's public key (RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Key id of the PEM key (tokens carrying a `kid` must name it); none by default.
    #[arg(long, env = "JWT_PUBLIC_KEY_KID")]
    pub jwt_public_key_kid: Option<String>,
    /// JWKS file with the issuer's public keys (chosen by the token's `kid`).
    #[arg(long, env = "JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// Claim holding the role: a string or an array of strings; `admin` makes an admin.
    #[arg(long, env = "JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,
    /// Clock-skew allowance for `exp` and `nbf`.
    #[arg(long, env = "JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,
}

impl AuthArgs {
    /// Development settings: HS256 with the secret in `secret_file`, default issuer and audience.
    pub fn dev(secret_file: PathBuf) -> Self {
        AuthArgs {
            jwt_secret: None,
            jwt_secret_file: Some(secret_file),
            jwt_issuer: "jobstream".into(),
            jwt_audience: "jobstream".into(),
            jwt_public_key_file: None,
            jwt_public_key_kid: None,
            jwt_jwks_file: None,
            jwt_role_claim: jobstream_api::auth::DEFAULT_ROLE_CLAIM.into(),
            jwt_leeway: Duration::from_secs(jobstream_api::auth::DEFAULT_LEEWAY_SECS),
        }
    }
}

/// `jobstream token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Give the token the admin role.
    #[arg(long)]
    pub admin: bool,
    /// Validity (e.g. 1h, 30d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub auth: AuthArgs,
}
