//! `baton audit`: the table of audit records.

use super::{clock_s, table};
use crate::protocol::AuditRecord;

/// The records as a table, oldest first: time (to the second, UTC), who
/// sent the command and whether Baton verified its signature, the command
/// with its options, its target, and its outcome (`ok`, or the error code
/// and message).
pub fn audit_text(records: &[AuditRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let command = match &r.detail {
                Some(detail) => format!("{} ({detail})", r.command),
                None => r.command.clone(),
            };
            let outcome = match &r.error {
                Some(error) => format!("{}: {error}", r.outcome),
                None => r.outcome.clone(),
            };
            let target = if r.target.is_empty() { "-" } else { &r.target };
            vec![
                clock_s(r.at_ms),
                r.who.clone(),
                if r.verified { "yes" } else { "no" }.to_string(),
                command,
                target.to_string(),
                outcome,
            ]
        })
        .collect();
    let mut out = String::new();
    table(
        &mut out,
        "",
        &["TIME", "WHO", "VERIFIED", "COMMAND", "TARGET", "OUTCOME"],
        &rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::fixtures::T0;

    fn record(command: &str, target: &str, who: &str, verified: bool) -> AuditRecord {
        AuditRecord {
            at_ms: T0,
            command: command.into(),
            target: target.into(),
            outcome: "ok".into(),
            error: None,
            who: who.into(),
            verified,
            broker_id: "broker-1".into(),
            detail: None,
        }
    }

    #[test]
    fn records_are_rows_with_who_verified_command_target_and_outcome() {
        let deploy = record("deploy", "hello, nightly", "admin", true);
        let cancel = AuditRecord {
            at_ms: T0 + 61_000,
            detail: Some("kill".into()),
            outcome: "not_found".into(),
            error: Some("no order x is held by this broker".into()),
            ..record("order.cancel", "x", "unsigned", false)
        };
        let text = audit_text(&[deploy, cancel]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "TIME                  WHO       VERIFIED  COMMAND              TARGET          OUTCOME",
                "2026-01-31T08:00:00Z  admin     yes       deploy               hello, nightly  ok",
                "2026-01-31T08:01:01Z  unsigned  no        order.cancel (kill)  x               not_found: no order x is held by this broker",
            ]
        );
    }

    #[test]
    fn an_empty_target_shows_a_dash_and_no_records_only_the_header() {
        let text = audit_text(&[record("scheduler.on", "", "unchecked", false)]);
        assert!(
            text.lines().nth(1).unwrap().contains("scheduler.on  -"),
            "{text}"
        );
        assert_eq!(audit_text(&[]).lines().count(), 1);
    }
}
