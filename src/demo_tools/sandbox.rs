//! The demo tools' sandbox folder: seeding, and every file operation the tools perform.
//!
//! Owns: the sandbox layout (see the table in `demo_tools`), seed data, name validation
//! (no path escapes), and serialized writes so concurrent calls never interleave a file.
//! Uses: std::fs and serde_json only.
//! Must not: know about MCP; tools in `tools.rs` turn these results into tool results.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Errors of sandbox operations. Each message is shown to the caller as a tool error.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A file or directory of the sandbox could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A sandbox file holds something other than the JSON we wrote there.
    #[error("{path}: not valid JSON: {source}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A name given by the caller would leave its folder or is otherwise unusable.
    #[error(
        "invalid {what} {name:?}: use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.' (not starting with '.')"
    )]
    InvalidName {
        /// What the name names ("bucket", "destination", ...).
        what: &'static str,
        /// The rejected name.
        name: String,
    },
    /// The thing asked for does not exist.
    #[error("no such {what}: {name:?}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its name.
        name: String,
    },
}

type Result<T> = std::result::Result<T, SandboxError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Buckets created on first start.
pub const SEED_BUCKETS: &[&str] = &["prod-customers", "staging-assets", "tmp-scratch"];

/// The sandbox folder. Writes go through one lock so appends never interleave.
#[derive(Debug)]
pub struct Sandbox {
    root: PathBuf,
    write_lock: Mutex<()>,
}

