//! Tool manifests: one downstream server per `tool-manifests/<server>.toml` (DESIGN.md §2).
//!
//! Owns: the manifest format (`RawManifest`, `deny_unknown_fields`), its validation into
//! `Manifest`, `ServerName`, and loading a directory of manifests with every problem reported.
//! Uses: `config` diagnostics, `risk::Risk`.
//! Must not: start processes or connect to servers (that is `downstream/`).
//!
//! ```toml
//! name = "fs"                      # default: the file name without ".toml"
//! command = "npx"                  # stdio child …
//! args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/data"]
//! env = { LOG_LEVEL = "info" }     # added to the inherited environment
//! cwd = "."                        # default: the config file's directory
//! # url = "http://127.0.0.1:3001/mcp"   … or an HTTP server
//! # transport = "streamable-http"       # or "sse" (legacy HTTP+SSE); only with url
//! # headers = { Authorization = "Bearer …" }
//! protocol = "legacy"              # or "auto": let rmcp negotiate the newest era
//! scope = "shared"                 # or "session": one connection (child) per client session
//! default_risk = "high"            # for tools neither listed here nor annotated
//! [tools.read_text_file]
//! risk = "low"
//! [tools.list_allowed_directories]
//! hidden = true                    # not shown to the client, calls refused
//! [resources."demo://customers*"]  # a glob over the URIs the server lists
//! risk = "high"                    # resource reads and subscriptions default to low
//! [prompts.incident_summary]       # the server's own prompt name
//! risk = "medium"                  # prompts default to low; `hidden = true` also works
//! ```
//!
//! Decisions:
//! - `command = "airlock"` means the running airlock executable itself
//!   (`std::env::current_exe`), so the shipped demo manifest (`airlock demo-tools …`) works
//!   whether or not airlock is on `PATH`, and always runs the same build as the gateway.
//! - A relative `cwd`, or a relative `command` containing `/`, resolves against the config
//!   file's directory, like every other relative path in the configuration; other commands
//!   are looked up on `PATH` when started.
//! - `[resources."<glob>"]` keys are globs over URIs (`*` crosses `/`); when several match
//!   one URI the highest risk wins and any `hidden` hides it, so the order of the file's
//!   tables (which TOML does not keep) never matters.
//! - A server name uses only `[A-Za-z0-9_-]` and must not contain the separator (nor end in
//!   a way that makes `<server><separator><tool>` split differently).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::config::{ConfigErrors, Problem, Source, deserialize_all};
use crate::risk::Risk;

/// A downstream server's name: the prefix of its exposed tool names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

impl ServerName {
    /// Validates `name` for use with `separator`.
    pub fn new(name: &str, separator: &str) -> Result<ServerName, String> {
        if name.is_empty() {
            return Err("a server name must not be empty".to_string());
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "server name \"{name}\" contains {c:?}; use only letters, digits, '_' and '-'"
            ));
        }
        let joined = format!("{name}{separator}");
        if !separator.is_empty() && joined.find(separator) != Some(name.len()) {
            return Err(format!(
                "server name \"{name}\" contains or runs into the separator \"{separator}\", so \
                 exposed names could not be split back"
            ));
        }
        Ok(ServerName(name.to_string()))
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The server's name.
    pub name: ServerName,
    /// The file it was read from (for messages).
    pub file: PathBuf,
    /// How to reach the server.
    pub transport: Transport,
    /// Which MCP lifecycle to speak to it.
    pub protocol: Protocol,
    /// One connection for every client session, or one per session.
    pub scope: Scope,
    /// Risk for tools neither listed nor annotated.
    pub default_risk: Option<Risk>,
    /// `[tools.<name>]` entries, keyed by the downstream tool name.
    pub tools: BTreeMap<String, ToolOverride>,
    /// `[resources."<glob>"]` entries, in glob order.
    pub resources: Vec<ResourceOverride>,
    /// `[prompts.<name>]` entries, keyed by the downstream prompt name.
    pub prompts: BTreeMap<String, ToolOverride>,
}

