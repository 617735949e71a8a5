//! How client commands print things for people (and as JSON lines).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use crate::bus::{decode, DecodeError, Encoding};
use crate::protocol::*;

fn clock(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A time to the second, for tables: "2026-11-22T06:49:43Z".
fn clock_s(at_ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in at most two units: "850ms", "12.3s", "4m05s", "2h03m", "3d04h".
pub fn took(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Rows under a header, each column as wide as its widest cell; the last
/// column is not padded.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = widths
            .iter()
            .zip(row)
            .map(|(w, cell)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{indent}{}", cells.join("  ").trim_end());
    }
}

fn key_values(map: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(" ")
}

fn step_state(state: StepState) -> &'static str {
    match state {
        StepState::Pending => "pending",
        StepState::Running => "running",
        StepState::Succeeded => "succeeded",
        StepState::Failed => "failed",
        StepState::Skipped => "skipped",
        StepState::Cancelled => "cancelled",
    }
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
            // the step order's own events carry its id
            let step_order = match (&e.step_order_id, e.step_state) {
                (Some(id), Some(StepState::Running)) => format!(" as {}", short(id)),
                _ => String::new(),
            };
            format!(
                "{} {:<16} {} {}{step_order}",
                clock(e.at_ms),
                e.workflow,
                short(&e.order_id),
                changed_text(e)
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
                log_text(e, true)
            )
        }),
        EventKind::Finished => render(payload, json, kind, |e: &OrderFinished| {
            format!("{} {:<16} {}", clock(e.at_ms), e.job, finished_line(e))
        }),
    }
}

/// What a `changed` event says: "step build succeeded", or for the order
/// itself "order suspended".
pub fn changed_text(e: &OrderChanged) -> String {
    match e.step {
        Some(_) => e.what.clone(),
        None => format!("order {}", e.what),
    }
}

/// A log line's text, with "[step] " before it for a workflow step's line
/// when `steps` is set.
pub fn log_text(log: &TaskLog, steps: bool) -> std::borrow::Cow<'_, str> {
    match &log.step {
        Some(step) if steps => format!("[{step}] {}", log.line).into(),
        _ => log.line.as_str().into(),
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

/// The text of `baton order show` (without the log tails of a workflow
/// order's steps: see [`StepTails`]).
pub fn order_text(o: &OrderInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "order     {}", o.order_id);
    match &o.workflow {
        Some(workflow) => {
            let _ = writeln!(out, "workflow  {workflow}");
        }
        None => {
            let _ = writeln!(out, "job       {}", o.job);
        }
    }
    if let Some(p) = &o.parent {
        let _ = writeln!(
            out,
            "step      {} (attempt {}) of workflow order {} (workflow {})",
            p.step, p.attempt, p.order_id, p.workflow
        );
    }
    let mut state = o.state.as_str().to_string();
    if o.cancel_requested && !o.state.is_final() {
        state.push_str(" (cancel requested)");
    }
    let _ = writeln!(out, "state     {state}");
    if !o.params.is_empty() {
        let _ = writeln!(out, "params    {}", key_values(&o.params));
    }
    if o.workflow.is_none() {
        let _ = writeln!(out, "attempt   {}", o.attempt);
    }
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
        let _ = writeln!(out, "results   {}", key_values(&o.outputs));
    }
    let _ = writeln!(out, "accepted  {}", clock(o.accepted_at_ms));
    if let Some(t) = o.started_at_ms {
        let _ = writeln!(out, "started   {}", clock(t));
    }
    if let Some(t) = o.finished_at_ms {
        let _ = writeln!(out, "finished  {}", clock(t));
    }
    if !o.steps.is_empty() {
        let _ = writeln!(out, "steps:");
        let rows: Vec<Vec<String>> = o.steps.iter().map(step_row).collect();
        table(
            &mut out,
            "  ",
            &["STEP", "JOB", "STATE", "ATTEMPTS", "EXIT", "OUTPUTS"],
            &rows,
        );
    }
    if !o.history.is_empty() {
        let _ = writeln!(out, "history:");
        let rows: Vec<Vec<String>> = o.history.iter().map(history_row).collect();
        table(
            &mut out,
            "  ",
            &[
                "STEP",
                "ATTEMPT",
                "SUBAGENT",
                "STARTED",
                "FINISHED",
                "STEP ORDER",
                "OUTCOME",
            ],
            &rows,
        );
    }
    out
}

