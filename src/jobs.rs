//! Job definitions: the deploy file format (TOML), validation, the pure
//! rules that turn an order's parameters into a process's arguments and
//! environment, and what a job's concurrency policy does with the order of
//! a trigger's slot ([`on_slot`]).
//!
//! Architecture invariant: a submitter can only choose values for parameters a
//! job declares; the program, its arguments and environment come from the
//! deployed definition. Parameter values never pass through a shell. A
//! task's environment gets `BATON_PARAM_<NAME>` only for names its job
//! declares ([`command_for`]), whatever its order carries; of what a
//! workflow step is offered, [`resolve_step_params`] keeps only the names
//! its job declares. The broker validates a job again on every deploy.
//!
//! Long (about 540 lines before its tests) because the file format's types,
//! their checks and their conversion to the wire types read best in one
//! place; tables with rules of their own (`notify`, `retry`, `spread`,
//! `triggers`, durations) live in `jobs/`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

mod files;
pub mod human;
pub mod notify;
pub mod retry;
pub mod spread;
pub mod when;

pub use files::{load_deploy_file, load_deploy_files, parse_deploy_file, parse_deploy_files};

pub(crate) use when::{MisfireDef, TriggerDef};

use crate::params::{resolve_declared, validate_declared, ParamDef};
pub use crate::params::{ParamError, MAX_PARAMS, MAX_PARAM_BYTES};
use crate::protocol::subjects::is_valid_token;
use crate::protocol::{
    ClusterMember, ClusterSpec, ConcurrencyPolicy, JobSpec, MisfirePolicy, SchedulingMode,
    TriggerSpec, WorkflowSpec,
};

/// A deploy file: `[[job]]` and `[[cluster]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployFile {
    #[serde(default)]
    job: Vec<JobDef>,
    #[serde(default)]
    cluster: Vec<ClusterDef>,
    #[serde(default)]
    workflow: Vec<crate::workflow::WorkflowDef>,
    #[serde(default)]
    calendar: Vec<when::CalendarDef>,
}

/// One `[[cluster]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterDef {
    name: String,
    mode: SchedulingMode,
    members: Vec<MemberDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberDef {
    #[serde(default)]
    subagent: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    priority: i32,
}

/// What one or more deploy files define.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deployment {
    pub jobs: Vec<JobSpec>,
    pub clusters: Vec<ClusterSpec>,
    pub workflows: Vec<WorkflowSpec>,
    /// The `[[calendar]]` tables, resolved; they travel inside the
    /// triggers that name them, so they are not sent on their own.
    pub calendars: BTreeMap<String, crate::protocol::CalendarSpec>,
}

/// One `[[job]]` table as an operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobDef {
    name: String,
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default, with = "human::option")]
    timeout: Option<Duration>,
    #[serde(default)]
    params: BTreeMap<String, ParamDef>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default = "yes")]
    restartable: bool,
    #[serde(default)]
    triggers: Vec<TriggerDef>,
    #[serde(default)]
    misfire: Option<MisfireDef>,
    #[serde(default)]
    concurrency: ConcurrencyPolicy,
    #[serde(default)]
    retry: Option<retry::RetryDef>,
    #[serde(default)]
    spread: Option<spread::SpreadDef>,
    #[serde(default)]
    notify: notify::NotifyDef,
}

fn yes() -> bool {
    true
}

/// A definition that is not valid, naming the job (or cluster) and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} '{job}': field '{field}': {message}")]
pub struct JobError {
    /// "job" or "cluster".
    pub kind: &'static str,
    pub job: String,
    pub field: String,
    pub message: String,
}

