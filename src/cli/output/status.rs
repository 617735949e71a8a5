//! `baton status` for people: the broker and its standbys, order counts,
//! jobs and workflows, the agents and the Scheduler, subagents, clusters.

use std::fmt::Write as _;

use super::{clock, clock_s};
use crate::protocol::*;

/// The brokers part of `baton status`.
fn brokers_text(out: &mut String, brokers: &[BrokerStatus]) {
    if brokers.is_empty() {
        return;
    }
    let _ = writeln!(out, "brokers ({}):", brokers.len());
    let _ = writeln!(
        out,
        "  {:<24} {:<8} {:>8} {:>10} {:>10} {:>10}",
        "ID", "ROLE", "EPOCH", "PRECEDENCE", "LEASE AGE", "HEARTBEAT"
    );
    for b in brokers {
        let epoch = match b.role {
            BrokerRole::Active => b.epoch.to_string(),
            BrokerRole::Standby | BrokerRole::Stopped => "-".to_string(),
        };
        let lease = b
            .lease_age_ms
            .map_or("-".to_string(), |ms| format!("{ms}ms"));
        let _ = writeln!(
            out,
            "  {:<24} {:<8} {:>8} {:>10} {:>10} {:>10}",
            b.id,
            b.role.as_str(),
            epoch,
            b.precedence,
            lease,
            format!("{}ms ago", b.heartbeat_age_ms),
        );
    }
}

/// The agents part of `baton status`.
/// `not_firing` is the broker's word for why no trigger fires (it knows
/// the agents it dropped as silent); without it, it is worked out here.
fn agents_text(out: &mut String, agents: &[AgentStatus], not_firing: Option<&str>) {
    let schedulers = agents.iter().filter(|a| a.role == AgentRole::Scheduler);
    let scheduler = match schedulers.map(|a| a.id.as_str()).collect::<Vec<_>>()[..] {
        [] => match not_firing {
            Some(why) => format!("none: triggers are NOT firing: {why}"),
            None => no_scheduler(agents),
        },
        [one] => one.to_string(),
        ref many => format!(
            "{} (more than one: the broker turns all but one off)",
            many.join(", ")
        ),
    };
    let _ = writeln!(out, "scheduler: {scheduler}");
    if agents.is_empty() {
        return;
    }
    let _ = writeln!(out, "agents ({}):", agents.len());
    let _ = writeln!(
        out,
        "  {:<24} {:<10} {:<10} {:>5} {:>5} {:>5} {:>9} {:>8} {:>10}  notes",
        "ID", "ROLE", "HEALTH", "CPU%", "MEM%", "LOAD", "SCHEDULES", "LEASE", "HEARTBEAT"
    );
    for a in agents {
        let mut notes: Vec<String> = Vec::new();
        if !a.controlled {
            notes.push("outside broker control".into());
        }
        match a.switched.as_ref().filter(|s| s.off) {
            Some(s) => notes.push(format!("turned off by {} at {}", s.by, clock_s(s.at_ms))),
            None if a.excluded => notes.push("turned off by an operator".into()),
            None => {}
        }
        if a.switch_condition_met {
            notes.push("switch condition met".into());
        }
        let lease = a
            .lease_left_ms
            .map_or("-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let _ = writeln!(
            out,
            "  {:<24} {:<10} {:<10} {:>5.0} {:>5.0} {:>5.2} {:>9} {:>8} {:>10}  {}",
            a.id,
            a.role.as_str(),
            a.health_level.as_str(),
            a.health.cpu_percent,
            a.health.memory_percent,
            a.health.load_average,
            a.schedules,
            lease,
            format!("{}ms ago", a.heartbeat_age_ms),
            notes.join(", ")
        );
        for problem in &a.watch_problems {
            let _ = writeln!(out, "    file trigger: {problem}");
        }
    }
}

/// Why no agent is the Scheduler, in plain words: triggers do not fire.
fn no_scheduler(agents: &[AgentStatus]) -> String {
    match crate::broker::election::not_firing(agents) {
        Some(why) => format!("none: triggers are NOT firing: {why}"),
        None => "none yet (electing one)".to_string(),
    }
}

