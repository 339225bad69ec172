//! Token verification: signature by the pinned key, the policy's claims, the caller's roles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Header, Validation};
use serde_json::{Map, Value};

use super::caller::Caller;
use super::dev::AuthConfig;
use super::keys::{KeyError, KeySet, PinnedKey};
use crate::error::ApiError;

/// Default clock-skew allowance for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default claim holding the caller's role(s).
pub const DEFAULT_ROLE_CLAIM: &str = "role";
/// Longest `sub` accepted (identity providers use far shorter ones).
pub const MAX_SUB_LEN: usize = 512;
/// A verified token is checked again after at most this long, in seconds.
const RECHECK_SECS: u64 = 60;
/// Verified tokens remembered at most; past it the memory starts over.
const REMEMBERED_MAX: usize = 10_000;

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

/// Verifies bearer tokens against a pinned key set and a policy.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    policy: VerifyPolicy,
    remembered: Remembered,
}

/// Tokens verified lately, with the caller each stands for and until when (unix seconds).
///
/// A client sends the same token with every request, and checking its signature was about
/// a twelfth of the API's CPU per submitted job. A token is remembered until it expires
/// (with the leeway) and for at most [`RECHECK_SECS`]; only a token that passed the whole
/// check is remembered, so a forged one always pays for the signature check and fails.
#[derive(Clone, Default)]
struct Remembered(Arc<Mutex<HashMap<String, (Caller, u64)>>>);

impl Remembered {
    fn get(&self, token: &str, now: u64) -> Option<Caller> {
        let tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token) {
            Some((caller, until)) if now < *until => Some(caller.clone()),
            _ => None,
        }
    }

    fn put(&self, token: &str, caller: &Caller, until: u64) {
        let mut tokens = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= REMEMBERED_MAX {
            tokens.clear();
        }
        tokens.insert(token.to_owned(), (caller.clone(), until));
    }
}

// Tokens are credentials: a debug print shows how many are remembered, never which.
impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().map(|t| t.len()).unwrap_or(0);
        f.debug_struct("Remembered")
            .field("tokens", &count)
            .finish()
    }
}

impl Verifier {
    /// A development verifier: HS256 with the configured secret, default role claim and leeway.
    pub fn new(config: &AuthConfig) -> Self {
        Verifier {
            keys: KeySet::single(PinnedKey::hs256(&config.hs256_secret)),
            policy: VerifyPolicy::new(&config.issuer, &config.audience),
            remembered: Remembered::default(),
        }
    }

    /// A verifier over `keys` (at least one) with `policy`.
    pub fn with_keys(keys: KeySet, policy: VerifyPolicy) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Verifier {
            keys,
            policy,
            remembered: Remembered::default(),
        })
    }

    /// The pinned keys.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// The caller a token stands for, or why it is refused (always a `401`).
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        self.verify_at(token, jsonwebtoken::get_current_timestamp())
    }

    /// [`Verifier::verify`] at `now` (unix seconds): a token remembered from an earlier
    /// check, else the whole check.
    pub(super) fn verify_at(&self, token: &str, now: u64) -> Result<Caller, ApiError> {
        if let Some(caller) = self.remembered.get(token, now) {
            return Ok(caller);
        }
        let (caller, exp) = self.check(token, now)?;
        let until = exp
            .saturating_add(self.policy.leeway_secs)
            .min(now + RECHECK_SECS);
        self.remembered.put(token, &caller, until);
        Ok(caller)
    }

    /// The whole check of a token: the caller it stands for and its `exp`.
    fn check(&self, token: &str, now: u64) -> Result<(Caller, u64), ApiError> {
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
        let mut validation = Validation::new(key.algorithm());
        validation.set_issuer(&[&self.policy.issuer]);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.policy.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), &validation)
                .map_err(|e| refuse(e.to_string()))?;
        let claims = data.claims;
        // `exp` is required and checked by `decode` on the system clock; checked again at
        // `now` so the token's expiry is the one remembered.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        if exp.saturating_add(self.policy.leeway_secs) < now {
            return Err(refuse("ExpiredSignature".into()));
        }
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
        let caller = Caller {
            sub,
            is_admin,
            name: text("name"),
            email,
        };
        Ok((caller, exp))
    }

    /// The key for a token: by `kid` when the token has one (only from the pinned set),
    /// otherwise the set's keys without a kid; among those, the one pinned to the header's
    /// algorithm. The key decides the algorithm; the header can only fail to match it.
    fn choose_key(&self, header: &Header) -> Result<&PinnedKey, String> {
        let kid = header.kid.as_deref();
        let candidates: Vec<&PinnedKey> =
            self.keys.keys().iter().filter(|k| k.kid() == kid).collect();
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
            .find(|k| k.algorithm() == header.alg)
            .copied()
            .ok_or_else(|| {
                let pinned: Vec<String> = candidates
                    .iter()
                    .map(|k| format!("{:?}", k.algorithm()))
                    .collect();
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
pub(super) fn role_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
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
