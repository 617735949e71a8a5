//! Running one task as an OS process: spawn it in its own process group
//! (`posix_spawn`: no copy of the subagent's memory per task), marked in its
//! environment with the task and the subagent process that started it,
//! stream its output line by line (lossy UTF-8, cut at `max_line_bytes`),
//! enforce its timeout (SIGTERM to the group, `kill_grace`, SIGKILL), and
//! report how it ended, with the results it printed on stdout
//! ([`super::results`]).
//!
//! Architecture invariant: no code runs in the child between its creation
//! and its `exec` (no `pre_exec`, no parent-death signal), so the standard
//! library spawns with `posix_spawn` (vfork-like) rather than a full `fork`
//! of the multi-threaded subagent. What the parent-death signal did is the
//! reaper's job ([`super::reaper`]): it is told of each task before its
//! spawn, and finds it by these environment marks if the subagent dies
//! before saying which group it got.
//!
//! Architecture invariant: no NATS here. Output lines go to a callback; the
//! subagent actor decides where they are published.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::results::Results;
use crate::protocol::{LogStream, RunTask};

/// How long output is still read after the process exited, for lines still in
/// the pipes (or held open by its leftover children, which are then killed).
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

/// A started task process.
pub struct Spawned {
    child: Child,
    pub pid: u32,
}

/// How a task process ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    /// Waiting for the process failed (rare: the OS lost track of it).
    pub error: Option<String>,
    /// Why the subagent killed it (orphan timeout, drain timeout), if it did.
    pub killed: Option<String>,
    /// The `::baton-result KEY=VALUE` lines it printed on stdout.
    pub outputs: BTreeMap<String, String>,
}

/// Why a task's process did not start; the message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start '{program}': its working directory '{dir}' {problem} on the subagent (create it there, or change the job's working_dir)")]
    WorkingDir {
        program: String,
        dir: String,
        problem: String,
    },
    #[error("cannot start '{program}': {source}")]
    Program {
        program: String,
        source: std::io::Error,
    },
}

/// The environment variable naming the task (the broker sets it too).
pub const TASK_ENV: &str = "BATON_TASK_ID";
/// The environment variable naming the subagent process (its instance id)
/// that started the task.
pub const INSTANCE_ENV: &str = "BATON_SUBAGENT_INSTANCE";

/// Starts the task's program for the subagent process `instance_id`. The
/// child gets its own process group (so the whole tree can be signalled)
/// and the marks [`TASK_ENV`] and [`INSTANCE_ENV`], over the job's own.
pub fn spawn(task: &RunTask, instance_id: &str) -> Result<Spawned, SpawnError> {
    command(task, instance_id)
        .spawn()
        .map_err(|e| spawn_error(task, e))
        .map(|child| {
            let pid = child.id().unwrap_or(0);
            Spawned { child, pid }
        })
}

