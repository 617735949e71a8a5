//! `baton audit`: the audit trail of state-changing commands, read from
//! the audit stream (only the admin role may read it) from a start time
//! (WHEN, parsed as for `order list`) until caught up, as a table or JSON
//! lines.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use futures::StreamExt;

use super::orders::{parse_when, When};
use super::{connect, output};
use crate::bus::{BusError, LogsError};
use crate::config::Config;
use crate::protocol::{AuditRecord, AUDIT_COMMANDS};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only records made at or after WHEN: a duration meaning that long ago
    /// (30m, 2h, 1day) or an RFC 3339 time (2026-01-31T08:00:00Z)
    #[arg(long, value_name = "WHEN", value_parser = parse_when)]
    pub since: Option<When>,
    /// Only this command (deploy, undeploy, job.pause, job.resume,
    /// order.cancel, order.suspend, order.resume, subagent.disable,
    /// subagent.enable, subagent.stop, scheduler.on, scheduler.off) or the
    /// commands under one word (job, order, subagent, scheduler)
    #[arg(long, value_name = "COMMAND", value_parser = parse_command)]
    pub command: Option<String>,
    /// Print each record (an AuditRecord) as one line of JSON
    #[arg(long)]
    pub json: bool,
}

/// A command to filter on: one of [`AUDIT_COMMANDS`], or the group of
/// those under one word (`order`, `job`, ...).
pub fn parse_command(s: &str) -> Result<String, String> {
    let group = |c: &&str| c.split_once('.').is_some_and(|(g, _)| g == s);
    if AUDIT_COMMANDS.contains(&s) || AUDIT_COMMANDS.iter().any(group) {
        return Ok(s.to_string());
    }
    Err(format!(
        "'{s}' is not a command: use {}, or job, order, subagent, scheduler for all of theirs",
        AUDIT_COMMANDS.join(", ")
    ))
}

/// `baton audit`: prints the records kept, oldest first, and ends.
pub async fn audit(config: &Config, args: AuditArgs) -> anyhow::Result<()> {
    let since_ms = args.since.map(|w| w.at_ms(crate::time::now_ms()));
    let bus = connect(config, "baton-audit", false).await?;
    let stream = config.audit_stream();
    let opened = bus
        .audit_records(&stream, since_ms, args.command.as_deref())
        .await;
    let mut records = match opened {
        Ok(records) => records,
        Err(e @ LogsError::NoStream { .. }) => bail!("no audit trail: {e}"),
        Err(LogsError::Bus(e @ BusError::Denied { .. })) => {
            return Err(e).context("only the admin role may read the audit trail")
        }
        Err(LogsError::Bus(e)) => return Err(e.into()),
    };
    let timeout = config.nats.request_timeout.max(Duration::from_secs(1));
    let mut kept: Vec<AuditRecord> = Vec::new();
    loop {
        let next = tokio::time::timeout(timeout, records.next()).await;
        let Ok(next) = next else {
            bail!("the audit stream {stream} stopped answering within {timeout:?}");
        };
        let Some(record) = next else { break };
        let record = record?;
        if args.json {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            kept.push(record);
        }
    }
    if args.json {
        return Ok(());
    }
    if kept.is_empty() {
        eprintln!(
            "no audit records match (they are kept for {})",
            output::span(config.nats.audit_retention)
        );
        return Ok(());
    }
    print!("{}", output::audit_text(&kept));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_recorded_ones_or_their_groups() {
        for ok in [
            "deploy",
            "undeploy",
            "order.cancel",
            "subagent",
            "job.pause",
            "job",
        ] {
            assert_eq!(parse_command(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "order.>",
            "*",
            "a.b.c",
            "",
            "order.",
            "bogus",
            "order.bogus",
            "deploy.x",
        ] {
            let e = parse_command(bad).unwrap_err();
            assert!(
                e.contains("is not a command") && e.contains("order.cancel"),
                "{e}"
            );
        }
    }

    #[test]
    fn since_is_parsed_as_for_order_list() {
        let since = parse_when("1h").unwrap();
        assert_eq!(since.at_ms(3 * 3_600_000), 2 * 3_600_000);
        let at = parse_when("2026-12-06T10:00:00Z").unwrap();
        assert_eq!(at, When::At(1_796_551_200_000));
    }
}
