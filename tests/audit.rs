//! The audit trail: every state-changing command is recorded by the broker
//! with its outcome and who sent it, and `baton audit` shows the records
//! (`--json`, `--since`, `--command`); only the admin role may read them.
//!
//! Commands go through the wire as admin (`h.bus`), as client (a
//! connection with the client role's seed) and through the CLI (admin);
//! each signs its requests, so `who` is the identity and `verified` true.

mod common;

use std::time::Duration;

use baton::auth::Role;
use baton::bus::BusError;
use baton::protocol::*;
use common::*;

const JOBS: &str = r#"
[[job]]
name = "long"
program = "sleep"
args = ["30"]
"#;

/// Bound on one `baton` command.
const CLI: Duration = Duration::from_secs(20);
/// Bound on records reaching the stream.
const STORED: Duration = Duration::from_secs(10);

/// `baton audit --json <extra>` as admin: the records printed.
async fn audit_json(h: &Harness, extra: &[&str]) -> Vec<AuditRecord> {
    let mut args = vec!["audit", "--json"];
    args.extend_from_slice(extra);
    let out = run_baton(h, &args, CLI).await;
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an AuditRecord as JSON"))
        .collect()
}

/// (command, target, outcome, who) of each record, for comparisons.
fn summary(records: &[AuditRecord]) -> Vec<(String, String, String, String)> {
    records
        .iter()
        .map(|r| {
            (
                r.command.clone(),
                r.target.clone(),
                r.outcome.clone(),
                r.who.clone(),
            )
        })
        .collect()
}

fn row(command: &str, target: &str, outcome: &str, who: &str) -> (String, String, String, String) {
    (command.into(), target.into(), outcome.into(), who.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_commands_are_recorded_with_who_sent_them_and_how_they_ended() {
    let mut h = cluster(&["sub-1"]).await;
    let client = h.connect_as(Role::Client, None).await;

    deploy(&h.bus, JOBS).await;
    // a dry run changes nothing and is not recorded
    let dry = DeployRequest {
        dry_run: true,
        jobs: baton::jobs::parse_deploy_file("t.toml", JOBS).unwrap().jobs,
        clusters: Vec::new(),
        workflows: Vec::new(),
        ..Default::default()
    };
    let checked: DeployReply = within(
        REQUEST,
        "dry run",
        h.bus.request(h.bus.subjects().deploy(), &dry, REQUEST),
    )
    .await
    .expect("dry run answered");
    assert!(checked.dry_run);

    let order = submit(&client, "long", &[]).await;
    let info = cancel(&h.bus, &order, true).await.expect("cancel accepted");
    assert_eq!(info.order_id, order);
    let unknown = cancel(&client, "0000-nope", false).await;
    assert!(
        matches!(&unknown, Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound),
        "{unknown:?}"
    );

    let first = [
        row("deploy", "long", "ok", "admin"),
        row("order.cancel", &order, "ok", "admin"),
        row("order.cancel", "0000-nope", "not_found", "client"),
    ];
    wait_until(STORED, "the first records are stored", || async {
        summary(&audit_json(&h, &[]).await) == first
    })
    .await;
    let records = audit_json(&h, &[]).await;
    assert!(records.iter().all(|r| r.verified), "{records:?}");
    assert_eq!(records[1].detail.as_deref(), Some("kill"), "{records:?}");
    assert_eq!(
        records[2]
            .error
            .as_deref()
            .map(|e| e.contains("no order 0000-nope")),
        Some(true)
    );
    assert!(records.iter().all(|r| !r.broker_id.is_empty()));

    // everything after this moment, and nothing before, is --since it
    let mid = baton::time::now_ms() + 1;
    wait_until(REQUEST, "the clock passes the mark", || async {
        baton::time::now_ms() > mid
    })
    .await;
    for args in [
        &["subagent", "disable", "sub-1"][..],
        &["subagent", "enable", "sub-1"][..],
    ] {
        let out = run_baton(&h, args, CLI).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let out = run_baton(&h, &["scheduler", "on", "agent-none", "--no-wait"], CLI).await;
    assert_eq!(out.status.code(), Some(2), "no such agent: {out:?}");

    let later = [
        row("subagent.disable", "sub-1", "ok", "admin"),
        row("subagent.enable", "sub-1", "ok", "admin"),
        row("scheduler.on", "agent-none", "not_found", "admin"),
    ];
    let since =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(mid))
            .to_string();
    wait_until(STORED, "the switch-overs are stored", || async {
        summary(&audit_json(&h, &["--since", &since]).await) == later
    })
    .await;
    let all = audit_json(&h, &["--since", "1h"]).await;
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "{all:?}");
    let subagent = audit_json(&h, &["--command", "subagent"]).await;
    assert_eq!(summary(&subagent), later[..2]);
    let deploys = audit_json(&h, &["--command", "deploy"]).await;
    assert_eq!(summary(&deploys), first[..1]);

    // for people: a table
    let out = run_baton(&h, &["audit", "--command", "order.cancel"], CLI).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("VERIFIED"),
        "{text}"
    );
    assert!(lines[1].contains("admin") && lines[1].contains("order.cancel (kill)"));
    assert!(lines[2].contains("client") && lines[2].contains("not_found: no order 0000-nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_role_may_read_the_audit_trail() {
    let mut h = cluster(&[]).await;
    let seed = h.seed(Role::Client, None);
    let mut command = tokio::process::Command::from(baton_cmd(&h));
    command
        .env("BATON_NATS__NKEY", &seed)
        .args(["audit"])
        .kill_on_drop(true);
    let out = within(CLI, "baton audit as client", command.output())
        .await
        .expect("run baton audit");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only the admin role may read the audit trail")
            && stderr.contains("NATS refused $JS.API.STREAM.INFO.baton_audit"),
        "{stderr}"
    );

    // the admin's, with nothing recorded yet
    let out = run_baton(&h, &["audit", "--since", "2026-12-06T10:00:00Z"], CLI).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no audit records match"),
        "{out:?}"
    );
}
