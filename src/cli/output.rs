//! How client commands print things for people (and as JSON lines).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::bus::{decode, DecodeError, Encoding};
use crate::protocol::*;

fn clock(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

fn short(id: &str) -> &str {
    // uuid v7: the last 12 hex digits are random and tell orders apart
    id.get(id.len().saturating_sub(12)..).unwrap_or(id)
}

/// "order … succeeded in 12ms (exit code 0) on sub-1"
pub fn finished_line(e: &OrderFinished) -> String {
    let mut line = format!("order {} {}", e.order_id, e.state.as_str());
    if let Some(ms) = e.duration_ms {
        let _ = write!(
            line,
            " in {}",
            humantime::format_duration(Duration::from_millis(ms))
        );
    }
    match (e.exit_code, e.signal) {
        (Some(code), _) => {
            let _ = write!(line, " (exit code {code})");
        }
        (None, Some(sig)) => {
            let _ = write!(line, " (killed by signal {sig})");
        }
        _ => {}
    }
    if e.timed_out {
        line.push_str(", timed out");
    }
    if let Some(reason) = &e.reason {
        let _ = write!(line, ": {reason}");
    }
    if let Some(sub) = &e.subagent_id {
        let _ = write!(line, " on {sub}");
    }
    line
}

/// One event as a line for `baton watch`.
pub fn event_line(kind: EventKind, payload: &[u8], json: bool) -> Result<String, DecodeError> {
    fn render<T: serde::de::DeserializeOwned + serde::Serialize>(
        payload: &[u8],
        json: bool,
        kind: EventKind,
        text: impl FnOnce(&T) -> String,
    ) -> Result<String, DecodeError> {
        let value: T = decode(Encoding::MessagePack, payload)?;
        if json {
            let mut v = serde_json::to_value(&value).expect("events encode as JSON");
            v["event"] = serde_json::Value::from(kind.token());
            Ok(v.to_string())
        } else {
            Ok(text(&value))
        }
    }
    match kind {
        EventKind::Accepted => render(payload, json, kind, |e: &OrderAccepted| {
            let params: Vec<String> = e.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} {:<16} {} accepted {}",
                clock(e.at_ms),
                e.job,
                short(&e.order_id),
                params.join(" ")
            )
        }),
        EventKind::Changed => render(payload, json, kind, |e: &OrderChanged| {
            format!(
                "{} {:<16} {} {} (order {})",
                clock(e.at_ms),
                e.workflow,
                short(&e.order_id),
                e.what,
                e.state.as_str()
            )
        }),
        EventKind::Started => render(payload, json, kind, |e: &TaskStarted| {
            format!(
                "{} {:<16} {} started on {} (attempt {}{})",
                clock(e.at_ms),
                e.job,
                short(&e.order_id),
                e.subagent_id,
                e.attempt,
                e.pid.map(|p| format!(", pid {p}")).unwrap_or_default()
            )
        }),
        EventKind::Log => render(payload, json, kind, |e: &TaskLog| {
            let stream = match e.stream {
                LogStream::Stdout => "out",
                LogStream::Stderr => "err",
            };
            format!(
                "{} {:<16} {} {stream}| {}",
                clock(e.at_ms),
                e.job,
                short(&e.order_id),
                e.line
            )
        }),
        EventKind::Finished => render(payload, json, kind, |e: &OrderFinished| {
            format!("{} {:<16} {}", clock(e.at_ms), e.job, finished_line(e))
        }),
    }
}

/// A subagent state change as a line for `baton watch`.
pub fn subagent_line(payload: &[u8], json: bool) -> Result<String, DecodeError> {
    let e: SubagentChanged = decode(Encoding::MessagePack, payload)?;
    if json {
        let mut v = serde_json::to_value(&e).expect("events encode as JSON");
        v["event"] = serde_json::Value::from("subagent");
        return Ok(v.to_string());
    }
    Ok(format!(
        "{} subagent {} {}: {}",
        clock(e.at_ms),
        e.subagent_id,
        e.state.as_str(),
        e.reason
    ))
}