/// `baton status` when no active broker answered: `why`, then each
/// broker's own view (standbys say who holds the lease, or since when none
/// does), as of `now_ms`.
pub fn views_text(why: &str, views: &[BrokerView], now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "no active broker answered ({why})");
    if views.is_empty() {
        let _ = writeln!(
            out,
            "no broker answered at all: is one running against this NATS server and prefix?"
        );
        return out;
    }
    let _ = writeln!(out, "brokers' own views ({}):", views.len());
    let ago = |ms: u64| super::took(now_ms.saturating_sub(ms));
    for v in views {
        let role = match v.role {
            BrokerRole::Active => format!("active (epoch {}), not answering status yet", v.epoch),
            BrokerRole::Standby => "standby".to_string(),
            BrokerRole::Stopped => "stopping".to_string(),
        };
        let lease = match (&v.lease, &v.lease_error, v.no_active_since_ms) {
            // a broker restarted under its id, waiting out its old lease
            (Some(l), _, _) if l.broker_id == v.broker_id && v.role == BrokerRole::Standby => {
                format!(
                    "the lease still names this id (epoch {}, renewed {} ago): an earlier \
                     process of it held it; this one takes over once it runs out",
                    l.epoch,
                    ago(l.renewed_at_ms)
                )
            }
            (Some(l), _, _) => format!(
                "active broker per the lease: {} (epoch {}), renewed {} ago",
                l.broker_id,
                l.epoch,
                ago(l.renewed_at_ms)
            ),
            (None, _, Some(since)) => format!(
                "NO broker is active, since {} ({} ago) as far as it knows",
                clock(since),
                ago(since)
            ),
            (None, Some(e), None) => format!("lease not readable: {e}"),
            (None, None, None) => "no lease".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} {role}, precedence {}: {lease}",
            v.broker_id, v.precedence
        );
    }
    out
}

