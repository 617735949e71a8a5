//! The command line: one `baton` binary for every role and every client command.
//!
//! Role commands (`broker`, `subagent`, `agent`) start actors; client commands
//! (`deploy`, `submit`, `order`, `watch`, `status`, `audit`) talk to the cluster over
//! NATS like any other client; `dev` and `bench` start a whole local cluster.
//!
//! The command tree and its help texts live here (one variant per command,
//! as `--help` prints them), the options every command takes in
//! `global.rs`; the commands' work lives in the sibling modules.

mod audit;
mod auth;
mod calendars;
mod client;
mod dead_letters;
mod dev;
mod global;
mod jobs;
pub mod lean;
mod orders;
mod output;
mod startup;

pub use global::GlobalArgs;
pub use startup::MetricsArgs;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::auth::Role;
use crate::bus::Bus;
use crate::config::Config;
use crate::protocol::Subjects;

/// Exit code when the command itself failed (bad input, no cluster, ...).
pub const EXIT_ERROR: u8 = 2;
/// Exit code of `submit --wait` when the order did not succeed.
pub const EXIT_ORDER_FAILED: u8 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Baton: a high-availability distributed job scheduler over NATS",
    long_about = "Baton: a high-availability distributed job scheduler over NATS.\n\n\
        Run `baton dev` for a whole local cluster, or start `baton broker` and \
        `baton subagent` processes against your NATS server, then `baton deploy` \
        jobs and `baton submit` orders.\n\n\
        Configuration is layered: defaults < --config FILE (TOML) < BATON_* \
        environment variables (BATON_NATS__URL, BATON_SUBAGENT__CAPACITY, ...) < flags.\n\
        Logging: BATON_LOG=debug (or any tracing filter).\n\n\
        Exit codes: 0 success, 1 the order failed (submit --wait), 2 the command failed."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker: keeps the registry, holds jobs and orders, places tasks
    ///
    /// Start several for high availability: one is active (it holds a lease
    /// in JetStream KV, renewed every broker.renew_interval), the others are
    /// standbys that take over when it is killed (after broker.lease) or
    /// stopped (SIGTERM hands the lease over at once), rebuilding the orders
    /// from JetStream.
    Broker(BrokerArgs),
    /// Run a subagent (executes tasks as OS processes), or disable, enable or stop one
    ///
    /// SIGTERM (or `baton subagent stop ID`) drains it: no new tasks, running
    /// ones finish (killed after subagent.drain_timeout), then it leaves and
    /// exits 0. A subagent that hears no broker for subagent.orphan_timeout
    /// kills its tasks, so they can run elsewhere without two copies.
    Subagent(SubagentArgs),
    /// Run an agent: may hold the Scheduler role and then fires job triggers
    ///
    /// Exactly one agent at a time holds the Scheduler role and submits an
    /// order for every slot of the deployed jobs' triggers; the others are
    /// spares. The broker elects the Scheduler by health (CPU and memory
    /// from the agents' heartbeats), gives it the role with a lease it keeps
    /// renewing, and hands the role to a spare when the Scheduler dies or
    /// stays unhealthy; a Scheduler that hears no renewal for its lease turns
    /// itself off. SIGTERM stops firing and tells the broker at once, then
    /// exits 0.
    ///
    /// With --no-role-control the agent is a Scheduler from its start, outside
    /// the broker's control, and never a spare. Two such agents (or one
    /// beside an elected Scheduler) both fire every trigger; each slot is
    /// submitted with the idempotency key `job@slot`, which keeps it to one
    /// order.
    Agent(AgentArgs),
    /// Validate job definitions from TOML files and deploy them
    ///
    /// The answer lists the plan: what was added, changed (field by field),
    /// removed (with --prune) and left unchanged; --dry-run prints the plan
    /// and changes nothing.
    Deploy(client::DeployArgs),
    /// Remove deployed jobs or workflows (their pauses go with them)
    ///
    /// Refused while a remaining workflow has a step running the job, naming
    /// the workflow. Unfinished orders of a removed job: waiting ones fail
    /// when dispatched, running ones finish.
    Undeploy(jobs::UndeployArgs),
    /// List, show, pause or resume the deployed jobs and workflows
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Submit an order for a deployed job or workflow
    Submit(submit::SubmitArgs),
    /// Show, list, suspend, resume or cancel orders, or print their logs
    #[command(subcommand)]
    Order(orders::OrderCommand),
    /// Print status events as they happen (all, one job's, or one order's)
    Watch(client::WatchArgs),
    /// Show the broker, its agents and subagents, jobs and order counts
    Status(client::StatusArgs),
    /// Show the audit trail: who deployed, cancelled, suspended, resumed or switched what, when
    ///
    /// Every state-changing command (deploy, order cancel, suspend and
    /// resume, subagent disable, enable and stop, scheduler on and off) is
    /// recorded by the broker once its outcome is known, refusals included,
    /// with the identity that signed it (VERIFIED yes) or `unsigned` /
    /// `unchecked` when Baton cannot name the sender. Kept for
    /// nats.audit_retention (90 days); only the admin role may read it.
    Audit(audit::AuditArgs),
    /// Move the Scheduler role: the one agent that fires deployed triggers
    ///
    /// The broker elects the Scheduler by itself (the healthiest agent); use
    /// this to move it by hand. Waits until the agent reports its new role.
    #[command(subcommand)]
    Scheduler(client::SchedulerCommand),
    /// Serve the web console: cluster, jobs, orders and their logs, live
    ///
    /// A NATS client like any other, with the console role's credentials
    /// (console.nk; in this repository `baton dev`'s are found by itself):
    /// it may submit, cancel, suspend and resume orders, pause jobs, and
    /// switch subagents and the Scheduler role; never deploy. It keeps
    /// nothing of its own. The same endpoints answer curl as JSON (README:
    /// Web console).
    Console(crate::console::ConsoleArgs),
    /// Start a local cluster (nats-server, a broker, subagents, agents) for trying Baton
    ///
    /// Run it in any folder: everything lives in its .baton/dev/: JetStream
    /// data, credentials (auth/), nats-server's log (nats-server.log) and
    /// each child's log (logs/NAME.log, also printed here prefixed with
    /// [NAME]). At the top of a Baton checkout it uses the checkout's
    /// nats/dev.conf and examples/jobs.toml; elsewhere, copies built into it.
    /// --config FILE (or BATON_CONFIG) is passed to every child.
    ///
    /// One `baton dev` per folder: it locks .baton/dev/lock before touching
    /// the folder, and a second one there is refused, naming the pid of the
    /// first. The lock goes with the processes holding it, kill -9 included
    /// (nats-server shares it, so a server left running still holds it).
    ///
    /// When a broker, subagent or agent ends (kill -9 one to watch the others
    /// carry on), baton dev says which one, how it ended and where its log is,
    /// and starts it again. It stops the whole cluster and exits with status 2
    /// instead when nats-server ends, when a process ends before the cluster
    /// is up, or when one child ends a fourth time within a minute.
    Dev(dev::DevArgs),
    /// Measure Baton on a local cluster it starts itself
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// Write (or check) the JSON Schemas and AsyncAPI document in schemas/
    Schemas(SchemasArgs),
    /// Make credentials for every role and the nats-server authorization that enforces them
    ///
    /// Each Baton process connects with its own role's nkey, and nats-server
    /// lets each role publish and subscribe only what it needs: only brokers
    /// command subagents, each subagent receives only its own tasks, clients
    /// submit but cannot deploy, and no one but brokers can touch Baton's
    /// JetStream state. See README: Security.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Broker id [default: broker-<hostname>-<pid>]
    #[arg(long)]
    pub id: Option<String>,
    /// Among standbys, lower takes over first [default: 100]
    #[arg(long, value_name = "N")]
    pub precedence: Option<u32>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SubagentArgs {
    /// Switch-over of a running subagent instead of running one
    #[command(subcommand)]
    pub action: Option<client::SubagentCommand>,
    /// Subagent id, one subject token [default: <hostname>-<pid>]
    #[arg(long)]
    pub id: Option<String>,
    /// Most tasks run at once [default: 4]
    #[arg(long)]
    pub capacity: Option<u32>,
    /// A label as KEY=VALUE; repeat for more
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = client::parse_key_value)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Agent id, one subject token [default: agent-<hostname>-<pid>]
    #[arg(long)]
    pub id: Option<String>,
    /// Be a Scheduler from the start, outside the broker's control. Two such
    /// agents both fire every trigger (idempotency keys keep one order per slot)
    #[arg(long)]
    pub no_role_control: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct SchemasArgs {
    /// Folder to write to
    #[arg(long, default_value = "schemas")]
    pub out: PathBuf,
    /// Only compare; exit 2 when the folder does not match the code
    #[arg(long)]
    pub check: bool,
}