/// The text of `baton order show`.
pub fn order_text(o: &OrderInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "order     {}", o.order_id);
    let _ = writeln!(out, "job       {}", o.job);
    let mut state = o.state.as_str().to_string();
    if o.cancel_requested && !o.state.is_final() {
        state.push_str(" (cancel requested)");
    }
    let _ = writeln!(out, "state     {state}");
    if !o.params.is_empty() {
        let params: Vec<String> = o.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params    {}", params.join(" "));
    }
    let _ = writeln!(out, "attempt   {}", o.attempt);
    if let Some(sub) = &o.subagent_id {
        let _ = writeln!(out, "subagent  {sub}");
    }
    match (o.exit_code, o.signal) {
        (Some(code), _) => {
            let _ = writeln!(out, "exit code {code}");
        }
        (None, Some(sig)) => {
            let _ = writeln!(out, "signal    {sig}");
        }
        _ => {}
    }
    if o.timed_out {
        let _ = writeln!(out, "timed out yes");
    }
    if let Some(reason) = &o.reason {
        let _ = writeln!(out, "reason    {reason}");
    }
    if !o.outputs.is_empty() {
        let results: Vec<String> = o.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "results   {}", results.join(" "));
    }
    let _ = writeln!(out, "accepted  {}", clock(o.accepted_at_ms));
    if let Some(t) = o.started_at_ms {
        let _ = writeln!(out, "started   {}", clock(t));
    }
    if let Some(t) = o.finished_at_ms {
        let _ = writeln!(out, "finished  {}", clock(t));
    }
    out
}

/// Prints an order's stored lines for `baton order logs`: stdout lines to
/// stdout and stderr lines to stderr, as `submit --wait` does, or every
/// line to stdout as a JSON `log` event.
pub struct LogPrinter {
    /// Only lines of this step (today: of this job).
    step: Option<String>,
    json: bool,
    printed: usize,
    /// The steps that had lines, for the error when `step` matched none.
    steps: std::collections::BTreeSet<String>,
}

impl LogPrinter {
    pub fn new(step: Option<String>, json: bool) -> LogPrinter {
        LogPrinter {
            step,
            json,
            printed: 0,
            steps: Default::default(),
        }
    }

    pub fn print(&mut self, log: &TaskLog) -> std::io::Result<()> {
        use std::io::Write as _;
        if self.step.as_ref().is_some_and(|step| *step != log.job) {
            self.steps.insert(log.job.clone());
            return Ok(());
        }
        self.printed += 1;
        if self.json {
            let mut v = serde_json::to_value(log).expect("events encode as JSON");
            v["event"] = serde_json::Value::from(EventKind::Log.token());
            return writeln!(std::io::stdout(), "{v}");
        }
        match log.stream {
            LogStream::Stdout => writeln!(std::io::stdout(), "{}", log.line),
            LogStream::Stderr => writeln!(std::io::stderr(), "{}", log.line),
        }
    }

    /// An error when `--step` named a step that printed nothing.
    pub fn check_step(&self, order_id: &str) -> anyhow::Result<()> {
        match &self.step {
            Some(step) if self.printed == 0 => {
                let others = if self.steps.is_empty() {
                    "none".to_string()
                } else {
                    self.steps.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                anyhow::bail!(
                    "no lines of step {step} in order {order_id} (steps with output: {others})"
                )
            }
            _ => Ok(()),
        }
    }
}

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
            BrokerRole::Standby => "-".to_string(),
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
fn agents_text(out: &mut String, agents: &[AgentStatus]) {
    let schedulers = agents.iter().filter(|a| a.role == AgentRole::Scheduler);
    let scheduler = match schedulers.map(|a| a.id.as_str()).collect::<Vec<_>>()[..] {
        [] if agents.is_empty() => "none; start agents with `baton agent`".to_string(),
        [] => "none yet (electing one)".to_string(),
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
        let mut notes = Vec::new();
        if !a.controlled {
            notes.push("outside broker control");
        }
        if a.excluded {
            notes.push("turned off by an operator");
        }
        if a.switch_condition_met {
            notes.push("switch condition met");
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
    }
}

/// A broker leadership change as a line for `baton watch`.
pub fn broker_line(payload: &[u8], json: bool) -> Result<String, DecodeError> {
    let e: BrokerChanged = decode(Encoding::MessagePack, payload)?;
    if json {
        let mut v = serde_json::to_value(&e).expect("events encode as JSON");
        v["event"] = serde_json::Value::from("broker");
        return Ok(v.to_string());
    }
    Ok(format!(
        "{} broker {} {} (epoch {}): {}",
        clock(e.at_ms),
        e.broker_id,
        e.role.as_str(),
        e.epoch,
        e.reason
    ))
}

/// An agent role change as a line for `baton watch`.
pub fn agent_line(payload: &[u8], json: bool) -> Result<String, DecodeError> {
    let e: AgentChanged = decode(Encoding::MessagePack, payload)?;
    if json {
        let mut v = serde_json::to_value(&e).expect("events encode as JSON");
        v["event"] = serde_json::Value::from("agent");
        return Ok(v.to_string());
    }
    Ok(format!(
        "{} agent {} {}: {}",
        clock(e.at_ms),
        e.agent_id,
        e.role.as_str(),
        e.reason
    ))
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
    agents_text(&mut out, &s.agents);
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
