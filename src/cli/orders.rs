//! `baton order ...`: show, list, suspend, resume or cancel orders, and
//! print their logs. Like every client command, these use only the wire
//! protocol (and the log stream any NATS client can read).

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use serde::Serialize;

use super::connect;
use super::output::{self, Control};
use crate::bus::{Bus, BusError, LogsError, OrderLog};
use crate::config::Config;
use crate::protocol::*;

/// Lines of each step attempt that `order show` prints.
const TAIL_LINES: usize = 5;
/// The most orders a list may ask for (the broker's cap).
const LIST_MAX: u32 = 10_000;

/// One order, or a list of them.
#[derive(Debug, clap::Subcommand)]
pub enum OrderCommand {
    /// Print one order: its state, outcome and times
    ///
    /// For a workflow order also its steps, the history of its step
    /// attempts (subagent, start, end, outcome, the order that ran each)
    /// and the last lines of each attempt's log. For the order of one step
    /// of a workflow order, which step of which workflow order it runs.
    Show {
        /// The order id `baton submit` printed
        order_id: String,
        /// Print the order (an OrderInfo) as JSON
        #[arg(long)]
        json: bool,
    },
    /// List orders, newest first, by workflow, job, state and time
    ///
    /// The broker lists every unfinished order it holds and the newest
    /// finished ones (older ones stay in its journal). The orders that run
    /// the steps of workflow orders are left out unless --steps or --job.
    List(ListArgs),
    /// Hold a workflow order before its next step
    ///
    /// A running step finishes first (the order is `suspending` until then),
    /// or is killed with --kill and runs again on resume. Continue with
    /// `baton order resume`. Suspending a suspended order changes nothing.
    Suspend {
        /// The workflow order's id
        order_id: String,
        /// Kill the running steps now (SIGTERM, grace, SIGKILL); they run
        /// again on resume
        #[arg(long)]
        kill: bool,
        /// Print the order (an OrderInfo) as JSON
        #[arg(long)]
        json: bool,
    },
    /// Continue a suspended or failed workflow order
    ///
    /// A suspending order just goes on. A failed order runs its failed steps
    /// again, unless --force-succeeded counts them as succeeded; --from
    /// starts again from an earlier (or later) step.
    Resume {
        /// The workflow order's id
        order_id: String,
        /// Run again from this step: it and every step after it run (again);
        /// the steps it waits for count as done
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// Count the failed steps as succeeded instead of running them again
        #[arg(long)]
        force_succeeded: bool,
        /// Print the order (an OrderInfo) as JSON
        #[arg(long)]
        json: bool,
    },
    /// Cancel an order (a workflow order with all its steps)
    ///
    /// A waiting order ends cancelled at once; a running task, or a workflow
    /// order's running steps, finish first (`cancelling` until then), or are
    /// killed now with --kill. A failed workflow order stays resumable until
    /// it is cancelled. Cancelling a cancelled order changes nothing.
    Cancel {
        /// The order id
        order_id: String,
        /// Kill the running task or steps now (SIGTERM, grace, SIGKILL)
        /// instead of letting them finish
        #[arg(long)]
        kill: bool,
        /// Print the order (an OrderInfo) as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print an order's output, kept in JetStream for nats.log_retention
    ///
    /// Stdout lines go to stdout, stderr lines to stderr. A workflow order's
    /// lines start with "[STEP] " unless --step picks one step. The lines of
    /// the order that ran one step of a workflow order are kept with its
    /// workflow order: given such an order, its lines of that order print.
    Logs {
        /// The order id
        order_id: String,
        /// Only this workflow step's lines (for a plain order: its job)
        #[arg(long, value_name = "STEP")]
        step: Option<String>,
        /// Keep printing lines as they come, until the order has finished
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print each line as one JSON object (a `log` event) per line
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only orders through this workflow (with --steps, its step orders too)
    #[arg(long, value_name = "WORKFLOW")]
    pub workflow: Option<String>,
    /// Only orders of this job, the orders of workflow steps running it included
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Only orders in this state: accepted, running, suspending, suspended,
    /// cancelling, succeeded, failed or cancelled
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<OrderState>,
    /// Only orders accepted at or after WHEN: a duration meaning that long
    /// ago (30m, 2h, 1day) or an RFC 3339 time (2026-01-31T08:00:00Z)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,
    /// Only orders accepted before WHEN (written as for --since)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub until: Option<When>,
    /// Include the orders that run the steps of workflow orders
    #[arg(long)]
    pub steps: bool,
    /// At most this many orders [default: 100]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LIST_MAX as i64))]
    pub limit: Option<u32>,
    /// Print the reply (an OrderList) as JSON
    #[arg(long)]
    pub json: bool,
}

/// A time from the command line: that long before now, or a point in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Ago(Duration),
    /// Milliseconds since the Unix epoch.
    At(u64),
}

impl When {
    /// Milliseconds since the Unix epoch, counting back from `now_ms`.
    pub fn at_ms(self, now_ms: u64) -> u64 {
        match self {
            When::Ago(d) => now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            When::At(ms) => ms,
        }
    }
}

/// Parses WHEN: a humantime duration (`90s`, `2h`, `1day`) or an RFC 3339
/// time, with an offset (`2026-01-31T08:00:00+01:00`) or without (UTC).
pub fn parse_when(s: &str) -> Result<When, String> {
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(When::Ago(d));
    }
    let ms = chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
        .or_else(|| {
            let t = humantime::parse_rfc3339_weak(s).ok()?;
            let d = t.duration_since(UNIX_EPOCH).ok()?;
            i64::try_from(d.as_millis()).ok()
        });
    match ms {
        Some(ms) if ms >= 0 => Ok(When::At(ms as u64)),
        Some(_) => Err(format!("{s} is before 1970")),
        None => Err(format!(
            "'{s}' is neither a duration (30m, 2h, 1day: that long ago) \
             nor an RFC 3339 time (2026-01-31T08:00:00Z)"
        )),
    }
}