/// Parses the command line and runs it; the binary's whole `main`.
pub fn main() -> ExitCode {
    end_quietly_on_closed_stdout();
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Broker(_)
            | Command::Subagent(SubagentArgs { action: None, .. })
            | Command::Agent(_)
            | Command::Console(_)
            | Command::Dev(_)
    );
    // a command's own error says what was refused, once; a connection
    // lost and found again is said as it happens
    let command_log = format!(
        "warn,async_nats=off,baton::bus::connect=error,{}=info",
        crate::bus::LINK
    );
    init_logging(if daemon {
        crate::daemon::DAEMON_LOG
    } else {
        &command_log
    });
    if matches!(
        cli.command,
        Command::Subagent(SubagentArgs { action: None, .. })
    ) {
        // the lean subagent binary when it is there (`lean.rs`)
        lean::exec_beside();
        // before any thread starts (subagent/memory.rs)
        crate::subagent::memory::one_arena();
    }
    let system = actix::System::new();
    match system.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// A reader that stops reading (`baton watch | head -1`) ends the command
/// quietly with status 0, wherever it was printing: `println!` panics when
/// stdout is a closed pipe, and this hook turns that one panic into the exit.
/// Every other panic goes to the usual hook.
fn end_quietly_on_closed_stdout() {
    let closed = format!(
        "failed printing to stdout: {}",
        std::io::Error::from_raw_os_error(nix::errno::Errno::EPIPE as i32)
    );
    let usual = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message == Some(closed.as_str()) {
            std::process::exit(0);
        }
        usual(info)
    }));
}

