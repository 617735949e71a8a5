//! Load: a machine whose CPUs are all busy is slow, not dead. With the
//! default timings, no subagent may be declared lost while busy loops take
//! every core, and orders keep finishing.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::bus::{decode, Encoding};
use baton::protocol::*;
use common::*;
use futures::StreamExt;

/// How long the CPUs stay saturated.
const LOAD_FOR: Duration = Duration::from_secs(60);
/// Busy loops per core.
const BURNERS_PER_CORE: usize = 2;
/// Orders in flight at once.
const CONCURRENT_ORDERS: usize = 2;

const JOB: &str = r#"
[[job]]
name = "short"
program = "sh"
args = ["-c", "echo done"]
"#;

/// Busy-loop processes, killed when dropped (also when the test panics).
struct Burners(Vec<Child>);

impl Burners {
    fn start(n: usize) -> Burners {
        let mut burners = Burners(Vec::new());
        for _ in 0..n {
            let mut command = Command::new("sh");
            command.args(["-c", "while :; do :; done"]);
            // SAFETY: only prctl, async-signal-safe, runs between fork and exec.
            // Should this test process die without unwinding, the loops die too.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(std::io::Error::from)
                });
            }
            burners.0.push(command.spawn().expect("start a busy loop"));
        }
        burners
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_false_alarm_under_full_cpu_load() {
    let h = cluster(&["sub-a", "sub-b"]).await;
    deploy(&h.bus, JOB).await;

    // every subagent state change, from before the load starts
    let subscribe = h.bus.listen_raw(h.bus.subjects().subagent_changes());
    let mut changes = within(REQUEST, "subscribe", subscribe)
        .await
        .expect("subscribe to subagent changes");
    let seen: Arc<Mutex<Vec<SubagentChanged>>> = Arc::default();
    let into = seen.clone();
    let recorder = tokio::spawn(async move {
        while let Some((_, payload)) = changes.next().await {
            let change = decode(Encoding::MessagePack, &payload).expect("change decodes");
            into.lock().unwrap().push(change);
        }
    });
    let lost = || -> Vec<SubagentChanged> {
        let seen = seen.lock().unwrap();
        seen.iter()
            .filter(|c| c.state == SubagentState::Lost)
            .cloned()
            .collect()
    };

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners = Burners::start(cores * BURNERS_PER_CORE);

    // the load is real: the subagents report busy CPUs
    let bus = h.bus.clone();
    wait_until(
        Duration::from_secs(15),
        "subagents report a busy CPU",
        || {
            let bus = bus.clone();
            async move {
                let status: Result<StatusReply, _> = bus
                    .request(bus.subjects().status(), &StatusRequest {}, REQUEST)
                    .await;
                status.is_ok_and(|s| {
                    s.subagents.len() == 2
                        && s.subagents
                            .iter()
                            .all(|a| a.load.is_some_and(|l| l.cpu_percent >= 80.0))
                })
            }
        },
    )
    .await;

    let until = tokio::time::Instant::now() + LOAD_FOR;
    let mut finished = 0usize;
    let mut ran_on: BTreeMap<String, usize> = BTreeMap::new();
    while tokio::time::Instant::now() < until {
        let orders =
            (0..CONCURRENT_ORDERS).map(|_| run_to_finish(&h.bus, "short", BTreeMap::new()));
        for (fin, logs) in futures::future::join_all(orders).await {
            assert_eq!(fin.state, OrderState::Succeeded, "{fin:?}");
            assert_eq!(fin.attempt, 1, "{fin:?}");
            assert_eq!(logs.len(), 1, "{logs:?}");
            *ran_on
                .entry(fin.subagent_id.unwrap_or_default())
                .or_default() += 1;
            finished += 1;
        }
        let lost = lost();
        assert!(lost.is_empty(), "false alarm under load: {lost:?}");
    }
    drop(burners);
    recorder.abort();

    let lost = lost();
    assert!(lost.is_empty(), "false alarm under load: {lost:?}");
    assert_eq!(ran_on.len(), 2, "both subagents ran orders: {ran_on:?}");
    eprintln!("{finished} orders finished under load: {ran_on:?}");
}
