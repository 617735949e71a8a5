//! Whom the subagent obeys: commands and broker heartbeats signed by a broker
//! (never an unsigned or forged epoch), of the newest epoch seen; and a check
//! at start that its own subjects reach it (credentials of another subagent
//! id would leave it registered but deaf).

use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, error, warn};

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

    /// Whether a broker command of `epoch` may be obeyed; a command from an
    /// older broker than the newest seen is answered with `invalid_state`
    /// here and must change nothing. Epoch 0 (unknown: an old broker or a
    /// tool) is always admitted.
    pub(super) fn admit(
        &mut self,
        command: &'static str,
        epoch: u64,
        sender: &SenderProof,
        replier: &Replier,
    ) -> bool {
        if !sender.is(Role::Broker) {
            self.bus.stats().count_refused();
            let sender = sender.describe();
            // every refused command is logged: commands are not a flood
            warn!(subagent = %self.id, command, %sender, "command not signed by a broker refused");
            let error = ErrorReply::new(
                ErrorCode::Forbidden,
                format!("{command} refused: not signed by a broker (sender: {sender})"),
            );
            self.bus.reply(replier, &error);
            return false;
        }
        let Err(newest) = self.fence.admit(epoch) else {
            return true;
        };
        warn!(subagent = %self.id, command, epoch, newest, "command from a stale broker epoch refused");
        let error = ErrorReply::new(
            ErrorCode::InvalidState,
            format!("stale broker epoch {epoch}: the newest active broker has epoch {newest}"),
        );
        self.bus.reply(replier, &error);
        false
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
