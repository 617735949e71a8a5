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

/// The crate's top-level modules that code (not comments) under `src/<part>`
/// names, each with where: `crate::x::...`, each item of `crate::{x, y::z}`,
/// and a `super::` path that climbs out of `part` all count, so a module
/// cannot slip past by the form of its path.
fn crate_modules_named(part: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let target = root.join(part);
    let files = if target.is_dir() {
        sources(&target)
    } else {
        vec![target.with_extension("rs")]
    };
    let mut found = Vec::new();
    for file in files {
        // How deep the file's module sits below `part` (`part/mod.rs` is 0,
        // `part/x.rs` and `part/x/mod.rs` are 1): `super::` that many times
        // plus one names a top-level module.
        let depth = match file.strip_prefix(&target) {
            Ok(rel) if file.ends_with("mod.rs") => rel.components().count() - 1,
            Ok(rel) => rel.components().count(),
            Err(_) => 0,
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let code: Vec<&str> = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("//") {
                    ""
                } else {
                    l
                }
            })
            .collect();
        let code = code.join("\n");
        let bytes = code.as_bytes();
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut at = 0;
        while at < bytes.len() {
            // Bytes, not `&str`: `at` may fall inside a character.
            let rest = &bytes[at..];
            let starts_path = at == 0 || !(ident(bytes[at - 1]) || b":$".contains(&bytes[at - 1]));
            let after = if !starts_path {
                None
            } else if rest.starts_with(b"crate::") {
                Some(at + "crate::".len())
            } else if rest.starts_with(b"super::") {
                let mut end = at;
                let mut supers = 0;
                while bytes[end..].starts_with(b"super::") {
                    end += "super::".len();
                    supers += 1;
                }
                (supers == depth + 1).then_some(end)
            } else {
                None
            };
            let Some(start) = after else {
                at += 1;
                continue;
            };
            let line = code[..at].matches('\n').count() + 1;
            let place = format!(
                "{}:{line}: {}",
                file.display(),
                code.lines().nth(line - 1).unwrap_or("").trim()
            );
            for name in path_heads(&code[start..]) {
                found.push((name, place.clone()));
            }
            at = start;
        }
    }
    found
}

/// The first segment of a path (`x` of `x::y`), or of each item of a group
/// (`x` and `y` of `{x, y::{z, w}}`), skipping `self`.
fn path_heads(path: &str) -> Vec<String> {
    let word = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = path.trim_start().strip_prefix('{') else {
        return vec![word(path)];
    };
    let mut heads = Vec::new();
    let (mut depth, mut item_start) = (1, true);
    for (i, c) in group.char_indices() {
        if item_start && !c.is_whitespace() {
            let head = word(&group[i..]);
            if !head.is_empty() && head != "self" {
                heads.push(head);
            }
            item_start = false;
        }
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => item_start = true,
            _ => {}
        }
    }
    heads
}

/// The places under `src/<part>` that name one of the top-level `modules`.
fn names(part: &str, modules: &[&str]) -> Vec<String> {
    crate_modules_named(part)
        .into_iter()
        .filter(|(m, _)| modules.contains(&m.as_str()))
        .map(|(m, place)| format!("{place} (names {m})"))
        .collect()
}

#[test]
fn only_the_bus_imports_async_nats() {
    for part in [
        "agent", "auth", "bench", "broker", "cli", "config", "daemon", "jobs", "launch", "natsd",
        "notify", "params", "protocol", "schema", "subagent", "workflow",
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

#[test]
fn the_protocol_imports_nothing_of_the_crate_but_itself() {
    let found: Vec<String> = crate_modules_named("protocol")
        .into_iter()
        .filter(|(m, _)| m != "protocol")
        .map(|(m, place)| format!("{place} (names {m})"))
        .collect();
    assert!(
        found.is_empty(),
        "src/protocol imports other parts of the crate (wire types belong in protocol):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_config_imports_no_role() {
    let found = names("config", &["agent", "broker", "subagent", "cli", "daemon"]);
    assert!(
        found.is_empty(),
        "src/config imports a role:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_role_imports_another() {
    for (role, others) in [
        ("broker", ["agent", "subagent"]),
        ("agent", ["broker", "subagent"]),
        ("subagent", ["broker", "agent"]),
    ] {
        let found = names(role, &others);
        assert!(
            found.is_empty(),
            "src/{role} imports another role:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_broker_core_imports_no_actor_bus_or_clock() {
    let io = uses(
        "broker/core",
        &["actix", "crate::bus", "tokio", "async_nats"],
    );
    assert!(
        io.is_empty(),
        "src/broker/core imports actix, tokio or the bus (it returns effects; the actor acts):\n{}",
        io.join("\n")
    );
    // the time comes in with each input; the actor's own modules stay out
    let clock = contains(
        "broker/core",
        &[
            "Instant::now",
            "SystemTime",
            "now_ms()",
            "crate::time",
            "super::super::act",
            "super::super::recovery",
            "super::super::flows",
            "super::super::leadership",
        ],
    );
    assert!(
        clock.is_empty(),
        "src/broker/core reads the clock or reaches into the actor:\n{}",
        clock.join("\n")
    );
}

/// Lines of code (not comments, not unit tests) under `src/<part>`
/// containing one of `needles`.
fn contains(part: &str, needles: &[&str]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(part);
    let mut found = Vec::new();
    // a `tests.rs` (or `*_tests.rs`) is a unit-test module, like a `mod tests` block
    let unit_tests = |f: &PathBuf| {
        f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "tests.rs" || n.ends_with("_tests.rs"))
    };
    for file in sources(&root).into_iter().filter(|f| !unit_tests(f)) {
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("mod tests") {
                break;
            }
            if !code.starts_with("//") && needles.iter().any(|x| code.contains(x)) {
                found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn the_pure_cores_record_no_metrics() {
    for part in [
        "broker/core",
        "triggers",
        "workflow",
        "protocol",
        "jobs",
        "params",
        "auth",
    ] {
        let found = uses(part, &["crate::metrics", "prometheus_client"]);
        assert!(
            found.is_empty(),
            "src/{part} records metrics (the actor or IO code around it does):\n{}",
            found.join("\n")
        );
    }
}
