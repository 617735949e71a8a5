//! The Scheduler lease record: the key `lease` in the `{p}_scheduler` KV
//! bucket, holding the grant or renewal the active broker sent last
//! ([`SchedulerLease`]). The Elector writes it before each `on` and `renew`
//! command and deletes it once the holder confirmed it is off or its
//! process is known gone; a broker taking over reads it
//! ([`read_predecessor`]) to know whose lease may still run
//! (`election::Predecessor`).
//!
//! The record is a [`SchedulerLease`]: holder, broker, epoch, and until
//! when by the broker's clock, grace included. Only brokers may write the
//! bucket.
//!
//! [`Ledger`] (pure) keeps the writes in order, one in flight at a time, so
//! a delete never overtakes the grant before it, and holds each command
//! until its record is written. A write that fails or times out (500 ms)
//! does not hold the command back (its lease is then sent shortened by the
//! wait, `elector/record.rs`, so the agent's lease still ends before the
//! broker's count): the role keeps working while JetStream is down,
//! and a successor reading an older record still hears the holder report
//! on in its heartbeats (fires stay idempotent per `job@slot` either way).

use std::collections::VecDeque;
use std::time::Duration;

use tracing::{info, warn};

use super::election::Predecessor;
use crate::bus::{Bus, BusError, Kv};
use crate::config::Config;
use crate::protocol::SchedulerLease;

/// The record's key in the bucket.
pub const KEY: &str = "lease";
/// How long opening the bucket, reading or writing the record may take.
pub const IO_TIMEOUT: Duration = Duration::from_millis(500);

/// Opens the bucket and reads what the previous broker recorded; the bucket
/// is `None` (no records kept) when it cannot be opened.
pub async fn read_predecessor(
    bus: &Bus,
    config: &Config,
) -> (Option<Kv<SchedulerLease>>, Predecessor) {
    let bucket = config.scheduler_bucket();
    let kv = match tokio::time::timeout(IO_TIMEOUT, bus.kv::<SchedulerLease>(&bucket)).await {
        Ok(Ok(kv)) => kv,
        failed => {
            let error = failed.map_or_else(|_| "timed out".to_string(), |r| error_of(r.err()));
            warn!(%bucket, %error, "cannot open the Scheduler lease bucket; waiting one lease before electing");
            return (None, Predecessor::Unknown);
        }
    };
    let predecessor = match tokio::time::timeout(IO_TIMEOUT, kv.get(KEY)).await {
        Ok(Ok(record)) => {
            match &record {
                Some(r) => {
                    info!(agent = %r.agent_id, broker = %r.broker_id, epoch = r.epoch, until_ms = r.until_ms, "previous Scheduler lease read")
                }
                None => info!("no Scheduler lease recorded"),
            }
            Predecessor::from(record)
        }
        failed => {
            let error = failed.map_or_else(|_| "timed out".to_string(), |r| error_of(r.err()));
            warn!(%error, "cannot read the Scheduler lease record; waiting one lease before electing");
            Predecessor::Unknown
        }
    };
    (Some(kv), predecessor)
}

fn error_of(e: Option<BusError>) -> String {
    e.map_or_else(String::new, |e| e.to_string())
}

/// Writes `record`, or deletes the key when it is `None`, within [`IO_TIMEOUT`].
pub async fn write(kv: Kv<SchedulerLease>, record: Option<SchedulerLease>) -> Result<(), String> {
    let write = async {
        match &record {
            Some(r) => kv.put(KEY, r).await.map(|_| ()),
            None => kv.delete(KEY).await,
        }
    };
    match tokio::time::timeout(IO_TIMEOUT, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("timed out after {IO_TIMEOUT:?}")),
    }
}

/// One write of the record (`None`: delete it) and what to do once it is done.
#[derive(Debug, PartialEq, Eq)]
pub struct Write<T> {
    pub record: Option<SchedulerLease>,
    pub then: Option<T>,
}

/// The writes waiting, in order; `T` is the command each one holds back.
#[derive(Debug)]
pub struct Ledger<T> {
    queue: VecDeque<Write<T>>,
    busy: bool,
    /// The agent the newest queued record names.
    holder: Option<String>,
}

impl<T> Ledger<T> {
    /// `holder`: whom the record names now (the inherited lease's holder).
    pub fn new(holder: Option<String>) -> Self {
        Ledger {
            queue: VecDeque::new(),
            busy: false,
            holder,
        }
    }

    /// Records a grant or renewal; `then` waits for it.
    pub fn grant(&mut self, record: SchedulerLease, then: T) {
        self.holder = Some(record.agent_id.clone());
        self.queue.push_back(Write {
            record: Some(record),
            then: Some(then),
        });
    }

    /// `agent`'s lease is over for the broker (off confirmed, process gone):
    /// the record goes if it names `agent`.
    pub fn ended(&mut self, agent: &str) {
        if self.holder.as_deref() == Some(agent) {
            self.holder = None;
            self.queue.push_back(Write {
                record: None,
                then: None,
            });
        }
    }

    /// The next write to start, unless one is in flight.
    pub fn next(&mut self) -> Option<Write<T>> {
        if self.busy {
            return None;
        }
        let write = self.queue.pop_front()?;
        self.busy = true;
        Some(write)
    }

    /// The write in flight is done (stored or failed).
    pub fn done(&mut self) {
        self.busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(agent: &str, until_ms: u64) -> SchedulerLease {
        SchedulerLease {
            agent_id: agent.into(),
            broker_id: "b".into(),
            epoch: 3,
            until_ms,
            granted_at_ms: 0,
        }
    }

    #[test]
    fn only_brokers_write_or_manage_the_record() {
        use crate::auth::{permissions, Role};
        for role in Role::ALL {
            let p = permissions(role, "baton", Some("sub-1"), "UKEY");
            let write = p.may_publish("$KV.baton_scheduler.lease");
            assert_eq!(write, role == Role::Broker, "{role}");
            let admin = p.may_publish("$JS.API.STREAM.DELETE.KV_baton_scheduler");
            assert_eq!(admin, role == Role::Broker, "{role}");
        }
    }

    #[test]
    fn writes_go_one_at_a_time_in_order_each_holding_its_command() {
        let mut ledger = Ledger::new(None);
        ledger.grant(lease("a", 10), "on a");
        ledger.ended("a");
        ledger.grant(lease("b", 20), "on b");
        let first = ledger.next().expect("a write");
        assert_eq!(first.record, Some(lease("a", 10)));
        assert_eq!(first.then, Some("on a"));
        assert_eq!(ledger.next(), None, "one in flight");
        ledger.done();
        assert_eq!(
            ledger.next(),
            Some(Write {
                record: None,
                then: None
            })
        );
        ledger.done();
        assert_eq!(ledger.next().and_then(|w| w.then), Some("on b"));
        ledger.done();
        assert_eq!(ledger.next(), None);
    }

    #[test]
    fn only_the_recorded_holder_ending_deletes_the_record() {
        let mut ledger: Ledger<()> = Ledger::new(Some("x".into()));
        ledger.ended("y");
        assert_eq!(ledger.next(), None);
        ledger.ended("x");
        assert_eq!(ledger.next().map(|w| w.record), Some(None));
        ledger.done();
        ledger.ended("x");
        assert_eq!(ledger.next(), None, "deleted once");
        ledger.grant(lease("a", 10), ());
        ledger.ended("b");
        ledger.done();
        assert!(ledger.next().is_some());
        ledger.done();
        assert_eq!(ledger.next(), None);
    }
}
