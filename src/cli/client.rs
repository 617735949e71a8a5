//! Client commands: deploy, submit, watch, status, and the switch-overs of
//! subagents and the Scheduler role (`order ...` is in `orders`). They use
//! only the wire protocol, exactly as any other NATS client would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use futures::stream::LocalBoxStream;
use futures::StreamExt;

use super::output;
use super::{connect, parse_duration, EXIT_ORDER_FAILED};
use crate::bus::{decode, Bus, BusError, Encoding, OrderLog};
use crate::config::Config;
use crate::protocol::*;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// TOML files with [[job]], [[cluster]] and [[workflow]] tables (see
    /// examples/jobs.toml)
    #[arg(required = true, value_name = "FILE.toml")]
    pub files: Vec<PathBuf>,
    /// Only validate the files; deploy nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Name of a deployed job or workflow (`baton status` lists the jobs)
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
    /// Give up waiting after this long (with --wait), e.g. 30s or 5m
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Idempotency key: a repeated submit with the same id returns the first order
    /// [default: a new one; the submit is retried with it through a broker fail-over]
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only this job's orders
    pub job: Option<String>,
    /// Only this order's events
    #[arg(long, value_name = "ORDER_ID", conflicts_with = "job")]
    pub order: Option<String>,
    /// Print each event as one JSON object per line
    #[arg(long)]
    pub json: bool,
}

/// Switch-over of a running subagent.
#[derive(Debug, clap::Subcommand)]
pub enum SubagentCommand {
    /// Give it no new tasks; running ones finish
    Disable {
        /// Subagent id (`baton status` lists them)
        id: String,
    },
    /// Give it tasks again
    Enable {
        /// Subagent id
        id: String,
    },
    /// Drain it (running tasks finish) and make it exit, as SIGTERM does
    Stop {
        /// Subagent id
        id: String,
    },
}

