//! `baton bench failover-subagent`: a stream of tasks over a three-member
//! subagent cluster. Each round kills a busy subagent with SIGKILL, measures
//! from the kill to (a) the broker announcing it lost and (b) the last of its
//! tasks starting again on another subagent, then restarts it. Per scheduling
//! mode and per path to proof of death it prints p50/p99/max over the
//! rounds, and whether any order ran twice or overlapped, judged by marker
//! files the tasks write themselves. The paths: `certificate` kills the
//! subagent alone (its reaper certifies the death); `fallback` kills its
//! reaper first, so nothing certifies and the broker waits for the
//! subagent's orphan timeout and kill grace.
//!
//! Times are wall-clock milliseconds: the kill's, and the `at_ms` of the
//! broker's and subagents' events (one host, one clock), so the bench's own
//! delays in reading events do not count.

mod feed;
mod report;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use nix::sys::signal::Signal;

use feed::{Event, Feed};
use report::{judge, print_table, FailoverReport, ModeReport, Settings};

use super::client::{deploy_jobs, member, request_deploy, sh_job};
use super::report::Latency;
use super::setup::{CommonArgs, LocalBench, Setup};
use crate::bus::Bus;
use crate::launch::LocalCluster;
use crate::protocol::*;
use crate::time::now_ms;
use crate::time::parse_duration;

/// The cluster's members, highest priority first in fixed-priority mode.
pub(super) const SUBAGENTS: [&str; 3] = ["sub-1", "sub-2", "sub-3"];
/// Longest wait for each step of a round: a busy victim, its loss and the
/// rerun of its tasks, its return after the restart.
const ROUND_LIMIT: Duration = Duration::from_secs(40);
/// Longest wait, beyond one task's duration, for a mode's last orders.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// The task: writes `start`/`end` markers to `<dir>/markers`. When a copy
/// of the same order ran before (its pid is in `<dir>/<order>.pid`), it
/// records in `<dir>/overlaps` whether that process is alive (with the same
/// BATON_ORDER_ID in its environment, so neither a zombie nor a reused pid
/// counts), and in `<dir>/strays` how many live processes its process group
/// still has (what the reaper did not kill). `$1` is
/// the marker folder, `$2` the seconds to sleep; no `{{` anywhere, so the
/// broker substitutes nothing.
const TASK_SCRIPT: &str = r#"d="$1"; secs="$2"; o="$BATON_ORDER_ID"
if [ -f "$d/$o.pid" ]; then
  old=$(cat "$d/$o.pid")
  if [ "$old" != "$$" ]; then
    if [ -d /proc/self ]; then
      if tr '\0' '\n' < "/proc/$old/environ" 2>/dev/null | grep -qx "BATON_ORDER_ID=$o"; then
        echo "$o $old $$" >> "$d/overlaps"
      fi
      n=0
      for f in /proc/[0-9]*/stat; do
        line=
        read -r line 2>/dev/null < "$f" || continue
        set -- ${line##*") "}
        if [ "$3" = "$old" ] && [ "$1" != Z ]; then n=$((n + 1)); fi
      done
      if [ "$n" -gt 0 ]; then echo "$o $old $$ $n" >> "$d/strays"; fi
    elif kill -0 "$old" 2>/dev/null; then
      echo "$o $old $$" >> "$d/overlaps"
    fi
  fi
fi
echo $$ > "$d/$o.pid"
echo "start $o $$ $(date +%s%3N)" >> "$d/markers"
sleep "$secs"
echo "end $o $$ $(date +%s%3N)" >> "$d/markers"
"#;

/// How a killed subagent's death becomes known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeathPath {
    /// Its reaper certifies it.
    Certificate,
    /// Its reaper is killed first: its orphan timeout and kill grace pass.
    Fallback,
}

