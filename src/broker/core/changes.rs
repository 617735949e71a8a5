//! What a deploy changes: the plan of a [`DeployRequest`] against what is
//! deployed (added, changed field by field, removed, unchanged), and the
//! check that nothing removed is still used. Pure.
//!
//! A deploy removes what its `remove` names (`baton undeploy`) and, with
//! `prune`, everything deployed that it does not hold. A job still run by
//! a workflow step, or a cluster still named by a job, cannot be removed
//! unless the workflow or job goes too: the refusal names what uses it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;

use crate::protocol::*;

/// A deploy on its way to the buckets: the request, and what it does.
#[derive(Debug, Clone)]
pub struct Deploying {
    pub request: DeployRequest,
    pub plan: DeployPlan,
}

/// A plan lists at most this many kept definitions (by name order) and
/// counts the rest, so a deploy's reply stays small and its cost follows
/// what it carries, however much is deployed.
pub const KEPT_LISTED: usize = 100;
/// Above this many definitions deployed, a plan lists no kept one and only
/// counts them (from the request's own names: no scan of what is deployed),
/// so a deploy onto a million jobs costs what it carries.
pub const KEPT_SCANNED: usize = 10_000;

/// The names a request holds, by kind.
struct Held<'a> {
    jobs: HashSet<&'a str>,
    clusters: HashSet<&'a str>,
    workflows: HashSet<&'a str>,
}

impl<'a> Held<'a> {
    fn of(req: &'a DeployRequest) -> Self {
        Held {
            jobs: req.jobs.iter().map(|j| j.name.as_str()).collect(),
            clusters: req.clusters.iter().map(|c| c.name.as_str()).collect(),
            workflows: req.workflows.iter().map(|w| w.name.as_str()).collect(),
        }
    }
}

/// What is deployed.
pub struct Deployed<'a> {
    pub jobs: &'a HashMap<String, JobSpec>,
    pub clusters: &'a HashMap<String, ClusterSpec>,
    pub workflows: &'a HashMap<String, WorkflowSpec>,
}

