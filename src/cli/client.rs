//! Client commands: deploy, watch, status, and the switch-overs of
//! subagents (`subagent disable|enable|stop`) and the Scheduler role
//! (`scheduler on|off`) (`submit` is in `submit`, `order ...`
//! in `orders`). They use only the wire protocol, exactly as any other NATS
//! client would. Just over 500 lines before its tests: several short
//! commands, of which `status` (with its fallback to each broker's own
//! view) is the longest.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures::StreamExt;

use super::connect;
use super::output;
use crate::bus::BusError;
use crate::config::Config;
use crate::jobs::Deployment;
use crate::protocol::*;

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// TOML files with [[job]], [[cluster]], [[workflow]] and [[calendar]]
    /// tables (see examples/jobs.toml); one name may be defined in one file
    /// only; a trigger may use a calendar of any of them
    #[arg(required = true, value_name = "FILE.toml")]
    pub files: Vec<PathBuf>,
    /// Only validate the files and print the plan; deploy nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also undeploy every job, workflow and cluster these files do not
    /// define (try it with --dry-run first)
    #[arg(long)]
    pub prune: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only the orders of this job or workflow
    #[arg(value_name = "NAME")]
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
    let paths: Vec<&std::path::Path> = args.files.iter().map(|f| f.as_path()).collect();
    let loaded: Vec<(PathBuf, Deployment)> = crate::jobs::load_deploy_files(&paths)?
        .into_iter()
        .zip(&args.files)
        .map(|((_, d), file)| (file.clone(), d))
        .collect();
    let mut request = DeployRequest {
        dry_run: args.dry_run,
        prune: args.prune,
        ..Default::default()
    };
    for (_, d) in &loaded {
        request.jobs.extend(d.jobs.iter().cloned());
        request.clusters.extend(d.clusters.iter().cloned());
        request.workflows.extend(d.workflows.iter().cloned());
    }
    if let Some(refusal) = super::calendars::only_calendars(&loaded, &request) {
        bail!(refusal);
    }
    let refused = |e: BusError, dry_run: bool| match e {
        BusError::Remote(e) => anyhow::anyhow!(
            "deploy of {} {}: {}",
            blamed_files(&e.error.message, &loaded),
            if dry_run {
                "would be refused"
            } else {
                "refused"
            },
            e.error.message
        ),
        e if dry_run => anyhow::anyhow!("dry run of {} failed: {e}", all_files(&loaded)),
        e => anyhow::anyhow!("deploy of {} failed: {e}", all_files(&loaded)),
    };
    if args.dry_run {
        let reply = match broker_dry_run(config, &request).await {
            Ok(reply) => reply,
            Err(DryRunError::NoBroker(why)) if !args.prune => {
                println!(
                    "valid: {}",
                    summary(
                        request.jobs.iter().map(|j| j.name.as_str()),
                        request.clusters.iter().map(|c| c.name.as_str()),
                        request.workflows.iter().map(|w| w.name.as_str()),
                    )
                );
                println!(
                    "not checked: steps naming jobs that are not deployed, and names clashing \
                     with deployed ones ({why})"
                );
                return Ok(());
            }
            Err(DryRunError::NoBroker(why)) => {
                bail!("--prune needs a broker to compare with what is deployed: {why}")
            }
            Err(DryRunError::Bus(e)) => return Err(refused(e, true)),
        };
        let checked = summary(
            reply.deployed.iter().map(String::as_str),
            reply.clusters.iter().map(String::as_str),
            reply.workflows.iter().map(String::as_str),
        );
        if !reply.dry_run {
            bail!("the broker does not know dry runs and DEPLOYED {checked}; upgrade it");
        }
        for warning in &reply.warnings {
            eprintln!("warning: {warning}");
        }
        println!("valid (checked by the broker): {checked}");
        println!("plan (nothing changed):");
        print!("{}", output::plan_text(&reply.plan));
        return Ok(());
    }
    let bus = connect(config, "baton-cli", false).await?;
    let timeout = config.nats.request_timeout;
    for warning in super::calendars::stale(&bus, timeout, &loaded, &request).await {
        eprintln!("warning: {warning}");
    }
    let reply: DeployReply = bus
        .request(
            bus.subjects().deploy(),
            &request,
            config.nats.request_timeout,
        )
        .await
        .map_err(|e| refused(e, false))?;
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
    if !reply.clusters.is_empty() {
        println!("deployed clusters: {}", reply.clusters.join(", "));
    }
    if !reply.deployed.is_empty() || reply.workflows.is_empty() {
        println!("deployed jobs: {}", reply.deployed.join(", "));
    }
    if !reply.workflows.is_empty() {
        println!("deployed workflows: {}", reply.workflows.join(", "));
    }
    print!("{}", output::plan_text(&reply.plan));
    Ok(())
}

