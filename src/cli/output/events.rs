//! Events as lines: for `baton watch` (text or JSON) and for `submit
//! --wait`.

use std::fmt::Write as _;
use std::time::Duration;

use super::clock;
use crate::bus::{decode, DecodeError, Encoding};
use crate::protocol::*;

fn short(id: &str) -> &str {
    // uuid v7: the last 12 hex digits are random and tell orders apart
    id.get(id.len().saturating_sub(12)..).unwrap_or(id)
}

/// "order … succeeded in 12ms (exit code 0) on sub-1", and ", attempt 2"
/// after an earlier task failed or was lost
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
    // the time above is its last task's, not the order's; a workflow
    // order's steps say their own attempts
    if e.attempt > 1 && e.workflow.is_none() {
        let _ = write!(line, ", attempt {}", e.attempt);
    }
    line
}

/// One event as a line for `baton watch`.
/// True when a task event's subject names another publisher than the
/// subagent its payload claims: a line or start another subagent wrote in
/// its name (the server holds each subagent to subjects in its own name).
pub fn written_by_another(
    subjects: &Subjects,
    subject: &str,
    kind: EventKind,
    payload: &[u8],
) -> bool {
    let claimed = match kind {
        EventKind::Log => decode::<TaskLog>(Encoding::MessagePack, payload).map(|l| l.subagent_id),
        EventKind::Started => {
            decode::<TaskStarted>(Encoding::MessagePack, payload).map(|t| t.subagent_id)
        }
        _ => return false,
    };
    claimed.is_ok_and(|claimed| !subjects.publisher_matches(subject, &claimed))
}

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
            let line = format!(
                "{} {:<16} {} accepted {}",
                clock(e.at_ms),
                e.job,
                short(&e.order_id),
                params.join(" ")
            );
            line.trim_end().to_string()
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
    let state = e.state.as_str();
    // reasons start with the state ("lost: silent"): said once
    let reason = (e.reason.strip_prefix(state))
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(&e.reason);
    Ok(format!(
        "{} subagent {} {state}: {reason}",
        clock(e.at_ms),
        e.subagent_id,
    ))
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

/// Whether the triggers fire, as a line for `baton watch`.
pub fn triggers_line(payload: &[u8], json: bool) -> Result<String, DecodeError> {
    let e: TriggersChanged = decode(Encoding::MessagePack, payload)?;
    if json {
        let mut v = serde_json::to_value(&e).expect("events encode as JSON");
        v["event"] = serde_json::Value::from("triggers");
        return Ok(v.to_string());
    }
    Ok(format!("{} {}", clock(e.at_ms), e.reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::output::fixtures::{line, T0};

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
            waiting: None,
            at_ms: T0,
        };
        assert_eq!(changed_text(&e), "step build dispatched");
        e.step = None;
        e.what = "suspended".into();
        assert_eq!(changed_text(&e), "order suspended");
        e.what = "waiting: no subagent is connected; start one with `baton subagent`".into();
        e.waiting = Some(e.what.clone());
        assert_eq!(
            changed_text(&e),
            "order waiting: no subagent is connected; start one with `baton subagent`"
        );
        let log = line("build", "s1-1", "compiling");
        assert_eq!(log_text(&log, true), "[build] compiling");
        assert_eq!(log_text(&log, false), "compiling");
    }

    #[test]
    fn a_finished_line_names_the_attempt_of_a_job_order_only() {
        let mut e = OrderFinished {
            order_id: "0190".into(),
            job: "nightly".into(),
            state: OrderState::Succeeded,
            exit_code: Some(0),
            signal: None,
            timed_out: false,
            reason: None,
            subagent_id: Some("s1".into()),
            attempt: 3,
            duration_ms: Some(12),
            at_ms: T0,
            workflow: None,
        };
        assert_eq!(
            finished_line(&e),
            "order 0190 succeeded in 12ms (exit code 0) on s1, attempt 3"
        );
        e.workflow = Some("nightly".into());
        assert_eq!(
            finished_line(&e),
            "order 0190 succeeded in 12ms (exit code 0) on s1"
        );
    }

    #[test]
    fn a_subagent_line_names_its_state_once() {
        let line = |state, reason: &str| {
            let e = SubagentChanged {
                subagent_id: "s1".into(),
                state,
                reason: reason.into(),
                at_ms: T0,
            };
            let payload = crate::bus::encode(Encoding::MessagePack, &e);
            let line = subagent_line(&payload, false).unwrap();
            line.split_once(' ').unwrap().1.to_string()
        };
        assert_eq!(
            line(SubagentState::Lost, "lost: dead, certified by its reaper"),
            "subagent s1 lost: dead, certified by its reaper"
        );
        assert_eq!(
            line(SubagentState::Available, "joined"),
            "subagent s1 available: joined"
        );
    }
}
