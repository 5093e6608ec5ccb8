//! The approver page through the real binary: bearer sign-in, who sees what, GET never
//! decides, CSRF, a web approval releasing a held call, and escaping of hostile arguments.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{ElicitAnswer, HttpGateway, Setup, TestClient, airlock, call, text_of};

pub(crate) const AGENT: &str = "agent-token-0123";
pub(crate) const ALICE: &str = "alice-token-4567";
pub(crate) const BOB: &str = "bob-token-89ab";

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// A gateway with three token users (the agent; alice in `sre`; bob in `dev`) and a rule
/// that holds `demo__echo` for one approver from `sre`.
fn setup() -> Setup {
    let config = format!(
        "[gateway]\ndata_dir = \"data\"\n\
         [[identity.tokens]]\nname = \"agent\"\nsha256 = \"{}\"\n\
         [[identity.tokens]]\nname = \"alice\"\nsha256 = \"{}\"\ngroups = [\"sre\"]\n\
         [[identity.tokens]]\nname = \"bob\"\nsha256 = \"{}\"\ngroups = [\"dev\"]\n",
        sha256_hex(AGENT),
        sha256_hex(ALICE),
        sha256_hex(BOB)
    );
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "hold",
        "[[rule]]\nid = \"echo-needs-sre\"\ntools = [\"demo__echo\"]\neffect = \"approve\"\n\
         approvers = [\"group:sre\"]\nreason = \"echo is held for the web tests\"\n",
    );
    setup
}

/// A browser-like HTTP client that follows no redirects (the tests look at each answer).
pub(crate) fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