impl DeathPath {
    fn as_str(self) -> &'static str {
        match self {
            DeathPath::Certificate => "certificate",
            DeathPath::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// Subagents killed per scheduling mode with their reaper alive (the
    /// reaper certifies the death)
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Subagents killed per scheduling mode together with their reaper
    /// (nothing certifies; each round waits the orphan timeout and kill
    /// grace); 0 skips this path
    #[arg(long, default_value_t = 3)]
    pub fallback_rounds: usize,
    /// Scheduling modes to measure, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = parse_mode,
        default_value = "round-robin,fixed-priority"
    )]
    pub modes: Vec<SchedulingMode>,
    /// Tasks each subagent runs at once
    #[arg(long, default_value_t = 2)]
    pub capacity: u32,
    /// How long each task runs
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub task_duration: Duration,
    /// Orders in flight at once [default: what the members that survive a
    /// kill can take, so a lost task never waits for a free slot: one
    /// member's capacity in fixed-priority mode (it does not spill to lower
    /// priorities), two members' in the others]
    #[arg(short = 'c', long)]
    pub concurrency: Option<usize>,
    /// Start no new round after this long; the last orders are still awaited
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub timeout: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_mode(s: &str) -> Result<SchedulingMode, String> {
    [
        SchedulingMode::RoundRobin,
        SchedulingMode::FixedPriority,
        SchedulingMode::LeastLoaded,
    ]
    .into_iter()
    .find(|m| m.as_str() == s)
    .ok_or_else(|| format!("unknown mode {s:?}: round-robin, fixed-priority or least-loaded"))
}

pub(super) async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    args.common.progress(format_args!(
        "baton bench failover-subagent: {} certified and {} fallback rounds per mode ({}); {}",
        args.rounds,
        args.fallback_rounds,
        args.modes
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        settings.describe(),
    ));
    let stop_at = tokio::time::Instant::now() + args.timeout;
    let setup = Setup::subagents(SUBAGENTS.len(), args.capacity);
    let mut bench = LocalBench::start(setup, &args.common).await?;
    let mut modes = Vec::new();
    let paths = [
        (DeathPath::Certificate, args.rounds),
        (DeathPath::Fallback, args.fallback_rounds),
    ];
    for &mode in &args.modes {
        for (path, rounds) in paths.into_iter().filter(|(_, n)| *n > 0) {
            let run_name = format!("{}-{}", mode.as_str(), path.as_str());
            let dir = bench.evidence("markers", Some(&run_name));
            let run = Run {
                mode,
                path,
                rounds,
                dir: &dir,
            };
            match run_mode(&mut bench.cluster, &bench.bus, run, &args, stop_at).await {
                Ok(report) => modes.push(report),
                Err(e) => {
                    bench.stop();
                    return Err(e.context(run_name));
                }
            }
        }
    }
    let elapsed_s = bench.elapsed_s();
    bench.stop();

    let report = FailoverReport {
        scenario: "failover-subagent",
        subagents: SUBAGENTS.len(),
        capacity: args.capacity,
        task_duration_ms: args.task_duration.as_millis() as u64,
        settings,
        modes,
        elapsed_s,
    };
    args.common.emit(&report, print_table)
}

/// One series of rounds: a scheduling mode, a path to proof of death.
struct Run<'a> {
    mode: SchedulingMode,
    path: DeathPath,
    rounds: usize,
    dir: &'a Path,
}

