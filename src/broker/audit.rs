//! The audit trail of state-changing commands (deploy and undeploy, job
//! pause and resume, order cancel, suspend and resume, subagent disable,
//! enable and stop, Scheduler on and off; see `protocol::audit`).
//!
//! Which requests are audited and what their record says is pure
//! ([`Audited`], [`Input::audited`]); [`Audit`] appends records to the
//! audit stream through the bus, for the Broker and the Elector alike.
//! A record is made once the command's outcome is known: carried out, or
//! refused (by the gate, or as `not_found`, `invalid_state`, ...).
//! Appending never waits and never fails a command: a record JetStream does
//! not store is counted (`Stats::unstored`) and warned about. Deploy dry
//! runs change nothing and are not recorded; submits are not audited.
//!
//! [`Audited`] says what a request asks, about what, and who sent it
//! (`Sender::describe`, and whether it was verified). In the Broker a
//! command's `Audited` travels with its reply address (`act::To`) through
//! the core, and the record is made with the reply: what the operator was
//! told is what the trail says (an error reply is a refusal, any other the
//! command carried out). A command is answered once its new state is stored
//! (or its write to the buckets, or the subagent's answer to `stop`, came
//! back); an answer that the state could not be stored yet (it is written
//! again until it lands) is recorded `unavailable`, and the command sent
//! again learns the outcome. The gate's refusals are recorded through
//! [`Input::audited`].

use tracing::debug;

use super::{Broker, Input};
use crate::auth::Sender;
use crate::bus::{Bus, Replier};
use crate::protocol::*;
use crate::time::now_ms;

/// How a command ended: carried out, or refused with a code and why.
pub(super) type Outcome<'a> = Result<(), (ErrorCode, &'a str)>;

/// One audited request: what was asked, about what, by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Audited {
    command: String,
    target: String,
    who: String,
    verified: bool,
    detail: Option<String>,
    /// A deploy dry run: nothing changes, nothing is recorded.
    dry_run: bool,
}

impl Audited {
    pub fn new(command: &str, target: impl Into<String>, sender: &Sender) -> Audited {
        Audited {
            command: command.to_string(),
            target: target.into(),
            who: sender.describe(),
            verified: matches!(sender, Sender::Verified(_)),
            detail: None,
            dry_run: false,
        }
    }

    fn with_detail(mut self, detail: Option<String>) -> Audited {
        self.detail = detail;
        self
    }

    pub fn deploy(req: &DeployRequest, sender: &Sender) -> Audited {
        let names: Vec<&str> = (req.jobs.iter().map(|j| j.name.as_str()))
            .chain(req.workflows.iter().map(|w| w.name.as_str()))
            .chain(req.clusters.iter().map(|c| c.name.as_str()))
            .collect();
        let mut detail = Vec::new();
        if !req.remove.is_empty() {
            detail.push(format!("remove {}", req.remove.join(", ")));
        }
        if req.prune {
            detail.push("prune".to_string());
        }
        let detail = (!detail.is_empty()).then(|| detail.join("; "));
        // only removing (`baton undeploy`): that is what the trail says
        let audited = match names.is_empty() && !req.remove.is_empty() {
            true => {
                let detail = req.prune.then(|| "prune".to_string());
                Audited::new("undeploy", req.remove.join(", "), sender).with_detail(detail)
            }
            false => Audited::new("deploy", names.join(", "), sender).with_detail(detail),
        };
        Audited {
            dry_run: req.dry_run,
            ..audited
        }
    }

    pub fn job(req: &JobControl, sender: &Sender) -> Audited {
        let command = if req.pause { "job.pause" } else { "job.resume" };
        let detail = (req.pause && req.all).then(|| "all".to_string());
        Audited::new(command, &req.name, sender).with_detail(detail)
    }

    pub fn cancel(req: &CancelOrder, sender: &Sender) -> Audited {
        Audited::new("order.cancel", &req.order_id, sender).with_detail(kill(req.kill))
    }

    pub fn suspend(req: &SuspendOrder, sender: &Sender) -> Audited {
        Audited::new("order.suspend", &req.order_id, sender).with_detail(kill(req.kill))
    }

