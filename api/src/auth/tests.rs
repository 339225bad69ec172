//! Token verification: every accepted key type and every rejection the issue lists.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use std::path::Path;

use secrecy::SecretString;

use super::*;
use crate::error::ApiError;

const ISS: &str = "https://issuer.test";
const AUD: &str = "jobstream-test";

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testkit/fixtures/keys")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": ISS, "aud": AUD, "exp": now() + 600, "iat": now()})
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().unwrap().remove(key);
    c
}

/// Signs `claims` with one of the fixture private keys.
fn sign(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(private);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no fixture for {other:?}"),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn pem_verifier(public: &str) -> Verifier {
    let mut keys = KeySet::new();
    keys.add(PinnedKey::from_pem(&fixture(public), None).unwrap())
        .unwrap();
    Verifier::with_keys(keys, VerifyPolicy::new(ISS, AUD)).unwrap()
}

fn jwks_verifier() -> Verifier {
    let mut keys = KeySet::new();
    keys.add_jwks(&fixture("jwks.json")).unwrap();
    Verifier::with_keys(keys, VerifyPolicy::new(ISS, AUD)).unwrap()
}

fn refused(v: &Verifier, token: &str) -> String {
    match v.verify(token) {
        Err(ApiError::Unauthorized(why)) => why,
        other => panic!("token accepted or wrong error: {other:?}"),
    }
}

#[test]
fn pem_keys_of_each_type_verify_their_tokens_with_their_pinned_algorithm() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
        (
            Algorithm::EdDSA,
            "ed25519-private.pem",
            "ed25519-public.pem",
        ),
    ] {
        let v = pem_verifier(public);
        assert_eq!(v.keys().keys()[0].algorithm(), alg);
        let token = sign(alg, private, None, &with(claims(), "name", json!("Alice")));
        let caller = v.verify(&token).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(caller.sub, "alice");
        assert_eq!(caller.name.as_deref(), Some("Alice"));
        assert!(!caller.is_admin);
    }
}

#[test]
fn jwks_keys_are_chosen_by_kid() {
    let v = jwks_verifier();
    assert_eq!(v.keys().len(), 3);
    for (alg, private, kid) in [
        (Algorithm::RS256, "rsa-private.pem", "test-rsa"),
        (Algorithm::ES256, "ec-private.pem", "test-ec"),
        (Algorithm::EdDSA, "ed25519-private.pem", "test-ed25519"),
    ] {
        let token = sign(alg, private, Some(kid), &claims());
        assert_eq!(v.verify(&token).unwrap().sub, "alice", "{kid}");
    }
    // The right key under the wrong kid: the kid's key (and algorithm) decides.
    let token = sign(
        Algorithm::ES256,
        "ec-private.pem",
        Some("test-rsa"),
        &claims(),
    );
    assert!(refused(&v, &token).contains("not allowed"));
    // Several keys: a token without a kid matches none.
    let token = sign(Algorithm::RS256, "rsa-private.pem", None, &claims());
    assert!(refused(&v, &token).contains("no kid"));
}

#[test]
fn alg_none_is_refused() {
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims())
    );
    refused(&pem_verifier("rsa-public.pem"), &unsigned);
    refused(&jwks_verifier(), &unsigned);
    let with_kid = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "test-rsa"})),
        b64(&claims())
    );
    refused(&jwks_verifier(), &with_kid);
}

#[test]
fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let public_pem = fixture("rsa-public.pem");
    for kid in [None, Some("test-rsa")] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let token =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public_pem))
                .unwrap();
        let why = if kid.is_some() {
            refused(&jwks_verifier(), &token)
        } else {
            refused(&pem_verifier("rsa-public.pem"), &token)
        };
        assert!(why.contains("HS256") && why.contains("RS256"), "{why}");
    }
}

