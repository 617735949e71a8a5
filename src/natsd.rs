//! A local `nats-server` child process with JetStream, for `baton dev`, `baton bench` and tests.
//!
//! [`NatsServer::start`] spawns the binary found by [`find_binary`]
//! (`NATS_SERVER_BIN`, then `PATH`, then `.nats/pip/bin`), learns its port from the
//! ports file the server writes, and is ready only once a client has connected and JetStream has
//! answered: no fixed sleeps, no log scraping. The process is killed when the handle drops.
//! The address and port flags win over a `-c` config file; the JetStream store dir comes from
//! the file when one is given, as nats-server refuses `--store_dir` beside a file's `store_dir`.
//! An authorization file is written into its configuration and reloaded with SIGHUP
//! ([`NatsServer::reload`]). A locked file in the options (`shared_lock`) stays open in the server
//! process, so the lock outlives its taker while the server runs. [`NatsServer::exited`] says when
//! the process has ended. [`cluster`] starts three of them as one JetStream cluster.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::time::{sleep, timeout, Instant};
use tracing::{debug, info, warn};

pub mod cluster;

pub use cluster::{NatsCluster, NatsClusterOptions};

/// How long a start (spawn, ports file, JetStream answering) or a graceful stop may take.
const DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// Where `nats/install.sh` puts the binary, relative to the repository root.
const LOCAL_BIN: &str = ".nats/pip/bin/nats-server";

#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    #[error("{0}; run nats/install.sh or set NATS_SERVER_BIN to a nats-server >= 2.11")]
    BinaryNotFound(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("nats-server exited early with {status}; log tail:\n{log_tail}")]
    Exited {
        status: ExitStatus,
        log_tail: String,
    },
    #[error("nats-server not ready in time: {reason}; log tail:\n{log_tail}")]
    NotReady { reason: String, log_tail: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> NatsdError {
    let context = context.into();
    move |source| NatsdError::Io(context, source)
}

/// Where the nats-server binary is: `$NATS_SERVER_BIN`, then `PATH`, then `.nats/pip/bin/` under
/// the crate's source root or under the current directory or one of its parents.
pub fn find_binary() -> Result<PathBuf, NatsdError> {
    let mut roots = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR"))];
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    let (env_bin, path) = (
        std::env::var_os("NATS_SERVER_BIN"),
        std::env::var_os("PATH"),
    );
    locate(env_bin, path, &roots)
}

/// [`find_binary`] over explicit inputs, so tests need not mutate the process environment.
fn locate(
    env_bin: Option<OsString>,
    path: Option<OsString>,
    roots: &[PathBuf],
) -> Result<PathBuf, NatsdError> {
    if let Some(bin) = env_bin.filter(|b| !b.is_empty()).map(PathBuf::from) {
        // An explicit choice never falls back silently to another binary.
        if is_executable(&bin) {
            return Ok(bin);
        }
        let detail = format!(
            "NATS_SERVER_BIN={} is not an executable file",
            bin.display()
        );
        return Err(NatsdError::BinaryNotFound(detail));
    }
    let on_path = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("nats-server"));
    let mut candidates = on_path.chain(roots.iter().map(|root| root.join(LOCAL_BIN)));
    let detail = "nats-server is neither on PATH nor in .nats/pip/bin/";
    candidates
        .find(|p| is_executable(p))
        .ok_or(NatsdError::BinaryNotFound(detail.into()))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Client port; `None` lets the server pick a free one (`-p -1`).
    pub port: Option<u16>,
    /// Passed as `--store_dir` when there is no `config_file`; the server keeps its data in
    /// `<store_dir>/jetstream/`.
    pub store_dir: PathBuf,
    /// Passed as `-c`; it must then set `jetstream { store_dir }` itself, and `store_dir` is unused.
    pub config_file: Option<PathBuf>,
    /// Where stdout and stderr go (appended); `None` means a file in the handle's own temp dir.
    pub log_file: Option<PathBuf>,
    /// An `authorization` block (`baton auth init`'s `auth.conf`) to enforce. Without a
    /// `config_file` it goes into a file written here beside the store dir, read again by
    /// [`NatsServer::reload`]; a `config_file` must include it itself.
    pub authorization: Option<PathBuf>,
    /// What the readiness probe connects with: any identity the server knows.
    pub probe_credentials: crate::bus::Credentials,
    /// More server settings (for example `max_pending: 65536`), added to the
    /// file written with `authorization`; unused with a `config_file`.
    pub settings: String,
    /// An open file holding a `flock` (`baton dev`'s lock on its store) that
    /// the server process inherits, so the lock lasts until the server has
    /// exited too, even when the process that took it is killed first.
    pub shared_lock: Option<Arc<File>>,
    /// How long a start may take before it fails; `None`: 10 s. A cluster's
    /// node is ready only once the cluster has elected its meta leader.
    pub ready_within: Option<Duration>,
}

