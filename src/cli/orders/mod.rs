//! `baton order ...`: show, list, suspend, resume or cancel orders, and
//! print their logs. Like every client command, these use only the wire
//! protocol (and the log stream any NATS client can read).

mod list;
mod logs;

use anyhow::bail;
use futures::StreamExt;
use serde::Serialize;

use super::connect;
use super::output::{self, Control};
use crate::bus::{Bus, BusError, OrderLog};
use crate::config::Config;
use crate::protocol::*;

pub use list::{parse_when, ListArgs, When};

/// Lines of each step attempt that `order show` prints.
const TAIL_LINES: usize = 5;
/// Lines of a failed task's stderr that `order show` prints.
const STDERR_LINES: usize = 10;

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

pub async fn run(config: &Config, command: OrderCommand) -> anyhow::Result<()> {
    // bad input is an error before any cluster is asked
    let list_request = match &command {
        OrderCommand::List(args) => Some(list::list_request(args, crate::time::now_ms())?),
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
            list::list(config, &bus, request, args.json).await
        }
        OrderCommand::Logs {
            order_id,
            step,
            follow,
            json,
        } => {
            // a finished order the broker no longer holds keeps its lines
            let order_id = whole_id(config, &bus, &order_id).await.unwrap_or(order_id);
            logs::logs(config, &bus, &order_id, step, follow, json).await
        }
        OrderCommand::Suspend {
            order_id,
            kill,
            json,
        } => {
            let order_id = whole_id(config, &bus, &order_id).await?;
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
            let order_id = whole_id(config, &bus, &order_id).await?;
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
            let order_id = whole_id(config, &bus, &order_id).await?;
            let request = CancelOrder { order_id, kill };
            let info = command_order(config, &bus, s.order_cancel(), &request).await?;
            print_control(&info, Control::Cancel, kill, json)
        }
    }
}

/// The whole id of the order `id` names: itself when whole, else the one
/// held order it is the start or the end of (`baton watch` prints the
/// end), which the broker finds; its error (none, several) comes back as it is.
async fn whole_id(config: &Config, bus: &Bus, id: &str) -> Result<String, BusError> {
    if id.len() >= 36 {
        return Ok(id.to_string());
    }
    let get = GetOrder {
        order_id: id.to_string(),
    };
    let info: OrderInfo = bus
        .request(
            bus.subjects().order_get(),
            &get,
            config.nats.request_timeout,
        )
        .await?;
    Ok(info.order_id)
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
    if let Some(tails) = output::StderrTails::of(&info, STDERR_LINES) {
        stderr_tails(config, bus, tails, &mut text).await;
    }
    print!("{text}");
    Ok(())
}

/// The last stderr lines of a failed order's failed task (or steps), read
/// from the log stream; when they cannot be read, one line that says why.
async fn stderr_tails(
    config: &Config,
    bus: &Bus,
    mut tails: output::StderrTails,
    out: &mut String,
) {
    let read = async {
        let log_of = tails.log_of().to_string();
        let mut logs = bus.order_logs(&config.log_stream(), &log_of, false).await?;
        while let Some(item) = logs.next().await {
            if let OrderLog::Line(line) = item? {
                tails.push(&line);
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    let limit = config.nats.request_timeout;
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) => tails.render(out),
        Ok(Err(e)) => output::StderrTails::unreadable(out, &format!("no log is kept here: {e:#}")),
        Err(_) => output::StderrTails::unreadable(
            out,
            &format!(
                "the log stream did not answer within {}",
                output::span(limit)
            ),
        ),
    }
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
                output::span(limit),
                info.order_id
            );
        }
    }
}
