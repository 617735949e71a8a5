//! Workflow definitions: the deploy-file form ([`WorkflowDef`], strict) of
//! the wire form ([`WorkflowSpec`], in `protocol::workflow`), and validation.
//!
//! A deploy file declares a workflow as a `[[workflow]]` table with one
//! `[[workflow.steps]]` table per step:
//!
//! ```toml
//! [[workflow]]
//! name = "nightly"
//! description = "build, test on two platforms, publish"   # optional
//!
//! [workflow.params.channel]       # what a submitter may set, as for a job
//! default = "beta"                # or: required = true
//!
//! [[workflow.steps]]
//! name = "build"                  # optional: defaults to the job's name
//! job = "compile"                 # a deployed job
//! params = { profile = "release" }    # optional, fixed per step
//!
//! [[workflow.steps]]
//! name = "test-linux"
//! job = "test"                    # no `after`: runs after the previous step
//! params = { os = "linux", version = "{{build_version}}" }
//! on_failure = { action = "retry", times = 3, backoff = "10s" }
//!
//! [[workflow.steps]]
//! name = "test-mac"
//! job = "test"
//! after = ["build"]               # explicit: parallel with test-linux
//! on_failure = "continue"
//!
//! [[workflow.steps]]
//! name = "publish"
//! job = "publish"
//! after = ["test-linux", "test-mac"]  # a join
//!
//! [[workflow.triggers]]           # optional: starts on its own, as a job's do
//! kind = "cron"
//! expr = "0 0 2 * * *"
//! ```
//!
//! - `after` absent: the step depends on the step before it in the list (the
//!   first step on nothing), so a plain list runs in order. `after = []`: it
//!   can start at once. Steps may be listed in any order when every one
//!   names its `after`.
//! - `on_failure`: `"stop"` (the default: the order fails, resumable),
//!   `"continue"` (the step counts as done for the steps after it), or
//!   `{ action = "retry", times = N, backoff = "10s" }` (run it again up to
//!   N times, waiting `backoff` before each retry, default `0s`; then as
//!   stop). `{ action = "stop" }` and `{ action = "continue" }` work too.
//! - `[workflow.params.NAME]`: the parameters a submitter may set, declared
//!   and checked exactly as a job's (`default`, `required`, `description`;
//!   the same name rules): an order giving any other is refused, a required
//!   one missing too, defaults are filled in.
//! - A step is offered, later ones winning: the order's parameters, the
//!   results of the steps it depends on (directly or not) as
//!   `<step>_exit_code` and `<step>_<key>` (with `-` in the step name written
//!   `_`), then its own `params`, in whose values `{{name}}` is replaced by
//!   the value of `name` among the former (see [`crate::workflow::state`]);
//!   `name` must be a declared workflow parameter or a result of a step it
//!   waits for. Of these it receives only the ones its job declares
//!   ([`crate::jobs::resolve_step_params`]).
//! - `[[workflow.triggers]]` and `misfire` are written as a job's
//!   `[[job.triggers]]` and `misfire` (see [`TriggerSpec`]): the Scheduler
//!   agent starts an order through the workflow at each slot, without
//!   parameters (so with the defaults). There is no `concurrency`: each slot starts a new order,
//!   whatever orders through the workflow are still going.
//!
//! Validation names the workflow and the step of each mistake: an unknown
//! job, a duplicate step, a dangling `after`, a cycle (with its path), no
//! steps, a retry of 0 times, a bad parameter.
//!
//! Architecture invariant: pure; the wire types live in `protocol` (serde
//! and schemars only, no `deny_unknown_fields`), strictness lives in the
//! `*Def` types here.
//!
//! Size: a little over the ~500-line mark: the strict deploy-file form and
//! its validation, with the error for each mistake, belong together.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::jobs::{MisfireDef, TriggerDef};
use crate::params::{is_param_name, is_param_value, validate_declared, ParamDef};
use crate::protocol::subjects::is_valid_token;
use crate::protocol::{MisfirePolicy, OnFailure, StepSpec, TriggerSpec, WorkflowSpec};

