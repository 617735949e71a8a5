//! `schemas/` matches the code, and every example message in it decodes.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use baton::schema;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// (type name, file name, parsed JSON) for every file in `schemas/examples/`.
/// The type is the file name before its first `.`: `SubmitOrder.minimal.json`
/// is a `SubmitOrder`.
fn examples() -> Vec<(String, String, serde_json::Value)> {
    let dir = schemas_dir().join("examples");
    let mut examples = Vec::new();
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.ends_with(".json"),
            "{}: examples are <TypeName>[.<variant>].json files",
            path.display()
        );
        let text = fs::read_to_string(&path).unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        let type_name = name.split('.').next().unwrap().to_string();
        examples.push((type_name, name, json));
    }
    examples.sort_by(|a, b| a.1.cmp(&b.1));
    examples
}

#[test]
fn schemas_folder_matches_the_code() {
    if let Err(problems) = schema::check(&schemas_dir()) {
        panic!(
            "schemas/ does not match the wire types:\n  {}\nrun `cargo run -- schemas` and commit the result",
            problems.join("\n  ")
        );
    }
}

#[test]
fn every_example_decodes_as_its_type() {
    let examples = examples();
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|(type_name, file, json)| {
            schema::decode_example(type_name, json)
                .err()
                .map(|e| format!("examples/{file}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let covered: BTreeSet<&str> = examples.iter().map(|(t, _, _)| t.as_str()).collect();
    let required = [
        // client-facing requests and replies
        "SubmitOrder",
        "SubmitReply",
        "DeployRequest",
        "DeployReply",
        "GetOrder",
        "OrderInfo",
        "StatusRequest",
        "StatusReply",
        "ErrorReply",
        "SubagentControl",
        "SubagentControlReply",
        "CancelOrder",
        // events
        "OrderAccepted",
        "TaskStarted",
        "TaskLog",
        "OrderFinished",
        "SubagentChanged",
        // the cluster's own traffic a reimplementation needs most
        "RunTask",
        "TaskResult",
        "SubagentHeartbeat",
    ];
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|t| !covered.contains(t))
        .collect();
    assert!(
        missing.is_empty(),
        "no example in schemas/examples for {missing:?}"
    );
}

#[test]
fn a_wrong_typed_field_is_refused() {
    let (_, file, mut json) = examples()
        .into_iter()
        .find(|(t, _, _)| t == "SubmitOrder")
        .expect("a SubmitOrder example");
    schema::decode_example("SubmitOrder", &json).unwrap();
    json["job"] = serde_json::json!(42);
    let err = schema::decode_example("SubmitOrder", &json)
        .expect_err("a numeric job name must not decode");
    assert!(err.contains("does not decode"), "{file}: {err}");

    let mut json = serde_json::json!({ "job": "hello", "params": { "who": 7 } });
    assert!(schema::decode_example("SubmitOrder", &json).is_err());
    json["params"]["who"] = serde_json::json!("Ann");
    assert!(schema::decode_example("SubmitOrder", &json).is_ok());
}
