//! Whom the subagent obeys: commands and broker heartbeats signed by a broker
//! (never an unsigned or forged epoch), of the newest epoch seen; and a check
//! at start that its own subjects reach it (credentials of another subagent
//! id would leave it registered but deaf).

use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, error, warn};

use super::admission::{self, Refusal};
use super::Subagent;
use crate::auth::Role;
use crate::bus::{BusError, Received, Replier, SenderProof};
use crate::protocol::*;

impl Subagent {
    /// An active broker's heartbeat raises the epoch and is broker contact,
    /// unless a newer broker has been seen since. A standby's is neither: it
    /// acknowledges no results.
    pub(super) fn on_broker_heartbeat(&mut self, received: Received<BrokerHeartbeat>) {
        let hb = received.body;
        if hb.role != BrokerRole::Active {
            return;
        }
        if !received.sender.is(Role::Broker) {
            // never adopt an epoch a broker did not sign: forged heartbeats
            // with a huge epoch would make it refuse the real broker
            if self.bus.stats().count_refused() {
                let sender = received.sender.describe();
                let refused = self.bus.stats().refused();
                warn!(subject = %received.subject, %sender, epoch = hb.epoch, refused, "broker heartbeat not signed by a broker ignored (logged at the 1st, 2nd, 4th, 8th... refusal)");
            }
            return;
        }
        if self.fence.admit(hb.epoch).is_err() {
            debug!(broker = %hb.broker_id, epoch = hb.epoch, newest = self.fence.newest(), "heartbeat from a deposed broker ignored");
            return;
        }
        self.heard_broker();
    }

    /// Whether a broker command of `epoch` may be obeyed
    /// ([`admission::obey`]); a refused one is answered here and must change
    /// nothing. An obeyed one's epoch is observed.
    pub(super) fn obey(
        &mut self,
        command: &'static str,
        epoch: u64,
        sender: &SenderProof,
        replier: &Replier,
    ) -> bool {
        match admission::obey(sender.is(Role::Broker), epoch, &self.fence) {
            Ok(()) => {
                self.fence.observe(epoch);
                true
            }
            Err(refusal) => {
                self.refuse(command, refusal, sender, replier);
                false
            }
        }
    }

    /// Answers a broker command refused: not signed by a broker (counted), or
    /// from an older broker than the newest seen. Every refusal is logged:
    /// commands are not a flood.
    pub(super) fn refuse(
        &mut self,
        command: &'static str,
        refusal: Refusal,
        sender: &SenderProof,
        replier: &Replier,
    ) {
        let sender = sender.describe();
        match refusal {
            Refusal::Forbidden => {
                self.bus.stats().count_refused();
                warn!(subagent = %self.id, command, %sender, "command not signed by a broker refused");
            }
            Refusal::StaleEpoch { epoch, newest } => {
                warn!(subagent = %self.id, command, epoch, newest, "command from a stale broker epoch refused");
            }
        }
        self.bus.reply(replier, &refusal.reply(command, &sender));
    }

    /// Pings itself: when the server refused its subscriptions (credentials
    /// of another subagent id), no one answers, and it stops with the reason
    /// instead of registering and never receiving a task.
    pub(super) fn check_own_subjects(&mut self, ctx: &mut Context<Self>) {
        let bus = self.bus.clone();
        let subject = bus.subjects().ping(&self.id);
        let ask = async move {
            bus.request::<_, Pong>(subject, &Ping {}, Duration::from_secs(5))
                .await
        };
        ctx.spawn(ask.into_actor(self).map(|answer, act, _| match answer {
            Err(e @ (BusError::NoResponders { .. } | BusError::Denied { .. })) => {
                let reason = format!(
                    "NATS refused this subagent's own subjects ({e}): its credentials are not \
                     those of subagent {id}; start it with --id matching its seed file \
                     (subagent-{id}.nk), or add the id with `baton auth init DIR --subagent {id}` \
                     and reload nats-server",
                    id = act.id
                );
                error!("{reason}");
                if let Some(done) = act.done.take() {
                    let _ = done.send(Err(reason));
                }
            }
            Err(e) => debug!(error = %e, "self check inconclusive"),
            Ok(_) => debug!("own subjects reachable"),
        }));
    }
}
