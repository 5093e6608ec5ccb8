//! Cluster mode, rate limits: replicas of `airlock serve --http` sharing one PostgreSQL
//! database count every caller's calls in the same buckets (table `rate_limits`). The
//! burst is shared across replicas, the next call is refused `limited` on either, the
//! bucket refills, and a limit that cannot be counted refuses the call rather than let it
//! through unlimited. Every test needs `AIRLOCK_TEST_PG_URL` and says SKIPPED without it.

use std::time::{Duration, Instant};

use rmcp::model::CallToolResult;
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::limits::sha256_hex;
use crate::util::{ALLOW_ALL, HttpGateway, Setup, TestClient, TestDb, call, text_of};

const URL_ENV: &str = "AIRLOCK_TEST_DB_URL";
const TOKEN: &str = "token-for-the-agent-0123456789abcdef";
/// Three calls at once, then one every 10 s.
const LIMIT: &str = "[[limit]]\nid = \"shared-reads\"\ntools = [\"demo__read_*\"]\nrate = \"6/min\"\nburst = 3\n";

/// Starts `count` replicas on `url` with the agent's token, allow-all and `LIMIT`; the
/// first one's keys are given to the others.
async fn replicas(count: usize, url: &str) -> Vec<(Setup, HttpGateway)> {
    let mut all: Vec<(Setup, HttpGateway)> = Vec::new();
    for _ in 0..count {
        let setup = Setup::new(&format!(
            "[gateway]\ndata_dir = \"data\"\n[identity]\n[[identity.tokens]]\nname = \"agent\"\nsha256 = \"{}\"\n\
             [storage]\nbackend = \"postgres\"\nurl_env = \"{URL_ENV}\"\n",
            sha256_hex(TOKEN)
        ));
        setup.demo("demo");
        setup.policy("allow", ALLOW_ALL);
        setup.policy("limits", LIMIT);
        if let Some((first, _)) = all.first() {
            crate::util::share_log_keys(first, &setup);
        }
        let gateway = setup.http_with_env(&[(URL_ENV, url)]).await;
        all.push((setup, gateway));
    }
    all
}

async fn agent(gateway: &HttpGateway) -> RunningService<RoleClient, TestClient> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(TOKEN);
    TestClient::new().serve(StreamableHttpClientTransport::from_config(config)).await.expect("initialize over HTTP")
}

async fn read(client: &RunningService<RoleClient, TestClient>) -> CallToolResult {
    client.call_tool(call("demo__read_customer", json!({"id": "C-1001"}))).await.expect("call answers")
}

/// Every record of the shared log, as JSON.
async fn shared_log(db: &TestDb) -> Vec<Value> {
    db.query("SELECT convert_from(record, 'UTF8') FROM audit_records ORDER BY seq")
        .await
        .iter()
        .map(|r| serde_json::from_str(r).expect("a record is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_burst_is_shared_by_the_replicas_and_the_next_call_is_refused_on_either() {
    let Some(db) = TestDb::create("cluster_limits_shared").await else { return };
    let group = replicas(2, &db.url).await;
    let (a, b) = (agent(&group[0].1).await, agent(&group[1].1).await);
    // The burst of 3, spread over both replicas.
    for (n, client) in [&a, &b, &a].into_iter().enumerate() {
        let ok = read(client).await;
        assert_ne!(ok.is_error, Some(true), "call {} of the burst: {}", n + 1, text_of(&ok));
    }
    // The fourth is refused whichever replica it reaches, and so is a fifth on the other.
    for client in [&b, &a] {
        let refused = read(client).await;
        let text = text_of(&refused);
        assert_eq!(refused.is_error, Some(true), "a call past the shared burst ran: {text}");
        assert!(text.contains("rate limit \"shared-reads\" (6/min, burst 3) reached; retry after") && text.contains("not forwarded"), "{text}");
    }
    assert_eq!(db.query("SELECT count(*)::text FROM rate_limits").await, vec!["1".to_owned()], "one bucket for the caller");
    // The bucket refills (one call per 10 s): a later call runs again, on either replica
    // (bounded wait, not a timing check).
    let deadline = Instant::now() + Duration::from_secs(40);
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if read(&b).await.is_error != Some(true) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(recovered, "the shared limit never let a call through again");
    a.cancel().await.expect("close a");
    b.cancel().await.expect("close b");

    let records = shared_log(&db).await;
    let limited: Vec<&Value> = records.iter().filter(|r| r["kind"] == "decision" && r["decision"] == "limited").collect();
    assert!(limited.len() >= 2, "both refusals are `limited` decisions in the shared log: {limited:?}");
    for record in &limited {
        assert_eq!(record["rule"], "shared-reads", "{record}");
        assert!(
            !records.iter().any(|r| r["kind"] == "call_forwarded" && r["call_id"] == record["call_id"]),
            "a limited call was forwarded: {record}"
        );
    }
    let forwarded = records.iter().filter(|r| r["kind"] == "call_forwarded").count();
    assert!(forwarded >= 4, "the burst and the recovered call ran: {forwarded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_that_cannot_be_counted_refuses_the_call_rather_than_admit_it() {
    let Some(db) = TestDb::create("cluster_limits_away").await else { return };
    let group = replicas(1, &db.url).await;
    let gateway = &group[0].1;
    let client = agent(gateway).await;
    assert_ne!(read(&client).await.is_error, Some(true), "the first call runs");
    // The counters' table goes away while the log stays: the limit cannot be counted.
    db.query("ALTER TABLE rate_limits RENAME TO rate_limits_away").await;
    let refused = read(&client).await;
    let text = text_of(&refused);
    assert_eq!(refused.is_error, Some(true), "a call ran without its limit counted: {text}");
    assert!(text.contains("rate limit \"shared-reads\" could not be checked") && text.contains("not forwarded"), "{text}");
    // A tool no limit applies to still runs: nothing asks the counters for it.
    let other = client.call_tool(call("demo__search_logs", json!({"query": "error"}))).await.expect("call");
    assert_ne!(other.is_error, Some(true), "{}", text_of(&other));
    // Back again: the replica counts again without a restart.
    db.query("ALTER TABLE rate_limits_away RENAME TO rate_limits").await;
    let again = read(&client).await;
    assert_ne!(again.is_error, Some(true), "{}", text_of(&again));
    client.cancel().await.expect("close");
    let records = shared_log(&db).await;
    let uncounted: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "decision" && r["decision"] == "limited" && r["reason"].as_str().unwrap_or("").contains("could not be checked"))
        .collect();
    assert_eq!(uncounted.len(), 1, "the refusal is a `limited` decision naming why: {uncounted:?}");
    assert!(!records.iter().any(|r| r["kind"] == "call_forwarded" && r["call_id"] == uncounted[0]["call_id"]));
}
