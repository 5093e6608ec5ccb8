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

/// A SIGKILL while a forwarded call runs, that is between the call's two groups: its
/// `call_received`, `decision` and `call_forwarded` are durable but their checkpoint is
/// deferred to the call's `call_completed`. The log verifies as the kill left it (the
/// unsigned records named in a warning, not vouched for), and the next start signs them:
/// then they verify without a warning and an export (which holds only signed records)
/// carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_a_forwarded_call_runs_leaves_its_records_signed_after_the_restart() {
    let setup = Setup::with_demo();
    setup.policy("allow-all", ALLOW_ALL);
    // Nothing else is written meanwhile, so without this the records would be signed by
    // the deadline 5 ms after they were: an hour holds the window open for the kill.
    let mut gateway = setup.http_with_env(&[(airlock::audit::SIGN_WITHIN_ENV, "3600000")]).await;
    let client = gateway.client(TestClient::new()).await;
    let running = tokio::spawn(async move { client.call_tool(crate::util::call("demo__sleep", json!({"ms": 60_000}))).await });
    // The journal is the durability point: the call is forwarded once its records are in it.
    let journal = setup.data_dir().join("audit.journal");
    let forwarded = crate::util::eventually(Duration::from_secs(30), || {
        std::fs::read(&journal).is_ok_and(|bytes| {
            let needle = br#""kind":"call_forwarded""#;
            bytes.windows(needle.len()).any(|w| w == needle)
        })
    })
    .await;
    assert!(forwarded, "the sleep call was never forwarded");
    gateway.child.kill().await.expect("SIGKILL the gateway");
    running.abort();
    let _ = running.await;

    let verify = || Command::new(airlock()).args(["log", "verify", "--data-dir"]).arg(setup.data_dir()).output().expect("run");
    let killed = verify();
    let said = format!("{}{}", String::from_utf8_lossy(&killed.stdout), String::from_utf8_lossy(&killed.stderr));
    assert!(killed.status.success(), "log verify failed after the SIGKILL: {said}");
    assert!(said.contains("not signed yet"), "the unsigned records are not named: {said}");
    let sleeps = |records: &[Value]| -> Vec<String> {
        let ids: HashSet<&Value> = records.iter().filter(|r| r["kind"] == "call_received" && r["tool"] == "demo__sleep").map(|r| &r["call_id"]).collect();
        records.iter().filter(|r| ids.contains(&r["call_id"])).map(|r| r["kind"].as_str().unwrap_or("").to_owned()).collect()
    };
    assert!(sleeps(&crate::util::export(&setup.data_dir())).is_empty(), "an export carried records no checkpoint covers");

    // The next start signs them before it serves anything.
    let mut restarted = setup.http().await;
    restarted.child.kill().await.expect("SIGKILL the restarted gateway");
    let after = verify();
    let said = format!("{}{}", String::from_utf8_lossy(&after.stdout), String::from_utf8_lossy(&after.stderr));
    assert!(after.status.success() && !said.contains("not signed yet"), "after the restart: {said}");
    assert_eq!(sleeps(&crate::util::export(&setup.data_dir())), ["call_received", "decision", "call_forwarded"], "the forwarded call's records, signed");
}
