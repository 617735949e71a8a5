//! Orders for people: `order show` (with the steps, history and log tails
//! of a workflow order, the tasks of a job order: `attempts.rs`), the table of `order list`, and the one line that
//! answers `order suspend|resume|cancel`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use super::origin::{origin, slot_text};
use super::{attempts, clock, clock_s, key_values, table, took};
use crate::protocol::*;

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
    let mut state = attempts::waiting_state(o).unwrap_or_else(|| o.state.as_str().to_string());
    if o.cancel_requested && !o.state.is_final() {
        state.push_str(" (cancel requested)");
    }
    let _ = writeln!(out, "state     {state}");
    if let Some(origin) = origin(o) {
        let _ = writeln!(out, "origin    {origin}");
    }
    if !o.params.is_empty() {
        let _ = writeln!(out, "params    {}", key_values(&o.params));
    }
    if o.workflow.is_none() && o.spread.is_none() {
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
    if let Some(reason) = o.failure() {
        let _ = writeln!(out, "reason    {reason}");
    }
    if !o.outputs.is_empty() {
        let _ = writeln!(out, "results   {}", key_values(&o.outputs));
    }
    let _ = writeln!(out, "accepted  {}", clock(o.accepted_at_ms));
    if let Some(t) = o.started_at_ms {
        // a job order's time is its last task's: say so when there were more
        match o.attempt > 1 && o.workflow.is_none() {
            true => {
                let _ = writeln!(out, "started   {} (attempt {})", clock(t), o.attempt);
            }
            false => {
                let _ = writeln!(out, "started   {}", clock(t));
            }
        }
    }
    if let Some(t) = o.finished_at_ms {
        let _ = writeln!(out, "finished  {}", clock(t));
    }
    if let Some(t) = o.resumable_until_ms {
        let _ = writeln!(
            out,
            "expires   {} (resume or cancel it before; then it expires, broker.failed_hold)",
            clock(t)
        );
    }
    if let Some(t) = o.expired_at_ms {
        let _ = writeln!(out, "expired   {} (it can no longer be resumed)", clock(t));
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
    super::spread::render(&mut out, o);
    attempts::render(&mut out, o);
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

/// How one step attempt went: "failed (exit code 3)", "cancelled: killed",
/// "succeeded (2 tasks)" when its task was lost and ran again.
pub fn attempt_outcome(h: &StepAttempt) -> String {
    let mut outcome = match h.state {
        OrderState::Accepted => "waiting for a subagent".to_string(),
        state => state.as_str().to_string(),
    };
    let mut notes = Vec::new();
    if let Some(code) = h.exit_code.filter(|_| h.state != OrderState::Succeeded) {
        notes.push(format!("exit code {code}"));
    }
    if h.tasks > 1 {
        notes.push(format!("{} tasks", h.tasks));
    }
    if !notes.is_empty() {
        let _ = write!(outcome, " ({})", notes.join(", "));
    }
    if let Some(reason) = h.reason.as_ref().filter(|r| **r != outcome) {
        let _ = write!(outcome, ": {reason}");
    }
    outcome
}

/// Where a step attempt ran: its subagent, or every subagent its tasks
/// were placed on when one was lost ("sub-3 → sub-1").
fn placed(h: &StepAttempt) -> String {
    match &h.placed_on[..] {
        [] => h.subagent_id.clone().unwrap_or_else(|| "-".to_string()),
        [one] => one.clone(),
        chain => chain.join(" → "),
    }
}

/// One step attempt, for the history table of `order show`: step, attempt,
/// subagent(s), start, end, step order id, outcome.
pub fn history_row(h: &StepAttempt) -> Vec<String> {
    let time = |t: Option<u64>| t.map_or_else(|| "-".to_string(), clock_s);
    vec![
        h.step.clone(),
        h.attempt.to_string(),
        placed(h),
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
/// its task (an attempt whose task was lost and ran again has a tail per
/// task); lines no attempt claims are kept by step and task.
pub struct StepTails {
    order_id: String,
    keep: usize,
    /// Per history entry: (step, attempt, step order id, tasks started).
    attempts: Vec<(String, u32, String, u32)>,
    /// Keyed by attempt index and task, or by (step, task) when no attempt matched.
    tails: BTreeMap<TailKey, Tail>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TailKey {
    /// History index, then the task's number within its step order.
    Attempt(usize, u64),
    Task(String, String),
}

/// The last lines of one task, and how many it printed in all.
#[derive(Debug, Default)]
struct Tail {
    task_id: String,
    subagent_id: String,
    count: usize,
    lines: VecDeque<TaskLog>,
}

impl StepTails {
    pub fn new(order_id: &str, history: &[StepAttempt], keep: usize) -> StepTails {
        StepTails {
            order_id: order_id.to_string(),
            keep,
            attempts: history
                .iter()
                .map(|h| (h.step.clone(), h.attempt, h.order_id.clone(), h.tasks))
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
            .position(|(s, _, order, _)| s == step && task_of(&log.task_id, order));
        let key = match found {
            Some(i) => {
                let order = &self.attempts[i].2;
                let number = log.task_id[order.len()..]
                    .trim_start_matches('-')
                    .parse()
                    .unwrap_or(0);
                TailKey::Attempt(i, number)
            }
            None => TailKey::Task(step.clone(), log.task_id.clone()),
        };
        let tail = self.tails.entry(key).or_default();
        if tail.task_id.is_empty() {
            tail.task_id.clone_from(&log.task_id);
            tail.subagent_id.clone_from(&log.subagent_id);
        }
        tail.count += 1;
        tail.lines.push_back(log);
        if tail.lines.len() > self.keep {
            tail.lines.pop_front();
        }
    }

    /// "logs (last N lines of each step attempt):" and each attempt's tail
    /// (each task's, when a lost task ran again).
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "logs (last {} lines of each step attempt):", self.keep);
        if self.tails.is_empty() {
            let _ = writeln!(out, "  no step printed anything yet");
        }
        let tails_of = |i: usize| {
            self.tails
                .keys()
                .filter(|k| matches!(k, TailKey::Attempt(j, _) if *j == i))
                .count()
        };
        for (key, tail) in &self.tails {
            let (step, label) = match key {
                TailKey::Attempt(i, _) => {
                    let (step, attempt, _, tasks) = &self.attempts[*i];
                    let label = if *tasks > 1 || tails_of(*i) > 1 {
                        format!(
                            "{step} #{attempt}, task {} on {}",
                            tail.task_id, tail.subagent_id
                        )
                    } else {
                        format!("{step} #{attempt}")
                    };
                    (step, label)
                }
                TailKey::Task(step, task) => (step, format!("{step} (task {task})")),
            };
            let earlier = tail.count - tail.lines.len();
            let more = if earlier > 0 {
                format!(
                    " ({earlier} earlier lines: `baton order logs {} --step {step}`)",
                    self.order_id
                )
            } else {
                String::new()
            };
            let _ = writeln!(out, "  {label}:{more}");
            for log in &tail.lines {
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

/// The table of `baton order list`, newest first, with a SLOT column (each
/// slot in its trigger's time zone) when a Scheduler fired any of them.
pub fn order_list_text(list: &OrderList) -> String {
    let mut out = String::new();
    let slots = list.orders.iter().any(|o| o.slot_ms.is_some());
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
            let mut row = vec![
                o.order_id.clone(),
                o.job.clone(),
                o.state.as_str().to_string(),
                clock_s(o.accepted_at_ms),
                took,
                place,
                attempts::list_reason(o).map_or("-".to_string(), |r| clip(&r, REASON_WIDTH)),
            ];
            if slots {
                let slot = o.slot_ms.map(|s| slot_text(s, o.fired_by.as_ref()));
                row.insert(4, slot.unwrap_or_else(|| "-".to_string()));
            }
            row
        })
        .collect();
    let mut header = vec![
        "ORDER",
        "JOB/WORKFLOW",
        "STATE",
        "ACCEPTED",
        "TOOK",
        "SUBAGENT/STEPS",
        "REASON",
    ];
    if slots {
        header.insert(4, "SLOT");
    }
    table(&mut out, "", &header, &rows);
    out
}

/// The widest reason `order list` shows; `order show` has all of it.
const REASON_WIDTH: usize = 60;

/// `text` cut to at most `width` characters, with "..." when cut.
fn clip(text: &str, width: usize) -> String {
    match text.char_indices().nth(width.saturating_sub(3)) {
        Some((at, _)) if text.chars().count() > width => format!("{}...", &text[..at]),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cli::output::fixtures::{line, T0};

    fn order(state: OrderState) -> OrderInfo {
        OrderInfo {
            workflow: Some("nightly".into()),
            ..OrderInfo::new("0190-flow".into(), "nightly".into(), state, T0)
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
            placed_on: Vec::new(),
            tasks: 0,
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
            placed_on: Vec::new(),
            tasks: 0,
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
            placed_on: Vec::new(),
            tasks: 0,
            state: OrderState::Cancelled,
            exit_code: None,
            reason: Some("cancelled".into()),
            ..h.clone()
        };
        assert_eq!(attempt_outcome(&cancelled), "cancelled", "said once");
        let waiting = StepAttempt {
            placed_on: Vec::new(),
            tasks: 0,
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
    fn a_history_row_shows_every_subagent_of_a_re_run_attempt() {
        let h = attempt("build", 1, "0190-step");
        assert_eq!(history_row(&h)[2], "sub-1", "no chain: its subagent");
        let once = StepAttempt {
            placed_on: vec!["sub-1".into()],
            tasks: 1,
            ..h.clone()
        };
        assert_eq!(history_row(&once)[2], "sub-1");
        assert_eq!(history_row(&once)[6], "succeeded");
        let moved = StepAttempt {
            placed_on: vec!["sub-3".into(), "sub-1".into()],
            tasks: 2,
            ..h.clone()
        };
        let row = history_row(&moved);
        assert_eq!(row[2], "sub-3 → sub-1");
        assert_eq!(row[6], "succeeded (2 tasks)");
        let failed = StepAttempt {
            state: OrderState::Failed,
            exit_code: Some(3),
            reason: Some("disk full".into()),
            ..moved
        };
        assert_eq!(
            attempt_outcome(&failed),
            "failed (exit code 3, 2 tasks): disk full"
        );
        let mut o = order(OrderState::Running);
        o.history = vec![StepAttempt {
            placed_on: vec!["sub-3".into(), "sub-1".into()],
            tasks: 2,
            ..h
        }];
        let text = order_text(&o);
        assert!(
            text.contains(
                "  STEP   ATTEMPT  SUBAGENT       STARTED               FINISHED              STEP ORDER  OUTCOME\n\
                 \x20 build  1        sub-3 → sub-1  2026-01-31T08:00:00Z  2026-01-31T08:00:02Z  0190-step   succeeded (2 tasks)\n"
            ),
            "{text}"
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
    fn a_failed_workflow_order_says_until_when_it_can_be_resumed_then_that_it_expired() {
        let mut o = order(OrderState::Failed);
        o.finished_at_ms = Some(T0 + 2_000);
        o.resumable_until_ms = Some(T0 + 2_000 + 86_400_000);
        let text = order_text(&o);
        assert!(
            text.contains("expires   2026-02-01T08:00:02.000Z (resume or cancel it before"),
            "{text}"
        );
        assert!(!text.contains("expired "), "{text}");
        o.resumable_until_ms = None;
        o.expired_at_ms = Some(T0 + 3_000);
        let text = order_text(&o);
        assert!(
            text.contains("expired   2026-01-31T08:00:03.000Z (it can no longer be resumed)"),
            "{text}"
        );
        assert!(!text.contains("expires "), "{text}");
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
    fn tails_of_a_re_run_attempt_show_each_task() {
        let history = [StepAttempt {
            placed_on: vec!["sub-3".into(), "sub-1".into()],
            tasks: 2,
            ..attempt("build", 1, "s1")
        }];
        let mut tails = StepTails::new("0190-flow", &history, 2);
        let on = |task: &str, sub: &str, text: &str| TaskLog {
            subagent_id: sub.into(),
            ..line("build", task, text)
        };
        tails.push(on("s1-1", "sub-3", "first"));
        tails.push(on("s1-2", "sub-1", "again-1"));
        tails.push(on("s1-2", "sub-1", "again-2"));
        tails.push(on("s1-2", "sub-1", "again-3"));
        let mut out = String::new();
        tails.render(&mut out);
        assert_eq!(
            out,
            "logs (last 2 lines of each step attempt):\n\
             \x20 build #1, task s1-1 on sub-3:\n\
             \x20   out| first\n\
             \x20 build #1, task s1-2 on sub-1: (1 earlier lines: `baton order logs 0190-flow --step build`)\n\
             \x20   out| again-2\n\
             \x20   out| again-3\n"
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
    fn a_job_order_run_again_says_its_start_is_the_last_attempt_s() {
        let mut o = order(OrderState::Running);
        o.workflow = None;
        o.started_at_ms = Some(T0);
        o.attempt = 2;
        let text = order_text(&o);
        let started = text.lines().find(|l| l.starts_with("started")).unwrap();
        assert!(started.ends_with("(attempt 2)"), "{started}");
        o.attempt = 1;
        assert!(!order_text(&o).contains("(attempt 1)"));
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
            member_of: None,
            request_id: None,
            slot_ms: None,
            reason: None,
            fired_by: None,
            retry_at_ms: None,
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
                OrderSummary {
                    finished_at_ms: Some(T0 + 2_000),
                    subagent_id: Some("sub-2".into()),
                    reason: Some(format!("exit code 3: {}", "x".repeat(80))),
                    ..summary("0190-failed", "hello", OrderState::Failed)
                },
            ],
            truncated: false,
        };
        assert_eq!(
            order_list_text(&list),
            "ORDER        JOB/WORKFLOW  STATE      ACCEPTED              TOOK  SUBAGENT/STEPS                     REASON\n\
             0190-flow    nightly       running    2026-01-31T08:00:00Z  -     running build, lint                -\n\
             0190-step    compile       running    2026-01-31T08:00:00Z  -     sub-1, step build #1 of 0190-flow  -\n\
             0190-plain   hello         succeeded  2026-01-31T08:00:00Z  1.5s  sub-2                              -\n\
             0190-failed  hello         failed     2026-01-31T08:00:00Z  2.0s  sub-2                              exit code 3: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...\n"
        );
    }
}