/// `baton scheduler ...`: move the Scheduler role between agents.
#[derive(Debug, clap::Subcommand)]
pub enum SchedulerCommand {
    /// Make AGENT the Scheduler: the current one is turned off first
    On {
        /// Agent id (`baton status` lists them)
        agent: String,
        /// Return once the broker accepted the request, without waiting for the agent
        #[arg(long)]
        no_wait: bool,
    },
    /// Turn AGENT off and keep it out of elections until `scheduler on`;
    /// if no Scheduler remains, another agent is elected
    Off {
        /// Agent id
        agent: String,
        /// Return once the broker accepted the request, without waiting for the agent
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status reply as JSON
    #[arg(long)]
    pub json: bool,
}

/// Parses `KEY=VALUE`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

pub async fn deploy(config: &Config, args: DeployArgs) -> anyhow::Result<()> {
    let mut jobs = Vec::new();
    let mut clusters = Vec::new();
    let mut workflows = Vec::new();
    for file in &args.files {
        let d = crate::jobs::load_deploy_file(file)?;
        jobs.extend(d.jobs);
        clusters.extend(d.clusters);
        workflows.extend(d.workflows);
    }
    if args.dry_run {
        println!(
            "valid: {} job(s) {}; {} cluster(s) {}; {} workflow(s) {}",
            jobs.len(),
            names(jobs.iter().map(|j| j.name.as_str())),
            clusters.len(),
            names(clusters.iter().map(|c| c.name.as_str())),
            workflows.len(),
            names(workflows.iter().map(|w| w.name.as_str()))
        );
        return Ok(());
    }
    let bus = connect(config, "baton-cli", false).await?;
    let reply: DeployReply = bus
        .request(
            bus.subjects().deploy(),
            &DeployRequest {
                jobs,
                clusters,
                workflows,
            },
            config.nats.request_timeout,
        )
        .await
        .context("deploy failed")?;
    if !reply.clusters.is_empty() {
        println!("deployed clusters: {}", reply.clusters.join(", "));
    }
    if !reply.deployed.is_empty() || reply.workflows.is_empty() {
        println!("deployed jobs: {}", reply.deployed.join(", "));
    }
    if !reply.workflows.is_empty() {
        println!("deployed workflows: {}", reply.workflows.join(", "));
    }
    Ok(())
}

/// Sends a submit, retrying with the same request id while no broker
/// answers (a fail-over: no responders, a timeout, `unavailable`, `busy`),
/// for up to `timeout` in all.
async fn submit_retrying(
    bus: &Bus,
    request: &SubmitOrder,
    timeout: Duration,
) -> Result<SubmitReply, BusError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(100);
    loop {
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
            Err(e) => return Err(e),
        };
        if std::time::Instant::now() + pause >= deadline {
            return Err(error);
        }
        eprintln!("no broker answered ({error}); retrying with the same request id");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

pub async fn submit(config: &Config, args: SubmitArgs) -> anyhow::Result<ExitCode> {
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
    let reply = submit_retrying(&bus, &request, config.nats.request_timeout)
        .await
        .with_context(|| format!("submit of '{}' refused", args.job))?;
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
                if id != order_id {
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
                        if let Ok(e) = decode::<OrderChanged>(Encoding::MessagePack, &payload) {
                            // the order's end: the `finished` line says it
                            if e.step.is_some() || !e.state.is_final() {
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
                }
            }
            _ = expired => bail!("order {order_id} did not finish within --timeout; it keeps running (follow it with `baton watch --order {order_id}`)"),
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

pub async fn watch(config: &Config, args: WatchArgs) -> anyhow::Result<()> {
    let bus = connect(config, "baton-watch", false).await?;
    let s = bus.subjects().clone();
    let subject = match (&args.job, &args.order) {
        (Some(job), _) => s.job_events(job),
        (None, Some(order)) => s.order_events(order),
        (None, None) => s.all_events(),
    };
    let mut events = bus.listen_raw(subject.clone()).await?.boxed_local();
    if args.job.is_none() && args.order.is_none() {
        // everything: subagents joining, lost, back, draining, leaving too,
        // and agents taking or losing the Scheduler role
        let changes = bus.listen_raw(s.subagent_changes()).await?;
        let roles = bus.listen_raw(s.agent_changes()).await?;
        let leaders = bus.listen_raw(s.broker_changes()).await?;
        let changes = futures::stream::select(changes, futures::stream::select(roles, leaders));
        events = futures::stream::select(events, changes).boxed_local();
    }
    eprintln!("watching {subject} (Ctrl-C to stop)");
    loop {
        tokio::select! {
            event = events.next() => {
                let Some((subject, payload)) = event else { bail!("event subscription closed") };
                let line = match s.parse_event(&subject) {
                    Some((_, _, kind)) => output::event_line(kind, &payload, args.json),
                    None if subject.starts_with(&s.agent_changed("")) => output::agent_line(&payload, args.json),
                    None if subject.starts_with(&s.broker_changed("")) => output::broker_line(&payload, args.json),
                    None => output::subagent_line(&payload, args.json),
                };
                match line {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("undecodable event on {subject}: {e}"),
                }
            }
            _ = super::wait_for_signal() => return Ok(()),
        }
    }
}

pub async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<()> {
    let bus = connect(config, "baton-cli", false).await?;
    let reply: StatusReply = bus
        .request(
            bus.subjects().status(),
            &StatusRequest::default(),
            config.nats.request_timeout,
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", output::status_text(&reply));
    }
    Ok(())
}

/// `baton scheduler on|off AGENT`: ask the broker, then wait (up to the
/// request timeout) until the agent reports the role asked for.
pub async fn scheduler_control(config: &Config, command: SchedulerCommand) -> anyhow::Result<()> {
    let (agent_id, action, no_wait) = match command {
        SchedulerCommand::On { agent, no_wait } => (agent, SchedulerAction::On, no_wait),
        SchedulerCommand::Off { agent, no_wait } => (agent, SchedulerAction::Off, no_wait),
    };
    let bus = connect(config, "baton-cli", false).await?;
    let s = bus.subjects().clone();
    let timeout = config.nats.request_timeout;
    let request = SchedulerControl {
        agent_id: agent_id.clone(),
        action,
    };
    let _: SchedulerControlReply = bus
        .request(s.scheduler_control(), &request, timeout)
        .await?;
    let wanted = match action {
        SchedulerAction::On => AgentRole::Scheduler,
        SchedulerAction::Off => AgentRole::Spare,
    };
    if no_wait {
        println!(
            "asked the broker to make agent {agent_id} {}",
            wanted.as_str()
        );
        return Ok(());
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let status: StatusReply = bus
            .request(s.status(), &StatusRequest::default(), timeout)
            .await?;
        let agent = status.agents.iter().find(|a| a.id == agent_id);
        let scheduler: Vec<&str> = status
            .agents
            .iter()
            .filter(|a| a.role == AgentRole::Scheduler)
            .map(|a| a.id.as_str())
            .collect();
        if agent.is_some_and(|a| a.role == wanted) {
            let now = match scheduler[..] {
                [] => "no agent is Scheduler now".to_string(),
                _ => format!("Scheduler now: {}", scheduler.join(", ")),
            };
            println!("agent {agent_id} is {} ({now})", wanted.as_str());
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "agent {agent_id} is not {} after {}; the broker keeps trying (see `baton status`)",
                wanted.as_str(),
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn subagent_control(config: &Config, command: SubagentCommand) -> anyhow::Result<()> {
    let (subagent_id, action) = match command {
        SubagentCommand::Disable { id } => (id, SubagentAction::Disable),
        SubagentCommand::Enable { id } => (id, SubagentAction::Enable),
        SubagentCommand::Stop { id } => (id, SubagentAction::Stop),
    };
    let bus = connect(config, "baton-cli", false).await?;
    let request = SubagentControl {
        subagent_id,
        action,
    };
    let reply: SubagentControlReply = bus
        .request(
            bus.subjects().subagent_control(),
            &request,
            config.nats.request_timeout,
        )
        .await?;
    println!("subagent {} is {}", reply.subagent_id, reply.state.as_str());
    Ok(())
}
