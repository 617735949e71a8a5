//! `baton order logs`: an order's stored lines from the log stream, by
//! step, as text or JSON, and followed until the order has finished.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;
use futures::StreamExt;

use crate::bus::{Bus, BusError, LogsError, OrderLog};
use crate::cli::output;
use crate::config::Config;
use crate::protocol::*;

/// `baton order logs`: prints the order's stored lines; with `follow`, new
/// ones as they come until the order's `finished` event (or, should that
/// never be stored, until the broker says the order is final and no line
/// came for a while). The lines of a step order are its workflow order's.
pub(super) async fn logs(
    config: &Config,
    bus: &Bus,
    order_id: &str,
    step: Option<String>,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    // only to find a step order's workflow order: the stream keeps lines
    // of orders the broker no longer holds
    let timeout = config.nats.request_timeout;
    let get = GetOrder {
        order_id: order_id.to_string(),
    };
    let info: Option<OrderInfo> = bus
        .request(
            bus.subjects().order_get(),
            &get,
            timeout.min(Duration::from_secs(3)),
        )
        .await
        .ok();
    let workflow = info.as_ref().is_some_and(|i| i.workflow.is_some());
    if let (Some(info), Some(step)) = (&info, &step) {
        if let Some(message) = no_such_step(info, step) {
            bail!(message);
        }
    }
    let parent = info.and_then(|i| i.parent);
    let (read_id, mut printer) = match &parent {
        Some(p) => {
            if let Some(other) = step.as_ref().filter(|s| **s != p.step) {
                bail!(
                    "order {order_id} runs step {} of workflow order {}, not step {other}; \
                     for that step's lines use `baton order logs {} --step {other}`",
                    p.step,
                    p.order_id,
                    p.order_id
                );
            }
            eprintln!(
                "order {order_id} runs step {} (attempt {}) of workflow order {}: \
                 printing that order's lines of this attempt",
                p.step, p.attempt, p.order_id
            );
            let printer = LogPrinter::new(Some(p.step.clone()), json).of_order(order_id);
            (p.order_id.clone(), printer)
        }
        None => (order_id.to_string(), LogPrinter::new(step, json)),
    };
    let unknown = || {
        anyhow::anyhow!(
            "no logs for order {order_id}: unknown order, not run yet, or older than the retention ({})",
            output::span(config.nats.log_retention)
        )
    };
    let mut logs = match bus.order_logs(&config.log_stream(), &read_id, follow).await {
        Ok(logs) => logs,
        Err(e @ LogsError::NoStream { .. }) => bail!("no logs for order {order_id}: {e}"),
        Err(LogsError::Bus(e)) => return Err(e.into()),
    };
    let mut stored = false;
    // the first tick, at once, only asks whether the broker knows the order
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    let mut quiet = false;
    loop {
        tokio::select! {
            item = logs.next() => {
                let Some(item) = item else { break };
                stored = true;
                quiet = false;
                match item? {
                    OrderLog::Line(line) => match printer.print(&line) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                        Err(e) => return Err(e.into()),
                    },
                    OrderLog::Finished(f) if follow => {
                        // a failed workflow order may have been resumed since
                        let resumable = workflow && parent.is_none() && f.state == OrderState::Failed;
                        if !resumable || finished_for_good(config, bus, order_id, &f).await {
                            break;
                        }
                    }
                    OrderLog::Finished(_) => {}
                }
            }
            _ = poll.tick(), if follow => {
                let was_quiet = std::mem::replace(&mut quiet, true);
                let info: Result<OrderInfo, _> = bus
                    .request(bus.subjects().order_get(), &get, timeout)
                    .await;
                match info {
                    Err(BusError::Remote(e)) if e.error.code == ErrorCode::NotFound && !stored => {
                        return Err(unknown());
                    }
                    Ok(info) if was_quiet && info.state.is_final() => break,
                    _ => {}
                }
            }
        }
    }
    if !stored {
        return Err(unknown());
    }
    match &parent {
        Some(p) if printer.printed == 0 => bail!(
            "no lines of order {order_id} (step {} attempt {} of workflow order {}) so far",
            p.step,
            p.attempt,
            p.order_id
        ),
        Some(_) => Ok(()),
        None => printer.check_step(order_id),
    }
}

/// The error when `step` names no step of workflow order `info` (for a
/// plain order, --step is its job and is not checked here).
fn no_such_step(info: &OrderInfo, step: &str) -> Option<String> {
    let workflow = info.workflow.as_ref()?;
    if info.steps.is_empty() || info.steps.iter().any(|s| s.name == step) {
        return None;
    }
    let steps: Vec<&str> = info.steps.iter().map(|s| s.name.as_str()).collect();
    Some(format!(
        "workflow {workflow} (order {}) has no step {step}; its steps: {}",
        info.order_id,
        steps.join(", ")
    ))
}

/// Whether the stored `finished` event `f` is the order's last: it is not
/// when the order was resumed after it (asked of the broker; when it cannot
/// tell, it is).
async fn finished_for_good(config: &Config, bus: &Bus, order_id: &str, f: &OrderFinished) -> bool {
    let get = GetOrder {
        order_id: order_id.to_string(),
    };
    let info: Result<OrderInfo, _> = bus
        .request(
            bus.subjects().order_get(),
            &get,
            config.nats.request_timeout,
        )
        .await;
    match info {
        Ok(info) => info.state.is_final() && info.finished_at_ms.is_none_or(|t| t <= f.at_ms),
        Err(_) => true,
    }
}