impl WorkflowSpec {
    /// The indices of the steps each step depends on (`after` resolved);
    /// names that match no step are left out.
    pub fn dependencies(&self) -> Vec<Vec<usize>> {
        let index: BTreeMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        self.steps
            .iter()
            .enumerate()
            .map(|(i, step)| match &step.after {
                None => i.checked_sub(1).into_iter().collect(),
                Some(after) => {
                    let mut deps: Vec<usize> = after
                        .iter()
                        .filter_map(|a| index.get(a.as_str()).copied())
                        .collect();
                    deps.sort_unstable();
                    deps.dedup();
                    deps
                }
            })
            .collect()
    }
}

/// The prefix under which a step's results reach later steps: its name with
/// `-` written `_`, so that it is a valid parameter name.
pub fn output_prefix(step: &str) -> String {
    step.replace('-', "_")
}

/// One `[[workflow]]` table as an operator writes it (unknown keys refused).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamDef>,
    #[serde(default)]
    steps: Vec<StepDef>,
    #[serde(default)]
    triggers: Vec<TriggerDef>,
    #[serde(default)]
    misfire: Option<MisfireDef>,
    #[serde(default)]
    notify: crate::jobs::notify::NotifyDef,
}

/// One `[[workflow.steps]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDef {
    #[serde(default)]
    name: Option<String>,
    job: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    after: Option<Vec<String>>,
    #[serde(default)]
    on_failure: OnFailureDef,
}

impl WorkflowDef {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn triggers(&self) -> &[TriggerDef] {
        &self.triggers
    }
}

impl From<WorkflowDef> for WorkflowSpec {
    fn from(def: WorkflowDef) -> WorkflowSpec {
        WorkflowSpec {
            name: def.name,
            description: def.description,
            params: def
                .params
                .into_iter()
                .map(|(name, p)| (name, p.into()))
                .collect(),
            steps: def
                .steps
                .into_iter()
                .map(|s| StepSpec {
                    name: s.name.unwrap_or_else(|| s.job.clone()),
                    job: s.job,
                    params: s.params,
                    after: s.after,
                    on_failure: s.on_failure.0,
                })
                .collect(),
            triggers: def.triggers.into_iter().map(TriggerSpec::from).collect(),
            misfire: def.misfire.map(MisfirePolicy::from).unwrap_or_default(),
            notify: def.notify.into(),
        }
    }
}

/// `on_failure` in a deploy file: `"stop"`, `"continue"`, or a table tagged
/// by `action`.
#[derive(Debug, Default)]
struct OnFailureDef(OnFailure);

/// The table form of `on_failure`, with unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
enum OnFailureTable {
    Stop {},
    Continue {},
    Retry {
        times: u32,
        #[serde(default, with = "humantime_serde")]
        backoff: Duration,
    },
}

impl<'de> Deserialize<'de> for OnFailureDef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnFailureVisitor;
        impl<'de> Visitor<'de> for OnFailureVisitor {
            type Value = OnFailure;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "\"stop\", \"continue\" or { action = \"retry\", times = N, backoff = \"10s\" }",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<OnFailure, E> {
                match v {
                    "stop" => Ok(OnFailure::Stop),
                    "continue" => Ok(OnFailure::Continue),
                    "retry" => Err(E::custom(
                        "retry needs a count: on_failure = { action = \"retry\", times = 3, backoff = \"10s\" }",
                    )),
                    other => Err(E::unknown_variant(other, &["stop", "continue", "retry"])),
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OnFailure, A::Error> {
                let table =
                    OnFailureTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match table {
                    OnFailureTable::Stop {} => OnFailure::Stop,
                    OnFailureTable::Continue {} => OnFailure::Continue,
                    OnFailureTable::Retry { times, backoff } => OnFailure::Retry { times, backoff },
                })
            }
        }
        d.deserialize_any(OnFailureVisitor).map(OnFailureDef)
    }
}