    pub fn resume(req: &ResumeOrder, sender: &Sender) -> Audited {
        let mut detail = Vec::new();
        if let Some(step) = &req.from {
            detail.push(format!("from {step}"));
        }
        if req.force_succeeded {
            detail.push("force succeeded".to_string());
        }
        let detail = (!detail.is_empty()).then(|| detail.join(", "));
        Audited::new("order.resume", &req.order_id, sender).with_detail(detail)
    }

    pub fn subagent(req: &SubagentControl, sender: &Sender) -> Audited {
        let command = match req.action {
            SubagentAction::Disable => "subagent.disable",
            SubagentAction::Enable => "subagent.enable",
            SubagentAction::Stop => "subagent.stop",
        };
        Audited::new(command, &req.subagent_id, sender)
    }

    pub fn scheduler(req: &SchedulerControl, sender: &Sender) -> Audited {
        let command = match req.action {
            SchedulerAction::On => "scheduler.on",
            SchedulerAction::Off => "scheduler.off",
        };
        Audited::new(command, &req.agent_id, sender)
    }

    /// Its record, once `outcome` is known at `at_ms`; `None` for a dry run.
    pub fn record(&self, outcome: Outcome<'_>, broker_id: &str, at_ms: u64) -> Option<AuditRecord> {
        if self.dry_run {
            return None;
        }
        let (outcome, error) = match outcome {
            Ok(()) => (AUDIT_OK.to_string(), None),
            Err((code, message)) => (code.as_str().to_string(), Some(message.to_string())),
        };
        Some(AuditRecord {
            at_ms,
            command: self.command.clone(),
            target: self.target.clone(),
            outcome,
            error,
            who: self.who.clone(),
            verified: self.verified,
            broker_id: broker_id.to_string(),
            detail: self.detail.clone(),
        })
    }
}

fn kill(kill: bool) -> Option<String> {
    kill.then(|| "kill".to_string())
}

impl Input {
    /// The audited request this is, if it is one: its record is made with
    /// the reply (`act::To`), or the gate's refusal.
    pub(super) fn audited(&self) -> Option<Audited> {
        Some(match self {
            Input::Deploy(r) => Audited::deploy(&r.body, r.sender.get()),
            Input::Cancel(r) => Audited::cancel(&r.body, r.sender.get()),
            Input::Suspend(r) => Audited::suspend(&r.body, r.sender.get()),
            Input::Resume(r) => Audited::resume(&r.body, r.sender.get()),
            Input::Control(r) => Audited::subagent(&r.body, r.sender.get()),
            Input::JobControl(r) => Audited::job(&r.body, r.sender.get()),
            _ => return None,
        })
    }
}

/// Appends audit records to the audit stream; cheap to clone.
#[derive(Clone)]
pub(super) struct Audit {
    bus: Bus,
    broker_id: String,
}

impl Audit {
    pub fn new(bus: Bus, broker_id: String) -> Audit {
        Audit { bus, broker_id }
    }

    /// Appends `asked`'s record with its outcome, without waiting.
    pub fn record(&self, asked: &Audited, outcome: Outcome<'_>) {
        let Some(record) = asked.record(outcome, &self.broker_id, now_ms()) else {
            return;
        };
        debug!(command = %record.command, target = %record.target, who = %record.who, outcome = %record.outcome, "audited");
        let subject = self.bus.subjects().audit(&record.command);
        self.bus.append(subject, &record);
    }

    /// Refuses `asked`: answers with the error and records it.
    pub fn refuse(&self, replier: &Replier, asked: &Audited, code: ErrorCode, message: &str) {
        self.record(asked, Err((code, message)));
        self.bus.reply(replier, &ErrorReply::new(code, message));
    }
}

