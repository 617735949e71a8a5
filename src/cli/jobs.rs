//! `baton job list|show|pause|resume|backfill` and `baton undeploy`: the
//! job inventory and its lifecycle, over the wire protocol only
//! (`job.list`, `job.get`, `job.control`, `deploy` with `remove`, and
//! submits of slots with the Scheduler's idempotency keys).

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;

use super::connect;
use super::orders::{parse_when, When};
use super::output;
use crate::bus::{Bus, BusError};
use crate::config::Config;
use crate::protocol::*;
use crate::time::now_ms;
use crate::triggers::{idempotency_key, workflow_key, Trigger};

/// Most slots one backfill submits unless `--max` says more.
const BACKFILL_MAX: usize = 1000;

/// The deployed jobs and workflows.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// List every deployed job and workflow: its cluster, triggers, whether
    /// it is paused, its next fire (on its trigger's clock) and last order
    List {
        /// Print the list (a JobList) as JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one job or workflow: its definition, the next fire times on
    /// its trigger's clock and in UTC (marking those after a daylight
    /// saving change), and its recent orders
    Show {
        /// The job's or workflow's name
        name: String,
        /// How many next fire times to list (at most 1000)
        #[arg(long, short = 'n', value_name = "N", default_value_t = 10)]
        next: u32,
        /// Print it (a JobInfo) as JSON
        #[arg(long)]
        json: bool,
    },
    /// Pause a job or workflow: its triggers stop firing
    ///
    /// Its slots are skipped (counted in `job show`); on resume its misfire
    /// policy decides about them, as for slots missed while no Scheduler ran.
    /// Manual submits still run unless --all. Workflow steps that run a
    /// paused job still run. Stored in JetStream: it holds across broker and
    /// Scheduler fail-overs and NATS restarts until `job resume`.
    Pause {
        /// The job's or workflow's name
        name: String,
        /// Refuse manual submits too (`baton submit NAME` is refused)
        #[arg(long)]
        all: bool,
    },
    /// Resume a paused job or workflow: its triggers fire again
    Resume {
        /// The job's or workflow's name
        name: String,
    },
    /// Fire the past slots of a job's (or workflow's) triggers in a window
    ///
    /// Each slot in [--from, --to] is submitted once, with the idempotency
    /// key the Scheduler uses (`NAME@SLOT`): a slot already fired, or
    /// backfilled before, returns its first order and runs nothing again.
    /// The job's concurrency policy applies as for any fired slot.
    Backfill(BackfillArgs),
    /// Show how far a job's subject triggers' consumer is behind and the
    /// messages kept on its dead-letter subject, each with why it started
    /// no order (admin credentials)
    DeadLetters {
        /// The job's name
        name: String,
        /// Show at most this many, oldest first
        #[arg(long, default_value_t = 20)]
        max: usize,
    },
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The job's or workflow's name
    pub name: String,
    /// The window's start: a duration ago (`6h`) or an RFC 3339 time
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub from: When,
    /// The window's end (default: now); not in the future
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub to: Option<When>,
    /// Only list the slots; submit nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Submit at most this many slots (refused when the window holds more)
    #[arg(long, default_value_t = BACKFILL_MAX)]
    pub max: usize,
}

