//! Whom the subagent obeys: commands and broker heartbeats signed by a broker
//! (never an unsigned or forged epoch), of the newest epoch seen; and a check
//! at start that its own subjects reach it (credentials of another subagent
//! id would leave it registered but deaf).

use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt as _;
use tracing::{debug, error, warn};

use super::admission::{self, Refusal};
use super::pace::Pace;
use super::{Beat, Subagent};
use crate::auth::Role;
use crate::bus::{BusError, Received, Replier, SenderProof};
use crate::protocol::*;

/// Whether a broker heartbeat can be passed over without checking its
/// signature (an ed25519 check, about 30 µs): one of the newest epoch seen,
/// while the last checked contact is younger than a tenth of the orphan
/// timeout (at most 1 s). Checking it would only move the orphan timer by
/// less than that, and a timer that is older than it could be only kills
/// orphaned tasks sooner, never later. A heartbeat of another epoch is
/// always checked, so a new broker is adopted at once. With a thousand
/// idle subagents this is most of their CPU (the broker beats 4 times a
/// second).
fn heard_recently(
    since_contact: Duration,
    orphan_timeout: Duration,
    epoch: u64,
    fence: &super::epoch::EpochFence,
) -> bool {
    let check_every = (orphan_timeout / 10).min(Duration::from_secs(1));
    epoch == fence.newest() && since_contact < check_every
}

impl StreamHandler<Beat> for Subagent {
    /// Idle, it stops listening once it heard the active broker: its next
    /// tick listens again.
    fn handle(&mut self, Beat(heartbeat): Beat, ctx: &mut Context<Self>) {
        let heard = self.on_broker_heartbeat(heartbeat);
        if heard && !Pace::listens_always(self.work()) {
            if let Some(listening) = self.listening.take() {
                ctx.cancel_future(listening);
            }
        }
    }

    /// The subscription ended with the connection: the next tick opens
    /// another (the other subscriptions ending stop the subagent).
    fn finished(&mut self, _: &mut Context<Self>) {
        self.listening = None;
    }
}

impl Subagent {
    /// An active broker's heartbeat raises the epoch and is broker contact,
    /// unless a newer broker has been seen since. A standby's is neither: it
    /// acknowledges no results. True when it heard the newest active broker
    /// (checked, or passed over as [`heard_recently`]).
    fn on_broker_heartbeat(&mut self, received: Received<BrokerHeartbeat>) -> bool {
        let hb = received.body;
        if hb.role != BrokerRole::Active {
            return false;
        }
        let since = self.last_broker_contact.elapsed();
        if heard_recently(
            since,
            self.config.subagent.orphan_timeout,
            hb.epoch,
            &self.fence,
        ) {
            // the signature is not checked: nothing would change
            return true;
        }
        if !received.sender.is(Role::Broker) {
            // never adopt an epoch a broker did not sign: forged heartbeats
            // with a huge epoch would make it refuse the real broker
            if self.bus.stats().count_refused() {
                let sender = received.sender.describe();
                let refused = self.bus.stats().refused();
                warn!(subject = %received.subject, %sender, epoch = hb.epoch, refused, "broker heartbeat not signed by a broker ignored (logged at the 1st, 2nd, 4th, 8th... refusal)");
            }
            return false;
        }
        if self.fence.admit(hb.epoch).is_err() {
            debug!(broker = %hb.broker_id, epoch = hb.epoch, newest = self.fence.newest(), "heartbeat from a deposed broker ignored");
            return false;
        }
        self.heard_broker();
        true
    }

    /// Subscribes to the broker's heartbeats, unless it listens already
    /// (`pace.rs`: a busy subagent listens all the time, an idle one from
    /// each tick until it hears the active broker).
    pub(super) fn listen(&mut self, ctx: &mut Context<Self>) {
        if self.listening.is_some() || self.subscribing {
            return;
        }
        self.subscribing = true;
        let bus = self.bus.clone();
        let subject = bus.subjects().broker_heartbeat();
        let subscribe = async move { bus.listen::<BrokerHeartbeat>(subject).await };
        ctx.spawn(subscribe.into_actor(self).map(|subscribed, act, ctx| {
            act.subscribing = false;
            match subscribed {
                Ok(beats) => act.listening = Some(ctx.add_stream(beats.map(Beat))),
                Err(e) => {
                    warn!(error = %e, "cannot listen to the broker's heartbeats; trying again at the next tick")
                }
            }
        }));
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

#[cfg(test)]
mod tests {
    use super::super::epoch::EpochFence;
    use super::*;

    #[test]
    fn only_a_heartbeat_of_the_newest_epoch_soon_after_a_checked_one_goes_unchecked() {
        let mut fence = EpochFence::default();
        fence.observe(7);
        let orphan = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert!(heard_recently(ms(300), orphan, 7, &fence));
        assert!(!heard_recently(ms(1000), orphan, 7, &fence), "1 s at most");
        assert!(!heard_recently(ms(300), orphan, 8, &fence), "a new broker");
        assert!(!heard_recently(ms(300), orphan, 6, &fence), "a deposed one");
        // a short orphan timeout checks more often: a tenth of it
        let short = Duration::from_secs(3);
        assert!(heard_recently(ms(250), short, 7, &fence));
        assert!(!heard_recently(ms(300), short, 7, &fence));
    }
}