async fn run_mode(
    cluster: &mut LocalCluster,
    bus: &Bus,
    run: Run<'_>,
    args: &FailoverArgs,
    stop_at: tokio::time::Instant,
) -> anyhow::Result<ModeReport> {
    let Run {
        mode,
        path,
        rounds,
        dir,
    } = run;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!("failover-{}-{}", mode.as_str(), path.as_str());
    let survivors = match mode {
        SchedulingMode::FixedPriority => 1,
        _ => SUBAGENTS.len() - 1,
    };
    let concurrency = args
        .concurrency
        .unwrap_or(survivors * args.capacity as usize)
        .max(1);
    // listen before the first order exists
    let mut feed = Feed::start(bus, &name, concurrency).await?;
    deploy(bus, &name, mode, dir, args.task_duration).await?;
    let mut report = ModeReport {
        mode: mode.as_str(),
        path: path.as_str(),
        concurrency,
        ..ModeReport::default()
    };
    let (mut lost_ms, mut rerun_ms) = (Vec::new(), Vec::new());
    let capacity = args.capacity.to_string();
    feed.feeding = true;
    for round in 0..rounds {
        if tokio::time::Instant::now() >= stop_at {
            eprintln!(
                "timed out after {:?}: {round} rounds of {}",
                args.timeout, report.mode
            );
            break;
        }
        let Some(victim) = find_victim(&mut feed, round, args.task_duration).await else {
            eprintln!(
                "no busy subagent within {ROUND_LIMIT:?}; {} stops after {round} rounds",
                report.mode
            );
            break;
        };
        let kill = kill_and_watch(&mut feed, cluster, &victim, path, &mut report).await?;
        lost_ms.extend(kill.lost_ms);
        rerun_ms.extend(kill.rerun_ms);
        restart(&mut feed, cluster, &victim, &capacity).await?;
    }
    feed.feeding = false;
    let deadline = tokio::time::Instant::now() + args.task_duration + DRAIN_LIMIT;
    while feed.in_flight() > 0 {
        if feed.step(deadline).await.is_none() {
            break;
        }
    }

    report.lost_declared_rounds = lost_ms.len();
    report.lost_declared = Latency::of(&mut lost_ms);
    report.rerun_started_rounds = rerun_ms.len();
    report.rerun_started = Latency::of(&mut rerun_ms);
    let outcome = feed.outcome();
    report.submitted = outcome.submitted;
    report.submit_errors = outcome.submit_errors;
    report.succeeded = outcome.succeeded;
    report.failed = outcome.failed;
    report.unfinished = outcome.unfinished;
    report.other_lost = outcome.other_lost;
    report.tasks_started = outcome.tasks_started;
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    let markers = judge(&read("markers"), &read("overlaps"), &read("strays"));
    report.ran_twice = markers.ran_twice;
    report.overlaps = markers.overlaps;
    report.stray_copies = markers.strays;
    report.restarted_orders = markers.restarted;
    Ok(report)
}

/// Deploys the cluster `name` (members sub-1..3; priorities 3, 2, 1) and a
/// restartable job of the same name that runs [`TASK_SCRIPT`] in it.
async fn deploy(
    bus: &Bus,
    name: &str,
    mode: SchedulingMode,
    dir: &Path,
    duration: Duration,
) -> anyhow::Result<()> {
    let members = SUBAGENTS
        .iter()
        .enumerate()
        .map(|(i, id)| member(id, (SUBAGENTS.len() - i) as i32))
        .collect();
    let job = JobSpec {
        timeout_ms: Some((duration + Duration::from_secs(60)).as_millis() as u64),
        description: Some("sleeps, writing start and end markers".into()),
        cluster: Some(name.into()),
        ..sh_job(
            name,
            TASK_SCRIPT,
            "baton-bench-task",
            vec![
                dir.display().to_string(),
                format!("{:.3}", duration.as_secs_f64()),
            ],
        )
    };
    let request = DeployRequest {
        clusters: vec![ClusterSpec {
            name: name.into(),
            mode,
            members,
        }],
        ..deploy_jobs(vec![job])
    };
    request_deploy(bus, &request).await
}

/// Waits for every subagent to be up and one of them to run a task that
/// started since this call (not a rerun from the last round, so the stream
/// moves on), a little while ago and far from its end; tries the subagents in
/// turn from `round`.
async fn find_victim(feed: &mut Feed, round: usize, duration: Duration) -> Option<String> {
    let since = Instant::now();
    let ages = Duration::from_millis(50)..=(duration / 2).max(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        let pick = (0..SUBAGENTS.len())
            .map(|i| SUBAGENTS[(round + i) % SUBAGENTS.len()])
            .find(|id| feed.all_up() && feed.busy(id, since, &ages));
        if let Some(id) = pick {
            return Some(id.to_string());
        }
        // tasks age without events: look again at least every 20 ms
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return None;
        }
        feed.step(deadline.min(now + Duration::from_millis(20)))
            .await;
    }
}