/// A workflow that cannot be deployed, naming the workflow and the step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    #[error("workflow '{workflow}': name must be 1-64 letters, digits, '-' or '_'")]
    InvalidName { workflow: String },
    #[error("workflow '{workflow}': defined twice")]
    DuplicateWorkflow { workflow: String },
    #[error("workflow '{workflow}': has no steps; add a [[workflow.steps]] table with a job")]
    Empty { workflow: String },
    #[error("workflow '{workflow}' step '{step}': name must be 1-64 letters, digits, '-' or '_'")]
    InvalidStepName { workflow: String, step: String },
    #[error("workflow '{workflow}' step '{step}': defined twice")]
    DuplicateStep { workflow: String, step: String },
    #[error(
        "workflow '{workflow}' steps '{step}' and '{other}': their results would share the \
         parameter prefix '{prefix}_'; rename one"
    )]
    AmbiguousSteps {
        workflow: String,
        step: String,
        other: String,
        prefix: String,
    },
    #[error("workflow '{workflow}' step '{step}': job '{job}' is not deployed")]
    UnknownJob {
        workflow: String,
        step: String,
        job: String,
    },
    #[error("workflow '{workflow}' step '{step}': after names '{after}', which is no step of this workflow")]
    DanglingAfter {
        workflow: String,
        step: String,
        after: String,
    },
    #[error("workflow '{workflow}': steps wait for each other in a cycle: {}", .steps.join(" -> "))]
    Cycle {
        workflow: String,
        /// The steps on the cycle, the first repeated at the end.
        steps: Vec<String>,
    },
    #[error("workflow '{workflow}' step '{step}': on_failure retry times must be at least 1")]
    RetryTimesZero { workflow: String, step: String },
    #[error("workflow '{workflow}' step '{step}': parameter '{param}': {message}")]
    InvalidParam {
        workflow: String,
        step: String,
        param: String,
        message: String,
    },
    /// `field` is `triggers[i]` or `misfire`, as for a job.
    #[error("workflow '{workflow}': field '{field}': {message}")]
    InvalidSchedule {
        workflow: String,
        field: String,
        message: String,
    },
    /// A `[workflow.params.NAME]` declaration; `field` is `params.NAME`
    /// (or `params` for their count), as for a job.
    #[error("workflow '{workflow}': field '{field}': {message}")]
    InvalidDeclaration {
        workflow: String,
        field: String,
        message: String,
    },
    #[error(
        "workflow '{workflow}' step '{step}': parameter '{param}': job '{job}' declares no such \
         parameter, so the step would never receive it"
    )]
    UndeclaredStepParam {
        workflow: String,
        step: String,
        job: String,
        param: String,
    },
    #[error(
        "workflow '{workflow}' step '{step}': job '{job}' requires parameter '{param}', which \
         nothing gives it: declare [workflow.params.{param}], or set it in the step's params"
    )]
    UngivenStepParam {
        workflow: String,
        step: String,
        job: String,
        param: String,
    },
    #[error(
        "workflow '{workflow}' step '{step}': job '{job}' requires parameter '{param}', and a \
         trigger fires without parameters: give [workflow.params.{param}] a default, or set it \
         in the step's params"
    )]
    TriggeredStepParam {
        workflow: String,
        step: String,
        job: String,
        param: String,
    },
}