/// Signs in with a token through the page's form; returns the `Cookie` header value.
pub(crate) async fn sign_in(gateway: &HttpGateway, token: &str) -> String {
    let response = browser()
        .post(format!("{}/approvals/sign-in", gateway.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=%2Fapprovals"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), 303, "sign-in answers with a redirect");
    assert_eq!(response.headers()["location"], "/approvals");
    let set_cookie = response.headers()["set-cookie"].to_str().expect("cookie text").to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain http: no Secure flag ({set_cookie})");
    set_cookie.split(';').next().expect("name=value").to_owned()
}

pub(crate) async fn get(gateway: &HttpGateway, path: &str, cookie: Option<&str>) -> (u16, String) {
    let mut request = browser().get(format!("{}{path}", gateway.url));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("GET");
    (response.status().as_u16(), response.text().await.expect("body"))
}

async fn post(gateway: &HttpGateway, path: &str, cookie: &str, form: &str) -> (u16, String) {
    let response = browser()
        .post(format!("{}{path}", gateway.url))
        .header("cookie", cookie)
        // What a browser sends from the page itself: the guard must accept it.
        .header("origin", gateway.url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .expect("POST");
    (response.status().as_u16(), response.text().await.expect("body"))
}

/// The approval ids linked from a list page.
fn listed_ids(html: &str) -> Vec<String> {
    html.split("href=\"/approvals/ap-").skip(1).filter_map(|rest| rest.split('"').next()).map(|id| format!("ap-{id}")).collect()
}

pub(crate) fn csrf_of(html: &str) -> String {
    let rest = html.split("name=\"csrf\" value=\"").nth(1).expect("the page has a CSRF field");
    rest.split('"').next().expect("value").to_owned()
}

/// Makes the held call in the background as the agent; returns its task and the id of
/// the approval it opened (as alice's list shows it).
pub(crate) async fn held_call(
    gateway: &HttpGateway,
    alice: &str,
    message: &str,
) -> (tokio::task::JoinHandle<rmcp::model::CallToolResult>, String) {
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url))
            .auth_header(AGENT),
    );
    let client = rmcp::ServiceExt::serve(TestClient::answering(ElicitAnswer::Unsupported), transport).await.expect("initialize");
    let args = json!({"text": message});
    let task = tokio::spawn(async move {
        let result = client.call_tool(call("demo__echo", args)).await.expect("call");
        let _ = client.cancel().await;
        result
    });
    let mut ids = Vec::new();
    for _ in 0..600 {
        ids = listed_ids(&get(gateway, "/approvals", Some(alice)).await.1);
        if !ids.is_empty() || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if ids.is_empty() && task.is_finished() {
        let result = task.await.map(|r| text_of(&r));
        panic!("the call was not held: {result:?}");
    }
    assert_eq!(ids.len(), 1, "alice sees the one held call");
    (task, ids.remove(0))
}

async fn state_of(gateway: &HttpGateway, id: &str, cookie: &str) -> Value {
    let (status, body) = get(gateway, &format!("/approvals/{id}/state"), Some(cookie)).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("state JSON")
}

/// Record kinds of the stopped gateway's log.
fn log_kinds(setup: &Setup) -> Vec<String> {
    for _ in 0..100 {
        let out = Command::new(airlock())
            .args(["log", "export", "--data-dir"])
            .arg(setup.data_dir())
            .output()
            .expect("airlock log export");
        if String::from_utf8_lossy(&out.stderr).contains("locked") {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        return String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("jsonl")["kind"].as_str().unwrap_or_default().to_owned())
            .collect();
    }
    panic!("the audit database stayed locked");
}

#[tokio::test]
async fn without_a_session_the_pages_ask_to_sign_in_and_a_wrong_token_is_refused() {
    let setup = setup();
    let gateway = setup.http().await;
    let (status, body) = get(&gateway, "/approvals", None).await;
    assert_eq!(status, 401);
    assert!(body.contains("name=\"token\"") && body.contains("width=device-width"), "{body}");
    let headers = browser().get(format!("{}/approvals", gateway.url)).send().await.expect("GET").headers().clone();
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    let response = browser()
        .post(format!("{}/approvals/sign-in", gateway.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong&next=%2Fapprovals")
        .send()
        .await
        .expect("sign in");
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("set-cookie").is_none());
    // A forged cookie signs nobody in.
    let (status, _) = get(&gateway, "/approvals", Some("airlock_session=eyJwIjoiYWxpY2UifQ.AAAA")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_list_shows_only_approvals_the_person_may_decide() {
    let setup = setup();
    let gateway = setup.http().await;
    let alice = sign_in(&gateway, ALICE).await;
    let bob = sign_in(&gateway, BOB).await;
    let agent = sign_in(&gateway, AGENT).await;
    let (task, id) = held_call(&gateway, &alice, "list me").await;
    assert!(listed_ids(&get(&gateway, "/approvals", Some(&bob)).await.1).is_empty(), "bob is not in sre");
    assert!(listed_ids(&get(&gateway, "/approvals", Some(&agent)).await.1).is_empty(), "the caller never approves");
    // Bob cannot open it either: it reads as not found, naming neither call nor approvers.
    let (status, body) = get(&gateway, &format!("/approvals/{id}"), Some(&bob)).await;
    assert_eq!(status, 404);
    assert!(!body.contains("list me") && !body.contains("sre"), "{body}");
    // The caller sees its own call, without buttons.
    let (status, body) = get(&gateway, &format!("/approvals/{id}"), Some(&agent)).await;
    assert_eq!(status, 200);
    assert!(body.contains("list me") && !body.contains("name=\"csrf\""), "{body}");
    // Bearer header instead of a cookie (scripted use) sees the same as the form sign-in.
    let by_header = browser()
        .get(format!("{}/approvals", gateway.url))
        .header("authorization", format!("Bearer {ALICE}"))
        .send()
        .await
        .expect("GET");
    assert_eq!(listed_ids(&by_header.text().await.expect("body")), vec![id.clone()]);
    task.abort();
}

#[tokio::test]
async fn a_get_of_the_decision_url_and_posts_without_the_csrf_token_decide_nothing() {
    let setup = setup();
    let mut gateway = setup.http().await;
    let alice = sign_in(&gateway, ALICE).await;
    let bob = sign_in(&gateway, BOB).await;
    let (task, id) = held_call(&gateway, &alice, "not yet").await;
    let decision = format!("/approvals/{id}/decision");
    for query in ["", "?decision=approve", "?decision=approve&csrf=x"] {
        let (status, _) = get(&gateway, &format!("{decision}{query}"), Some(&alice)).await;
        assert_eq!(status, 405, "GET {decision}{query} must not decide");
    }
    let page = get(&gateway, &format!("/approvals/{id}"), Some(&alice)).await.1;
    let alice_csrf = csrf_of(&page);
    for form in [
        "decision=approve".to_owned(),
        "decision=approve&csrf=".to_owned(),
        "decision=approve&csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
    ] {
        let (status, body) = post(&gateway, &decision, &alice, &form).await;
        assert_eq!(status, 403, "{form}: {body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    // Alice's token in another session (bob's cookie) does not count either.
    let (status, _) = post(&gateway, &decision, &bob, &format!("decision=approve&csrf={alice_csrf}")).await;
    assert_eq!(status, 403);
    // A cross-site page posting with its own Origin is stopped by the guard.
    let cross = browser()
        .post(format!("{}{decision}", gateway.url))
        .header("cookie", &alice)
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=approve&csrf={alice_csrf}"))
        .send()
        .await
        .expect("POST");
    assert_eq!(cross.status(), 403);
    assert_eq!(state_of(&gateway, &id, &alice).await["state"], "pending");
    assert!(!task.is_finished(), "the held call is still waiting");
    task.abort();
    gateway.child.kill().await.expect("stop airlock");
    let kinds = log_kinds(&setup);
    assert!(kinds.iter().any(|k| k == "approval_requested"), "{kinds:?}");
    assert!(!kinds.iter().any(|k| k == "approval_decided" || k == "approval_settled"), "{kinds:?}");
}

#[tokio::test]
async fn a_post_with_the_csrf_token_approves_and_the_held_call_completes() {
    let setup = setup();
    let mut gateway = setup.http().await;
    let alice = sign_in(&gateway, ALICE).await;
    let (task, id) = held_call(&gateway, &alice, "approved on the web").await;
    let page = get(&gateway, &format!("/approvals/{id}"), Some(&alice)).await.1;
    let form = format!("decision=approve&comment=looks+fine&csrf={}", csrf_of(&page));
    let response = browser()
        .post(format!("{}/approvals/{id}/decision", gateway.url))
        .header("cookie", &alice)
        .header("origin", gateway.url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], format!("/approvals/{id}").as_str());
    let result = tokio::time::timeout(Duration::from_secs(60), task).await.expect("the held call completes").expect("task");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert!(text_of(&result).contains("approved on the web"), "{}", text_of(&result));
    let page = get(&gateway, &format!("/approvals/{id}"), Some(&alice)).await.1;
    assert!(page.contains("state-approved") && page.contains("via web") && page.contains("looks fine"), "{page}");
    assert!(listed_ids(&get(&gateway, "/approvals", Some(&alice)).await.1).is_empty(), "settled: off the list");
    gateway.child.kill().await.expect("stop airlock");
    let kinds = log_kinds(&setup);
    assert!(kinds.iter().any(|k| k == "approval_decided"), "{kinds:?}");
}

#[tokio::test]
async fn hostile_arguments_are_escaped_on_every_page() {
    let setup = setup();
    let gateway = setup.http().await;
    let alice = sign_in(&gateway, ALICE).await;
    let hostile = "</pre><script>alert('x')</script><img src=x onerror=\"alert(1)\">&amp;";
    let (task, id) = held_call(&gateway, &alice, hostile).await;
    let (status, page) = get(&gateway, &format!("/approvals/{id}"), Some(&alice)).await;
    assert_eq!(status, 200);
    assert!(!page.contains("<script>alert") && !page.contains("<img src=x") && !page.contains("</pre><script"), "{page}");
    assert!(page.contains("&lt;/pre&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"), "{page}");
    assert!(page.contains("&amp;amp;"), "an entity in the arguments shows as text: {page}");
    // The only script on the page is ours, and it carries the response's CSP nonce.
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    task.abort();
}