impl Broker {
    /// Records `asked`'s outcome in the audit trail.
    pub(super) fn audit(&self, asked: &Audited, outcome: Outcome<'_>) {
        self.audit.record(asked, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{identity_name, Identity, Role};

    fn admin() -> Sender {
        Sender::Verified(Identity {
            name: identity_name(Role::Admin, None),
            role: Role::Admin.as_str().into(),
            id: None,
            public_key: "U".into(),
        })
    }

    #[test]
    fn a_record_says_who_what_and_how_it_ended() {
        let cancel = CancelOrder {
            order_id: "0190-a".into(),
            kill: true,
        };
        let asked = Audited::cancel(&cancel, &admin());
        let ok = asked.record(Ok(()), "broker-1", 42).unwrap();
        assert_eq!(
            ok,
            AuditRecord {
                at_ms: 42,
                command: "order.cancel".into(),
                target: "0190-a".into(),
                outcome: "ok".into(),
                error: None,
                who: "admin".into(),
                verified: true,
                broker_id: "broker-1".into(),
                detail: Some("kill".into()),
            }
        );
        assert!(ok.ok());
        let refused = asked
            .record(
                Err((ErrorCode::NotFound, "no order 0190-a")),
                "broker-1",
                43,
            )
            .unwrap();
        assert_eq!(refused.outcome, "not_found");
        assert_eq!(refused.error.as_deref(), Some("no order 0190-a"));
        assert!(!refused.ok());
    }

    #[test]
    fn who_is_the_verified_identity_or_why_there_is_none() {
        let control = SubagentControl {
            subagent_id: "sub-1".into(),
            action: SubagentAction::Disable,
        };
        for (sender, who, verified) in [
            (admin(), "admin", true),
            (Sender::Unsigned, "unsigned", false),
            (Sender::Unchecked, "unchecked", false),
            (
                Sender::Forged("unknown key K".into()),
                "forged (unknown key K)",
                false,
            ),
        ] {
            let record = Audited::subagent(&control, &sender)
                .record(Ok(()), "b", 0)
                .unwrap();
            assert_eq!((record.who.as_str(), record.verified), (who, verified));
            assert_eq!(record.command, "subagent.disable");
        }
    }

    #[test]
    fn deploys_name_what_they_deploy_and_dry_runs_are_not_recorded() {
        let mut deploy: DeployRequest = serde_json::from_value(serde_json::json!({
            "jobs": [{ "name": "a", "program": "true" }, { "name": "b", "program": "true" }],
            "clusters": [{ "name": "gpu", "mode": "round-robin", "members": [{ "subagent": "s1" }] }],
        }))
        .unwrap();
        let record = Audited::deploy(&deploy, &admin())
            .record(Ok(()), "b", 0)
            .unwrap();
        assert_eq!(
            (record.command.as_str(), record.target.as_str()),
            ("deploy", "a, b, gpu")
        );
        deploy.dry_run = true;
        assert_eq!(
            Audited::deploy(&deploy, &admin()).record(Ok(()), "b", 0),
            None
        );
        let undeploy = DeployRequest {
            remove: vec!["a".into(), "gpu".into()],
            ..Default::default()
        };
        let record = Audited::deploy(&undeploy, &admin())
            .record(Ok(()), "b", 0)
            .unwrap();
        let said = (
            record.command.as_str(),
            record.target.as_str(),
            record.detail,
        );
        assert_eq!(said, ("undeploy", "a, gpu", None));
        assert!(AUDIT_COMMANDS.contains(&"undeploy"));
    }

    #[test]
    fn resume_and_scheduler_commands_carry_their_options() {
        let resume = ResumeOrder {
            order_id: "o".into(),
            from: Some("build".into()),
            force_succeeded: true,
        };
        let record = Audited::resume(&resume, &admin())
            .record(Ok(()), "b", 0)
            .unwrap();
        assert_eq!(record.command, "order.resume");
        assert_eq!(
            record.detail.as_deref(),
            Some("from build, force succeeded")
        );
        let off = SchedulerControl {
            agent_id: "agent-1".into(),
            action: SchedulerAction::Off,
        };
        let record = Audited::scheduler(&off, &admin())
            .record(Ok(()), "b", 0)
            .unwrap();
        assert_eq!(
            (record.command.as_str(), record.target.as_str()),
            ("scheduler.off", "agent-1")
        );
    }
}
