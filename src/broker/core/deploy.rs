//! Deploying jobs, subagent clusters and workflows, and what the buckets
//! (`baton_jobs`, `baton_clusters`, `baton_workflows`) tell of them.
//!
//! A deploy is checked against what is deployed (`check_deploy`), written
//! to the buckets ([`Effect::Deploy`]), and answered once written
//! ([`Input::Deployed`]); a dry run is answered at once and changes
//! nothing. Every answer carries the deploy's plan (`changes.rs`): what it
//! adds, changes field by field, removes (`remove`, `prune`) and leaves. Every bucket change (a deploy of this broker's or another's,
//! or an edit) reaches the core as a [`SpecChange`], acting or not, so a
//! broker that renews its lease after a pause knows what was deployed.

use std::collections::HashMap;

use tracing::{info, warn};

use super::super::placement;
use super::changes::{Deployed, Deploying};
use super::{Core, Effect, Refusal, Reply};
use crate::jobs;
use crate::protocol::*;
use crate::workflow::params::check_steps;
use crate::workflow::{validate_workflow, validate_workflows};

/// A change of a bucket entry: the new value, or `None` when deleted.
#[derive(Debug, Clone)]
pub enum SpecChange {
    Job(String, Option<JobSpec>),
    Cluster(String, Option<ClusterSpec>),
    Workflow(String, Option<WorkflowSpec>),
}

impl<R: Clone + std::fmt::Debug> Core<R> {
    /// `baton deploy`: checked, then written (or, for a dry run, only
    /// answered).
    pub(super) fn on_deploy(&mut self, to: R, request: DeployRequest) {
        let deployed = Deployed {
            jobs: &self.jobs,
            clusters: &self.clusters,
            workflows: &self.workflows,
        };
        let plan = deployed.plan(&request);
        let checked = plan.and_then(|plan| self.check_deploy(&request, &plan).map(|_| plan));
        let plan = match checked {
            Ok(plan) => plan,
            Err(message) => return self.refuse(&to, Refusal::InvalidDeploy(message)),
        };
        let deploy = Deploying { request, plan };
        if deploy.request.dry_run {
            let reply = self.deployed(&deploy);
            return self.reply(&to, Reply::Deployed(reply));
        }
        let deploy = Box::new(deploy);
        self.emit(Effect::Deploy { to, deploy });
    }

    /// A deploy was written to the buckets, or not.
    pub(super) fn on_deployed(&mut self, to: R, deploy: Deploying, written: Result<(), String>) {
        if let Err(e) = written {
            return self.refuse(&to, Refusal::DeployNotStored(e));
        }
        let reply = self.deployed(&deploy);
        info!(jobs = ?reply.deployed, clusters = ?reply.clusters, workflows = ?reply.workflows, removed = ?deploy.plan.removed, "deployed");
        for Named { kind, name } in deploy.plan.removed {
            match kind {
                SpecKind::Job => drop(self.jobs.remove(&name)),
                SpecKind::Cluster => drop(self.clusters.remove(&name)),
                SpecKind::Workflow => drop(self.workflows.remove(&name)),
            }
            self.pauses.remove(&name);
        }
        let deploy = deploy.request;
        for spec in deploy.workflows {
            self.workflows.insert(spec.name.clone(), spec);
        }
        for cluster in deploy.clusters {
            self.clusters.insert(cluster.name.clone(), cluster);
        }
        for spec in deploy.jobs {
            self.jobs.insert(spec.name.clone(), spec);
        }
        self.reply(&to, Reply::Deployed(reply));
        self.dispatch();
    }

