//! Operators' `scheduler on|off` switches: stored in the switches bucket
//! (key `agent.{id}`) before they are answered, and read by every Elector
//! that starts, so an agent turned off stays off under any broker.

use std::collections::BTreeMap;

use actix::prelude::*;
use tracing::info;

use super::super::audit::Audited;
use super::super::election::ElectionState;
use super::Elector;
use crate::bus::{BusError, Kv, Replier};
use crate::protocol::*;

/// An operator's `scheduler on|off`, waiting for its answer.
pub(super) struct Control {
    pub replier: Replier,
    pub audited: Audited,
    pub reply: SchedulerControlReply,
    pub switch: OperatorSwitch,
}

/// The agents' switches in the bucket, by agent id; those turned off are
/// excluded from `election`.
pub(super) async fn read(
    kv: &Kv<OperatorSwitch>,
    election: &mut ElectionState,
) -> Result<BTreeMap<String, OperatorSwitch>, BusError> {
    let switches: BTreeMap<String, OperatorSwitch> = (kv.entries().await?)
        .into_iter()
        .filter_map(|(key, s)| Some((key.strip_prefix(AGENT_SWITCH)?.to_string(), s)))
        .collect();
    for (agent, _) in switches.iter().filter(|(_, s)| s.off) {
        info!(agent = %agent, "agent turned off by an operator; it stays off");
        election.exclude(agent);
    }
    Ok(switches)
}

impl Elector {
    /// Stores an operator's switch the election took, then answers: a
    /// broker taking over keeps the agent as the operator left it.
    pub(super) fn store_switch(&mut self, control: Control, ctx: &mut Context<Self>) {
        let kv = self.switches_kv.clone();
        let agent = control.reply.agent_id.clone();
        let key = format!("{AGENT_SWITCH}{agent}");
        let switch = control.switch.clone();
        let write = async move { kv.put(&key, &switch).await };
        ctx.spawn(write.into_actor(self).map(move |stored, act, _| {
            let Control {
                replier,
                audited,
                reply,
                switch,
            } = control;
            match stored {
                Ok(_) => {
                    act.switches.insert(agent, switch);
                    act.audit.record(&audited, Ok(()));
                    act.bus.reply(&replier, &reply)
                }
                Err(e) => {
                    let message = format!("agent '{agent}': the switch could not be stored in JetStream ({e}); it holds under this broker, but one taking over may not know it: send it again");
                    act.audit.refuse(&replier, &audited, ErrorCode::Unavailable, &message)
                }
            }
        }));
    }
}
