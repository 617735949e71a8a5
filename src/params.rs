//! Parameters: the rules a job's and a workflow's declarations
//! (`[job.params.NAME]`, `[workflow.params.NAME]`, each a [`ParamSpec`])
//! share, and the values an order gives them. Pure.
//!
//! A name is 1-64 ASCII letters, digits and `_`; a value at most
//! [`MAX_PARAM_BYTES`] without NUL; at most [`MAX_PARAMS`] are declared or
//! given. A required parameter has no default, and none is required when
//! the job or workflow is triggered (`validate_declared`, at deploy). An
//! order gives only declared names and every required one; defaults fill
//! in the rest ([`resolve_declared`], at submit). The limits a submitter
//! meets are listed in `schemas/README.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::protocol::ParamSpec;

/// Longest parameter value accepted, in bytes.
pub const MAX_PARAM_BYTES: usize = 64 * 1024;
/// Most parameters a job or workflow declares, and a submit may give.
pub const MAX_PARAMS: usize = 256;

/// A `[job.params.NAME]` (or `[workflow.params.NAME]`) table: [`ParamSpec`]
/// with unknown keys refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParamDef {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    description: Option<String>,
}

impl From<ParamDef> for ParamSpec {
    fn from(def: ParamDef) -> ParamSpec {
        ParamSpec {
            default: def.default,
            required: def.required,
            description: def.description,
        }
    }
}

/// Checks the parameters a job or workflow (`kind`) declares; the same rules
/// for both. `Err` is the field (`params` or `params.NAME`) and why.
/// `triggered`: it fires on its own, without parameters, so none may be
/// required.
pub(crate) fn validate_declared(
    params: &BTreeMap<String, ParamSpec>,
    kind: &str,
    triggered: bool,
) -> Result<(), (String, String)> {
    if params.len() > MAX_PARAMS {
        let message = format!("at most {MAX_PARAMS} parameters may be declared");
        return Err(("params".into(), message));
    }
    for (name, param) in params {
        let message = if !is_param_name(name) {
            "parameter names are 1-64 letters, digits and '_'".to_string()
        } else if param.required && param.default.is_some() {
            "a required parameter cannot have a default".to_string()
        } else if param.default.as_deref().is_some_and(|v| !is_param_value(v)) {
            format!("the default is longer than {MAX_PARAM_BYTES} bytes or contains NUL")
        } else if triggered && param.required {
            format!("a {kind} with triggers fires without parameters: give this one a default")
        } else {
            continue;
        };
        return Err((format!("params.{name}"), message));
    }
    Ok(())
}

/// A parameter name: 1-64 ASCII letters, digits and `_` (it becomes part of
/// an environment variable's name).
pub(crate) fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A parameter value: at most [`MAX_PARAM_BYTES`] bytes, without NUL.
pub(crate) fn is_param_value(value: &str) -> bool {
    value.len() <= MAX_PARAM_BYTES && !value.contains('\0')
}

/// Why an order's parameters were refused. `kind` is "job" or "workflow".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("{kind} '{name}' has no parameter '{param}' (it accepts: {allowed})")]
    Unknown {
        kind: &'static str,
        name: String,
        param: String,
        allowed: String,
    },
    #[error("{kind} '{name}' needs parameter '{param}': pass --param {param}=VALUE")]
    Missing {
        kind: &'static str,
        name: String,
        param: String,
    },
    #[error("parameter '{param}' is longer than {MAX_PARAM_BYTES} bytes or contains NUL")]
    BadValue { param: String },
    #[error("{count} parameters given; at most {MAX_PARAMS} are accepted")]
    TooMany { count: usize },
}

/// The full set of parameter values for an order of a job or workflow
/// (`kind`, `name`) declaring `declared`: every given name must be
/// declared, with a value of at most [`MAX_PARAM_BYTES`] bytes without NUL,
/// at most [`MAX_PARAMS`] of them; every required one given; defaults
/// filled in.
pub fn resolve_declared(
    kind: &'static str,
    name: &str,
    declared: &BTreeMap<String, ParamSpec>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ParamError> {
    if given.len() > MAX_PARAMS {
        return Err(ParamError::TooMany { count: given.len() });
    }
    for (param, value) in given {
        if !declared.contains_key(param) {
            let allowed = if declared.is_empty() {
                "none".to_string()
            } else {
                declared.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            return Err(ParamError::Unknown {
                kind,
                name: name.to_string(),
                param: param.clone(),
                allowed,
            });
        }
        if !is_param_value(value) {
            return Err(ParamError::BadValue {
                param: param.clone(),
            });
        }
    }
    let mut resolved = BTreeMap::new();
    for (param, spec) in declared {
        match given.get(param).or(spec.default.as_ref()) {
            Some(value) => {
                resolved.insert(param.clone(), value.clone());
            }
            None if spec.required => {
                return Err(ParamError::Missing {
                    kind,
                    name: name.to_string(),
                    param: param.clone(),
                })
            }
            None => {}
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_checked_alike_for_jobs_and_workflows() {
        let spec = |default: Option<&str>, required: bool| ParamSpec {
            default: default.map(str::to_string),
            required,
            description: None,
        };
        let one = |name: &str, p: ParamSpec| BTreeMap::from([(name.to_string(), p)]);
        assert_eq!(
            validate_declared(&one("ok_1", spec(None, true)), "job", false),
            Ok(())
        );
        for (params, triggered, field, expect) in [
            (
                one("bad-name", spec(None, false)),
                false,
                "params.bad-name",
                "letters",
            ),
            (
                one("x", spec(Some("1"), true)),
                false,
                "params.x",
                "cannot have a default",
            ),
            (
                one("x", spec(Some(&"y".repeat(MAX_PARAM_BYTES + 1)), false)),
                false,
                "params.x",
                "longer than",
            ),
            (
                one("x", spec(None, true)),
                true,
                "params.x",
                "a workflow with triggers",
            ),
            (
                (0..=MAX_PARAMS)
                    .map(|i| (format!("p{i}"), spec(None, false)))
                    .collect(),
                false,
                "params",
                "at most 256",
            ),
        ] {
            let (f, message) = validate_declared(&params, "workflow", triggered).unwrap_err();
            assert_eq!(f, field);
            assert!(message.contains(expect), "{expect}: {message}");
        }
    }
}
