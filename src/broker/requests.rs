//! The broker's client-facing requests: submit, deploy, order lookup,
//! status and subagent switch-over, and the jobs and clusters buckets.
//!
//! Size: over the ~500-line mark since before the security work; it goes
//! with the broker's split in issue 19.

use actix::prelude::*;
use std::time::Instant;
use tracing::{info, warn};

use super::audit::Audited;
use super::{placement, Broker};
use crate::bus::{BusError, KvChange, Request};
use crate::jobs;
use crate::protocol::*;
use crate::workflow::params::check_steps;
use crate::workflow::{validate_workflow, validate_workflows};

impl Broker {
    pub(super) fn on_submit(&mut self, req: Request<SubmitOrder>, ctx: &mut Context<Self>) {
        match self.core.workflows.get(&req.body.job).cloned() {
            Some(spec) => self.on_submit_workflow(spec, req.body, req.replier, ctx),
            None => self.step(super::core::Input::Submit(req.replier, req.body), ctx),
        }
    }

    pub(super) fn on_deploy(&mut self, req: Request<DeployRequest>, ctx: &mut Context<Self>) {
        let audited = Audited::deploy(&req.body, req.sender.get());
        if let Err(message) = self.check_deploy(&req.body) {
            return self.refuse(&req.replier, &audited, ErrorCode::InvalidJob, message);
        }
        let DeployRequest {
            dry_run,
            jobs,
            clusters,
            workflows,
        } = req.body;
        if dry_run {
            let reply = DeployReply {
                deployed: jobs.into_iter().map(|j| j.name).collect(),
                clusters: clusters.into_iter().map(|c| c.name).collect(),
                workflows: workflows.into_iter().map(|w| w.name).collect(),
                dry_run: true,
            };
            return self.bus.reply(&req.replier, &reply);
        }
        let (jobs_kv, clusters_kv) = (self.jobs_kv.clone(), self.clusters_kv.clone());
        let workflows_kv = self.workflows_kv.clone();
        let replier = req.replier;
        let write = async move {
            for cluster in &clusters {
                clusters_kv.put(&cluster.name, cluster).await?;
            }
            for spec in &jobs {
                jobs_kv.put(&spec.name, spec).await?;
            }
            for spec in &workflows {
                workflows_kv.put(&spec.name, spec).await?;
            }
            Ok::<_, BusError>((jobs, clusters, workflows))
        };
        ctx.spawn(
            write
                .into_actor(self)
                .map(move |written, act, ctx| match written {
                    Ok((jobs, clusters, workflows)) => {
                        let deployed: Vec<String> = jobs.iter().map(|s| s.name.clone()).collect();
                        let cluster_names: Vec<String> =
                            clusters.iter().map(|c| c.name.clone()).collect();
                        let workflow_names: Vec<String> =
                            workflows.iter().map(|w| w.name.clone()).collect();
                        info!(jobs = ?deployed, clusters = ?cluster_names, workflows = ?workflow_names, "deployed");
                        for spec in workflows {
                            act.core.workflows.insert(spec.name.clone(), spec);
                        }
                        for cluster in clusters {
                            act.core.clusters.insert(cluster.name.clone(), cluster);
                        }
                        for spec in jobs {
                            act.core.jobs.insert(spec.name.clone(), spec);
                        }
                        let reply = DeployReply {
                            deployed,
                            clusters: cluster_names,
                            workflows: workflow_names,
                            dry_run: false,
                        };
                        act.audit(&audited, Ok(()));
                        act.bus.reply(&replier, &reply);
                        act.dispatch(ctx);
                    }
                    Err(e) => act.refuse(
                        &replier,
                        &audited,
                        ErrorCode::Unavailable,
                        format!("the deployment could not be stored in JetStream: {e}"),
                    ),
                }),
        );
    }

    /// Whether `req` may be deployed over what is deployed (else why not).
    fn check_deploy(&self, req: &DeployRequest) -> Result<(), String> {
        let DeployRequest {
            jobs,
            clusters,
            workflows,
            ..
        } = req;
        if jobs.is_empty() && clusters.is_empty() && workflows.is_empty() {
            return Err("nothing to deploy: no jobs, clusters or workflows".into());
        }
        for cluster in clusters {
            jobs::validate_cluster(cluster).map_err(|e| e.to_string())?;
        }
        for spec in jobs {
            jobs::validate_job(spec).map_err(|e| e.to_string())?;
            if let Some(cluster) = &spec.cluster {
                let known = self.core.clusters.contains_key(cluster)
                    || clusters.iter().any(|c| &c.name == cluster);
                if !known {
                    return Err(format!(
                        "job '{}': field 'cluster': no subagent cluster '{cluster}' is deployed; define it in a [[cluster]] table",
                        spec.name
                    ));
                }
            }
        }
        self.check_workflows(jobs, workflows)
    }