/// The text of `baton status`.
pub fn status_text(s: &StatusReply) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "broker {} (protocol v{}, up since {})",
        s.broker_id,
        s.protocol,
        clock(s.broker_started_at_ms)
    );
    brokers_text(&mut out, &s.brokers);
    let o = &s.orders;
    let _ = writeln!(
        out,
        "orders: {} accepted, {} running, {} succeeded, {} failed, {} cancelled",
        o.accepted, o.running, o.succeeded, o.failed, o.cancelled
    );
    if s.refused_messages > 0 {
        let _ = writeln!(
            out,
            "messages refused for their sender: {} (see the broker's log)",
            s.refused_messages
        );
    }
    if s.unstored_audit_records > 0 {
        let _ = writeln!(
            out,
            "audit records not stored: {} (see the broker's log)",
            s.unstored_audit_records
        );
    }
    if s.malformed_messages > 0 {
        let _ = writeln!(out, "malformed messages refused: {}", s.malformed_messages);
    }
    let _ = writeln!(
        out,
        "jobs ({}): {}",
        s.jobs.len(),
        if s.jobs.is_empty() {
            "none; deploy with `baton deploy FILE.toml`".to_string()
        } else {
            s.jobs.join(", ")
        }
    );
    if !s.workflows.is_empty() {
        let _ = writeln!(
            out,
            "workflows ({}): {}",
            s.workflows.len(),
            s.workflows.join(", ")
        );
    }
    for (name, pause) in &s.paused {
        let all = if pause.all {
            "; manual submits refused too"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "paused: {name} (its triggers do not fire), by {} at {}{all}",
            pause.by,
            clock_s(pause.at_ms)
        );
    }
    agents_text(&mut out, &s.agents, s.not_firing.as_deref());
    let _ = writeln!(out, "subagents ({}):", s.subagents.len());
    if s.subagents.is_empty() {
        let _ = writeln!(out, "  none; start one with `baton subagent`");
        return out;
    }
    let _ = writeln!(
        out,
        "  {:<24} {:<10} {:>8} {:>9} {:>8} {:>5} {:>5} {:>10}  labels",
        "ID", "STATE", "RUNNING", "CAPACITY", "DONE", "CPU%", "MEM%", "HEARTBEAT"
    );
    for sub in &s.subagents {
        let state = sub.state.as_str();
        let labels: Vec<String> = sub.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let (cpu, mem) = sub.load.map_or(("-".to_string(), "-".to_string()), |l| {
            (
                format!("{:.0}", l.cpu_percent),
                format!("{:.0}", l.memory_percent),
            )
        });
        let _ = writeln!(
            out,
            "  {:<24} {:<10} {:>8} {:>9} {:>8} {:>5} {:>5} {:>10}  {}",
            sub.id,
            state,
            sub.running,
            sub.capacity,
            sub.tasks_finished,
            cpu,
            mem,
            format!("{}ms ago", sub.heartbeat_age_ms),
            labels.join(",")
        );
    }
    for sub in &s.subagents {
        if let Some(sw) = &sub.switched {
            let what = if sw.off { "disabled" } else { "enabled" };
            let _ = writeln!(
                out,
                "  {} {what} by {} at {}",
                sub.id,
                sw.by,
                clock_s(sw.at_ms)
            );
        }
    }
    for sub in s.subagents.iter().filter(|sub| sub.refused > 0) {
        let _ = writeln!(
            out,
            "  {} refused {} commands not signed by a broker (see its log)",
            sub.id, sub.refused
        );
    }
    if !s.clusters.is_empty() {
        let _ = writeln!(out, "clusters ({}):", s.clusters.len());
        for c in &s.clusters {
            let members: Vec<String> = c
                .members
                .iter()
                .map(|m| {
                    format!(
                        "{} (priority {}, {})",
                        m.subagent_id,
                        m.priority,
                        m.state.as_str()
                    )
                })
                .collect();
            let members = if members.is_empty() {
                "no known subagent matches".to_string()
            } else {
                members.join(", ")
            };
            let _ = writeln!(out, "  {:<16} {:<15} {}", c.name, c.mode.as_str(), members);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstored_audit_records_are_shown_when_there_are_some() {
        let example = include_str!("../../../schemas/examples/StatusReply.json");
        let mut reply: StatusReply = serde_json::from_str(example).unwrap();
        reply.unstored_audit_records = 0;
        assert!(!status_text(&reply).contains("audit records"));
        reply.unstored_audit_records = 2;
        assert!(status_text(&reply).contains("audit records not stored: 2 (see the broker's log)"));
    }

    #[test]
    fn no_scheduler_says_why_triggers_do_not_fire() {
        let agent: AgentStatus = serde_json::from_value(serde_json::json!({
            "id": "a1", "role": "spare", "controlled": true, "health_level": "good",
            "health": {"cpu_percent": 5.0, "memory_percent": 20.0}, "heartbeat_age_ms": 100,
        }))
        .expect("an agent");
        assert!(no_scheduler(&[]).contains("no agent is connected"));
        assert_eq!(
            no_scheduler(std::slice::from_ref(&agent)),
            "none yet (electing one)"
        );
        let off = AgentStatus {
            excluded: true,
            ..agent.clone()
        };
        let text = no_scheduler(&[off.clone(), off.clone()]);
        assert!(text.contains("NOT firing") && text.contains("turned off by an operator"));
        let sick = AgentStatus {
            switch_condition_met: true,
            ..agent.clone()
        };
        assert!(no_scheduler(&[off.clone(), sick]).contains("switch condition"));
        let wild = AgentStatus {
            controlled: false,
            ..agent
        };
        assert!(no_scheduler(&[off, wild]).contains("outside broker control"));
    }

    #[test]
    fn without_an_active_broker_each_broker_s_view_is_shown() {
        let example = include_str!("../../../schemas/examples/BrokerView.json");
        let view: BrokerView = serde_json::from_str(example).unwrap();
        let now = view.at_ms;
        let text = views_text("none within 1s", std::slice::from_ref(&view), now);
        assert_eq!(
            text,
            "no active broker answered (none within 1s)\n\
             brokers' own views (1):\n\
             \x20 broker-b standby, precedence 100: active broker per the lease: broker-a (epoch 41), renewed 400ms ago\n"
        );
        let mut restarted = view.clone();
        restarted.broker_id = "broker-a".into();
        let text = views_text("none within 1s", &[restarted], now);
        assert!(
            text.contains(
                "broker-a standby, precedence 100: the lease still names this id (epoch 41"
            ),
            "{text}"
        );
        let none = BrokerView {
            lease: None,
            no_active_since_ms: Some(now - 12_300),
            ..view
        };
        let text = views_text("no responders", &[none], now);
        assert!(
            text.contains("broker-b standby, precedence 100: NO broker is active, since ")
                && text.ends_with("(12.3s ago) as far as it knows\n"),
            "{text}"
        );
        assert!(views_text("x", &[], now).contains("no broker answered at all"));
    }
}
