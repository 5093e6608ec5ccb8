//! What people see is all there is (issue 12, items 3 to 6), through the real binary:
//! chat cards that cannot show every argument say so and cannot approve; digests people
//! and the log see cannot be searched for a redacted value; path rules see through
//! `//`, `/./`, `/../` and percent-encoding; the downstream gets the number that was
//! approved; nested secrets never reach the database; `log tail` shows bidi overrides
//! escaped.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::channels::{Fake, approval_id, click, interact, kinds, start, stop_and_export};
use crate::util::{ElicitAnswer, HttpGateway, Setup, TestClient, airlock, airlock_log, call, eventually, export, text_of};

const AGENT: &str = "agent-token-what-is-shown";
const ALICE: &str = "alice-token-what-is-shown";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Tokens for the agent and for alice (Slack user `U0ALICE`), Slack and Teams pointed at
/// the loopback stand-in, and `extra` appended to the config.
fn setup(fake_url: &str, extra: &str) -> Setup {
    let config = format!(
        "[gateway]\ndata_dir = \"data\"\n{extra}\n\
         [[identity.tokens]]\nname = \"agent\"\nsha256 = \"{}\"\n\
         [[identity.tokens]]\nname = \"alice\"\nsha256 = \"{}\"\n\
         [approvals]\ntimeout = \"30m\"\n\
         [approvals.slack]\nbot_token_env = \"TEST_SLACK_BOT_TOKEN\"\nsigning_secret_env = \"TEST_SLACK_SIGNING_SECRET\"\n\
         channel = \"C0APPROVALS\"\napi_base = \"{fake_url}/api\"\nusers = {{ U0ALICE = \"alice\" }}\n\
         [approvals.teams]\nworkflow_url_env = \"TEST_TEAMS_URL\"\n",
        sha256_hex(AGENT.as_bytes()),
        sha256_hex(ALICE.as_bytes()),
    );
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup
}


/// The agent's call, in the background.
async fn agent_call(gateway: &HttpGateway, tool: &'static str, args: Value) -> tokio::task::JoinHandle<rmcp::model::CallToolResult> {
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url))
            .auth_header(AGENT),
    );
    let client = rmcp::ServiceExt::serve(TestClient::answering(ElicitAnswer::Unsupported), transport).await.expect("initialize");
    tokio::spawn(async move {
        let result = client.call_tool(call(tool, args)).await.expect("call");
        let _ = client.cancel().await;
        result
    })
}

