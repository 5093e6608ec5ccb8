//! Durability through the real gateway: SIGKILL under concurrent load, several times,
//! and every call whose result a client received is in a log that still verifies.

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};

use crate::util::{ALLOW_ALL, Setup, TestClient, airlock};

const ROUNDS: usize = 4;
const CALLERS: usize = 8;

/// A small xorshift, seeded from the clock and printed, so a failing run can be replayed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_acknowledged_call() {
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
    eprintln!("seed {seed}");
    let setup = Setup::with_demo();
    setup.policy("allow-all", ALLOW_ALL);
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..ROUNDS {
        let mut gateway = setup.http().await;
        let mut callers = Vec::new();
        for caller in 0..CALLERS {
            let client = gateway.client(TestClient::new()).await;
            let acknowledged = acknowledged.clone();
            callers.push(tokio::spawn(async move {
                for i in 0.. {
                    let text = format!("r{round}-c{caller}-{i}");
                    let Value::Object(args) = json!({"text": text}) else { unreachable!() };
                    match client.call_tool(CallToolRequestParams::new("demo__echo").with_arguments(args)).await {
                        Ok(result) if result.is_error != Some(true) => acknowledged.lock().expect("lock").push(text),
                        _ => break,
                    }
                }
            }));
        }
        let delay = 150 + next(&mut seed) % 700;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        gateway.child.kill().await.expect("SIGKILL the gateway");
        // Whatever a caller was told before the kill is already in `acknowledged`; calls
        // in flight at the kill were never acknowledged, so the callers can just stop.
        for caller in &callers {
            caller.abort();
        }
        for caller in callers {
            let _ = caller.await;
        }
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > ROUNDS, "the load produced too few calls to mean anything: {}", acknowledged.len());

    let verify = Command::new(airlock()).args(["log", "verify", "--data-dir"]).arg(setup.data_dir()).output().expect("run");
    assert!(
        verify.status.success(),
        "log verify failed after SIGKILLs: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let export = Command::new(airlock()).args(["log", "export", "--data-dir"]).arg(setup.data_dir()).output().expect("run");
    assert!(export.status.success());
    let records: Vec<Value> = String::from_utf8_lossy(&export.stdout).lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect();
    assert_eq!(records.iter().filter(|r| r["kind"] == "gateway_started").count(), ROUNDS, "one start per round");
    let completed: HashSet<&Value> = records.iter().filter(|r| r["kind"] == "call_completed").map(|r| &r["call_id"]).collect();
    let mut missing = Vec::new();
    for text in &acknowledged {
        let received = records.iter().find(|r| r["kind"] == "call_received" && r["args"]["text"] == text.as_str());
        match received {
            Some(r) if completed.contains(&r["call_id"]) => {}
            _ => missing.push(text.clone()),
        }
    }
    assert!(missing.is_empty(), "{} acknowledged calls have no call_completed record: {missing:?}", missing.len());
    eprintln!("{} acknowledged calls over {ROUNDS} SIGKILLs, all recorded", acknowledged.len());
}