/// Why a dry run has no answer from a broker.
enum DryRunError {
    /// NATS unreachable, no broker, or no reply in time: the local check stands.
    NoBroker(String),
    /// The broker refused the deploy, or NATS failed otherwise.
    Bus(BusError),
}

/// Asks a broker to check `request`, a dry run.
async fn broker_dry_run(
    config: &Config,
    request: &DeployRequest,
) -> Result<DeployReply, DryRunError> {
    let url = &config.nats.url;
    let Ok(bus) = connect(config, "baton-cli", false).await else {
        return Err(DryRunError::NoBroker(format!(
            "NATS at {url} is unreachable"
        )));
    };
    let subject = bus.subjects().deploy();
    let timeout = config.nats.request_timeout;
    bus.request(subject, request, timeout)
        .await
        .map_err(|e| match e {
            BusError::NoResponders { .. } => {
                DryRunError::NoBroker(format!("no broker answers on NATS at {url}"))
            }
            BusError::TimedOut { .. } => DryRunError::NoBroker(format!(
                "no broker answered within {}",
                output::span(timeout)
            )),
            e => DryRunError::Bus(e),
        })
}

/// "2 job(s) a, b; 0 clusters; 1 workflow(s) w"
fn summary<'a>(
    jobs: impl ExactSizeIterator<Item = &'a str>,
    clusters: impl ExactSizeIterator<Item = &'a str>,
    workflows: impl ExactSizeIterator<Item = &'a str>,
) -> String {
    let part = |n: usize, what: &str, names: Vec<&str>| match n {
        0 => format!("0 {what}s"),
        _ => format!("{n} {what}(s) {}", names.join(", ")),
    };
    format!(
        "{}; {}; {}",
        part(jobs.len(), "job", jobs.collect()),
        part(clusters.len(), "cluster", clusters.collect()),
        part(workflows.len(), "workflow", workflows.collect())
    )
}

fn all_files(loaded: &[(PathBuf, Deployment)]) -> String {
    let files: Vec<String> = loaded
        .iter()
        .map(|(f, _)| f.display().to_string())
        .collect();
    files.join(", ")
}