impl Deployed<'_> {
    /// What `req` does to what is deployed, or why it may not.
    pub fn plan(&self, req: &DeployRequest) -> Result<DeployPlan, String> {
        let held = Held::of(req);
        let removed = self.removed(req, &held)?;
        self.check_still_used(req, &held, &removed)?;
        let (kept, kept_more) = self.kept(req, &held, &removed);
        let mut plan = DeployPlan {
            removed: removed.into_iter().collect(),
            kept,
            kept_more,
            ..DeployPlan::default()
        };
        let clusters = req.clusters.iter().map(|c| (c, self.clusters.get(&c.name)));
        for (spec, before) in clusters {
            compare(&mut plan, SpecKind::Cluster, &spec.name, before, spec);
        }
        for spec in &req.jobs {
            let before = self.jobs.get(&spec.name);
            compare(&mut plan, SpecKind::Job, &spec.name, before, spec);
        }
        for spec in &req.workflows {
            let before = self.workflows.get(&spec.name);
            compare(&mut plan, SpecKind::Workflow, &spec.name, before, spec);
        }
        Ok(plan)
    }

    /// What is deployed, not in `req` (a deploy of files) and not removed:
    /// the first [`KEPT_LISTED`] by kind and name, and how many more.
    fn kept(
        &self,
        req: &DeployRequest,
        held: &Held,
        removed: &BTreeSet<Named>,
    ) -> (Vec<Named>, u64) {
        let adds = !(req.jobs.is_empty() && req.clusters.is_empty() && req.workflows.is_empty());
        if !adds {
            return (Vec::new(), 0);
        }
        let deployed = self.jobs.len() + self.clusters.len() + self.workflows.len();
        if deployed > KEPT_SCANNED {
            return (Vec::new(), self.kept_count(held, removed));
        }
        let named = |kind, name: &String| Named {
            kind,
            name: name.clone(),
        };
        let clusters = (self.clusters.keys())
            .filter(|n| !held.clusters.contains(n.as_str()))
            .map(|n| named(SpecKind::Cluster, n));
        let jobs = (self.jobs.keys())
            .filter(|n| !held.jobs.contains(n.as_str()))
            .map(|n| named(SpecKind::Job, n));
        let workflows = (self.workflows.keys())
            .filter(|n| !held.workflows.contains(n.as_str()))
            .map(|n| named(SpecKind::Workflow, n));
        let (mut listed, mut more) = (BTreeSet::new(), 0u64);
        for n in clusters.chain(jobs).chain(workflows) {
            if removed.contains(&n) {
                continue;
            }
            listed.insert(n);
            if listed.len() > KEPT_LISTED {
                listed.pop_last();
                more += 1;
            }
        }
        (listed.into_iter().collect(), more)
    }

    /// How many deployed definitions `req` keeps (neither holds nor
    /// removes), from the request's names alone: what is removed is
    /// deployed and not held.
    fn kept_count(&self, held: &Held, removed: &BTreeSet<Named>) -> u64 {
        let held_deployed = held
            .jobs
            .iter()
            .filter(|n| self.jobs.contains_key(**n))
            .count()
            + (held.clusters.iter())
                .filter(|n| self.clusters.contains_key(**n))
                .count()
            + (held.workflows.iter())
                .filter(|n| self.workflows.contains_key(**n))
                .count();
        let deployed = self.jobs.len() + self.clusters.len() + self.workflows.len();
        deployed.saturating_sub(held_deployed + removed.len()) as u64
    }

    /// What `req` removes, clusters first, then jobs, then workflows.
    fn removed(&self, req: &DeployRequest, held: &Held) -> Result<BTreeSet<Named>, String> {
        let named = |kind, name: &String| Named {
            kind,
            name: name.clone(),
        };
        let mut removed = BTreeSet::new();
        for name in &req.remove {
            let kind = if self.jobs.contains_key(name) {
                SpecKind::Job
            } else if self.workflows.contains_key(name) {
                SpecKind::Workflow
            } else if self.clusters.contains_key(name) {
                return Err(format!(
                    "'{name}' is a cluster: a cluster goes with `baton deploy FILES --prune`, once no job names it"
                ));
            } else {
                return Err(format!(
                    "'{name}': no job or workflow of this name is deployed, so none can be undeployed (see `baton job list`)"
                ));
            };
            if held.jobs.contains(name.as_str()) || held.workflows.contains(name.as_str()) {
                return Err(format!(
                    "'{name}' is both deployed and undeployed by this request; leave one out"
                ));
            }
            removed.insert(named(kind, name));
        }
        if req.prune {
            let pruned = (self.jobs.keys().filter(|n| !held.jobs.contains(n.as_str())))
                .map(|n| named(SpecKind::Job, n))
                .chain(
                    (self
                        .clusters
                        .keys()
                        .filter(|n| !held.clusters.contains(n.as_str())))
                    .map(|n| named(SpecKind::Cluster, n)),
                )
                .chain(
                    (self
                        .workflows
                        .keys()
                        .filter(|n| !held.workflows.contains(n.as_str())))
                    .map(|n| named(SpecKind::Workflow, n)),
                );
            removed.extend(pruned);
        }
        Ok(removed)
    }

    /// Refuses to remove a job a remaining workflow runs, or a cluster a
    /// remaining job names.
    fn check_still_used(
        &self,
        req: &DeployRequest,
        held: &Held,
        removed: &BTreeSet<Named>,
    ) -> Result<(), String> {
        if removed.is_empty() {
            return Ok(());
        }
        let gone = |kind, name: &str| {
            removed.contains(&Named {
                kind,
                name: name.to_string(),
            })
        };
        // only a removed job can be a step's, only a removed cluster a job's:
        // an undeploy of a job scans no job, whatever is deployed
        let removes = |kind| removed.iter().any(|n| n.kind == kind);
        let removes_jobs = removes(SpecKind::Job);
        let workflows = (self.workflows.values())
            .filter(|w| !held.workflows.contains(w.name.as_str()))
            .chain(&req.workflows)
            .filter(|w| !gone(SpecKind::Workflow, &w.name));
        for w in workflows.take_while(|_| removes_jobs) {
            if let Some(step) = w.steps.iter().find(|s| gone(SpecKind::Job, &s.job)) {
                return Err(format!(
                    "job '{}' cannot be undeployed: step '{}' of workflow '{}' runs it; undeploy or change the workflow first",
                    step.job, step.name, w.name
                ));
            }
        }
        if !removes(SpecKind::Cluster) {
            return Ok(());
        }
        let jobs = (self.jobs.values())
            .filter(|j| !held.jobs.contains(j.name.as_str()))
            .chain(&req.jobs)
            .filter(|j| !gone(SpecKind::Job, &j.name));
        for j in jobs {
            if let Some(cluster) = j.cluster.as_deref().filter(|c| gone(SpecKind::Cluster, c)) {
                return Err(format!(
                    "cluster '{cluster}' cannot be undeployed: job '{}' runs on it; undeploy or change the job first",
                    j.name
                ));
            }
        }
        Ok(())
    }
}

