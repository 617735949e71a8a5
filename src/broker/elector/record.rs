//! The Elector's side of the Scheduler lease record (`scheduler_lease.rs`):
//! each grant written before its command is sent, the record deleted when
//! its holder is gone, and the probes of a lease's holder inherited from
//! the previous broker.

use std::time::Instant;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::{Command, Elector, Grant, ANSWER_TIMEOUT};
use crate::broker::election::Request as Ask;
use crate::broker::probe::{self, Verdict};
use crate::broker::scheduler_lease;
use crate::bus::BusError;
use crate::protocol::*;
use crate::time::now_ms;

impl Elector {
    /// Records the lease `command` grants its agent, then sends it.
    pub(super) fn grant(&mut self, command: Command, ctx: &mut Context<Self>) {
        let now = now_ms();
        let record = SchedulerLease {
            agent_id: command.agent.clone(),
            broker_id: self.broker_id.clone(),
            epoch: self.epoch,
            until_ms: self
                .election
                .lease_expires_at_ms(&command.agent)
                .unwrap_or(now),
            granted_at_ms: now,
        };
        let decided = Instant::now();
        self.ledger.grant(record, Grant { command, decided });
        self.write_record(ctx);
    }

    /// `agent`'s process is gone: its lease and its record go.
    pub(super) fn lost(&mut self, agent: &str, ctx: &mut Context<Self>) {
        self.election.gone(agent);
        self.ledger.ended(agent);
        self.write_record(ctx);
    }

    /// Starts the next write of the record; the command it holds back is
    /// sent once it is done, stored or not.
    pub(super) fn write_record(&mut self, ctx: &mut Context<Self>) {
        let Some(write) = self.ledger.next() else {
            return;
        };
        let kv = self.record.clone();
        let stored = async move {
            match kv {
                Some(kv) => scheduler_lease::write(kv, write.record).await,
                None => Ok(()),
            }
        };
        let then = write.then;
        ctx.spawn(stored.into_actor(self).map(move |stored, act, ctx| {
            act.ledger.done();
            match stored {
                Err(error) if !act.record_failing => {
                    act.record_failing = true;
                    warn!(%error, "cannot record the Scheduler lease; a broker taking over may wait for it or miss it");
                }
                Err(_) => {}
                Ok(()) if act.record_failing => {
                    act.record_failing = false;
                    info!("the Scheduler lease is recorded again");
                }
                Ok(()) => {}
            }
            if let Some(Grant {
                mut command,
                decided,
            }) = then
            {
                // the agent counts its lease from receipt: what the wait took is taken off
                let waited = decided.elapsed().as_millis() as u64;
                command.lease_ms = command.lease_ms.saturating_sub(waited).max(1);
                act.send(command, ctx);
            }
            act.write_record(ctx);
        }));
    }

    /// Asks the holder of the lease inherited from the previous broker,
    /// while it has not been heard from and its lease runs, whether it
    /// lives; judged as [`Elector::probe`]'s answers are, with our start as
    /// when it was last heard from.
    pub(super) fn probe_holder(
        &mut self,
        id: String,
        first: Option<Instant>,
        ctx: &mut Context<Self>,
    ) {
        let heard = self.book.get(&id).is_some();
        if heard || self.election.lease_expires_at_ms(&id).is_none() {
            return;
        }
        let bus = self.bus.clone();
        let subject = bus.subjects().agent_ping(&id);
        let ping = async move {
            bus.request::<_, AgentPong>(subject, &Ping {}, ANSWER_TIMEOUT)
                .await
        };
        let again = self.config.agent.heartbeat_interval;
        ctx.spawn(ping.into_actor(self).map(move |reply, act, ctx| {
            let verdict = match reply {
                Ok(_) => {
                    debug!(agent = %id, "inherited Scheduler answers; its heartbeats follow");
                    return;
                }
                Err(BusError::NoResponders { .. }) => {
                    let reconnected = act.bus.stats().reconnected_at_ms();
                    let guard = act.config.scheduler.agent_timeout;
                    probe::judge(first, act.started, reconnected, now_ms(), guard)
                }
                Err(_) => Verdict::NotProof,
            };
            match verdict {
                Verdict::Gone if act.book.get(&id).is_none() => {
                    warn!(agent = %id, "inherited Scheduler's process gone (no responders)");
                    act.lost(&id, ctx);
                    act.announce(&id, AgentRole::Spare, "lost: process gone");
                    act.round(Ask::None, None, ctx);
                }
                Verdict::Gone | Verdict::Alive => {}
                Verdict::AskAgain => {
                    let now = Instant::now();
                    ctx.run_later(again, move |act, ctx| act.probe_holder(id, Some(now), ctx));
                }
                Verdict::NotProof => {
                    ctx.run_later(again, move |act, ctx| act.probe_holder(id, None, ctx));
                }
            }
        }));
    }
}