/// One step of a workflow order, for the steps table of `order show`.
fn step_row(s: &StepRun) -> Vec<String> {
    let mut state = step_state(s.state).to_string();
    if s.forced {
        state.push_str(" (forced)");
    }
    if let Some(cause) = s.kill.filter(|_| s.state == StepState::Running) {
        let why = match cause {
            KillCause::Suspend => "suspend",
            KillCause::Cancel => "cancel",
        };
        let _ = write!(state, " (being killed: {why})");
    }
    if let Some(at) = s.retry_at_ms {
        let _ = write!(state, " (retry at {})", clock_s(at));
    }
    let dash = || "-".to_string();
    vec![
        s.name.clone(),
        s.job.clone(),
        state,
        s.attempt.to_string(),
        s.exit_code.map_or_else(dash, |c| c.to_string()),
        Some(key_values(&s.outputs))
            .filter(|o| !o.is_empty())
            .unwrap_or_else(dash),
    ]
}

/// How one step attempt went: "failed (exit code 3)", "cancelled: killed".
pub fn attempt_outcome(h: &StepAttempt) -> String {
    let mut outcome = match h.state {
        OrderState::Accepted => "waiting for a subagent".to_string(),
        state => state.as_str().to_string(),
    };
    if let Some(code) = h.exit_code.filter(|_| h.state != OrderState::Succeeded) {
        let _ = write!(outcome, " (exit code {code})");
    }
    if let Some(reason) = h.reason.as_ref().filter(|r| **r != outcome) {
        let _ = write!(outcome, ": {reason}");
    }
    outcome
}

/// One step attempt, for the history table of `order show`: step, attempt,
/// subagent, start, end, step order id, outcome.
pub fn history_row(h: &StepAttempt) -> Vec<String> {
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_string(), clock_s);
    vec![
        h.step.clone(),
        h.attempt.to_string(),
        h.subagent_id.clone().unwrap_or_else(|| "-".to_string()),
        time(h.started_at_ms),
        time(h.finished_at_ms),
        h.order_id.clone(),
        attempt_outcome(h),
    ]
}