const STATES: [OrderState; 8] = [
    OrderState::Accepted,
    OrderState::Running,
    OrderState::Suspending,
    OrderState::Suspended,
    OrderState::Cancelling,
    OrderState::Succeeded,
    OrderState::Failed,
    OrderState::Cancelled,
];

/// Parses an order state by its name.
pub fn parse_state(s: &str) -> Result<OrderState, String> {
    STATES
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = STATES.iter().map(|state| state.as_str()).collect();
            format!("unknown state '{s}': use one of {}", names.join(", "))
        })
}

pub async fn run(config: &Config, command: OrderCommand) -> anyhow::Result<()> {
    // bad input is an error before any cluster is asked
    let list_request = match &command {
        OrderCommand::List(args) => Some(list_request(args, crate::time::now_ms())?),
        OrderCommand::Logs { order_id, .. } if !subjects::is_valid_token(order_id) => {
            bail!("'{order_id}' is not an order id");
        }
        _ => None,
    };
    let bus = connect(config, "baton-cli", false).await?;
    let s = bus.subjects().clone();
    match command {
        OrderCommand::Show { order_id, json } => show(config, &bus, order_id, json).await,
        OrderCommand::List(args) => {
            let request = list_request.expect("built above");
            list(config, &bus, request, args.json).await
        }
        OrderCommand::Logs {
            order_id,
            step,
            follow,
            json,
        } => logs(config, &bus, &order_id, step, follow, json).await,
        OrderCommand::Suspend {
            order_id,
            kill,
            json,
        } => {
            let request = SuspendOrder { order_id, kill };
            let info = command_order(config, &bus, s.order_suspend(), &request).await?;
            print_control(&info, Control::Suspend, kill, json)
        }
        OrderCommand::Resume {
            order_id,
            from,
            force_succeeded,
            json,
        } => {
            let request = ResumeOrder {
                order_id,
                from,
                force_succeeded,
            };
            let info = command_order(config, &bus, s.order_resume(), &request).await?;
            print_control(&info, Control::Resume, false, json)
        }
        OrderCommand::Cancel {
            order_id,
            kill,
            json,
        } => {
            let request = CancelOrder { order_id, kill };
            let info = command_order(config, &bus, s.order_cancel(), &request).await?;
            print_control(&info, Control::Cancel, kill, json)
        }
    }
}

