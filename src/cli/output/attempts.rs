//! A job order's tasks for people: the `tasks:` table of `order show`
//! (where each ran, how it ended, why the order ran again), and the
//! retry an order waits for.

use std::fmt::Write as _;

use super::{clock_s, table};
use crate::protocol::*;

/// "accepted (retry at 2026-01-31T08:00:03Z)": the state of an order
/// waiting for its retry.
pub fn waiting_state(o: &OrderInfo) -> Option<String> {
    let at = o.retry_at_ms.filter(|_| !o.state.is_final())?;
    Some(format!("{} (retry at {})", o.state.as_str(), clock_s(at)))
}

/// The reason `order list` shows: with the retry's due time when waiting.
pub fn list_reason(o: &OrderSummary) -> Option<String> {
    let reason = o.reason.clone()?;
    Some(match o.retry_at_ms.filter(|_| !o.state.is_final()) {
        Some(at) => format!("{reason}, at {}", clock_s(at)),
        None => reason,
    })
}

/// How one task ended: "exit 1", "signal 9", "lost: ...", "running".
pub fn task_outcome(a: &TaskAttempt) -> String {
    let mut text = match a.outcome {
        None if a.started_at_ms.is_some() => "running".to_string(),
        None => "placed".to_string(),
        Some(AttemptOutcome::Exited) => format!("exit {}", a.exit_code.unwrap_or_default()),
        Some(AttemptOutcome::Signalled) => format!("signal {}", a.signal.unwrap_or_default()),
        Some(outcome) => outcome.as_str().to_string(),
    };
    if let Some(reason) = &a.reason {
        let _ = write!(text, ": {reason}");
    }
    text
}

/// The `tasks:` table of `order show`, when the order placed any.
pub fn render(out: &mut String, o: &OrderInfo) {
    if o.attempts.is_empty() {
        return;
    }
    match o.attempts_dropped {
        0 => {
            let _ = writeln!(out, "tasks:");
        }
        n => {
            let _ = writeln!(out, "tasks ({n} earlier not shown):");
        }
    }
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_string(), clock_s);
    let rows: Vec<Vec<String>> = (o.attempts.iter())
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.task_id.clone(),
                a.subagent_id.clone(),
                time(a.started_at_ms),
                time(a.finished_at_ms),
                task_outcome(a),
                a.rerun.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    table(
        out,
        "  ",
        &[
            "#",
            "TASK",
            "SUBAGENT",
            "STARTED",
            "FINISHED",
            "OUTCOME",
            "RAN AGAIN",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::fixtures::T0;

    fn task(n: u32, outcome: Option<AttemptOutcome>, rerun: Option<&str>) -> TaskAttempt {
        TaskAttempt {
            attempt: n,
            task_id: format!("o-{n}"),
            subagent_id: format!("sub-{n}"),
            started_at_ms: Some(T0 + u64::from(n) * 1_000),
            finished_at_ms: outcome.map(|_| T0 + u64::from(n) * 1_000 + 500),
            outcome,
            exit_code: (outcome == Some(AttemptOutcome::Exited)).then_some(1),
            signal: None,
            reason: None,
            rerun: rerun.map(str::to_string),
        }
    }

    #[test]
    fn an_order_waiting_for_its_retry_shows_when_and_its_tasks() {
        let lost = TaskAttempt {
            reason: Some("sub-2 (it died); it was running".into()),
            ..task(2, Some(AttemptOutcome::Lost), Some("sub-2 lost"))
        };
        let o = OrderInfo {
            retries: 1,
            retry_at_ms: Some(T0 + 63_000),
            reason: Some("retry 2 of 3 after exit 1".into()),
            attempts: vec![
                task(
                    1,
                    Some(AttemptOutcome::Exited),
                    Some("retry 1 of 3 after exit 1"),
                ),
                lost,
                task(
                    3,
                    Some(AttemptOutcome::Exited),
                    Some("retry 2 of 3 after exit 1"),
                ),
            ],
            attempts_dropped: 4,
            ..OrderInfo::new("o".into(), "j".into(), OrderState::Accepted, T0)
        };
        assert_eq!(
            waiting_state(&o).as_deref(),
            Some("accepted (retry at 2026-01-31T08:01:03Z)")
        );
        assert_eq!(
            list_reason(&o.summary()).as_deref(),
            Some("retry 2 of 3 after exit 1, at 2026-01-31T08:01:03Z")
        );
        let mut out = String::new();
        render(&mut out, &o);
        let expected = "\
tasks (4 earlier not shown):
  #  TASK  SUBAGENT  STARTED               FINISHED              OUTCOME                                RAN AGAIN
  1  o-1   sub-1     2026-01-31T08:00:01Z  2026-01-31T08:00:01Z  exit 1                                 retry 1 of 3 after exit 1
  2  o-2   sub-2     2026-01-31T08:00:02Z  2026-01-31T08:00:02Z  lost: sub-2 (it died); it was running  sub-2 lost
  3  o-3   sub-3     2026-01-31T08:00:03Z  2026-01-31T08:00:03Z  exit 1                                 retry 2 of 3 after exit 1
";
        assert_eq!(out, expected);
        // a final order shows no retry; one without tasks no table
        let done = OrderInfo {
            state: OrderState::Failed,
            ..o.clone()
        };
        assert_eq!(waiting_state(&done), None);
        let mut out = String::new();
        render(
            &mut out,
            &OrderInfo::new("o".into(), "j".into(), OrderState::Accepted, T0),
        );
        assert_eq!(out, "");
        assert_eq!(task_outcome(&task(4, None, None)), "running");
    }
}