/// Signs alice in on the approver page and GETs `path`.
async fn page_as_alice(gateway: &HttpGateway, path: &str) -> String {
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let signed_in = browser
        .post(format!("{}/approvals/sign-in", gateway.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ALICE}&next=%2Fapprovals"))
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let cookie = signed_in.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_owned();
    let page = browser.get(format!("{}{path}", gateway.url)).header("cookie", cookie).send().await.expect("GET page");
    assert_eq!(page.status(), StatusCode::OK);
    page.text().await.expect("page body")
}

async fn api_as_alice(gateway: &HttpGateway, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", gateway.url)).bearer_auth(ALICE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("API");
    (response.status(), response.text().await.expect("API body"))
}

/// Regression for issue 12.3: a 2,900-character harmless field before the bucket name
/// clipped the Slack message before `"bucket": "prod-customers"`; the approver approved
/// and the production bucket was deleted.
#[tokio::test]
async fn a_card_that_cannot_show_every_argument_says_so_names_the_cut_keys_and_cannot_approve() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, "");
    let gateway = start(&setup, &fake_url).await;
    // Longer than either card holds (Slack ~2,900 characters a section, Teams 4,000).
    let note = "routine cleanup of temporary files, nothing to see here. ".repeat(80);
    assert!(note.len() > 4_000);
    let pending = agent_call(&gateway, "demo__delete_bucket", json!({"a_note": note, "bucket": "prod-customers"})).await;

    let posted = fake.nth("chat.postMessage", 1).await.body;
    let id = approval_id(&posted);
    let blocks = posted["blocks"].as_array().expect("blocks");
    let text = posted["blocks"].to_string();
    let warning = blocks.iter().position(|b| b["block_id"] == "airlock_cut").expect("a cut warning block");
    let arguments = blocks.iter().position(|b| b["block_id"] == "airlock_args").expect("an arguments block");
    assert!(warning < arguments, "the warning comes before the arguments");
    let warning_text = blocks[warning]["text"]["text"].as_str().expect("warning text");
    assert!(warning_text.contains("too long to show here in full") && warning_text.contains("`a_note`"), "{warning_text}");
    assert!(blocks[arguments]["text"]["text"].as_str().expect("args").contains("prod-customers"), "{text}");
    assert!(!text.contains("routine cleanup"), "no part of a cut member is shown: {text}");
    let actions = blocks.iter().find(|b| b["type"] == "actions").expect("actions");
    let elements = actions["elements"].as_array().expect("elements");
    assert!(elements.iter().all(|e| e["action_id"] != "airlock_approve"), "no Approve button: {actions}");
    let link = format!("{}/approvals/{id}", gateway.url);
    assert!(elements.iter().any(|e| e["url"] == link.as_str()), "a link to the page: {actions}");

    let card = fake.nth("teams", 1).await.body;
    let content = &card["attachments"][0]["content"];
    let card_text = content.to_string();
    assert!(card_text.contains("too long to show here in full") && card_text.contains("a_note"), "{card_text}");
    assert!(card_text.contains("prod-customers") && !card_text.contains("routine cleanup"), "{card_text}");
    assert_eq!(content["body"][1]["color"], "Attention", "the warning is prominent: {card_text}");
    assert_eq!(content["actions"][0]["url"], link.as_str());

    // The page shows every argument, whole.
    let page = page_as_alice(&gateway, &format!("/approvals/{id}")).await;
    assert!(page.contains("prod-customers") && page.contains(note.trim_end()), "the page shows the arguments whole");

    // A signed Approve for it, though the message had no such button: refused.
    assert_eq!(interact(&gateway, &click("U0ALICE", "airlock_approve", &id)).await, StatusCode::OK);
    let told = fake.nth("chat.postEphemeral", 1).await.body;
    assert!(told["text"].as_str().expect("text").contains("was not approved"), "{told}");
    let (status, shown) = api_as_alice(&gateway, reqwest::Method::GET, &format!("/api/v1/approvals/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&shown).expect("json")["state"], "pending", "{shown}");
    assert!(setup.sandbox("demo").join("buckets/prod-customers").is_dir(), "the bucket is still there");

    pending.abort();
    let records = stop_and_export(gateway, &setup.data_dir()).await;
    assert!(kinds(&records, "approval_decided").is_empty(), "nothing was decided: {records:#?}");
    assert!(setup.sandbox("demo").join("buckets/prod-customers").is_dir());
}

/// Regression for issue 12.4: a redacted 4-digit PIN was recovered from `args_sha256`
/// (shown to approvers, in Slack and in the log) by trying all 10,000 values.
#[tokio::test]
async fn a_redacted_pin_cannot_be_found_from_any_digest_people_or_the_log_see() {
    let (fake, fake_url) = Fake::start().await;
    let setup = setup(&fake_url, "[audit]\nredact = [\"**/pin\"]\n");
    setup.policy(
        "hold",
        "[[rule]]\nid = \"echo-held\"\ntools = [\"demo__echo\"]\neffect = \"approve\"\nreason = \"held for the digest test\"\n",
    );
    let gateway = start(&setup, &fake_url).await;
    let args = json!({"text": "open the door", "pin": "4821"});
    let pending = agent_call(&gateway, "demo__echo", args.clone()).await;

    let slack = fake.nth("chat.postMessage", 1).await.body.to_string();
    let teams = fake.nth("teams", 1).await.body.to_string();
    let id = approval_id(&serde_json::from_str(&slack).expect("json"));
    let (_, api) = api_as_alice(&gateway, reqwest::Method::GET, &format!("/api/v1/approvals/{id}"), None).await;
    let page = page_as_alice(&gateway, &format!("/approvals/{id}")).await;
    let (status, _) = api_as_alice(
        &gateway,
        reqwest::Method::POST,
        &format!("/api/v1/approvals/{id}/decision"),
        Some(json!({"decision": "approve"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let result = pending.await.expect("join");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    let records = stop_and_export(gateway, &setup.data_dir()).await;
    let log = records.iter().map(Value::to_string).collect::<Vec<_>>().join("\n");

    // The attack: every candidate PIN's plain digest, looked for everywhere people look.
    let plain = sha256_hex(br#"{"pin":"4821","text":"open the door"}"#);
    for (name, seen) in [("Slack", &slack), ("Teams", &teams), ("API", &api), ("page", &page), ("log", &log)] {
        assert!(!seen.contains("4821"), "{name} shows the PIN");
        for pin in 0..10_000 {
            let candidate = sha256_hex(format!(r#"{{"pin":"{pin:04}","text":"open the door"}}"#).as_bytes());
            assert!(!seen.contains(&candidate), "{name} shows the plain digest of PIN {pin:04}");
        }
    }
    let hmac = serde_json::from_str::<Value>(&api).expect("json")["args_hmac"].as_str().expect("args_hmac").to_owned();
    assert_ne!(hmac, plain);
    assert!(slack.contains(&hmac) && teams.contains(&hmac) && page.contains(&hmac) && log.contains(&hmac));

    // The downstream's receipt carries the plain digest of what it received, and verifies.
    let receipts = std::fs::read_to_string(setup.sandbox("demo").join("receipts.jsonl")).expect("receipts");
    let receipt: Value = serde_json::from_str(receipts.lines().next().expect("one receipt")).expect("json");
    assert_eq!(receipt["receipt"]["args_sha256"], plain.as_str());
    let file = setup.path().join("receipt.json");
    std::fs::write(&file, receipt.to_string()).expect("write receipt");
    let verify = |args: &str| {
        std::process::Command::new(airlock())
            .args(["receipts", "verify"])
            .arg(&file)
            .arg("--config")
            .arg(setup.config())
            .args(["--args", args])
            .output()
            .expect("run receipts verify")
    };
    let ok = verify(&args.to_string());
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!verify(r#"{"text":"open the door","pin":"4822"}"#).status.success());
}

/// A stdio setup with one rule denying `demo__echo` when its text is a path under
/// `/srv/data/secret`, and allowing everything else.
fn path_setup() -> Setup {
    let setup = Setup::enforcing();
    setup.policy(
        "paths",
        "[[rule]]\nid = \"no-secret\"\ntools = [\"demo__echo\"]\nwhen = { \"/text\" = { path_under = \"/srv/data/secret\" } }\n\
         effect = \"deny\"\nreason = \"the secret folder is off limits\"\n\n\
         [[rule]]\nid = \"rest\"\neffect = \"allow\"\nreason = \"everything else\"\n",
    );
    setup
}

/// Regression for issue 12.5: `…//secret/x`, `…/./secret/x` and `…/pub/../secret/x` got
/// past a `^…/secret/` regex deny.
#[tokio::test]
async fn path_rules_deny_every_spelling_of_a_path_under_the_denied_directory() {
    let setup = path_setup();
    let client = setup.stdio(TestClient::new()).await;
    for spelling in [
        "/srv/data/secret/x",
        "/srv/data//secret/x",
        "/srv/data/./secret/x",
        "/srv/data/pub/../secret/x",
        "/srv/data/secret",
        "/srv/data/secret/",
        "file:///srv/data/%73ecret/x",
        "file:///srv/data/pub/%2e%2e/secret/x",
        "/srv/data/%2e%2e/data/secret/x",
        "/srv/data/pub/../../../../etc",
    ] {
        let result = client.call_tool(call("demo__echo", json!({"text": spelling}))).await.expect("call");
        assert_eq!(result.is_error, Some(true), "{spelling} got through: {}", text_of(&result));
        assert!(text_of(&result).contains("no-secret"), "{spelling}: {}", text_of(&result));
    }
    for fine in ["/srv/data/public/x", "/srv/data/secrets-not/x", "file:///srv/data/pub/x"] {
        let result = client.call_tool(call("demo__echo", json!({"text": fine}))).await.expect("call");
        assert_eq!(text_of(&result), fine, "{fine} was refused");
    }
    client.cancel().await.expect("close");
}

#[test]
fn check_warns_about_a_regex_anchored_at_root_on_a_path_field() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    setup.policy(
        "old",
        "[[rule]]\nid = \"no-etc-writes\"\nwhen = { \"/path\" = { regex = \"^/etc/\" } }\neffect = \"deny\"\nreason = \"r\"\n",
    );
    let out = std::process::Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("check");
    assert!(out.status.success(), "a warning is not a problem");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning") && stderr.contains("no-etc-writes") && stderr.contains("path_under"), "{stderr}");

    let safe = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    safe.policy("new", "[[rule]]\nid = \"no-etc-writes\"\nwhen = { \"/path\" = { path_under = \"/etc\" } }\neffect = \"deny\"\n");
    let out = std::process::Command::new(airlock()).arg("check").arg("--config").arg(safe.config()).output().expect("check");
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("warning"));
}

/// A downstream that answers `echo_args` with the arguments exactly as it parsed them, so
/// `1` and `1.0` stay apart (Python's json keeps int and float apart).
const RAW_ECHO: &str = r#"
import json, sys
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    if "method" not in msg or "id" not in msg:
        continue
    method, rid = msg["method"], msg["id"]
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {"protocolVersion": msg["params"]["protocolVersion"],
              "capabilities": {"tools": {}}, "serverInfo": {"name": "raw-echo", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": [{"name": "echo_args",
              "description": "Returns the arguments as received", "inputSchema": {"type": "object"}}]}})
    elif method == "tools/call":
        text = json.dumps(msg["params"].get("arguments"), sort_keys=True)
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
"#;

/// Regression for issue 12.6: `1` and `1.0` digest the same, and the downstream received
/// `1.0` for a confirmed `1`.
#[tokio::test]
async fn the_downstream_gets_the_numbers_people_confirmed_not_another_spelling() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    let script = setup.path().join("raw_echo.py");
    std::fs::write(&script, RAW_ECHO).expect("write fixture");
    setup.manifest("raw", &format!("name = \"raw\"\ncommand = \"python3\"\nargs = [{script:?}]\n[tools.echo_args]\nrisk = \"medium\"\n"));
    let test_client = TestClient::answering(ElicitAnswer::Accept);
    let client = setup.stdio(test_client.clone()).await;
    let result = client.call_tool(call("raw__echo_args", json!({"n": 1.0, "ratio": 2.50, "list": [3.0, -0.0]}))).await.expect("call");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(text_of(&result), r#"{"list": [3, 0], "n": 1, "ratio": 2.5}"#, "what was digested and confirmed is what runs");
    let asked = test_client.received().into_iter().find(|m| m["method"] == "elicitation/create").expect("a confirmation");
    let message = asked["params"]["message"].as_str().expect("message");
    assert!(message.contains("\"n\": 1") && !message.contains("1.0"), "{message}");
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let received = records.iter().find(|r| r["kind"] == "call_received").expect("call_received");
    assert_eq!(received["args"]["n"].to_string(), "1");
}

/// Regression for issue 12.6: `{"auth": {"password": …}}` and `[{"password": …}]` reached
/// the database bytes, because redaction pointers matched absolute paths only.
#[tokio::test]
async fn nested_secrets_are_redacted_by_default_in_the_stored_bytes() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let args = json!({
        "text": "hello",
        "auth": {"password": "nested-pass-0451"},
        "items": [{"password": "listed-pass-0452"}],
        "deep": {"x": {"api_key": "deep-key-0453", "token": "deep-token-0454"}},
        "secret": "top-secret-0455",
    });
    let result = client.call_tool(call("demo__echo", args)).await.expect("call");
    assert_eq!(text_of(&result), "hello");
    client.cancel().await.expect("close");
    let records = export(&setup.data_dir());
    let received = records.iter().find(|r| r["kind"] == "call_received").expect("call_received");
    assert_eq!(received["args"]["auth"]["password"], "[redacted]", "{received}");
    assert_eq!(received["args"]["items"][0]["password"], "[redacted]");
    assert_eq!(received["args"]["deep"]["x"]["api_key"], "[redacted]");
    let mut stored = Vec::new();
    let mut stack = vec![setup.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                stored.extend(std::fs::read(&path).expect("read file"));
            }
        }
    }
    assert!(!stored.is_empty());
    for secret in ["nested-pass-0451", "listed-pass-0452", "deep-key-0453", "deep-token-0454", "top-secret-0455"] {
        assert!(!stored.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in the data dir's bytes");
    }
}

/// Regression for issue 12.6: bidi overrides from clients reached `log tail` raw.
#[tokio::test]
async fn log_tail_and_show_write_a_bidi_override_escaped() {
    let setup = Setup::with_demo();
    let client = setup.stdio(TestClient::new()).await;
    let hostile = "invoice_\u{202e}fdp.exe\u{2028}\u{85}";
    let result = client.call_tool(call("demo__echo", json!({"text": hostile}))).await.expect("call");
    assert_eq!(text_of(&result), hostile, "the downstream gets the text unchanged");
    client.cancel().await.expect("close");
    assert!(eventually(Duration::from_secs(30), || airlock_log(&setup.data_dir(), &["tail", "-n", "20"]).status.success()).await);
    let tail = airlock_log(&setup.data_dir(), &["tail", "-n", "20"]);
    let text = String::from_utf8(tail.stdout).expect("utf-8");
    for raw in ['\u{202e}', '\u{2028}', '\u{85}'] {
        assert!(!text.contains(raw), "log tail prints {raw:?} raw");
    }
    assert!(text.contains(r"invoice_\u202efdp.exe\u2028\u0085"), "{text}");
    let line = text.lines().find(|l| l.contains("call_received")).expect("the call's record");
    let record: Value = serde_json::from_str(line).expect("still JSON");
    assert_eq!(record["args"]["text"], hostile, "and it decodes to what was stored");
    let seq = record["seq"].to_string();
    let show = airlock_log(&setup.data_dir(), &["show", &seq]);
    let shown = String::from_utf8(show.stdout).expect("utf-8");
    assert!(!shown.contains('\u{202e}') && shown.contains(r"\u202e"), "{shown}");
}
