//! Owns: end-to-end tests of `Authenticator`.
//! Uses: keys generated here (ES256 with ring, RS256 with `openssl genpkey`), a JWKS served
//! by a local axum server on 127.0.0.1 port 0.
//! Must not: reach any network but loopback, or assert on timing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
    RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use super::*;

mod auth;

// ---- keys ----------------------------------------------------------------------------

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct TestKey {
    kid: String,
    signer: Signer,
}

impl TestKey {
    fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self {
            kid: kid.into(),
            signer: Signer::Ec(pair),
        }
    }

    /// `which` picks one of two RSA keys generated once per test run (2048-bit keygen is
    /// the slow part, and ring cannot generate RSA keys).
    fn rs256(kid: &str, which: usize) -> Self {
        static KEYS: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
        let keys = KEYS.get_or_init(|| [openssl_rsa_der(), openssl_rsa_der()]);
        // OpenSSL 3 writes PKCS#1 for `-outform DER`; accept PKCS#8 too in case that changes.
        let der = &keys[which];
        let pair = RsaKeyPair::from_der(der)
            .or_else(|_| RsaKeyPair::from_pkcs8(der))
            .unwrap();
        Self {
            kid: kid.into(),
            signer: Signer::Rsa(pair),
        }
    }

    fn alg(&self) -> &'static str {
        match self.signer {
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Ec(pair) => {
                let point = pair.public_key().as_ref();
                json!({
                    "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
                })
            }
            Signer::Rsa(pair) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({
                    "kty": "RSA", "use": "sig", "kid": self.kid,
                    "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e),
                })
            }
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ec(pair) => pair.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Rsa(pair) => {
                let mut sig = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .unwrap();
                sig
            }
        }
    }

    /// A compact JWS over `claims` with this key's alg and kid.
    fn token(&self, claims: &Value) -> String {
        self.token_with_header(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    fn token_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64json(header), b64json(claims));
        let sig = self.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

fn openssl_rsa_der() -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .args(["-outform", "DER"])
        .output()
        .expect("these tests need the `openssl` command to generate RSA keys");
    assert!(
        out.status.success(),
        "openssl genpkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn b64json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---- a local IdP -----------------------------------------------------------------------

#[derive(Clone)]
struct IdpState {
    base: String,
    /// The issuer the discovery document claims (normally `base`).
    discovery_issuer: Arc<Mutex<String>>,
    jwks: Arc<Mutex<Value>>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
}

struct Idp {
    state: IdpState,
}

impl Idp {
    async fn start(keys: &[&TestKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = IdpState {
            base: base.clone(),
            discovery_issuer: Arc::new(Mutex::new(base)),
            jwks: Arc::new(Mutex::new(jwks(keys))),
            discovery_hits: Arc::default(),
            jwks_hits: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(serve_jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { state }
    }

    fn issuer(&self) -> String {
        self.state.base.clone()
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.state.jwks.lock().unwrap() = jwks(keys);
    }

    fn jwks_fetches(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn discoveries(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    fn config(&self) -> IdentityConfig {
        IdentityConfig {
            oidc: vec![OidcIssuer {
                issuer: self.issuer(),
                audience: "api://airlock".into(),
                groups_claim: Some("groups".into()),
                group_map: [("sre".to_owned(), "sre".to_owned())].into(),
                ..OidcIssuer::default()
            }],
            jwks_min_refetch: Duration::ZERO,
            ..IdentityConfig::default()
        }
    }

    fn authenticator(&self) -> Authenticator {
        install_crypto_provider();
        Authenticator::new(self.config()).unwrap()
    }

    /// Claims that the default config accepts.
    fn claims(&self) -> Value {
        json!({
            "iss": self.issuer(), "aud": "api://airlock", "sub": "user-42",
            "email": "someone@example.com", "groups": ["sre", "dev"],
            "iat": now(), "exp": now() + 300,
        })
    }
}

fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

async fn discovery(State(s): State<IdpState>) -> Json<Value> {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = s.discovery_issuer.lock().unwrap().clone();
    Json(json!({ "issuer": issuer, "jwks_uri": format!("{}/jwks", s.base) }))
}

async fn serve_jwks(State(s): State<IdpState>) -> Json<Value> {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    Json(s.jwks.lock().unwrap().clone())
}

fn install_crypto_provider() {
    // Errors only if a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn problem(result: Result<Caller, AuthError>) -> TokenProblem {
    match result {
        Err(AuthError::InvalidToken(p)) => p,
        other => panic!("expected an invalid token, got {other:?}"),
    }
}

fn set(claims: &mut Value, key: &str, value: Value) {
    claims[key] = value;
}

// ---- JWT tests ---------------------------------------------------------------------

#[tokio::test]
async fn es256_token_is_accepted_as_issuer_hash_subject_with_groups() {
    let key = TestKey::es256("ec-1");
    let idp = Idp::start(&[&key]).await;
    let auth = idp.authenticator();
    let caller = auth
        .authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!(
        caller.principal.as_str(),
        format!("{}#user-42", idp.issuer())
    );
    // `sre` is mapped to the gateway's group; `dev` stays the issuer's own.
    assert_eq!(caller.groups, vec!["sre".to_owned(), format!("{}#dev", idp.issuer())]);
    assert_eq!(caller.via, AuthMethod::Oidc);
    assert_eq!(caller.holder, Holder::Unverified, "a bearer JWT may be an agent's");
    assert_eq!((idp.discoveries(), idp.jwks_fetches()), (1, 1));
    // A second token is verified from the cache.
    auth.authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn rs256_token_is_accepted() {
    let key = TestKey::rs256("rsa-1", 0);
    let idp = Idp::start(&[&key]).await;
    let caller = idp
        .authenticator()
        .authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!(
        caller.principal.as_str(),
        format!("{}#user-42", idp.issuer())
    );
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let mut claims = idp.claims();
    set(&mut claims, "exp", json!(now() - CLOCK_LEEWAY_SECS - 10));
    let got = idp
        .authenticator()
        .authenticate(Some(&bearer(&key.token(&claims))))
        .await;
    assert_eq!(problem(got), TokenProblem::Expired);
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let mut claims = idp.claims();
    set(&mut claims, "nbf", json!(now() + CLOCK_LEEWAY_SECS + 120));
    let got = idp
        .authenticator()
        .authenticate(Some(&bearer(&key.token(&claims))))
        .await;
    assert_eq!(problem(got), TokenProblem::NotYetValid);
}

#[tokio::test]
async fn token_for_another_audience_is_rejected() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let auth = idp.authenticator();
    for aud in [
        json!("api://other"),
        json!(["api://other", "api://airlock2"]),
    ] {
        let mut claims = idp.claims();
        set(&mut claims, "aud", aud);
        let got = auth.authenticate(Some(&bearer(&key.token(&claims)))).await;
        assert_eq!(problem(got), TokenProblem::WrongAudience);
    }
}

#[tokio::test]
async fn token_from_an_unconfigured_issuer_is_rejected_without_fetching() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let mut claims = idp.claims();
    set(&mut claims, "iss", json!(format!("{}/evil", idp.issuer())));
    let got = idp
        .authenticator()
        .authenticate(Some(&bearer(&key.token(&claims))))
        .await;
    assert_eq!(problem(got), TokenProblem::UnknownIssuer);
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn alg_none_is_rejected_without_fetching_keys() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    let auth = idp.authenticator();
    let unsigned = format!(
        "{}.{}.",
        b64json(&json!({"alg": "none", "kid": "k"})),
        b64json(&idp.claims())
    );
    assert_eq!(
        problem(auth.authenticate(Some(&bearer(&unsigned))).await),
        TokenProblem::UnsupportedAlgorithm
    );
    let hs = key.token_with_header(&json!({"alg": "HS256", "kid": "k"}), &idp.claims());
    assert_eq!(
        problem(auth.authenticate(Some(&bearer(&hs))).await),
        TokenProblem::UnsupportedAlgorithm
    );
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn unknown_kid_is_rejected_after_one_refetch() {
    let key = TestKey::es256("known");
    let idp = Idp::start(&[&key]).await;
    let auth = idp.authenticator();
    auth.authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!(idp.jwks_fetches(), 1);
    let stranger = TestKey::es256("unpublished");
    let got = auth
        .authenticate(Some(&bearer(&stranger.token(&idp.claims()))))
        .await;
    assert_eq!(problem(got), TokenProblem::UnknownKey);
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "an unknown kid triggers exactly one refetch"
    );
}

#[tokio::test]
async fn unknown_kid_refetch_is_rate_limited() {
    let key = TestKey::es256("known");
    let idp = Idp::start(&[&key]).await;
    install_crypto_provider();
    let config = IdentityConfig {
        jwks_min_refetch: Duration::from_secs(3600),
        ..idp.config()
    };
    let auth = Authenticator::new(config).unwrap();
    auth.authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    let stranger = TestKey::es256("unpublished");
    for _ in 0..3 {
        let got = auth
            .authenticate(Some(&bearer(&stranger.token(&idp.claims()))))
            .await;
        assert_eq!(problem(got), TokenProblem::UnknownKey);
    }
    assert_eq!(idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn rotated_in_key_is_found_by_refetching_the_jwks() {
    let old = TestKey::es256("2026-01");
    let idp = Idp::start(&[&old]).await;
    let auth = idp.authenticator();
    auth.authenticate(Some(&bearer(&old.token(&idp.claims()))))
        .await
        .unwrap();
    let new = TestKey::rs256("2026-02", 0);
    idp.publish(&[&old, &new]);
    let caller = auth
        .authenticate(Some(&bearer(&new.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!(caller.via, AuthMethod::Oidc);
    assert_eq!(idp.jwks_fetches(), 2);
}

#[tokio::test]
async fn tampered_signature_or_payload_is_rejected() {
    for key in [TestKey::es256("k"), TestKey::rs256("k", 0)] {
        let idp = Idp::start(&[&key]).await;
        let auth = idp.authenticator();
        let token = key.token(&idp.claims());
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        sig[10] ^= 0x01;
        let bad_sig = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(
            problem(auth.authenticate(Some(&bearer(&bad_sig))).await),
            TokenProblem::BadSignature
        );

        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = idp.claims();
        set(&mut claims, "sub", json!("admin"));
        let swapped = format!("{}.{}.{}", parts[0], b64json(&claims), parts[2]);
        assert_eq!(
            problem(auth.authenticate(Some(&bearer(&swapped))).await),
            TokenProblem::BadSignature
        );
    }
}

#[tokio::test]
async fn token_signed_by_another_key_under_a_published_kid_is_rejected() {
    let published_ec = TestKey::es256("ec");
    let published_rsa = TestKey::rs256("rsa", 0);
    let idp = Idp::start(&[&published_ec, &published_rsa]).await;
    let auth = idp.authenticator();
    for forger in [TestKey::es256("ec"), TestKey::rs256("rsa", 1)] {
        let got = auth
            .authenticate(Some(&bearer(&forger.token(&idp.claims()))))
            .await;
        assert_eq!(problem(got), TokenProblem::BadSignature, "{}", forger.alg());
    }
}

#[tokio::test]
async fn every_key_under_a_duplicated_kid_is_tried() {
    // Two keys published under one kid (a rotation in progress): a token signed by either
    // verifies, whichever comes first in the document; a third key still does not.
    let first = TestKey::es256("dup");
    let second = TestKey::es256("dup");
    let idp = Idp::start(&[&first, &second]).await;
    let auth = idp.authenticator();
    for key in [&first, &second] {
        auth.authenticate(Some(&bearer(&key.token(&idp.claims())))).await.unwrap();
    }
    let stranger = TestKey::es256("dup");
    assert_eq!(problem(auth.authenticate(Some(&bearer(&stranger.token(&idp.claims())))).await), TokenProblem::BadSignature);
}

#[tokio::test]
async fn a_second_issuers_group_is_not_the_firsts() {
    install_crypto_provider();
    let key_a = TestKey::es256("a");
    let key_b = TestKey::es256("b");
    let (a, b) = (Idp::start(&[&key_a]).await, Idp::start(&[&key_b]).await);
    let mut config = a.config();
    config.oidc.extend(b.config().oidc.into_iter().map(|mut o| {
        o.group_map.clear();
        o.people = [("user-42".to_owned(), "carol".to_owned())].into();
        o
    }));
    let auth = Authenticator::new(config).unwrap();
    let from_a = auth.authenticate(Some(&bearer(&key_a.token(&a.claims())))).await.unwrap();
    let from_b = auth.authenticate(Some(&bearer(&key_b.token(&b.claims())))).await.unwrap();
    assert!(from_a.in_group("sre"));
    assert!(!from_b.in_group("sre"), "{:?}", from_b.groups);
    assert!(from_b.in_group(&format!("{}#sre", b.issuer())));
    assert_eq!(from_b.person.as_ref().map(|p| p.as_str()), Some("carol"));
    assert_ne!(from_a.principal, from_b.principal);
}

#[tokio::test]
async fn header_alg_that_disagrees_with_the_jwk_type_is_rejected() {
    let ec = TestKey::es256("ec");
    let rsa = TestKey::rs256("rsa", 0);
    let idp = Idp::start(&[&ec, &rsa]).await;
    let auth = idp.authenticator();
    // RSA signature, but the header claims ES256 and names the RSA key, and vice versa.
    let es_on_rsa = rsa.token_with_header(&json!({"alg": "ES256", "kid": "rsa"}), &idp.claims());
    let rs_on_ec = ec.token_with_header(&json!({"alg": "RS256", "kid": "ec"}), &idp.claims());
    for token in [es_on_rsa, rs_on_ec] {
        let got = auth.authenticate(Some(&bearer(&token))).await;
        assert_eq!(problem(got), TokenProblem::KeyAlgorithmMismatch);
    }
}

#[tokio::test]
async fn explicit_jwks_uri_skips_discovery() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    install_crypto_provider();
    let mut config = idp.config();
    config.oidc[0].jwks_uri = Some(format!("{}/jwks", idp.issuer()));
    let auth = Authenticator::new(config).unwrap();
    auth.authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await
        .unwrap();
    assert_eq!((idp.discoveries(), idp.jwks_fetches()), (0, 1));
}

#[tokio::test]
async fn discovery_document_for_another_issuer_is_not_trusted() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    *idp.state.discovery_issuer.lock().unwrap() = "https://elsewhere.example".into();
    let got = idp
        .authenticator()
        .authenticate(Some(&bearer(&key.token(&idp.claims()))))
        .await;
    assert_eq!(got, Err(AuthError::KeysUnavailable));
    assert_eq!(idp.jwks_fetches(), 0);
}

#[tokio::test]
async fn unreachable_issuer_reports_keys_unavailable() {
    install_crypto_provider();
    // Bind and drop a listener to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let key = TestKey::es256("k");
    let config = IdentityConfig {
        oidc: vec![OidcIssuer {
            issuer: issuer.clone(),
            audience: "a".into(),
            ..OidcIssuer::default()
        }],
        ..IdentityConfig::default()
    };
    let claims = json!({"iss": issuer, "aud": "a", "sub": "s", "exp": now() + 60});
    let got = Authenticator::new(config)
        .unwrap()
        .authenticate(Some(&bearer(&key.token(&claims))))
        .await;
    let err = got.unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    assert!(err.token_presented());
}

#[tokio::test]
async fn old_keys_are_refreshed_and_kept_if_the_refresh_fails() {
    let key = TestKey::es256("k");
    let idp = Idp::start(&[&key]).await;
    install_crypto_provider();
    let config = IdentityConfig {
        jwks_max_age: Duration::ZERO,
        ..idp.config()
    };
    let auth = Authenticator::new(config).unwrap();
    let token = bearer(&key.token(&idp.claims()));
    auth.authenticate(Some(&token)).await.unwrap();
    auth.authenticate(Some(&token)).await.unwrap();
    assert_eq!(
        idp.jwks_fetches(),
        2,
        "keys older than max_age are refetched"
    );
    // The IdP now serves garbage: the refresh fails and the cached key still verifies.
    *idp.state.jwks.lock().unwrap() = json!({"error": "maintenance"});
    auth.authenticate(Some(&token)).await.unwrap();
    assert_eq!(idp.jwks_fetches(), 3);
}

#[tokio::test]
async fn an_id_token_needs_the_client_as_audience_and_the_sign_ins_nonce() {
    let key = TestKey::es256("ec-1");
    let idp = Idp::start(&[&key]).await;
    let auth = idp.authenticator();
    let issuer = idp.issuer();
    let mut claims = idp.claims();
    set(&mut claims, "aud", json!("airlock-web"));
    set(&mut claims, "nonce", json!("n-1"));
    let token = key.token(&claims);
    let caller = auth.verify_id_token(&issuer, &token, "airlock-web", "n-1").await.unwrap();
    assert_eq!(caller.principal.as_str(), format!("{issuer}#user-42"));
    assert_eq!(caller.groups, vec!["sre".to_owned(), format!("{issuer}#dev")]);
    // A sign-in at the identity provider is a person's.
    assert_eq!((caller.via, caller.holder), (AuthMethod::OidcSignIn, Holder::Human));
    assert_eq!(problem(auth.verify_id_token(&issuer, &token, "airlock-web", "n-2").await), TokenProblem::InvalidClaim("nonce"));
    assert_eq!(problem(auth.verify_id_token(&issuer, &token, "other-client", "n-1").await), TokenProblem::WrongAudience);
    // A sign-in at one issuer does not accept a token naming another.
    assert_eq!(
        problem(auth.verify_id_token("https://elsewhere.example", &token, "airlock-web", "n-1").await),
        TokenProblem::UnknownIssuer
    );
    set(&mut claims, "azp", json!("someone-else"));
    let token = key.token(&claims);
    assert_eq!(problem(auth.verify_id_token(&issuer, &token, "airlock-web", "n-1").await), TokenProblem::InvalidClaim("azp"));
}