/// Checks one workflow; `known_jobs` says whether a job name is deployed
/// (in the same deploy or before). The broker runs this on every deploy too.
pub fn validate_workflow(
    wf: &WorkflowSpec,
    known_jobs: &dyn Fn(&str) -> bool,
) -> Result<(), WorkflowError> {
    let workflow = || wf.name.clone();
    if !is_valid_token(&wf.name) {
        return Err(WorkflowError::InvalidName {
            workflow: workflow(),
        });
    }
    if wf.steps.is_empty() {
        return Err(WorkflowError::Empty {
            workflow: workflow(),
        });
    }
    if let Err((field, message)) = crate::jobs::notify::validate(&wf.notify) {
        return Err(WorkflowError::InvalidDeclaration {
            workflow: workflow(),
            field,
            message,
        });
    }
    let triggered = !wf.triggers.is_empty();
    if let Some(i) = wf.triggers.iter().position(|t| !t.is_clock()) {
        return Err(WorkflowError::InvalidDeclaration {
            workflow: workflow(),
            field: format!("triggers[{i}]"),
            message: "a workflow fires on a clock only (cron, interval, at); let a subject trigger start a job that submits the workflow order".into(),
        });
    }
    if let Err((field, message)) = validate_declared(&wf.params, "workflow", triggered) {
        return Err(WorkflowError::InvalidDeclaration {
            workflow: workflow(),
            field,
            message,
        });
    }
    let mut names = BTreeSet::new();
    let mut prefixes: BTreeMap<String, &str> = BTreeMap::new();
    for step in &wf.steps {
        let name = || step.name.clone();
        if !is_valid_token(&step.name) {
            return Err(WorkflowError::InvalidStepName {
                workflow: workflow(),
                step: name(),
            });
        }
        if !names.insert(step.name.as_str()) {
            return Err(WorkflowError::DuplicateStep {
                workflow: workflow(),
                step: name(),
            });
        }
        let prefix = output_prefix(&step.name);
        if let Some(other) = prefixes.insert(prefix.clone(), &step.name) {
            return Err(WorkflowError::AmbiguousSteps {
                workflow: workflow(),
                step: name(),
                other: other.to_string(),
                prefix,
            });
        }
        if !known_jobs(&step.job) {
            return Err(WorkflowError::UnknownJob {
                workflow: workflow(),
                step: name(),
                job: step.job.clone(),
            });
        }
        if let OnFailure::Retry { times: 0, .. } = step.on_failure {
            return Err(WorkflowError::RetryTimesZero {
                workflow: workflow(),
                step: name(),
            });
        }
        for (param, value) in &step.params {
            let message = if !is_param_name(param) {
                "parameter names are 1-64 letters, digits and '_'"
            } else if !is_param_value(value) {
                "value is too long or contains NUL"
            } else {
                continue;
            };
            return Err(WorkflowError::InvalidParam {
                workflow: workflow(),
                step: name(),
                param: param.clone(),
                message: message.into(),
            });
        }
    }
    for step in &wf.steps {
        for after in step.after.iter().flatten() {
            if !names.contains(after.as_str()) {
                return Err(WorkflowError::DanglingAfter {
                    workflow: workflow(),
                    step: step.name.clone(),
                    after: after.clone(),
                });
            }
        }
    }
    if let Some(cycle) = find_cycle(&wf.dependencies()) {
        return Err(WorkflowError::Cycle {
            workflow: workflow(),
            steps: cycle.iter().map(|&i| wf.steps[i].name.clone()).collect(),
        });
    }
    super::params::check_placeholders(wf)?;
    validate_schedule(wf)
}

/// Checks the triggers and the misfire policy, as for a job.
fn validate_schedule(wf: &WorkflowSpec) -> Result<(), WorkflowError> {
    let invalid = |field: String, message: String| WorkflowError::InvalidSchedule {
        workflow: wf.name.clone(),
        field,
        message,
    };
    for (i, trigger) in wf.triggers.iter().enumerate() {
        if let Err(e) = trigger.validate() {
            return Err(invalid(format!("triggers[{i}]"), e.to_string()));
        }
    }
    crate::triggers::files::check_params(&wf.triggers, &wf.params)
        .map_err(|(field, message)| invalid(field, message))?;
    wf.misfire
        .validate()
        .map_err(|e| invalid("misfire".into(), e.to_string()))
}

