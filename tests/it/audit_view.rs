//! The audit view (`/audit`, issue 19) through the real binary: who may open it, its
//! filters, one call's chain with proofs, the report download, every view recorded, and
//! display names with relative expiry on the approver page.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{HttpGateway, Setup, TestClient, call, export, text_of};
use crate::web::{AGENT, ALICE, BOB, browser, csrf_of, get, held_call, sha256_hex, sign_in};

const ERIN: &str = "erin-token-cdef";

/// The web tests' users plus erin, an auditor with a person name; echo is held for sre,
/// read_customer allowed, delete_bucket denied.
fn setup() -> Setup {
    let config = format!(
        "[gateway]\ndata_dir = \"data\"\n\
         [approvals.web]\nauditors = [\"group:auditors\"]\n\
         [[identity.tokens]]\nname = \"agent\"\nsha256 = \"{}\"\n\
         [[identity.tokens]]\nname = \"alice\"\nsha256 = \"{}\"\ngroups = [\"sre\"]\n\
         [[identity.tokens]]\nname = \"bob\"\nsha256 = \"{}\"\ngroups = [\"dev\"]\n\
         [[identity.tokens]]\nname = \"erin\"\nsha256 = \"{}\"\ngroups = [\"auditors\"]\nperson = \"Erin Auditor\"\n",
        sha256_hex(AGENT),
        sha256_hex(ALICE),
        sha256_hex(BOB),
        sha256_hex(ERIN),
    );
    let setup = Setup::new(&config);
    setup.demo("demo");
    setup.policy(
        "audit",
        "[[rule]]\nid = \"echo-needs-sre\"\ntools = [\"demo__echo\"]\neffect = \"approve\"\napprovers = [\"group:sre\"]\nreason = \"held\"\n\
         [[rule]]\nid = \"reads\"\ntools = [\"demo__read_customer\"]\neffect = \"allow\"\nreason = \"reads are fine\"\n\
         [[rule]]\nid = \"no-deletes\"\ntools = [\"demo__delete_bucket\"]\neffect = \"deny\"\nreason = \"never\"\n",
    );
    setup
}

/// One call as `token`'s principal over streamable HTTP; the client closes its session after.
async fn call_as(gateway: &HttpGateway, token: &str, tool: &str, args: Value) -> rmcp::model::CallToolResult {
    let transport = rmcp::transport::StreamableHttpClientTransport::from_config(
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url))
            .auth_header(token),
    );
    let client = rmcp::ServiceExt::serve(TestClient::new(), transport).await.expect("initialize");
    let result = client.call_tool(call(tool, args)).await.expect("call");
    let _ = client.cancel().await;
    result
}

/// The call ids listed on an audit page.
fn listed_calls(html: &str) -> Vec<String> {
    html.split("data-call=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect()
}

#[tokio::test]
async fn the_audit_view_sends_anonymous_callers_to_sign_in_and_refuses_non_auditors() {
    let setup = setup();
    let gateway = setup.http().await;
    let (status, body) = get(&gateway, "/audit", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("name=\"token\"") && body.contains("value=\"/audit\""), "the sign-in page, back to /audit: {body}");
    let bob = sign_in(&gateway, BOB).await;
    for path in ["/audit", "/audit/calls/x", "/audit/report?format=json", "/audit/proof/1"] {
        let (status, body) = get(&gateway, path, Some(&bob)).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("Not an auditor") && !body.contains("data-call"), "{path}: {body}");
    }
    // A bearer header is the same person as the form sign-in: still not an auditor.
    let response = browser().get(format!("{}/audit", gateway.url)).bearer_auth(BOB).send().await.expect("GET");
    assert_eq!(response.status(), 403);
    // The approver (alice) is no auditor either: deciding is not reading the whole log.
    let alice = sign_in(&gateway, ALICE).await;
    assert_eq!(get(&gateway, "/audit", Some(&alice)).await.0, 403);
}

