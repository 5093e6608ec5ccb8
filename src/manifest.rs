//! TEMPORARY stand-in for the manifest module (being built on the `policy` branch).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// How to reach a downstream server.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A child process speaking MCP over stdio.
    Stdio { command: PathBuf, args: Vec<String>, env: BTreeMap<String, String>, cwd: Option<PathBuf> },
    /// Streamable HTTP.
    StreamableHttp { url: String },
    /// Legacy HTTP+SSE.
    Sse { url: String },
}

/// One downstream server definition.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub source: PathBuf,
    pub transport: Transport,
    pub hidden: Vec<String>,
}

impl Manifest {
    pub fn is_hidden(&self, tool: &str) -> bool {
        self.hidden.iter().any(|t| t == tool)
    }
}