/// Checks the workflows of one deploy: each one, and that no name repeats.
pub fn validate_workflows(
    workflows: &[WorkflowSpec],
    known_jobs: &dyn Fn(&str) -> bool,
) -> Result<(), WorkflowError> {
    let mut seen = BTreeSet::new();
    for wf in workflows {
        validate_workflow(wf, known_jobs)?;
        if !seen.insert(wf.name.as_str()) {
            return Err(WorkflowError::DuplicateWorkflow {
                workflow: wf.name.clone(),
            });
        }
    }
    Ok(())
}

/// A cycle in the graph `deps` (step -> the steps it waits for), as the
/// steps along it with the first repeated at the end; depth-first, without
/// recursion.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for root in 0..deps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, index of the next dependency to visit)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(top) = path.last_mut() {
            let (node, next) = *top;
            let Some(&dep) = deps[node].get(next) else {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            };
            top.1 += 1;
            match mark[dep] {
                Mark::New => {
                    mark[dep] = Mark::OnPath;
                    path.push((dep, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|&(n, _)| n == dep)?;
                    let mut cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                    // `path` runs from a step to what it waits for; report
                    // the cycle in running order instead.
                    cycle.reverse();
                    cycle.push(cycle[0]);
                    return Some(cycle);
                }
                Mark::Done => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        workflow: Vec<WorkflowDef>,
    }

    const GOOD: &str = r#"
[[workflow]]
name = "nightly"

[[workflow.steps]]
name = "build"
job = "compile"
params = { profile = "release" }

[[workflow.steps]]
name = "test-linux"
job = "test"
on_failure = { action = "retry", times = 3, backoff = "10s" }

[[workflow.steps]]
name = "test-mac"
job = "test"
after = ["build"]
on_failure = "continue"

[[workflow.steps]]
job = "publish"
after = ["test-linux", "test-mac"]
"#;

    const JOBS: [&str; 3] = ["compile", "test", "publish"];

    fn known(job: &str) -> bool {
        JOBS.contains(&job)
    }

    fn parse(text: &str) -> Result<WorkflowSpec, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let spec = WorkflowSpec::from(file.workflow.into_iter().next().unwrap());
        validate_workflow(&spec, &known).map_err(|e| e.to_string())?;
        Ok(spec)
    }

    #[test]
    fn parses_the_documented_form() {
        let wf = parse(GOOD).unwrap();
        assert_eq!(wf.steps.len(), 4);
        assert_eq!(wf.steps[0].params["profile"], "release");
        assert_eq!(
            wf.steps[1].on_failure,
            OnFailure::Retry {
                times: 3,
                backoff: Duration::from_secs(10)
            }
        );
        assert_eq!(wf.steps[2].on_failure, OnFailure::Continue);
        assert_eq!(wf.steps[3].name, "publish");
        assert_eq!(wf.steps[3].on_failure, OnFailure::Stop);
        assert_eq!(
            wf.dependencies(),
            vec![vec![], vec![0], vec![0], vec![1, 2]]
        );
    }

    #[test]
    fn the_wire_form_round_trips_and_accepts_unknown_fields() {
        let wf = parse(GOOD).unwrap();
        let bytes = rmp_serde::to_vec_named(&wf).unwrap();
        assert_eq!(rmp_serde::from_slice::<WorkflowSpec>(&bytes).unwrap(), wf);
        let json = r#"{"name":"w","extra":1,"steps":[{"name":"a","job":"test","new":true,
            "on_failure":{"action":"retry","times":2,"backoff":"1s","jitter":"x"}}]}"#;
        let wf: WorkflowSpec = serde_json::from_str(json).unwrap();
        assert_eq!(wf.steps[0].after, None);
        assert!(matches!(
            wf.steps[0].on_failure,
            OnFailure::Retry { times: 2, .. }
        ));
    }

    #[test]
    fn the_deploy_form_is_strict() {
        for (broken, expect) in [
            (GOOD.replace("params =", "parms ="), "parms"),
            (GOOD.replace("times = 3,", "times = 3, tries = 1,"), "tries"),
            (GOOD.replace("\"continue\"", "\"ignore\""), "ignore"),
            (
                GOOD.replace("= \"continue\"", "= { action = \"continue\", times = 1 }"),
                "times",
            ),
            (GOOD.replace("\"continue\"", "\"retry\""), "needs a count"),
            (GOOD.replace("\"10s\"", "\"soon\""), "soon"),
            (
                GOOD.replace("action = \"retry\"", "action = \"again\""),
                "again",
            ),
        ] {
            let e = parse(&broken).unwrap_err();
            assert!(e.contains(expect), "{expect}: {e}");
        }
        let plain = GOOD.replace("= \"continue\"", "= { action = \"continue\" }");
        assert_eq!(
            parse(&plain).unwrap().steps[2].on_failure,
            OnFailure::Continue
        );
        let no_backoff = GOOD.replace(", backoff = \"10s\"", "");
        assert_eq!(
            parse(&no_backoff).unwrap().steps[1].on_failure,
            OnFailure::Retry {
                times: 3,
                backoff: Duration::ZERO
            }
        );
    }

    fn step(name: &str, job: &str, after: Option<&[&str]>) -> StepSpec {
        StepSpec {
            name: name.into(),
            job: job.into(),
            params: BTreeMap::new(),
            after: after.map(|a| a.iter().map(|s| s.to_string()).collect()),
            on_failure: OnFailure::Stop,
        }
    }

    fn wf(steps: Vec<StepSpec>) -> WorkflowSpec {
        WorkflowSpec {
            name: "w".into(),
            description: None,
            params: Default::default(),
            steps,
            triggers: Vec::new(),
            misfire: MisfirePolicy::default(),
            notify: Default::default(),
        }
    }

    fn check(w: &WorkflowSpec) -> WorkflowError {
        let e = validate_workflow(w, &known).unwrap_err();
        assert!(e.to_string().starts_with("workflow 'w'"), "{e}");
        e
    }

    #[test]
    fn each_broken_workflow_is_named_with_its_step() {
        let good = || wf(vec![step("a", "test", None), step("b", "test", None)]);
        assert_eq!(validate_workflow(&good(), &known), Ok(()));

        let mut w = good();
        w.name = "a.b".into();
        let e = validate_workflow(&w, &known).unwrap_err();
        assert!(matches!(e, WorkflowError::InvalidName { .. }), "{e}");

        let e = check(&wf(vec![]));
        assert!(matches!(e, WorkflowError::Empty { .. }), "{e}");

        let mut w = good();
        w.steps[1].name = "b c".into();
        let e = check(&w);
        assert!(
            matches!(&e, WorkflowError::InvalidStepName { step, .. } if step == "b c"),
            "{e}"
        );

        let mut w = good();
        w.steps[1].name = "a".into();
        let e = check(&w);
        assert!(matches!(&e, WorkflowError::DuplicateStep { step, .. } if step == "a"));
        assert!(e.to_string().contains("step 'a'"), "{e}");

        let mut w = wf(vec![step("x-1", "test", None), step("x_1", "test", None)]);
        let e = check(&w);
        assert!(e.to_string().contains("'x_1' and 'x-1'"), "{e}");
        w.steps[1].name = "x_2".into();
        assert_eq!(validate_workflow(&w, &known), Ok(()));

        let mut w = good();
        w.steps[1].job = "deploy".into();
        let e = check(&w);
        assert_eq!(
            e.to_string(),
            "workflow 'w' step 'b': job 'deploy' is not deployed"
        );

        let mut w = good();
        w.steps[1].after = Some(vec!["a".into(), "z".into()]);
        let e = check(&w);
        assert!(
            matches!(&e, WorkflowError::DanglingAfter { step, after, .. } if step == "b" && after == "z"),
            "{e}"
        );

        let mut w = good();
        w.steps[1].on_failure = OnFailure::Retry {
            times: 0,
            backoff: Duration::ZERO,
        };
        let e = check(&w);
        assert!(matches!(&e, WorkflowError::RetryTimesZero { step, .. } if step == "b"));

        let mut w = good();
        w.steps[0].params.insert("bad-name".into(), "1".into());
        let e = check(&w);
        assert!(
            e.to_string().contains("step 'a': parameter 'bad-name'"),
            "{e}"
        );
    }

    #[test]
    fn cycles_are_named_step_by_step() {
        // a -> b -> c -> a, with d hanging off b; listed out of order.
        let w = wf(vec![
            step("d", "test", Some(&["b"])),
            step("a", "test", Some(&["c"])),
            step("b", "test", Some(&["a"])),
            step("c", "test", Some(&["b"])),
        ]);
        let e = check(&w);
        let WorkflowError::Cycle { steps, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(steps.len(), 4);
        assert_eq!(steps.first(), steps.last());
        let mut on: Vec<_> = steps[..3].to_vec();
        on.sort();
        assert_eq!(on, ["a", "b", "c"]);
        // Each step on the cycle is followed by one that waits for it.
        for pair in steps.windows(2) {
            let later = w.steps.iter().find(|s| s.name == pair[1]).unwrap();
            assert!(later.after.as_ref().unwrap().contains(&pair[0]), "{e}");
        }
        assert!(e.to_string().contains(" -> "), "{e}");

        let e = check(&wf(vec![step("a", "test", Some(&["a"]))]));
        assert!(e.to_string().ends_with("cycle: a -> a"), "{e}");

        // A step listed before the one it waits for is no cycle.
        let w = wf(vec![
            step("b", "test", Some(&["a"])),
            step("a", "test", Some(&[])),
        ]);
        assert_eq!(validate_workflow(&w, &known), Ok(()));
    }

    const SCHEDULED: &str = r#"
misfire = { policy = "fire-all", max = 50 }
[[workflow.triggers]]
kind = "cron"
expr = "*/5 * * * * *"
time_zone = "Europe/Berlin"
[[workflow.triggers]]
kind = "interval"
every = "90s"
"#;

    /// GOOD with SCHEDULED's keys in its `[[workflow]]` table.
    fn scheduled() -> String {
        GOOD.replacen(
            "name = \"nightly\"\n",
            &format!("name = \"nightly\"\n{SCHEDULED}"),
            1,
        )
    }

    #[test]
    fn triggers_and_misfire_parse_as_a_jobs_do() {
        let wf = parse(&scheduled()).unwrap();
        assert_eq!(wf.steps.len(), 4);
        assert_eq!(
            wf.triggers,
            [
                TriggerSpec::Cron {
                    expr: "*/5 * * * * *".into(),
                    time_zone: Some("Europe/Berlin".into()),
                    dst: Default::default(),
                    calendar: None,
                    jitter: None,
                },
                TriggerSpec::Interval {
                    every: Duration::from_secs(90),
                    start: None,
                    jitter: None,
                },
            ]
        );
        assert_eq!(
            wf.misfire,
            MisfirePolicy::FireAll {
                max: 50,
                max_lateness: None
            }
        );

        let plain = parse(GOOD).unwrap();
        assert!(plain.triggers.is_empty());
        assert_eq!(plain.misfire, MisfirePolicy::default());
        let window = parse(&GOOD.replacen(
            "name = \"nightly\"\n",
            "name = \"nightly\"\nmisfire = { policy = \"fire-once\" }\n",
            1,
        ));
        assert_eq!(window.unwrap().misfire, MisfirePolicy::default());
    }

    #[test]
    fn broken_triggers_name_the_workflow_and_the_field() {
        let text = scheduled();
        for (broken, expect) in [
            (
                text.replace("*/5 * * * * *", "every tuesday"),
                "workflow 'nightly': field 'triggers[0]': cron expression 'every tuesday'",
            ),
            (
                text.replace("Europe/Berlin", "Mars/Olympus"),
                "Mars/Olympus",
            ),
            (
                text.replace("90s", "10ms"),
                "workflow 'nightly': field 'triggers[1]': interval",
            ),
            (
                text.replace("max = 50", "max = 0"),
                "workflow 'nightly': field 'misfire'",
            ),
            // the deploy form is strict, as for a job
            (
                text.replace("kind = \"interval\"", "kind = \"hourly\""),
                "hourly",
            ),
            (text.replace("time_zone", "timezone"), "timezone"),
            (text.replace("max = 50", "maximum = 50"), "maximum"),
            // workflow slots always start a new order
            (
                text.replace("misfire =", "concurrency = \"forbid\"\nmisfire ="),
                "concurrency",
            ),
        ] {
            let e = parse(&broken).unwrap_err();
            assert!(e.contains(expect), "{expect}: {e}");
        }

        let mut w = wf(vec![step("a", "test", None)]);
        w.triggers.push(TriggerSpec::Interval {
            every: Duration::from_millis(500),
            start: None,
            jitter: None,
        });
        let e = check(&w);
        assert!(
            matches!(&e, WorkflowError::InvalidSchedule { field, .. } if field == "triggers[0]"),
            "{e}"
        );
        w.triggers.clear();
        w.misfire = MisfirePolicy::FireAll {
            max: 0,
            max_lateness: None,
        };
        let e = check(&w);
        assert_eq!(
            e.to_string(),
            "workflow 'w': field 'misfire': misfire fire-all max 0: must be between 1 and 10000"
        );
    }

    #[test]
    fn triggers_travel_on_the_wire_and_are_left_out_when_none() {
        let wf = parse(&scheduled()).unwrap();
        let bytes = rmp_serde::to_vec_named(&wf).unwrap();
        assert_eq!(rmp_serde::from_slice::<WorkflowSpec>(&bytes).unwrap(), wf);
        let json = serde_json::to_value(parse(GOOD).unwrap()).unwrap();
        assert!(json.get("triggers").is_none(), "{json}");
        // a peer that knows no triggers sends none: the defaults apply
        let json = r#"{"name":"w","steps":[{"name":"a","job":"test"}]}"#;
        let wf: WorkflowSpec = serde_json::from_str(json).unwrap();
        assert!(wf.triggers.is_empty());
        assert_eq!(wf.misfire, MisfirePolicy::default());
    }

    #[test]
    fn a_deploy_names_a_workflow_once() {
        let w = wf(vec![step("a", "test", None)]);
        let e = validate_workflows(&[w.clone(), w], &known).unwrap_err();
        assert_eq!(e.to_string(), "workflow 'w': defined twice");
    }

    #[test]
    fn workflow_params_are_declared_as_a_jobs() {
        let text = GOOD.replacen(
            "name = \"nightly\"\n",
            "name = \"nightly\"\n[workflow.params.channel]\ndefault = \"beta\"\n[workflow.params.version]\nrequired = true\n",
            1,
        );
        let wf = parse(&text).unwrap();
        assert_eq!(wf.params["channel"].default.as_deref(), Some("beta"));
        assert!(wf.params["version"].required);
        let bytes = rmp_serde::to_vec_named(&wf).unwrap();
        assert_eq!(rmp_serde::from_slice::<WorkflowSpec>(&bytes).unwrap(), wf);

        for (broken, expect) in [
            (
                text.replace("params.channel]", "params.chan-nel]"),
                "workflow 'nightly': field 'params.chan-nel': parameter names",
            ),
            (
                text.replace("required = true", "required = true\ndefault = \"1\""),
                "workflow 'nightly': field 'params.version': a required parameter cannot have a default",
            ),
            (text.replace("default = \"beta\"", "dflt = \"beta\""), "dflt"),
            (
                format!("{text}[[workflow.triggers]]\nkind = \"interval\"\nevery = \"1h\"\n"),
                "field 'params.version': a workflow with triggers fires without parameters",
            ),
        ] {
            let e = parse(&broken).unwrap_err();
            assert!(e.contains(expect), "{expect}: {e}");
        }
    }
}
