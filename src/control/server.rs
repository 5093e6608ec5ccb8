//! The gateway side: the liveness lock, the socket file, the accept loop, the hello, and
//! idle exit.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use rmcp::ServiceExt as _;
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::handoff;
use super::ops::{self, OpContext, Request};
use super::peer::{self, Admission, PeerUser, Standing};
use super::{ControlError, Hello, HelloReply, Mode, PROTOCOL, Refusal, RefusalCode, Reply, Welcome, io_error, line, read_line};
use crate::audit::{Record, RecordKind};
use crate::config::IdleExit;
use crate::gateway::stdio::LineTransport;
use crate::gateway::{Channel, Gateway};

/// How long a peer has to send its hello.
const HELLO_WITHIN: Duration = Duration::from_secs(10);

/// The running gateway's claim on its data dir: the exclusive flock of `gateway.lock`
/// (with the pid written in it), and the socket file once bound, which is removed on drop
/// before the lock is let go.
pub struct Liveness {
    lock: Flock<File>,
    data_dir: PathBuf,
    bound: bool,
}

impl Liveness {
    /// Takes the lock without waiting; fails with `AlreadyRunning` while another
    /// gateway holds it. The kernel lets it go when the process dies, however it dies.
    pub fn take(data_dir: &Path) -> Result<Self, ControlError> {
        let path = super::liveness_lock_path(data_dir);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        let mut file = file;
        let mut tries = 0;
        let mut lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                // [`is_free`] probes with a shared lock for an instant: try a few times
                // before concluding that a gateway holds it.
                Err((back, nix::errno::Errno::EWOULDBLOCK)) if tries < 10 => {
                    file = back;
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let pid = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok());
                    return Err(ControlError::AlreadyRunning { data_dir: data_dir.to_path_buf(), pid });
                }
                Err((_, errno)) => return Err(ControlError::Io { path, source: errno.into() }),
            }
        };
        lock.set_len(0).map_err(io_error(&path))?;
        write!(&mut *lock, "{}", std::process::id()).map_err(io_error(&path))?;
        Ok(Self { lock, data_dir: data_dir.to_path_buf(), bound: false })
    }

    /// The data dir this lock is for.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        if self.bound {
            let _ = std::fs::remove_file(super::socket_path(&self.data_dir));
        }
        // The pid is cleared so a reader never names a dead process; the flock goes with
        // the file.
        let _ = self.lock.set_len(0);
    }
}

