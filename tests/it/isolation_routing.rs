//! A downstream's requests to the client (elicitation, sampling) and its log lines reach
//! only the session whose call caused them (issue 11, finding 1): two HTTP sessions with
//! different tokens share one downstream; a stdio downstream that asks while calls of both
//! are in flight is refused and the refusal logged; a streamable-HTTP downstream's
//! questions are routed by the stream they arrive on.

// Sampling and logging are deprecated by SEP-2577; the fixture still exercises them.
#![allow(deprecated)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationSchema, ErrorData,
    Implementation, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

use crate::util::{ALLOW_ALL, HttpGateway, Setup, Wire, call, eventually, export, text_of};

const PEOPLE: [&str; 2] = ["alice", "bob"];

fn token(name: &str) -> String {
    format!("token-of-{name}-0123456789abcdef")
}

/// A gateway config with a static token for each of [`PEOPLE`].
fn config() -> String {
    let mut config = String::from("[gateway]\ndata_dir = \"data\"\n");
    for name in PEOPLE {
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, token(name).as_bytes()));
        config.push_str(&format!("\n[[identity.tokens]]\nname = \"{name}\"\nsha256 = \"{digest}\"\n"));
    }
    config
}

/// A client that records every question it is asked and answers with its own name, but
/// only once `gate` opens (so its call stays in flight as long as a test needs).
#[derive(Clone)]
struct Person {
    name: &'static str,
    asked: Arc<Mutex<Vec<String>>>,
    asked_once: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
    wire: Wire,
}

impl Person {
    fn new(name: &'static str, open: bool) -> Self {
        let gate = Arc::new(tokio::sync::Semaphore::new(if open { tokio::sync::Semaphore::MAX_PERMITS } else { 0 }));
        Self { name, asked: Arc::default(), asked_once: Arc::default(), gate, wire: Arc::default() }
    }

    fn questions(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }

    /// Every `notifications/message` this client received.
    fn log_lines(&self) -> Vec<Value> {
        let wire = self.wire.lock().expect("lock");
        wire.iter().filter(|m| m["method"] == "notifications/message").cloned().collect()
    }

    async fn connect(&self, gateway: &HttpGateway) -> RunningService<RoleClient, Person> {
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", gateway.url)).auth_header(token(self.name));
        let transport = crate::util::Recorder::new(StreamableHttpClientTransport::from_config(config), self.wire.clone());
        self.clone().serve(transport).await.expect("initialize over HTTP")
    }
}

impl ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        let capabilities = ClientCapabilities::builder().enable_elicitation().enable_sampling().build();
        ClientConfig::new(capabilities, Implementation::new(self.name, "0"))
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let message = match &params {
            ElicitRequestParams::FormElicitationParams { message, .. } => message.clone(),
            other => format!("{other:?}"),
        };
        self.asked.lock().expect("lock").push(message);
        self.asked_once.notify_one();
        let _permit = self.gate.acquire().await.map_err(|_| ErrorData::internal_error("gate closed", None))?;
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({"confirm": true, "answer": self.name})))
    }

    async fn create_message(
        &self,
        _params: rmcp::model::CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<rmcp::model::CreateMessageResult, ErrorData> {
        Ok(rmcp::model::CreateMessageResult::new(
            rmcp::model::SamplingMessage::assistant_text(format!("sampled by {}", self.name)),
            "test-model".to_owned(),
        ))
    }
}

fn records_of(data_dir: &std::path::Path, kind: &str) -> Vec<Value> {
    export(data_dir).into_iter().filter(|r| r["kind"] == kind).collect()
}