#[derive(Debug, Args)]
pub struct UndeployArgs {
    /// The jobs and workflows to undeploy (a job a remaining workflow runs
    /// is refused, naming the workflow)
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
    /// Only show what would be removed; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(config: &Config, command: JobCommand) -> anyhow::Result<()> {
    let bus = connect(config, "baton-cli", false).await?;
    let command = match command {
        JobCommand::Backfill(args) => return backfill(config, &bus, args).await,
        JobCommand::DeadLetters { name, max } => {
            return super::dead_letters::show(config, &bus, &name, max).await
        }
        command => command,
    };
    let timeout = config.nats.request_timeout;
    let s = bus.subjects().clone();
    match command {
        JobCommand::List { json } => {
            let list: JobList = bus.request(s.job_list(), &ListJobs {}, timeout).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&list)?),
                false => {
                    print!("{}", output::job_list_text(&list));
                    not_firing_note(&bus, timeout).await;
                }
            }
        }
        JobCommand::Show { name, next, json } => {
            let get = GetJob {
                name,
                next: Some(next),
            };
            let info: JobInfo = bus.request(s.job_get(), &get, timeout).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&info)?),
                false => {
                    print!("{}", output::job_text(&info));
                    not_firing_note(&bus, timeout).await;
                }
            }
        }
        JobCommand::Pause { name, all } => {
            let control = JobControl {
                name,
                pause: true,
                all,
            };
            let reply: JobControlReply = bus.request(s.job_control(), &control, timeout).await?;
            println!("{}", output::job_switched_text(&reply));
        }
        JobCommand::Resume { name } => {
            let control = JobControl {
                name,
                pause: false,
                all: false,
            };
            let reply: JobControlReply = bus.request(s.job_control(), &control, timeout).await?;
            println!("{}", output::job_switched_text(&reply));
        }
        JobCommand::Backfill(_) | JobCommand::DeadLetters { .. } => unreachable!("handled above"),
    }
    Ok(())
}

/// Says so when no agent can hold the Scheduler role: then no trigger
/// fires, whatever the next fire times say.
async fn not_firing_note(bus: &Bus, timeout: std::time::Duration) {
    let ask = StatusRequest::default();
    let status = bus.request::<_, StatusReply>(bus.subjects().status(), &ask, timeout);
    if let Ok(StatusReply {
        not_firing: Some(why),
        ..
    }) = status.await
    {
        println!("note: triggers are NOT firing now: {why}");
    }
}

/// The slots of `triggers` in `[from_ms, to_ms]`, oldest first, or why
/// the window cannot be backfilled.
pub fn backfill_slots(
    triggers: &[TriggerSpec],
    key: &str,
    from_ms: u64,
    to_ms: u64,
    now_ms: u64,
    max: usize,
) -> Result<Vec<u64>, String> {
    if triggers.is_empty() {
        return Err("it has no triggers, so it has no slots to backfill".into());
    }
    if to_ms > now_ms {
        return Err("--to is in the future: backfill fires past slots only".into());
    }
    if from_ms > to_ms {
        return Err("--from is after --to".into());
    }
    // slots, not jittered fires: each is keyed as the Scheduler keys it
    let trigger = (Trigger::compile_all(triggers, key).map_err(|e| e.to_string())?).slots_only();
    let slots = trigger.slots_between(from_ms.saturating_sub(1), to_ms, max.saturating_add(1));
    if slots.len() > max {
        return Err(format!(
            "the window holds more than {max} slots; narrow it, or raise --max"
        ));
    }
    Ok(slots)
}