/// True once nothing holds the liveness lock (the gateway has exited), polling until
/// `within` has passed.
pub async fn wait_until_free(data_dir: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if is_free(data_dir) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when no gateway holds the data dir's liveness lock (a shared try-lock: it only
/// asks, and lets go at once).
pub fn is_free(data_dir: &Path) -> bool {
    match File::open(super::liveness_lock_path(data_dir)) {
        Ok(file) => Flock::lock(file, FlockArg::LockSharedNonblock).is_ok(),
        Err(_) => true,
    }
}

/// Binds `<data_dir>/airlock.sock`. Holding `liveness` proves any gateway that made an
/// existing socket file is dead, so a stale socket of ours (a socket owned by our uid) is
/// replaced; anything else at that path is left alone and refused.
pub fn bind(liveness: &mut Liveness, admission: &Admission) -> Result<UnixListener, ControlError> {
    let path = super::socket_path(&liveness.data_dir);
    if path.as_os_str().len() > super::MAX_SOCKET_PATH {
        return Err(ControlError::PathTooLong(path));
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() && meta.uid() == admission.own_uid() => {
            tracing::info!(path = %path.display(), "replacing the stale socket of a gateway that is gone");
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
        Ok(meta) if meta.file_type().is_socket() => {
            return Err(ControlError::NotOurs(path, format!("a socket of uid {}", meta.uid())));
        }
        Ok(_) => return Err(ControlError::NotOurs(path, "not a socket".into())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ControlError::Io { path, source }),
    }
    let listener = UnixListener::bind(&path).map_err(io_error(&path))?;
    liveness.bound = true;
    // The mode is defence in depth; the admission of each peer's uid is the rule.
    let mode = if admission.admits_others() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io_error(&path))?;
    if let Some(group) = admission.socket_group() {
        match nix::unistd::Group::from_name(group) {
            Ok(Some(group)) => {
                std::os::unix::fs::chown(&path, None, Some(group.gid.as_raw())).map_err(io_error(&path))?;
            }
            _ => tracing::warn!(group, "socket_clients names a group this system does not have; the socket keeps the gateway's group"),
        }
    }
    Ok(listener)
}

/// What the control server needs besides the gateway.
#[derive(Debug, Clone)]
pub struct ControlSettings {
    pub data_dir: PathBuf,
    /// Canonical path of the gateway's `airlock.toml`.
    pub config: Option<PathBuf>,
    pub admission: Admission,
    /// `[gateway] max_message_size`, for `mcp` sessions.
    pub max_message: usize,
    pub idle_exit: IdleExit,
}

/// The control server of one gateway.
pub struct Control {
    pub(super) gateway: Arc<Gateway>,
    pub(super) settings: ControlSettings,
    pub(super) started: Instant,
    /// Cancelled to stop the gateway (`stop`, idle exit).
    pub(super) shutdown: CancellationToken,
    /// `mcp` connections now.
    pub(super) attached: AtomicUsize,
    /// Last time the gateway had a session or a held call.
    last_busy: Mutex<Instant>,
    /// The gateway's live reload, once registered ([`Control::set_reload`]).
    pub(super) reload: std::sync::OnceLock<Arc<dyn super::Reload>>,
}

impl Control {
    /// Serves `listener` until `shutdown`, and cancels `shutdown` after `idle_exit`
    /// without sessions or held calls.
    pub fn start(gateway: Arc<Gateway>, settings: ControlSettings, listener: UnixListener, shutdown: CancellationToken) -> Arc<Self> {
        let control = Arc::new(Self {
            gateway,
            settings,
            started: Instant::now(),
            shutdown,
            attached: AtomicUsize::new(0),
            last_busy: Mutex::new(Instant::now()),
            reload: std::sync::OnceLock::new(),
        });
        tokio::spawn(accept_loop(control.clone(), listener));
        if let IdleExit::After(after) = control.settings.idle_exit {
            tokio::spawn(idle_watch(Arc::downgrade(&control), after));
        }
        control
    }

    /// Registers the gateway's reload for the `reload` request (once; later calls are
    /// ignored and return false).
    pub fn set_reload(&self, reload: Arc<dyn super::Reload>) -> bool {
        self.reload.set(reload).is_ok()
    }

    /// Sessions and held calls now.
    pub(super) fn busy(&self) -> (u64, usize) {
        let held = self.gateway.approvals().list(Some(crate::approval::State::Pending)).len();
        (self.gateway.live_sessions(), held)
    }

    fn touch(&self) {
        *self.last_busy.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        self.last_busy.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// Records a refused peer or command; a log that cannot take it is logged to stderr.
    pub(super) async fn record_refused(&self, peer: &PeerUser, what: &str, reason: RefusalCode) {
        let record = Record::new(RecordKind::ControlRefused)
            .principal(peer.name.as_deref().map_or_else(|| format!("uid:{}", peer.uid), |n| format!("unix:{n}")))
            .detail(serde_json::json!({"uid": peer.uid, "user": peer.name, "request": what, "reason": reason}));
        if let Err(error) = self.gateway.audit().append(record).await {
            tracing::error!(%error, "could not record control_refused");
        }
    }
}

async fn idle_watch(control: std::sync::Weak<Control>, after: Duration) {
    let tick = (after / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        tokio::time::sleep(tick).await;
        let Some(control) = control.upgrade() else { return };
        let (sessions, held) = control.busy();
        if sessions > 0 || held > 0 {
            control.touch();
        } else if control.idle_for() >= after {
            tracing::info!(idle = ?after, "no clients and no held calls; the gateway exits (idle_exit)");
            control.shutdown.cancel();
            return;
        }
    }
}

async fn accept_loop(control: Arc<Control>, listener: UnixListener) {
    loop {
        let accepted = tokio::select! {
            () = control.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(connection(control.clone(), stream));
            }
            Err(error) => {
                tracing::warn!(%error, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(control: Arc<Control>, stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(error) => {
            tracing::warn!(%error, "could not read a control peer's credentials; closed");
            return;
        }
    };
    let peer = match tokio::task::spawn_blocking(move || PeerUser::lookup(uid)).await {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let standing = control.settings.admission.standing(&peer);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let hello = match tokio::time::timeout(HELLO_WITHIN, read_line(&mut reader)).await {
        Ok(Ok(Some(line))) => serde_json::from_slice::<Hello>(&line).map_err(|e| e.to_string()),
        Ok(Ok(None)) => return,
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no hello within {HELLO_WITHIN:?}")),
    };
    let (hello, welcome) = match admit(&control, &peer, standing, hello).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let _ = write.write_all(&line(&HelloReply::Refused(refusal))).await;
            return;
        }
    };
    if write.write_all(&line(&HelloReply::Ok(welcome.clone()))).await.is_err() {
        return;
    }
    match hello.mode {
        Mode::Mcp => mcp(&control, &peer, standing, reader, write).await,
        Mode::Handoff => handoff(&control, &peer, standing, reader, write).await,
        Mode::Op => op_loop(&control, &peer, standing, reader, write).await,
    }
}

/// Checks the peer and its hello; the welcome to send, or the refusal.
async fn admit(
    control: &Control,
    peer: &PeerUser,
    standing: Standing,
    hello: Result<Hello, String>,
) -> Result<(Hello, Welcome), Refusal> {
    if standing == Standing::Refused {
        control.record_refused(peer, "connect", RefusalCode::NotAdmitted).await;
        tracing::warn!(peer = %peer.describe(), "control socket: peer not admitted");
        return Err(Refusal::new(
            RefusalCode::NotAdmitted,
            format!(
                "{} may not use this gateway: only its own user and [gateway] socket_clients or operators are admitted",
                peer.describe()
            ),
        ));
    }
    let hello = hello.map_err(|why| Refusal::new(RefusalCode::BadRequest, format!("not a hello: {why}")))?;
    if hello.airlock != PROTOCOL {
        return Err(Refusal::new(
            RefusalCode::WrongVersion,
            format!("control protocol {} is not this gateway's ({PROTOCOL}); use the same airlock binary", hello.airlock),
        ));
    }
    let ours = &control.settings.config;
    if hello.config.is_some() && hello.config != *ours {
        return Err(Refusal::new(RefusalCode::ConfigMismatch, mismatch(hello.config.as_deref(), ours.as_deref())));
    }
    let principal = if matches!(hello.mode, Mode::Mcp | Mode::Handoff) {
        peer::caller_for(peer, standing, control.gateway.authenticator())
            .map_err(|e| Refusal::new(RefusalCode::Failed, format!("no principal for {}: {e}", peer.describe())))?
            .principal
            .to_string()
    } else {
        peer.name.as_deref().map_or_else(|| format!("uid:{}", peer.uid), |n| format!("unix:{n}"))
    };
    let welcome = Welcome { pid: std::process::id(), version: env!("CARGO_PKG_VERSION").into(), config: ours.clone(), principal };
    Ok((hello, welcome))
}

fn mismatch(theirs: Option<&Path>, ours: Option<&Path>) -> String {
    let name = |p: Option<&Path>| p.map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string());
    format!(
        "the gateway of this data dir runs with {} but this command was given {}; one data dir has one configuration: use the same --config, another data_dir, or `airlock gateway stop` first",
        name(ours),
        name(theirs)
    )
}

/// The gateway session of an `mcp` or `handoff` connection, counted as attached until
/// [`detach`]; `None` (logged) when the peer has no caller.
fn attach_session(control: &Arc<Control>, peer: &PeerUser, standing: Standing) -> Option<crate::gateway::Session> {
    let caller = match peer::caller_for(peer, standing, control.gateway.authenticator()) {
        Ok(caller) => caller,
        Err(error) => {
            tracing::warn!(%error, "control socket: no caller");
            return None;
        }
    };
    control.attached.fetch_add(1, Ordering::Relaxed);
    control.touch();
    Some(control.gateway.session(Channel::Socket, Some(caller)))
}

fn detach(control: &Control) {
    control.attached.fetch_sub(1, Ordering::Relaxed);
    control.touch();
}

async fn mcp(control: &Arc<Control>, peer: &PeerUser, standing: Standing, reader: BufReader<tokio::net::unix::OwnedReadHalf>, write: OwnedWriteHalf) {
    let Some(session) = attach_session(control, peer, standing) else { return };
    // The buffered reader goes in whole: bytes the client sent right after its hello are
    // already in its buffer.
    let transport = LineTransport::new(reader, write, control.settings.max_message);
    match session.serve(transport).await {
        Ok(running) => {
            let _ = running.waiting().await;
        }
        Err(error) => tracing::debug!(%error, "a socket session ended before initialize"),
    }
    detach(control);
}

/// Mode `handoff`: the bridge passes its client's stdin and stdout, and the session is
/// served on them, mirrored to the bridge (`super::handoff`).
async fn handoff(control: &Arc<Control>, peer: &PeerUser, standing: Standing, reader: BufReader<tokio::net::unix::OwnedReadHalf>, write: OwnedWriteHalf) {
    if !reader.buffer().is_empty() {
        tracing::warn!(peer = %peer.describe(), "control socket: bytes before a handoff's descriptors; closed");
        return;
    }
    let read = reader.into_inner();
    let streams = match tokio::time::timeout(HELLO_WITHIN, handoff::receive_fds(&read)).await {
        Ok(Ok((input, output))) => handoff::client_streams(input, output),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no descriptors within {HELLO_WITHIN:?}"))),
    };
    let (input, output) = match streams {
        Ok(streams) => streams,
        Err(error) => {
            // The bridge sees the socket close and relays instead.
            tracing::warn!(%error, peer = %peer.describe(), "control socket: a handoff failed; closed");
            return;
        }
    };
    let Some(session) = attach_session(control, peer, standing) else { return };
    let mirror = handoff::Mirror::start(write);
    let transport = LineTransport::new(
        handoff::TeeReader::new(input, mirror.clone()),
        handoff::TeeWriter::new(output, mirror.clone()),
        control.settings.max_message,
    );
    match session.serve(transport).await {
        Ok(running) => {
            let token = running.cancellation_token();
            tokio::select! {
                _ = running.waiting() => {}
                // The bridge is gone (its process ended) or stuck: so is the client's server.
                () = handoff::bridge_gone(read) => token.cancel(),
                () = mirror.gone.cancelled() => token.cancel(),
            }
        }
        Err(error) => tracing::debug!(%error, "a handed-off session ended before initialize"),
    }
    mirror.end().await;
    detach(control);
}

async fn op_loop(control: &Arc<Control>, peer: &PeerUser, standing: Standing, mut reader: BufReader<tokio::net::unix::OwnedReadHalf>, write: OwnedWriteHalf) {
    let mut out = ReplyWriter { write };
    loop {
        let line = match read_line(&mut reader).await {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(error) => {
                let _ = out.send(&Reply::Error(Refusal::new(RefusalCode::BadRequest, error.to_string()))).await;
                return;
            }
        };
        let request = match serde_json::from_slice::<Request>(&line) {
            Ok(request) => request,
            Err(error) => {
                let refusal = Refusal::new(RefusalCode::BadRequest, format!("not a request: {error}"));
                if out.send(&Reply::Error(refusal)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if request.needs_operator() && !standing.is_operator() {
            control.record_refused(peer, request.name(), RefusalCode::NotOperator).await;
            let message = format!(
                "{} may not run `{}`: operator commands are for the gateway's own user and [gateway] operators",
                peer.describe(),
                request.name()
            );
            if out.send(&Reply::Error(Refusal::new(RefusalCode::NotOperator, message))).await.is_err() {
                return;
            }
            continue;
        }
        let context = OpContext { control, peer, standing };
        let last = match ops::handle(request, &context, &mut out).await {
            Ok(done) => Reply::Done(done),
            Err(refusal) => Reply::Error(refusal),
        };
        if out.send(&last).await.is_err() {
            return;
        }
    }
}

/// Writes the lines of op replies; a handler streams with [`ReplyWriter::item`].
pub struct ReplyWriter {
    write: OwnedWriteHalf,
}

impl ReplyWriter {
    /// Sends one `{"item":…}` line. An error means the client left: stop streaming.
    pub async fn item(&mut self, value: serde_json::Value) -> std::io::Result<()> {
        self.send(&Reply::Item(value)).await
    }

    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.write.write_all(&line(reply)).await?;
        self.write.flush().await
    }
}
