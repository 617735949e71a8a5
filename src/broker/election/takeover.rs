//! What a broker taking over knows of the Scheduler lease its predecessor
//! granted, and the [`ElectionState`] it starts from.
//!
//! Every grant and renewal is recorded in JetStream before its command is
//! sent (a [`SchedulerLease`]), and the record is deleted once its holder
//! confirmed giving the role up or its process is known gone. So a new
//! broker that reads the record knows every lease that may still run:
//!
//! | read | quiet time | leases it starts with |
//! |---|---|---|
//! | failed ([`Predecessor::Unknown`]) | one lease and grace | none: it grants nothing until any lease has run out |
//! | no record, or one run out by our clock | `settle` | none |
//! | a live record | `settle` | the holder's, until the recorded end (at most one lease and grace from now) |
//!
//! With a record read, the connection timeout of case 1 counts as passed:
//! the record already says whether an agent may hold the role. The quiet
//! time `settle` only lets the agents' first heartbeats arrive, so the
//! choice is made among all of them and a Scheduler reporting on is seen.
//! The inherited lease holds back everyone but its holder, as any lease
//! does: a holder reporting on is renewed, one reporting off is turned on
//! again, and a holder proven gone ([`ElectionState::gone`]) frees the role
//! at once.

use std::time::Duration;

use super::{lease_total, millis, ElectionConfig, ElectionState};
use crate::protocol::SchedulerLease;

/// What a broker taking over read of its predecessor's Scheduler lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Predecessor {
    /// The record could not be read: any lease may still run.
    Unknown,
    /// No lease recorded: none granted, or its holder gave it up or is gone.
    NoLease,
    /// The last grant or renewal recorded.
    Granted { agent: String, until_ms: u64 },
}

impl From<Option<SchedulerLease>> for Predecessor {
    fn from(record: Option<SchedulerLease>) -> Self {
        match record {
            None => Predecessor::NoLease,
            Some(r) => Predecessor::Granted {
                agent: r.agent_id,
                until_ms: r.until_ms,
            },
        }
    }
}

impl ElectionState {
    /// A broker taking over at `now_ms`, knowing `predecessor`; `settle` is
    /// how long it waits for the agents' heartbeats before turning anyone
    /// on (see the module docs).
    pub fn taking_over(
        now_ms: u64,
        config: &ElectionConfig,
        predecessor: &Predecessor,
        settle: Duration,
    ) -> Self {
        let mut state = ElectionState::new(now_ms, config);
        let longest = now_ms.saturating_add(lease_total(config));
        let inherited = match predecessor {
            Predecessor::Unknown => return state,
            Predecessor::NoLease => None,
            // a clock ahead of ours cannot make us wait longer than not knowing
            Predecessor::Granted { agent, until_ms } => {
                Some((agent, (*until_ms).min(longest))).filter(|(_, until)| *until > now_ms)
            }
        };
        state.quiet_until_ms = now_ms.saturating_add(millis(settle)).min(longest);
        let waited = now_ms.saturating_sub(millis(config.connection_timeout));
        state.no_scheduler_since_ms = Some(waited);
        if let Some((agent, until_ms)) = inherited {
            state.leases.insert(agent.clone(), until_ms);
        }
        state
    }

