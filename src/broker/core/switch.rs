//! Switch-over: an operator disables, enables or stops (drains) a
//! subagent. A disable or enable is stored first ([`Effect::Switch`], the
//! switches bucket), then applied and answered ([`Input::Switched`]): every
//! broker taking over reads the switches and keeps a disabled subagent
//! disabled whenever it is seen, with who switched it and when. A stop is
//! asked of the subagent ([`Effect::Stop`]) and answered when it takes it
//! ([`Input::Stopped`]).

use tracing::info;

use super::{Core, Effect, Refusal, Reply};
use crate::protocol::*;

/// What an operator switched: a subagent (disable, enable) or a job or
/// workflow (pause, resume).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOf {
    Subagent(String),
    Job(String),
}

impl SwitchOf {
    /// Its key in the switches bucket.
    pub fn key(&self) -> String {
        match self {
            SwitchOf::Subagent(id) => format!("{SUBAGENT_SWITCH}{id}"),
            SwitchOf::Job(name) => format!("{JOB_SWITCH}{name}"),
        }
    }
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// `baton subagent disable|enable|stop`.
    pub(super) fn on_control(&mut self, to: R, control: SubagentControl, by: String) {
        let SubagentControl {
            subagent_id,
            action,
        } = control;
        let Some(subagent) = self.registry.get(&subagent_id) else {
            return self.refuse(&to, Refusal::UnknownSubagent(subagent_id));
        };
        if subagent.state() == SubagentState::Lost {
            return self.refuse(&to, Refusal::SubagentLost(subagent_id));
        }
        let disabled = match action {
            SubagentAction::Stop => {
                let epoch = self.epoch;
                return self.emit(Effect::Stop {
                    to,
                    subagent_id,
                    stop: StopSubagent { epoch },
                });
            }
            SubagentAction::Disable => true,
            SubagentAction::Enable => false,
        };
        let switch = OperatorSwitch {
            off: disabled,
            by,
            at_ms: self.now.ms,
            all: false,
        };
        let of = SwitchOf::Subagent(subagent_id);
        self.emit(Effect::Switch { to, of, switch });
    }

    /// An operator's switch was stored (then it holds), or not.
    pub(super) fn on_switched(
        &mut self,
        to: R,
        of: SwitchOf,
        switch: OperatorSwitch,
        stored: Result<(), String>,
    ) {
        if let Err(error) = stored {
            let refusal = Refusal::SwitchNotStored {
                what: of.key(),
                error,
            };
            return self.refuse(&to, refusal);
        }
        let subagent_id = match of {
            SwitchOf::Subagent(id) => id,
            SwitchOf::Job(name) => return self.on_paused(to, name, switch),
        };
        let disabled = switch.off;
        info!(subagent = %subagent_id, disabled, by = %switch.by, "switch-over");
        self.switches.insert(subagent_id.clone(), switch);
        let state = (self.registry)
            .set_disabled(&subagent_id, disabled)
            .unwrap_or(SubagentState::Lost);
        let reason = match disabled {
            true => "disabled by an operator",
            false => "enabled by an operator",
        };
        self.announce(&subagent_id, state, reason);
        let reply = SubagentControlReply { subagent_id, state };
        self.reply(&to, Reply::Switched(reply));
        self.dispatch();
    }

    /// A subagent seen for the first time (since this broker took over,
    /// or since it left): disabled if an operator switched it off.
    pub(super) fn honour_switch(&mut self, subagent_id: &str) {
        if self.switches.get(subagent_id).is_some_and(|s| s.off) {
            self.registry.set_disabled(subagent_id, true);
        }
    }

    /// A subagent took a stop (it drains), or did not.
    pub(super) fn on_stopped(&mut self, to: R, subagent_id: String, taken: Result<(), String>) {
        match taken {
            Ok(()) => {
                let state = SubagentState::Draining;
                let reply = SubagentControlReply { subagent_id, state };
                self.reply(&to, Reply::Switched(reply));
            }
            Err(error) => {
                let refusal = Refusal::StopNotTaken {
                    subagent: subagent_id,
                    error,
                };
                self.refuse(&to, refusal);
            }
        }
    }
}