/// Sends an order command; the broker's error (no such order, not allowed
/// now) comes back as it is.
async fn command_order<R: Serialize>(
    config: &Config,
    bus: &Bus,
    subject: String,
    request: &R,
) -> Result<OrderInfo, BusError> {
    bus.request(subject, request, config.nats.request_timeout)
        .await
}

fn print_control(info: &OrderInfo, command: Control, kill: bool, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
    } else {
        println!("{}", output::control_line(command, info, kill));
    }
    Ok(())
}

async fn show(config: &Config, bus: &Bus, order_id: String, json: bool) -> anyhow::Result<()> {
    let info: OrderInfo = bus
        .request(
            bus.subjects().order_get(),
            &GetOrder { order_id },
            config.nats.request_timeout,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    let mut text = output::order_text(&info);
    if info.workflow.is_some() && !info.history.is_empty() {
        step_tails(config, bus, &info, &mut text).await;
    }
    print!("{text}");
    Ok(())
}

/// The last lines of each step attempt of workflow order `info`, read from
/// the log stream; when they cannot be read, one line that says why.
async fn step_tails(config: &Config, bus: &Bus, info: &OrderInfo, out: &mut String) {
    use std::fmt::Write as _;
    let mut tails = output::StepTails::new(&info.order_id, &info.history, TAIL_LINES);
    let read = async {
        let mut logs = bus
            .order_logs(&config.log_stream(), &info.order_id, false)
            .await?;
        while let Some(item) = logs.next().await {
            if let OrderLog::Line(line) = item? {
                tails.push(line);
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let limit = config.nats.request_timeout;
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) => tails.render(out),
        Ok(Err(e)) => {
            let _ = writeln!(out, "logs: not shown: {e:#}");
        }
        Err(_) => {
            tails.render(out);
            let _ = writeln!(
                out,
                "logs: stopped reading after {}; `baton order logs {}` prints them all",
                humantime::format_duration(limit),
                info.order_id
            );
        }
    }
}

/// The request of `order list`, with WHEN counted back from `now_ms`.
fn list_request(args: &ListArgs, now_ms: u64) -> anyhow::Result<ListOrders> {
    let since_ms = args.since.map(|w| w.at_ms(now_ms));
    let until_ms = args.until.map(|w| w.at_ms(now_ms));
    if let (Some(since), Some(until)) = (since_ms, until_ms) {
        if since >= until {
            let time =
                |ms| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
            bail!(
                "--since ({}) is not before --until ({}), so no order can match; swap them",
                time(since),
                time(until)
            );
        }
    }
    Ok(ListOrders {
        workflow: args.workflow.clone(),
        job: args.job.clone(),
        state: args.state,
        since_ms,
        until_ms,
        steps: args.steps,
        limit: args.limit,
    })
}

async fn list(config: &Config, bus: &Bus, request: ListOrders, json: bool) -> anyhow::Result<()> {
    let reply: OrderList = bus
        .request(
            bus.subjects().order_list(),
            &request,
            config.nats.request_timeout,
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
        return Ok(());
    }
    if reply.orders.is_empty() {
        eprintln!(
            "no orders match (the broker lists every unfinished order and the newest finished ones)"
        );
        return Ok(());
    }
    print!("{}", output::order_list_text(&reply));
    if reply.truncated {
        eprintln!(
            "showing the newest {} orders; more match: use --limit N (up to {LIST_MAX}) \
             or narrower filters (--since, --state, ...)",
            reply.orders.len()
        );
    }
    Ok(())
}

/// `baton order logs`: prints the order's stored lines; with `follow`, new
/// ones as they come until the order's `finished` event (or, should that
/// never be stored, until the broker says the order is final and no line
/// came for a while). The lines of a step order are its workflow order's.
async fn logs(
    config: &Config,
    bus: &Bus,
    order_id: &str,
    step: Option<String>,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    // only to find a step order's workflow order: the stream keeps lines
    // of orders the broker no longer holds
    let timeout = config.nats.request_timeout;
    let get = GetOrder {
        order_id: order_id.to_string(),
    };
    let info: Option<OrderInfo> = bus
        .request(
            bus.subjects().order_get(),
            &get,
            timeout.min(Duration::from_secs(3)),
        )
        .await
        .ok();
    let workflow = info.as_ref().is_some_and(|i| i.workflow.is_some());
    let parent = info.and_then(|i| i.parent);
    let (read_id, mut printer) = match &parent {
        Some(p) => {
            if let Some(other) = step.as_ref().filter(|s| **s != p.step) {
                bail!(
                    "order {order_id} runs step {} of workflow order {}, not step {other}; \
                     for that step's lines use `baton order logs {} --step {other}`",
                    p.step,
                    p.order_id,
                    p.order_id
                );
            }
            eprintln!(
                "order {order_id} runs step {} (attempt {}) of workflow order {}: \
                 printing that order's lines of this attempt",
                p.step, p.attempt, p.order_id
            );
            let printer = LogPrinter::new(Some(p.step.clone()), json).of_order(order_id);
            (p.order_id.clone(), printer)
        }
        None => (order_id.to_string(), LogPrinter::new(step, json)),
    };
    let unknown = || {
        anyhow::anyhow!(
            "no logs for order {order_id}: unknown order, not run yet, or older than the retention ({})",
            humantime::format_duration(config.nats.log_retention)
        )
    };
    let mut logs = match bus.order_logs(&config.log_stream(), &read_id, follow).await {
        Ok(logs) => logs,
        Err(e @ LogsError::NoStream { .. }) => bail!("no logs for order {order_id}: {e}"),
        Err(LogsError::Bus(e)) => return Err(e.into()),
    };
    let mut stored = false;
    // the first tick, at once, only asks whether the broker knows the order
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut quiet = false;
    loop {
        tokio::select! {
            item = logs.next() => {
                let Some(item) = item else { break };
                stored = true;
                quiet = false;
                match item? {
                    OrderLog::Line(line) => match printer.print(&line) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => return Err(e.into()),
                    },
                    OrderLog::Finished(f) if follow => {
                        // a failed workflow order may have been resumed since
                        let resumable = workflow && parent.is_none() && f.state == OrderState::Failed;
                        if !resumable || finished_for_good(config, bus, order_id, &f).await {
                            break;
                        }
                    }
                    OrderLog::Finished(_) => {}
                }
            }
            _ = poll.tick(), if follow => {
                let was_quiet = std::mem::replace(&mut quiet, true);
                let info: Result<OrderInfo, _> = bus
                    .request(bus.subjects().order_get(), &get, timeout)
                    .await;
                match info {
                    Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound && !stored => {
                        return Err(unknown());
                    }
                    Ok(info) if was_quiet && info.state.is_final() => break,
                    _ => {}
                }
            }
        }
    }
    if !stored {
        return Err(unknown());
    }
    match &parent {
        Some(p) if printer.printed == 0 => bail!(
            "no lines of order {order_id} (step {} attempt {} of workflow order {}) so far",
            p.step,
            p.attempt,
            p.order_id
        ),
        Some(_) => Ok(()),
        None => printer.check_step(order_id),
    }
}

/// Whether the stored `finished` event `f` is the order's last: it is not
/// when the order was resumed after it (asked of the broker; when it cannot
/// tell, it is).
async fn finished_for_good(config: &Config, bus: &Bus, order_id: &str, f: &OrderFinished) -> bool {
    let get = GetOrder {
        order_id: order_id.to_string(),
    };
    let info: Result<OrderInfo, _> = bus
        .request(
            bus.subjects().order_get(),
            &get,
            config.nats.request_timeout,
        )
        .await;
    match info {
        Ok(info) => info.state.is_final() && info.finished_at_ms.is_none_or(|t| t <= f.at_ms),
        Err(_) => true,
    }
}

/// Prints an order's stored lines for `baton order logs`: stdout lines to
/// stdout and stderr lines to stderr, as `submit --wait` does, or every
/// line to stdout as a JSON `log` event.
struct LogPrinter {
    /// Only lines of this step: a workflow step, or a plain order's job.
    step: Option<String>,
    /// Only lines of the tasks of this order (one attempt of a step).
    order: Option<String>,
    json: bool,
    printed: usize,
    /// The steps that had lines, for the error when `step` matched none.
    steps: BTreeSet<String>,
}

impl LogPrinter {
    fn new(step: Option<String>, json: bool) -> LogPrinter {
        LogPrinter {
            step,
            order: None,
            json,
            printed: 0,
            steps: BTreeSet::new(),
        }
    }

    fn of_order(self, order_id: &str) -> LogPrinter {
        LogPrinter {
            order: Some(order_id.to_string()),
            ..self
        }
    }

    /// Whether `log` is printed: of the step asked for (a workflow step, or
    /// a plain order's job) and, for a step order, of its tasks.
    fn keeps(&self, log: &TaskLog) -> bool {
        let step = log.step.as_deref().unwrap_or(&log.job);
        self.step.as_ref().is_none_or(|s| s == step)
            && self
                .order
                .as_ref()
                .is_none_or(|o| output::task_of(&log.task_id, o))
    }

    fn print(&mut self, log: &TaskLog) -> std::io::Result<()> {
        use std::io::Write as _;
        if !self.keeps(log) {
            let step = log.step.as_deref().unwrap_or(&log.job);
            self.steps.insert(step.to_string());
            return Ok(());
        }
        self.printed += 1;
        if self.json {
            let mut v = serde_json::to_value(log).expect("events encode as JSON");
            v["event"] = serde_json::Value::from(EventKind::Log.token());
            return writeln!(std::io::stdout(), "{v}");
        }
        let text = output::log_text(log, self.step.is_none());
        match log.stream {
            LogStream::Stdout => writeln!(std::io::stdout(), "{text}"),
            LogStream::Stderr => writeln!(std::io::stderr(), "{text}"),
        }
    }

    /// An error when `--step` named a step that printed nothing.
    fn check_step(&self, order_id: &str) -> anyhow::Result<()> {
        match &self.step {
            Some(step) if self.printed == 0 => {
                let others = if self.steps.is_empty() {
                    "none".to_string()
                } else {
                    self.steps.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                bail!("no lines of step {step} in order {order_id} (steps with output: {others})")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    #[test]
    fn when_is_a_duration_ago_or_a_time() {
        assert_eq!(parse_when("1h"), Ok(When::Ago(Duration::from_secs(3600))));
        assert_eq!(parse_when("1h").unwrap().at_ms(10 * HOUR_MS), 9 * HOUR_MS);
        assert_eq!(
            parse_when("2days").unwrap().at_ms(HOUR_MS),
            0,
            "not before 1970"
        );
        let utc = parse_when("2026-01-31T08:00:00Z").unwrap();
        assert_eq!(utc, When::At(1_769_846_400_000));
        assert_eq!(
            utc.at_ms(0),
            1_769_846_400_000,
            "a time does not depend on now"
        );
        assert_eq!(
            parse_when("2026-01-31T09:00:00+01:00"),
            Ok(utc),
            "an offset counts"
        );
        assert_eq!(
            parse_when("2026-01-31T08:00:00.250Z"),
            Ok(When::At(1_769_846_400_250))
        );
        assert_eq!(parse_when("2026-01-31 08:00:00"), Ok(utc), "no offset: UTC");
    }

    #[test]
    fn when_errors_name_both_forms() {
        let e = parse_when("yesterday").unwrap_err();
        assert!(
            e.contains("'yesterday'") && e.contains("30m") && e.contains("RFC 3339"),
            "{e}"
        );
        assert!(parse_when("2026-13-01T00:00:00Z").is_err());
        assert!(parse_when("").is_err());
        assert!(parse_when("1969-12-31T23:00:00Z")
            .unwrap_err()
            .contains("before 1970"));
    }

    #[test]
    fn states_parse_by_name_and_errors_list_them() {
        for state in STATES {
            assert_eq!(parse_state(state.as_str()), Ok(state));
        }
        let e = parse_state("done").unwrap_err();
        assert!(
            e.contains("'done'") && e.contains("suspended, cancelling"),
            "{e}"
        );
    }

    fn list_args(since: Option<&str>, until: Option<&str>) -> ListArgs {
        ListArgs {
            workflow: Some("nightly".into()),
            job: None,
            state: Some(OrderState::Failed),
            since: since.map(|w| parse_when(w).unwrap()),
            until: until.map(|w| parse_when(w).unwrap()),
            steps: true,
            limit: Some(5),
            json: false,
        }
    }

    #[test]
    fn a_list_request_counts_back_from_now() {
        let now = 10 * HOUR_MS;
        let r = list_request(&list_args(Some("2h"), Some("1h")), now).unwrap();
        assert_eq!(r.since_ms, Some(8 * HOUR_MS));
        assert_eq!(r.until_ms, Some(9 * HOUR_MS));
        assert_eq!(r.workflow.as_deref(), Some("nightly"));
        assert_eq!(r.state, Some(OrderState::Failed));
        assert!(r.steps);
        assert_eq!(r.limit, Some(5));
        let none = list_request(&list_args(None, None), now).unwrap();
        assert_eq!((none.since_ms, none.until_ms), (None, None));
    }

    #[test]
    fn since_after_until_is_an_error_that_says_so() {
        let e = list_request(&list_args(Some("1h"), Some("2h")), 10 * HOUR_MS).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("--since") && e.contains("swap them"), "{e}");
    }

    fn line(job: &str, step: Option<&str>, task: &str) -> TaskLog {
        TaskLog {
            order_id: "flow".into(),
            job: job.into(),
            task_id: task.into(),
            subagent_id: "sub-1".into(),
            stream: LogStream::Stdout,
            step: step.map(Into::into),
            seq: 1,
            line: "hello".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn step_picks_a_workflow_steps_lines_or_a_plain_orders_job() {
        let build = line("compile", Some("build"), "so1-1");
        let plain = line("compile", None, "o1-1");
        let all = LogPrinter::new(None, false);
        assert!(all.keeps(&build) && all.keeps(&plain));
        let step = LogPrinter::new(Some("build".into()), false);
        assert!(step.keeps(&build));
        assert!(!step.keeps(&line("compile", Some("test"), "so2-1")));
        assert!(
            !step.keeps(&line("build", Some("other"), "so2-1")),
            "the step, not the job"
        );
        let job = LogPrinter::new(Some("compile".into()), false);
        assert!(job.keeps(&plain) && !job.keeps(&build));
    }

    #[test]
    fn a_step_order_keeps_only_its_own_tasks_lines() {
        let printer = LogPrinter::new(Some("build".into()), false).of_order("so1");
        assert!(printer.keeps(&line("compile", Some("build"), "so1-1")));
        assert!(printer.keeps(&line("compile", Some("build"), "so1-2")));
        assert!(!printer.keeps(&line("compile", Some("build"), "so12-1")));
        assert!(!printer.keeps(&line("compile", Some("build"), "so2-1")));
    }
}