#[tokio::test]
async fn a_stdio_downstreams_question_with_two_sessions_in_flight_reaches_neither_and_is_logged() {
    let setup = Setup::new(&config());
    setup.demo("demo");
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    let bob = Person::new("bob", false);
    let alice = Person::new("alice", true);
    let bob_client = bob.connect(&gateway).await;
    let alice_client = alice.connect(&gateway).await;

    // Bob's call is in flight on the shared stdio downstream: it has asked him, and he
    // has not answered yet.
    let bob_call = tokio::spawn({
        let peer = bob_client.peer().clone();
        async move { peer.call_tool(call("demo__rotate_credentials", json!({"service": "bobs-service"}))).await }
    });
    tokio::time::timeout(Duration::from_secs(60), bob.asked_once.notified()).await.expect("bob was asked his own question");

    // Alice's tool now asks its question. Nothing links it to her call over stdio, and
    // Bob's call is in flight too: it must reach neither of them.
    let refused = alice_client.call_tool(call("demo__rotate_credentials", json!({"service": "alices-service"}))).await.expect("call");
    let text = text_of(&refused);
    assert_eq!(refused.is_error, Some(true), "{text}");
    assert!(text.contains("confirmation failed") && text.contains("several client sessions"), "{text}");
    assert!(alice.questions().is_empty(), "alice was asked: {:?}", alice.questions());
    let bobs = bob.questions();
    assert_eq!(bobs.len(), 1, "bob saw only his own question: {bobs:?}");
    assert!(bobs[0].contains("bobs-service"), "{bobs:?}");

    // Bob answers his own question; his call finishes with his answer.
    bob.gate.add_permits(1);
    let finished = bob_call.await.expect("join").expect("bob's call");
    assert!(text_of(&finished).contains("rotated"), "{}", text_of(&finished));

    // Alone on the server, Alice's question is relayed to her as before.
    let relayed = alice_client.call_tool(call("demo__rotate_credentials", json!({"service": "alices-service"}))).await.expect("call");
    assert!(text_of(&relayed).contains("rotated"), "{}", text_of(&relayed));
    assert_eq!(alice.questions().len(), 1);
    assert_eq!(bob.questions().len(), 1, "bob never saw alice's question");

    bob_client.cancel().await.expect("close");
    alice_client.cancel().await.expect("close");
    drop(gateway);
    let refusals = records_of(&setup.data_dir(), "upstream_request_refused");
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let detail = &refusals[0]["detail"];
    assert_eq!(detail["server"], "demo");
    assert_eq!(detail["method"], "elicitation/create");
    assert_eq!(detail["sessions"].as_array().map(Vec::len), Some(2), "{detail}");
    let record = refusals[0].to_string();
    assert!(!record.contains("alices-service") && !record.contains("Rotate"), "no request content in the log: {record}");
}

/// A streamable-HTTP downstream written for this test: `ask` waits until `parties` calls
/// are in flight, then asks its caller a question naming its `label`, and returns the
/// answer; `log` sends a log line, then waits the same way; `sample` asks for sampling.
#[derive(Clone)]
struct Fixture {
    barrier: Arc<tokio::sync::Barrier>,
}