    pub(super) fn on_job_change(&mut self, change: KvChange<JobSpec>) {
        match change.value {
            Some(spec) if jobs::validate_job(&spec).is_ok() && spec.name == change.key => {
                self.core.jobs.insert(change.key, spec);
            }
            Some(_) => {
                warn!(job = %change.key, "invalid job definition in the jobs bucket ignored")
            }
            None => {
                self.core.jobs.remove(&change.key);
            }
        }
    }

    /// Deploy-time checks of workflows against the jobs deployed and being
    /// deployed: each step names a job whose parameters fit it, and no name
    /// is both a job and a workflow.
    fn check_workflows(&self, jobs: &[JobSpec], workflows: &[WorkflowSpec]) -> Result<(), String> {
        let known =
            |name: &str| self.core.jobs.contains_key(name) || jobs.iter().any(|j| j.name == name);
        validate_workflows(workflows, &known).map_err(|e| e.to_string())?;
        if let Some(w) = workflows.iter().find(|w| known(&w.name)) {
            return Err(format!(
                "workflow '{}': a job has this name; `baton submit {0}` must name one thing, so rename one of them",
                w.name
            ));
        }
        let being = |name: &str| workflows.iter().any(|w| w.name == name);
        if let Some(j) = jobs
            .iter()
            .find(|j| self.core.workflows.contains_key(&j.name) && !being(&j.name))
        {
            return Err(format!(
                "job '{}': a workflow has this name; `baton submit {0}` must name one thing, so rename one of them",
                j.name
            ));
        }
        // each step's own params and the ones its job requires, given the
        // jobs; a trigger fires with the workflow's defaults alone
        let job_of = |name: &str| {
            jobs.iter()
                .find(|j| j.name == name)
                .or_else(|| self.core.jobs.get(name))
                .cloned()
        };
        for w in workflows {
            check_steps(w, &job_of).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub(super) fn on_workflow_change(&mut self, change: KvChange<WorkflowSpec>) {
        match change.value {
            // as at a takeover: a step whose job is gone fails when dispatched
            Some(spec)
                if spec.name == change.key && validate_workflow(&spec, &|_| true).is_ok() =>
            {
                self.core.workflows.insert(change.key, spec);
            }
            Some(_) => {
                warn!(workflow = %change.key, "invalid workflow in the workflows bucket ignored")
            }
            None => {
                self.core.workflows.remove(&change.key);
            }
        }
    }

    pub(super) fn on_cluster_change(&mut self, change: KvChange<ClusterSpec>) {
        match change.value {
            Some(spec) if jobs::validate_cluster(&spec).is_ok() && spec.name == change.key => {
                self.core.clusters.insert(change.key, spec);
            }
            Some(_) => {
                warn!(cluster = %change.key, "invalid cluster in the clusters bucket ignored")
            }
            None => {
                self.core.clusters.remove(&change.key);
            }
        }
    }

    pub(super) fn on_get_order(&mut self, req: Request<GetOrder>, ctx: &mut Context<Self>) {
        if let Some(order) = self.core.book.get(&req.body.order_id) {
            return self.bus.reply(&req.replier, &order.info());
        }
        if let Some(flow) = self.core.flows.get(&req.body.order_id) {
            return self.bus.reply(&req.replier, &flow.info());
        }
        if !subjects::is_valid_token(&req.body.order_id) {
            let message = format!("no order {:?}", req.body.order_id);
            return self.error(&req.replier, ErrorCode::NotFound, message);
        }
        let kv = self.orders_kv.clone();
        let bus = self.bus.clone();
        let Request { body, replier, .. } = req;
        ctx.spawn(
            async move {
                match kv.get(&body.order_id).await {
                    Ok(Some(info)) => bus.reply(&replier, &info),
                    Ok(None) => bus.reply(
                        &replier,
                        &ErrorReply::new(
                            ErrorCode::NotFound,
                            format!("no order {}", body.order_id),
                        ),
                    ),
                    Err(e) => bus.reply(
                        &replier,
                        &ErrorReply::new(ErrorCode::Unavailable, e.to_string()),
                    ),
                }
            }
            .into_actor(self),
        );
    }

    /// Cancels an order: a waiting one at once, a running one when its task
    /// ends (now, with `kill`). Idempotent; answers with the order.
    pub(super) fn on_cancel(&mut self, req: Request<CancelOrder>, ctx: &mut Context<Self>) {
        let audited = Audited::cancel(&req.body, req.sender.get());
        let CancelOrder { order_id, kill } = req.body;
        if self.is_flow(&order_id) {
            return self.cancel_flow((&req.replier, &audited), &order_id, kill, ctx);
        }
        if let Err(refusal) = self.cancel(&order_id, kill, "cancelled with --kill", ctx) {
            let (code, message) = (refusal.code(), refusal.to_string());
            return self.refuse(&req.replier, &audited, code, message);
        }
        self.audit(&audited, Ok(()));
        if let Some(order) = self.core.book.get(&order_id) {
            self.bus.reply(&req.replier, &order.info());
        }
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
            subagents: self.core.registry.status(Instant::now()),
            jobs: self.job_names(),
            workflows: {
                let mut names: Vec<String> = self.core.workflows.keys().cloned().collect();
                names.sort();
                names
            },
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
            malformed_messages: self.bus.stats().malformed(),
            refused_messages: self.bus.stats().refused(),
            unstored_audit_records: self.bus.stats().unstored(),
        };
        let agents = self.elector.send(super::elector::AgentsNow);
        ctx.spawn(agents.into_actor(self).map(move |agents, act, _| {
            reply.agents = agents.unwrap_or_default();
            act.bus.reply(&req.replier, &reply);
        }));
    }

    /// Switch-over: disable, enable, or stop (drain) a subagent.
    pub(super) fn on_control(&mut self, req: Request<SubagentControl>, ctx: &mut Context<Self>) {
        let audited = Audited::subagent(&req.body, req.sender.get());
        let SubagentControl {
            subagent_id,
            action,
        } = req.body;
        let Some(subagent) = self.core.registry.get(&subagent_id) else {
            let message = format!("no subagent '{subagent_id}' is known (see `baton status`)");
            return self.refuse(&req.replier, &audited, ErrorCode::NotFound, message);
        };
        if subagent.state() == SubagentState::Lost {
            let message = format!("subagent '{subagent_id}' is lost; it cannot be switched now");
            return self.refuse(&req.replier, &audited, ErrorCode::Unavailable, message);
        }
        match action {
            SubagentAction::Disable | SubagentAction::Enable => {
                let disabled = action == SubagentAction::Disable;
                let state = self
                    .core
                    .registry
                    .set_disabled(&subagent_id, disabled)
                    .unwrap_or(SubagentState::Lost);
                info!(subagent = %subagent_id, ?action, "switch-over");
                self.audit(&audited, Ok(()));
                self.announce(
                    &subagent_id,
                    state,
                    if disabled {
                        "disabled by an operator"
                    } else {
                        "enabled by an operator"
                    },
                    ctx,
                );
                self.bus
                    .reply(&req.replier, &SubagentControlReply { subagent_id, state });
                self.dispatch(ctx);
            }
            SubagentAction::Stop => {
                let (bus, epoch) = (self.bus.clone(), self.core.epoch);
                let subject = bus.subjects().stop(&subagent_id);
                let timeout = self.config.broker.dispatch_timeout;
                let replier = req.replier;
                let stop = async move {
                    bus.request::<_, Stopping>(subject, &StopSubagent { epoch }, timeout)
                        .await
                };
                ctx.spawn(
                    stop.into_actor(self)
                        .map(move |stopped, act, _| match stopped {
                            Ok(_) => {
                                act.audit(&audited, Ok(()));
                                let state = SubagentState::Draining;
                                let reply = SubagentControlReply { subagent_id, state };
                                act.bus.reply(&replier, &reply);
                            }
                            Err(e) => {
                                let message =
                                    format!("subagent '{subagent_id}' did not take the stop: {e}");
                                act.refuse(&replier, &audited, ErrorCode::Unavailable, message);
                            }
                        }),
                );
            }
        }
    }

    pub(super) fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.core.jobs.keys().cloned().collect();
        names.sort();
        names
    }
}