impl Manifest {
    /// The risk the manifest entry gives `tool`, if any.
    pub fn tool_risk(&self, tool: &str) -> Option<Risk> {
        self.tools.get(tool).and_then(|t| t.risk)
    }
    /// True when `tool` is hidden from clients (and calls to it refused).
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.tools.get(tool).is_some_and(|t| t.hidden)
    }
    /// What the `[resources]` entries say about `uri`: the highest risk of any matching
    /// glob, hidden when any matching glob hides it.
    pub fn resource_override(&self, uri: &str) -> ToolOverride {
        self.resources.iter().filter(|r| r.matcher.is_match(uri)).fold(ToolOverride::default(), |acc, r| {
            ToolOverride { risk: acc.risk.max(r.entry.risk), hidden: acc.hidden || r.entry.hidden }
        })
    }
    /// The `[prompts.<name>]` entry of `prompt` (its downstream name).
    pub fn prompt_override(&self, prompt: &str) -> ToolOverride {
        self.prompts.get(prompt).copied().unwrap_or_default()
    }
}

/// A `[resources."<glob>"]` entry.
#[derive(Debug, Clone)]
pub struct ResourceOverride {
    /// The glob as written.
    pub pattern: String,
    matcher: globset::GlobMatcher,
    /// Its risk and whether it hides what it matches.
    pub entry: ToolOverride,
}

impl PartialEq for ResourceOverride {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.entry == other.entry
    }
}

impl ResourceOverride {
    /// Compiles a URI glob: `*`, `?`, `[…]`, `{a,b}`; `*` also crosses `/`, so
    /// `demo://logs/*` matches every log URI.
    pub fn new(pattern: &str, entry: ToolOverride) -> Result<ResourceOverride, String> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("\"{pattern}\" is not a valid glob: {}", e.kind()))?;
        Ok(ResourceOverride { pattern: pattern.to_owned(), matcher: glob.compile_matcher(), entry })
    }
}

/// How a downstream server is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking MCP over stdin/stdout.
    Stdio(StdioCommand),
    /// Streamable HTTP.
    StreamableHttp(HttpTarget),
    /// Legacy HTTP+SSE (`GET` the SSE URL, `POST` to the endpoint it announces).
    Sse(HttpTarget),
}

/// A stdio child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioCommand {
    /// Program to run (the airlock executable itself for `command = "airlock"`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: PathBuf,
}

/// An HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Endpoint URL.
    pub url: Url,
    /// Headers sent with every request.
    pub headers: BTreeMap<String, String>,
}

/// The MCP lifecycle to use with a downstream (DESIGN.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `initialize` and sessions (2025-11-25). The default: every server speaks it.
    #[default]
    Legacy,
    /// Let the client negotiate the newest revision the server supports.
    Auto,
}

/// Who shares one downstream connection (for a stdio server: one child process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every client session calls the same connection. The default.
    #[default]
    Shared,
    /// Each client session gets its own connection, started at its first call to the
    /// server and stopped when the session ends: for servers that ask questions, or whose
    /// state (a browser, a shell) must not be shared between callers.
    Session,
}

