//! Generation of `schemas/`: one JSON Schema per wire message, made from the
//! Rust types by schemars, and an AsyncAPI 3 document listing every subject
//! with who publishes, who subscribes, the payload and the encodings.
//!
//! Two tables drive everything: [`WIRE_TYPES`] (every message type, once) and
//! [`CHANNELS`](channels::CHANNELS) (every subject, once). Adding a message or
//! a subject is one line in each; the unit tests fail when the tables fall
//! behind [`Subjects`](crate::protocol::Subjects) or each other.
//!
//! - `wire_types.rs`: the table of message types, each one's schema, and
//!   the checks an example message must pass.
//! - `channels.rs`: the table of subjects and their parameters.
//! - `asyncapi.rs`: the AsyncAPI document made from both tables.
//!
//! Architecture invariant: the example messages in `schemas/examples/` are
//! written by hand and only decoded here ([`decode_example`]), never generated,
//! so they show what a client in another language would really send.

mod asyncapi;
mod channels;
mod wire_types;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value;

use asyncapi::asyncapi;
use wire_types::WIRE_TYPES;

/// The generated AsyncAPI document's file name.
pub const ASYNCAPI_FILE: &str = "asyncapi.json";

/// Every generated file: relative name -> contents (pretty JSON, trailing newline).
pub fn generate() -> BTreeMap<String, String> {
    let mut files: BTreeMap<String, String> = WIRE_TYPES
        .iter()
        .map(|t| (format!("{}.json", t.name), pretty(&(t.schema)())))
        .collect();
    files.insert(ASYNCAPI_FILE.to_string(), pretty(&asyncapi()));
    let console = crate::console::openapi::document();
    files.insert(crate::console::openapi::FILE.to_string(), pretty(&console));
    files
}

/// Writes every generated file into `dir` (created if needed) and removes the
/// `*.json` files at its top that are no longer generated. `README.md` and
/// `examples/` are left alone. Returns the names written.
pub fn write(dir: &Path) -> std::io::Result<Vec<String>> {
    fs::create_dir_all(dir)?;
    let files = generate();
    for name in stale(dir, &files)? {
        fs::remove_file(dir.join(name))?;
    }
    for (name, contents) in &files {
        fs::write(dir.join(name), contents)?;
    }
    Ok(files.into_keys().collect())
}

