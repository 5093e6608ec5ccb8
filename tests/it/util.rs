//! Shared helpers: a temporary Airlock setup in front of `airlock demo-tools`, clients
//! over stdio and HTTP, and a wire recorder that sees messages in the order they arrive.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ErrorData, Implementation,
};
use rmcp::service::{NotificationContext, RequestContext, RunningService, RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::{IntoTransport, TokioChildProcess, Transport};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;

/// The airlock binary under test.
pub fn airlock() -> &'static str {
    env!("CARGO_BIN_EXE_airlock")
}

/// A temporary directory with `airlock.toml`, `tool-manifests/` and sandboxes.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Drop for Setup {
    /// A gateway that `airlock serve` started in the background for this setup stops with
    /// it (it would otherwise wait out `idle_exit` on a deleted data dir).
    fn drop(&mut self) {
        stop_gateway(&self.data_dir());
    }
}

/// Stops the gateway of `data_dir`, if one runs, and waits until it has exited.
pub fn stop_gateway(data_dir: &Path) {
    if data_dir.join("airlock.sock").exists() {
        let out = Command::new(airlock()).args(["gateway", "stop", "--data-dir"]).arg(data_dir).output().expect("run airlock gateway stop");
        if !out.status.success() {
            eprintln!("airlock gateway stop: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Setup {
    /// An empty setup; add downstreams with [`Setup::demo`] / [`Setup::manifest`].
    pub fn new(config: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tool-manifests")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("policies")).expect("mkdir");
        std::fs::write(dir.path().join("airlock.toml"), config).expect("write config");
        Self { dir }
    }

    /// One `airlock demo-tools` downstream named `demo`, with a policy that allows
    /// everything (these tests are about forwarding; enforcement has its own).
    pub fn with_demo() -> Self {
        let setup = Self::enforcing();
        setup.policy("allow-all", ALLOW_ALL);
        setup
    }

    /// One `airlock demo-tools` downstream named `demo`, and no policy files: the
    /// defaults per risk apply.
    pub fn enforcing() -> Self {
        let setup = Self::new("[gateway]\ndata_dir = \"data\"\n");
        setup.demo("demo");
        setup
    }

    /// The data directory (`data_dir = "data"` in the configs these helpers write).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Adds an `airlock demo-tools` downstream called `name` with its own sandbox.
    pub fn demo(&self, name: &str) -> PathBuf {
        let sandbox = self.sandbox(name);
        self.manifest(
            name,
            &format!(
                "name = \"{name}\"\ncommand = {bin:?}\nargs = [\"demo-tools\", \"--sandbox\", {sandbox:?}]\n",
                bin = airlock(),
                sandbox = sandbox.display().to_string(),
            ),
        );
        sandbox
    }

    /// Writes `tool-manifests/<name>.toml`.
    pub fn manifest(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("tool-manifests").join(format!("{name}.toml")), text).expect("write manifest");
    }

    /// Writes `policies/<name>.toml`.
    pub fn policy(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join("policies").join(format!("{name}.toml")), text).expect("write policy");
    }

    /// The sandbox folder of demo downstream `name`.
    pub fn sandbox(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("sandbox-{name}"))
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("airlock.toml")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `airlock serve --config …` over stdio, with `client` as the MCP client.
    pub async fn stdio(&self, client: TestClient) -> RunningService<RoleClient, TestClient> {
        let mut cmd = tokio::process::Command::new(airlock());
        cmd.arg("serve").arg("--config").arg(self.config()).env("AIRLOCK_LOG", "warn");
        let (child, _) = TokioChildProcess::builder(cmd).stderr(Stdio::inherit()).spawn().expect("spawn airlock");
        let transport = Recorder::new(IntoTransport::<RoleClient, _, _>::into_transport(child), client.wire.clone());
        client.serve(transport).await.expect("initialize through airlock")
    }

    /// `airlock serve --http 127.0.0.1:0`; returns the process and its base URL.
    pub async fn http(&self) -> HttpGateway {
        self.http_with_env(&[]).await
    }

    /// [`Setup::http`] with extra environment variables (secrets named in the config).
    pub async fn http_with_env(&self, env: &[(&str, &str)]) -> HttpGateway {
        let mut child = tokio::process::Command::new(airlock())
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--config")
            .arg(self.config())
            .arg("--http")
            .arg("127.0.0.1:0")
            .env("AIRLOCK_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn airlock");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read stderr") {
                eprintln!("[airlock] {line}");
                if let Some(url) = line.strip_prefix("airlock: listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("airlock exited before listening");
        })
        .await
        .expect("airlock did not start listening within 60 s");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[airlock] {line}");
                kept.lock().expect("stderr lines").push(line);
            }
        });
        HttpGateway { child, url, stderr }
    }
}