#[test]
fn time_claims_are_enforced_with_leeway() {
    let v = pem_verifier("rsa-public.pem");
    let s = |c: &Value| sign(Algorithm::RS256, "rsa-private.pem", None, c);
    assert!(refused(&v, &s(&with(claims(), "exp", json!(now() - 120)))).contains("Expired"));
    // Within the 30 s leeway: clock skew, accepted.
    v.verify(&s(&with(claims(), "exp", json!(now() - 5))))
        .unwrap();
    assert!(refused(&v, &s(&with(claims(), "nbf", json!(now() + 300)))).contains("Immature"));
    v.verify(&s(&with(claims(), "nbf", json!(now() + 5))))
        .unwrap();
    // `exp` must be a number: a string is as good as missing.
    refused(
        &v,
        &s(&with(claims(), "exp", json!((now() + 600).to_string()))),
    );
    refused(&v, &s(&without(claims(), "exp")));
    // A stricter leeway is honoured.
    let mut keys = KeySet::new();
    keys.add(PinnedKey::from_pem(&fixture("rsa-public.pem"), None).unwrap())
        .unwrap();
    let strict = Verifier::with_keys(
        keys,
        VerifyPolicy {
            leeway_secs: 0,
            ..VerifyPolicy::new(ISS, AUD)
        },
    )
    .unwrap();
    refused(&strict, &s(&with(claims(), "exp", json!(now() - 5))));
}

#[test]
fn a_remembered_token_still_expires_and_other_tokens_are_still_checked() {
    let v = pem_verifier("rsa-public.pem");
    let s = |c: &Value| sign(Algorithm::RS256, "rsa-private.pem", None, c);
    let t = now();
    let alice = s(&with(claims(), "exp", json!(t + 5)));
    assert_eq!(v.verify_at(&alice, t).unwrap().sub, "alice");
    // Remembered, and still valid within the leeway after `exp`.
    assert_eq!(v.verify_at(&alice, t + 20).unwrap().sub, "alice");
    // Past `exp` plus the 30 s leeway the remembered token is refused like any other.
    match v.verify_at(&alice, t + 36) {
        Err(ApiError::Unauthorized(why)) => assert!(why.contains("Expired"), "{why}"),
        other => panic!("an expired remembered token was accepted: {other:?}"),
    }
    // Another token is checked on its own: its caller, or its refusal.
    let bob = s(&with(claims(), "sub", json!("bob")));
    assert_eq!(v.verify_at(&bob, t).unwrap().sub, "bob");
    // Bob's claims under Alice's (remembered) token's signature.
    let (bob_signed, _) = bob.rsplit_once('.').unwrap();
    let (_, alice_signature) = alice.rsplit_once('.').unwrap();
    let forged = format!("{bob_signed}.{alice_signature}");
    match v.verify_at(&forged, t) {
        Err(ApiError::Unauthorized(_)) => {}
        other => panic!("a forged token was accepted: {other:?}"),
    }
}

#[test]
fn issuer_audience_and_subject_are_required_and_checked() {
    let v = pem_verifier("rsa-public.pem");
    let s = |c: &Value| sign(Algorithm::RS256, "rsa-private.pem", None, c);
    assert!(refused(&v, &s(&with(claims(), "aud", json!("someone-else")))).contains("Audience"));
    refused(&v, &s(&without(claims(), "aud")));
    assert!(refused(&v, &s(&with(claims(), "iss", json!("https://evil.test")))).contains("Issuer"));
    refused(&v, &s(&without(claims(), "iss")));
    refused(&v, &s(&without(claims(), "sub")));
    refused(&v, &s(&with(claims(), "sub", json!(""))));
    refused(&v, &s(&with(claims(), "sub", json!(42))));
    refused(
        &v,
        &s(&with(claims(), "sub", json!("x".repeat(MAX_SUB_LEN + 1)))),
    );
    // An audience list containing ours is fine (Google and others send lists).
    v.verify(&s(&with(claims(), "aud", json!(["other", AUD]))))
        .unwrap();
}

