//! Baton on a three-node JetStream cluster (random ports, Baton's
//! authentication, every bucket at replicas 3) that loses a node mid-run:
//! `baton bench cluster` SIGKILLs the node leading the orders bucket's
//! stream, then a follower, then both of two nodes at once (no quorum),
//! and starts each again, while orders stream in
//! (each under a request id, sent again until accepted) and a trigger
//! fires every second; then the agent that is the Scheduler is SIGKILLed
//! and started again. Brokers, agents and subagents each prefer a
//! different node and know all three. Before the follower's kill the
//! bench puts the brokers' lease stream's leader on it: the active broker
//! must move it back beside the orders stream's leader.
//!
//! The test runs the real command and checks its figures, and judges from
//! the evidence files the tasks wrote (not from Baton's own account): no
//! accepted order lost, none run twice, no trigger slot run twice, the
//! trigger firing again after the restarts, and each restarted node a
//! current replica again. It waits with deadlines and asserts no speed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// The bench bounds each of its own waits; this bounds the whole run.
const LIMIT: Duration = Duration::from_secs(240);

fn evidence(dir: &Path, stem: &str) -> PathBuf {
    let found = std::fs::read_dir(dir).expect("logs folder").flatten();
    let mut files = found.map(|e| e.path()).filter(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        name.starts_with(stem)
    });
    files
        .next()
        .unwrap_or_else(|| panic!("no {stem} file in {}", dir.display()))
}

fn print_logs(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("===== {} =====", entry.path().display());
        for line in &lines[lines.len().saturating_sub(80)..] {
            eprintln!("{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_loses_and_doubles_nothing() {
    let logs = tempfile::Builder::new()
        .prefix("baton-cluster-test-")
        .tempdir()
        .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"));
    command
        .args([
            "bench", "cluster", "--rounds", "2", "--down", "3s", "--settle", "2s",
        ])
        .args(["--no-quorum", "--scheduler-kills", "1"])
        .args(["--rate", "10", "--json", "--logs"])
        .arg(logs.path())
        .env_remove("BATON_CONFIG")
        .env("BATON_LOG", "info")
        .kill_on_drop(true);
    let run = tokio::time::timeout(LIMIT, command.output())
        .await
        .expect("baton bench cluster finishes")
        .expect("baton runs");
    if !run.status.success() {
        print_logs(logs.path());
        panic!(
            "baton bench cluster failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&run.stdout).expect("a JSON report");
    let check = |ok: bool, what: &str| {
        if !ok {
            print_logs(logs.path());
            panic!("{what}: {report:#}");
        }
    };

    let tally = &report["tally"];
    check(tally["accepted"].as_u64() > Some(0), "orders were accepted");
    check(tally["lost"] == 0, "no accepted order lost");
    check(tally["executed_twice"] == 0, "no order executed twice");
    check(tally["unfinished"] == 0, "every accepted order finished");
    check(report["slots_twice"] == 0, "no trigger slot run twice");
    let rounds = report["rounds"].as_array().expect("rounds");
    check(rounds.len() == 3, "two node kills, then two at once");
    check(
        rounds[0]["victim"] == "leader",
        "the first kill is the orders stream's leader",
    );
    check(rounds[1]["victim"] == "follower", "the second a follower");
    // the follower was made to lead the brokers' lease stream first: the
    // active broker moved that leader back beside the orders stream's, so
    // the killed follower led nothing of Baton's (no election, no stall)
    check(
        rounds[1]["scattered"] == true,
        "the lease stream's leader was put on the follower",
    );
    check(
        rounds[1]["colocated_ms"].is_u64(),
        "the active broker moved the lease stream's leader off the follower",
    );
    check(
        rounds[1]["led"]
            .as_array()
            .is_some_and(|led| led.is_empty()),
        "the killed follower led none of Baton's streams",
    );
    // without quorum JetStream stores nothing: nothing may be accepted
    check(
        rounds[2]["victim"] == "quorum",
        "the third two nodes at once",
    );
    check(
        rounds[2]["accepted_while_down"] == 0,
        "no order accepted while JetStream had no quorum",
    );
    for round in rounds {
        check(round["caught_up"] == true, "the restarted node caught up");
        check(
            round["next_accepted_ms"].is_u64(),
            "an order was accepted after the kill",
        );
    }

    // the Scheduler agent SIGKILLed: another agent took the role and fired
    let moves = report["scheduler_moves"]
        .as_array()
        .expect("scheduler moves");
    check(moves.len() == 1, "one Scheduler kill");
    check(
        moves[0]["successor"].is_string() && moves[0]["successor"] != moves[0]["killed"],
        "another agent became the Scheduler",
    );
    check(
        moves[0]["next_fire_ms"].is_u64(),
        "the trigger fired after the Scheduler's kill",
    );
    for round in rounds {
        check(
            round["led"].is_array(),
            "the streams the node led are named",
        );
    }

    // the evidence, read here: each accepted order ran exactly once
    let markers = std::fs::read_to_string(evidence(logs.path(), "cluster-markers-")).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in markers.lines().filter(|l| !l.is_empty()) {
        *runs.entry(line).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    check(twice.is_empty(), &format!("orders run twice: {twice:?}"));
    check(
        runs.len() as u64 == tally["accepted"].as_u64().unwrap_or(0),
        "every accepted order ran",
    );
    // each slot once, and fires after the last restart
    let slots = std::fs::read_to_string(evidence(logs.path(), "cluster-slots-")).unwrap();
    let mut per_slot: HashMap<&str, usize> = HashMap::new();
    let mut last_run = 0u64;
    for line in slots.lines() {
        let mut fields = line.split_whitespace();
        if let (Some(slot), Some(at)) = (fields.next(), fields.next()) {
            *per_slot.entry(slot).or_default() += 1;
            last_run = last_run.max(at.parse().unwrap_or(0));
        }
    }
    check(per_slot.values().all(|n| *n == 1), "each slot ran once");
    check(per_slot.len() >= 3, "the trigger fired");
    let restarted = rounds[2]["restarted_at_ms"].as_u64().unwrap_or(u64::MAX);
    check(
        last_run > restarted,
        "the trigger fired after the last restart",
    );
}