/// A policy that allows every call.
pub const ALLOW_ALL: &str = "[[rule]]\nid = \"allow-all\"\neffect = \"allow\"\nreason = \"tests of forwarding\"\n";

/// A running `airlock serve --http`.
pub struct HttpGateway {
    pub child: tokio::process::Child,
    pub url: String,
    /// The gateway's stderr lines after "listening" (its log).
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl HttpGateway {
    /// An rmcp client over streamable HTTP at `/mcp`.
    pub async fn client(&self, client: TestClient) -> RunningService<RoleClient, TestClient> {
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(format!("{}/mcp", self.url));
        let transport = Recorder::new(transport, client.wire.clone());
        client.serve(transport).await.expect("initialize over HTTP")
    }
}

/// How the test client answers elicitation requests.
#[derive(Clone, Copy, Debug)]
pub enum ElicitAnswer {
    Accept,
    Decline,
    /// The client does not declare elicitation at all.
    Unsupported,
}

/// Every message the client received, in wire order, as JSON.
pub type Wire = Arc<Mutex<Vec<serde_json::Value>>>;

/// A scripted MCP client.
#[derive(Clone)]
pub struct TestClient {
    pub wire: Wire,
    pub elicit: ElicitAnswer,
    pub elicitations: Arc<Mutex<Vec<ElicitRequestParams>>>,
    pub list_changed: Arc<tokio::sync::Notify>,
}

impl TestClient {
    pub fn new() -> Self {
        Self::answering(ElicitAnswer::Accept)
    }

    pub fn answering(elicit: ElicitAnswer) -> Self {
        Self {
            wire: Arc::default(),
            elicit,
            elicitations: Arc::default(),
            list_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// The wire log so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.wire.lock().expect("wire lock").clone()
    }
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let capabilities = match self.elicit {
            ElicitAnswer::Unsupported => ClientCapabilities::default(),
            _ => ClientCapabilities::builder().enable_elicitation().build(),
        };
        ClientConfig::new(capabilities, Implementation::new("airlock-tests", "0"))
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.elicitations.lock().expect("lock").push(params);
        Ok(match self.elicit {
            ElicitAnswer::Accept => {
                // `confirm` answers the demo tools' own question, `approve` Airlock's.
                ElicitResult::new(ElicitationAction::Accept).with_content(serde_json::json!({"confirm": true, "approve": true}))
            }
            _ => ElicitResult::new(ElicitationAction::Decline),
        })
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.list_changed.notify_one();
    }
}

/// Records every incoming message before rmcp dispatches it (rmcp handles notifications
/// on spawned tasks, so handler order is not wire order).
pub struct Recorder<T> {
    inner: T,
    wire: Wire,
}

impl<T> Recorder<T> {
    pub fn new(inner: T, wire: Wire) -> Self {
        Self { inner, wire }
    }
}

impl<T: Transport<RoleClient>> Transport<RoleClient> for Recorder<T> {
    type Error = T::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        let message = self.inner.receive().await?;
        if let Ok(value) = serde_json::to_value(&message) {
            self.wire.lock().expect("wire lock").push(value);
        }
        Some(message)
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        self.inner.close()
    }
}