#[test]
fn unknown_and_path_like_kids_are_refused() {
    let v = jwks_verifier();
    let token = sign(
        Algorithm::RS256,
        "rsa-private.pem",
        Some("rotated-away"),
        &claims(),
    );
    assert!(refused(&v, &token).contains("unknown key id"));
    let token = sign(
        Algorithm::RS256,
        "rsa-private.pem",
        Some("../../etc/passwd"),
        &claims(),
    );
    assert!(refused(&v, &token).contains("unknown key id"));
    // A PEM key without a kid does not answer to one either.
    let token = sign(
        Algorithm::RS256,
        "rsa-private.pem",
        Some("../../etc/passwd"),
        &claims(),
    );
    refused(&pem_verifier("rsa-public.pem"), &token);
}

#[test]
fn tampered_tokens_and_other_issuers_keys_are_refused() {
    let v = jwks_verifier();
    let token = sign(
        Algorithm::RS256,
        "rsa-private.pem",
        Some("test-rsa"),
        &claims(),
    );
    let (head, sig) = token.rsplit_once('.').unwrap();
    // Another signature on the same header and claims.
    let other = sign(
        Algorithm::RS256,
        "attacker-rsa-private.pem",
        Some("test-rsa"),
        &claims(),
    );
    let forged = format!("{head}.{}", other.rsplit_once('.').unwrap().1);
    refused(&v, &forged);
    // Claims changed after signing (alice → admin).
    let (h, _) = head.split_once('.').unwrap();
    let elevated = format!("{h}.{}.{sig}", b64(&with(claims(), "role", json!("admin"))));
    refused(&v, &elevated);
    // Signed by a key that is not in the set, under a kid that is.
    let token = sign(
        Algorithm::RS256,
        "attacker-rsa-private.pem",
        Some("test-rsa"),
        &claims(),
    );
    assert!(refused(&v, &token).contains("InvalidSignature"));
    let token = sign(
        Algorithm::RS256,
        "attacker-rsa-private.pem",
        None,
        &claims(),
    );
    refused(&pem_verifier("rsa-public.pem"), &token);
}

#[test]
fn roles_come_from_the_configured_claim_string_or_array() {
    let s = |c: &Value| sign(Algorithm::EdDSA, "ed25519-private.pem", None, c);
    let v = pem_verifier("ed25519-public.pem");
    assert!(
        v.verify(&s(&with(claims(), "role", json!("admin"))))
            .unwrap()
            .is_admin
    );
    assert!(
        !v.verify(&s(&with(claims(), "role", json!("user"))))
            .unwrap()
            .is_admin
    );
    assert!(
        !v.verify(&s(&with(claims(), "roles", json!(["admin"]))))
            .unwrap()
            .is_admin
    );
    let mut keys = KeySet::new();
    keys.add(PinnedKey::from_pem(&fixture("ed25519-public.pem"), None).unwrap())
        .unwrap();
    let v = Verifier::with_keys(
        keys,
        VerifyPolicy {
            role_claim: "roles".into(),
            ..VerifyPolicy::new(ISS, AUD)
        },
    )
    .unwrap();
    assert!(
        v.verify(&s(&with(claims(), "roles", json!(["user", "admin"]))))
            .unwrap()
            .is_admin
    );
    assert!(
        !v.verify(&s(&with(claims(), "roles", json!(["user"]))))
            .unwrap()
            .is_admin
    );
    assert!(
        !v.verify(&s(&with(claims(), "role", json!("admin"))))
            .unwrap()
            .is_admin
    );
}

#[test]
fn nested_and_namespaced_role_claims_are_found() {
    let s = |c: &Value| sign(Algorithm::EdDSA, "ed25519-private.pem", None, c);
    let verifier = |claim: &str| {
        let mut keys = KeySet::new();
        keys.add(PinnedKey::from_pem(&fixture("ed25519-public.pem"), None).unwrap())
            .unwrap();
        Verifier::with_keys(
            keys,
            VerifyPolicy {
                role_claim: claim.into(),
                ..VerifyPolicy::new(ISS, AUD)
            },
        )
        .unwrap()
    };
    let keycloak = verifier("realm_access.roles");
    let c = with(
        claims(),
        "realm_access",
        json!({"roles": ["offline_access", "admin"]}),
    );
    assert!(keycloak.verify(&s(&c)).unwrap().is_admin);
    let c = with(claims(), "realm_access", json!({"roles": ["user"]}));
    assert!(!keycloak.verify(&s(&c)).unwrap().is_admin);
    assert!(!keycloak.verify(&s(&claims())).unwrap().is_admin);
    let auth0 = verifier("https://jobstream.example/roles");
    let c = with(
        claims(),
        "https://jobstream.example/roles",
        json!(["admin"]),
    );
    assert!(auth0.verify(&s(&c)).unwrap().is_admin);
}