/// The file(s) a broker's refusal is about: the one defining the job,
/// cluster or workflow its message starts with ("workflow 'w' step 's':
/// ..."), else all of them.
fn blamed_files(message: &str, loaded: &[(PathBuf, Deployment)]) -> String {
    let named = ["job", "cluster", "workflow"].into_iter().find_map(|kind| {
        let rest = message.strip_prefix(kind)?.strip_prefix(" '")?;
        Some((kind, rest.split_once('\'')?.0))
    });
    let defines = |d: &Deployment| match named {
        Some(("job", name)) => d.jobs.iter().any(|j| j.name == name),
        Some(("cluster", name)) => d.clusters.iter().any(|c| c.name == name),
        Some((_, name)) => d.workflows.iter().any(|w| w.name == name),
        None => false,
    };
    let files: Vec<String> = loaded
        .iter()
        .filter(|(_, d)| defines(d))
        .map(|(f, _)| f.display().to_string())
        .collect();
    if files.is_empty() {
        all_files(loaded)
    } else {
        files.join(", ")
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
        // agents taking or losing the Scheduler role, and triggers that stop
        // (or start again) firing
        let changes = bus.listen_raw(s.subagent_changes()).await?;
        let roles = bus.listen_raw(s.agent_changes()).await?;
        let leaders = bus.listen_raw(s.broker_changes()).await?;
        let firing = bus.listen_raw(s.triggers_changed()).await?;
        let roles = futures::stream::select(roles, firing);
        let changes = futures::stream::select(changes, futures::stream::select(roles, leaders));
        events = futures::stream::select(events, changes).boxed_local();
    }
    eprintln!("watching {subject} (Ctrl-C to stop)");
    if let Some(job) = &args.job {
        // a typo would otherwise watch in silence for ever
        let get = GetJob {
            name: job.clone(),
            next: Some(1),
        };
        let asked = bus.request::<_, JobInfo>(s.job_get(), &get, config.nats.request_timeout);
        if let Err(BusError::Remote(e)) = asked.await {
            if e.error.code == ErrorCode::UnknownJob {
                eprintln!("{}; watching for its events anyway", e.error.message);
            }
        }
    }
    loop {
        tokio::select! {
            event = events.next() => {
                let Some((subject, payload)) = event else { bail!("event subscription closed") };
                let line = match s.parse_event(&subject) {
                    Some((_, _, kind)) if output::written_by_another(&s, &subject, kind, &payload) => {
                        eprintln!("ignored: {subject} claims another subagent than its publisher");
                        continue;
                    }
                    Some((_, _, kind)) => output::event_line(kind, &payload, args.json),
                    None if subject.starts_with(&s.agent_changed("")) => output::agent_line(&payload, args.json),
                    None if subject.starts_with(&s.broker_changed("")) => output::broker_line(&payload, args.json),
                    None if subject == s.triggers_changed() => output::triggers_line(&payload, args.json),
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

/// How long `status` waits for the active broker's answer before showing
/// the brokers' own views instead (see [`status`]).
const ACTIVE_ANSWER: Duration = Duration::from_secs(1);
/// How long `status` gathers the brokers' own views.
const VIEWS_WINDOW: Duration = Duration::from_millis(300);

/// `baton status`: the active broker's answer; while none answers (no
/// broker active, or it is frozen), every broker's own view instead,
/// gathered at the same time (standbys answer too).
pub async fn status(config: &Config, args: StatusArgs) -> anyhow::Result<()> {
    let bus = connect(config, "baton-cli", false).await?;
    let s = bus.subjects().clone();
    let request = StatusRequest::default();
    let full = bus.request::<_, StatusReply>(s.status(), &request, config.nats.request_timeout);
    let views = bus.gather::<_, BrokerView>(s.status_brokers(), &request, VIEWS_WINDOW);
    let deadline = tokio::time::sleep(ACTIVE_ANSWER);
    tokio::pin!(full, views, deadline);
    let mut gathered = None;
    // why no answer, and whether the active's answer may still come
    let (why, may_come) = loop {
        tokio::select! {
            answer = &mut full => match answer {
                Ok(reply) => return print_status(&reply, args.json),
                Err(e @ (BusError::NoResponders { .. } | BusError::TimedOut { .. })) => break (e.to_string(), false),
                Err(e) => return Err(e.into()),
            },
            got = &mut views, if gathered.is_none() => gathered = Some(got),
            _ = &mut deadline => break (format!("none within {}", output::span(ACTIVE_ANSWER)), true),
        }
    };
    let views = match gathered {
        Some(got) => got,
        None => views.await,
    }
    .unwrap_or_default();
    if views.is_empty() && may_come {
        // nobody else either: the active's answer may still come
        if let Ok(reply) = full.await {
            return print_status(&reply, args.json);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else {
        print!(
            "{}",
            output::views_text(&why, &views, crate::time::now_ms())
        );
    }
    Ok(())
}

fn print_status(reply: &StatusReply, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(reply)?);
    } else {
        print!("{}", output::status_text(reply));
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
                [] => match status.not_firing.as_deref() {
                    Some(why) => {
                        format!("no agent is Scheduler now: triggers are NOT firing: {why}")
                    }
                    None => "no agent is Scheduler now; electing one".to_string(),
                },
                _ => format!("Scheduler now: {}", scheduler.join(", ")),
            };
            println!("agent {agent_id} is {} ({now})", wanted.as_str());
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "agent {agent_id} is not {} after {}; the broker keeps trying (see `baton status`)",
                wanted.as_str(),
                output::span(timeout)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> (PathBuf, Deployment) {
        let d = crate::jobs::parse_deploy_file(name, text).unwrap();
        (PathBuf::from(name), d)
    }

    #[test]
    fn a_refusal_names_the_file_defining_what_it_is_about() {
        let loaded = [
            file("jobs.toml", "[[job]]\nname = \"x\"\nprogram = \"true\"\n"),
            file(
                "pair.toml",
                "[[workflow]]\nname = \"w\"\n[[workflow.steps]]\nname = \"s\"\njob = \"y\"\n",
            ),
        ];
        assert_eq!(
            blamed_files("workflow 'w' step 's': job 'y' is not deployed", &loaded),
            "pair.toml"
        );
        assert_eq!(
            blamed_files("job 'x': a workflow has this name", &loaded),
            "jobs.toml"
        );
        assert_eq!(
            blamed_files("nothing to deploy", &loaded),
            "jobs.toml, pair.toml",
            "not about one definition: every file"
        );
        assert_eq!(
            summary(["x"].into_iter(), [].into_iter(), ["w", "v"].into_iter()),
            "1 job(s) x; 0 clusters; 2 workflow(s) w, v"
        );
    }
}