/// Waits for `check` to hold, polling, up to `limit` (a correctness wait, not a timing
/// assertion: the limit is only there so a broken build fails instead of hanging).
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, mut check: F) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// A `tools/call` request for `name` with a JSON object of arguments.
pub fn call(name: &str, args: serde_json::Value) -> rmcp::model::CallToolRequestParams {
    let serde_json::Value::Object(args) = args else { panic!("arguments must be an object") };
    rmcp::model::CallToolRequestParams::new(name.to_owned()).with_arguments(args)
}

/// The text content of a result, joined by newlines.
pub fn text_of(result: &rmcp::model::CallToolResult) -> String {
    result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect::<Vec<_>>().join("\n")
}

/// Runs `airlock log …` against a stopped gateway, retrying while the database is still
/// locked by the exiting process.
pub fn airlock_log(data_dir: &Path, args: &[&str]) -> std::process::Output {
    stop_gateway(data_dir);
    for _ in 0..100 {
        let out = Command::new(airlock()).arg("log").args(args).arg("--data-dir").arg(data_dir).output().expect("run airlock log");
        if !String::from_utf8_lossy(&out.stderr).contains("locked") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the audit database stayed locked");
}

/// Every record of a stopped gateway's log, as JSON.
pub fn export(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = airlock_log(data_dir, &["export"]);
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("jsonl")).collect()
}


/// A temporary directory holding a copy of the shipped `airlock.toml`, `tool-manifests/`
/// and `policies/`, as a newcomer would have them.
pub fn shipped_copy() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(root.join("airlock.toml"), dir.path().join("airlock.toml")).expect("copy config");
    for sub in ["tool-manifests", "policies"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(root.join(sub)).expect("read dir") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    dir
}

/// The next line a raw stdio gateway wrote, as JSON (every stdout line must be JSON-RPC).
pub async fn next_json(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("an answer within 120 s")
        .expect("read")
        .expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout carried a non-JSON line {line:?}: {e}"))
}

/// Serves an in-test rmcp server over streamable HTTP on a free port; returns its `/mcp` URL.
pub async fn serve_http<S>(server: S) -> String
where
    S: rmcp::ServerHandler + Clone + Send + Sync + 'static,
{
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager};
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/mcp")
}

/// Gives replica `to` the log and argument keys of replica `from` (replicas share one log).
pub fn share_log_keys(from: &Setup, to: &Setup) {
    std::fs::create_dir_all(to.data_dir()).expect("data dir");
    for key in ["audit-key", "args-key"] {
        std::fs::copy(from.data_dir().join(key), to.data_dir().join(key)).expect("copy a key");
    }
}

/// A finished command's stdout, as text.
pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A 2025-11-25 `initialize` request (id 1) for tests that speak raw JSON-RPC lines.
pub const RAW_INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
pub const RAW_INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// `airlock serve` spoken to in raw lines, for what a typed client cannot send
/// (malformed JSON-RPC, oversized lines, requests before the catalog is ready).
pub struct RawStdio {
    pub child: tokio::process::Child,
    pub stdin: tokio::process::ChildStdin,
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RawStdio {
    pub fn spawn(setup: &Setup) -> Self {
        Self::spawn_with(setup, &[])
    }

    /// `spawn` with extra environment variables.
    pub fn spawn_with(setup: &Setup, env: &[(&str, &str)]) -> Self {
        let mut child = tokio::process::Command::new(airlock())
            .args(["serve", "--config"])
            .arg(setup.config())
            .env("AIRLOCK_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn airlock");
        let stdin = child.stdin.take().expect("stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self { child, stdin, lines }
    }

    /// Sends `RAW_INIT`, waits for its answer, and sends `notifications/initialized`.
    pub async fn initialize(&mut self) -> serde_json::Value {
        self.send(RAW_INIT).await;
        let init = self.answer(1).await;
        self.send(RAW_INITIALIZED).await;
        init
    }

    /// Writes one line (the newline is added).
    pub async fn send(&mut self, message: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{message}\n").as_bytes()).await.expect("write to airlock");
    }

    /// The next line the gateway writes, as JSON.
    pub async fn next(&mut self) -> serde_json::Value {
        next_json(&mut self.lines).await
    }

    /// The answer to request `id` (notifications in between are skipped).
    pub async fn answer(&mut self, id: u64) -> serde_json::Value {
        loop {
            let message = self.next().await;
            if message["id"] == id {
                return message;
            }
        }
    }
}

/// A fresh database of its own on the test PostgreSQL server (`AIRLOCK_TEST_PG_URL`, set
/// by `.ci/run`), dropped when this goes away.
pub struct TestDb {
    /// The database's URL (what `storage.url_env` names in the test's config).
    pub url: String,
    pub name: String,
    admin: String,
}

/// The admin URL of the test server; `None` (after printing SKIPPED) when it is not set.
/// Under CI (`CI` set) a missing server fails the test instead: CI must run them.
pub fn pg_admin_url(test: &str) -> Option<String> {
    match std::env::var("AIRLOCK_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{test}: CI is set but AIRLOCK_TEST_PG_URL is not: .ci/run must start PostgreSQL")
        }
        _ => {
            eprintln!("SKIPPED {test}: needs PostgreSQL (set AIRLOCK_TEST_PG_URL, e.g. from `.ci/pg start DIR PORT`)");
            None
        }
    }
}