fn fixture_tool(name: &'static str) -> Tool {
    let schema = json!({"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]});
    let Value::Object(schema) = schema else { unreachable!("an object literal") };
    Tool::new(name, format!("fixture {name}"), Arc::new(schema))
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_logging().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![fixture_tool("ask"), fixture_tool("log"), fixture_tool("sample")]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let label = request.arguments.as_ref().and_then(|a| a.get("label")).and_then(Value::as_str).unwrap_or("").to_owned();
        let text = match request.name.as_ref() {
            "ask" => {
                self.barrier.wait().await;
                let schema = ElicitationSchema::builder().required_bool("confirm").build().map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                let params = ElicitRequestParams::FormElicitationParams { meta: None, message: format!("question for {label}"), requested_schema: schema };
                match context.peer.create_elicitation(params).await {
                    Ok(answer) => format!("{label} answered by {}", answer.content.map(|c| c["answer"].clone()).unwrap_or_default()),
                    Err(error) => format!("{label}: elicitation failed: {error}"),
                }
            }
            "log" => {
                let line = LoggingMessageNotificationParam::new(LoggingLevel::Info, json!(format!("log line of {label}")));
                let _ = context.peer.notify_logging_message(line).await;
                self.barrier.wait().await;
                format!("{label} logged")
            }
            _ => {
                let params = rmcp::model::CreateMessageRequestParams::new(
                    vec![rmcp::model::SamplingMessage::user_text(format!("sample for {label}"))],
                    16,
                );
                match context.peer.create_message(params).await {
                    Ok(result) => format!("{label}: {}", serde_json::to_value(&result.message).unwrap_or_default()),
                    Err(error) => format!("{label}: sampling failed: {error}"),
                }
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// Serves [`Fixture`] over streamable HTTP on a free port; returns its `/mcp` URL.
async fn serve_fixture(parties: usize) -> String {
    crate::util::serve_http(Fixture { barrier: Arc::new(tokio::sync::Barrier::new(parties)) }).await
}

async fn fixture_gateway(parties: usize) -> (Setup, HttpGateway) {
    let url = serve_fixture(parties).await;
    let setup = Setup::new(&config());
    setup.manifest("fix", &format!("name = \"fix\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    (setup, gateway)
}

#[tokio::test]
async fn a_streamable_http_downstreams_questions_follow_their_own_calls_across_sessions() {
    let (setup, gateway) = fixture_gateway(2).await;
    let alice = Person::new("alice", true);
    let bob = Person::new("bob", true);
    let alice_client = alice.connect(&gateway).await;
    let bob_client = bob.connect(&gateway).await;

    // Both calls are in flight when the downstream asks (its barrier holds each until the
    // other has arrived); each question arrives on the stream of the POST that caused it.
    for round in 0..3 {
        let (a, b) = tokio::join!(
            alice_client.call_tool(call("fix__ask", json!({"label": format!("alice-{round}")}))),
            bob_client.call_tool(call("fix__ask", json!({"label": format!("bob-{round}")}))),
        );
        assert_eq!(text_of(&a.expect("alice's call")), format!("alice-{round} answered by \"alice\""));
        assert_eq!(text_of(&b.expect("bob's call")), format!("bob-{round} answered by \"bob\""));
    }
    assert!(alice.questions().iter().all(|q| q.starts_with("question for alice")), "{:?}", alice.questions());
    assert!(bob.questions().iter().all(|q| q.starts_with("question for bob")), "{:?}", bob.questions());
    assert_eq!((alice.questions().len(), bob.questions().len()), (3, 3));

    alice_client.cancel().await.expect("close");
    bob_client.cancel().await.expect("close");
    drop(gateway);
    assert!(records_of(&setup.data_dir(), "upstream_request_refused").is_empty());
}

#[tokio::test]
async fn log_lines_go_to_the_one_session_in_flight_and_otherwise_to_nobody() {
    let (_setup, gateway) = fixture_gateway(1).await;
    let alice = Person::new("alice", true);
    let alice_client = alice.connect(&gateway).await;
    let bob = Person::new("bob", false);
    let bob_client = bob.connect(&gateway).await;

    // Alone: the log line and sampling reach the caller, as before.
    let logged = alice_client.call_tool(call("fix__log", json!({"label": "alone"}))).await.expect("call");
    assert_eq!(text_of(&logged), "alone logged");
    assert!(eventually(Duration::from_secs(10), || alice.log_lines().len() == 1).await, "{:?}", alice.log_lines());
    let sampled = alice_client.call_tool(call("fix__sample", json!({"label": "alone"}))).await.expect("call");
    assert!(text_of(&sampled).contains("sampled by alice"), "{}", text_of(&sampled));

    // Bob's call is in flight (the downstream asked him and he has not answered):
    // Alice's next log line has no single owner, so nobody gets it.
    let bob_call = tokio::spawn({
        let peer = bob_client.peer().clone();
        async move { peer.call_tool(call("fix__ask", json!({"label": "bob"}))).await }
    });
    tokio::time::timeout(Duration::from_secs(60), bob.asked_once.notified()).await.expect("bob was asked");
    let logged = alice_client.call_tool(call("fix__log", json!({"label": "crowded"}))).await.expect("call");
    assert_eq!(text_of(&logged), "crowded logged");
    let sampled = alice_client.call_tool(call("fix__sample", json!({"label": "crowded"}))).await.expect("call");
    assert!(text_of(&sampled).contains("sampled by alice"), "sampling is associated by its stream: {}", text_of(&sampled));
    bob.gate.add_permits(1);
    let finished = bob_call.await.expect("join").expect("bob's call");
    assert_eq!(text_of(&finished), "bob answered by \"bob\"");

    assert_eq!(alice.log_lines().len(), 1, "the crowded line was dropped: {:?}", alice.log_lines());
    assert!(bob.log_lines().is_empty(), "bob got alice's log line: {:?}", bob.log_lines());
    alice_client.cancel().await.expect("close");
    bob_client.cancel().await.expect("close");
}

/// The `airlock demo-tools` processes that are children of `parent` now.
fn demo_children(parent: u32) -> std::collections::BTreeSet<u32> {
    let mut pids = std::collections::BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { return pids };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z'));
            if !zombie && String::from_utf8_lossy(&cmdline).contains("demo-tools") {
                pids.insert(pid);
            }
        }
    }
    pids
}

#[tokio::test]
async fn scope_session_gives_each_session_its_own_child_which_ends_with_the_session() {
    let setup = Setup::new(&config());
    let sandbox = setup.sandbox("demo");
    setup.manifest(
        "demo",
        &format!(
            "name = \"demo\"\ncommand = {bin:?}\nargs = [\"demo-tools\", \"--sandbox\", {sandbox:?}]\nscope = \"session\"\n",
            bin = crate::util::airlock(),
            sandbox = sandbox.display().to_string(),
        ),
    );
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    let gateway_pid = gateway.child.id().expect("pid");
    let settle = Duration::from_secs(30);
    // The shared template child serves the catalog only.
    assert!(eventually(settle, || demo_children(gateway_pid).len() == 1).await, "{:?}", demo_children(gateway_pid));
    let template = demo_children(gateway_pid);

    let alice = Person::new("alice", true);
    let bob = Person::new("bob", true);
    let alice_client = alice.connect(&gateway).await;
    let bob_client = bob.connect(&gateway).await;
    let echoed = alice_client.call_tool(call("demo__echo", json!({"text": "a"}))).await.expect("call");
    assert_eq!(text_of(&echoed), "a");
    let with_alice = demo_children(gateway_pid);
    assert_eq!(with_alice.len(), 2, "alice's first call started her child: {with_alice:?}");
    let alices: Vec<u32> = with_alice.difference(&template).copied().collect();
    let echoed = bob_client.call_tool(call("demo__echo", json!({"text": "b"}))).await.expect("call");
    assert_eq!(text_of(&echoed), "b");
    let with_both = demo_children(gateway_pid);
    assert_eq!(with_both.len(), 3, "bob got a child of his own: {with_both:?}");
    let bobs: Vec<u32> = with_both.difference(&with_alice).copied().collect();
    assert_ne!(alices, bobs);

    // Alice's calls go to her child: crashing it takes neither bob's nor the template.
    let crashed = alice_client.call_tool(call("demo__crash", json!({}))).await.expect("a tool result");
    assert_eq!(crashed.is_error, Some(true));
    let expected: std::collections::BTreeSet<u32> = template.iter().chain(&bobs).copied().collect();
    assert!(eventually(settle, || demo_children(gateway_pid) == expected).await, "{:?} vs {expected:?}", demo_children(gateway_pid));
    let echoed = bob_client.call_tool(call("demo__echo", json!({"text": "still b"}))).await.expect("call");
    assert_eq!(text_of(&echoed), "still b");
    // Her next call starts her a new one.
    let echoed = alice_client.call_tool(call("demo__echo", json!({"text": "a again"}))).await.expect("call");
    assert_eq!(text_of(&echoed), "a again");
    assert_eq!(demo_children(gateway_pid).len(), 3);

    // Bob's session ends (DELETE): his child goes with it.
    bob_client.cancel().await.expect("close");
    let gone = eventually(settle, || {
        let now = demo_children(gateway_pid);
        now.len() == 2 && !now.contains(&bobs[0]) && template.is_subset(&now)
    })
    .await;
    assert!(gone, "bob's child outlived his session: {:?}", demo_children(gateway_pid));
    alice_client.cancel().await.expect("close");
}

#[test]
fn check_names_a_bad_scope_with_file_and_line() {
    let setup = Setup::new("[gateway]\ndata_dir = \"data\"\n");
    setup.manifest("x", "name = \"x\"\ncommand = \"true\"\nscope = \"per-session\"\n");
    let out = std::process::Command::new(crate::util::airlock())
        .args(["check", "--config"])
        .arg(setup.config())
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("x.toml:3") && said.contains("scope"), "{said}");
}

#[tokio::test]
async fn a_session_child_whose_tool_differs_from_the_catalog_is_not_called() {
    let setup = Setup::new(&config());
    let sandbox = setup.sandbox("demo");
    setup.manifest(
        "demo",
        &format!(
            "name = \"demo\"\ncommand = {bin:?}\nargs = [\"demo-tools\", \"--sandbox\", {sandbox:?}]\nscope = \"session\"\n",
            bin = crate::util::airlock(),
            sandbox = sandbox.display().to_string(),
        ),
    );
    setup.policy("allow-all", ALLOW_ALL);
    let gateway = setup.http().await;
    let alice = Person::new("alice", true);
    let bob = Person::new("bob", true);
    let alice_client = alice.connect(&gateway).await;
    let bob_client = bob.connect(&gateway).await;

    // Alice's own child changes its `echo`; the catalog (from the template) does not.
    let changed = alice_client
        .call_tool(call("demo__set_description", json!({"tool": "echo", "description": "Echo, now different"})))
        .await
        .expect("call");
    assert_ne!(changed.is_error, Some(true), "{}", text_of(&changed));
    let mut refused = None;
    for _ in 0..200 {
        let result = alice_client.call_tool(call("demo__echo", json!({"text": "a"}))).await.expect("call");
        if result.is_error == Some(true) {
            refused = Some(text_of(&result));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("alice's changed echo was still called");
    assert!(refused.contains("different definition") && refused.contains("not forwarded"), "{refused}");
    // Bob's child is untouched and serves him.
    let echoed = bob_client.call_tool(call("demo__echo", json!({"text": "b"}))).await.expect("call");
    assert_eq!(text_of(&echoed), "b");
    alice_client.cancel().await.expect("close");
    bob_client.cancel().await.expect("close");
}

#[tokio::test]
async fn questions_relayed_over_stdio_while_two_sessions_wait_are_refused_for_both() {
    // The fixture holds both calls until both are in flight, then asks. An inner Airlock
    // fronts it and relays the questions over its stdio to the outer Airlock, where
    // nothing links a question to a call: both are refused, neither person is asked.
    let url = serve_fixture(2).await;
    let inner = Setup::new("[gateway]\ndata_dir = \"data\"\nprefix_tools = false\n");
    inner.manifest("fix", &format!("name = \"fix\"\nurl = \"{url}\"\ndefault_risk = \"low\"\n"));
    inner.policy("allow-all", ALLOW_ALL);
    let outer = Setup::new(&config());
    outer.manifest(
        "fix",
        &format!(
            "name = \"fix\"\ncommand = {bin:?}\nargs = [\"serve\", \"--config\", {cfg:?}]\ndefault_risk = \"low\"\n",
            bin = crate::util::airlock(),
            cfg = inner.config().display().to_string(),
        ),
    );
    outer.policy("allow-all", ALLOW_ALL);
    let gateway = outer.http().await;
    let alice = Person::new("alice", true);
    let bob = Person::new("bob", true);
    let alice_client = alice.connect(&gateway).await;
    let bob_client = bob.connect(&gateway).await;
    let (a, b) = tokio::join!(
        alice_client.call_tool(call("fix__ask", json!({"label": "alice"}))),
        bob_client.call_tool(call("fix__ask", json!({"label": "bob"}))),
    );
    let (a, b) = (text_of(&a.expect("alice's call")), text_of(&b.expect("bob's call")));
    assert!(a.starts_with("alice: elicitation failed"), "{a}");
    assert!(b.starts_with("bob: elicitation failed"), "{b}");
    assert!(alice.questions().is_empty() && bob.questions().is_empty(), "{:?} {:?}", alice.questions(), bob.questions());
    alice_client.cancel().await.expect("close");
    bob_client.cancel().await.expect("close");
    drop(gateway);
    let refusals = records_of(&outer.data_dir(), "upstream_request_refused");
    assert_eq!(refusals.len(), 2, "{refusals:?}");
}