/// Files `spec` under added, changed or unchanged.
fn compare<T: Serialize + PartialEq>(
    plan: &mut DeployPlan,
    kind: SpecKind,
    name: &str,
    before: Option<&T>,
    spec: &T,
) {
    let named = Named {
        kind,
        name: name.to_string(),
    };
    match before {
        None => plan.added.push(named),
        Some(before) if before == spec => plan.unchanged.push(named),
        Some(before) => plan.changed.push(SpecChanged {
            kind,
            name: name.to_string(),
            fields: fields_changed(before, spec),
        }),
    }
}

/// The top-level fields that differ between two definitions, as JSON.
pub fn fields_changed<T: Serialize>(before: &T, after: &T) -> Vec<FieldChange> {
    let fields = |spec: &T| -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(spec) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    };
    let (before, after) = (fields(before), fields(after));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let text = |v: Option<&serde_json::Value>| v.map_or("null".to_string(), |v| v.to_string());
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| FieldChange {
            field: n.clone(),
            before: text(before.get(n)),
            after: text(after.get(n)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, program: &str, cluster: Option<&str>) -> JobSpec {
        let mut spec = serde_json::json!({ "name": name, "program": program });
        if let Some(c) = cluster {
            spec["cluster"] = c.into();
        }
        serde_json::from_value(spec).expect("a job")
    }

    fn cluster(name: &str) -> ClusterSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "mode": "round-robin", "members": [{ "subagent": "s" }]
        }))
        .expect("a cluster")
    }

    fn workflow(name: &str, job: &str) -> WorkflowSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "steps": [{ "name": "s", "job": job }]
        }))
        .expect("a workflow")
    }

    struct World {
        jobs: HashMap<String, JobSpec>,
        clusters: HashMap<String, ClusterSpec>,
        workflows: HashMap<String, WorkflowSpec>,
    }

    impl World {
        fn plan(&self, req: &DeployRequest) -> Result<DeployPlan, String> {
            let deployed = Deployed {
                jobs: &self.jobs,
                clusters: &self.clusters,
                workflows: &self.workflows,
            };
            deployed.plan(req)
        }
    }

    /// Deployed: cluster c; jobs a (on c) and b; workflow w running b.
    fn world() -> World {
        World {
            jobs: [job("a", "true", Some("c")), job("b", "true", None)]
                .into_iter()
                .map(|j| (j.name.clone(), j))
                .collect(),
            clusters: [("c".to_string(), cluster("c"))].into(),
            workflows: [("w".to_string(), workflow("w", "b"))].into(),
        }
    }

    fn named(kind: SpecKind, name: &str) -> Named {
        Named {
            kind,
            name: name.into(),
        }
    }

    #[test]
    fn a_plan_sorts_each_definition_and_names_the_fields_that_change() {
        let req = DeployRequest {
            jobs: vec![job("a", "false", Some("c")), job("n", "true", None)],
            clusters: vec![cluster("c")],
            ..DeployRequest::default()
        };
        let plan = world().plan(&req).expect("a plan");
        assert_eq!(plan.added, [named(SpecKind::Job, "n")]);
        // not in the request, and no prune: kept, and said so
        assert_eq!(
            plan.kept,
            [named(SpecKind::Job, "b"), named(SpecKind::Workflow, "w")]
        );
        assert_eq!(plan.unchanged, [named(SpecKind::Cluster, "c")]);
        assert!(plan.removed.is_empty());
        let [changed] = &plan.changed[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(changed.name, "a");
        assert_eq!(
            changed.fields,
            [FieldChange {
                field: "program".into(),
                before: "\"true\"".into(),
                after: "\"false\"".into(),
            }]
        );
    }

    #[test]
    fn removing_a_job_a_workflow_runs_is_refused_naming_the_workflow() {
        let world = world();
        let remove = |names: &[&str]| DeployRequest {
            remove: names.iter().map(|n| n.to_string()).collect(),
            ..DeployRequest::default()
        };
        let refused = world.plan(&remove(&["b"])).expect_err("w runs b");
        assert!(refused.contains("step 's' of workflow 'w'"), "{refused}");
        let plan = world.plan(&remove(&["w", "b"])).expect("both go");
        assert_eq!(
            plan.removed,
            [named(SpecKind::Job, "b"), named(SpecKind::Workflow, "w")]
        );
        let unknown = world.plan(&remove(&["zz"])).expect_err("not deployed");
        assert!(unknown.contains("'zz'"), "{unknown}");
        // a deploy that also redefines what it removes is ambiguous
        let both = DeployRequest {
            jobs: vec![job("b", "true", None)],
            ..remove(&["b"])
        };
        assert!(world.plan(&both).is_err());
    }

    #[test]
    fn prune_removes_what_the_request_does_not_hold_unless_still_used() {
        let world = world();
        // only job b and workflow w: job a and cluster c go
        let req = DeployRequest {
            jobs: vec![job("b", "true", None)],
            workflows: vec![workflow("w", "b")],
            prune: true,
            ..DeployRequest::default()
        };
        let plan = world.plan(&req).expect("a plan");
        assert_eq!(
            plan.removed,
            [named(SpecKind::Cluster, "c"), named(SpecKind::Job, "a")]
        );
        // keeping job a on cluster c while pruning c is refused
        let req = DeployRequest {
            jobs: vec![job("a", "true", Some("c")), job("b", "true", None)],
            workflows: vec![workflow("w", "b")],
            prune: true,
            ..DeployRequest::default()
        };
        let refused = world.plan(&req).expect_err("a runs on c");
        assert!(
            refused.contains("cluster 'c'") && refused.contains("job 'a'"),
            "{refused}"
        );
    }

    /// A deploy over many deployed jobs lists the first kept ones and
    /// counts the rest, and a plan still sees what it removes and changes.
    #[test]
    fn a_plan_over_many_deployed_jobs_lists_100_kept_and_counts_the_rest() {
        let mut w = world();
        for i in 0..5_000 {
            let name = format!("j{i:05}");
            w.jobs.insert(name.clone(), job(&name, "true", None));
        }
        let req = DeployRequest {
            jobs: vec![job("j00001", "false", None), job("new", "true", None)],
            ..Default::default()
        };
        let plan = w.plan(&req).unwrap();
        assert_eq!(plan.kept.len(), KEPT_LISTED);
        let deployed = w.jobs.len() + w.clusters.len() + w.workflows.len();
        assert_eq!(plan.kept.len() as u64 + plan.kept_more, deployed as u64 - 1);
        assert_eq!(plan.kept[0].name, "c", "kinds in order, clusters first");
        assert!(plan.kept.iter().all(|n| n.name != "j00001"));
        assert_eq!(plan.changed.len(), 1);
        assert_eq!(plan.added.len(), 1);
    }

    /// Over [`KEPT_SCANNED`] deployed, a plan lists no kept definition and
    /// counts them from the request's names; removing a job still checks
    /// the workflows, and removing no cluster checks no job.
    #[test]
    fn a_plan_over_more_than_kept_scanned_counts_kept_without_listing() {
        let mut w = world();
        for i in 0..KEPT_SCANNED + 10 {
            let name = format!("j{i:05}");
            w.jobs.insert(name.clone(), job(&name, "true", None));
        }
        let deployed = (w.jobs.len() + w.clusters.len() + w.workflows.len()) as u64;
        let req = DeployRequest {
            jobs: vec![job("j00001", "false", None), job("new", "true", None)],
            remove: vec!["j00002".into()],
            ..Default::default()
        };
        let plan = w.plan(&req).unwrap();
        assert!(plan.kept.is_empty());
        // j00001 is held, j00002 removed, new is not deployed yet
        assert_eq!(plan.kept_more, deployed - 2);
        assert_eq!((plan.changed.len(), plan.added.len()), (1, 1));
        assert_eq!(plan.removed, [named(SpecKind::Job, "j00002")]);
        let refused = w
            .plan(&DeployRequest {
                jobs: vec![job("new", "true", None)],
                remove: vec!["b".into()],
                ..Default::default()
            })
            .expect_err("w runs b");
        assert!(refused.contains("workflow 'w'"), "{refused}");
    }
}