impl TestDb {
    /// Creates the database `airlock_<test>_<random>`; `None` when the server is not set.
    pub async fn create(test: &str) -> Option<TestDb> {
        TestDb::create_on(&pg_admin_url(test)?, test).await
    }

    /// Creates the database on the server of `admin` (e.g. a [`PrivatePg`]).
    pub async fn create_on(admin: &str, test: &str) -> Option<TestDb> {
        let admin = admin.to_owned();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let name = format!("airlock_{}_{suffix}", test.chars().filter(char::is_ascii_alphanumeric).take(30).collect::<String>());
        pg_admin(&admin, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&admin).expect("AIRLOCK_TEST_PG_URL is a URL");
        url.set_path(&name);
        Some(TestDb { url: url.to_string(), name, admin })
    }

    /// Runs SQL on the server's admin database (e.g. copying this database).
    pub async fn admin(&self, sql: &str) {
        pg_admin(&self.admin, sql).await;
    }

    /// Runs SQL in this database and returns the first column of each row as text.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect to the test database");
        let task = tokio::spawn(conn);
        let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        drop(client);
        let _ = task.await;
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_owned()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which must not block: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(pg_admin(&admin, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")));
        })
        .join();
    }
}

async fn pg_admin(admin: &str, sql: &str) {
    let (client, conn) = tokio_postgres::connect(admin, tokio_postgres::NoTls).await.expect("connect to AIRLOCK_TEST_PG_URL");
    let task = tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    drop(client);
    let _ = task.await;
}


/// A PostgreSQL server of one test's own (`.ci/pg start` in a temp dir on a free port),
/// for tests that stop and restart it; stopped when dropped. `None` (SKIPPED) as for
/// [`TestDb`] when the test server is not configured.
pub struct PrivatePg {
    pub dir: tempfile::TempDir,
    /// Admin URL.
    pub url: String,
}

impl PrivatePg {
    pub fn start(test: &str) -> Option<PrivatePg> {
        pg_admin_url(test)?;
        let dir = tempfile::Builder::new().prefix("airlock-pg").tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let url = pg_script(&["start", &dir.path().join("pg").display().to_string(), &port.to_string()]);
        Some(PrivatePg { dir, url: url.trim().to_owned() })
    }

    /// `.ci/pg stop|start|restart` of this server.
    pub fn ctl(&self, action: &str) {
        pg_script(&[action, &self.dir.path().join("pg").display().to_string()]);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let dir = self.dir.path().join("pg").display().to_string();
        let _ = Command::new("bash").arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg")).args(["stop", &dir]).output();
    }
}

fn pg_script(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/pg");
    let out = Command::new("bash").arg(script).args(args).output().expect("run .ci/pg");
    assert!(out.status.success(), ".ci/pg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
