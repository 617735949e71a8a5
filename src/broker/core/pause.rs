//! Pausing and resuming a job or workflow (`baton job pause|resume`).
//!
//! A pause is stored first ([`Effect::Switch`] under `job.NAME` in the
//! switches bucket), then held and answered ([`Input::Switched`]); every
//! broker taking over reads it back (`takeover.rs`), and the Scheduler
//! agent watches the same key and does not fire a paused job's slots (its
//! cursor stays where it was, so on resume its misfire policy decides about
//! the slots skipped).
//!
//! While paused, the broker refuses every submit that carries a slot (a
//! trigger's, in case a Scheduler fired before it saw the pause), and with
//! `all` the clients' submits too; a submit repeating a request id it
//! already holds is answered as before. Workflow steps that run a paused
//! job still run: the pause is of a name's own submits.

use std::time::{Duration, UNIX_EPOCH};

use tracing::info;

use super::{Core, Effect, Refusal, Reply, SwitchOf};
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// `baton job pause|resume NAME`.
    pub(super) fn on_job_control(&mut self, to: R, control: JobControl, by: String) {
        if self.kind_of(&control.name).is_none() {
            return self.refuse(&to, self.unknown_job(control.name));
        }
        let switch = match self.paused(&control.name) {
            // paused again: since when and by whom stay (the skipped slots
            // count from there); only `all` may change
            Some(held) if control.pause => OperatorSwitch {
                all: control.all,
                ..held.clone()
            },
            _ => OperatorSwitch {
                off: control.pause,
                by,
                at_ms: self.now.ms,
                all: control.pause && control.all,
            },
        };
        let of = SwitchOf::Job(control.name);
        self.emit(Effect::Switch { to, of, switch });
    }

    /// A pause or resume was stored: it holds from now.
    pub(super) fn on_paused(&mut self, to: R, name: String, switch: OperatorSwitch) {
        info!(job = %name, paused = switch.off, all = switch.all, by = %switch.by, "job switched");
        let before = self.pauses.insert(name.clone(), switch.clone());
        // a pause that now holds manual submits too (or no longer) is a change
        let changed =
            before.is_none_or(|b| b.off != switch.off || (switch.off && b.all != switch.all));
        let kind = self.kind_of(&name).unwrap_or(JobKind::Job);
        let reply = JobControlReply {
            name,
            kind,
            switched: switch,
            changed,
        };
        self.reply(&to, Reply::JobSwitched(reply));
    }

    /// The pause of `name`, while it is paused.
    pub(in crate::broker) fn paused(&self, name: &str) -> Option<&OperatorSwitch> {
        self.pauses.get(name).filter(|s| s.off)
    }

    /// Why `submit` is refused for a pause, if it is.
    pub(super) fn refused_for_pause(&self, submit: &SubmitOrder) -> Option<Refusal> {
        let pause = self.paused(&submit.job)?;
        let by_trigger = submit.slot_ms.is_some();
        if !(by_trigger || pause.all) {
            return None;
        }
        // a repeat of an order already taken is answered as it was
        let rid = submit.request_id.as_deref();
        if rid.is_some_and(|rid| self.book.by_request_id(rid).is_some()) {
            return None;
        }
        let at = UNIX_EPOCH + Duration::from_millis(pause.at_ms);
        Some(Refusal::Paused {
            name: submit.job.clone(),
            all: if pause.all { " with --all" } else { "" },
            by: pause.by.clone(),
            at: humantime::format_rfc3339_seconds(at).to_string(),
        })
    }

    /// Whether `name` is a deployed job or workflow.
    pub(in crate::broker) fn kind_of(&self, name: &str) -> Option<JobKind> {
        if self.jobs.contains_key(name) {
            Some(JobKind::Job)
        } else if self.workflows.contains_key(name) {
            Some(JobKind::Workflow)
        } else {
            None
        }
    }

    /// The refusal of a name that is neither a job nor a workflow.
    pub(in crate::broker) fn unknown_job(&self, job: String) -> Refusal {
        Refusal::UnknownJob {
            jobs: some_names(self.jobs.keys()),
            workflows: some_names(self.workflows.keys()),
            job,
        }
    }
}

/// Names listed in a refusal of an unknown name; the rest are counted.
const NAMES_LISTED: usize = 20;

/// The first [`NAMES_LISTED`] of `names` in order, and how many more: a
/// refusal stays small (and cheap) with a million jobs deployed.
fn some_names<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> String {
    let total = names.len();
    if total == 0 {
        return "none".into();
    }
    let mut first: std::collections::BinaryHeap<&str> = Default::default();
    for name in names {
        first.push(name.as_str());
        if first.len() > NAMES_LISTED {
            first.pop();
        }
    }
    let mut listed = first.into_sorted_vec().join(", ");
    if total > NAMES_LISTED {
        listed.push_str(&format!(" and {} more", total - NAMES_LISTED));
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_names_lists_the_first_twenty_and_counts_the_rest() {
        let few: Vec<String> = ["b", "a"].map(String::from).to_vec();
        assert_eq!(some_names(few.iter()), "a, b");
        assert_eq!(
            some_names([].iter()),
            "none",
            "not an empty list: 'workflows: )'"
        );
        let many: Vec<String> = (0..1000).rev().map(|i| format!("j{i:04}")).collect();
        let listed = some_names(many.iter());
        assert!(listed.starts_with("j0000, j0001, "), "{listed}");
        assert!(listed.ends_with("j0019 and 980 more"), "{listed}");
    }
}