#[test]
fn profile_claims_are_read_and_unverified_emails_dropped() {
    let v = pem_verifier("ec-public.pem");
    let s = |c: &Value| sign(Algorithm::ES256, "ec-private.pem", None, c);
    let c = with(
        with(claims(), "email", json!("a@x.org")),
        "name",
        json!("A"),
    );
    let caller = v.verify(&s(&c)).unwrap();
    assert_eq!(caller.email.as_deref(), Some("a@x.org"));
    let caller = v
        .verify(&s(&with(c, "email_verified", json!(false))))
        .unwrap();
    assert_eq!(caller.email, None);
}

#[test]
fn bad_key_material_is_refused_at_load() {
    assert!(PinnedKey::from_pem(&fixture("rsa-private.pem"), None).is_err());
    assert!(PinnedKey::from_pem(b"not a key", None).is_err());
    let mut keys = KeySet::new();
    assert!(keys.add_jwks(b"{\"nope\": 1}").is_err());
    assert!(
        keys.add_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"}]}"#)
            .is_err()
    );
    assert!(keys.add_jwks(br#"{"keys":[]}"#).is_err());
    let mut keys = KeySet::new();
    keys.add_jwks(&fixture("jwks.json")).unwrap();
    assert!(matches!(
        keys.add_jwks(&fixture("jwks.json")),
        Err(KeyError::DuplicateKid(_))
    ));
    assert!(matches!(
        KeySet::new().add_pem_file(Path::new("/nonexistent/key.pem"), None),
        Err(KeyError::Read { .. })
    ));
    assert!(matches!(
        Verifier::with_keys(KeySet::new(), VerifyPolicy::new(ISS, AUD)),
        Err(KeyError::NoKeys)
    ));
}

#[test]
fn dev_tokens_verify_and_carry_the_role() {
    let c = AuthConfig {
        hs256_secret: SecretString::from("s3cret".to_owned()),
        issuer: "iss".into(),
        audience: "aud".into(),
    };
    let v = Verifier::new(&c);
    let t = mint_hs256(&c, "alice", false, Duration::from_secs(60)).unwrap();
    let caller = v.verify(&t).unwrap();
    assert_eq!((caller.sub.as_str(), caller.is_admin), ("alice", false));
    let a = mint_hs256(&c, "root", true, Duration::from_secs(60)).unwrap();
    assert!(v.verify(&a).unwrap().is_admin);
    let other = AuthConfig {
        hs256_secret: SecretString::from("other".to_owned()),
        ..c
    };
    refused(
        &v,
        &mint_hs256(&other, "alice", false, Duration::from_secs(60)).unwrap(),
    );
    // An RS256 token against the HS256 dev verifier: pinned, refused.
    let token = sign(
        Algorithm::RS256,
        "rsa-private.pem",
        None,
        &json!({"sub": "a", "iss": "iss", "aud": "aud", "exp": now() + 60}),
    );
    refused(&v, &token);
}

#[test]
fn critical_header_extensions_are_refused() {
    // RFC 7515 §4.1.11: a verifier must refuse a token naming critical extensions it does
    // not understand; jobstream understands none. The signature is valid: only `crit` is wrong.
    for crit in [json!(["exp"]), json!(["http://example.com/ext"]), json!([])] {
        let mut header = Header::new(Algorithm::RS256);
        header.crit = serde_json::from_value(crit.clone()).unwrap();
        let key = EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap();
        let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
        let why = refused(&pem_verifier("rsa-public.pem"), &token);
        assert!(why.contains("crit"), "{crit}: {why}");
    }
}
