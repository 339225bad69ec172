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
//!
//! Layout: [`keys`] reads and pins the keys, [`verify`] checks a token against them and
//! the policy, [`caller`] is who a verified token stands for and the request extractor,
//! [`dev`] mints the HS256 development tokens.

pub mod caller;
pub mod dev;
pub mod keys;
pub mod verify;

pub use caller::Caller;
pub use dev::{AuthConfig, Claims, mint_hs256};
pub use jsonwebtoken::Algorithm;
pub use keys::{KeyError, KeySet, PinnedKey};
pub use verify::{DEFAULT_LEEWAY_SECS, DEFAULT_ROLE_CLAIM, MAX_SUB_LEN, Verifier, VerifyPolicy};

#[cfg(test)]
mod tests;