/// `baton job backfill NAME --from T1 [--to T2]`.
async fn backfill(config: &Config, bus: &Bus, args: BackfillArgs) -> anyhow::Result<()> {
    let timeout = config.nats.request_timeout;
    let s = bus.subjects();
    let get = GetJob {
        name: args.name.clone(),
        next: None,
    };
    let info: JobInfo = bus.request(s.job_get(), &get, timeout).await?;
    let (key, triggers, zone_of) = match (&info.job, &info.workflow) {
        (Some(job), _) => (info.name.clone(), job.triggers.clone(), &job.triggers),
        (None, Some(w)) => (workflow_key(&info.name), w.triggers.clone(), &w.triggers),
        (None, None) => bail!("'{}' has no definition in the broker's answer", info.name),
    };
    let zone = zone_of.iter().find_map(|t| match t {
        TriggerSpec::Cron { time_zone, .. } => time_zone.clone(),
        _ => None,
    });
    let now = now_ms();
    let from = args.from.at_ms(now);
    let to = args.to.map_or(now, |t| t.at_ms(now));
    let slots = backfill_slots(&triggers, &key, from, to, now, args.max)
        .map_err(|why| anyhow::anyhow!("cannot backfill {}: {why}", info.name))?;
    let (mut submitted, mut fired_before, mut refused) = (0, 0, 0);
    for slot_ms in &slots {
        let when = output::fire_time(&FireTime {
            at_ms: *slot_ms,
            time_zone: zone.clone(),
            note: None,
        });
        if args.dry_run {
            println!("{when}");
            continue;
        }
        let order = SubmitOrder {
            job: info.name.clone(),
            params: BTreeMap::new(),
            request_id: Some(idempotency_key(&key, *slot_ms)),
            slot_ms: Some(*slot_ms),
        };
        match bus.request::<_, SubmitReply>(s.submit(), &order, timeout).await {
            Ok(reply) if reply.duplicate => {
                fired_before += 1;
                println!("{when}  already fired: order {}", reply.order_id);
            }
            Ok(reply) => {
                submitted += 1;
                println!("{when}  submitted: order {}", reply.order_id);
            }
            Err(BusError::Remote(e)) => {
                refused += 1;
                println!("{when}  refused: {}", e.error.message);
            }
            Err(e) => bail!("backfill of {} stopped at {when}: {e} ({submitted} submitted so far; run it again: slots already fired run nothing twice)", info.name),
        }
    }
    match args.dry_run {
        true => println!(
            "{} slot(s) in the window; nothing submitted (dry run)",
            slots.len()
        ),
        false => println!(
            "{} slot(s): {submitted} submitted, {fired_before} already fired, {refused} refused",
            slots.len()
        ),
    }
    if refused > 0 {
        bail!(
            "{refused} slot(s) of {} were refused (see above)",
            info.name
        );
    }
    Ok(())
}

/// `baton undeploy NAME...`: a deploy that only removes.
pub async fn undeploy(config: &Config, args: UndeployArgs) -> anyhow::Result<()> {
    let bus = connect(config, "baton-cli", false).await?;
    let request = DeployRequest {
        remove: args.names.clone(),
        dry_run: args.dry_run,
        ..DeployRequest::default()
    };
    let reply: DeployReply = bus
        .request(
            bus.subjects().deploy(),
            &request,
            config.nats.request_timeout,
        )
        .await
        .map_err(|e| anyhow::anyhow!("undeploy of {} refused: {e}", args.names.join(", ")))?;
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
    let verb = if reply.dry_run {
        "would undeploy"
    } else {
        "undeployed"
    };
    println!("{verb}:");
    print!("{}", output::plan_text(&reply.plan));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn every(secs: u64) -> Vec<TriggerSpec> {
        vec![TriggerSpec::Interval {
            every: Duration::from_secs(secs),
            start: None,
            jitter: None,
        }]
    }

    #[test]
    fn a_backfill_takes_the_slots_of_its_window_ends_included() {
        let slots = backfill_slots(&every(10), "j", 20_000, 50_000, 60_000, 100).expect("slots");
        assert_eq!(slots, [20_000, 30_000, 40_000, 50_000]);
    }

    #[test]
    fn a_backfill_refuses_the_future_a_reversed_window_and_too_many_slots() {
        let err = |r: Result<Vec<u64>, String>| r.expect_err("refused");
        assert!(err(backfill_slots(&every(10), "j", 0, 70_000, 60_000, 100)).contains("future"));
        assert!(
            err(backfill_slots(&every(10), "j", 50_000, 20_000, 60_000, 100)).contains("after")
        );
        assert!(err(backfill_slots(&every(1), "j", 0, 60_000, 60_000, 10)).contains("--max"));
        assert!(err(backfill_slots(&[], "j", 0, 60_000, 60_000, 10)).contains("no triggers"));
    }
}
