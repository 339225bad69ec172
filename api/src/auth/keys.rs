//! Verification keys: PEM and JWKS files read into a set of keys, each pinned to one algorithm.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

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

    /// The key material a signature is checked with.
    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
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

    /// A set of one key (nothing to clash with).
    pub(super) fn single(key: PinnedKey) -> Self {
        KeySet { keys: vec![key] }
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
