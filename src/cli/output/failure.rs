//! Why an order failed, for `order show`: the last lines its failed task
//! wrote on stderr (for a workflow order, each failed step's last
//! attempt's), read from the log stream by the caller and kept here.

use std::collections::VecDeque;
use std::fmt::Write as _;

use super::orders::task_of;
use crate::protocol::*;

/// The failed tasks of one order whose stderr `order show` prints, and the
/// last lines of each.
pub struct StderrTails {
    keep: usize,
    /// The order whose log holds the lines (a step order's: its workflow
    /// order's).
    log_of: String,
    tails: Vec<Tail>,
}

struct Tail {
    /// "step test (attempt 2)", or empty for the order's own task.
    label: String,
    /// The order that ran the task (a step order for a step).
    order_id: String,
    /// The task, when known: only its lines count.
    task_id: Option<String>,
    count: usize,
    lines: VecDeque<String>,
}

impl StderrTails {
    /// The tasks of failed order `o` to show stderr of; `None` unless it
    /// failed having run a task (a workflow order: a failed step).
    pub fn of(o: &OrderInfo, keep: usize) -> Option<StderrTails> {
        if o.state != OrderState::Failed || (o.workflow.is_none() && o.attempt == 0) {
            return None;
        }
        let tail = |label: String, order_id: &str, task_id: Option<&String>| Tail {
            label,
            order_id: order_id.to_string(),
            task_id: task_id.cloned(),
            count: 0,
            lines: VecDeque::new(),
        };
        let tails: Vec<Tail> = match &o.workflow {
            None => vec![tail(String::new(), &o.order_id, o.task_id.as_ref())],
            Some(_) => (o.steps.iter())
                .filter(|s| s.state == StepState::Failed)
                .filter_map(|s| {
                    let last = (o.history.iter().filter(|h| h.step == s.name))
                        .max_by_key(|h| h.attempt)?;
                    let label = format!("step {} (attempt {})", s.name, last.attempt);
                    Some(tail(label, &last.order_id, None))
                })
                .collect(),
        };
        if tails.is_empty() {
            return None;
        }
        let log_of = o.parent.as_ref().map_or(&o.order_id, |p| &p.order_id);
        Some(StderrTails {
            keep,
            log_of: log_of.clone(),
            tails,
        })
    }

    /// The order whose log to read.
    pub fn log_of(&self) -> &str {
        &self.log_of
    }

    /// Takes one line of the order's log; only stderr lines of the failed
    /// tasks are kept.
    pub fn push(&mut self, log: &TaskLog) {
        if log.stream != LogStream::Stderr {
            return;
        }
        let keep = self.keep;
        let tail = self.tails.iter_mut().find(|t| match &t.task_id {
            Some(task) => *task == log.task_id,
            None => task_of(&log.task_id, &t.order_id),
        });
        if let Some(tail) = tail {
            tail.count += 1;
            tail.lines.push_back(log.line.clone());
            if tail.lines.len() > keep {
                tail.lines.pop_front();
            }
        }
    }

    /// "stderr (last N lines):" and the lines, per failed task; or that
    /// none were kept.
    pub fn render(&self, out: &mut String) {
        for t in &self.tails {
            let of = match t.label.as_str() {
                "" => String::new(),
                label => format!(" of {label}"),
            };
            if t.lines.is_empty() {
                let _ = writeln!(
                    out,
                    "stderr{of}: no lines kept (it wrote nothing on stderr, or its lines \
                     are older than the log stream keeps them: nats.log_retention)"
                );
                continue;
            }
            let earlier = t.count - t.lines.len();
            let more = match earlier {
                0 => String::new(),
                n => format!(
                    ", {n} earlier: `baton order logs {}`",
                    if self.log_of == t.order_id || t.label.is_empty() {
                        self.log_of.clone()
                    } else {
                        format!("{} --step {}", self.log_of, step_of(&t.label))
                    }
                ),
            };
            let n = t.lines.len();
            let lines = if n == 1 { "line" } else { "lines" };
            let _ = writeln!(out, "stderr{of} (last {n} {lines}{more}):");
            for line in &t.lines {
                let _ = writeln!(out, "  err| {line}");
            }
        }
    }

    /// One line saying why no stderr is shown: the log could not be read.
    pub fn unreadable(out: &mut String, why: &str) {
        let _ = writeln!(out, "stderr: not shown: {why}");
    }
}

/// The step's name in a label "step NAME (attempt N)".
fn step_of(label: &str) -> &str {
    let rest = label.strip_prefix("step ").unwrap_or(label);
    rest.split(" (attempt").next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::fixtures::{line, T0};

    fn err(order: &str, task: &str, text: &str) -> TaskLog {
        TaskLog {
            order_id: order.into(),
            stream: LogStream::Stderr,
            step: None,
            ..line("x", task, text)
        }
    }

    #[test]
    fn a_failed_order_keeps_the_last_stderr_lines_of_its_last_task() {
        let mut o = OrderInfo::new("o1".into(), "j".into(), OrderState::Failed, T0);
        assert!(StderrTails::of(&o, 2).is_none(), "it never ran a task");
        o.task_id = Some("o1-2".into());
        o.attempt = 2;
        let mut tails = StderrTails::of(&o, 2).expect("failed");
        assert_eq!(tails.log_of(), "o1");
        tails.push(&err("o1", "o1-1", "an earlier attempt"));
        for i in 1..=3 {
            tails.push(&err("o1", "o1-2", &format!("e{i}")));
        }
        let mut out_line = err("o1", "o1-2", "stdout");
        out_line.stream = LogStream::Stdout;
        tails.push(&out_line);
        let mut out = String::new();
        tails.render(&mut out);
        assert_eq!(
            out,
            "stderr (last 2 lines, 1 earlier: `baton order logs o1`):\n  err| e2\n  err| e3\n"
        );
        o.state = OrderState::Succeeded;
        assert!(StderrTails::of(&o, 2).is_none());
    }

    #[test]
    fn a_failed_workflow_order_shows_its_failed_step_and_says_when_nothing_is_kept() {
        let mut o = OrderInfo::new("flow".into(), "nightly".into(), OrderState::Failed, T0);
        o.workflow = Some("nightly".into());
        o.steps = vec![
            StepRun {
                name: "build".into(),
                state: StepState::Succeeded,
                ..StepRun::default()
            },
            StepRun {
                name: "test".into(),
                state: StepState::Failed,
                attempt: 2,
                ..StepRun::default()
            },
        ];
        let attempt = |step: &str, attempt: u32, order_id: &str| StepAttempt {
            step: step.into(),
            job: "j".into(),
            attempt,
            order_id: order_id.into(),
            state: OrderState::Failed,
            subagent_id: None,
            exit_code: None,
            reason: None,
            started_at_ms: None,
            finished_at_ms: None,
            placed_on: Vec::new(),
            tasks: 1,
        };
        o.history = vec![
            attempt("build", 1, "b1"),
            attempt("test", 1, "t1"),
            attempt("test", 2, "t2"),
        ];
        let mut tails = StderrTails::of(&o, 10).expect("a failed step");
        tails.push(&err("flow", "t1-1", "first attempt"));
        tails.push(&err("flow", "t2-1", "assertion failed"));
        let mut out = String::new();
        tails.render(&mut out);
        assert_eq!(
            out,
            "stderr of step test (attempt 2) (last 1 line):\n  err| assertion failed\n"
        );
        let mut out = String::new();
        StderrTails::of(&o, 10).unwrap().render(&mut out);
        assert!(
            out.starts_with("stderr of step test (attempt 2): no lines kept"),
            "{out}"
        );
    }
}