/// The configuration `cli` asks for: the file, the environment, then its
/// flags.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut overrides = cli.global.overrides();
    let metrics_listen = match &cli.command {
        Command::Broker(a) => a.metrics.metrics_listen.as_ref(),
        Command::Subagent(a) => a.metrics.metrics_listen.as_ref(),
        Command::Agent(a) => a.metrics.metrics_listen.as_ref(),
        _ => None,
    };
    if let Some(listen) = metrics_listen {
        overrides.push(("metrics.listen", listen.clone()));
    }
    match &cli.command {
        Command::Broker(a) => {
            if let Some(id) = &a.id {
                overrides.push(("broker.id", id.clone()));
            }
            if let Some(p) = a.precedence {
                overrides.push(("broker.precedence", p.to_string()));
            }
        }
        Command::Subagent(a) => {
            if let Some(id) = &a.id {
                overrides.push(("subagent.id", id.clone()));
            }
            if let Some(c) = a.capacity {
                overrides.push(("subagent.capacity", c.to_string()));
            }
        }
        Command::Agent(a) => {
            if let Some(id) = &a.id {
                overrides.push(("agent.id", id.clone()));
            }
            if a.no_role_control {
                overrides.push(("agent.role_control", "false".into()));
            }
        }
        _ => {}
    }
    let mut config = Config::load(cli.global.config.as_deref(), &overrides)?;
    if let Command::Subagent(a) = &cli.command {
        config.subagent.labels.extend(a.labels.iter().cloned());
    }
    Ok(config)
}

