//! Starting a gateway in the background: `airlock gateway run` as a detached child, its
//! stderr appended to `<data_dir>/gateway.log`, under the start lock so that simultaneous
//! launches start exactly one. The child's stdout is a pipe on which it says when its
//! socket listens (`announce_ready`): the launch connects then, not at its next poll.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use tokio::io::AsyncReadExt as _;

use super::{ControlError, io_error};

/// How long a launch waits for the gateway's socket to answer.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Set for a gateway a launch starts: its stdout is the launch's pipe (`announce_ready`).
const LAUNCHED_ENV: &str = "AIRLOCK_LAUNCHED";

/// What to run to start a gateway.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `airlock` binary (normally this process's own).
    pub exe: PathBuf,
    /// `--config` to pass on.
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
}

/// Why no gateway could be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("could not run {}: {source}", .exe.display())]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("the gateway did not start (its log: {}):\n{tail}", .log.display())]
    Exited { log: PathBuf, tail: String },
    #[error("the gateway did not answer on {} within {:?} (its log: {})", .socket.display(), READY_WITHIN, .log.display())]
    Timeout { socket: PathBuf, log: PathBuf },
}

impl Launch {
    /// Returns once a gateway answers on the data dir's socket, starting one when none
    /// runs. Returns the pid of the gateway it started, if it started one.
    pub async fn ensure_running(&self) -> Result<Option<u32>, LaunchError> {
        if super::connect(&self.data_dir).await.is_ok() {
            return Ok(None);
        }
        std::fs::create_dir_all(&self.data_dir).map_err(io_error(&self.data_dir))?;
        let data_dir = self.data_dir.clone();
        let lock = tokio::task::spawn_blocking(move || start_lock(&data_dir))
            .await
            .map_err(|e| ControlError::Io { path: self.data_dir.clone(), source: std::io::Error::other(e) })??;
        let started = self.start_locked().await;
        drop(lock);
        started
    }

    /// Under the start lock: someone else may have started one while we waited for it.
    async fn start_locked(&self) -> Result<Option<u32>, LaunchError> {
        let started = Instant::now();
        let deadline = started + READY_WITHIN;
        let log = super::log_path(&self.data_dir);
        let mut child: Option<(tokio::process::Child, u64)> = None;
        // The started gateway's stdout, until it says it listens or closes (exits).
        let mut ready: Option<tokio::process::ChildStdout> = None;
        loop {
            if super::connect(&self.data_dir).await.is_ok() {
                let pid = child.as_ref().and_then(|(c, _)| c.id());
                if let Some((mut c, _)) = child {
                    // Reaped in the background so it leaves no zombie while we live.
                    tokio::spawn(async move { let _ = c.wait().await; });
                }
                return Ok(pid);
            }
            if let Some((c, from)) = child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    let from = *from;
                    child = None;
                    if super::server::is_free(&self.data_dir) {
                        return Err(LaunchError::Exited { tail: read_from(&log, from), log });
                    }
                    // A gateway that is exiting (idle) or starting by other means holds
                    // the data dir: wait for it, then try again.
                }
            } else if super::server::is_free(&self.data_dir) {
                let (mut spawned, from) = self.spawn(&log)?;
                ready = spawned.stdout.take();
                child = Some((spawned, from));
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::Timeout { socket: super::socket_path(&self.data_dir), log });
            }
            let pause = tokio::time::sleep(poll_pause(started.elapsed()));
            let mut line = [0u8; 16];
            match ready.as_mut() {
                Some(out) => tokio::select! {
                    () = pause => {}
                    read = out.read(&mut line) => {
                        // A line: it listens, connect now. End of file: it exited, or it
                        // closed the pipe; the polls go on.
                        if !matches!(read, Ok(n) if n > 0) {
                            ready = None;
                        }
                    }
                },
                None => pause.await,
            }
        }
    }

    fn spawn(&self, log: &Path) -> Result<(tokio::process::Child, u64), LaunchError> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_error(log))?;
        let from = file.seek(SeekFrom::End(0)).map_err(io_error(log))?;
        let mut command = tokio::process::Command::new(&self.exe);
        command.arg("gateway").arg("run");
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        // Its own process group: a terminal's Ctrl-C to the client does not reach it, and
        // it holds none of the client's pipes (stdout is the client's protocol).
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(file)).process_group(0);
        command.env_remove("AIRLOCK_STANDALONE").env(LAUNCHED_ENV, "1");
        let child = command.spawn().map_err(|source| LaunchError::Spawn { exe: self.exe.clone(), source })?;
        Ok((child, from))
    }
}

/// Called by a gateway once its control socket listens: if a launch started it, tells the
/// launch on stdout, then points stdout at /dev/null (the launch stops reading, and a
/// write to a pipe nobody reads would fail).
pub fn announce_ready() {
    if std::env::var_os(LAUNCHED_ENV).is_none() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(b"ready\n").and_then(|()| stdout.flush());
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
}

/// How long the launch sleeps between two looks at the socket, `waited` after it began: a
/// gateway starts in a few tens of milliseconds and its client's `initialize` waits for it,
/// so the first second is polled finely (a failed connect to a Unix socket costs
/// microseconds); after that, a slow start (a lock held by an exiting gateway) is polled
/// coarsely.
fn poll_pause(waited: Duration) -> Duration {
    if waited < Duration::from_secs(1) { Duration::from_millis(1) } else { Duration::from_millis(20) }
}

/// Blocks until this process holds `<data_dir>/start.lock`.
fn start_lock(data_dir: &Path) -> Result<Flock<File>, ControlError> {
    let path = super::start_lock_path(data_dir);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_error(&path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ControlError::Io { path, source: errno.into() })
}

/// What a gateway wrote to its log since `from` (the last 4 KiB of it).
fn read_from(log: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(log) {
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.read_to_string(&mut text);
    }
    let text = text.trim_end();
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    text[start..].to_owned()
}