/// Compares `dir` with what [`generate`] makes now. Lists every generated file
/// that is missing or differs, and every `*.json` at the top of `dir` that is no
/// longer generated. Files compare as JSON values, so formatting does not matter.
pub fn check(dir: &Path) -> Result<(), Vec<String>> {
    let files = generate();
    let mut problems = Vec::new();
    for (name, expected) in &files {
        let path = dir.join(name);
        match fs::read_to_string(&path) {
            Ok(found) if same_json(&found, expected) => {}
            Ok(_) => problems.push(format!("{}: differs from the code", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                problems.push(format!("{}: missing", path.display()))
            }
            Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    match stale(dir, &files) {
        Ok(names) => problems.extend(
            names
                .into_iter()
                .map(|n| format!("{}: no longer generated", dir.join(n).display())),
        ),
        Err(e) => problems.push(format!("{}: cannot list: {e}", dir.display())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Decodes an example message as the wire type named `type_name`, then checks
/// that it survives a MessagePack round trip (`rmp_serde::to_vec_named`) and
/// that it uses no field the type does not have (peers would silently ignore it).
pub fn decode_example(type_name: &str, json: &Value) -> Result<(), String> {
    let Some(wire) = WIRE_TYPES.iter().find(|t| t.name == type_name) else {
        let known: Vec<&str> = WIRE_TYPES.iter().map(|t| t.name).collect();
        return Err(format!(
            "`{type_name}` is not a wire type; known: {}",
            known.join(", ")
        ));
    };
    (wire.round_trip)(json)
}

/// Names of the `*.json` files at the top of `dir` that are not in `files`.
fn stale(dir: &Path, files: &BTreeMap<String, String>) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && entry.file_type()?.is_file() && !files.contains_key(&name) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn same_json(found: &str, expected: &str) -> bool {
    found == expected
        || matches!(
            (serde_json::from_str::<Value>(found), serde_json::from_str::<Value>(expected)),
            (Ok(a), Ok(b)) if a == b
        )
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values encode");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;

    use super::asyncapi::parameters_of;
    use super::channels::{CHANNELS, PARAMETERS};
    use super::*;
    use crate::protocol::{EventKind, Subjects};

    /// Every channel address with its placeholders filled in.
    fn concrete_addresses() -> BTreeSet<String> {
        CHANNELS
            .iter()
            .map(|c| {
                c.address
                    .replace("{prefix}", "baton")
                    .replace("{subagent_id}", "SUBAGENT")
                    .replace("{agent_id}", "AGENT")
                    .replace("{broker_id}", "BROKER")
                    .replace("{job}", "JOB")
                    .replace("{order_id}", "ORDER")
                    .replace("{command}", "COMMAND")
                    .replace("{subject}", "SUBJECT")
            })
            .collect()
    }

    #[test]
    fn every_subject_is_a_channel_and_every_channel_a_subject() {
        let s = Subjects::new("baton");
        // One line per `Subjects` method that names a concrete subject; a new
        // method belongs here and in CHANNELS.
        let mut subjects: BTreeSet<String> = [
            s.submit(),
            s.deploy(),
            s.order_get(),
            s.status(),
            s.status_brokers(),
            s.register(),
            s.result(),
            s.run("SUBAGENT"),
            s.subagent_heartbeat("SUBAGENT"),
            s.broker_heartbeat(),
            s.subagent_control(),
            s.order_cancel(),
            s.order_suspend(),
            s.order_resume(),
            s.order_list(),
            s.kill("SUBAGENT"),
            s.leave(),
            s.ping("SUBAGENT"),
            s.stop("SUBAGENT"),
            s.subagent_changed("SUBAGENT"),
            s.agent_heartbeat("AGENT"),
            s.agent_role("AGENT"),
            s.agent_ping("AGENT"),
            s.scheduler_control(),
            s.agent_changed("AGENT"),
            s.broker_changed("BROKER"),
            s.audit("COMMAND"),
            s.certificate(),
            s.job_list(),
            s.job_get(),
            s.job_control(),
            s.triggers_changed(),
            s.slots_missed(),
            s.notify("SUBJECT"),
        ]
        .into_iter()
        .collect();
        subjects.extend(EventKind::ALL.map(|k| match k {
            EventKind::Started | EventKind::Log => s.task_event("JOB", "ORDER", k, "SUBAGENT"),
            _ => s.event("JOB", "ORDER", k),
        }));
        assert_eq!(subjects, concrete_addresses());

        let addresses = concrete_addresses();
        for wildcard in [
            s.subagent_heartbeats(),
            s.subagent_changes(),
            s.agent_heartbeats(),
            s.agent_changes(),
            s.broker_changes(),
            s.all_events(),
            s.job_events("JOB"),
            s.order_events("ORDER"),
            s.all_audit(),
        ] {
            assert!(
                addresses
                    .iter()
                    .any(|a| crate::auth::subject_matches(&wildcard, a)),
                "{wildcard} matches no channel"
            );
        }
    }

    #[test]
    fn channels_and_wire_types_name_each_other() {
        let types: BTreeSet<&str> = WIRE_TYPES.iter().map(|t| t.name).collect();
        assert_eq!(types.len(), WIRE_TYPES.len(), "a wire type is listed twice");
        let mut used: BTreeSet<&str> = CHANNELS
            .iter()
            .flat_map(|c| std::iter::once(c.message).chain(c.reply))
            .collect();
        used.insert("ErrorReply");
        // stored in the `{prefix}_fired` KV bucket, on no subject
        used.insert("FiredSlot");
        // stored in the `{prefix}_files` KV bucket
        used.insert("FileRecord");
        used.insert("BrokerLease");
        used.insert("SchedulerLease");
        // stored in the `{prefix}_switches` KV bucket
        used.insert("OperatorSwitch");
        assert_eq!(used, types);
        let ids: BTreeSet<&str> = CHANNELS.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), CHANNELS.len(), "a channel id is used twice");
    }

    #[test]
    fn only_api_subjects_take_json() {
        for c in CHANNELS {
            assert_eq!(c.json, c.address.starts_with("{prefix}.api."), "{}", c.id);
        }
    }

    #[test]
    fn every_parameter_is_declared() {
        let declared: BTreeSet<&str> = PARAMETERS.iter().map(|(p, _)| *p).collect();
        for c in CHANNELS {
            for p in parameters_of(c.address) {
                assert!(declared.contains(p), "{}: undeclared parameter {p}", c.id);
            }
        }
        assert_eq!(parameters_of("{a}.x.{b}.y"), ["a", "b"]);
    }

    /// Every `$ref` inside the document points at something in it or at a
    /// generated schema file.
    #[test]
    fn asyncapi_references_resolve() {
        let files = generate();
        let doc = asyncapi();
        fn refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in found {
            match r.strip_prefix('#') {
                Some(pointer) => assert!(doc.pointer(pointer).is_some(), "dangling {r}"),
                None => assert!(files.contains_key(r), "no schema file {r}"),
            }
        }
    }

    #[test]
    fn schemas_describe_fields_and_defs() {
        let files = generate();
        let submit: Value = serde_json::from_str(&files["SubmitOrder.json"]).unwrap();
        assert_eq!(submit["title"], "SubmitOrder");
        assert_eq!(submit["required"], json!(["job"]));
        let deploy: Value = serde_json::from_str(&files["DeployRequest.json"]).unwrap();
        assert!(deploy.pointer("/$defs/JobSpec").is_some());
        assert!(files.values().all(|f| f.ends_with("}\n")));
    }

    #[test]
    fn examples_must_decode_and_use_known_fields() {
        assert!(decode_example("SubmitOrder", &json!({ "job": "hello" })).is_ok());
        let err = decode_example("SubmitOrder", &json!({ "job": 5 })).unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        let err = decode_example("SubmitOrder", &json!({ "job": "a", "parms": {} })).unwrap_err();
        assert!(err.contains("/parms"), "{err}");
        let err = decode_example(
            "DeployRequest",
            &json!({ "jobs": [{ "name": "a", "program": "b", "params": { "x": { "requird": true } } }] }),
        )
        .unwrap_err();
        assert!(err.contains("/jobs/0/params/x/requird"), "{err}");
        assert!(decode_example("NoSuchType", &json!({})).is_err());
    }

    #[test]
    fn check_reports_missing_differing_and_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path()).is_err());
        let written = write(dir.path()).unwrap();
        // asyncapi.json and console-openapi.json besides the types
        assert_eq!(written.len(), WIRE_TYPES.len() + 2);
        assert_eq!(check(dir.path()), Ok(()));

        fs::write(dir.path().join("SubmitOrder.json"), "{}\n").unwrap();
        fs::remove_file(dir.path().join("GetOrder.json")).unwrap();
        fs::write(dir.path().join("Gone.json"), "{}\n").unwrap();
        fs::create_dir(dir.path().join("examples")).unwrap();
        fs::write(dir.path().join("examples/SubmitOrder.json"), "{}\n").unwrap();
        let problems = check(dir.path()).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].contains("GetOrder.json: missing"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("SubmitOrder.json: differs"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("Gone.json: no longer generated"),
            "{problems:?}"
        );

        write(dir.path()).unwrap();
        assert_eq!(check(dir.path()), Ok(()));
        assert!(dir.path().join("examples/SubmitOrder.json").exists());
    }
}
