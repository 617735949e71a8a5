//! A workflow's parameters: what an order through it may be given, and
//! what reaches its steps. Pure.
//!
//! - At deploy: `{{name}}` in a step's `params` names a declared workflow
//!   parameter or a result of a step it waits for ([`check_placeholders`]);
//!   with the jobs known, each of a step's `params` is declared by its job,
//!   and every parameter its job requires reaches it, from what a submitter
//!   may give, or for a triggered workflow from the defaults alone
//!   ([`check_steps`]).
//! - At submit: the order's parameters are checked against the workflow's
//!   declaration, defaults filled in ([`resolve_order_params`], the rules of
//!   a job's), then every step's required parameters must reach it
//!   ([`check_order_params`]), so that an order refused later, at a step,
//!   is refused at once instead.
//!
//! A parameter a step's job requires (without default) reaches it from the
//! step's own `params`, the order's parameter of that name, or the result
//! of a step it waits for (`<step>_<key>`, known only once that step ran, so
//! any name with that prefix counts). Whatever else a step is offered, it
//! receives only what its job declares ([`crate::jobs::resolve_step_params`]).

use std::collections::BTreeMap;

use super::definition::output_prefix;
use super::{WorkflowError, WorkflowSpec};
use crate::jobs::placeholders;
use crate::params::{resolve_declared, ParamError};
use crate::protocol::JobSpec;

