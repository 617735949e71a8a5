//! The broker's queries: an order's record (from memory, else from the
//! journal; a waiting one says why, a fired one which trigger) and the
//! cluster's status. They read the core's state and the
//! actor's own (the other brokers, the agents, the bus's counters); they
//! decide nothing.

use actix::prelude::*;
use std::time::Instant;

use super::core::Refusal;
use super::{inventory, placement, Broker};
use crate::bus::Request;
use crate::protocol::*;
use crate::time::now_ms;

/// The length of a whole order id (a UUID); a shorter one may be its start.
const FULL_ID: usize = 36;

impl Broker {
    pub(super) fn on_get_order(&mut self, req: Request<GetOrder>, ctx: &mut Context<Self>) {
        if !subjects::is_valid_token(&req.body.order_id) {
            let refusal = Refusal::NoOrder(format!("{:?}", req.body.order_id));
            return self.bus.reply(&req.replier, &refusal.reply());
        }
        let id = &req.body.order_id;
        let held = match self.core.book.info(id) {
            Some(info) => Some(info),
            // the start or end of an id (`watch` prints its end), if unique
            None if id.len() < FULL_ID => match &self.core.book.matching(id, 3)[..] {
                [one] => self.core.book.info(one),
                [] => None,
                several => {
                    let ids = several.join(", ");
                    let refusal = Refusal::Ambiguous {
                        prefix: id.clone(),
                        ids,
                    };
                    return self.bus.reply(&req.replier, &refusal.reply());
                }
            },
            None => None,
        };
        if let Some(mut info) = held {
            if info.reason.is_none() && info.state == OrderState::Accepted {
                info.reason = self.core.why_waiting(&info.order_id);
            }
            info.fired_by = self.fired_by(&info.job, info.slot_ms);
            return self.bus.reply(&req.replier, &info);
        }
        let kv = self.orders_kv.clone();
        let Request { body, replier, .. } = req;
        let read = async move { (kv.get(&body.order_id).await, body.order_id) };
        ctx.spawn(read.into_actor(self).map(move |(read, order_id), act, _| {
            let refusal = match read {
                Ok(Some(mut info)) => {
                    info.fired_by = act.fired_by(&info.job, info.slot_ms);
                    return act.bus.reply(&replier, &info);
                }
                Ok(None) => Refusal::NoOrder(order_id),
                Err(e) => Refusal::Unreadable(e.to_string()),
            };
            act.bus.reply(&replier, &refusal.reply())
        }));
    }

    /// Which deployed trigger of `job` (or of the workflow so named) has
    /// the slot an order fired; `None` for an order no Scheduler fired.
    fn fired_by(&self, job: &str, slot_ms: Option<u64>) -> Option<FiredBy> {
        let slot_ms = slot_ms?;
        let (key, triggers) = match self.core.workflows.get(job) {
            Some(workflow) => (crate::triggers::workflow_key(job), &workflow.triggers),
            None => (job.to_string(), &self.core.jobs.get(job)?.triggers),
        };
        TriggerSpec::fired(triggers, &key, slot_ms)
    }

    pub(super) fn on_status(&mut self, req: Request<StatusRequest>, ctx: &mut Context<Self>) {
        let mut clusters: Vec<ClusterStatus> = self
            .core
            .clusters
            .values()
            .map(|c| {
                let mut members: Vec<ClusterMemberStatus> =
                    placement::members(Some(c), self.core.registry.iter())
                        .into_iter()
                        .map(|m| ClusterMemberStatus {
                            subagent_id: m.subagent.id.clone(),
                            priority: m.priority,
                            state: m.subagent.state(),
                        })
                        .collect();
                members.sort_by(|a, b| {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.subagent_id.cmp(&b.subagent_id))
                });
                ClusterStatus {
                    name: c.name.clone(),
                    mode: c.mode,
                    members,
                }
            })
            .collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let mut reply = StatusReply {
            protocol: PROTOCOL_VERSION,
            broker_id: self.id.clone(),
            broker_started_at_ms: self.started_at_ms,
            subagents: self.subagents_status(),
            jobs: self.job_names(),
            workflows: {
                let mut names: Vec<String> = self.core.workflows.keys().cloned().collect();
                names.sort();
                names
            },
            paused: (self.core.pauses.iter())
                .filter(|(_, s)| s.off)
                .map(|(name, s)| (name.clone(), s.clone()))
                .collect(),
            clusters,
            orders: self.core.book.counts(),
            brokers: self.peers.brokers(BrokerStatus {
                id: self.id.clone(),
                role: BrokerRole::Active,
                epoch: self.core.epoch,
                precedence: self.config.broker.precedence,
                lease_age_ms: self.peers.lease_age_ms(),
                heartbeat_age_ms: 0,
            }),
            agents: Vec::new(),
            not_firing: None,
            malformed_messages: self.bus.stats().malformed(),
            refused_messages: self.bus.stats().refused(),
            unstored_audit_records: self.bus.stats().unstored(),
        };
        let agents = self.elector.send(super::elector::AgentsNow);
        ctx.spawn(agents.into_actor(self).map(move |agents, act, _| {
            let (agents, why) = agents.unwrap_or_default();
            reply.agents = agents;
            reply.not_firing = why;
            act.bus.reply(&req.replier, &reply);
        }));
    }

    pub(super) fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.core.jobs.keys().cloned().collect();
        names.sort();
        names
    }

    /// The registry's subagents, each with the operator's last switch of it.
    fn subagents_status(&self) -> Vec<SubagentStatus> {
        let mut subagents = self.core.registry.status(Instant::now());
        for s in &mut subagents {
            s.switched = self.core.switches.get(&s.id).cloned();
        }
        subagents
    }

    /// `baton job list`.
    pub(super) fn on_list_jobs(&self, req: Request<ListJobs>) {
        let list = inventory::job_list(&self.core, now_ms());
        self.bus.reply(&req.replier, &list);
    }

    /// `baton job show NAME`.
    pub(super) fn on_get_job(&self, req: Request<GetJob>) {
        match inventory::job_info(&self.core, &req.body, now_ms()) {
            Some(info) => self.bus.reply(&req.replier, &info),
            None => {
                let refusal = self.core.unknown_job(req.body.name.clone());
                self.bus.reply(&req.replier, &refusal.reply())
            }
        }
    }

    /// `baton order list`: the book's list, each waiting order saying why.
    pub(super) fn on_list(&self, req: Request<ListOrders>) {
        let mut list = self.core.book.list(&req.body);
        for o in &mut list.orders {
            if o.reason.is_none() && o.state == OrderState::Accepted {
                o.reason = self.core.why_waiting(&o.order_id);
            }
            o.fired_by = self.fired_by(&o.job, o.slot_ms);
        }
        self.bus.reply(&req.replier, &list);
    }
}