impl Sandbox {
    /// Opens (creating if needed) the sandbox at `root` and seeds it on first start.
    /// Seeding happens once: a `.seeded` marker keeps deleted buckets deleted across
    /// restarts of the server.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(io_err(root))?;
        let sandbox = Self {
            root: root.to_path_buf(),
            write_lock: Mutex::new(()),
        };
        let marker = root.join(".seeded");
        if !marker.exists() {
            sandbox.seed()?;
            fs::write(&marker, b"seeded by airlock demo-tools\n").map_err(io_err(&marker))?;
        }
        for dir in ["exports", "cancelled", "buckets", "logs"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(&path))?;
        }
        Ok(sandbox)
    }

    /// The sandbox folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn seed(&self) -> Result<()> {
        write_json(&self.root.join("customers.json"), &seed_customers())?;
        write_json(
            &self.root.join("roles.json"),
            &json!([{"user": "alice", "role": "viewer", "granted_at": 1_767_225_600}]),
        )?;
        let logs = self.root.join("logs");
        fs::create_dir_all(&logs).map_err(io_err(&logs))?;
        for (name, text) in SEED_LOGS {
            let path = logs.join(name);
            fs::write(&path, text).map_err(io_err(&path))?;
        }
        for bucket in SEED_BUCKETS {
            let dir = self.root.join("buckets").join(bucket);
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            let object = dir.join("README.txt");
            fs::write(&object, format!("objects of bucket {bucket}\n")).map_err(io_err(&object))?;
        }
        Ok(())
    }

    /// The customer record with this id.
    pub fn read_customer(&self, id: &str) -> Result<Value> {
        let customers = self.customers()?;
        customers
            .as_array()
            .and_then(|list| list.iter().find(|c| c["id"] == id))
            .cloned()
            .ok_or_else(|| SandboxError::NotFound {
                what: "customer",
                name: id.to_string(),
            })
    }

    fn customers(&self) -> Result<Value> {
        read_json(&self.root.join("customers.json"))
    }

    /// Lines of `logs/*.log` containing `query` (case-insensitive), as `file:line: text`,
    /// in file-name then line order, at most `limit`.
    pub fn search_logs(&self, query: &str, limit: usize) -> Result<Vec<String>> {
        let dir = self.root.join("logs");
        let mut files: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|ext| ext == "log"))
            .collect();
        files.sort();
        let needle = query.to_lowercase();
        let mut hits = Vec::new();
        for file in files {
            let text = fs::read_to_string(&file).map_err(io_err(&file))?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            for (number, line) in text.lines().enumerate() {
                if hits.len() >= limit {
                    return Ok(hits);
                }
                if line.to_lowercase().contains(&needle) {
                    hits.push(format!(
                        "{}:{}: {line}",
                        name.as_deref().unwrap_or("?"),
                        number + 1
                    ));
                }
            }
        }
        Ok(hits)
    }

    /// Writes all customers to `exports/<destination>` as JSON or CSV; returns the path
    /// written and the number of records.
    pub fn export_customers(
        &self,
        destination: &str,
        format: ExportFormat,
    ) -> Result<(PathBuf, usize)> {
        check_name("destination", destination)?;
        let customers = self.customers()?;
        let list = customers.as_array().cloned().unwrap_or_default();
        let body = match format {
            ExportFormat::Json => serde_json::to_string_pretty(&list).unwrap_or_default() + "\n",
            ExportFormat::Csv => customers_csv(&list),
        };
        let path = self.root.join("exports").join(destination);
        let _guard = self.lock();
        fs::write(&path, body).map_err(io_err(&path))?;
        Ok((path, list.len()))
    }

    /// Appends a grant to `roles.json`; returns the number of grants now held.
    pub fn grant_role(&self, user: &str, role: &str) -> Result<usize> {
        let path = self.root.join("roles.json");
        let _guard = self.lock();
        let mut grants = match read_json(&path)? {
            Value::Array(list) => list,
            _ => Vec::new(),
        };
        grants.push(json!({"user": user, "role": role, "granted_at": unix_now()}));
        write_json(&path, &Value::Array(grants.clone()))?;
        Ok(grants.len())
    }

    /// Removes `buckets/<bucket>/` and everything in it; returns how many files it held.
    pub fn delete_bucket(&self, bucket: &str) -> Result<usize> {
        check_name("bucket", bucket)?;
        let dir = self.root.join("buckets").join(bucket);
        let _guard = self.lock();
        if !dir.is_dir() {
            return Err(SandboxError::NotFound {
                what: "bucket",
                name: bucket.to_string(),
            });
        }
        let files = fs::read_dir(&dir).map_err(io_err(&dir))?.count();
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(files)
    }

    /// The buckets that exist, sorted.
    pub fn buckets(&self) -> Result<Vec<String>> {
        let dir = self.root.join("buckets");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err(&dir))?
            .filter_map(|entry| entry.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Appends one JSON line to `restarts.log`.
    pub fn record_restart(&self, service: &str) -> Result<()> {
        self.append_line(
            "restarts.log",
            &json!({"service": service, "at": unix_now()}),
        )
    }

    /// Appends one JSON line to `migrations.log`.
    pub fn record_migration(&self, steps: u32) -> Result<()> {
        self.append_line("migrations.log", &json!({"steps": steps, "at": unix_now()}))
    }

    /// Appends one JSON line to `credentials.log`; returns the new credential version.
    pub fn rotate_credentials(&self, service: &str) -> Result<u64> {
        let path = self.root.join("credentials.log");
        let _guard = self.lock();
        let previous = match fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .filter(|entry| entry["service"] == service)
                .count(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(io_err(&path)(err)),
        };
        let version = previous as u64 + 1;
        append_line(
            &path,
            &json!({"service": service, "version": version, "at": unix_now()}),
        )?;
        Ok(version)
    }

    /// Appends an approval receipt, exactly as received, as one JSON line to `receipts.jsonl`.
    pub fn record_receipt(&self, receipt: &Value) -> Result<()> {
        self.append_line("receipts.jsonl", receipt)
    }

    /// Writes `cancelled/<marker>` so a test can see that a cancellation arrived.
    pub fn record_cancellation(&self, marker: &str, detail: &Value) -> Result<PathBuf> {
        let safe: String = marker
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.root.join("cancelled").join(format!("{safe}.json"));
        let _guard = self.lock();
        write_json(&path, detail)?;
        Ok(path)
    }

    fn append_line(&self, file: &str, value: &Value) -> Result<()> {
        let path = self.root.join(file);
        let _guard = self.lock();
        append_line(&path, value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means another write panicked; the files are still usable.
        self.write_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// File formats of `export_customers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// A JSON array of customer objects.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// Appends `value` and a newline in one write; the caller holds the write lock.
fn append_line(path: &Path, value: &Value) -> Result<()> {
    let mut handle = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    let line = format!("{value}\n");
    handle.write_all(line.as_bytes()).map_err(io_err(path))
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|source| SandboxError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    fs::write(path, text).map_err(io_err(path))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn customers_csv(list: &[Value]) -> String {
    let mut out = String::from("id,name,email,plan,country,mrr\n");
    for c in list {
        let field = |key: &str| match &c[key] {
            Value::String(s) => s.replace(',', " "),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        out.push_str(&format!(
            "{},{},{},{},{},{}\n",
            field("id"),
            field("name"),
            field("email"),
            field("plan"),
            field("country"),
            field("mrr")
        ));
    }
    out
}

fn seed_customers() -> Value {
    json!([
        {"id": "C-1001", "name": "Northwind Traders", "email": "ops@northwind.example", "plan": "enterprise", "country": "US", "mrr": 12400},
        {"id": "C-1002", "name": "Contoso Pharma", "email": "it@contoso.example", "plan": "business", "country": "DE", "mrr": 3900},
        {"id": "C-1003", "name": "Tailspin Toys", "email": "hello@tailspin.example", "plan": "starter", "country": "GB", "mrr": 290},
        {"id": "C-1004", "name": "Fabrikam Logistics", "email": "admin@fabrikam.example", "plan": "business", "country": "NL", "mrr": 5100}
    ])
}

const SEED_LOGS: &[(&str, &str)] = &[
    (
        "api.log",
        "2026-09-01T09:00:01Z INFO  api GET /v1/customers/C-1001 200 12ms\n\
         2026-09-01T09:00:04Z INFO  api GET /v1/invoices?customer=C-1002 200 31ms\n\
         2026-09-01T09:01:17Z WARN  api slow query on /v1/reports took 2300ms\n\
         2026-09-01T09:02:42Z ERROR api POST /v1/exports 500 upstream timeout (bucket prod-customers)\n\
         2026-09-01T09:03:05Z INFO  api GET /healthz 200 1ms\n\
         2026-09-01T09:04:55Z ERROR api GET /v1/customers/C-1003 503 database connection refused\n",
    ),
    (
        "auth.log",
        "2026-09-01T08:58:10Z INFO  auth login ok user=alice mfa=totp\n\
         2026-09-01T08:59:44Z WARN  auth login failed user=mallory reason=bad_password attempts=3\n\
         2026-09-01T09:00:30Z INFO  auth token issued user=bob scope=read:customers\n\
         2026-09-01T09:05:12Z ERROR auth login failed user=mallory reason=locked_out\n",
    ),
    (
        "billing.log",
        "2026-09-01T09:00:00Z INFO  billing invoice run started\n\
         2026-09-01T09:00:09Z INFO  billing charged C-1001 amount=12400\n\
         2026-09-01T09:00:11Z ERROR billing card declined customer=C-1003\n\
         2026-09-01T09:00:15Z INFO  billing invoice run finished charged=3 failed=1\n",
    ),
];
