//! Cluster mode, approvals: replicas of `airlock serve --http` (separate data dirs, the same
//! audit and argument keys) sharing one PostgreSQL database (issue 18). A hold opened on one
//! replica is decided through another; a retry on another replica re-attaches; a replica
//! that is SIGKILLed leaves its holds cancelled once its lease lapses; with the database
//! unreachable nothing is decided, and everything resumes when it returns. Every test
//! needs the test server of `.ci/run` (`AIRLOCK_TEST_PG_URL`) and says SKIPPED without it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::approvals_api::{api, decide, setup as approvals_setup, token};
use crate::util::{HttpGateway, Setup, TestClient, TestDb, airlock, call, text_of};

const URL_ENV: &str = "AIRLOCK_TEST_DB_URL";

/// One replica's setup: the approvals API test's people and policy, and `[storage]`.
fn replica_setup() -> Setup {
    let setup = approvals_setup();
    let config = std::fs::read_to_string(setup.config()).expect("config");
    let config = format!("{config}\n[storage]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\n");
    std::fs::write(setup.config(), config).expect("write config");
    setup
}

/// Starts `count` replicas on `url`; the first one's keys are given to the others.
async fn replicas(count: usize, url: &str) -> Vec<(Setup, HttpGateway)> {
    let mut all: Vec<(Setup, HttpGateway)> = Vec::new();
    for _ in 0..count {
        let setup = replica_setup();
        if let Some((first, _)) = all.first() {
            crate::util::share_log_keys(first, &setup);
        }
        let gateway = setup.http_with_env(&[(URL_ENV, url)]).await;
        all.push((setup, gateway));
    }
    all
}

async fn mcp_as(gateway: &HttpGateway, name: &str) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token(name));
    TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

fn call_in_background(client: &RunningService<RoleClient, TestClient>, tool: &str, args: Value) -> tokio::task::JoinHandle<CallToolResult> {
    let peer = client.peer().clone();
    let params = call(tool, args);
    tokio::spawn(async move { peer.call_tool(params).await.expect("the held call answers") })
}

/// Waits until `gateway`'s API lists approvals for `tool` matching `state` (hang guard,
/// not a timing assertion), and returns them.
async fn approvals_for(gateway: &HttpGateway, tool: &str, state: &str) -> Vec<Value> {
    for _ in 0..600 {
        let (status, body) = api(gateway, "GET", "/api/v1/approvals", Some("bob"), None).await;
        assert_eq!(status, 200, "{body}");
        let found: Vec<Value> =
            body["approvals"].as_array().into_iter().flatten().filter(|a| a["tool"] == tool && a["state"] == state).cloned().collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {state} approval for {tool} at {}", gateway.url);
}

fn receipts(setup: &Setup) -> Vec<Value> {
    std::fs::read_to_string(setup.sandbox("demo").join("receipts.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a receipt line"))
        .collect()
}

#[tokio::test]
async fn a_call_held_on_replica_a_approved_through_replica_b_runs_on_a_with_its_receipt() {
    let Some(db) = TestDb::create("cluster_release").await else { return };
    let group = replicas(2, &db.url).await;
    let ((setup_a, a), (_, b)) = (&group[0], &group[1]);
    let carol = mcp_as(a, "carol").await;
    let args = json!({"user": "erin", "role": "admin"});
    let held = call_in_background(&carol, "demo__grant_role", args.clone());
    // Replica B sees the hold A opened, and decides it.
    let pending = approvals_for(b, "demo__grant_role", "pending").await;
    let id = pending[0]["id"].as_str().expect("id").to_owned();
    let (status, body) = decide(b, &id, "bob", "approve", Some("via replica B")).await;
    assert_eq!(status, 200, "{body}");
    let result = held.await.expect("join");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    // It ran on A (A's downstream got the call and its receipt), bound to that approval.
    let receipts = receipts(setup_a);
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0]["receipt"]["approval_id"], json!(id), "{receipts:?}");
    assert_eq!(receipts[0]["receipt"]["approvers"], json!(["bob"]));
    // Both replicas show it approved, and the table holds one row for it at a later version.
    let (_, on_a) = api(a, "GET", &format!("/api/v1/approvals/{id}"), Some("bob"), None).await;
    assert_eq!(on_a["state"], "approved", "{on_a}");
    let rows = db.query(&format!("SELECT state || ' ' || (version > 1)::text FROM approvals WHERE id = '{id}'")).await;
    assert_eq!(rows, vec!["approved true".to_owned()]);
    let votes = db.query(&format!("SELECT approver || ' ' || verdict FROM approval_votes WHERE approval_id = '{id}'")).await;
    assert_eq!(votes, vec!["bob approve".to_owned()]);
}

