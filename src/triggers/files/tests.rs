use std::time::Duration;

use super::*;

fn spec(dir: &str, pattern: &str) -> TriggerSpec {
    TriggerSpec::File {
        dir: dir.into(),
        pattern: pattern.into(),
        settle: Duration::from_secs(2),
        rescan: Duration::from_secs(10),
    }
}

fn found(path: &str, size: u64, mtime_ms: u64) -> Found {
    Found {
        path: path.into(),
        name: Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into(),
        size,
        mtime_ms,
        inode: 7,
    }
}

#[test]
fn a_file_trigger_compiles_and_matches_names() {
    let watch = FileWatch::compile(&spec("/data/in", "*.csv")).unwrap();
    assert!(watch.matches("a.csv"));
    assert!(!watch.matches("a.csv.tmp"));
    assert!(!watch.matches(".x"));
    assert_eq!(watch.settle_ms, 2000);
    let braces = FileWatch::compile(&spec("/data/in", "{a,b}-?.txt")).unwrap();
    assert!(braces.matches("b-1.txt") && !braces.matches("c-1.txt"));
}

#[test]
fn bad_file_triggers_say_which_field_and_why() {
    let error = |s: TriggerSpec| FileWatch::compile(&s).unwrap_err().to_string();
    assert!(
        error(spec("data/in", "*")).contains("dir")
            && error(spec("data/in", "*")).contains("absolute")
    );
    assert!(error(spec("/data", "a/*.csv")).contains("pattern"));
    assert!(error(spec("/data", "[a-")).contains("not a glob"));
    assert!(error(spec("/data", "")).contains("pattern"));
    let slow = TriggerSpec::File {
        dir: "/d".into(),
        pattern: "*".into(),
        settle: Duration::from_secs(25 * 3600),
        rescan: Duration::from_secs(1),
    };
    assert!(error(slow).contains("settle"));
    let busy = TriggerSpec::File {
        dir: "/d".into(),
        pattern: "*".into(),
        settle: Duration::ZERO,
        rescan: Duration::from_millis(1),
    };
    assert!(error(busy).contains("rescan"));
    // through the trigger's own check, as at deploy
    assert!(spec("rel", "*").validate().is_err());
    assert!(spec("/abs", "*.csv").validate().is_ok());
}

#[test]
fn a_file_trigger_has_no_clock_slots() {
    let trigger = super::super::Trigger::compile_all(
        &[
            spec("/d", "*"),
            TriggerSpec::interval(Duration::from_secs(60), None),
        ],
        "job",
    )
    .unwrap();
    assert_eq!(trigger.next_after(0), Some(60_000));
    let only = super::super::Trigger::compile(&spec("/d", "*"), "job").unwrap();
    assert_eq!(only.next_after(0), None);
    assert_eq!(only.last_at_or_before(u64::MAX), None);
}

#[test]
fn file_triggers_need_their_parameters_declared() {
    let declared = |names: &[&str]| -> BTreeMap<String, ParamSpec> {
        names
            .iter()
            .map(|n| (n.to_string(), ParamSpec::default()))
            .collect()
    };
    let triggers = [
        TriggerSpec::interval(Duration::from_secs(5), None),
        spec("/d", "*"),
    ];
    let (field, message) = check_params(&triggers, &declared(&["file"])).unwrap_err();
    assert_eq!(field, "triggers[1]");
    assert!(message.contains("[job.params.file_name]") && !message.contains("[job.params.file]"));
    assert!(check_params(&triggers, &declared(&["file", "file_name"])).is_ok());
    assert!(check_params(&triggers[..1], &declared(&[])).is_ok());
}

