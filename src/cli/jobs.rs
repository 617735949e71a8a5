//! `baton job list|show|pause|resume` and `baton undeploy`: the job
//! inventory and its lifecycle, over the wire protocol only (`job.list`,
//! `job.get`, `job.control`, and `deploy` with `remove`).

use clap::Args;

use super::connect;
use super::output;
use crate::config::Config;
use crate::protocol::*;

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
    /// Show one job or workflow: its definition, the next 10 fire times
    /// with zone and UTC offset, and its recent orders
    Show {
        /// The job's or workflow's name
        name: String,
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
    let timeout = config.nats.request_timeout;
    let s = bus.subjects().clone();
    match command {
        JobCommand::List { json } => {
            let list: JobList = bus.request(s.job_list(), &ListJobs {}, timeout).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&list)?),
                false => print!("{}", output::job_list_text(&list)),
            }
        }
        JobCommand::Show { name, json } => {
            let info: JobInfo = bus.request(s.job_get(), &GetJob { name }, timeout).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&info)?),
                false => print!("{}", output::job_text(&info)),
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