/// What one kill measured.
struct Kill {
    lost_ms: Option<f64>,
    rerun_ms: Option<f64>,
}

/// SIGKILLs `victim` (on the fallback path its reaper first) and follows
/// events until it is declared lost and each of its tasks has started on
/// another subagent (or [`ROUND_LIMIT`] passes).
async fn kill_and_watch(
    feed: &mut Feed,
    cluster: &mut LocalCluster,
    victim: &str,
    path: DeathPath,
    report: &mut ModeReport,
) -> anyhow::Result<Kill> {
    let mut pending = feed.running_on(victim);
    let reaper = cluster.pid(victim).and_then(crate::launch::reaper_of);
    let killed_at = now_ms();
    feed.killed = Some(victim.to_string());
    if path == DeathPath::Fallback {
        let reaper = reaper.with_context(|| format!("{victim} has no reaper to kill"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(reaper as i32), Signal::SIGKILL)?;
    }
    cluster.signal(victim, Signal::SIGKILL)?;
    report.rounds += 1;
    report.lost_tasks += pending.len();
    let since_kill = |at_ms: u64| at_ms.saturating_sub(killed_at) as f64;
    let (mut lost_ms, mut rerun_at) = (None, None);
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    while lost_ms.is_none() || !pending.is_empty() {
        let Some(event) = feed.step(deadline).await else {
            break;
        };
        match event {
            Event::Changed(c)
                if c.state == SubagentState::Lost
                    && c.subagent_id == victim
                    && lost_ms.is_none() =>
            {
                lost_ms = Some(since_kill(c.at_ms));
                *report.lost_reasons.entry(c.reason).or_default() += 1;
            }
            Event::Started(s)
                if s.subagent_id != victim
                    && pending.get(&s.order_id).is_some_and(|&a| s.attempt > a) =>
            {
                pending.remove(&s.order_id);
                report.rerun_elsewhere += 1;
                rerun_at = rerun_at.max(Some(s.at_ms));
            }
            Event::Finished(f) => {
                if let Some(attempt) = pending.remove(&f.order_id) {
                    if f.attempt <= attempt && f.state == OrderState::Succeeded {
                        // it ended before the kill: nothing was lost
                        report.lost_tasks -= 1;
                    } else {
                        report.not_rerun += 1;
                    }
                }
            }
            _ => {}
        }
    }
    report.not_rerun += pending.len();
    let rerun_ms = rerun_at.filter(|_| pending.is_empty()).map(since_kill);
    Ok(Kill { lost_ms, rerun_ms })
}

/// Starts `victim` again under its id and waits until the broker has it back.
async fn restart(
    feed: &mut Feed,
    cluster: &mut LocalCluster,
    victim: &str,
    capacity: &str,
) -> anyhow::Result<()> {
    let restarted_at = now_ms();
    cluster.spawn_subagent(victim, &["--capacity", capacity])?;
    let deadline = tokio::time::Instant::now() + ROUND_LIMIT;
    loop {
        match feed.step(deadline).await {
            Some(Event::Changed(c))
                if c.subagent_id == victim
                    && c.state == SubagentState::Available
                    && c.at_ms >= restarted_at =>
            {
                feed.killed = None;
                return Ok(());
            }
            Some(_) => {}
            None => bail!("{victim} was not available again within {ROUND_LIMIT:?} of its restart"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_by_their_names() {
        assert_eq!(parse_mode("round-robin"), Ok(SchedulingMode::RoundRobin));
        assert_eq!(
            parse_mode("fixed-priority"),
            Ok(SchedulingMode::FixedPriority)
        );
        assert!(parse_mode("random").is_err());
    }

    #[test]
    fn the_task_script_has_no_placeholders() {
        assert!(!TASK_SCRIPT.contains("{{"));
    }
}
