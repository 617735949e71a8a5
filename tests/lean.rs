//! `baton subagent` becomes `baton-subagent` (the subagent's own, smaller
//! binary) when it lies beside `baton`, and only when it comes from the
//! same build: `cargo run` builds `baton` alone and leaves an older one
//! there. A stand-in `baton-subagent` (a script) tells which happened.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

/// A folder holding `baton` (a hard link to the one built) and a stand-in
/// `baton-subagent` answering `__build-id` with `build`, and otherwise
/// writing its pid and arguments to `ran`.
fn folder_with_stand_in(build: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let baton = dir.path().join("baton");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_baton"), &baton).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_baton"), &baton).unwrap();
    }
    let ran = dir.path().join("ran");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = __build-id ]; then echo '{build}'; exit 0; fi\necho \"$$ $*\" > '{}'\n",
        ran.display()
    );
    let stand_in = dir.path().join("baton-subagent");
    std::fs::write(&stand_in, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, baton)
}

fn this_build() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton-subagent"))
        .arg("__build-id")
        .output()
        .expect("baton-subagent runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn subagent(baton: &Path) -> std::process::Child {
    Command::new(baton)
        .args([
            "subagent",
            "--id",
            "lean-1",
            "--nats-url",
            "nats://127.0.0.1:1",
        ])
        .env_remove("BATON_CONFIG")
        .env("BATON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baton runs")
}

#[test]
fn baton_subagent_becomes_the_lean_binary_of_its_own_build() {
    let (dir, baton) = folder_with_stand_in(&this_build());
    let mut child = subagent(&baton);
    let pid = child.id();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "baton subagent did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the stand-in ended it: {status}");
    let ran = std::fs::read_to_string(dir.path().join("ran")).expect("the stand-in ran");
    // the same process (exec, not a child), given the same arguments
    assert_eq!(
        ran.trim(),
        format!("{pid} subagent --id lean-1 --nats-url nats://127.0.0.1:1")
    );
}

#[test]
fn a_lean_subagent_of_another_build_is_not_used() {
    let (dir, baton) = folder_with_stand_in("another-build");
    let mut child = subagent(&baton);
    // it runs the subagent itself, and says why
    let stderr = child.stderr.take().unwrap();
    let said = std::thread::spawn(move || {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(stderr).lines();
        lines
            .map_while(Result::ok)
            .any(|l| l.contains("from another build"))
    });
    let deadline = Instant::now() + LIMIT;
    while !said.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        said.join().unwrap(),
        "baton said the lean subagent is from another build"
    );
    assert!(
        !dir.path().join("ran").exists(),
        "the stand-in of another build was not run"
    );
}
