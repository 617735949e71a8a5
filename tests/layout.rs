//! README's Layout section and lib.rs's `//!` layout name every part of the
//! tree, and nothing that is not there.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The entries of `src/` as README writes them: `main.rs`, `broker/`.
fn src_entries() -> BTreeSet<String> {
    std::fs::read_dir(root().join("src"))
        .expect("read src/")
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect()
}

#[test]
fn readme_layout_matches_the_tree() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a Layout section");
    let block = section
        .split("```")
        .nth(1)
        .expect("the Layout section has a code block");
    let mut listed_src = BTreeSet::new();
    let mut in_src = false;
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if !line.starts_with(' ') {
            in_src = name == "src/";
            assert!(
                root().join(name).exists(),
                "README's Layout names {name}: not in the tree"
            );
        } else if in_src && line.starts_with("  ") && !line.starts_with("   ") {
            listed_src.insert(name.to_string());
        }
    }
    let tree = src_entries();
    let missing: Vec<_> = tree.difference(&listed_src).collect();
    let stale: Vec<_> = listed_src.difference(&tree).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README's Layout: src/ entries not listed {missing:?}, listed but not in src/ {stale:?}"
    );
}

#[test]
fn lib_layout_names_every_module() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    let docs: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    for line in lib.lines() {
        let Some(module) = line
            .trim_start_matches("pub ")
            .strip_prefix("mod ")
            .and_then(|m| m.strip_suffix(';'))
        else {
            continue;
        };
        assert!(
            docs.contains(&format!("`{module}`")),
            "lib.rs's Layout does not name module {module}"
        );
    }
}