/// A `[tools.<name>]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolOverride {
    /// Risk that overrides annotations and the default.
    pub risk: Option<Risk>,
    /// Not shown to clients; calls are refused as unknown.
    pub hidden: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum RawTransport {
    #[serde(rename = "streamable-http")]
    StreamableHttp,
    #[serde(rename = "sse")]
    Sse,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<Spanned<String>>,
    command: Option<Spanned<String>>,
    args: Option<Spanned<Vec<String>>>,
    env: Option<Spanned<BTreeMap<String, String>>>,
    cwd: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    transport: Option<Spanned<RawTransport>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    scope: Scope,
    default_risk: Option<Risk>,
    #[serde(default)]
    tools: BTreeMap<String, RawTool>,
    #[serde(default)]
    resources: BTreeMap<String, Spanned<RawTool>>,
    #[serde(default)]
    prompts: BTreeMap<String, Spanned<RawTool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTool {
    risk: Option<Risk>,
    #[serde(default)]
    hidden: bool,
}

/// The program name that stands for the running airlock executable.
pub const SELF_COMMAND: &str = "airlock";

/// Loads every `*.toml` in `dir` (sorted by file name). A missing directory holds no
/// manifests. Relative paths resolve against `base_dir` (the config file's directory).
pub fn load_dir(
    dir: &Path,
    base_dir: &Path,
    separator: &str,
) -> Result<Vec<Manifest>, ConfigErrors> {
    let mut errors = ConfigErrors::new();
    let mut manifests: Vec<Manifest> = Vec::new();
    for file in toml_files(dir, &mut errors) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Problem::file(&file, format!("cannot read: {e}")));
                continue;
            }
        };
        match parse(&text, &file, base_dir, separator) {
            Ok(m) => {
                if let Some(first) = manifests.iter().find(|o| o.name == m.name) {
                    errors.push(Problem::file(
                        &file,
                        format!(
                            "server \"{}\" is already defined in {}",
                            m.name,
                            first.file.display()
                        ),
                    ));
                } else {
                    manifests.push(m);
                }
            }
            Err(e) => errors.extend(e),
        }
    }
    errors.into_result(manifests)
}