/// Whether task `task_id` ran order `order_id` (task ids are the order id,
/// a dash and the order's attempt).
pub fn task_of(task_id: &str, order_id: &str) -> bool {
    task_id
        .strip_prefix(order_id)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

/// The last lines of each step attempt of a workflow order, for `order
/// show`: a line belongs to the attempt of its step whose step order ran
/// its task; lines no attempt claims are kept by step and task.
pub struct StepTails {
    order_id: String,
    keep: usize,
    /// Per history entry: (step, attempt, step order id).
    attempts: Vec<(String, u32, String)>,
    /// Keyed by attempt index, or by (step, task) when no attempt matched.
    tails: BTreeMap<TailKey, (usize, VecDeque<TaskLog>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TailKey {
    Attempt(usize),
    Task(String, String),
}

impl StepTails {
    pub fn new(order_id: &str, history: &[StepAttempt], keep: usize) -> StepTails {
        StepTails {
            order_id: order_id.to_string(),
            keep,
            attempts: history
                .iter()
                .map(|h| (h.step.clone(), h.attempt, h.order_id.clone()))
                .collect(),
            tails: BTreeMap::new(),
        }
    }

    /// Takes one of the order's lines; plain (step-less) lines are ignored.
    pub fn push(&mut self, log: TaskLog) {
        let Some(step) = &log.step else { return };
        let found = self
            .attempts
            .iter()
            .position(|(s, _, order)| s == step && task_of(&log.task_id, order));
        let key = match found {
            Some(i) => TailKey::Attempt(i),
            None => TailKey::Task(step.clone(), log.task_id.clone()),
        };
        let (count, tail) = self.tails.entry(key).or_default();
        *count += 1;
        tail.push_back(log);
        if tail.len() > self.keep {
            tail.pop_front();
        }
    }

    /// "logs (last N lines of each step attempt):" and each attempt's tail.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "logs (last {} lines of each step attempt):", self.keep);
        if self.tails.is_empty() {
            let _ = writeln!(out, "  no step printed anything yet");
        }
        for (key, (count, tail)) in &self.tails {
            let (step, label) = match key {
                TailKey::Attempt(i) => {
                    let (step, attempt, _) = &self.attempts[*i];
                    (step, format!("{step} #{attempt}"))
                }
                TailKey::Task(step, task) => (step, format!("{step} (task {task})")),
            };
            let earlier = count - tail.len();
            let more = if earlier > 0 {
                format!(
                    " ({earlier} earlier lines: `baton order logs {} --step {step}`)",
                    self.order_id
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {label}:{more}");
            for log in tail {
                let stream = match log.stream {
                    LogStream::Stdout => "out",
                    LogStream::Stderr => "err",
                };
                let _ = writeln!(out, "    {stream}| {}", log.line);
            }
        }
    }
}

/// What an order command changed, for `order suspend|resume|cancel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Suspend,
    Resume,
    Cancel,
}

/// The order's new state in one line, with what comes next.
pub fn control_line(command: Control, o: &OrderInfo, kill: bool) -> String {
    let id = &o.order_id;
    let mut line = format!("order {id} {}", o.state.as_str());
    let running: Vec<&str> = o
        .steps
        .iter()
        .filter(|s| s.state == StepState::Running)
        .map(|s| s.name.as_str())
        .collect();
    let waits = |then: &str| {
        let steps = match running.len() {
            0 => "its running steps end".to_string(),
            1 => format!("step {} ends", running[0]),
            _ => format!("steps {} end", running.join(", ")),
        };
        let now = match (kill, running.len()) {
            (true, _) => "being killed now",
            (false, 1) => "--kill ends it now",
            (false, _) => "--kill ends them now",
        };
        format!(": {then} once {steps} ({now})")
    };
    let next = match o.state {
        OrderState::Suspending => waits("holds"),
        OrderState::Cancelling => waits("ends cancelled"),
        OrderState::Suspended => format!(": resume it with `baton order resume {id}`"),
        OrderState::Failed if o.workflow.is_some() => format!(
            ": resumable with `baton order resume {id}` (--from STEP, --force-succeeded) until cancelled"
        ),
        OrderState::Accepted | OrderState::Running
            if o.workflow.is_none() && o.cancel_requested =>
        {
            if kill {
                ", cancel requested: its task is being killed".to_string()
            } else {
                ", cancel requested: it ends cancelled when its task ends; --kill ends it now"
                    .to_string()
            }
        }
        OrderState::Running if command == Control::Resume && !running.is_empty() => {
            let steps = if running.len() == 1 { "step" } else { "steps" };
            format!(" ({steps} {})", running.join(", "))
        }
        _ => String::new(),
    };
    line.push_str(&next);
    line
}

/// The table of `baton order list`, newest first.
pub fn order_list_text(list: &OrderList) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = list
        .orders
        .iter()
        .map(|o| {
            let took = o.finished_at_ms.map_or("-".to_string(), |f| {
                took(f.saturating_sub(o.accepted_at_ms))
            });
            let mut place = match (&o.workflow, &o.parent) {
                (Some(_), _) if o.current_steps.is_empty() => "-".to_string(),
                (Some(_), _) if o.state == OrderState::Failed => {
                    format!("failed in {}", o.current_steps.join(", "))
                }
                (Some(_), _) => format!("running {}", o.current_steps.join(", ")),
                (None, _) => o.subagent_id.clone().unwrap_or_else(|| "-".to_string()),
            };
            if let Some(p) = &o.parent {
                let _ = write!(place, ", step {} #{} of {}", p.step, p.attempt, p.order_id);
            }
            vec![
                o.order_id.clone(),
                o.job.clone(),
                o.state.as_str().to_string(),
                clock_s(o.accepted_at_ms),
                took,
                place,
            ]
        })
        .collect();
    table(
        &mut out,
        "",
        &[
            "ORDER",
            "JOB/WORKFLOW",
            "STATE",
            "ACCEPTED",
            "TOOK",
            "SUBAGENT/STEPS",
        ],
        &rows,
    );
    out
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
    if !s.workflows.is_empty() {
        let _ = writeln!(
            out,
            "workflows ({}): {}",
            s.workflows.len(),
            s.workflows.join(", ")
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-31T08:00:00Z
    const T0: u64 = 1_769_846_400_000;

    fn order(state: OrderState) -> OrderInfo {
        OrderInfo {
            order_id: "0190-flow".into(),
            job: "nightly".into(),
            params: BTreeMap::new(),
            state,
            attempt: 0,
            subagent_id: None,
            task_id: None,
            subagent_instance_id: None,
            exit_code: None,
            signal: None,
            timed_out: false,
            reason: None,
            request_id: None,
            slot_ms: None,
            cancel_requested: false,
            accepted_at_ms: T0,
            started_at_ms: None,
            finished_at_ms: None,
            outputs: BTreeMap::new(),
            workflow: Some("nightly".into()),
            steps: Vec::new(),
            history: Vec::new(),
            parent: None,
        }
    }

    fn step(name: &str, state: StepState) -> StepRun {
        StepRun {
            name: name.into(),
            job: "compile".into(),
            state,
            attempt: 1,
            ..StepRun::default()
        }
    }

    fn attempt(step: &str, attempt: u32, order_id: &str) -> StepAttempt {
        StepAttempt {
            step: step.into(),
            job: "compile".into(),
            attempt,
            order_id: order_id.into(),
            state: OrderState::Succeeded,
            subagent_id: Some("sub-1".into()),
            exit_code: Some(0),
            reason: None,
            started_at_ms: Some(T0),
            finished_at_ms: Some(T0 + 2_000),
        }
    }

    fn line(step: &str, task: &str, text: &str) -> TaskLog {
        TaskLog {
            order_id: "0190-flow".into(),
            job: "compile".into(),
            task_id: task.into(),
            subagent_id: "sub-1".into(),
            stream: LogStream::Stdout,
            step: Some(step.into()),
            seq: 1,
            line: text.into(),
            at_ms: T0,
        }
    }

    #[test]
    fn durations_take_at_most_two_units() {
        assert_eq!(took(850), "850ms");
        assert_eq!(took(12_345), "12.3s");
        assert_eq!(took(245_000), "4m05s");
        assert_eq!(took(2 * 3_600_000 + 3 * 60_000 + 59_000), "2h03m");
        assert_eq!(took(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn a_history_row_has_every_column_and_the_outcome_last() {
        let h = attempt("build", 2, "0190-step");
        assert_eq!(
            history_row(&h),
            [
                "build",
                "2",
                "sub-1",
                "2026-01-31T08:00:00Z",
                "2026-01-31T08:00:02Z",
                "0190-step",
                "succeeded"
            ]
        );
        let failed = StepAttempt {
            state: OrderState::Failed,
            exit_code: Some(3),
            reason: Some("disk full".into()),
            finished_at_ms: None,
            ..h.clone()
        };
        let row = history_row(&failed);
        assert_eq!(row[4], "-");
        assert_eq!(row[6], "failed (exit code 3): disk full");
        let cancelled = StepAttempt {
            state: OrderState::Cancelled,
            exit_code: None,
            reason: Some("cancelled".into()),
            ..h.clone()
        };
        assert_eq!(attempt_outcome(&cancelled), "cancelled", "said once");
        let waiting = StepAttempt {
            state: OrderState::Accepted,
            subagent_id: None,
            exit_code: None,
            started_at_ms: None,
            finished_at_ms: None,
            ..h
        };
        assert_eq!(
            history_row(&waiting)[2..],
            ["-", "-", "-", "0190-step", "waiting for a subagent"]
        );
    }

    #[test]
    fn tasks_belong_to_the_order_they_are_named_after() {
        assert!(task_of("o1-1", "o1"));
        assert!(task_of("o1-12", "o1"));
        assert!(task_of("o1", "o1"));
        assert!(!task_of("o12-1", "o1"));
        assert!(!task_of("o2-1", "o1"));
    }

    #[test]
    fn a_workflow_order_shows_its_steps_and_history() {
        let mut o = order(OrderState::Failed);
        o.reason = Some("step test failed (exit code 1)".into());
        o.steps = vec![
            StepRun {
                exit_code: Some(0),
                outputs: BTreeMap::from([("version".to_string(), "1.2".to_string())]),
                ..step("build", StepState::Succeeded)
            },
            StepRun {
                exit_code: Some(1),
                attempt: 2,
                ..step("test", StepState::Failed)
            },
            step("publish", StepState::Pending),
        ];
        o.history = vec![attempt("build", 1, "s1")];
        let text = order_text(&o);
        assert!(text.contains("workflow  nightly\n"), "{text}");
        assert!(
            !text.contains("job ") && !text.contains("attempt "),
            "{text}"
        );
        assert!(text.contains("reason    step test failed"), "{text}");
        let steps: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "steps:")
            .skip(1)
            .take(4)
            .collect();
        assert_eq!(
            steps,
            [
                "  STEP     JOB      STATE      ATTEMPTS  EXIT  OUTPUTS",
                "  build    compile  succeeded  1         0     version=1.2",
                "  test     compile  failed     2         1     -",
                "  publish  compile  pending    1         -     -",
            ]
        );
        assert!(
            text.contains("history:\n  STEP   ATTEMPT  SUBAGENT"),
            "{text}"
        );
        assert!(
            text.contains("  build  1        sub-1     2026-01-31T08:00:00Z"),
            "{text}"
        );
    }

    #[test]
    fn a_step_order_names_its_workflow_order() {
        let mut o = order(OrderState::Running);
        o.workflow = None;
        o.job = "compile".into();
        o.attempt = 1;
        o.parent = Some(ParentStep {
            order_id: "0190-flow".into(),
            workflow: "nightly".into(),
            step: "build".into(),
            attempt: 2,
        });
        let text = order_text(&o);
        assert!(
            text.contains(
                "job       compile\nstep      build (attempt 2) of workflow order 0190-flow (workflow nightly)\n"
            ),
            "{text}"
        );
        assert!(text.contains("attempt   1\n"), "{text}");
    }

    #[test]
    fn tails_keep_the_last_lines_of_each_attempt() {
        let history = [attempt("build", 1, "s1"), attempt("build", 2, "s2")];
        let mut tails = StepTails::new("0190-flow", &history, 2);
        for i in 1..=4 {
            tails.push(line("build", "s1-1", &format!("one-{i}")));
        }
        tails.push(line("build", "s2-1", "two"));
        tails.push(line("lost", "x-1", "stray"));
        let mut plain = line("build", "s1-1", "plain");
        plain.step = None;
        tails.push(plain);
        let mut out = String::new();
        tails.render(&mut out);
        assert_eq!(
            out,
            "logs (last 2 lines of each step attempt):\n\
             \x20 build #1: (2 earlier lines: `baton order logs 0190-flow --step build`)\n\
             \x20   out| one-3\n\
             \x20   out| one-4\n\
             \x20 build #2:\n\
             \x20   out| two\n\
             \x20 lost (task x-1):\n\
             \x20   out| stray\n"
        );
        let mut empty = String::new();
        StepTails::new("0190-flow", &history, 5).render(&mut empty);
        assert!(
            empty.ends_with("  no step printed anything yet\n"),
            "{empty}"
        );
    }

    #[test]
    fn control_lines_say_the_new_state_and_what_comes_next() {
        let mut o = order(OrderState::Suspending);
        o.steps = vec![
            step("build", StepState::Running),
            step("test", StepState::Pending),
        ];
        assert_eq!(
            control_line(Control::Suspend, &o, false),
            "order 0190-flow suspending: holds once step build ends (--kill ends it now)"
        );
        o.state = OrderState::Cancelling;
        o.steps.push(step("lint", StepState::Running));
        assert_eq!(
            control_line(Control::Cancel, &o, true),
            "order 0190-flow cancelling: ends cancelled once steps build, lint end (being killed now)"
        );
        o.state = OrderState::Suspended;
        assert_eq!(
            control_line(Control::Suspend, &o, false),
            "order 0190-flow suspended: resume it with `baton order resume 0190-flow`"
        );
        o.state = OrderState::Running;
        assert_eq!(
            control_line(Control::Resume, &o, false),
            "order 0190-flow running (steps build, lint)"
        );
        o.state = OrderState::Cancelled;
        assert_eq!(
            control_line(Control::Cancel, &o, false),
            "order 0190-flow cancelled"
        );
    }

    #[test]
    fn a_plain_order_being_cancelled_says_when_it_ends() {
        let mut o = order(OrderState::Running);
        o.workflow = None;
        o.cancel_requested = true;
        assert_eq!(
            control_line(Control::Cancel, &o, false),
            "order 0190-flow running, cancel requested: it ends cancelled when its task ends; --kill ends it now"
        );
        assert_eq!(
            control_line(Control::Cancel, &o, true),
            "order 0190-flow running, cancel requested: its task is being killed"
        );
    }

    #[test]
    fn the_list_is_a_table_of_full_ids() {
        let summary = |id: &str, job: &str, state| OrderSummary {
            order_id: id.into(),
            job: job.into(),
            workflow: None,
            state,
            accepted_at_ms: T0,
            finished_at_ms: None,
            subagent_id: None,
            current_steps: Vec::new(),
            parent: None,
        };
        let list = OrderList {
            orders: vec![
                OrderSummary {
                    workflow: Some("nightly".into()),
                    current_steps: vec!["build".into(), "lint".into()],
                    ..summary("0190-flow", "nightly", OrderState::Running)
                },
                OrderSummary {
                    subagent_id: Some("sub-1".into()),
                    parent: Some(ParentStep {
                        order_id: "0190-flow".into(),
                        workflow: "nightly".into(),
                        step: "build".into(),
                        attempt: 1,
                    }),
                    ..summary("0190-step", "compile", OrderState::Running)
                },
                OrderSummary {
                    finished_at_ms: Some(T0 + 1_500),
                    subagent_id: Some("sub-2".into()),
                    ..summary("0190-plain", "hello", OrderState::Succeeded)
                },
            ],
            truncated: false,
        };
        assert_eq!(
            order_list_text(&list),
            "ORDER       JOB/WORKFLOW  STATE      ACCEPTED              TOOK  SUBAGENT/STEPS\n\
             0190-flow   nightly       running    2026-01-31T08:00:00Z  -     running build, lint\n\
             0190-step   compile       running    2026-01-31T08:00:00Z  -     sub-1, step build #1 of 0190-flow\n\
             0190-plain  hello         succeeded  2026-01-31T08:00:00Z  1.5s  sub-2\n"
        );
    }

    #[test]
    fn changes_and_step_lines_read_as_text() {
        let mut e = OrderChanged {
            order_id: "0190-flow".into(),
            workflow: "nightly".into(),
            state: OrderState::Running,
            step: Some("build".into()),
            attempt: Some(1),
            step_state: Some(StepState::Running),
            step_order_id: Some("0190-step".into()),
            what: "step build dispatched".into(),
            at_ms: T0,
        };
        assert_eq!(changed_text(&e), "step build dispatched");
        e.step = None;
        e.what = "suspended".into();
        assert_eq!(changed_text(&e), "order suspended");
        let log = line("build", "s1-1", "compiling");
        assert_eq!(log_text(&log, true), "[build] compiling");
        assert_eq!(log_text(&log, false), "compiling");
    }
}