/// `baton subagent` (`baton-subagent` too, see `lean.rs`).
async fn run_subagent(config: Config) -> anyhow::Result<ExitCode> {
    let metrics = startup::metrics_addr(&config)?;
    let bus = connect(&config, "baton-subagent", true).await?;
    let id = config.subagent_id();
    startup::check(&bus, &config, Role::Subagent, Some(&id)).await?;
    startup::serve_metrics(metrics, crate::metrics::Role::Subagent, &bus)?;
    crate::subagent::run_until_signal(config, bus).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    let ok = ExitCode::SUCCESS;
    match cli.command {
        Command::Broker(_) => {
            let metrics = startup::metrics_addr(&config)?;
            let bus = connect(&config, "baton-broker", true).await?;
            startup::check(&bus, &config, Role::Broker, None).await?;
            startup::serve_metrics(metrics, crate::metrics::Role::Broker, &bus)?;
            crate::broker::prepare(&config, &bus);
            crate::broker::run_until_signal(config, bus).await?;
            Ok(ok)
        }
        Command::Subagent(SubagentArgs {
            action: Some(action),
            ..
        }) => client::subagent_control(&config, action).await.map(|_| ok),
        Command::Subagent(_) => run_subagent(config).await,
        Command::Agent(_) => {
            let metrics = startup::metrics_addr(&config)?;
            let bus = connect(&config, "baton-agent", true).await?;
            startup::check(&bus, &config, Role::Agent, None).await?;
            startup::serve_metrics(metrics, crate::metrics::Role::Agent, &bus)?;
            crate::agent::run_until_signal(config, bus).await?;
            Ok(ok)
        }
        Command::Deploy(a) => client::deploy(&config, a).await.map(|_| ok),
        Command::Undeploy(a) => jobs::undeploy(&config, a).await.map(|_| ok),
        Command::Job(c) => jobs::run(&config, c).await.map(|_| ok),
        Command::Submit(a) => submit::submit(&config, a).await,
        Command::Watch(a) => client::watch(&config, a).await.map(|_| ok),
        Command::Order(c) => orders::run(&config, c).await.map(|_| ok),
        Command::Status(a) => client::status(&config, a).await.map(|_| ok),
        Command::Audit(a) => audit::audit(&config, a).await.map(|_| ok),
        Command::Scheduler(c) => client::scheduler_control(&config, c).await.map(|_| ok),
        Command::Console(a) => {
            let bus = startup::connect_console(&config).await?;
            startup::check(&bus, &config, Role::Console, None).await?;
            crate::console::run(&config, bus, a).await.map(|_| ok)
        }
        Command::Dev(a) => dev::run(&config, cli.global.config.as_deref(), a)
            .await
            .map(|_| ok),
        Command::Bench(b) => crate::bench::run(b).await.map(|_| ok),
        Command::Schemas(a) => schemas(a),
        Command::Auth(c) => auth::run(&config, c).map(|_| ok),
    }
}

fn schemas(args: SchemasArgs) -> anyhow::Result<ExitCode> {
    if args.check {
        match crate::schema::check(&args.out) {
            Ok(()) => {
                println!("{} matches the code", args.out.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!(
                    "error: {} does not match the code; run `baton schemas` to regenerate",
                    args.out.display()
                );
                Ok(ExitCode::from(EXIT_ERROR))
            }
        }
    } else {
        let written = crate::schema::write(&args.out)?;
        println!("wrote {} files to {}", written.len(), args.out.display());
        Ok(ExitCode::SUCCESS)
    }
}

/// Connects to NATS as configured. Daemons wait for the server; clients fail
/// fast, and without credentials of their own use `baton dev`'s admin
/// credentials when they talk to a local server from inside the repository.
pub async fn connect(config: &Config, name: &str, daemon: bool) -> anyhow::Result<Bus> {
    if daemon {
        return crate::daemon::connect(config, name).await;
    }
    let nats = &config.nats;
    let credentials = crate::daemon::configured_credentials(nats)
        .unwrap_or_else(|| dev::local_credentials(&nats.url).unwrap_or_default());
    let settings = crate::daemon::connect_settings(config, name, credentials, false);
    Ok(Bus::connect(&settings, Subjects::new(config.prefix.clone())).await?)
}

use crate::daemon::init_logging;
pub use crate::daemon::wait_for_signal;

pub use crate::time::parse_duration;