/// The `*.toml` files of `dir`, sorted; nothing when `dir` does not exist.
pub fn toml_files(dir: &Path, errors: &mut ConfigErrors) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            errors.push(Problem::file(
                dir,
                format!("cannot list the directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
}

/// Parses one manifest file's text.
pub fn parse(
    text: &str,
    file: &Path,
    base_dir: &Path,
    separator: &str,
) -> Result<Manifest, ConfigErrors> {
    let source = Source::new(file, text);
    let mut errors = ConfigErrors::new();
    let Some(raw) = deserialize_all::<RawManifest>(&source, &mut errors) else {
        return Err(errors);
    };
    let name = match &raw.name {
        Some(n) => ServerName::new(n.get_ref(), separator)
            .map_err(|why| errors.push(source.at(n, format!("key \"name\": {why}"))))
            .ok(),
        None => {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            ServerName::new(&stem, separator)
                .map_err(|why| {
                    errors.push(source.problem(
                        None,
                        format!("no \"name\" key, and the file name is not usable: {why}"),
                    ))
                })
                .ok()
        }
    };
    let transport = transport(&raw, &source, base_dir, &mut errors);
    let tools = raw
        .tools
        .into_iter()
        .map(|(tool, t)| {
            (
                tool,
                ToolOverride {
                    risk: t.risk,
                    hidden: t.hidden,
                },
            )
        })
        .collect();
    let (resources, prompts) = read_entries(raw.resources, raw.prompts, &source, &mut errors);
    match (name, transport) {
        (Some(name), Some(transport)) if errors.is_empty() => Ok(Manifest {
            name,
            file: file.to_path_buf(),
            transport,
            protocol: raw.protocol,
            scope: raw.scope,
            default_risk: raw.default_risk,
            tools,
            resources,
            prompts,
        }),
        _ => {
            errors.sort_by_line();
            Err(errors)
        }
    }
}

/// Checks `[resources."<glob>"]` and `[prompts.<name>]`: valid globs, and each entry says
/// something (an empty one is certainly a mistake, e.g. `risk` misplaced).
fn read_entries(
    resources: BTreeMap<String, Spanned<RawTool>>,
    prompts: BTreeMap<String, Spanned<RawTool>>,
    source: &Source<'_>,
    errors: &mut ConfigErrors,
) -> (Vec<ResourceOverride>, BTreeMap<String, ToolOverride>) {
    let mut checked = Vec::new();
    for (pattern, raw) in resources {
        let span = raw.span();
        let over = read_entry(&format!("[resources.{pattern:?}]"), raw, source, errors);
        let made = if pattern.trim().is_empty() {
            Err("a URI glob must not be empty".to_owned())
        } else {
            ResourceOverride::new(&pattern, over)
        };
        match made {
            Ok(r) => checked.push(r),
            Err(why) => errors.push(source.problem(Some(span), format!("key \"resources\": {why}"))),
        }
    }
    let prompts = prompts
        .into_iter()
        .map(|(name, raw)| {
            let over = read_entry(&format!("[prompts.{name}]"), raw, source, errors);
            (name, over)
        })
        .collect();
    (checked, prompts)
}

fn read_entry(table: &str, raw: Spanned<RawTool>, source: &Source<'_>, errors: &mut ConfigErrors) -> ToolOverride {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.risk.is_none() && !raw.hidden {
        errors.push(source.problem(
            Some(span),
            format!("{table} gives neither \"risk\" nor \"hidden = true\""),
        ));
    }
    ToolOverride { risk: raw.risk, hidden: raw.hidden }
}

fn transport(
    raw: &RawManifest,
    source: &Source<'_>,
    base_dir: &Path,
    errors: &mut ConfigErrors,
) -> Option<Transport> {
    match (&raw.command, &raw.url) {
        (Some(command), None) => {
            for (key, span) in [
                ("transport", raw.transport.as_ref().map(Spanned::span)),
                ("headers", raw.headers.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    errors.push(source.problem(
                        Some(span),
                        format!("key \"{key}\" only applies to a server given by \"url\""),
                    ));
                }
            }
            let program = program(command.get_ref(), base_dir)
                .map_err(|why| errors.push(source.at(command, format!("key \"command\": {why}"))))
                .ok()?;
            let cwd = match &raw.cwd {
                Some(c) => base_dir.join(c.get_ref()),
                None if base_dir.as_os_str().is_empty() => PathBuf::from("."),
                None => base_dir.to_path_buf(),
            };
            Some(Transport::Stdio(StdioCommand {
                program,
                args: raw
                    .args
                    .as_ref()
                    .map(|a| a.get_ref().clone())
                    .unwrap_or_default(),
                env: raw
                    .env
                    .as_ref()
                    .map(|e| e.get_ref().clone())
                    .unwrap_or_default(),
                cwd,
            }))
        }
        (None, Some(url)) => {
            for (key, span) in [
                ("args", raw.args.as_ref().map(Spanned::span)),
                ("env", raw.env.as_ref().map(Spanned::span)),
                ("cwd", raw.cwd.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    errors.push(source.problem(
                        Some(span),
                        format!("key \"{key}\" only applies to a server given by \"command\""),
                    ));
                }
            }
            let parsed = match Url::parse(url.get_ref()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
                _ => {
                    errors.push(source.at(
                        url,
                        format!("key \"url\": \"{}\" is not an http(s) URL", url.get_ref()),
                    ));
                    return None;
                }
            };
            let headers = raw
                .headers
                .as_ref()
                .map(|h| h.get_ref().clone())
                .unwrap_or_default();
            let target = HttpTarget {
                url: parsed,
                headers,
            };
            Some(match raw.transport.as_ref().map(|t| *t.get_ref()) {
                None | Some(RawTransport::StreamableHttp) => Transport::StreamableHttp(target),
                Some(RawTransport::Sse) => Transport::Sse(target),
            })
        }
        (Some(command), Some(_)) => {
            errors.push(source.at(
                command,
                "give either \"command\" (stdio) or \"url\" (HTTP), not both",
            ));
            None
        }
        (None, None) => {
            let what = "needs \"command\" (a stdio server) or \"url\" (an HTTP server)";
            errors.push_missing(
                0..usize::MAX,
                &["command", "url"],
                source.problem(None, what),
            );
            None
        }
    }
}

fn program(command: &str, base_dir: &Path) -> Result<PathBuf, String> {
    if command.trim().is_empty() {
        return Err("must not be empty".to_string());
    }
    if command == SELF_COMMAND {
        return std::env::current_exe()
            .map_err(|e| format!("cannot find the airlock executable: {e}"));
    }
    let path = Path::new(command);
    if path.is_relative() && command.contains('/') {
        Ok(base_dir.join(path))
    } else {
        Ok(path.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Manifest {
        parse(text, Path::new("m/fs.toml"), Path::new("conf"), "__").unwrap()
    }

    fn parse_err(text: &str) -> Vec<String> {
        let e = parse(text, Path::new("m/fs.toml"), Path::new("conf"), "__").unwrap_err();
        e.problems().iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_stdio_manifest_with_tool_entries_is_typed() {
        let m = parse_ok(
            "name = \"fs\"\ncommand = \"npx\"\nargs = [\"-y\", \"x\"]\ndefault_risk = \"high\"\n\
             [tools.read]\nrisk = \"low\"\n[tools.secret]\nhidden = true\n",
        );
        assert_eq!(m.name.as_str(), "fs");
        let Transport::Stdio(cmd) = &m.transport else {
            panic!("not stdio")
        };
        assert_eq!(cmd.program, Path::new("npx"));
        assert_eq!(cmd.cwd, Path::new("conf"));
        assert_eq!(m.tool_risk("read"), Some(Risk::Low));
        assert!(m.is_hidden("secret") && !m.is_hidden("read"));
        assert_eq!(m.default_risk, Some(Risk::High));
        assert_eq!(m.protocol, Protocol::Legacy);
    }

    #[test]
    fn resource_globs_take_the_highest_risk_and_any_hidden() {
        let m = parse_ok(
            "command = \"x\"\n[resources.\"demo://*\"]\nrisk = \"medium\"\n\
             [resources.\"demo://customers*\"]\nrisk = \"high\"\n[resources.\"demo://logs/secret*\"]\nhidden = true\n\
             [prompts.p]\nrisk = \"critical\"\n",
        );
        assert_eq!(m.resource_override("demo://customers?page=2").risk, Some(Risk::High));
        assert_eq!(m.resource_override("demo://logs/api.log").risk, Some(Risk::Medium));
        assert!(m.resource_override("demo://logs/secret.log").hidden);
        assert_eq!(m.resource_override("other://x"), ToolOverride::default());
        assert_eq!(m.prompt_override("p").risk, Some(Risk::Critical));
        assert_eq!(m.prompt_override("q"), ToolOverride::default());
    }

    #[test]
    fn the_airlock_command_means_this_executable() {
        let m = parse_ok("command = \"airlock\"\nargs = [\"demo-tools\"]\n");
        let Transport::Stdio(cmd) = &m.transport else {
            panic!("not stdio")
        };
        assert_eq!(cmd.program, std::env::current_exe().unwrap());
        assert_eq!(m.name.as_str(), "fs", "name defaults to the file stem");
    }

    #[test]
    fn url_manifests_pick_their_transport() {
        let m = parse_ok("url = \"http://127.0.0.1:3001/sse\"\ntransport = \"sse\"\n");
        assert!(matches!(m.transport, Transport::Sse(_)));
        let m = parse_ok("url = \"http://127.0.0.1:3001/mcp\"\nheaders = { X = \"1\" }\n");
        assert!(matches!(m.transport, Transport::StreamableHttp(_)));
    }

    #[test]
    fn manifest_mistakes_are_all_reported_with_lines() {
        let got = parse_err(
            "name = \"f__s\"\nurl = \"http://x/mcp\"\ncwd = \"/\"\n[tools.a]\nrisk = \"hihg\"\n",
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with("m/fs.toml:1: key \"name\""),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("m/fs.toml:3: key \"cwd\" only applies"),
            "{}",
            got[1]
        );
        assert!(
            got[2].starts_with(
                "m/fs.toml:5: key \"tools.a.risk\": \"hihg\" is not a known value (did you mean \"high\"?)"
            ),
            "{}",
            got[2]
        );
        assert_eq!(parse_err("args = []\n").len(), 1);
    }

    #[test]
    fn server_names_cannot_hide_the_separator() {
        assert!(ServerName::new("fs", "__").is_ok());
        assert!(ServerName::new("my_fs", "__").is_ok());
        assert!(ServerName::new("fs_", "__").is_err());
        assert!(ServerName::new("a__b", "__").is_err());
        assert!(ServerName::new("a.b", "__").is_err());
        assert!(ServerName::new("", "__").is_err());
    }
}
