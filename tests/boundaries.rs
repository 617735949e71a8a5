//! Module boundaries that ARCHITECTURE.md states, checked on the source:
//! a test fails when a forbidden import comes back. Comment lines are not
//! code and are skipped; a string naming a crate (a log filter) is no import.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Lines of code (not comments) under `src/<part>` that use one of `paths`.
fn uses(part: &str, paths: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let target = root.join(part);
    let files = if target.is_dir() {
        sources(&target)
    } else {
        vec![target.with_extension("rs")]
    };
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let hit = paths
                .iter()
                .any(|p| code.contains(&format!("{p}::")) || code.contains(&format!("use {p}")));
            if hit {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_the_bus_imports_async_nats() {
    for part in [
        "agent", "auth", "bench", "broker", "cli", "config", "daemon", "jobs", "launch", "natsd",
        "params", "protocol", "schema", "subagent", "workflow",
    ] {
        let found = uses(part, &["async_nats"]);
        assert!(
            found.is_empty(),
            "src/{part} imports async_nats:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_roles_do_not_import_the_cli() {
    for part in [
        "broker", "subagent", "agent", "bus", "protocol", "daemon", "auth", "bench",
    ] {
        let found = uses(part, &["crate::cli"]);
        assert!(
            found.is_empty(),
            "src/{part} imports cli:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn wire_types_and_pure_parts_import_no_actor_framework() {
    for part in ["protocol", "workflow", "auth", "params", "jobs"] {
        let found = uses(part, &["actix", "crate::bus"]);
        assert!(
            found.is_empty(),
            "src/{part} imports actix or the bus:\n{}",
            found.join("\n")
        );
    }
}