    /// Whether `req` may be deployed over what is deployed (else why not).
    fn check_deploy(&self, req: &DeployRequest, plan: &DeployPlan) -> Result<(), String> {
        let DeployRequest {
            jobs,
            clusters,
            workflows,
            ..
        } = req;
        let adds = !(jobs.is_empty() && clusters.is_empty() && workflows.is_empty());
        if !adds && plan.removed.is_empty() {
            return Err("nothing to deploy: no jobs, clusters or workflows".into());
        }
        for cluster in clusters {
            jobs::validate_cluster(cluster).map_err(|e| e.to_string())?;
        }
        for spec in jobs {
            jobs::validate_job(spec).map_err(|e| e.to_string())?;
            if let Some(cluster) = &spec.cluster {
                let known = self.clusters.contains_key(cluster)
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

    /// Deploy-time checks of workflows against the jobs deployed and being
    /// deployed: each step names a job whose parameters fit it, and no name
    /// is both a job and a workflow.
    fn check_workflows(&self, jobs: &[JobSpec], workflows: &[WorkflowSpec]) -> Result<(), String> {
        let known =
            |name: &str| self.jobs.contains_key(name) || jobs.iter().any(|j| j.name == name);
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
            .find(|j| self.workflows.contains_key(&j.name) && !being(&j.name))
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
                .or_else(|| self.jobs.get(name))
                .cloned()
        };
        for w in workflows {
            check_steps(w, &job_of).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// A bucket entry changed: valid entries are taken, others warned about.
    pub(super) fn on_spec_change(&mut self, change: SpecChange) {
        match change {
            SpecChange::Job(key, spec) => {
                let valid = |s: &JobSpec| jobs::validate_job(s).is_ok() && s.name == key;
                let valid = spec.as_ref().map(valid);
                take(
                    &mut self.jobs,
                    key,
                    spec,
                    valid,
                    "job definition in the jobs bucket",
                );
            }
            SpecChange::Cluster(key, spec) => {
                let valid = |s: &ClusterSpec| jobs::validate_cluster(s).is_ok() && s.name == key;
                let valid = spec.as_ref().map(valid);
                take(
                    &mut self.clusters,
                    key,
                    spec,
                    valid,
                    "cluster in the clusters bucket",
                );
            }
            // as at a takeover: a step whose job is gone fails when dispatched
            SpecChange::Workflow(key, spec) => {
                let valid =
                    |s: &WorkflowSpec| s.name == key && validate_workflow(s, &|_| true).is_ok();
                let valid = spec.as_ref().map(valid);
                let what = "workflow in the workflows bucket";
                take(&mut self.workflows, key, spec, valid, what);
            }
        }
    }
}

/// Takes a bucket entry's new value if `valid`, forgets a deleted one.
fn take<T>(
    held: &mut HashMap<String, T>,
    key: String,
    value: Option<T>,
    valid: Option<bool>,
    what: &str,
) {
    match (value, valid) {
        (Some(value), Some(true)) => {
            held.insert(key, value);
        }
        (Some(_), _) => warn!(%key, "invalid {what} ignored"),
        (None, _) => {
            held.remove(&key);
        }
    }
}

impl<R> Core<R> {
    /// The answer to a deploy: the names of what it deploys, and a warning
    /// for each cluster no known subagent matches and each `at` trigger in
    /// the past.
    fn deployed(&self, deploying: &Deploying) -> DeployReply {
        let deploy = &deploying.request;
        let unmatched = (deploy.clusters.iter())
            .filter(|c| placement::members(Some(c), self.registry.iter()).is_empty());
        let unmatched = unmatched.map(|c| format!(
            "cluster '{}': no known subagent matches it yet; its orders wait until one does (see `baton status`)",
            c.name
        ));
        let triggers = (deploy.jobs.iter().map(|j| (&j.name, &j.triggers)))
            .chain(deploy.workflows.iter().map(|w| (&w.name, &w.triggers)));
        let past = triggers.flat_map(|(name, triggers)| {
            let now_ms = self.now.ms;
            triggers.iter().filter_map(move |t| match t {
                TriggerSpec::At { at } if at.timestamp_millis() < now_ms as i64 => Some(format!(
                    "'{name}': its `at` trigger ({at}) is in the past; it fires only if its misfire policy catches it up"
                )),
                _ => None,
            })
        });
        let removed = deploying
            .plan
            .removed
            .iter()
            .filter(|n| n.kind == SpecKind::Job);
        let busy = removed.filter_map(|n| {
            let active = self.book.active_of_job(&n.name).len();
            (active > 0).then(|| format!(
                "job '{}' is undeployed with {active} unfinished order(s): waiting ones fail when dispatched, running ones finish",
                n.name
            ))
        });
        let warnings = unmatched.chain(past).chain(busy);
        DeployReply {
            deployed: deploy.jobs.iter().map(|j| j.name.clone()).collect(),
            clusters: deploy.clusters.iter().map(|c| c.name.clone()).collect(),
            workflows: deploy.workflows.iter().map(|w| w.name.clone()).collect(),
            dry_run: deploy.dry_run,
            warnings: warnings.collect(),
            plan: deploying.plan.clone(),
        }
    }
}