#[tokio::test]
async fn a_retry_on_replica_b_re_attaches_to_the_hold_a_opened_and_it_runs_once() {
    let Some(db) = TestDb::create("cluster_retry").await else { return };
    let group = replicas(2, &db.url).await;
    let ((setup_a, a), (setup_b, b)) = (&group[0], &group[1]);
    let args = json!({"user": "erin", "role": "admin"});
    let carol_a = mcp_as(a, "carol").await;
    let first = call_in_background(&carol_a, "demo__grant_role", args.clone());
    let opened = approvals_for(b, "demo__grant_role", "pending").await;
    let carol_b = mcp_as(b, "carol").await;
    let retry = call_in_background(&carol_b, "demo__grant_role", args.clone());
    // The retry waits on the same approval: still one pending, now held by B.
    let id = opened[0]["id"].as_str().expect("id").to_owned();
    let holder_sql = format!("SELECT holder FROM approvals WHERE id = '{id}'");
    let first_holder = db.query(&holder_sql).await;
    for _ in 0..600 {
        if db.query(&holder_sql).await != first_holder {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_ne!(db.query(&holder_sql).await, first_holder, "the retry on B did not take the hold over");
    assert_eq!(db.query("SELECT count(*)::text FROM approvals").await, vec!["1".to_owned()]);
    let (status, body) = decide(a, &id, "dave", "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let (first, retry) = (first.await.expect("join"), retry.await.expect("join"));
    // One approval authorises one execution: one of the two ran, the other was told so.
    let ran: Vec<&CallToolResult> = [&first, &retry].into_iter().filter(|r| r.is_error != Some(true)).collect();
    assert_eq!(ran.len(), 1, "first: {} / retry: {}", text_of(&first), text_of(&retry));
    let refused = if first.is_error == Some(true) { &first } else { &retry };
    assert!(text_of(refused).contains("already used"), "{}", text_of(refused));
    assert_eq!(receipts(setup_a).len() + receipts(setup_b).len(), 1);
}

#[tokio::test]
async fn sigkill_of_the_holding_replica_cancels_its_hold_once_its_lease_lapses() {
    let Some(db) = TestDb::create("cluster_lease").await else { return };
    let mut group = replicas(2, &db.url).await;
    let carol = mcp_as(&group[0].1, "carol").await;
    let _held = call_in_background(&carol, "demo__grant_role", json!({"user": "erin", "role": "admin"}));
    let pending = approvals_for(&group[1].1, "demo__grant_role", "pending").await;
    let id = pending[0]["id"].as_str().expect("id").to_owned();
    group[0].1.child.start_kill().expect("SIGKILL replica A");
    let _ = group[0].1.child.wait().await;
    let cancelled = approvals_for(&group[1].1, "demo__grant_role", "cancelled").await;
    assert_eq!(cancelled[0]["id"], json!(id));
    assert_eq!(cancelled[0]["settled_reason"], "the holding gateway stopped", "{}", cancelled[0]);
    // Deciding it now is refused: it is settled.
    let (status, body) = decide(&group[1].1, &id, "bob", "approve", None).await;
    assert_eq!(status, 409, "{body}");
    // Cancelled once: one approval_settled record in the shared log.
    let out = std::process::Command::new(airlock())
        .args(["log", "export", "--config"])
        .arg(group[1].0.config())
        .env(URL_ENV, &db.url)
        .output()
        .expect("run airlock log export");
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    let settled = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("jsonl"))
        .filter(|r| r["kind"] == "approval_settled" && r["approval_id"] == json!(id))
        .count();
    assert_eq!(settled, 1);
}

#[tokio::test]
async fn a_hold_survives_its_replica_when_the_client_retries_on_another() {
    let Some(db) = TestDb::create("cluster_survive").await else { return };
    let mut group = replicas(2, &db.url).await;
    let args = json!({"user": "erin", "role": "admin"});
    let carol_a = mcp_as(&group[0].1, "carol").await;
    let _lost = call_in_background(&carol_a, "demo__grant_role", args.clone());
    let pending = approvals_for(&group[1].1, "demo__grant_role", "pending").await;
    let id = pending[0]["id"].as_str().expect("id").to_owned();
    group[0].1.child.start_kill().expect("SIGKILL replica A");
    let _ = group[0].1.child.wait().await;
    // The client retries on B at once (within the lease): the same approval.
    let carol_b = mcp_as(&group[1].1, "carol").await;
    let retry = call_in_background(&carol_b, "demo__grant_role", args);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = decide(&group[1].1, &id, "bob", "approve", None).await;
    assert_eq!(status, 200, "{body}");
    let result = retry.await.expect("join");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
    assert_eq!(receipts(&group[1].0)[0]["receipt"]["approval_id"], json!(id));
}

/// A TCP forwarder between the replicas and the database that can be cut: "the database
/// is unreachable" for these replicas only, without stopping a server other tests use.
struct Cut {
    port: u16,
    up: Arc<AtomicBool>,
    epoch: tokio::sync::watch::Sender<u64>,
}

impl Cut {
    async fn start(target: std::net::SocketAddr) -> Cut {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = tokio::sync::watch::channel(0u64);
        let (flag, watch) = (up.clone(), epoch.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused as it opens
                }
                let mut cut = watch.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Cut { port, up, epoch }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            self.epoch.send_modify(|e| *e += 1);
        }
    }
}

#[tokio::test]
async fn while_the_database_is_unreachable_nothing_is_decided_and_then_everything_resumes() {
    let Some(db) = TestDb::create("cluster_fail_closed").await else { return };
    let mut url = url::Url::parse(&db.url).expect("url");
    let target = format!("{}:{}", url.host_str().expect("host"), url.port().unwrap_or(5432));
    let cut = Cut::start(tokio::net::lookup_host(target).await.expect("resolve").next().expect("an address")).await;
    url.set_port(Some(cut.port)).expect("port");
    let group = replicas(2, url.as_str()).await;
    let ((_, a), (_, b)) = (&group[0], &group[1]);
    let carol = mcp_as(a, "carol").await;
    let held = call_in_background(&carol, "demo__grant_role", json!({"user": "erin", "role": "admin"}));
    let pending = approvals_for(b, "demo__grant_role", "pending").await;
    let id = pending[0]["id"].as_str().expect("id").to_owned();

    cut.set(false);
    let (status, body) = decide(b, &id, "bob", "approve", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("approval store is unavailable"), "{body}");
    let out = tokio::process::Command::new(airlock())
        .args(["approvals", "approve", &id, "--url", &b.url])
        .env("AIRLOCK_TOKEN", token("bob"))
        .output()
        .await
        .expect("run airlock");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("approval store is unavailable"), "{}", String::from_utf8_lossy(&out.stderr));
    // A new hold is refused too, with a clear error, rather than waiting on nothing.
    let dave = mcp_as(a, "dave").await;
    let refused = dave.peer().call_tool(call("demo__grant_role", json!({"user": "x", "role": "y"}))).await;
    let error = refused.expect_err("a hold opened while the store is away").to_string();
    // With the log on the same database, recording the call is what fails first.
    assert!(error.contains("approval store is unavailable") || error.contains("audit log is unavailable"), "{error}");
    assert!(!held.is_finished(), "nothing was decided");

    cut.set(true);
    // The pool reconnects on its own: the same decision now counts, and the call runs on A.
    let mut decided = (0, Value::Null);
    for _ in 0..100 {
        decided = decide(b, &id, "bob", "approve", None).await;
        if decided.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(decided.0, 200, "{}", decided.1);
    let result = held.await.expect("join");
    assert_ne!(result.is_error, Some(true), "{}", text_of(&result));
}