/// Prints an order's stored lines for `baton order logs`: stdout lines to
/// stdout and stderr lines to stderr, as `submit --wait` does, or every
/// line to stdout as a JSON `log` event.
struct LogPrinter {
    /// Only lines of this step: a workflow step, or a plain order's job.
    step: Option<String>,
    /// Only lines of the tasks of this order (one attempt of a step).
    order: Option<String>,
    json: bool,
    printed: usize,
    /// The steps that had lines, for the error when `step` matched none.
    steps: BTreeSet<String>,
}

impl LogPrinter {
    fn new(step: Option<String>, json: bool) -> LogPrinter {
        LogPrinter {
            step,
            order: None,
            json,
            printed: 0,
            steps: BTreeSet::new(),
        }
    }

    fn of_order(self, order_id: &str) -> LogPrinter {
        LogPrinter {
            order: Some(order_id.to_string()),
            ..self
        }
    }

    /// Whether `log` is printed: of the step asked for (a workflow step, or
    /// a plain order's job) and, for a step order, of its tasks.
    fn keeps(&self, log: &TaskLog) -> bool {
        let step = log.step.as_deref().unwrap_or(&log.job);
        self.step.as_ref().is_none_or(|s| s == step)
            && self
                .order
                .as_ref()
                .is_none_or(|o| output::task_of(&log.task_id, o))
    }

    fn print(&mut self, log: &TaskLog) -> std::io::Result<()> {
        use std::io::Write as _;
        if !self.keeps(log) {
            let step = log.step.as_deref().unwrap_or(&log.job);
            self.steps.insert(step.to_string());
            return Ok(());
        }
        self.printed += 1;
        if self.json {
            let mut v = serde_json::to_value(log).expect("events encode as JSON");
            v["event"] = serde_json::Value::from(EventKind::Log.token());
            return writeln!(std::io::stdout(), "{v}");
        }
        let text = output::log_text(log, self.step.is_none());
        match log.stream {
            LogStream::Stdout => writeln!(std::io::stdout(), "{text}"),
            LogStream::Stderr => writeln!(std::io::stderr(), "{text}"),
        }
    }

    /// An error when `--step` named a step that printed nothing.
    fn check_step(&self, order_id: &str) -> anyhow::Result<()> {
        match &self.step {
            Some(step) if self.printed == 0 => {
                let others = if self.steps.is_empty() {
                    "none".to_string()
                } else {
                    self.steps.iter().cloned().collect::<Vec<_>>().join(", ")
                };
                bail!("no lines of step {step} in order {order_id} (steps with output: {others})")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(job: &str, step: Option<&str>, task: &str) -> TaskLog {
        TaskLog {
            order_id: "flow".into(),
            job: job.into(),
            task_id: task.into(),
            subagent_id: "sub-1".into(),
            stream: LogStream::Stdout,
            step: step.map(Into::into),
            seq: 1,
            line: "hello".into(),
            at_ms: 0,
        }
    }

    #[test]
    fn step_picks_a_workflow_steps_lines_or_a_plain_orders_job() {
        let build = line("compile", Some("build"), "so1-1");
        let plain = line("compile", None, "o1-1");
        let all = LogPrinter::new(None, false);
        assert!(all.keeps(&build) && all.keeps(&plain));
        let step = LogPrinter::new(Some("build".into()), false);
        assert!(step.keeps(&build));
        assert!(!step.keeps(&line("compile", Some("test"), "so2-1")));
        assert!(
            !step.keeps(&line("build", Some("other"), "so2-1")),
            "the step, not the job"
        );
        let job = LogPrinter::new(Some("compile".into()), false);
        assert!(job.keeps(&plain) && !job.keeps(&build));
    }

    #[test]
    fn a_step_the_workflow_does_not_have_is_named_with_its_steps() {
        let mut info = OrderInfo::new("flow".into(), "nightly".into(), OrderState::Running, 0);
        info.workflow = Some("nightly".into());
        info.steps = ["build", "test"]
            .into_iter()
            .map(|name| StepRun {
                name: name.into(),
                job: "compile".into(),
                ..StepRun::default()
            })
            .collect();
        assert_eq!(no_such_step(&info, "build"), None);
        assert_eq!(
            no_such_step(&info, "deploy").as_deref(),
            Some("workflow nightly (order flow) has no step deploy; its steps: build, test")
        );
        info.workflow = None;
        assert_eq!(
            no_such_step(&info, "deploy"),
            None,
            "a plain order: its job"
        );
    }

    #[test]
    fn a_step_order_keeps_only_its_own_tasks_lines() {
        let printer = LogPrinter::new(Some("build".into()), false).of_order("so1");
        assert!(printer.keeps(&line("compile", Some("build"), "so1-1")));
        assert!(printer.keeps(&line("compile", Some("build"), "so1-2")));
        assert!(!printer.keeps(&line("compile", Some("build"), "so12-1")));
        assert!(!printer.keeps(&line("compile", Some("build"), "so2-1")));
    }
}
