//! Start-up: `initialize` is answered before the downstreams are up, and what needs the
//! catalog (`tools/list`, `tools/call`) waits until every downstream's first connection
//! attempt has finished, so a client listing right after `initialize` sees every tool.

use serde_json::{Value, json};

use crate::util::{RAW_INIT as INIT, RAW_INITIALIZED as INITIALIZED, RawStdio as Raw, Setup, airlock};

/// Adds a demo downstream `name` that starts only once the file `gate` exists.
fn gated_demo(setup: &Setup, name: &str, gate: &std::path::Path) {
    let sandbox = setup.sandbox(name);
    std::fs::create_dir_all(&sandbox).expect("mkdir sandbox");
    let script = format!(
        "while [ ! -e '{gate}' ]; do sleep 0.02; done; exec '{bin}' demo-tools --sandbox '{sandbox}'",
        gate = gate.display(),
        bin = airlock(),
        sandbox = sandbox.display(),
    );
    setup.manifest(name, &format!("name = \"{name}\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n"));
}

fn tool_names(answer: &Value) -> Vec<String> {
    let tools = answer["result"]["tools"].as_array().unwrap_or_else(|| panic!("no tool list: {answer}"));
    let mut names: Vec<String> = tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    names
}

#[tokio::test]
async fn initialize_is_answered_before_the_downstreams_and_the_first_list_is_complete() {
    let setup = Setup::with_demo();
    let gate = setup.path().join("gate");
    gated_demo(&setup, "slow", &gate);
    let mut gateway = Raw::spawn(&setup);

    // The slow downstream cannot start before the gate opens, so this answer shows that
    // `initialize` does not wait for it.
    gateway.send(INIT).await;
    let init = gateway.answer(1).await;
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    gateway.send(INITIALIZED).await;

    // Asked while `slow` is still waiting at its gate; opened only afterwards: an answer
    // holding slow's tools was given after slow's first tool list arrived.
    gateway.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await;
    let call = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"slow__echo","arguments":{"text":"late"}}});
    gateway.send(&call.to_string()).await;
    std::fs::write(&gate, b"open").expect("open the gate");

    let names = tool_names(&gateway.answer(2).await);
    assert!(names.iter().any(|n| n == "demo__echo"), "the fast downstream's tools are listed: {names:?}");
    assert!(names.iter().any(|n| n == "slow__echo"), "the slow downstream's tools are listed too: {names:?}");
    let demo = names.iter().filter(|n| n.starts_with("demo__")).count();
    let slow = names.iter().filter(|n| n.starts_with("slow__")).count();
    assert_eq!(demo, slow, "both downstreams run demo-tools and list the same tools: {names:?}");

    let answer = gateway.answer(3).await;
    assert_eq!(answer["result"]["content"][0]["text"], "late", "a call sent before the catalog was complete runs: {answer}");
}

#[tokio::test]
async fn a_downstream_failing_its_first_attempt_does_not_hold_the_list() {
    let setup = Setup::with_demo();
    setup.manifest("broken", "name = \"broken\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\n");
    let mut gateway = Raw::spawn(&setup);
    gateway.send(INIT).await;
    gateway.answer(1).await;
    gateway.send(INITIALIZED).await;
    gateway.send(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#).await;
    let names = tool_names(&gateway.answer(2).await);
    assert!(names.iter().any(|n| n == "demo__echo"), "the working downstream is listed: {names:?}");
    assert!(!names.iter().any(|n| n.starts_with("broken__")), "{names:?}");
}