    /// Until when the broker must not turn anyone on: a new broker's quiet time.
    pub fn quiet_until_ms(&self) -> u64 {
        self.quiet_until_ms
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{a, on, renewed, turned_off, turned_on, T0};
    use super::super::{decide, AgentView, Request};
    use super::*;
    use crate::protocol::HealthLevel::*;

    const SETTLE: Duration = Duration::from_millis(500);

    fn cfg() -> ElectionConfig {
        ElectionConfig::default()
    }

    fn run(s: &mut ElectionState, agents: &[AgentView], now: u64) -> Vec<super::super::Action> {
        decide(&cfg(), s, agents, &Request::None, now)
    }

    fn granted(agent: &str, until_ms: u64) -> Predecessor {
        Predecessor::Granted {
            agent: agent.into(),
            until_ms,
        }
    }

    /// The first time from `from` (every 100 ms) anyone is turned on, and who.
    fn first_turn_on(s: &mut ElectionState, agents: &[AgentView], from: u64) -> (u64, String) {
        (from..from + 60_000)
            .step_by(100)
            .find_map(|t| {
                turned_on(&run(s, agents, t))
                    .first()
                    .map(|x| (t, x.to_string()))
            })
            .expect("someone turned on")
    }

    #[test]
    fn unreadable_record_waits_one_lease_and_grace_as_before() {
        let mut s = ElectionState::taking_over(T0, &cfg(), &Predecessor::Unknown, SETTLE);
        assert_eq!(s, ElectionState::new(T0, &cfg()));
        let agents = [a("a", Good), a("b", Excellent)];
        assert_eq!(
            first_turn_on(&mut s, &agents, T0),
            (T0 + 12_000, "b".into())
        );
    }

    #[test]
    fn no_lease_recorded_elects_once_the_heartbeats_settled_without_the_connection_timeout() {
        let agents = [a("a", Good), a("b", Excellent)];
        for known in [
            Predecessor::NoLease,
            granted("x", T0),
            granted("x", T0 - 5_000),
        ] {
            let mut s = ElectionState::taking_over(T0, &cfg(), &known, SETTLE);
            assert_eq!(s.lease_expires_at_ms("x"), None, "{known:?}");
            // the choice waits for the settle time, then takes the best
            assert!(run(&mut s, &agents[..1], T0).is_empty());
            assert_eq!(s.pending(), None);
            assert_eq!(
                first_turn_on(&mut s, &agents, T0 + 100),
                (T0 + 500, "b".into())
            );
        }
    }

    #[test]
    fn a_live_lease_holds_back_everyone_else_until_it_runs_out() {
        let mut s = ElectionState::taking_over(T0, &cfg(), &granted("x", T0 + 4_000), SETTLE);
        assert_eq!(s.lease_expires_at_ms("x"), Some(T0 + 4_000));
        let spares = [a("a", Good), a("b", Excellent)];
        let acts = run(&mut s, &spares, T0 + 600);
        assert_eq!(turned_off(&acts), ["x"], "revoked, in case it lives");
        assert_eq!(
            first_turn_on(&mut s, &spares, T0 + 700),
            (T0 + 4_000, "b".into())
        );
    }

    #[test]
    fn a_live_holder_proven_gone_frees_the_role_at_once() {
        let mut s = ElectionState::taking_over(T0, &cfg(), &granted("x", T0 + 6_000), SETTLE);
        let spares = [a("a", Good), a("b", Excellent)];
        assert!(turned_on(&run(&mut s, &spares, T0 + 300)).is_empty());
        s.gone("x");
        // still within the settle time: the choice waits for it
        assert!(turned_on(&run(&mut s, &spares, T0 + 400)).is_empty());
        assert_eq!(
            first_turn_on(&mut s, &spares, T0 + 500),
            (T0 + 500, "b".into())
        );
        // gone after the settle time: at the next round
        let mut s = ElectionState::taking_over(T0, &cfg(), &granted("x", T0 + 6_000), SETTLE);
        assert!(turned_on(&run(&mut s, &spares, T0 + 1_000)).is_empty());
        s.gone("x");
        assert_eq!(turned_on(&run(&mut s, &spares, T0 + 1_100)), ["b"]);
    }

    #[test]
    fn a_live_holder_reporting_on_stays_the_scheduler() {
        let mut s = ElectionState::taking_over(T0, &cfg(), &granted("x", T0 + 6_000), SETTLE);
        let agents = [on(a("x", Bad)), a("b", Excellent)];
        // renewed at once, quiet time or not: a fresh lease of our own
        assert_eq!(renewed(&run(&mut s, &agents, T0 + 100)), ["x"]);
        assert_eq!(s.lease_expires_at_ms("x"), Some(T0 + 12_100));
        for t in (T0 + 200..T0 + 30_000).step_by(500) {
            let acts = run(&mut s, &agents, t);
            assert!(turned_on(&acts).is_empty() && turned_off(&acts).is_empty());
        }
    }

    #[test]
    fn a_live_holder_reporting_off_is_given_the_role_again_after_the_settle_time() {
        let mut s = ElectionState::taking_over(T0, &cfg(), &granted("x", T0 + 6_000), SETTLE);
        let agents = [a("x", Bad), a("b", Excellent)];
        assert!(run(&mut s, &agents, T0 + 100).is_empty());
        assert_eq!(
            first_turn_on(&mut s, &agents, T0 + 200),
            (T0 + 500, "x".into())
        );
    }

    #[test]
    fn a_record_from_a_clock_far_ahead_waits_no_longer_than_not_knowing() {
        let far = T0 + 3_600_000;
        let s = ElectionState::taking_over(T0, &cfg(), &granted("x", far), SETTLE);
        assert_eq!(s.lease_expires_at_ms("x"), Some(T0 + 12_000));
        let s = ElectionState::taking_over(T0, &cfg(), &Predecessor::NoLease, SETTLE * 100);
        assert_eq!(s.quiet_until_ms(), T0 + 12_000);
    }

    #[test]
    fn the_record_decodes_into_what_the_broker_knows() {
        assert_eq!(Predecessor::from(None), Predecessor::NoLease);
        let record = SchedulerLease {
            agent_id: "x".into(),
            broker_id: "b1".into(),
            epoch: 7,
            until_ms: 42,
            granted_at_ms: 30,
        };
        assert_eq!(Predecessor::from(Some(record)), granted("x", 42));
    }
}
