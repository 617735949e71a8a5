//! Checks of a workflow order's parameters at submit, so that an order
//! refused later, at a step, is refused at once instead.
//!
//! A parameter a step's job requires (without default) must reach it: from
//! the order, the step's own `params`, or as the result of a step it waits
//! for (`<step>_<key>`, known only once that step ran). Other order
//! parameters are not checked: they reach every step (as
//! `BATON_PARAM_<NAME>`), declared by its job or not. Pure.

use std::collections::BTreeMap;

use super::definition::output_prefix;
use super::WorkflowSpec;
use crate::protocol::JobSpec;

/// `Err` names the parameter, the step and what to do.
pub fn check_order_params(
    spec: &WorkflowSpec,
    job_of: &dyn Fn(&str) -> Option<JobSpec>,
    params: &BTreeMap<String, String>,
) -> Result<(), String> {
    let jobs: Vec<Option<JobSpec>> = spec.steps.iter().map(|s| job_of(&s.job)).collect();
    let deps = spec.dependencies();
    for (i, (step, job)) in spec.steps.iter().zip(&jobs).enumerate() {
        let Some(job) = job else { continue };
        let upstream = upstream_prefixes(spec, &deps, i);
        let required = job
            .params
            .iter()
            .filter(|(_, p)| p.required && p.default.is_none());
        for name in required.map(|(name, _)| name) {
            let from_result = upstream
                .iter()
                .any(|pre| name.starts_with(&format!("{pre}_")));
            if !params.contains_key(name) && !step.params.contains_key(name) && !from_result {
                return Err(format!(
                    "workflow '{}' step '{}': job '{}' requires parameter '{name}'; give it with --param {name}=VALUE",
                    spec.name, step.name, step.job
                ));
            }
        }
    }
    Ok(())
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
            steps,
            triggers: Vec::new(),
            misfire: Default::default(),
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
}
