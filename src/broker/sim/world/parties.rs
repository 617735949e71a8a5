//! The subagents' and clients' side of the world: what a simulated
//! subagent does reaching the brokers, replies reaching it, and clients
//! submitting orders until each is answered.

use std::collections::BTreeMap;

use super::{Addr, Ev, World, REQUEST_TIMEOUT};
use crate::broker::core::{Input, Reply};
use crate::broker::sim::subagent::{Out, Report};
use crate::protocol::*;

impl World {
    pub(super) fn sub_answer(&mut self, s: usize, req: u64, out: Vec<Out>) {
        for o in out {
            match o {
                Out::Answer(answer) => self.send(Some(s), Ev::Answer { req, answer }),
                other => self.sub_out(s, vec![other]),
            }
        }
    }

    pub(super) fn sub_out(&mut self, s: usize, out: Vec<Out>) {
        let instance = self.subs[s].instance;
        let addr = Addr::Subagent { s, instance };
        for o in out {
            let input = match o {
                Out::Send(Report::Register(r)) => Input::Register(addr.clone(), r),
                Out::Send(Report::Result(r)) => Input::Result(addr.clone(), r),
                Out::Send(Report::Heartbeat(hb)) => Input::Heartbeat(hb),
                Out::Send(Report::Certificate(c)) => Input::Certificate(addr.clone(), c),
                Out::Started {
                    task_id,
                    order_id,
                    job,
                    ms,
                } => {
                    let name = self.subs[s].instance_id();
                    if job == "once" {
                        self.check.once.insert(order_id.clone());
                    }
                    self.check.started(self.now, &task_id, &order_id, &name);
                    let id = self.subs[s].id.clone();
                    self.check
                        .on_its_member(self.now, &self.journal, &order_id, &id);
                    self.note(format!("{name} starts {task_id} ({ms} ms)"));
                    self.after(
                        ms,
                        Ev::TaskEnd {
                            s,
                            instance,
                            task_id,
                        },
                    );
                    continue;
                }
                Out::Ended { task_id, failed } => {
                    let how = if failed { "failed" } else { "ok or killed" };
                    self.note(format!("s{s}#{instance} ends {task_id} ({how})"));
                    self.check.ended(self.now, &task_id, failed);
                    continue;
                }
                Out::Answer(_) => continue,
            };
            // a dead subagent's reaper reaches the brokers even so
            let cut_off = self.subs[s].alive.then_some(s);
            self.send(cut_off, Ev::ToBrokers(input));
        }
    }

    pub(super) fn sub_reply(&mut self, s: usize, instance: u64, reply: Reply) {
        if let Some(reaper) = self.reapers.get_mut(&(s, instance)) {
            match reply {
                Reply::Ack(ack) => reaper.acked(&ack.task_id),
                Reply::Certified(_) => reaper.certified(),
                _ => {}
            }
            return;
        }
        let sub = &mut self.subs[s];
        if !sub.alive || sub.instance != instance {
            return;
        }
        match reply {
            Reply::Registered(r) => sub.registered(r.epoch, self.now),
            Reply::Ack(ack) => sub.acked(&ack.task_id),
            _ => {}
        }
    }

    pub(super) fn client_next(&mut self, c: usize) {
        let faulty = self.faulty();
        let client = &mut self.clients[c];
        if client.in_flight.is_some() || client.next >= client.total || !faulty {
            client.total = client.total.min(client.next);
            return;
        }
        let job = match self.rng.below(100) {
            0..25 => "once",
            25..40 => "w",
            40..60 => "r",
            60..70 => "sp",
            _ => "j",
        };
        // most submits name a request id; without one, a submit sent again
        // is a new order
        let request_id = (!self.rng.percent(15)).then(|| format!("c{c}-{}", client.next));
        client.next += 1;
        client.in_flight = Some((request_id, job.to_string()));
        self.client_send(c);
    }

    pub(super) fn client_send(&mut self, c: usize) {
        let client = &mut self.clients[c];
        client.seq += 1;
        let seq = client.seq;
        let Some((request_id, job)) = client.in_flight.clone() else {
            return;
        };
        let submit = SubmitOrder {
            job,
            params: BTreeMap::new(),
            request_id,
            slot_ms: None,
        };
        self.send(
            None,
            Ev::ToBrokers(Input::Submit(Addr::Client { c, seq }, submit, None)),
        );
        self.after(REQUEST_TIMEOUT, Ev::ClientTimeout { c, seq });
    }

    pub(super) fn client_reply(&mut self, c: usize, seq: u64, reply: Reply) {
        if self.clients[c].seq != seq || self.clients[c].in_flight.is_none() {
            return;
        }
        match reply {
            Reply::Submitted(r) => {
                let job = self.clients[c].in_flight.take().map(|(_, job)| job);
                if job.as_deref() == Some("once") {
                    self.check.once.insert(r.order_id.clone());
                }
                self.note(format!("c{c} accepted {} ({})", r.order_id, r.job));
                if self.faulty() && self.rng.percent(20) {
                    // an operator cancels it, perhaps killing what runs
                    let cancel = Ev::Cancel {
                        order_id: r.order_id.clone(),
                        kill: self.rng.percent(50),
                    };
                    let after = self.rng.below(2_000);
                    self.after(after, cancel);
                }
                self.check.accepted.insert(r.order_id);
                let gap = self.rng.below(600);
                self.after(gap, Ev::ClientNext { c });
            }
            Reply::Error(e) if matches!(e.error.code, ErrorCode::Busy | ErrorCode::Unavailable) => {
                self.after(200, Ev::ClientTimeout { c, seq });
            }
            other => {
                let what = format!("t={} c{c}: submit answered {other:?}", self.now);
                self.check.violations.push(what);
                self.clients[c].in_flight = None;
            }
        }
    }
}

impl World {
    /// An operator's cancel was answered: one carried out (answered with
    /// the order) must end the order cancelled.
    pub(super) fn cancel_reply(&mut self, order_id: String, reply: Reply) {
        let answer = match &reply {
            Reply::Order(info) => format!("{:?}", info.state),
            other => format!("{other:?}"),
        };
        self.note(format!("cancel of {order_id} answered {answer}"));
        match reply {
            Reply::Order(_) => {
                self.check.cancelled.insert(order_id);
            }
            // too late (it ended), not now (being stored, not stored): the
            // operator learns it; nothing to hold the broker to
            Reply::Error(e)
                if matches!(
                    e.error.code,
                    ErrorCode::InvalidState | ErrorCode::Busy | ErrorCode::Unavailable
                ) => {}
            // ended long ago, and no longer held (a broker keeps the newest
            // `broker.keep_finished` ended orders)
            Reply::Error(e)
                if e.error.code == ErrorCode::NotFound
                    && (self.journal.get(&order_id)).is_some_and(|(i, _)| i.state.is_final()) => {}
            other => {
                let what = format!("t={} cancel of {order_id} answered {other:?}", self.now);
                self.check.violations.push(what);
            }
        }
    }
}

pub(super) fn index(subagent_id: &str) -> usize {
    subagent_id.trim_start_matches('s').parse().unwrap_or(0)
}