/// Why a deploy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeployFileError {
    // the cause is in the message, not a `source`: printed once
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: {error}")]
    Invalid { file: String, error: JobError },
    #[error("{file}: {error}")]
    InvalidWorkflow {
        file: String,
        error: Box<crate::workflow::WorkflowError>,
    },
    #[error(transparent)]
    Calendar(#[from] when::CalendarDefError),
    #[error("{file}: no [[job]], [[cluster]], [[workflow]] or [[calendar]] table found")]
    Empty { file: String },
    #[error("{kind} '{name}' is defined in both {first} and {second}: keep one")]
    InTwoFiles {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
}

pub(crate) fn deployment(
    file: &str,
    parsed: DeployFile,
    calendars: &when::Calendars,
) -> Result<Deployment, DeployFileError> {
    let invalid = |error| DeployFileError::Invalid {
        file: file.to_string(),
        error,
    };
    let mut clusters: Vec<ClusterSpec> = Vec::new();
    for def in parsed.cluster {
        let spec = ClusterSpec {
            name: def.name,
            mode: def.mode,
            members: def
                .members
                .into_iter()
                .map(|m| ClusterMember {
                    subagent: m.subagent,
                    labels: m.labels,
                    priority: m.priority,
                })
                .collect(),
        };
        validate_cluster(&spec).map_err(invalid)?;
        if clusters.iter().any(|c| c.name == spec.name) {
            return Err(invalid(JobError {
                kind: "cluster",
                job: spec.name.clone(),
                field: "name".into(),
                message: "defined twice in this file".into(),
            }));
        }
        clusters.push(spec);
    }
    let mut seen = BTreeMap::new();
    let mut specs = Vec::with_capacity(parsed.job.len());
    for def in parsed.job {
        TriggerDef::check(&def.triggers).map_err(|(field, message)| {
            invalid(JobError {
                kind: "job",
                job: def.name.clone(),
                field,
                message,
            })
        })?;
        let spread = def.spread.map(spread::SpreadDef::policy).transpose();
        let spread = spread.map_err(|(field, message)| {
            invalid(JobError {
                kind: "job",
                job: def.name.clone(),
                field: field.into(),
                message,
            })
        })?;
        let spec = JobSpec {
            name: def.name,
            program: def.program,
            args: def.args,
            env: def.env,
            working_dir: def.working_dir,
            timeout_ms: def.timeout.map(|d| d.as_millis() as u64),
            params: def
                .params
                .into_iter()
                .map(|(name, p)| (name, p.into()))
                .collect(),
            description: def.description,
            cluster: def.cluster,
            restartable: def.restartable,
            triggers: def.triggers.into_iter().map(TriggerSpec::from).collect(),
            misfire: def.misfire.map(MisfirePolicy::from).unwrap_or_default(),
            concurrency: def.concurrency,
            retry: def.retry.map(Into::into),
            spread,
            notify: def.notify.into(),
        };
        let mut spec = spec;
        when::resolve(&mut spec.triggers, calendars).map_err(|(field, message)| {
            invalid(JobError {
                kind: "job",
                job: spec.name.clone(),
                field,
                message,
            })
        })?;
        validate_job(&spec).map_err(invalid)?;
        if seen.insert(spec.name.clone(), ()).is_some() {
            return Err(invalid(JobError {
                kind: "job",
                job: spec.name.clone(),
                field: "name".into(),
                message: "defined twice in this file".into(),
            }));
        }
        specs.push(spec);
    }
    // a step's job may be deployed earlier: the broker checks those names
    // and those steps' parameters; here, those of the jobs in this file
    for def in &parsed.workflow {
        TriggerDef::check(def.triggers()).map_err(|(field, message)| {
            invalid(JobError {
                kind: "workflow",
                job: def.name().to_string(),
                field,
                message,
            })
        })?;
    }
    let mut workflows: Vec<WorkflowSpec> = parsed.workflow.into_iter().map(Into::into).collect();
    for w in &mut workflows {
        when::resolve(&mut w.triggers, calendars).map_err(|(field, message)| {
            invalid(JobError {
                kind: "workflow",
                job: w.name.clone(),
                field,
                message,
            })
        })?;
    }
    let job_of = |name: &str| specs.iter().find(|j| j.name == name).cloned();
    crate::workflow::validate_workflows(&workflows, &|_| true)
        .and_then(|()| {
            workflows
                .iter()
                .try_for_each(|w| crate::workflow::params::check_steps(w, &job_of))
        })
        .map_err(|source| DeployFileError::InvalidWorkflow {
            file: file.to_string(),
            error: Box::new(source),
        })?;
    Ok(Deployment {
        jobs: specs,
        clusters,
        workflows,
        calendars: BTreeMap::new(),
    })
}

/// Checks one cluster definition; the broker runs this on every deploy too.
pub fn validate_cluster(cluster: &ClusterSpec) -> Result<(), JobError> {
    let err = |field: String, message: String| JobError {
        kind: "cluster",
        job: cluster.name.clone(),
        field,
        message,
    };
    if !is_valid_token(&cluster.name) {
        return Err(err(
            "name".into(),
            "must be 1-64 letters, digits, '-' or '_'".into(),
        ));
    }
    if cluster.members.is_empty() {
        return Err(err(
            "members".into(),
            "list at least one member: { subagent = \"ID\" } or { labels = { KEY = \"VALUE\" } }"
                .into(),
        ));
    }
    for (i, member) in cluster.members.iter().enumerate() {
        let field = format!("members[{i}]");
        match &member.subagent {
            Some(id) if !is_valid_token(id) => {
                return Err(err(field, format!("subagent id {id:?} is not a valid id")))
            }
            None if member.labels.is_empty() => {
                return Err(err(field, "name a subagent or labels".into()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks one job definition; the broker runs this on every deploy too.
pub fn validate_job(job: &JobSpec) -> Result<(), JobError> {
    let err = |field: &str, message: String| JobError {
        kind: "job",
        job: job.name.clone(),
        field: field.to_string(),
        message,
    };
    if !is_valid_token(&job.name) {
        return Err(err(
            "name",
            "must be 1-64 letters, digits, '-' or '_' (it becomes a subject token)".into(),
        ));
    }
    if job.program.trim().is_empty() {
        return Err(err("program", "must not be empty".into()));
    }
    if job.program.contains('\0') || job.args.iter().any(|a| a.contains('\0')) {
        return Err(err("args", "must not contain NUL bytes".into()));
    }
    if job.cluster.as_deref().is_some_and(|c| !is_valid_token(c)) {
        return Err(err("cluster", "not a valid cluster name".into()));
    }
    if job.timeout_ms == Some(0) {
        return Err(err("timeout", "must be longer than zero".into()));
    }
    for key in job.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(err("env", format!("invalid variable name {key:?}")));
        }
    }
    // a subject trigger gives parameters: checked below, mapping by mapping
    let clocked = job.triggers.iter().any(TriggerSpec::is_clock);
    if let Err((field, message)) = validate_declared(&job.params, "job", clocked) {
        return Err(err(&field, message));
    }
    if let Err((field, message)) = subject_triggers_valid(job) {
        return Err(err(&field, message));
    }
    for (i, trigger) in job.triggers.iter().enumerate() {
        if let Err(e) = trigger.validate() {
            return Err(err(&format!("triggers[{i}]"), e.to_string()));
        }
    }
    if let Err((field, message)) = crate::triggers::files::check_params(&job.triggers, &job.params)
    {
        return Err(err(&field, message));
    }
    if let Err(e) = job.misfire.validate() {
        return Err(err("misfire", e.to_string()));
    }
    if let Some(Err((field, message))) = job.retry.as_ref().map(retry::validate) {
        return Err(err(field, message));
    }
    if let Some(Err((field, message))) = job.spread.as_ref().map(spread::validate) {
        return Err(err(field, message));
    }
    if let Err((field, message)) = notify::validate(&job.notify) {
        return Err(err(&field, message));
    }
    for arg in &job.args {
        for used in placeholders(arg) {
            if !job.params.contains_key(used) {
                return Err(err(
                    "args",
                    format!(
                        "{{{{{used}}}}} names no declared parameter; declare [job.params.{used}]"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A job's subject triggers: subject and mappings sound, every mapped
/// parameter declared, every required one mapped, no two of its subjects
/// overlapping unless one covers the other (one consumer filters on them).
fn subject_triggers_valid(job: &JobSpec) -> Result<(), (String, String)> {
    use crate::triggers::subject;
    let declared = |p: &str| job.params.contains_key(p);
    let mut seen: Vec<&str> = Vec::new();
    for (i, trigger) in job.triggers.iter().enumerate() {
        let TriggerSpec::Subject { name, params } = trigger else {
            continue;
        };
        subject::check_trigger(name, params, &declared)
            .map_err(|(field, message)| (format!("triggers[{i}].{field}"), message))?;
        let unmapped =
            (job.params.iter()).find(|(p, spec)| spec.required && !params.contains_key(*p));
        if let Some((p, _)) = unmapped {
            return Err((
                format!("triggers[{i}].params"),
                format!("maps no value for required parameter '{p}'; map it (params = {{ {p} = \"$.field\" }}) or give it a default"),
            ));
        }
        let clash = seen.iter().find(|o| {
            subject::overlap(o, name) && !subject::covers(o, name) && !subject::covers(name, o)
        });
        if let Some(other) = clash {
            return Err((
                format!("triggers[{i}].name"),
                format!("'{name}' and '{other}' overlap without one covering the other; use one subject that covers both"),
            ));
        }
        seen.push(name);
    }
    Ok(())
}

/// The names inside `{{...}}` in one argument.
pub(crate) fn placeholders(arg: &str) -> impl Iterator<Item = &str> {
    arg.split("{{")
        .skip(1)
        .filter_map(|rest| rest.split_once("}}").map(|(name, _)| name.trim()))
}

/// The full set of parameter values for an order of a job: given values
/// checked against the job's declaration, defaults filled in.
pub fn resolve_params(
    job: &JobSpec,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParamError> {
    resolve_declared("job", &job.name, &job.params, given)
}

/// A workflow step's parameters: of those offered (the order's, earlier
/// steps' results, the step's own), only the ones its job declares, resolved
/// as by [`resolve_params`] (defaults, required ones). Every other name is
/// left out, so it never reaches the task.
pub fn resolve_step_params(
    job: &JobSpec,
    offered: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParamError> {
    let declared: BTreeMap<String, String> = offered
        .iter()
        .filter(|(name, _)| job.params.contains_key(*name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    resolve_params(job, &declared)
}

/// Arguments and environment for one run: `{{name}}` replaced in arguments
/// (an absent optional parameter becomes empty), and `BATON_PARAM_<NAME>`
/// for each parameter the job declares (any other is left out, say one the
/// job no longer declares since the order was accepted), `BATON_JOB` and
/// `BATON_ORDER_ID` added to the job's environment.
pub fn command_for(
    job: &JobSpec,
    order_id: &str,
    params: &BTreeMap<String, String>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let args = job.args.iter().map(|arg| substitute(arg, params)).collect();
    let mut env = job.env.clone();
    env.insert("BATON_JOB".into(), job.name.clone());
    env.insert("BATON_ORDER_ID".into(), order_id.to_string());
    let declared = params
        .iter()
        .filter(|(name, _)| job.params.contains_key(*name));
    for (name, value) in declared {
        env.insert(
            format!("BATON_PARAM_{}", name.to_uppercase()),
            value.clone(),
        );
    }
    (args, env)
}

fn substitute(arg: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim();
        if let Some(value) = params.get(name) {
            out.push_str(value);
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
    out
}

/// What the order of a trigger's slot does, by its job's concurrency policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotDecision {
    Fire,
    Skip,
    CancelRunningAndFire,
}

/// Decides a slot given the job's runs still active (not finished). The
/// broker asks at submit, so the policy holds whichever agent fired.
pub fn on_slot(policy: ConcurrencyPolicy, active_runs: usize) -> SlotDecision {
    match (policy, active_runs) {
        (ConcurrencyPolicy::Allow, _) | (_, 0) => SlotDecision::Fire,
        (ConcurrencyPolicy::Forbid, _) => SlotDecision::Skip,
        (ConcurrencyPolicy::Replace, _) => SlotDecision::CancelRunningAndFire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[job]]
name = "hello"
program = "echo"
args = ["hello", "{{who}}!"]
timeout = "30s"
[job.env]
GREETING = "hi"
[job.params.who]
default = "world"
[job.params.mood]
"#;

    #[test]
    fn parses_and_converts() {
        let jobs = parse_deploy_file("jobs.toml", GOOD).unwrap().jobs;
        assert_eq!(jobs.len(), 1);
        assert!(jobs[0].restartable);
        assert_eq!(jobs[0].timeout_ms, Some(30_000));
        assert_eq!(jobs[0].params["who"].default.as_deref(), Some("world"));
    }

    #[test]
    fn retry_tables_parse_and_bad_ones_name_their_field() {
        let text = format!("{GOOD}\n");
        let text = text.replace(
            "timeout = \"30s\"",
            "timeout = \"30s\"\nretry = { times = 3, backoff = \"2s\", max_backoff = \"1m\", jitter = true }",
        );
        let jobs = parse_deploy_file("jobs.toml", &text).unwrap().jobs;
        let policy = crate::protocol::RetryPolicy {
            times: 3,
            backoff_ms: 2_000,
            max_backoff_ms: Some(60_000),
            jitter: true,
        };
        assert_eq!(jobs[0].retry, Some(policy));
        assert_eq!(
            parse_deploy_file("jobs.toml", GOOD).unwrap().jobs[0].retry,
            None
        );
        for (bad, field) in [
            ("times = 0, backoff = \"2s\"", "retry.times"),
            ("times = 1000, backoff = \"2s\"", "retry.times"),
            ("times = 3, backoff = \"0s\"", "retry.backoff"),
            (
                "times = 3, backoff = \"2s\", max_backoff = \"1s\"",
                "retry.max_backoff",
            ),
        ] {
            let text = GOOD.replace("timeout = \"30s\"", &format!("retry = {{ {bad} }}"));
            let e = parse_deploy_file("jobs.toml", &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("field '{field}'")), "{bad}: {e}");
        }
        // unknown keys and a missing backoff are refused by the parser
        for bad in ["times = 3", "times = 3, backoff = \"2s\", jiter = true"] {
            let text = GOOD.replace("timeout = \"30s\"", &format!("retry = {{ {bad} }}"));
            let e = parse_deploy_file("jobs.toml", &text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("retry"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_file_job_and_field() {
        let text = GOOD.replace("\"30s\"", "\"soon\"");
        let e = parse_deploy_file("jobs.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("jobs.toml:") && e.contains("timeout"), "{e}");

        let text = GOOD.replace("{{who}}!", "{{whom}}");
        let e = parse_deploy_file("jobs.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("jobs.toml") && e.contains("job 'hello'") && e.contains("field 'args'"),
            "{e}"
        );

        let text = GOOD.replace("name = \"hello\"", "name = \"hel lo\"");
        let e = parse_deploy_file("jobs.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field 'name'"), "{e}");

        let text = GOOD.replace("program = \"echo\"", "program = \"echo\"\nprogramme = 1");
        let e = parse_deploy_file("jobs.toml", &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("programme"), "{e}");
    }

    #[test]
    fn a_trigger_s_bad_time_or_duration_says_the_form_and_skip_takes_nothing() {
        let job = |extra: &str| format!("[[job]]\nname = \"a\"\nprogram = \"true\"\n{extra}");
        let error = |extra: &str| {
            let e = parse_deploy_file("j.toml", &job(extra)).unwrap_err();
            e.to_string()
        };
        let at = |t: &str| format!("[[job.triggers]]\nkind = \"at\"\nat = {t}\n");
        let e = error(&at("\"2027-01-01T10:00:00\""));
        assert!(
            e.contains("has no offset") && e.contains("2026-12-24T17:00:00Z"),
            "{e}"
        );
        for fine in ["\"2027-01-01T10:00:00Z\"", "2027-01-01T10:00:00+01:00"] {
            let deployed = parse_deploy_file("j.toml", &job(&at(fine)));
            assert!(deployed.is_ok(), "{fine}: {deployed:?}");
        }
        let cron = "[[job.triggers]]\nkind = \"cron\"\nexpr = \"0 * * * * *\"\n";
        let e = error(&format!("{cron}jitter = \"banana\"\n"));
        assert!(
            e.contains("\"banana\" is not a duration") && e.contains("1h30m"),
            "{e}"
        );
        let e = error(&format!(
            "misfire = {{ policy = \"skip\", window = \"5m\" }}\n{cron}"
        ));
        assert!(e.contains("unknown field `window`"), "{e}");
        let skip = parse_deploy_file(
            "j.toml",
            &job(&format!("misfire = {{ policy = \"skip\" }}\n{cron}")),
        );
        assert_eq!(skip.unwrap().jobs[0].misfire, MisfirePolicy::Skip);
    }

    #[test]
    fn params_are_checked_and_substituted() {
        let job = &parse_deploy_file("f", GOOD).unwrap().jobs[0];
        let mut given = BTreeMap::new();
        given.insert("who".to_string(), "Ann; rm -rf /".to_string());
        let params = resolve_params(job, &given).unwrap();
        let (args, env) = command_for(job, "o1", &params);
        assert_eq!(args, vec!["hello", "Ann; rm -rf /!"]);
        assert_eq!(env["BATON_PARAM_WHO"], "Ann; rm -rf /");
        assert_eq!(env["GREETING"], "hi");

        let defaults = resolve_params(job, &BTreeMap::new()).unwrap();
        assert_eq!(command_for(job, "o1", &defaults).0, vec!["hello", "world!"]);

        let mut bad = BTreeMap::new();
        bad.insert("cmd".to_string(), "x".to_string());
        let e = resolve_params(job, &bad).unwrap_err();
        assert!(matches!(e, ParamError::Unknown { .. }), "{e}");
        assert!(e.to_string().contains("mood, who"), "{e}");
    }

    #[test]
    fn clusters_parse_and_validate() {
        let text = r#"
[[cluster]]
name = "main"
mode = "fixed-priority"
members = [{ subagent = "sub-1", priority = 2 }, { labels = { zone = "b" } }]

[[job]]
name = "x"
program = "true"
cluster = "main"
restartable = false
"#;
        let d = parse_deploy_file("f.toml", text).unwrap();
        assert_eq!(d.clusters[0].mode, SchedulingMode::FixedPriority);
        assert_eq!(d.clusters[0].members[0].priority, 2);
        assert_eq!(d.jobs[0].cluster.as_deref(), Some("main"));
        assert!(!d.jobs[0].restartable);

        let bad = text.replace("{ labels = { zone = \"b\" } }", "{ priority = 1 }");
        let e = parse_deploy_file("f.toml", &bad).unwrap_err().to_string();
        assert!(
            e.contains("cluster 'main'") && e.contains("members[1]"),
            "{e}"
        );

        let bad = text.replace("fixed-priority", "random");
        let e = parse_deploy_file("f.toml", &bad).unwrap_err().to_string();
        assert!(e.contains("random"), "{e}");
    }

    #[test]
    fn required_params_must_be_given() {
        let text = GOOD.replace("[job.params.mood]", "[job.params.mood]\nrequired = true");
        let job = &parse_deploy_file("f", &text).unwrap().jobs[0];
        let e = resolve_params(job, &BTreeMap::new()).unwrap_err();
        assert_eq!(
            e,
            ParamError::Missing {
                kind: "job",
                name: "hello".into(),
                param: "mood".into()
            }
        );
    }

    #[test]
    fn file_triggers_parse_with_defaults_and_need_their_parameters() {
        let text = r#"
[[job]]
name = "import"
program = "true"
[job.params.file]
default = ""
[job.params.file_name]
default = ""
[[job.triggers]]
kind = "file"
dir = "/data/in"
pattern = "*.csv"
"#;
        let job = &parse_deploy_file("f.toml", text).unwrap().jobs[0];
        assert_eq!(
            job.triggers,
            vec![TriggerSpec::File {
                dir: "/data/in".into(),
                pattern: "*.csv".into(),
                settle: std::time::Duration::from_secs(2),
                rescan: std::time::Duration::from_secs(10),
            }]
        );
        for (broken, expect) in [
            (text.replace("/data/in", "data/in"), "absolute"),
            (text.replace("*.csv", "[*.csv"), "not a glob"),
            (
                text.replace("[job.params.file_name]", "[job.params.other]"),
                "[job.params.file_name]",
            ),
            (text.replace("pattern =", "glob ="), "glob"),
            (
                format!("{text}settle = \"forever\"\n"),
                "\"forever\" is not a duration",
            ),
        ] {
            let e = parse_deploy_file("f.toml", &broken)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{expect}: {e}");
        }
    }

    #[test]
    fn triggers_parse_and_validate() {
        let text = r#"
[[job]]
name = "tick"
program = "true"
misfire = { policy = "fire-all", max = 50 }
concurrency = "forbid"
[[job.triggers]]
kind = "cron"
expr = "*/5 * * * * *"
time_zone = "Europe/Berlin"
[[job.triggers]]
kind = "interval"
every = "90s"
"#;
        let job = &parse_deploy_file("f.toml", text).unwrap().jobs[0];
        assert_eq!(job.triggers.len(), 2);
        assert_eq!(
            job.misfire,
            MisfirePolicy::FireAll {
                max: 50,
                max_lateness: None
            }
        );
        assert_eq!(job.concurrency, ConcurrencyPolicy::Forbid);

        let plain = &parse_deploy_file("f.toml", GOOD).unwrap().jobs[0];
        assert!(plain.triggers.is_empty());
        assert_eq!(plain.misfire, MisfirePolicy::default());
        assert_eq!(plain.concurrency, ConcurrencyPolicy::Allow);

        for (broken, expect) in [
            (
                text.replace("*/5 * * * * *", "every tuesday"),
                "triggers[0]",
            ),
            (
                text.replace("Europe/Berlin", "Mars/Olympus"),
                "Mars/Olympus",
            ),
            (text.replace("90s", "10ms"), "triggers[1]"),
            (text.replace("max = 50", "max = 0"), "misfire"),
            (text.replace("\"forbid\"", "\"sometimes\""), "sometimes"),
            (
                text.replace("kind = \"interval\"", "kind = \"hourly\""),
                "hourly",
            ),
            (text.replace("time_zone", "timezone"), "timezone"),
            (text.replace("max = 50", "maximum = 50"), "maximum"),
        ] {
            let e = parse_deploy_file("f.toml", &broken)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{expect}: {e}");
        }
        let required = format!("{text}[job.params.x]\nrequired = true\n");
        let e = parse_deploy_file("f.toml", &required)
            .unwrap_err()
            .to_string();
        assert!(e.contains("params.x") && e.contains("default"), "{e}");
    }

    #[test]
    fn a_value_or_count_over_the_limit_is_refused() {
        let job = &parse_deploy_file("f", GOOD).unwrap().jobs[0];
        let given = |pairs: Vec<(String, String)>| pairs.into_iter().collect();
        let at_limit = given(vec![("who".into(), "x".repeat(MAX_PARAM_BYTES))]);
        assert!(resolve_params(job, &at_limit).is_ok());
        let over = given(vec![("who".into(), "x".repeat(MAX_PARAM_BYTES + 1))]);
        let e = resolve_params(job, &over).unwrap_err();
        assert_eq!(
            e,
            ParamError::BadValue {
                param: "who".into()
            }
        );
        let nul = given(vec![("who".into(), "a\0b".into())]);
        assert!(matches!(
            resolve_params(job, &nul),
            Err(ParamError::BadValue { .. })
        ));
        let many = given(
            (0..=MAX_PARAMS)
                .map(|i| (format!("p{i}"), "1".into()))
                .collect(),
        );
        let e = resolve_params(job, &many).unwrap_err();
        assert_eq!(
            e,
            ParamError::TooMany {
                count: MAX_PARAMS + 1
            }
        );
        assert!(e.to_string().contains("at most 256"), "{e}");
    }

    #[test]
    fn a_step_gets_only_the_parameters_its_job_declares() {
        let job = &parse_deploy_file("f", GOOD).unwrap().jobs[0];
        let offered: BTreeMap<String, String> = [
            ("who", "Ann"),
            ("build_exit_code", "0"),
            ("secret", "s3cret"),
            ("bad-name", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let params = resolve_step_params(job, &offered).unwrap();
        assert_eq!(
            params,
            BTreeMap::from([("who".to_string(), "Ann".to_string())])
        );
        // and whatever an order carries, only declared names reach the environment
        let (_, env) = command_for(job, "o1", &offered);
        let passed: Vec<&String> = env
            .keys()
            .filter(|k| k.starts_with("BATON_PARAM_"))
            .collect();
        assert_eq!(passed, ["BATON_PARAM_WHO"]);
    }

    #[test]
    fn workflow_errors_name_the_file_the_workflow_and_the_parameter() {
        let text = format!(
            "{GOOD}\n[[workflow]]\nname = \"w\"\n[workflow.params.who]\n\
             [[workflow.steps]]\nname = \"greet\"\njob = \"hello\"\nparams = {{ mood = \"{{{{who}}}}\" }}\n"
        );
        let d = parse_deploy_file("f.toml", &text).unwrap();
        assert!(d.workflows[0].params.contains_key("who"));
        for (broken, expect) in [
            (
                text.replace("[workflow.params.who]", "[workflow.params.whom]"),
                "f.toml: workflow 'w' step 'greet': parameter 'mood': {{who}} names no declared",
            ),
            (
                text.replace("mood =", "mod ="),
                "f.toml: workflow 'w' step 'greet': parameter 'mod': job 'hello' declares no such",
            ),
            (
                text.replace("[workflow.params.who]", "[workflow.params.who-1]"),
                "f.toml: workflow 'w': field 'params.who-1'",
            ),
        ] {
            let e = parse_deploy_file("f.toml", &broken)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expect), "{expect}: {e}");
        }
    }

    #[test]
    fn concurrency_policies_decide_each_slot() {
        use ConcurrencyPolicy::*;
        use SlotDecision::*;
        assert_eq!(ConcurrencyPolicy::default(), Allow);
        assert_eq!(on_slot(Allow, 0), Fire);
        assert_eq!(on_slot(Allow, 3), Fire);
        assert_eq!(on_slot(Forbid, 0), Fire);
        assert_eq!(on_slot(Forbid, 1), Skip);
        assert_eq!(on_slot(Replace, 0), Fire);
        assert_eq!(on_slot(Replace, 2), CancelRunningAndFire);
    }
}