#[tokio::test]
async fn an_auditor_filters_the_calls_opens_a_chain_downloads_the_report_and_each_view_is_recorded() {
    let setup = setup();
    let mut gateway = setup.http().await;
    let read = call_as(&gateway, AGENT, "demo__read_customer", json!({"id": "C-1002"})).await;
    assert_ne!(read.is_error, Some(true), "{}", text_of(&read));
    call_as(&gateway, BOB, "demo__read_customer", json!({"id": "C-1002"})).await;
    let denied = call_as(&gateway, AGENT, "demo__delete_bucket", json!({"bucket": "prod"})).await;
    assert_eq!(denied.is_error, Some(true), "{}", text_of(&denied));

    // The held echo, approved by alice on the page, which shows expiry relative to now.
    let alice = sign_in(&gateway, ALICE).await;
    let (task, id) = held_call(&gateway, &alice, "audited").await;
    let list = get(&gateway, "/approvals", Some(&alice)).await.1;
    assert!(list.contains("<span class=\"muted\">(in ") && list.contains(" min)</span>"), "relative expiry: {list}");
    let page = get(&gateway, &format!("/approvals/{id}"), Some(&alice)).await.1;
    let response = browser()
        .post(format!("{}/approvals/{id}/decision", gateway.url))
        .header("cookie", &alice)
        .header("origin", gateway.url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("decision=approve&comment=DP-1142&csrf={}", csrf_of(&page)))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 303);
    let result = tokio::time::timeout(Duration::from_secs(60), task).await.expect("the held call completes").expect("task");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));

    let erin = sign_in(&gateway, ERIN).await;
    let (status, all) = get(&gateway, "/audit", Some(&erin)).await;
    assert_eq!(status, 200, "{all}");
    assert!(all.contains("data-status=\"intact\""), "the running log verifies: {all}");
    assert!(all.contains("<strong id=\"display-name\">Erin Auditor</strong> <small id=\"principal\">erin</small>"), "{all}");
    let calls = listed_calls(&all);
    assert_eq!(calls.len(), 4, "{calls:?}");
    let only = |html: &str| listed_calls(html);
    let denied_calls = only(&get(&gateway, "/audit?decision=deny", Some(&erin)).await.1);
    let bobs = only(&get(&gateway, "/audit?principal=bob", Some(&erin)).await.1);
    let echoes = only(&get(&gateway, "/audit?tool=demo__echo", Some(&erin)).await.1);
    let agent_allowed = only(&get(&gateway, "/audit?principal=agent&decision=allow", Some(&erin)).await.1);
    let none = only(&get(&gateway, "/audit?from=2001-01-01&to=2001-01-31", Some(&erin)).await.1);
    assert_eq!((denied_calls.len(), bobs.len(), echoes.len(), agent_allowed.len(), none.len()), (1, 1, 1, 1, 0));
    assert!([&denied_calls[0], &bobs[0], &echoes[0], &agent_allowed[0]].iter().all(|c| calls.contains(c)));
    assert_ne!(denied_calls[0], agent_allowed[0]);

    // One call's chain: every record of the held call, with seq numbers and proofs.
    let echo = &echoes[0];
    let (status, chain) = get(&gateway, &format!("/audit/calls/{echo}"), Some(&erin)).await;
    assert_eq!(status, 200, "{chain}");
    let kinds: Vec<&str> = chain.split("data-kind=\"").skip(1).filter_map(|r| r.split('"').next()).collect();
    for kind in ["call_received", "decision", "approval_requested", "approval_decided", "approval_settled", "call_forwarded", "call_completed"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(chain.contains("DP-1142") && chain.contains("via web") && chain.contains("alice"), "{chain}");
    let seq: u64 = chain.split("data-seq=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|s| s.parse().ok()).expect("a seq");
    let (status, proof) = get(&gateway, &format!("/audit/proof/{seq}"), Some(&erin)).await;
    assert_eq!(status, 200, "{proof}");
    let proof: Value = serde_json::from_str(&proof).expect("proof JSON");
    assert_eq!((proof["seq"].as_u64(), proof["record"]["call_id"].as_str()), (Some(seq), Some(echo.as_str())), "{proof}");
    assert!(proof["checkpoint"].is_object(), "{proof}");

    // The report, from the one report builder, over the running log.
    let response = browser().get(format!("{}/audit/report?format=json", gateway.url)).header("cookie", &erin).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-disposition"].to_str().unwrap_or_default().starts_with("attachment"));
    let report: Value = response.json().await.expect("report JSON");
    assert_eq!(report["format"], "airlock-report/v1");
    assert_eq!(report["verification"]["status"], "intact", "{}", report["verification"]);
    assert_eq!(report["totals"]["calls"], 4, "{}", report["totals"]);
    assert_eq!(report["approvals"][0]["votes"][0]["comment"], "DP-1142");

    gateway.child.kill().await.expect("stop airlock");
    let _ = gateway.child.wait().await;
    let records = export(&setup.data_dir());
    let viewed: Vec<&Value> = records.iter().filter(|r| r["kind"] == "audit_viewed").collect();
    assert!(viewed.iter().all(|r| r["principal"] == "erin"), "only the auditor's views are recorded: {viewed:#?}");
    let views: Vec<&str> = viewed.iter().filter_map(|r| r["detail"]["view"].as_str()).collect();
    assert_eq!(views, ["calls", "calls", "calls", "calls", "calls", "calls", "call", "proof", "report"], "{viewed:#?}");
    assert_eq!(viewed[1]["detail"]["filter"], json!({"decision": "deny"}));
    assert_eq!(viewed[4]["detail"]["filter"], json!({"principal": "agent", "decision": "allow"}));
    assert_eq!(viewed[6]["detail"]["call_id"], echo.as_str());
    assert!(viewed.iter().all(|r| r["call_id"].is_null()), "a view is not a record of the call it shows");
    let text = serde_json::to_string(&viewed).expect("json");
    assert!(!text.contains(ERIN) && !text.contains("airlock_session"), "no credential in the records");
}
