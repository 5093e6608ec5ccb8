//! Rate limits (`[[limit]]` in policies) through the real binary: an agent that loops on a
//! tool is refused after its burst, recovers when the bucket refills, and every refusal is
//! a `decision` record with effect `limited`; `airlock check` and `airlock explain` know them.

use std::process::Command;
use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

use crate::util::{ALLOW_ALL, Setup, TestClient, airlock, call, export, text_of};

const LIMIT: &str = "[[limit]]\nid = \"reads-per-caller\"\ntools = [\"demo__read_*\"]\nrate = \"1/s\"\nburst = 3\n";

#[tokio::test]
async fn calls_past_the_burst_are_refused_logged_as_limited_and_allowed_again_later() {
    let setup = Setup::with_demo();
    setup.policy("limits", LIMIT);
    let client = setup.stdio(TestClient::new()).await;
    let read = || call("demo__read_customer", json!({"id": "C-1001"}));
    for n in 1..=3 {
        let ok = client.call_tool(read()).await.expect("call");
        assert_ne!(ok.is_error, Some(true), "call {n} of the burst: {}", text_of(&ok));
    }
    let refused = client.call_tool(read()).await.expect("call");
    assert_eq!(refused.is_error, Some(true), "the call past the burst ran");
    let text = text_of(&refused);
    assert!(text.contains("reads-per-caller") && text.contains("retry after"), "{text}");
    assert!(text.contains("not forwarded"), "{text}");
    // Other tools are not counted by this limit.
    let other = client.call_tool(call("demo__search_logs", json!({"query": "error"}))).await.expect("call");
    assert!(!text_of(&other).contains("rate limit"), "{}", text_of(&other));
    // The bucket refills at 1/s: a later call runs again (bounded wait, not a timing check).
    let deadline = Instant::now() + Duration::from_secs(20);
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let again = client.call_tool(read()).await.expect("call");
        if again.is_error != Some(true) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(recovered, "the limit never let a call through again");
    client.cancel().await.expect("close");

    let records = export(&setup.data_dir());
    let limited: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["decision"] == "limited")
        .collect();
    assert!(!limited.is_empty(), "no `limited` decision in the log");
    for record in &limited {
        assert_eq!(record["rule"], "reads-per-caller", "{record}");
        assert_eq!(record["tool"], "demo__read_customer", "{record}");
    }
    // Nothing was forwarded for a limited call: each limited decision's call has no
    // `call_forwarded` record.
    for record in &limited {
        let call_id = &record["call_id"];
        assert!(
            !records.iter().any(|r| r["kind"] == "call_forwarded" && &r["call_id"] == call_id),
            "a limited call was forwarded: {call_id}"
        );
    }
}

#[tokio::test]
async fn each_caller_has_its_own_bucket() {
    let tokens = ["token-for-agent-a-0123456789abcdef", "token-for-agent-b-0123456789abcdef"];
    let entries: String = ["agent-a", "agent-b"]
        .iter()
        .zip(tokens)
        .map(|(name, token)| format!("[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n", sha256_hex(token)))
        .collect();
    let setup = Setup::new(&format!("[gateway]\ndata_dir = \"data\"\n[identity]\n{entries}"));
    setup.demo("demo");
    setup.policy("allow", ALLOW_ALL);
    setup.policy("limits", "[[limit]]\nid = \"one-each\"\nrate = \"1/hour\"\nburst = 1\n");
    let gateway = setup.http().await;
    let connect = |token: &str| {
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token);
        TestClient::new().serve(StreamableHttpClientTransport::from_config(config))
    };
    let a = connect(tokens[0]).await.expect("a connects");
    let b = connect(tokens[1]).await.expect("b connects");
    let read = || call("demo__read_customer", json!({"id": "C-1001"}));
    assert_ne!(a.call_tool(read()).await.expect("a1").is_error, Some(true));
    let a2 = a.call_tool(read()).await.expect("a2");
    assert!(a2.is_error == Some(true) && text_of(&a2).contains("one-each"), "a's second call ran: {}", text_of(&a2));
    let b1 = b.call_tool(read()).await.expect("b1");
    assert_ne!(b1.is_error, Some(true), "b was limited by a's calls: {}", text_of(&b1));
    a.cancel().await.expect("close a");
    b.cancel().await.expect("close b");
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

#[test]
fn check_reports_a_bad_limit_at_its_line_and_explain_shows_the_limits_that_apply() {
    let setup = Setup::enforcing();
    setup.policy("limits", "[[limit]]\nid = \"bad\"\nrate = \"30/week\"\n");
    let out = Command::new(airlock()).arg("check").arg("--config").arg(setup.config()).output().expect("check");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a bad rate passed `airlock check`");
    assert!(report.contains("limits.toml:3") && report.contains("\"30/week\" is not a rate"), "{report}");

    setup.policy("limits", LIMIT);
    let out = Command::new(airlock())
        .args(["explain", "demo__read_customer", "--offline", "--args", "{\"id\":\"C-1\"}", "--config"])
        .arg(setup.config())
        .output()
        .expect("explain");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rate limit: \"reads-per-caller\"") && stdout.contains("1/s per caller, burst 3"), "{stdout}");
    let out = Command::new(airlock())
        .args(["explain", "demo__delete_bucket", "--offline", "--config"])
        .arg(setup.config())
        .output()
        .expect("explain");
    assert!(String::from_utf8_lossy(&out.stdout).contains("rate limits: none apply"));
}