/// The OS gives the same error for a missing program and a missing working
/// directory, so a failed spawn looks at the directory to say which.
fn spawn_error(task: &RunTask, source: std::io::Error) -> SpawnError {
    let program = task.program.clone();
    let Some(dir) = &task.working_dir else {
        return SpawnError::Program { program, source };
    };
    let problem = match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => "is not a directory".to_string(),
        Ok(_) => match std::fs::read_dir(dir) {
            // the directory is fine: the program is what failed
            Ok(_) => return SpawnError::Program { program, source },
            Err(e) => format!("cannot be entered ({e})"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "does not exist".to_string(),
        Err(e) => format!("cannot be entered ({e})"),
    };
    SpawnError::WorkingDir {
        program,
        dir: dir.clone(),
        problem,
    }
}

fn command(task: &RunTask, instance_id: &str) -> Command {
    let mut command = Command::new(&task.program);
    command
        .args(&task.args)
        .envs(&task.env)
        .env(TASK_ENV, &task.task_id)
        .env(INSTANCE_ENV, instance_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &task.working_dir {
        command.current_dir(dir);
    }
    command
}

/// Waits for the process, calling `on_line` for each output line in order of
/// arrival (after a malformed result line, also for a warning on stderr). It
/// is killed (SIGTERM to its group, `grace`, SIGKILL) when
/// `timeout` passes or when a reason arrives on `kill`.
pub async fn supervise<F, Fut>(
    mut spawned: Spawned,
    timeout: Option<Duration>,
    grace: Duration,
    max_line_bytes: usize,
    mut kill: oneshot::Receiver<String>,
    mut on_line: F,
) -> Exit
where
    F: FnMut(LogStream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (tx, mut lines) = mpsc::channel::<(LogStream, String)>(256);
    if let Some(out) = spawned.child.stdout.take() {
        tokio::spawn(read_lines(
            out,
            LogStream::Stdout,
            max_line_bytes,
            tx.clone(),
        ));
    }
    if let Some(err) = spawned.child.stderr.take() {
        tokio::spawn(read_lines(
            err,
            LogStream::Stderr,
            max_line_bytes,
            tx.clone(),
        ));
    }
    drop(tx);

    let pgid = Pid::from_raw(spawned.pid as i32);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let mut killed: Option<String> = None;
    let mut kill_armed = true;
    let mut killed_at: Option<tokio::time::Instant> = None;
    let mut output_open = true;
    let mut results = Results::default();
    let status = loop {
        let timer = async {
            match (killed_at, deadline) {
                (Some(at), _) => tokio::time::sleep_until(at + grace).await,
                (None, Some(d)) => tokio::time::sleep_until(d).await,
                (None, None) => std::future::pending().await,
            }
        };
        tokio::select! {
            status = spawned.child.wait() => break status,
            line = lines.recv(), if output_open => match line {
                Some((stream, line)) => deliver(&mut on_line, &mut results, stream, line).await,
                None => output_open = false,
            },
            reason = &mut kill, if kill_armed => {
                kill_armed = false;
                // a dropped sender only disarms
                if let Ok(reason) = reason {
                    if killed_at.is_none() {
                        let _ = killpg(pgid, Signal::SIGTERM);
                        killed_at = Some(tokio::time::Instant::now());
                    }
                    killed = Some(reason);
                }
            },
            _ = timer => {
                if killed_at.is_none() {
                    timed_out = true;
                    let _ = killpg(pgid, Signal::SIGTERM);
                    killed_at = Some(tokio::time::Instant::now());
                } else {
                    let _ = killpg(pgid, Signal::SIGKILL);
                    killed_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    };
    // lines still in the pipes; leftover children holding them open are killed
    let drain_until = tokio::time::Instant::now() + OUTPUT_DRAIN;
    while output_open {
        match tokio::time::timeout_at(drain_until, lines.recv()).await {
            Ok(Some((stream, line))) => deliver(&mut on_line, &mut results, stream, line).await,
            Ok(None) => output_open = false,
            Err(_) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                while let Ok(Some((stream, line))) =
                    tokio::time::timeout(OUTPUT_DRAIN, lines.recv()).await
                {
                    deliver(&mut on_line, &mut results, stream, line).await;
                }
                output_open = false;
            }
        }
    }
    match status {
        Ok(status) => Exit {
            exit_code: status.code(),
            signal: status.signal(),
            timed_out,
            error: None,
            killed,
            outputs: results.into_map(),
        },
        Err(e) => {
            warn!(pid = spawned.pid, error = %e, "waiting for task failed");
            let _ = killpg(pgid, Signal::SIGKILL);
            Exit {
                timed_out,
                error: Some(format!("waiting for the process failed: {e}")),
                killed,
                outputs: results.into_map(),
                ..Exit::default()
            }
        }
    }
}

/// Passes a line on, collecting it first when it is a result line; a
/// malformed one is followed by a warning line on stderr.
async fn deliver<F, Fut>(on_line: &mut F, results: &mut Results, stream: LogStream, line: String)
where
    F: FnMut(LogStream, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let warning = match stream {
        LogStream::Stdout => results.observe(&line),
        LogStream::Stderr => None,
    };
    on_line(stream, line).await;
    if let Some(warning) = warning {
        on_line(LogStream::Stderr, warning).await;
    }
}

/// Reads lines (lossy UTF-8, cut at `max` bytes) until EOF.
async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    max: usize,
    tx: mpsc::Sender<(LogStream, String)>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                while matches!(buf.last(), Some(b'\n' | b'\r')) {
                    buf.pop();
                }
                buf.truncate(max);
                let line = String::from_utf8_lossy(&buf).into_owned();
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(program: &str, args: &[&str]) -> RunTask {
        RunTask {
            task_id: "t".into(),
            order_id: "o".into(),
            job: "j".into(),
            attempt: 1,
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: [("X".to_string(), "42".to_string())].into(),
            working_dir: None,
            timeout_ms: None,
            instance_id: None,
            epoch: 0,
            parent: None,
        }
    }

    async fn run(t: RunTask, timeout: Option<Duration>) -> (Exit, Vec<(LogStream, String)>) {
        let (_keep, kill) = oneshot::channel();
        run_with(t, timeout, kill).await
    }

    async fn run_with(
        t: RunTask,
        timeout: Option<Duration>,
        kill: oneshot::Receiver<String>,
    ) -> (Exit, Vec<(LogStream, String)>) {
        let spawned = spawn(&t, "i").unwrap();
        let mut lines = Vec::new();
        let exit = tokio::time::timeout(
            Duration::from_secs(20),
            supervise(
                spawned,
                timeout,
                Duration::from_millis(300),
                64,
                kill,
                |s, l| {
                    lines.push((s, l));
                    async {}
                },
            ),
        )
        .await
        .expect("task finished in time");
        (exit, lines)
    }

    #[tokio::test]
    async fn streams_both_outputs_and_reports_exit_code() {
        let t = task(
            "sh",
            &[
                "-c",
                "echo out $X; echo err >&2; printf 'no newline'; exit 3",
            ],
        );
        let (exit, lines) = run(t, None).await;
        assert_eq!(exit.exit_code, Some(3));
        assert!(
            lines.contains(&(LogStream::Stdout, "out 42".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(LogStream::Stderr, "err".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(LogStream::Stdout, "no newline".into())),
            "{lines:?}"
        );
    }

    #[tokio::test]
    async fn the_task_and_the_subagent_process_are_marked_over_the_jobs_env() {
        let mut t = task(
            "sh",
            &["-c", "echo $BATON_TASK_ID $BATON_SUBAGENT_INSTANCE"],
        );
        t.env.insert(INSTANCE_ENV.into(), "forged".into());
        t.env.insert(TASK_ENV.into(), "forged".into());
        let (exit, lines) = run(t, None).await;
        assert_eq!(exit.exit_code, Some(0));
        assert_eq!(lines, [(LogStream::Stdout, "t i".to_string())]);
    }

    #[tokio::test]
    async fn long_and_invalid_lines_are_cut_and_replaced() {
        let t = task(
            "sh",
            &[
                "-c",
                "head -c 200 /dev/zero | tr '\\0' a; echo; printf '\\377ok\\n'",
            ],
        );
        let (_, lines) = run(t, None).await;
        assert_eq!(lines[0].1.len(), 64);
        assert_eq!(lines[1].1, "\u{fffd}ok");
    }

    #[tokio::test]
    async fn result_lines_are_collected_and_still_streamed() {
        let script = "echo '::baton-result a=1'; echo '::baton-result bad key=2'; \
                      echo '::baton-result a=3' >&2; echo x";
        let (exit, lines) = run(task("sh", &["-c", script]), None).await;
        assert_eq!(exit.outputs, [("a".to_string(), "1".to_string())].into());
        let stdout: Vec<&str> = lines
            .iter()
            .filter(|(s, _)| *s == LogStream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(
            stdout,
            ["::baton-result a=1", "::baton-result bad key=2", "x"]
        );
        let warned = lines
            .iter()
            .any(|(s, l)| *s == LogStream::Stderr && l.starts_with("baton: result line ignored"));
        assert!(warned, "{lines:?}");
    }

    #[tokio::test]
    async fn timeout_terminates_then_kills_the_group() {
        // the shell ignores SIGTERM, so only SIGKILL after the grace ends it
        let t = task("sh", &["-c", "trap '' TERM; sleep 30 & wait; sleep 30"]);
        let (exit, _) = run(t, Some(Duration::from_millis(200))).await;
        assert!(exit.timed_out);
        assert_eq!(exit.signal, Some(Signal::SIGKILL as i32));
        let t = task("sleep", &["30"]);
        let (exit, _) = run(t, Some(Duration::from_millis(100))).await;
        assert!(exit.timed_out);
        assert_eq!(exit.signal, Some(Signal::SIGTERM as i32));
    }

    #[tokio::test]
    async fn a_kill_reason_terminates_the_task_and_is_reported() {
        let (tx, kill) = oneshot::channel();
        tx.send("no broker for 10s".to_string()).unwrap();
        let (exit, _) = run_with(task("sleep", &["30"]), None, kill).await;
        assert_eq!(exit.killed.as_deref(), Some("no broker for 10s"));
        assert_eq!(exit.signal, Some(Signal::SIGTERM as i32));
        assert!(!exit.timed_out);

        // a dropped sender does not kill
        let (tx, kill) = oneshot::channel::<String>();
        drop(tx);
        let (exit, _) = run_with(task("sh", &["-c", "sleep 0.2; exit 4"]), None, kill).await;
        assert_eq!((exit.exit_code, exit.killed), (Some(4), None));
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = spawn(&task("/no/such/program", &[]), "i").err().unwrap();
            assert!(matches!(e, SpawnError::Program { .. }), "{e}");
        });
    }

    #[test]
    fn a_bad_working_directory_is_named() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        let file = file.path().display().to_string();
        rt.block_on(async {
            for (dir, problem) in [
                ("/no/such/dir", "'/no/such/dir' does not exist"),
                (file.as_str(), "is not a directory"),
            ] {
                let mut t = task("pwd", &[]);
                t.working_dir = Some(dir.into());
                let e = spawn(&t, "i").err().unwrap().to_string();
                assert!(e.contains(problem) && e.contains("working_dir"), "{e}");
                assert!(e.contains(dir), "{e}");
            }
            // a good directory and a missing program: the program is named
            let mut t = task("/no/such/program", &[]);
            t.working_dir = Some("/".into());
            let e = spawn(&t, "i").err().unwrap().to_string();
            assert!(e.starts_with("cannot start '/no/such/program': "), "{e}");
        });
    }
}
