//! Console sessions: an HMAC-signed cookie, and the CSRF token derived from it.
//!
//! Logging in verifies the bearer token once, exactly as the REST API does, and stores
//! only what it proved (subject, admin role, expiry) in a cookie signed with the
//! console key: the token itself is never stored, put in a URL or logged. The cookie is
//! `HttpOnly; SameSite=Strict` and ends at the token's own `exp` (at most
//! [`MAX_SESSION`]). Each session carries a random nonce; its CSRF token is
//! `HMAC(key, "csrf" ‖ nonce)`, sent in every form and checked on every action.
//!
//! Stateless by design: any API instance sharing the key (`CONSOLE_SECRET`) accepts the
//! session, and nothing is stored per session. Logging out clears the cookie.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::UiError;
use crate::auth::Caller;
use crate::state::AppState;

/// Name of the session cookie.
pub const COOKIE: &str = "jobstream_session";
/// Longest session, whatever the token's expiry.
pub const MAX_SESSION: Duration = Duration::from_secs(12 * 3600);

type HmacSha256 = Hmac<Sha256>;

/// The key that signs sessions and CSRF tokens.
#[derive(Clone)]
pub struct ConsoleKey(Arc<[u8; 32]>);

impl std::fmt::Debug for ConsoleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleKey(..)")
    }
}

impl ConsoleKey {
    /// The key derived from a configured secret (shared by every API instance), or a
    /// random one: then sessions end when this process does.
    pub fn new(secret: Option<&SecretString>) -> Self {
        let key = match secret {
            Some(s) => {
                use sha2::Digest;
                Sha256::digest(s.expose_secret().as_bytes()).into()
            }
            None => {
                tracing::warn!(
                    "CONSOLE_SECRET unset: console sessions are signed with a random key and end when this process stops"
                );
                rand::random::<[u8; 32]>()
            }
        };
        ConsoleKey(Arc::new(key))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(self.0.as_slice()).expect("any key length");
        for p in parts {
            mac.update(p);
        }
        mac
    }
}

/// What a session proves: who logged in, with which role, until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// The token's `sub`.
    pub sub: String,
    /// The token carried the admin role.
    pub admin: bool,
    /// End of the session, Unix seconds.
    pub exp: i64,
    /// Random per session: the CSRF token is derived from it.
    pub nonce: String,
}

impl Session {
    /// A fresh session for a verified caller whose token expires at `token_exp`.
    pub fn start(caller: &Caller, token_exp: Option<i64>) -> Self {
        let now = chrono::Utc::now().timestamp();
        let cap = now + MAX_SESSION.as_secs() as i64;
        Session {
            sub: caller.sub.clone(),
            admin: caller.is_admin,
            exp: token_exp.map_or(cap, |e| e.min(cap)),
            nonce: B64.encode(rand::random::<[u8; 16]>()),
        }
    }

    /// The caller this session acts as, for the jobs service.
    pub fn caller(&self) -> Caller {
        Caller {
            sub: self.sub.clone(),
            is_admin: self.admin,
            name: None,
            email: None,
        }
    }

    /// The signed cookie value: `payload.mac`.
    pub fn seal(&self, key: &ConsoleKey) -> String {
        let payload = B64.encode(serde_json::to_vec(self).unwrap_or_default());
        let mac = key.mac(&[b"session", payload.as_bytes()]).finalize();
        format!("{payload}.{}", B64.encode(mac.into_bytes()))
    }

    /// The session in a cookie value, if its signature holds and it has not expired.
    pub fn open(value: &str, key: &ConsoleKey) -> Option<Self> {
        let (payload, mac) = value.split_once('.')?;
        key.mac(&[b"session", payload.as_bytes()])
            .verify_slice(&B64.decode(mac).ok()?)
            .ok()?;
        let session: Session = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (session.exp > chrono::Utc::now().timestamp()).then_some(session)
    }

    /// The CSRF token of this session.
    pub fn csrf(&self, key: &ConsoleKey) -> String {
        B64.encode(
            key.mac(&[b"csrf", self.nonce.as_bytes()])
                .finalize()
                .into_bytes(),
        )
    }

    /// Whether `token` is this session's CSRF token (constant-time).
    pub fn csrf_ok(&self, key: &ConsoleKey, token: &str) -> bool {
        B64.decode(token).is_ok_and(|t| {
            key.mac(&[b"csrf", self.nonce.as_bytes()])
                .verify_slice(&t)
                .is_ok()
        })
    }

    /// `403` unless the session is an admin's.
    pub fn require_admin(&self) -> Result<(), UiError> {
        if self.admin {
            Ok(())
        } else {
            Err(UiError::Forbidden)
        }
    }

    /// `Set-Cookie` starting this session (`Secure` when the request came over HTTPS).
    pub fn set_cookie(&self, key: &ConsoleKey, request: &HeaderMap) -> HeaderValue {
        let max_age = (self.exp - chrono::Utc::now().timestamp()).max(0);
        cookie_header(&self.seal(key), max_age, request)
    }
}

/// `Set-Cookie` ending the session.
pub fn clear_cookie(request: &HeaderMap) -> HeaderValue {
    cookie_header("", 0, request)
}

fn cookie_header(value: &str, max_age: i64, request: &HeaderMap) -> HeaderValue {
    let secure = request
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session cookie's value in a request, if any.
fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `exp` claim of a token whose signature was verified already.
pub fn token_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
    claims.get("exp")?.as_i64()
}

impl FromRequestParts<AppState> for Session {
    type Rejection = UiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let session = cookie_value(&parts.headers)
            .and_then(|v| Session::open(v, &state.console))
            .ok_or(UiError::LoginRequired)?;
        tracing::Span::current().record("sub", session.sub.as_str());
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session::start(
            &Caller {
                sub: "alice".into(),
                is_admin: false,
                name: None,
                email: None,
            },
            None,
        )
    }

    #[test]
    fn a_sealed_session_opens_only_with_its_key_and_untouched() {
        let key = ConsoleKey::new(Some(&SecretString::from("k1")));
        let s = session();
        let sealed = s.seal(&key);
        assert_eq!(Session::open(&sealed, &key).unwrap().sub, "alice");
        let other = ConsoleKey::new(Some(&SecretString::from("k2")));
        assert!(Session::open(&sealed, &other).is_none());
        let (_, mac) = sealed.split_once('.').unwrap();
        let forged = B64.encode(br#"{"sub":"bob","admin":true,"exp":9999999999,"nonce":"x"}"#);
        assert!(Session::open(&format!("{forged}.{mac}"), &key).is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let key = ConsoleKey::new(Some(&SecretString::from("k")));
        let (a, b) = (session(), session());
        assert!(a.csrf_ok(&key, &a.csrf(&key)));
        assert!(!a.csrf_ok(&key, &b.csrf(&key)));
        assert!(!a.csrf_ok(&key, ""));
    }

    #[test]
    fn an_expired_session_does_not_open() {
        let key = ConsoleKey::new(Some(&SecretString::from("k")));
        let mut s = session();
        s.exp = chrono::Utc::now().timestamp() - 1;
        assert!(Session::open(&s.seal(&key), &key).is_none());
    }
}