#[test]
fn a_file_settles_once_unchanged_for_the_settle_time() {
    let mut s = Settling::new(1000);
    let a = found("/d/a.csv", 10, 5);
    let first = s.scan(std::slice::from_ref(&a), 0, false);
    assert!(first.settled.is_empty());
    assert_eq!(first.next_check_ms, Some(1000));
    // grown: starts again
    let grown = found("/d/a.csv", 20, 6);
    assert_eq!(
        s.scan(std::slice::from_ref(&grown), 800, false)
            .next_check_ms,
        Some(1800)
    );
    assert!(s
        .scan(std::slice::from_ref(&grown), 1799, false)
        .settled
        .is_empty());
    let settled = s.scan(std::slice::from_ref(&grown), 1800, false);
    assert_eq!(settled.settled, vec![grown.clone()]);
    assert_eq!(settled.next_check_ms, None);
    // reported once
    assert!(s
        .scan(std::slice::from_ref(&grown), 5000, false)
        .settled
        .is_empty());
    // again after a failure
    s.again(&grown.path);
    assert_eq!(
        s.scan(std::slice::from_ref(&grown), 5001, false).settled,
        vec![grown.clone()]
    );
    // gone, then back: a new file, settling anew
    assert!(s.scan(&[], 6000, false).settled.is_empty());
    assert!(s.is_empty());
    assert!(s
        .scan(std::slice::from_ref(&grown), 6001, false)
        .settled
        .is_empty());
    assert_eq!(
        s.scan(std::slice::from_ref(&grown), 7001, false)
            .settled
            .len(),
        1
    );
}

#[test]
fn a_paused_schedule_settles_files_without_reporting_them() {
    let mut s = Settling::new(0);
    let a = found("/d/a", 1, 1);
    assert!(s.scan(std::slice::from_ref(&a), 0, true).settled.is_empty());
    assert!(s
        .scan(std::slice::from_ref(&a), 10, true)
        .settled
        .is_empty());
    assert_eq!(
        s.scan(std::slice::from_ref(&a), 20, false).settled,
        vec![a.clone()]
    );
    assert!(s
        .scan(std::slice::from_ref(&a), 30, false)
        .settled
        .is_empty());
    // on resume every file is reported again; `claim` skips those done
    s.again_all();
    assert_eq!(s.scan(std::slice::from_ref(&a), 40, false).settled, vec![a]);
}

#[test]
fn claims_follow_the_record_of_the_path() {
    let a = found("/d/a", 1, 1);
    assert_eq!(claim(None, &a), Claim::Create);
    let mut record = a.record("job", FileState::Claimed, "agent", 0);
    assert_eq!(
        claim(Some((&record, 4)), &a),
        Claim::Resubmit { revision: 4 }
    );
    record.state = FileState::Submitted;
    assert_eq!(claim(Some((&record, 5)), &a), Claim::Done);
    // another file at the same path: same size, newer mtime
    let b = found("/d/a", 1, 2);
    assert_eq!(
        claim(Some((&record, 5)), &b),
        Claim::Replace { revision: 5 }
    );
}

#[test]
fn identities_give_request_ids_and_keys() {
    let a = found("/d/a", 1, 1);
    let b = found("/d/a", 1, 2);
    assert_eq!(a.request_id("job"), a.clone().request_id("job"));
    assert_ne!(a.request_id("job"), b.request_id("job"));
    assert_ne!(a.request_id("job"), a.request_id("other"));
    assert!(a.request_id("job").starts_with("job@file:"));
    assert_eq!(record_key("job", "/d/a"), record_key("job", "/d/a"));
    assert_ne!(record_key("job", "/d/a"), record_key("job", "/d/b"));
    let key = record_key("workflow.w", "/d/ä b*>");
    assert!(key.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
    assert_eq!(a.params()["file"], "/d/a");
    assert_eq!(a.params()["file_name"], "a");
}

#[test]
fn only_records_of_gone_files_in_listed_directories_are_stale() {
    let a = found("/d/a", 1, 1);
    let b = found("/d/b", 1, 1);
    let c = found("/e/c", 1, 1);
    let records: HashMap<String, (FileRecord, u64)> =
        [(&a, "job"), (&b, "job"), (&c, "job"), (&b, "other")]
            .into_iter()
            .enumerate()
            .map(|(i, (f, job))| {
                let record = f.record(job, FileState::Submitted, "agent", 0);
                (record_key(job, &f.path), (record, i as u64 + 1))
            })
            .collect();
    // /d listed with only a; /e not listed (missing or unreadable)
    let stale = stale(
        &records,
        "job",
        std::slice::from_ref(&a),
        &[PathBuf::from("/d")],
    );
    assert_eq!(stale, vec![(record_key("job", "/d/b"), 2)]);
}
