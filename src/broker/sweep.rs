//! The orders journal's retention, carried out: records kept
//! `broker.order_retention` since their order ended for good are removed
//! (which ones: `retention.rs`, pure).
//!
//! Two ways, both bounded:
//!
//! - at takeover, the broker reads every record anyway
//!   (`recovery::recover`): those past their retention are not held, and
//!   removed here in the background;
//! - while active, a sweep every `order_retention / 10` (between 1s and
//!   10 minutes) reads the records last written before `now -
//!   order_retention`, oldest first, at most [`SWEEP_MOST`] of them (a
//!   record's last write is never older than its order's end, so no
//!   younger one can be due), and removes those due. Whether a step
//!   order's workflow order can still change is asked of the core, which
//!   holds every such workflow order.
//!
//! Known limit: records the sweep reads but may not remove (unfinished
//! orders waiting longer than the retention, step orders of a resumable
//! workflow order) count toward its 1,000; were there more than 1,000 of
//! them at the journal's old end, the sweep would not reach past them
//! until they end (the next takeover removes everything due regardless).
//!
//! A removal is a purge of the key's messages up to the revision read
//! (`Kv::remove_if`): a record written since stays, and no delete marker
//! is left to pile up. Removals are not fenced by the lease: an ended
//! record never changes again, whoever removes it.

use std::time::Duration;

use actix::prelude::*;
use tracing::{debug, info, warn};

use super::retention;
use super::Broker;
use crate::time::now_ms;

/// Most records one sweep reads.
const SWEEP_MOST: usize = 1_000;

/// The sweep's own state in the actor.
#[derive(Debug, Default)]
pub(super) struct Sweep {
    /// A sweep or a removal is under way: the next one waits.
    busy: bool,
}

impl Broker {
    /// Removes the records the takeover set aside, then sweeps
    /// periodically.
    pub(super) fn start_sweeps(&mut self, past: Vec<(String, u64)>, ctx: &mut Context<Self>) {
        if !past.is_empty() {
            info!(
                records = past.len(),
                "removing order records past broker.order_retention"
            );
            self.remove_records(past, ctx);
        }
        let every = (self.config.broker.order_retention / 10)
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        ctx.run_interval(every, |act, ctx| act.sweep(ctx));
    }

    /// Reads the oldest records and removes those past their retention.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        if self.sweep.busy || !self.acting() {
            return;
        }
        self.sweep.busy = true;
        let keep_ms = self.config.broker.order_retention.as_millis() as u64;
        let now = now_ms();
        let kv = self.orders_kv.clone();
        let read = async move {
            kv.written_before(now.saturating_sub(keep_ms), SWEEP_MOST)
                .await
        };
        ctx.spawn(read.into_actor(self).map(move |read, act, ctx| {
            act.sweep.busy = false;
            let records = match read {
                Ok(records) => records,
                Err(e) => return warn!(error = %e, "cannot read old order records; swept later"),
            };
            let book = &act.core.book;
            let open = |flow_id: &str| book.flow(flow_id).is_some_and(|f| !f.is_ended());
            let due: Vec<(String, u64)> = (records.into_iter())
                .filter(|(_, info, _)| retention::expired(info, now, keep_ms, open))
                .map(|(key, _, revision)| (key, revision))
                .collect();
            if !due.is_empty() {
                debug!(
                    records = due.len(),
                    "order records past broker.order_retention"
                );
                act.remove_records(due, ctx);
            }
        }));
    }

    /// Removes each record still at the revision given, one at a time.
    fn remove_records(&mut self, records: Vec<(String, u64)>, ctx: &mut Context<Self>) {
        self.sweep.busy = true;
        let kv = self.orders_kv.clone();
        let remove = async move {
            let mut removed = 0;
            for (key, revision) in records {
                match kv.remove_if(&key, revision).await {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        warn!(order = %key, error = %e, "order record not removed; swept later")
                    }
                }
            }
            removed
        };
        ctx.spawn(remove.into_actor(self).map(|removed, act, _| {
            act.sweep.busy = false;
            debug!(removed, "order records removed");
        }));
    }
}