/// A running nats-server; dropping it kills the process (SIGKILL) and waits for it.
#[derive(Debug)]
pub struct NatsServer {
    opts: NatsServerOptions,
    binary: PathBuf,
    child: Option<Child>,
    pid: u32,
    port: u16,
    /// Owned scratch directory: ports files and, by default, the log.
    work_dir: PathBuf,
    log_path: PathBuf,
}

impl NatsServer {
    pub async fn start(opts: NatsServerOptions) -> Result<NatsServer, NatsdError> {
        let binary = find_binary()?;
        let work_dir = unique_temp_dir()?;
        let default_log = work_dir.join("nats-server.log");
        let log_path = opts.log_file.clone().unwrap_or(default_log);
        let mut server = NatsServer {
            opts,
            binary,
            child: None,
            pid: 0,
            port: 0,
            work_dir,
            log_path,
        };
        server.launch(server.opts.port).await?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process runs, as far as this handle knows (it has not
    /// reported it [`exited`](NatsServer::exited), and it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// How the process ended, once it has (reaped, and reported once);
    /// `None` while it runs, and after.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        debug!(pid = self.pid, %status, "nats-server exited");
        Some(status)
    }

    /// SIGKILL and reap the process; does nothing when it is already stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            debug!(pid = self.pid, "nats-server killed");
        }
    }

    /// Reads the authorization file again and tells the server to reload its configuration
    /// (SIGHUP). The reload happens shortly after; callers wait for what they need by connecting.
    pub fn reload(&mut self) -> Result<(), NatsdError> {
        self.write_config()?;
        signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGHUP)
            .map_err(|e| NatsdError::Io("signalling nats-server".into(), e.into()))?;
        debug!(pid = self.pid, "nats-server reloading");
        Ok(())
    }

    /// With an authorization file and no config file: writes the server's configuration
    /// (store dir and the authorization block inline, as nats-server includes only relative
    /// paths). Returns the file to pass with `-c`.
    fn write_config(&self) -> Result<Option<PathBuf>, NatsdError> {
        if let Some(config) = &self.opts.config_file {
            return Ok(Some(config.clone()));
        }
        let Some(authorization) = &self.opts.authorization else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(authorization)
            .map_err(io_err(format!("reading {}", authorization.display())))?;
        let store = &self.opts.store_dir;
        std::fs::create_dir_all(store).map_err(io_err(format!("creating {}", store.display())))?;
        let settings = &self.opts.settings;
        let config = format!("jetstream {{ store_dir: {store:?} }}\n{settings}\n{text}");
        let path = self.work_dir.join("nats-server.conf");
        std::fs::write(&path, config).map_err(io_err(format!("writing {}", path.display())))?;
        Ok(Some(path))
    }

    /// Starts a stopped (killed, exited) process again on the same port,
    /// configuration and store dir; does nothing while it runs.
    pub async fn start_again(&mut self) -> Result<(), NatsdError> {
        if self.child.is_some() {
            return Ok(());
        }
        self.launch(Some(self.port)).await
    }

    /// Stop gracefully (SIGTERM, then wait) and start again on the same port and store dir.
    pub async fn restart(&mut self) -> Result<(), NatsdError> {
        self.terminate().await;
        self.launch(Some(self.port)).await
    }

    async fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = signal::kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                warn!(pid = self.pid, "nats-server ignored sigterm, killing");
                let _ = child.kill();
                break;
            }
            sleep(POLL).await;
        }
        let _ = child.wait();
        info!(pid = self.pid, "nats-server stopped");
    }

    async fn launch(&mut self, port: Option<u16>) -> Result<(), NatsdError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path);
        let log = log.map_err(io_err(format!("opening {}", self.log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("cloning the log file handle"))?;
        let mut cmd = Command::new(&self.binary);
        // its own process group: a Ctrl-C at the terminal does not stop it
        // under the processes that still need it; its owner stops it last
        cmd.process_group(0);
        if let Some(lock) = &self.opts.shared_lock {
            let fd = lock.as_raw_fd();
            // SAFETY: runs in the forked child before exec and makes one
            // async-signal-safe call (fcntl) on a descriptor the options keep open.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = BorrowedFd::borrow_raw(fd);
                    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                    Ok(())
                });
            }
        }
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_string(), |p| p.to_string()))
            .arg("--ports_file_dir")
            .arg(&self.work_dir);
        match self.write_config()? {
            // Even an identical `--store_dir` is refused as "Duplicate 'store_dir' configuration".
            Some(config) => cmd.arg("-c").arg(config),
            None => {
                let dir = &self.opts.store_dir;
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                cmd.arg("--store_dir").arg(dir)
            }
        };
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("spawning {}", self.binary.display())))?;
        self.pid = child.id();
        self.child = Some(child);
        debug!(pid = self.pid, binary = %self.binary.display(), ?port, "nats-server spawned");

        let deadline = Instant::now() + self.opts.ready_within.unwrap_or(DEADLINE);
        self.port = self.wait_for_ports_file(deadline).await?;
        self.wait_for_jetstream(deadline).await?;
        info!(pid = self.pid, port = self.port, log = %self.log_path.display(), "nats-server ready");
        Ok(())
    }

    /// The server writes `<executable name>_<pid>.ports` once it listens; a partly written file
    /// just fails to parse and is read again.
    async fn wait_for_ports_file(&mut self, deadline: Instant) -> Result<u16, NatsdError> {
        let name = self
            .binary
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let file = self.work_dir.join(format!("{name}_{}.ports", self.pid));
        loop {
            self.check_alive()?;
            if let Some(port) = std::fs::read(&file).ok().and_then(|b| parse_ports_file(&b)) {
                return Ok(port);
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready("no ports file written"));
            }
            sleep(POLL).await;
        }
    }

    async fn wait_for_jetstream(&mut self, deadline: Instant) -> Result<(), NatsdError> {
        loop {
            self.check_alive()?;
            let probe = probe(self.url(), &self.opts.probe_credentials);
            let reason = match timeout(Duration::from_secs(2), probe).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(reason)) => reason,
                Err(_) => "readiness probe timed out".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.not_ready(&reason));
            }
            sleep(POLL).await;
        }
    }

    fn check_alive(&mut self) -> Result<(), NatsdError> {
        let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) else {
            return Ok(());
        };
        self.child = None;
        let log_tail = log_tail(&self.log_path);
        Err(NatsdError::Exited { status, log_tail })
    }

    fn not_ready(&self, reason: &str) -> NatsdError {
        let (reason, log_tail) = (reason.to_string(), log_tail(&self.log_path));
        NatsdError::NotReady { reason, log_tail }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

/// Ready means a client connects and JetStream answers an account info request.
async fn probe(url: String, credentials: &crate::bus::Credentials) -> Result<(), String> {
    crate::bus::probe_jetstream(&url, credentials, Duration::from_secs(1)).await
}

/// The client port from a ports file: `{"nats":["nats://127.0.0.1:PORT"], ...}`.
fn parse_ports_file(bytes: &[u8]) -> Option<u16> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

/// The last lines of the log (at most its last 4 KiB), for error messages.
fn log_tail(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
        let _ = file.read_to_end(&mut bytes);
    }
    let tail = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = tail.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn unique_temp_dir() -> Result<PathBuf, NatsdError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // The pid and a counter are unique among live processes; the clock guards against leftovers.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let (pid, n) = (std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let dir = std::env::temp_dir().join(format!("baton-natsd-{pid}-{n}-{nanos}"));
    std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(15);

    #[test]
    fn nats_server_bin_pointing_at_a_missing_file_is_an_error_naming_install_sh() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-nats-server");
        // A usable PATH and repo root must not be used instead of the explicit choice.
        let fallback = Some(std::env::var_os("PATH").unwrap_or_default());
        let err = locate(
            Some(missing.into_os_string()),
            fallback,
            &[PathBuf::from(env!("CARGO_MANIFEST_DIR"))],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("nats/install.sh"), "{message}");
        assert!(message.contains("NATS_SERVER_BIN"), "{message}");
        assert!(message.contains("no-such-nats-server"), "{message}");
    }

    #[test]
    fn nothing_found_is_an_error_naming_install_sh() {
        let dir = tempfile::tempdir().unwrap();
        let err = locate(None, Some(dir.path().into()), &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("nats/install.sh"), "{err}");
    }

    #[test]
    fn ports_file_gives_the_client_port() {
        let file = br#"{"nats":["nats://127.0.0.1:40123"],"monitoring":[]}"#;
        assert_eq!(parse_ports_file(file), Some(40123));
        assert_eq!(parse_ports_file(br#"{"nats":["nats://127.0."#), None);
    }

    #[tokio::test]
    async fn start_restart_and_drop() {
        let store = tempfile::tempdir().unwrap();
        let opts = NatsServerOptions {
            port: None,
            store_dir: store.path().into(),
            config_file: None,
            log_file: None,
            ..Default::default()
        };
        let mut server = timeout(T, NatsServer::start(opts))
            .await
            .expect("start timed out")
            .expect("start");
        let (port, first_pid) = (server.port(), server.pid());
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));

        let kv: crate::bus::Kv<String> = timeout(T, async { connect(&server).await.kv("T").await })
            .await
            .unwrap()
            .expect("create bucket");
        timeout(T, kv.put("k", &"v".to_string()))
            .await
            .unwrap()
            .expect("put");

        timeout(T, server.restart())
            .await
            .expect("restart timed out")
            .expect("restart");
        assert_eq!(server.port(), port, "same port after restart");
        assert_ne!(server.pid(), first_pid);
        assert!(
            signal::kill(Pid::from_raw(first_pid as i32), None).is_err(),
            "old process gone"
        );

        let kv: crate::bus::Kv<String> = timeout(T, async { connect(&server).await.kv("T").await })
            .await
            .unwrap()
            .expect("open bucket");
        let value = timeout(T, kv.get("k")).await.unwrap().expect("get");
        assert_eq!(
            value.as_deref(),
            Some("v"),
            "data survives restart: same store dir"
        );

        let pid = server.pid();
        drop(server);
        assert!(
            signal::kill(Pid::from_raw(pid as i32), None).is_err(),
            "process gone after drop"
        );
    }

    async fn connect(server: &NatsServer) -> crate::bus::Bus {
        let settings = crate::bus::ConnectSettings {
            url: server.url(),
            name: "natsd-test".into(),
            connect_timeout: T,
            retry_initial_connect: false,
            max_message_bytes: 1 << 20,
            replicas: 1,
            credentials: Default::default(),
            tls: Default::default(),
            identities: None,
        };
        crate::bus::Bus::connect(&settings, crate::protocol::Subjects::new("t"))
            .await
            .expect("connect")
    }

    #[tokio::test]
    async fn a_config_file_sets_the_store_and_the_flags_set_the_port() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = (dir.path().join("n.conf"), dir.path().join("store"));
        let text = format!("listen: 127.0.0.1:4222\nserver_name: natsd-test\njetstream {{ store_dir: {store:?} }}\n");
        std::fs::write(&config, text).unwrap();
        let opts = NatsServerOptions {
            port: None,
            store_dir: "unused".into(),
            config_file: Some(config),
            log_file: None,
            ..Default::default()
        };
        let server = timeout(T, NatsServer::start(opts))
            .await
            .unwrap()
            .expect("start");
        assert_ne!(server.port(), 4222, "-p -1 wins over listen");
        assert!(store.join("jetstream").is_dir(), "store_dir from the file");
        assert!(!Path::new("unused").exists());
    }

    #[tokio::test]
    async fn a_taken_port_is_an_early_exit_with_the_log_tail() {
        let (store_a, store_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = NatsServerOptions {
            port: None,
            store_dir: store_a.path().into(),
            config_file: None,
            log_file: None,
            ..Default::default()
        };
        let first = timeout(T, NatsServer::start(opts))
            .await
            .unwrap()
            .expect("start");
        let opts = NatsServerOptions {
            port: Some(first.port()),
            store_dir: store_b.path().into(),
            config_file: None,
            log_file: None,
            ..Default::default()
        };
        let err = timeout(T, NatsServer::start(opts))
            .await
            .unwrap()
            .expect_err("port is taken");
        assert!(matches!(err, NatsdError::Exited { .. }), "{err}");
        assert!(err.to_string().contains("address already in use"), "{err}");
    }
}
