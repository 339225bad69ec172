//! Production auth over HTTP: tokens signed by an issuer's RS256 / ES256 / EdDSA keys
//! (PEM and JWKS) are accepted; every forged, expired or misdirected token is a `401`
//! problem+json and stores nothing; roles come from the configured claim.

use std::sync::Arc;

use jobstream_api::auth::{KeySet, PinnedKey, Verifier, VerifyPolicy};
use jobstream_testkit::{Backend, workspace_root};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Options, TestApp};

pub(crate) const ISS: &str = "https://accounts.issuer.test";
pub(crate) const AUD: &str = "jobstream-client-id";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(workspace_root().join("testkit/fixtures/keys").join(name)).expect("key fixture")
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims of a token from the test issuer.
pub(crate) fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISS, "aud": AUD, "exp": now() + 600, "iat": now()})
}

/// Signs claims with a fixture private key.
pub(crate) fn sign(alg: Algorithm, private: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(private);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        other => panic!("no fixture for {other:?}"),
    }
    .expect("private key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// The issuer's JWKS (three kids) plus the same three keys as PEM files without a kid,
/// roles from the `roles` array claim, as `jobstream api` builds it from its flags.
pub(crate) fn issuer_verifier() -> Arc<Verifier> {
    let mut keys = KeySet::new();
    let dir = workspace_root().join("testkit/fixtures/keys");
    keys.add_jwks_file(&dir.join("jwks.json")).expect("jwks");
    for pem in ["rsa-public.pem", "ec-public.pem", "ed25519-public.pem"] {
        keys.add(PinnedKey::from_pem(&fixture(pem), None).expect("pem"))
            .expect("add");
    }
    let policy = VerifyPolicy {
        role_claim: "roles".into(),
        ..VerifyPolicy::new(ISS, AUD)
    };
    Arc::new(Verifier::with_keys(keys, policy).expect("verifier"))
}

pub(crate) async fn issuer_app(backend: Backend, options: Options) -> TestApp {
    TestApp::with(
        backend,
        Options {
            verifier: Some(issuer_verifier()),
            ..options
        },
    )
    .await
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
}

fn with(mut c: Value, key: &str, v: Value) -> Value {
    c[key] = v;
    c
}

fn without(mut c: Value, key: &str) -> Value {
    c.as_object_mut().expect("object").remove(key);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_expired_or_misdirected_token_is_a_401_and_stores_nothing() {
    let app = issuer_app(Backend::Sqlite, Options::api_only()).await;
    let rs = |c: &Value| sign(Algorithm::RS256, "rsa-private.pem", Some("test-rsa"), c);
    let good = rs(&claims("alice"));
    let (head, sig) = good.rsplit_once('.').expect("jwt");
    let hs256_with_public_key = jsonwebtoken::encode(
        &Header {
            kid: Some("test-rsa".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("alice"),
        &EncodingKey::from_secret(&fixture("rsa-public.pem")),
    )
    .expect("sign");
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims("alice"))
            ),
        ),
        (
            "HS256 signed with the RSA public key",
            hs256_with_public_key,
        ),
        (
            "expired",
            rs(&with(claims("alice"), "exp", json!(now() - 300))),
        ),
        (
            "nbf in the future",
            rs(&with(claims("alice"), "nbf", json!(now() + 600))),
        ),
        (
            "wrong aud",
            rs(&with(claims("alice"), "aud", json!("another-client"))),
        ),
        ("missing aud", rs(&without(claims("alice"), "aud"))),
        (
            "wrong iss",
            rs(&with(claims("alice"), "iss", json!("https://evil.test"))),
        ),
        ("missing iss", rs(&without(claims("alice"), "iss"))),
        ("missing sub", rs(&without(claims("alice"), "sub"))),
        (
            "exp as a string",
            rs(&with(
                claims("alice"),
                "exp",
                json!((now() + 600).to_string()),
            )),
        ),
        (
            "unknown kid",
            sign(
                Algorithm::RS256,
                "rsa-private.pem",
                Some("key-2019"),
                &claims("alice"),
            ),
        ),
        (
            "path-like kid",
            sign(
                Algorithm::RS256,
                "rsa-private.pem",
                Some("../../etc/passwd"),
                &claims("alice"),
            ),
        ),
        (
            "tampered claims",
            format!(
                "{}.{}.{sig}",
                head.split_once('.').expect("jwt").0,
                b64(&with(claims("alice"), "roles", json!(["admin"])))
            ),
        ),
        (
            "truncated signature",
            format!("{head}.{}", &sig[..sig.len() / 2]),
        ),
        ("tampered signature", {
            let mut bytes = sig.as_bytes().to_vec();
            let mid = bytes.len() / 2;
            bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
            format!("{head}.{}", String::from_utf8(bytes).expect("ascii"))
        }),
        (
            "another issuer's key under our kid",
            sign(
                Algorithm::RS256,
                "attacker-rsa-private.pem",
                Some("test-rsa"),
                &claims("alice"),
            ),
        ),
        (
            "another issuer's key without kid",
            sign(
                Algorithm::RS256,
                "attacker-rsa-private.pem",
                None,
                &claims("alice"),
            ),
        ),
        ("not a JWT", "hello".to_owned()),
    ];
    for (what, token) in &cases {
        for (method, path) in [
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/users/me"),
        ] {
            let req = match method {
                "GET" => app.http.get(format!("{}{path}", app.base)),
                _ => app
                    .http
                    .post(format!("{}{path}", app.base))
                    .json(&json!({"kind": "echo", "payload": {}})),
            };
            let res = req.bearer_auth(token).send().await.expect("request");
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}"
            );
            assert_eq!(
                res.headers()["content-type"],
                "application/problem+json",
                "{what}"
            );
            assert_eq!(res.headers()["www-authenticate"], "Bearer", "{what}");
            let p: Value = res.json().await.expect("problem");
            assert_eq!(p["status"], 401, "{what}");
            assert!(
                p["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("invalid bearer token")),
                "{what}: {p}"
            );
        }
    }
    let res = app
        .http
        .get(format!("{}/v1/jobs", app.base))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "no token");
    // Nothing was stored: no job, and no user registered by a rejected token.
    assert_eq!(app.stream_total().await, 0);
    // The good token works on the same app.
    let (status, _) = app.get(&good, "/v1/jobs").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_eddsa_tokens_from_pem_and_jwks_are_accepted() {
    let app = issuer_app(Backend::Sqlite, Options::default()).await;
    let mut ids = Vec::new();
    for (alg, private, kid) in [
        (Algorithm::RS256, "rsa-private.pem", "test-rsa"),
        (Algorithm::ES256, "ec-private.pem", "test-ec"),
        (Algorithm::EdDSA, "ed25519-private.pem", "test-ed25519"),
    ] {
        for kid in [Some(kid), None] {
            let token = sign(alg, private, kid, &claims("google-oauth2|1234.5678"));
            let job = app
                .submit_job(
                    &token,
                    &json!({"kind": "echo", "payload": {"alg": format!("{alg:?}"), "kid": kid}}),
                )
                .await;
            let id = job.id.to_string();
            let (status, got) = app.get(&token, &format!("/v1/jobs/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{alg:?} {kid:?}");
            assert_eq!(got["owner"], "google-oauth2|1234.5678");
            ids.push(id);
        }
    }
    // The same subject, whatever key signed: one owner, six jobs.
    let token = sign(
        Algorithm::EdDSA,
        "ed25519-private.pem",
        None,
        &claims("google-oauth2|1234.5678"),
    );
    for id in &ids {
        app.wait_for_row(id, "job succeeded", |r| r.status == "succeeded")
            .await;
    }
    let (status, page) = app.get(&token, "/v1/jobs?limit=50").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_the_configured_claim_gate_admin_routes_and_hide_other_users_jobs() {
    let app = issuer_app(Backend::Sqlite, Options::without_worker()).await;
    let es = |c: &Value| sign(Algorithm::ES256, "ec-private.pem", Some("test-ec"), c);
    let alice = es(&with(claims("alice"), "roles", json!(["user"])));
    let bob = es(&claims("bob"));
    let admin = es(&with(claims("root"), "roles", json!(["user", "admin"])));
    // A `role: admin` string is not the configured claim here: no admin rights.
    let not_admin = es(&with(claims("mallory"), "role", json!("admin")));

    for token in [&alice, &bob, &not_admin] {
        let (status, p) = app.get(token, "/v1/users").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{p}");
        assert_eq!(p["status"], 403);
    }
    let (status, _) = app.get(&admin, "/v1/users").await;
    assert_eq!(status, StatusCode::OK);

    let job = app
        .submit_job(&alice, &json!({"kind": "echo", "payload": 1}))
        .await;
    let path = format!("/v1/jobs/{}", job.id);
    let (status, p) = app.get(&bob, &path).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another user's job is hidden: {p}"
    );
    assert_eq!(app.get(&admin, &path).await.0, StatusCode::OK);
    assert_eq!(app.get(&alice, &path).await.0, StatusCode::OK);
}
