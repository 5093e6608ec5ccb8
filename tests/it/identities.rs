//! Identities through the real binary: out-of-band confirmation only by a person with
//! another credential, names that collide or look alike refused by `airlock check`, groups
//! that belong to their issuer, one person counted once, approver-page sessions that end,
//! throttled failed authentication, `airlock tokens new`, and JWKS with duplicate kids.
//! Two local OIDC issuers (ES256 keys made here with ring) stand in for real ones.

use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::util::{ElicitAnswer, HttpGateway, Setup, TestClient, airlock, call, text_of};

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token entry for the config.
fn token_entry(name: &str, token: &str, extra: &str) -> String {
    format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}\n", sha256_hex(token))
}

// ---- a local OIDC issuer ------------------------------------------------------------

/// An ES256 signing key with its `kid`.
struct Key {
    kid: String,
    pair: EcdsaKeyPair,
}

impl Key {
    fn new(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("load");
        Key { kid: kid.to_owned(), pair }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(signature.as_ref()))
    }
}

/// Serves discovery and a JWKS of `keys` on a loopback port; returns the issuer URL.
async fn issuer(keys: &[&Key]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let discovery = json!({"issuer": url, "jwks_uri": format!("{url}/jwks")});
    let jwks = json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()});
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", axum::routing::get(move || async move { axum::Json(discovery) }))
        .route("/jwks", axum::routing::get(move || async move { axum::Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An access token of `issuer` for `sub` in `groups`, valid until `exp`.
fn jwt(key: &Key, issuer: &str, sub: &str, groups: &[&str], exp: u64) -> String {
    key.sign(&json!({"iss": issuer, "aud": "api://airlock", "sub": sub, "groups": groups, "iat": now(), "exp": exp}))
}

// ---- clients ------------------------------------------------------------------------

async fn mcp_as(gateway: &HttpGateway, token: &str, answer: ElicitAnswer) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token.to_owned());
    TestClient::answering(answer).serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

/// One API request with `token`; the status and the JSON body.
async fn api(gateway: &HttpGateway, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", gateway.url);
    let mut request = if method == "GET" { client.get(url) } else { client.post(url) };
    request = request.bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("reach the gateway");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn decide(gateway: &HttpGateway, id: &str, token: &str) -> (u16, Value) {
    api(gateway, "POST", &format!("/api/v1/approvals/{id}/decision"), token, Some(json!({"decision": "approve"}))).await
}

/// Waits (a hang guard, not a timing assertion) until `token` sees a pending hold of `tool`.
async fn pending(gateway: &HttpGateway, tool: &str, token: &str) -> Value {
    for _ in 0..600 {
        let (status, body) = api(gateway, "GET", "/api/v1/approvals?state=pending", token, None).await;
        assert_eq!(status, 200, "{body}");
        if let Some(found) = body["approvals"].as_array().and_then(|all| all.iter().find(|a| a["tool"] == tool)) {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no pending approval for {tool}");
}

fn in_background(client: &RunningService<RoleClient, TestClient>, tool: &str, args: Value) -> tokio::task::JoinHandle<CallToolResult> {
    let peer = client.peer().clone();
    let params = call(tool, args);
    tokio::spawn(async move { peer.call_tool(params).await.expect("the held call answers") })
}

async fn cli(token: &str, args: &[&str]) -> Output {
    tokio::process::Command::new(airlock())
        .args(args)
        .env("AIRLOCK_TOKEN", token)
        .env_remove("AIRLOCK_LOG")
        .output()
        .await
        .expect("run airlock")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---- out-of-band confirmation -------------------------------------------------------

const AGENT: &str = "agent-token-0123456789";
const PHONE: &str = "carol-phone-0123456789";
const MALLORY: &str = "mallory-token-0123456789";

/// The agent calls as `agent` (carol's agent); carol's own `human` token is `carol-phone`;
/// mallory is a person too, but not carol.
fn confirm_setup() -> Setup {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n");
    config.push_str(&token_entry("agent", AGENT, "person = \"carol\""));
    config.push_str(&token_entry("carol-phone", PHONE, "human = true\nperson = \"carol\""));
    config.push_str(&token_entry("mallory", MALLORY, "human = true"));
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy("confirm", "[[rule]]\nid = \"grants-confirm\"\ntools = [\"demo__grant_role\"]\neffect = \"confirm\"\n");
    setup
}

#[tokio::test]
async fn the_agents_own_token_cannot_confirm_its_hold_but_its_human_can() {
    let setup = confirm_setup();
    let gateway = setup.http().await;
    let agent = mcp_as(&gateway, AGENT, ElicitAnswer::Unsupported).await;
    let args = json!({"user": "kim", "role": "admin"});
    let told = text_of(&agent.call_tool(call("demo__grant_role", args.clone())).await.expect("call"));
    assert!(!told.contains("airlock approvals approve"), "the agent is not told to confirm itself: {told}");
    assert!(told.contains("human = true") && told.contains("ask your human"), "{told}");
    let id = pending(&gateway, "demo__grant_role", AGENT).await["id"].as_str().expect("id").to_owned();
    let url = gateway.url.as_str();
    // What an agent with a shell would do: the CLI with its own token. Refused, with who can.
    let out = cli(AGENT, &["approvals", "approve", &id, "--url", url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("human = true"), "{}", text(&out.stderr));
    // The API directly: the same.
    let (status, body) = decide(&gateway, &id, AGENT).await;
    assert_eq!(status, 403, "{body}");
    // A person who is not the caller: refused too (the hold is not theirs to see, so it
    // reads as not found, as it does when they read it).
    let out = cli(MALLORY, &["approvals", "approve", &id, "--url", url]).await;
    assert!(!out.status.success() && text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    // carol herself, with her own human credential.
    let out = cli(PHONE, &["approvals", "approve", &id, "--url", url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ran = agent.call_tool(call("demo__grant_role", args)).await.expect("call");
    assert_ne!(ran.is_error, Some(true), "{}", text_of(&ran));
    let roles = std::fs::read_to_string(setup.sandbox("demo").join("roles.json")).unwrap_or_default();
    assert!(roles.contains("kim"), "{roles}");
}

// ---- names --------------------------------------------------------------------------

#[test]
fn colliding_and_look_alike_names_are_refused_by_check_with_file_line() {
    let lines = [
        "[identity]",
        "stdio_principal = \"ops\"",
        "[[identity.tokens]]",
        "name = \"http://127.0.0.1:9#carol\"",
        &format!("sha256 = \"{}\"", sha256_hex("a")),
        "[[identity.tokens]]",
        "name = \"alice\"",
        &format!("sha256 = \"{}\"", sha256_hex("b")),
        "person = \"carol\"",
        "[[identity.tokens]]",
        "name = \"Alice\"",
        &format!("sha256 = \"{}\"", sha256_hex("c")),
        "[[identity.tokens]]",
        "name = \"\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}\"",
        &format!("sha256 = \"{}\"", sha256_hex("d")),
        "[[identity.tokens]]",
        "name = \"ops\"",
        &format!("sha256 = \"{}\"", sha256_hex("e")),
        "person = \"Carol\"",
    ];
    let setup = Setup::new(&lines.join("\n"));
    let out = std::process::Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("check");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let report = text(&out.stdout);
    let file = setup.config().display().to_string();
    for (line, words) in [
        (4, "reserved for OIDC principals"),
        (11, "\"Alice\" looks like \"alice\" (line 7)"),
        (14, "looks like \"alice\" (line 7)"),
        (17, "is also the identity.stdio_principal (line 2)"),
        (19, "\"Carol\" looks like \"carol\" (line 9)"),
    ] {
        let prefix = format!("{file}:{line}: ");
        assert!(report.lines().any(|l| l.starts_with(&prefix) && l.contains(words)), "missing {prefix}{words} in:\n{report}");
    }
}

// ---- issuers, groups, people --------------------------------------------------------

const BOB: &str = "bob-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const ALICE_LAPTOP: &str = "alice-laptop-0123456789";

/// Issuer A maps its `sre` onto the gateway's and links its user `a-alice` to the person
/// `alice`; issuer B maps nothing. Migrations need two from `group:sre`.
fn quorum_setup(a: &str, b: &str) -> Setup {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n[approvals]\ntimeout = \"10m\"\n");
    config.push_str(&token_entry("agent", AGENT, "groups = [\"dev\"]"));
    config.push_str(&token_entry("bob", BOB, "groups = [\"sre\"]"));
    config.push_str(&token_entry("alice", ALICE, "groups = [\"sre\"]\nperson = \"alice\""));
    config.push_str(&token_entry("alice-laptop", ALICE_LAPTOP, "groups = [\"sre\"]\nperson = \"alice\""));
    config.push_str(&format!(
        "\n[[identity.oidc]]\nissuer = \"{a}\"\naudience = \"api://airlock\"\ngroup_map = {{ sre = \"sre\" }}\n\
         people = {{ \"a-alice\" = \"alice\" }}\n\n[[identity.oidc]]\nissuer = \"{b}\"\naudience = \"api://airlock\"\n"
    ));
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "two",
        "[[rule]]\nid = \"migrations-need-two-sres\"\ntools = [\"demo__run_migration\"]\neffect = \"approve\"\n\
         approvers = [\"group:sre\"]\nquorum = 2\nreason = \"two SREs\"\n",
    );
    setup
}

#[tokio::test]
async fn a_second_issuers_group_does_not_satisfy_the_firsts_and_duplicate_kids_all_verify() {
    // Issuer A publishes two keys under one kid; its tokens here are signed by the first.
    let (first, second, b_key) = (Key::new("shared"), Key::new("shared"), Key::new("b"));
    let a = issuer(&[&first, &second]).await;
    let b = issuer(&[&b_key]).await;
    let setup = quorum_setup(&a, &b);
    let gateway = setup.http().await;
    let agent = mcp_as(&gateway, AGENT, ElicitAnswer::Unsupported).await;
    let held = in_background(&agent, "demo__run_migration", json!({"steps": 1}));
    let id = pending(&gateway, "demo__run_migration", BOB).await["id"].as_str().expect("id").to_owned();
    // B's `sre` is B's own group: B's user may neither see nor decide the hold.
    let eve = jwt(&b_key, &b, "eve", &["sre"], now() + 300);
    let (status, body) = api(&gateway, "GET", &format!("/api/v1/approvals/{id}"), &eve, None).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = decide(&gateway, &id, &eve).await;
    assert!(status == 403 || status == 404, "{status} {body}");
    // A's `sre` maps onto the gateway's, with a token signed by the first of two keys.
    let dana = jwt(&first, &a, "a-dana", &["sre"], now() + 300);
    let (status, body) = decide(&gateway, &id, &dana).await;
    assert_eq!((status, &body["counted"]), (200, &json!(true)), "{body}");
    let late = jwt(&second, &a, "a-fred", &["sre"], now() + 300);
    let (status, body) = decide(&gateway, &id, &late).await;
    assert_eq!((status, body["approval"]["state"].as_str()), (200, Some("approved")), "{body}");
    assert_ne!(held.await.expect("join").is_error, Some(true));
    let votes: Vec<&str> = body["approval"]["votes"].as_array().expect("votes").iter().filter_map(|v| v["approver"].as_str()).collect();
    assert_eq!(votes, [format!("{a}#a-dana"), format!("{a}#a-fred")]);
}

#[tokio::test]
async fn two_identities_of_one_person_count_once_toward_a_quorum_of_two() {
    let (a_key, b_key) = (Key::new("a"), Key::new("b"));
    let a = issuer(&[&a_key]).await;
    let b = issuer(&[&b_key]).await;
    let setup = quorum_setup(&a, &b);
    let gateway = setup.http().await;
    let agent = mcp_as(&gateway, AGENT, ElicitAnswer::Unsupported).await;
    let held = in_background(&agent, "demo__run_migration", json!({"steps": 2}));
    let id = pending(&gateway, "demo__run_migration", BOB).await["id"].as_str().expect("id").to_owned();
    let (status, body) = decide(&gateway, &id, ALICE).await;
    assert_eq!((status, &body["counted"]), (200, &json!(true)), "{body}");
    // alice's second static token and her single sign-on login are still alice.
    let sso = jwt(&a_key, &a, "a-alice", &["sre"], now() + 300);
    for other in [ALICE_LAPTOP, sso.as_str()] {
        let (status, body) = decide(&gateway, &id, other).await;
        assert_eq!((status, &body["counted"], body["approval"]["state"].as_str()), (200, &json!(false), Some("pending")), "{body}");
    }
    let (status, body) = decide(&gateway, &id, BOB).await;
    assert_eq!((status, body["approval"]["state"].as_str()), (200, Some("approved")), "{body}");
    assert_ne!(held.await.expect("join").is_error, Some(true));
}

// ---- approver-page sessions ---------------------------------------------------------

fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Signs in on the page with `token`; the `Cookie` header value.
async fn sign_in(gateway: &HttpGateway, token: &str) -> String {
    let response = browser()
        .post(format!("{}/approvals/sign-in", gateway.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=%2Fapprovals"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), 303, "signed in");
    let set_cookie = response.headers()["set-cookie"].to_str().expect("cookie").to_owned();
    set_cookie.split(';').next().expect("name=value").to_owned()
}

async fn page_status(gateway: &HttpGateway, cookie: &str) -> u16 {
    let response = browser().get(format!("{}/approvals", gateway.url)).header("cookie", cookie).send().await.expect("GET");
    response.status().as_u16()
}

#[tokio::test]
async fn a_page_session_ends_at_sign_out_and_when_its_jwt_expires() {
    let key = Key::new("k");
    let a = issuer(&[&key]).await;
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n");
    config.push_str(&token_entry("bob", BOB, "groups = [\"sre\"]"));
    config.push_str(&format!("\n[[identity.oidc]]\nissuer = \"{a}\"\naudience = \"api://airlock\"\n"));
    let setup = Setup::new(&config);
    let gateway = setup.http().await;
    let cookie = sign_in(&gateway, BOB).await;
    assert_eq!(page_status(&gateway, &cookie).await, 200);
    let out = browser()
        .post(format!("{}/approvals/sign-out", gateway.url))
        .header("cookie", &cookie)
        .header("origin", gateway.url.clone())
        .send()
        .await
        .expect("sign out");
    assert_eq!(out.status(), 303);
    assert_eq!(page_status(&gateway, &cookie).await, 401, "the old cookie no longer signs anyone in");
    // A JWT that expires in a few seconds: the session made with it ends with it.
    let exp = now() + 3;
    let cookie = sign_in(&gateway, &jwt(&key, &a, "dana", &[], exp)).await;
    assert_eq!(page_status(&gateway, &cookie).await, 200);
    while now() <= exp {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(page_status(&gateway, &cookie).await, 401, "the session outlived its JWT");
}

#[tokio::test]
async fn an_idle_page_session_ends() {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n[approvals.web]\nidle_timeout = \"2s\"\n");
    config.push_str(&token_entry("bob", BOB, "groups = [\"sre\"]"));
    let setup = Setup::new(&config);
    let gateway = setup.http().await;
    let cookie = sign_in(&gateway, BOB).await;
    assert_eq!(page_status(&gateway, &cookie).await, 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(page_status(&gateway, &cookie).await, 401, "idle past the timeout");
}

// ---- failed authentication ----------------------------------------------------------

#[tokio::test]
async fn many_bad_tokens_get_429_and_a_log_line_without_the_token() {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n[identity]\nfailed_auth_limit = 5\n");
    config.push_str(&token_entry("bob", BOB, ""));
    let setup = Setup::new(&config);
    let gateway = setup.http().await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..12 {
        let guess = format!("guess-{i:04}-secret");
        let response = client
            .post(format!("{}/mcp", gateway.url))
            .bearer_auth(&guess)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .expect("POST");
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(retry_after.as_deref().and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{retry_after:?}");
    // While throttled, even the right token is not looked at (a guess learns nothing).
    let (status, _) = api(&gateway, "GET", "/api/v1/approvals", BOB, None).await;
    assert_eq!(status, 429);
    let log = gateway.stderr.lock().expect("log").clone();
    assert!(log.iter().any(|l| l.contains("authentication failed") && l.contains("127.0.0.1")), "{log:#?}");
    assert!(!log.iter().any(|l| l.contains("guess-")), "a token reached the log: {log:#?}");
}

// ---- airlock tokens new -------------------------------------------------------------

#[tokio::test]
async fn tokens_new_prints_an_entry_that_works_as_configured() {
    let out = std::process::Command::new(airlock()).args(["tokens", "new", "ops-bot", "--groups", "sre,dev"]).output().expect("run");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry = text(&out.stdout);
    let token = text(&out.stderr).lines().last().expect("the token").trim().to_owned();
    assert!(token.starts_with("airlock_") && token.len() >= 8 + 43, "{token}");
    assert!(!entry.contains(&token), "only the digest goes in the config: {entry}");
    assert!(entry.contains(&sha256_hex(&token)), "{entry}");
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\n{entry}"));
    let check = std::process::Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("check");
    assert!(check.status.success(), "{}", text(&check.stdout));
    let gateway = setup.http().await;
    let (status, body) = api(&gateway, "GET", "/api/v1/approvals", &token, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = api(&gateway, "GET", "/api/v1/approvals", "airlock_not-the-token", None).await;
    assert_eq!(status, 401);
}