/// An order's parameters: each given one declared by the workflow, within
/// the limits, required ones given, defaults filled in.
pub fn resolve_order_params(
    spec: &WorkflowSpec,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParamError> {
    resolve_declared("workflow", &spec.name, &spec.params, given)
}

/// `{{name}}` in a step's `params` names a declared workflow parameter or a
/// result of a step it waits for (directly or not).
pub fn check_placeholders(spec: &WorkflowSpec) -> Result<(), WorkflowError> {
    let deps = spec.dependencies();
    for (i, step) in spec.steps.iter().enumerate() {
        let upstream = upstream_prefixes(spec, &deps, i);
        for (param, value) in &step.params {
            let unknown = placeholders(value)
                .find(|name| !spec.params.contains_key(*name) && !is_result(&upstream, name));
            if let Some(name) = unknown {
                return Err(WorkflowError::InvalidParam {
                    workflow: spec.name.clone(),
                    step: step.name.clone(),
                    param: param.clone(),
                    message: format!(
                        "{{{{{name}}}}} names no declared workflow parameter and no result of \
                         a step this one waits for; declare [workflow.params.{name}]"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Deploy-time checks against the steps' jobs (`job_of`: a deployed job or
/// one being deployed; a step whose job is unknown is left out): each of a
/// step's `params` is one its job declares; each parameter its job requires
/// can reach it, and, when the workflow has triggers (which fire without
/// parameters), does reach it with the workflow's defaults alone.
pub fn check_steps(
    spec: &WorkflowSpec,
    job_of: &dyn Fn(&str) -> Option<JobSpec>,
) -> Result<(), WorkflowError> {
    let jobs: Vec<Option<JobSpec>> = spec.steps.iter().map(|s| job_of(&s.job)).collect();
    for (step, job) in spec.steps.iter().zip(&jobs) {
        let Some(job) = job else { continue };
        if let Some(param) = step.params.keys().find(|p| !job.params.contains_key(*p)) {
            return Err(WorkflowError::UndeclaredStepParam {
                workflow: spec.name.clone(),
                step: step.name.clone(),
                job: job.name.clone(),
                param: param.clone(),
            });
        }
    }
    let missing = |(i, param): (usize, String)| {
        let step = &spec.steps[i];
        (
            spec.name.clone(),
            step.name.clone(),
            step.job.clone(),
            param,
        )
    };
    let declared = |name: &str| spec.params.contains_key(name);
    if let Some((workflow, step, job, param)) =
        missing_required(spec, &jobs, &declared).map(missing)
    {
        return Err(WorkflowError::UngivenStepParam {
            workflow,
            step,
            job,
            param,
        });
    }
    if !spec.triggers.is_empty() {
        // validation refuses a required parameter in a triggered workflow
        let defaults = resolve_order_params(spec, &BTreeMap::new()).unwrap_or_default();
        let fired = |name: &str| defaults.contains_key(name);
        if let Some((workflow, step, job, param)) =
            missing_required(spec, &jobs, &fired).map(missing)
        {
            return Err(WorkflowError::TriggeredStepParam {
                workflow,
                step,
                job,
                param,
            });
        }
    }
    Ok(())
}

/// Submit-time check of an order's `params` (resolved): each step's
/// required parameters reach it. `Err` names the parameter, the step and
/// what to do.
pub fn check_order_params(
    spec: &WorkflowSpec,
    job_of: &dyn Fn(&str) -> Option<JobSpec>,
    params: &BTreeMap<String, String>,
) -> Result<(), String> {
    let jobs: Vec<Option<JobSpec>> = spec.steps.iter().map(|s| job_of(&s.job)).collect();
    let given = |name: &str| params.contains_key(name);
    match missing_required(spec, &jobs, &given) {
        None => Ok(()),
        Some((i, name)) => {
            let step = &spec.steps[i];
            Err(format!(
                "workflow '{}' step '{}': job '{}' requires parameter '{name}'; give it with --param {name}=VALUE",
                spec.name, step.name, step.job
            ))
        }
    }
}

/// The first step (index) and parameter its job (`jobs[i]`) requires that
/// neither the order (`order_has`), nor the step's own `params`, nor a
/// result of a step it waits for can give.
fn missing_required(
    spec: &WorkflowSpec,
    jobs: &[Option<JobSpec>],
    order_has: &dyn Fn(&str) -> bool,
) -> Option<(usize, String)> {
    let deps = spec.dependencies();
    for (i, (step, job)) in spec.steps.iter().zip(jobs).enumerate() {
        let Some(job) = job else { continue };
        let upstream = upstream_prefixes(spec, &deps, i);
        let required = job
            .params
            .iter()
            .filter(|(_, p)| p.required && p.default.is_none())
            .map(|(name, _)| name);
        for name in required {
            if !order_has(name) && !step.params.contains_key(name) && !is_result(&upstream, name) {
                return Some((i, name.clone()));
            }
        }
    }
    None
}

/// Whether `name` is `<prefix>_<key>` for one of these result prefixes.
fn is_result(prefixes: &[String], name: &str) -> bool {
    prefixes.iter().any(|pre| {
        name.strip_prefix(pre.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|key| !key.is_empty())
    })
}

/// The result prefixes of the steps step `i` waits for, directly or not.
fn upstream_prefixes(spec: &WorkflowSpec, deps: &[Vec<usize>], i: usize) -> Vec<String> {
    let mut seen = vec![false; deps.len()];
    let mut stack = deps[i].clone();
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        if std::mem::replace(&mut seen[d], true) {
            continue;
        }
        out.push(output_prefix(&spec.steps[d].name));
        stack.extend(deps[d].iter().copied());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ParamSpec, StepSpec};

    fn job(name: &str, params: &[(&str, bool)]) -> JobSpec {
        let mut j: JobSpec = serde_json::from_value(serde_json::json!({
            "name": name, "program": "true"
        }))
        .unwrap();
        for (p, required) in params {
            let spec = ParamSpec {
                default: None,
                required: *required,
                description: None,
            };
            j.params.insert(p.to_string(), spec);
        }
        j
    }

    fn step(name: &str, job: &str, params: &[(&str, &str)]) -> StepSpec {
        StepSpec {
            name: name.into(),
            job: job.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            after: None,
            on_failure: Default::default(),
        }
    }

    fn spec(steps: Vec<StepSpec>) -> WorkflowSpec {
        WorkflowSpec {
            name: "w".into(),
            description: None,
            params: Default::default(),
            steps,
            triggers: Vec::new(),
            misfire: Default::default(),
            notify: Default::default(),
        }
    }

    fn jobs(name: &str) -> Option<JobSpec> {
        match name {
            "build" => Some(job("build", &[("profile", false)])),
            "deploy" => Some(job("deploy", &[("target", true), ("build_version", true)])),
            _ => None,
        }
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_required_parameter_must_reach_its_step_unless_an_earlier_step_gives_it() {
        let w = spec(vec![
            step("build", "build", &[]),
            step("deploy", "deploy", &[]),
        ]);
        let e = check_order_params(&w, &jobs, &given(&[])).unwrap_err();
        assert!(e.contains("step 'deploy'") && e.contains("'target'"), "{e}");
        // build_version may come from step build's results; target from the order
        assert!(check_order_params(&w, &jobs, &given(&[("target", "prod")])).is_ok());
        // or from the step's own params
        let w = spec(vec![
            step("build", "build", &[]),
            step("deploy", "deploy", &[("target", "prod")]),
        ]);
        assert!(check_order_params(&w, &jobs, &given(&[])).is_ok());
    }

    #[test]
    fn a_step_whose_job_is_gone_is_left_to_fail_with_its_reason() {
        let w = spec(vec![step("x", "gone", &[])]);
        assert!(check_order_params(&w, &jobs, &given(&[])).is_ok());
    }

    fn declared(w: &mut WorkflowSpec, name: &str, default: Option<&str>, required: bool) {
        let p = ParamSpec {
            default: default.map(str::to_string),
            required,
            description: None,
        };
        w.params.insert(name.into(), p);
    }

    #[test]
    fn an_order_may_give_only_the_parameters_its_workflow_declares() {
        let mut w = spec(vec![step("build", "build", &[])]);
        declared(&mut w, "channel", Some("beta"), false);
        declared(&mut w, "version", None, true);
        let e = resolve_order_params(&w, &given(&[("version", "7"), ("secret", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "workflow 'w' has no parameter 'secret' (it accepts: channel, version)"
        );
        let e = resolve_order_params(&w, &given(&[])).unwrap_err();
        assert!(
            matches!(&e, ParamError::Missing { kind: "workflow", param, .. } if param == "version")
        );
        let resolved = resolve_order_params(&w, &given(&[("version", "7")])).unwrap();
        assert_eq!(resolved, given(&[("channel", "beta"), ("version", "7")]));
        let e = resolve_order_params(&spec(vec![]), &given(&[("x", "1")])).unwrap_err();
        assert!(e.to_string().contains("(it accepts: none)"), "{e}");
    }

    #[test]
    fn placeholders_name_declared_parameters_or_results_of_earlier_steps() {
        let mut w = spec(vec![
            step("build", "build", &[("profile", "{{channel}}")]),
            step(
                "deploy",
                "deploy",
                &[("target", "{{build_version}}-{{channel}}")],
            ),
        ]);
        let e = check_placeholders(&w).unwrap_err();
        assert!(
            matches!(&e, WorkflowError::InvalidParam { step, param, .. } if step == "build" && param == "profile"),
            "{e}"
        );
        assert!(e.to_string().contains("{{channel}}"), "{e}");
        declared(&mut w, "channel", None, false);
        assert_eq!(check_placeholders(&w), Ok(()));
        // a result of a step it does not wait for is not there
        w.steps[1].after = Some(vec![]);
        let e = check_placeholders(&w).unwrap_err();
        assert!(e.to_string().contains("{{build_version}}"), "{e}");
        assert!(e.to_string().contains("step 'deploy'"), "{e}");
    }

    #[test]
    fn steps_are_checked_against_their_jobs_at_deploy() {
        // a step's own parameter its job does not declare
        let w = spec(vec![step("build", "build", &[("profil", "release")])]);
        let e = check_steps(&w, &jobs).unwrap_err();
        assert!(
            matches!(&e, WorkflowError::UndeclaredStepParam { param, job, .. } if param == "profil" && job == "build"),
            "{e}"
        );
        // a required one that nothing can give: not declared by the workflow
        let mut w = spec(vec![
            step("build", "build", &[]),
            step("deploy", "deploy", &[]),
        ]);
        let e = check_steps(&w, &jobs).unwrap_err();
        assert!(
            matches!(&e, WorkflowError::UngivenStepParam { param, step, .. } if param == "target" && step == "deploy"),
            "{e}"
        );
        assert!(e.to_string().contains("[workflow.params.target]"), "{e}");
        declared(&mut w, "target", None, false);
        assert_eq!(check_steps(&w, &jobs), Ok(()));
        // a trigger fires with the defaults only
        w.triggers.push(crate::protocol::TriggerSpec::Interval {
            every: std::time::Duration::from_secs(60),
            start: None,
            jitter: None,
        });
        let e = check_steps(&w, &jobs).unwrap_err();
        assert!(
            matches!(&e, WorkflowError::TriggeredStepParam { param, .. } if param == "target"),
            "{e}"
        );
        declared(&mut w, "target", Some("prod"), false);
        assert_eq!(check_steps(&w, &jobs), Ok(()));
        // a step whose job is not known here is the broker's to check
        assert_eq!(
            check_steps(&spec(vec![step("x", "gone", &[("a", "1")])]), &jobs),
            Ok(())
        );
    }
}
