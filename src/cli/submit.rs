//! `baton submit`: submits an order (retried with the same request id
//! through a broker fail-over) and, with --wait, follows it: why it waits
//! for a subagent (once per reason), its output, a workflow order's
//! progress and step lines, and its final state, which sets the exit code.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::stream::LocalBoxStream;
use futures::StreamExt;

use super::client::parse_key_value;
use super::output;
use super::{connect, parse_duration, EXIT_ORDER_FAILED};
use crate::bus::{decode, Bus, BusError, Encoding, OrderLog};
use crate::config::Config;
use crate::protocol::*;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Name of a deployed job or workflow (`baton job list` lists them)
    #[arg(value_name = "NAME")]
    pub job: String,
    /// A parameter the job (or, for a workflow, its steps) takes, as
    /// NAME=VALUE; repeat for more
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// Follow the order: print its output (a workflow step's lines start
    /// with "[STEP] "), a workflow order's progress, and its final state;
    /// exit 1 unless it succeeded
    #[arg(long, short = 'w')]
    pub wait: bool,
    /// With --wait only: give up waiting after this long, e.g. 30s or 5m
    /// (exit 2; the order goes on). Without it, --wait waits until the
    /// order ends, however long that takes
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Idempotency key: a repeated submit with the same id returns the first order
    /// [default: a new one; the submit is retried with it through a broker fail-over]
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
}
/// Sends a submit, retrying with the same request id while no broker
/// answers (a fail-over: no responders, a timeout, `unavailable`, `busy`),
/// for up to `timeout` in all. Says once that it retries; an error names
/// whether a broker refused the submit or none answered.
async fn submit_retrying(
    bus: &Bus,
    request: &SubmitOrder,
    timeout: Duration,
) -> anyhow::Result<SubmitReply> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let attempt = left
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(200));
        let error = match bus.request(bus.subjects().submit(), request, attempt).await {
            Ok(reply) => return Ok(reply),
            Err(e @ (BusError::NoResponders { .. } | BusError::TimedOut { .. })) => e,
            Err(BusError::Remote(e))
                if matches!(e.error.code, ErrorCode::Unavailable | ErrorCode::Busy) =>
            {
                BusError::Remote(e)
            }
            Err(e) => {
                let job = &request.job;
                return Err(anyhow::Error::new(e).context(format!("submit of '{job}' refused")));
            }
        };
        if std::time::Instant::now() + pause >= deadline {
            bail!(
                "no broker answered the submit of '{}' within {} ({tries} tries; the last: {error}); \
                 check that a broker runs and reaches NATS (`baton status`)",
                request.job,
                humantime::format_duration(timeout)
            );
        }
        if tries == 1 {
            eprintln!(
                "no broker answered ({error}); retrying with the same request id for up to {}",
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
impl SubmitArgs {
    /// Refuses flags that would be silently ignored.
    fn check(&self) -> anyhow::Result<()> {
        if self.timeout.is_some() && !self.wait {
            bail!(
                "--timeout bounds how long --wait follows the order, and a submit without \
                 --wait returns as soon as the order is accepted: add --wait, or drop --timeout \
                 (a job's own run time limit is its `timeout` in the deploy file)"
            );
        }
        Ok(())
    }
}

pub async fn submit(config: &Config, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    args.check()?;
    if !subjects::is_valid_token(&args.job) {
        bail!(
            "'{}' is not a job or workflow name: names use letters, digits, '-' and '_'",
            args.job
        );
    }
    let bus = connect(config, "baton-cli", false).await?;
    let s = bus.subjects().clone();
    // subscribe before submitting, so no event of the new order is missed
    let events = if args.wait {
        Some(bus.listen_raw(s.job_events(&args.job)).await?)
    } else {
        None
    };
    let params: BTreeMap<String, String> = args.params.into_iter().collect();
    // Always idempotent: through a broker fail-over the submit is retried
    // with the same request id, and makes one order either way.
    let request_id = args
        .request_id
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7()));
    let request = SubmitOrder {
        job: args.job.clone(),
        params,
        request_id: Some(request_id),
        slot_ms: None,
    };
    let reply = submit_retrying(&bus, &request, config.nats.request_timeout).await?;
    let Some(events) = events else {
        println!("{}", reply.order_id);
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!(
        "order {} {} for {}",
        reply.order_id,
        if reply.duplicate {
            "(already submitted)"
        } else {
            "accepted"
        },
        reply.job
    );
    follow(&bus, config, &reply.order_id, events, args.timeout).await
}

/// Step lines of a workflow order for [`follow`], and whether they end
/// with the order's `finished` event (the log stream's do).
type StepLines = (LocalBoxStream<'static, Result<OrderLog, BusError>>, bool);

/// After the order's `finished` event, how long to wait for the log
/// stream's copy of it, before which all step lines are stored.
const STEP_LINES_DRAIN: Duration = Duration::from_secs(3);

/// Prints one order's events until it finishes. Asks the broker for the
/// order's state now and then, in case its final event was missed.
///
/// A workflow order's step lines are published under the step's job (see
/// `TaskLog::step`), so they are read from the log stream, from its start,
/// once the first `changed` event shows the order is a workflow order.
async fn follow(
    bus: &Bus,
    config: &Config,
    order_id: &str,
    mut events: impl futures::Stream<Item = (String, bytes::Bytes)> + Unpin,
    timeout: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let s = bus.subjects().clone();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    poll.tick().await;
    let mut steps: Option<StepLines> = None;
    // the `finished` event, while the step lines before it are read
    let mut ended: Option<(OrderFinished, tokio::time::Instant)> = None;
    // the last reason it was said to wait for a subagent
    let mut waiting: Option<String> = None;
    loop {
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let step_line = async {
            match steps.as_mut() {
                Some((lines, _)) => lines.next().await,
                None => std::future::pending().await,
            }
        };
        let drained = async {
            match &ended {
                Some((_, at)) => tokio::time::sleep_until(*at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next() => {
                let Some((subject, payload)) = event else { bail!("event subscription closed") };
                let Some((_, id, kind)) = s.parse_event(&subject) else { continue };
                if id != order_id || output::written_by_another(&s, &subject, kind, &payload) {
                    continue;
                }
                match kind {
                    EventKind::Log => {
                        if let Ok(log) = decode::<TaskLog>(Encoding::MessagePack, &payload) {
                            // a step's lines come from `steps`
                            if log.step.is_none() {
                                print_line(&log);
                            }
                        }
                    }
                    EventKind::Started => {
                        if let Ok(e) = decode::<TaskStarted>(Encoding::MessagePack, &payload) {
                            eprintln!("started on {} (attempt {})", e.subagent_id, e.attempt);
                        }
                    }
                    EventKind::Changed => {
                        let Ok(e) = decode::<OrderChanged>(Encoding::MessagePack, &payload) else { continue };
                        if let Some(why) = &e.waiting {
                            // said once per reason, here or by the poll below
                            if waiting.as_ref() != Some(why) {
                                eprintln!("{}", output::changed_text(&e));
                                waiting = Some(why.clone());
                            }
                            if e.step.is_none() {
                                // a job order waiting: no workflow, no step lines
                                continue;
                            }
                        } else {
                            // the order's end: the `finished` line says it; that
                            // it started running: its first step's line says it
                            // (and comes first), only a resume is news
                            let started = e.step.is_none()
                                && e.state == OrderState::Running
                                && e.what == OrderState::Running.as_str();
                            if (e.step.is_some() || !e.state.is_final()) && !started {
                                eprintln!("{}", output::changed_text(&e));
                            }
                        }
                        if steps.is_none() {
                            steps = step_lines(bus, config, order_id).await;
                        }
                    }
                    EventKind::Finished => {
                        let e: OrderFinished = decode(Encoding::MessagePack, &payload)?;
                        match &steps {
                            Some((_, true)) => ended = Some((e, tokio::time::Instant::now() + STEP_LINES_DRAIN)),
                            _ => return Ok(finished(&e)),
                        }
                    }
                    EventKind::Accepted => {}
                }
            }
            line = step_line => match line {
                Some(Ok(OrderLog::Line(log))) => {
                    if log.step.is_some() {
                        print_line(&log);
                    }
                }
                // stored after every line of the order
                Some(Ok(OrderLog::Finished(e))) => return Ok(finished(&e)),
                Some(Err(e)) => {
                    eprintln!("step lines no longer read: {e}");
                    steps = None;
                    if let Some((e, _)) = ended.take() {
                        return Ok(finished(&e));
                    }
                }
                None => steps = None,
            },
            _ = drained => {
                if let Some((e, _)) = ended.take() {
                    return Ok(finished(&e));
                }
            }
            _ = poll.tick() => {
                let info: Result<OrderInfo, _> = bus
                    .request(s.order_get(), &GetOrder { order_id: order_id.to_string() }, config.nats.request_timeout)
                    .await;
                if let Ok(info) = info {
                    if info.state.is_final() && ended.is_none() {
                        eprintln!("order {} {}", info.order_id, info.state.as_str());
                        return Ok(exit_for(info.state));
                    }
                    // waiting since before this command (a repeated submit)
                    let why = info.reason.filter(|w| {
                        info.state == OrderState::Accepted && w.starts_with("waiting:") && waiting.as_ref() != Some(w)
                    });
                    if let Some(why) = why {
                        eprintln!("order {why}");
                        waiting = Some(why);
                    }
                }
            }
            _ = expired => bail!("order {order_id} did not finish within --timeout; it goes on (waiting or running: `baton order show {order_id}`, or follow it with `baton watch --order {order_id}`)"),
        }
    }
}

fn print_line(log: &TaskLog) {
    let text = output::log_text(log, true);
    match log.stream {
        LogStream::Stdout => println!("{text}"),
        LogStream::Stderr => eprintln!("{text}"),
    }
}

fn finished(e: &OrderFinished) -> ExitCode {
    eprintln!("{}", output::finished_line(e));
    exit_for(e.state)
}

/// The step lines of workflow order `order_id`: from the log stream, from
/// its start; without the stream, those published from now on.
async fn step_lines(bus: &Bus, config: &Config, order_id: &str) -> Option<StepLines> {
    let stream = config.log_stream();
    match bus.order_logs(&stream, order_id, true).await {
        Ok(lines) => return Some((lines, true)),
        Err(e) => eprintln!("step lines: {e}; printing only those published from now on"),
    }
    let s = bus.subjects().clone();
    let events = match bus.listen_raw(s.order_events(order_id)).await {
        Ok(events) => events,
        Err(e) => {
            eprintln!("step lines not printed: {e}");
            return None;
        }
    };
    let lines = events.filter_map(move |(subject, payload)| {
        let line = match s.parse_event(&subject) {
            Some((_, _, EventKind::Log)) => decode::<TaskLog>(Encoding::MessagePack, &payload)
                .ok()
                .filter(|l| s.publisher_matches(&subject, &l.subagent_id))
                .map(|l| Ok(OrderLog::Line(l))),
            _ => None,
        };
        futures::future::ready(line)
    });
    Some((lines.boxed_local(), false))
}

fn exit_for(state: OrderState) -> ExitCode {
    if state == OrderState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_ORDER_FAILED)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn checked(args: &[&str]) -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["baton", "submit"].iter().chain(args)).expect("parses");
        let Command::Submit(submit) = cli.command else {
            panic!("not a submit: {:?}", cli.command)
        };
        submit.check()
    }

    #[test]
    fn timeout_without_wait_is_refused_naming_the_fix() {
        let e = checked(&["hello", "--timeout", "30s"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("add --wait, or drop --timeout"), "{e}");
        checked(&["hello", "--timeout", "30s", "--wait"]).unwrap();
        checked(&["hello"]).unwrap();
    }
}
