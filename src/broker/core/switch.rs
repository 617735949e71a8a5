//! Switch-over: an operator disables, enables or stops (drains) a
//! subagent. Disable and enable are the registry's, answered at once; a
//! stop is asked of the subagent ([`Effect::Stop`]) and answered when it
//! takes it ([`Input::Stopped`]).

use tracing::info;

use super::{Core, Effect, Refusal, Reply};
use crate::protocol::*;

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// `baton subagent disable|enable|stop`.
    pub(super) fn on_control(&mut self, to: R, control: SubagentControl) {
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
        let state = (self.registry)
            .set_disabled(&subagent_id, disabled)
            .unwrap_or(SubagentState::Lost);
        info!(subagent = %subagent_id, ?action, "switch-over");
        let reason = match disabled {
            true => "disabled by an operator",
            false => "enabled by an operator",
        };
        self.announce(&subagent_id, state, reason);
        let reply = SubagentControlReply { subagent_id, state };
        self.reply(&to, Reply::Switched(reply));
        self.dispatch();
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
