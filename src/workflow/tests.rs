//! Tests of the order state machine: one per rule, then property tests over
//! random workflows (DAGs) and random event sequences (commands included):
//! no order both succeeds and is cancelled, a suspended order dispatches
//! nothing, every path ends final or suspended, replaying the events
//! rebuilds the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::definition::output_prefix;
use super::*;
use crate::testing::Rng;

fn retry(times: u32, secs: u64) -> OnFailure {
    OnFailure::Retry {
        times,
        backoff: Duration::from_secs(secs),
    }
}

/// Steps as (name, after, on_failure); each runs the job "j".
fn spec(steps: &[(&str, Option<&[&str]>, OnFailure)]) -> WorkflowSpec {
    WorkflowSpec {
        name: "w".into(),
        description: None,
        params: Default::default(),
        steps: steps
            .iter()
            .map(|(name, after, on_failure)| StepSpec {
                name: name.to_string(),
                job: "j".into(),
                params: BTreeMap::new(),
                after: after.map(|a| a.iter().map(|s| s.to_string()).collect()),
                on_failure: *on_failure,
            })
            .collect(),
        triggers: Vec::new(),
        misfire: Default::default(),
        notify: Default::default(),
    }
}

fn list(names: &[&str]) -> WorkflowSpec {
    let steps: Vec<_> = names.iter().map(|n| (*n, None, OnFailure::Stop)).collect();
    spec(&steps)
}

fn new_run(spec: &WorkflowSpec) -> WorkflowRun {
    WorkflowRun::new(spec, BTreeMap::from([("env".into(), "prod".into())])).unwrap()
}

fn ok(run: &mut WorkflowRun, event: Event) -> Vec<Effect> {
    run.apply(event.clone(), 0)
        .unwrap_or_else(|e| panic!("{event:?}: {e}"))
}

fn err(run: &mut WorkflowRun, event: Event) -> String {
    let before = run.clone();
    let e = run.apply(event, 0).unwrap_err().to_string();
    assert_eq!(*run, before, "a refused event changed the run");
    e
}

fn finished(step: &str, attempt: u32, succeeded: bool) -> Event {
    Event::StepFinished {
        step: step.into(),
        attempt,
        succeeded,
        exit_code: Some(if succeeded { 0 } else { 1 }),
        outputs: BTreeMap::new(),
    }
}

fn resume(from: Option<&str>, force_succeeded: bool) -> Event {
    Event::Resume {
        from: from.map(String::from),
        force_succeeded,
    }
}

/// The steps dispatched, in order.
fn dispatched(fx: &[Effect]) -> Vec<&str> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Dispatch { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect()
}

fn state_of(run: &WorkflowRun, step: &str) -> StepState {
    run.step(step).unwrap().state
}

#[test]
fn a_plain_list_runs_in_order_and_passes_results_on() {
    let mut wf = list(&["build", "test-it", "ship"]);
    wf.steps[2]
        .params
        .insert("tag".into(), "v{{build_version}}-{{env}}{{nope}}".into());
    // `nope`: declared, optional, without default: not given, it is empty
    for name in ["env", "nope"] {
        wf.params.insert(name.into(), Default::default());
    }
    let mut run = new_run(&wf);
    assert_eq!(run.state(), RunState::Pending);
    assert_eq!(dispatched(&ok(&mut run, Event::Start)), ["build"]);
    assert_eq!(run.state(), RunState::Running);
    assert!(ok(&mut run, Event::Start).is_empty());

    let fx = ok(
        &mut run,
        Event::StepFinished {
            step: "build".into(),
            attempt: 1,
            succeeded: true,
            exit_code: Some(0),
            outputs: BTreeMap::from([("version".into(), "1.2".into())]),
        },
    );
    let Effect::Dispatch {
        step, job, params, ..
    } = &fx[0]
    else {
        panic!("{fx:?}")
    };
    assert_eq!((step.as_str(), job.as_str()), ("test-it", "j"));
    assert_eq!(params["env"], "prod");
    assert_eq!(params["build_version"], "1.2");
    assert_eq!(params["build_exit_code"], "0");

    let fx = ok(&mut run, finished("test-it", 1, true));
    let Effect::Dispatch { params, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(params["tag"], "v1.2-prod");
    assert_eq!(params["test_it_exit_code"], "0");
    assert_eq!(
        ok(&mut run, finished("ship", 1, true)),
        [Effect::Finished(RunState::Succeeded)]
    );
    assert_eq!(output_prefix("test-it"), "test_it");
}

#[test]
fn a_fan_out_runs_together_and_a_join_waits_for_all() {
    let wf = spec(&[
        ("a", None, OnFailure::Stop),
        ("b", Some(&["a"]), OnFailure::Stop),
        ("c", Some(&["a"]), OnFailure::Stop),
        ("d", Some(&["a"]), OnFailure::Stop),
        ("e", Some(&["b", "c", "d"]), OnFailure::Stop),
        ("f", Some(&[]), OnFailure::Stop),
    ]);
    let mut run = new_run(&wf);
    assert_eq!(dispatched(&ok(&mut run, Event::Start)), ["a", "f"]);
    assert_eq!(
        dispatched(&ok(&mut run, finished("a", 1, true))),
        ["b", "c", "d"]
    );
    assert!(ok(&mut run, finished("c", 1, true)).is_empty());
    assert!(ok(&mut run, finished("b", 1, true)).is_empty());
    let fx = ok(&mut run, finished("d", 1, true));
    assert_eq!(dispatched(&fx), ["e"]);
    let Effect::Dispatch { params, .. } = &fx[0] else {
        panic!()
    };
    assert!(["a", "b", "c", "d"]
        .iter()
        .all(|s| params.contains_key(&format!("{s}_exit_code"))));
    assert!(!params.contains_key("f_exit_code"), "f is no dependency");
    ok(&mut run, finished("e", 1, true));
    assert_eq!(run.state(), RunState::Running, "f still runs");
    ok(&mut run, finished("f", 1, true));
    assert_eq!(run.state(), RunState::Succeeded);
}

#[test]
fn suspend_lets_the_running_step_finish_then_holds_the_order() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    assert!(ok(&mut run, Event::Suspend { kill: false }).is_empty());
    assert_eq!(run.state(), RunState::Suspending);
    assert!(ok(&mut run, Event::Suspend { kill: false }).is_empty());
    assert_eq!(
        ok(&mut run, finished("a", 1, true)),
        [Effect::Suspended],
        "held before b"
    );
    assert_eq!(run.state(), RunState::Suspended);
    assert!(ok(&mut run, Event::Suspend { kill: true }).is_empty());
    assert_eq!(dispatched(&ok(&mut run, resume(None, false))), ["b"]);
    assert!(ok(&mut run, resume(None, false)).is_empty(), "idempotent");
}

#[test]
fn resume_while_suspending_withdraws_the_suspension() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    ok(&mut run, Event::Suspend { kill: false });
    assert!(ok(&mut run, resume(None, false)).is_empty());
    assert_eq!(run.state(), RunState::Running);
    assert_eq!(dispatched(&ok(&mut run, finished("a", 1, true))), ["b"]);
}

#[test]
fn suspend_with_kill_kills_the_step_and_resume_runs_it_again() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    let started = Event::StepStarted {
        step: "a".into(),
        attempt: 1,
        task: "t1".into(),
    };
    assert!(ok(&mut run, started.clone()).is_empty());
    assert!(ok(&mut run, started).is_empty());
    assert_eq!(
        ok(&mut run, Event::Suspend { kill: true }),
        [Effect::Kill {
            step: "a".into(),
            attempt: 1,
            task: Some("t1".into())
        }]
    );
    assert!(ok(&mut run, Event::Suspend { kill: true }).is_empty());
    assert_eq!(ok(&mut run, finished("a", 1, false)), [Effect::Suspended]);
    assert_eq!(state_of(&run, "a"), StepState::Pending);
    let fx = ok(&mut run, resume(None, false));
    assert!(matches!(&fx[..], [Effect::Dispatch { step, attempt: 2, .. }] if step == "a"));
}

#[test]
fn a_step_that_succeeds_while_being_killed_counts_as_succeeded() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    ok(&mut run, Event::Suspend { kill: true });
    assert_eq!(ok(&mut run, finished("a", 1, true)), [Effect::Suspended]);
    assert_eq!(state_of(&run, "a"), StepState::Succeeded);
}

#[test]
fn resume_from_a_later_step_skips_the_ones_before_it() {
    let mut run = new_run(&list(&["a", "b", "c", "d"]));
    ok(&mut run, Event::Start);
    ok(&mut run, Event::Suspend { kill: false });
    ok(&mut run, finished("a", 1, true));
    let e = err(&mut run, resume(Some("zz"), false));
    assert_eq!(e, "workflow 'w' has no step 'zz' (its steps: a, b, c, d)");
    assert_eq!(dispatched(&ok(&mut run, resume(Some("c"), false))), ["c"]);
    assert_eq!(state_of(&run, "a"), StepState::Succeeded);
    assert_eq!(state_of(&run, "b"), StepState::Skipped);
    let fx = ok(&mut run, finished("c", 1, true));
    let Effect::Dispatch { params, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert!(params.contains_key("a_exit_code") && !params.contains_key("b_exit_code"));
    ok(&mut run, finished("d", 1, true));
    assert_eq!(run.state(), RunState::Succeeded);
}

#[test]
fn resume_from_an_earlier_step_runs_it_and_what_follows_again() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    ok(&mut run, finished("a", 1, true));
    assert_eq!(
        ok(&mut run, finished("b", 1, false)),
        [Effect::Finished(RunState::Failed)]
    );
    let fx = ok(&mut run, resume(Some("a"), false));
    assert!(matches!(&fx[..], [Effect::Dispatch { step, attempt: 2, .. }] if step == "a"));
    assert_eq!(state_of(&run, "b"), StepState::Pending);
    let fx = ok(&mut run, finished("a", 2, true));
    assert!(matches!(&fx[..], [Effect::Dispatch { step, attempt: 2, .. }] if step == "b"));
}

#[test]
fn a_failed_order_stays_failed_and_resumable_until_cancelled() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    assert_eq!(
        ok(&mut run, finished("a", 1, false)),
        [Effect::Finished(RunState::Failed)]
    );
    assert_eq!(
        err(&mut run, Event::Suspend { kill: false }),
        "order has failed; it cannot be suspended: it is held already; resume or cancel it"
    );
    assert!(ok(&mut run, Event::Start).is_empty());
    assert!(ok(&mut run, finished("a", 1, true)).is_empty(), "stale");
    assert_eq!(run.state(), RunState::Failed);

    // Plain resume runs the failed step again.
    let fx = ok(&mut run, resume(None, false));
    assert!(matches!(&fx[..], [Effect::Dispatch { step, attempt: 2, .. }] if step == "a"));
    ok(&mut run, finished("a", 2, false));
    assert_eq!(run.state(), RunState::Failed);

    // Forcing treats it as succeeded and goes on.
    assert_eq!(dispatched(&ok(&mut run, resume(None, true))), ["b"]);
    let a = run.step("a").unwrap();
    assert!(a.forced && a.state == StepState::Succeeded && a.exit_code == Some(1));
    ok(&mut run, finished("b", 1, false));
    assert_eq!(run.state(), RunState::Failed);
    assert_eq!(
        ok(&mut run, Event::Cancel { kill: false }),
        [Effect::Finished(RunState::Cancelled)]
    );
    assert_eq!(
        err(&mut run, resume(None, false)),
        "order is cancelled; it cannot be resumed"
    );
}

#[test]
fn forcing_the_last_failed_step_finishes_the_order() {
    let mut run = new_run(&list(&["a"]));
    ok(&mut run, Event::Start);
    ok(&mut run, finished("a", 1, false));
    assert_eq!(
        ok(&mut run, resume(None, true)),
        [Effect::Finished(RunState::Succeeded)]
    );
}

#[test]
fn cancel_without_kill_lets_the_step_finish() {
    let mut run = new_run(&list(&["a", "b"]));
    ok(&mut run, Event::Start);
    assert!(ok(&mut run, Event::Cancel { kill: false }).is_empty());
    assert_eq!(run.state(), RunState::Cancelling);
    assert!(ok(&mut run, Event::Cancel { kill: false }).is_empty());
    assert_eq!(
        err(&mut run, Event::Suspend { kill: false }),
        "order is cancelling; it cannot be suspended"
    );
    assert_eq!(
        err(&mut run, resume(None, false)),
        "order is cancelling; it cannot be resumed: it ends cancelled once its running steps end"
    );
    assert_eq!(
        ok(&mut run, finished("a", 1, true)),
        [Effect::Finished(RunState::Cancelled)]
    );
    assert_eq!(state_of(&run, "a"), StepState::Succeeded);
    assert_eq!(state_of(&run, "b"), StepState::Cancelled);
    assert!(ok(&mut run, Event::Cancel { kill: true }).is_empty());
}

#[test]
fn cancel_with_kill_kills_once_even_after_a_plain_cancel_or_a_suspend() {
    let mut run = new_run(&spec(&[
        ("a", Some(&[]), OnFailure::Stop),
        ("b", Some(&[]), OnFailure::Stop),
    ]));
    ok(&mut run, Event::Start);
    ok(&mut run, Event::Suspend { kill: true }); // kills a and b
    ok(&mut run, Event::Cancel { kill: false });
    assert!(ok(&mut run, Event::Cancel { kill: true }).is_empty());
    ok(&mut run, finished("a", 1, false));
    assert_eq!(
        ok(&mut run, finished("b", 1, false)),
        [Effect::Finished(RunState::Cancelled)]
    );
    assert_eq!(state_of(&run, "a"), StepState::Cancelled);

    let mut run = new_run(&list(&["a"]));
    ok(&mut run, Event::Start);
    ok(&mut run, Event::Cancel { kill: false });
    let fx = ok(&mut run, Event::Cancel { kill: true });
    assert!(matches!(&fx[..], [Effect::Kill { step, task: None, .. }] if step == "a"));
    assert!(ok(&mut run, Event::Cancel { kill: true }).is_empty());
}

#[test]
fn a_succeeded_order_refuses_commands_that_would_change_it() {
    let mut run = new_run(&list(&["a"]));
    ok(&mut run, Event::Start);
    ok(&mut run, finished("a", 1, true));
    assert_eq!(
        err(&mut run, Event::Cancel { kill: true }),
        "order has succeeded; it cannot be cancelled"
    );
    assert_eq!(
        err(&mut run, resume(Some("a"), false)),
        "order has succeeded; it cannot be resumed from a step"
    );
    assert!(ok(&mut run, finished("a", 1, false)).is_empty());
    assert_eq!(run.state(), RunState::Succeeded);
}

#[test]
fn resume_from_a_step_needs_a_held_order() {
    let mut run = new_run(&list(&["a", "b"]));
    assert_eq!(
        err(&mut run, resume(Some("b"), false)),
        "order is pending; it cannot be resumed from a step: start it first"
    );
    ok(&mut run, Event::Start);
    assert_eq!(
        err(&mut run, resume(Some("b"), false)),
        "order is running; it cannot be resumed from a step: suspend it first"
    );
    ok(&mut run, Event::Suspend { kill: false });
    assert_eq!(
        err(&mut run, resume(None, true)),
        "order is suspending; it cannot be resumed with failed steps treated as succeeded: \
         wait until it is suspended"
    );
}

#[test]
fn an_order_suspended_before_it_starts_starts_on_resume() {
    let mut run = new_run(&list(&["a"]));
    assert_eq!(
        ok(&mut run, Event::Suspend { kill: true }),
        [Effect::Suspended]
    );
    assert!(ok(&mut run, Event::Start).is_empty());
    assert_eq!(run.state(), RunState::Suspended);
    assert_eq!(dispatched(&ok(&mut run, resume(None, false))), ["a"]);
}

#[test]
fn retries_wait_for_their_backoff_then_the_order_fails() {
    let mut run = new_run(&spec(&[("a", None, retry(2, 10))]));
    run.apply(Event::Start, 0).unwrap();
    let fx = run.apply(finished("a", 1, false), 1_000).unwrap();
    assert_eq!(
        fx,
        [Effect::ScheduleRetry {
            step: "a".into(),
            at_ms: 11_000
        }]
    );
    assert_eq!(run.next_retry_at(), Some(11_000));
    let due = || Event::RetryDue { step: "a".into() };
    assert!(run.apply(due(), 5_000).unwrap().is_empty(), "early");
    let fx = run.apply(due(), 11_000).unwrap();
    assert!(matches!(&fx[..], [Effect::Dispatch { attempt: 2, .. }]));
    assert!(run.apply(due(), 11_000).unwrap().is_empty(), "duplicate");
    run.apply(finished("a", 2, false), 12_000).unwrap();
    let fx = run.apply(due(), 22_000).unwrap();
    assert!(matches!(&fx[..], [Effect::Dispatch { attempt: 3, .. }]));
    assert_eq!(
        run.apply(finished("a", 3, false), 23_000).unwrap(),
        [Effect::Finished(RunState::Failed)]
    );
    // A resume gives a fresh retry budget.
    run.apply(resume(None, false), 30_000).unwrap();
    let fx = run.apply(finished("a", 4, false), 31_000).unwrap();
    assert!(matches!(
        &fx[..],
        [Effect::ScheduleRetry { at_ms: 41_000, .. }]
    ));
}

#[test]
fn a_retry_waiting_through_a_suspension_is_announced_again() {
    let mut run = new_run(&spec(&[("a", None, retry(1, 10))]));
    run.apply(Event::Start, 0).unwrap();
    run.apply(finished("a", 1, false), 0).unwrap();
    assert_eq!(
        run.apply(Event::Suspend { kill: false }, 1).unwrap(),
        [Effect::Suspended]
    );
    let due = Event::RetryDue { step: "a".into() };
    assert!(run.apply(due, 10_000).unwrap().is_empty(), "held");
    let fx = run.apply(resume(None, false), 5_000).unwrap();
    assert_eq!(
        fx,
        [Effect::ScheduleRetry {
            step: "a".into(),
            at_ms: 10_000
        }]
    );
    assert!(run.apply(resume(None, false), 6_000).unwrap().is_empty());
    let due = Event::RetryDue { step: "a".into() };
    assert_eq!(dispatched(&run.apply(due, 10_000).unwrap()), ["a"]);
    let mut late = new_run(&spec(&[("a", None, retry(1, 10))]));
    late.apply(Event::Start, 0).unwrap();
    late.apply(finished("a", 1, false), 0).unwrap();
    late.apply(Event::Suspend { kill: false }, 1).unwrap();
    let fx = late.apply(resume(None, false), 20_000).unwrap();
    assert_eq!(dispatched(&fx), ["a"], "due while held: runs on resume");
}

#[test]
fn continue_lets_later_steps_run_and_the_order_succeed() {
    let mut run = new_run(&spec(&[
        ("a", None, OnFailure::Continue),
        ("b", None, OnFailure::Stop),
    ]));
    ok(&mut run, Event::Start);
    let fx = ok(&mut run, finished("a", 1, false));
    let Effect::Dispatch { params, .. } = &fx[0] else {
        panic!("{fx:?}")
    };
    assert_eq!(params["a_exit_code"], "1");
    ok(&mut run, finished("b", 1, true));
    assert_eq!(run.state(), RunState::Succeeded);
    assert_eq!(state_of(&run, "a"), StepState::Failed);
}

#[test]
fn a_stopping_failure_dispatches_nothing_more_and_fails_once_quiet() {
    let mut run = new_run(&spec(&[
        ("a", Some(&[]), OnFailure::Stop),
        ("b", Some(&[]), OnFailure::Stop),
        ("c", Some(&["b"]), OnFailure::Stop),
    ]));
    ok(&mut run, Event::Start);
    assert!(ok(&mut run, finished("a", 1, false)).is_empty());
    assert_eq!(run.state(), RunState::Running);
    assert_eq!(
        ok(&mut run, finished("b", 1, true)),
        [Effect::Finished(RunState::Failed)],
        "c is not dispatched"
    );
    // Resume from c: a is not before c, so it runs again as well.
    let fx = ok(&mut run, resume(Some("c"), false));
    assert_eq!(dispatched(&fx), ["a", "c"]);
}

#[test]
fn step_events_for_unknown_or_old_attempts() {
    let mut run = new_run(&spec(&[("a", None, retry(1, 0))]));
    assert_eq!(
        err(&mut run, finished("a", 1, true)),
        "step 'a' has no attempt 1 (attempts dispatched: 0)"
    );
    ok(&mut run, Event::Start);
    assert_eq!(
        err(&mut run, finished("x", 1, true)),
        "workflow 'w' has no step 'x' (its steps: a)"
    );
    assert!(err(&mut run, finished("a", 0, true)).contains("no attempt 0"));
    assert!(err(&mut run, Event::RetryDue { step: "x".into() }).contains("no step 'x'"));
    // No backoff: the retry is dispatched at once.
    let fx = ok(&mut run, finished("a", 1, false));
    assert!(matches!(&fx[..], [Effect::Dispatch { attempt: 2, .. }]));
    // A late result of attempt 1 changes nothing.
    let before = run.clone();
    assert!(ok(&mut run, finished("a", 1, true)).is_empty());
    assert_eq!(run, before);
    ok(&mut run, finished("a", 2, true));
    assert!(
        ok(&mut run, finished("a", 2, false)).is_empty(),
        "duplicate"
    );
    assert_eq!(run.state(), RunState::Succeeded);
}

#[test]
fn runs_and_events_survive_messagepack() {
    let mut run = new_run(&spec(&[("a", None, retry(2, 3))]));
    ok(&mut run, Event::Start);
    ok(&mut run, finished("a", 1, false));
    let bytes = rmp_serde::to_vec_named(&run).unwrap();
    assert_eq!(rmp_serde::from_slice::<WorkflowRun>(&bytes).unwrap(), run);
    let event = resume(Some("a"), true);
    let bytes = rmp_serde::to_vec_named(&event).unwrap();
    assert_eq!(rmp_serde::from_slice::<Event>(&bytes).unwrap(), event);
}

// Property tests.

/// A random DAG of 1 to 6 steps, in dependency order.
fn random_spec(rng: &mut Rng) -> WorkflowSpec {
    let n = 1 + rng.below(6) as usize;
    let names: Vec<String> = (0..n).map(|i| format!("s-{i}")).collect();
    let steps = (0..n)
        .map(|i| {
            let after = (i > 0 && rng.percent(60)).then(|| {
                (0..i)
                    .filter(|_| rng.percent(50))
                    .map(|j| names[j].clone())
                    .collect()
            });
            let on_failure = match rng.below(10) {
                0..=3 => OnFailure::Stop,
                4..=5 => OnFailure::Continue,
                _ => retry(1 + rng.below(2) as u32, rng.below(3)),
            };
            StepSpec {
                name: names[i].clone(),
                job: "j".into(),
                params: BTreeMap::new(),
                after,
                on_failure,
            }
        })
        .collect();
    let wf = WorkflowSpec {
        name: "w".into(),
        description: None,
        params: Default::default(),
        steps,
        triggers: Vec::new(),
        misfire: Default::default(),
        notify: Default::default(),
    };
    validate_workflow(&wf, &|_| true).unwrap();
    wf
}

fn running(run: &WorkflowRun) -> Vec<(String, u32)> {
    run.steps()
        .iter()
        .filter(|s| s.state == StepState::Running)
        .map(|s| (s.name.clone(), s.attempt))
        .collect()
}

/// Order states one event may lead to (through in-between states).
fn allowed(before: RunState, after: RunState) -> bool {
    use RunState::*;
    before == after
        || match before {
            Pending => matches!(after, Running | Suspended | Cancelled),
            Running => after != Pending,
            Suspending => !matches!(after, Pending),
            Suspended => matches!(after, Running | Cancelled),
            Failed => matches!(after, Running | Succeeded | Cancelled),
            Cancelling => after == Cancelled,
            Succeeded | Cancelled => false,
        }
}

/// Applies one event and checks every rule that holds of a single step.
struct Checker {
    seen: BTreeSet<(String, u32)>,
    succeeded: bool,
    cancelled: bool,
    refused: usize,
    journal: Vec<(Event, u64)>,
}

impl Checker {
    fn new() -> Checker {
        Checker {
            seen: BTreeSet::new(),
            succeeded: false,
            cancelled: false,
            refused: 0,
            journal: Vec::new(),
        }
    }

    fn apply(&mut self, run: &mut WorkflowRun, event: Event, now: u64) -> Vec<Effect> {
        let before = run.clone();
        let result = run.apply(event.clone(), now);
        let ctx = || format!("{event:?} at {now}\nbefore: {before:#?}\nresult: {result:?}");
        let after = run.state();
        let fx = match &result {
            Err(_) => {
                assert_eq!(*run, before, "refused but changed: {}", ctx());
                self.refused += 1;
                return Vec::new();
            }
            Ok(fx) => fx.clone(),
        };
        self.journal.push((event.clone(), now));
        if before.state().is_terminal() {
            assert_eq!(*run, before, "a terminal order changed: {}", ctx());
        }
        let command = matches!(event, Event::Resume { .. } | Event::Cancel { .. });
        if before.state().is_held() && !command {
            assert_eq!(*run, before, "a held order changed: {}", ctx());
        }
        assert!(
            allowed(before.state(), after),
            "{} -> {after}: {}",
            before.state(),
            ctx()
        );
        if !matches!(
            after,
            RunState::Running | RunState::Suspending | RunState::Cancelling
        ) {
            assert!(
                running(run).is_empty(),
                "quiet state with a step running: {}",
                ctx()
            );
        }
        for effect in &fx {
            match effect {
                Effect::Dispatch { step, attempt, .. } => {
                    assert_eq!(after, RunState::Running, "dispatched: {}", ctx());
                    let old = before.step(step).unwrap();
                    // Running before only when this event ended it (a retry
                    // without backoff).
                    let ended = matches!(&event, Event::StepFinished { step: s, attempt, .. }
                        if s == step && *attempt == old.attempt);
                    assert!(
                        old.state != StepState::Running || ended,
                        "dispatched while running: {}",
                        ctx()
                    );
                    assert_eq!(*attempt, old.attempt + 1, "{}", ctx());
                    assert!(
                        self.seen.insert((step.clone(), *attempt)),
                        "dispatched twice: {}",
                        ctx()
                    );
                    assert_eq!(run.step(step).unwrap().state, StepState::Running);
                }
                Effect::Kill { step, attempt, .. } => {
                    let s = run.step(step).unwrap();
                    assert_eq!((s.state, s.attempt), (StepState::Running, *attempt));
                    assert!(before.step(step).unwrap().kill.is_none(), "{}", ctx());
                }
                Effect::ScheduleRetry { at_ms, .. } => assert!(*at_ms >= now, "{}", ctx()),
                Effect::Suspended => assert_eq!(after, RunState::Suspended, "{}", ctx()),
                Effect::Finished(state) => {
                    assert_eq!(after, *state, "{}", ctx());
                    self.succeeded |= *state == RunState::Succeeded;
                    self.cancelled |= *state == RunState::Cancelled;
                }
            }
        }
        if before.state() != after && after != RunState::Running {
            let announced = fx
                .iter()
                .any(|e| matches!(e, Effect::Suspended | Effect::Finished(_)));
            let in_between = matches!(after, RunState::Suspending | RunState::Cancelling);
            assert!(announced || in_between, "unannounced: {}", ctx());
        }
        assert!(
            !(self.succeeded && self.cancelled),
            "succeeded and cancelled: {}",
            ctx()
        );
        fx
    }

    /// Replays the journal into a fresh run: the same state must result.
    fn replay(&self, spec: &WorkflowSpec, run: &WorkflowRun) {
        let mut again = new_run(spec);
        for (event, now) in &self.journal {
            again.apply(event.clone(), *now).unwrap();
        }
        assert_eq!(again, *run);
    }
}

fn random_finish(rng: &mut Rng, step: String, attempt: u32) -> Event {
    let succeeded = rng.percent(65);
    let mut outputs = BTreeMap::new();
    if rng.percent(30) {
        outputs.insert("k".to_string(), rng.below(100).to_string());
    }
    Event::StepFinished {
        step,
        attempt,
        succeeded,
        exit_code: rng.percent(90).then_some(if succeeded { 0 } else { 2 }),
        outputs,
    }
}

fn random_event(rng: &mut Rng, run: &WorkflowRun, now: u64) -> Event {
    let names: Vec<String> = run.steps().iter().map(|s| s.name.clone()).collect();
    let some_step = |rng: &mut Rng| {
        if rng.percent(5) {
            "nope".to_string()
        } else {
            names[rng.below(names.len() as u64) as usize].clone()
        }
    };
    let live = running(run);
    let roll = rng.below(100);
    match roll {
        0..=34 if !live.is_empty() => {
            let (step, attempt) = live[rng.below(live.len() as u64) as usize].clone();
            random_finish(rng, step, attempt)
        }
        35..=44 if !live.is_empty() => {
            let (step, attempt) = live[rng.below(live.len() as u64) as usize].clone();
            Event::StepStarted {
                step,
                attempt,
                task: format!("t{now}"),
            }
        }
        45..=49 => {
            let step = some_step(rng);
            let attempt = run.step(&step).map_or(1, |s| s.attempt) + 1;
            let attempt = rng.below(attempt as u64 + 1) as u32;
            random_finish(rng, step, attempt)
        }
        50..=59 => Event::RetryDue {
            step: some_step(rng),
        },
        60..=69 => Event::Suspend {
            kill: rng.percent(50),
        },
        70..=81 => Event::Resume {
            from: rng.percent(30).then(|| some_step(rng)),
            force_succeeded: rng.percent(30),
        },
        82..=86 => Event::Cancel {
            kill: rng.percent(50),
        },
        _ => Event::Start,
    }
}

/// Finishes running steps and fires due retries, with no command, until
/// nothing more can happen.
fn quiesce(rng: &mut Rng, checker: &mut Checker, run: &mut WorkflowRun, now: &mut u64) {
    for _ in 0..1_000 {
        *now += 1 + rng.below(1_000);
        let live = running(run);
        if !live.is_empty() {
            let (step, attempt) = live[rng.below(live.len() as u64) as usize].clone();
            let event = random_finish(rng, step, attempt);
            checker.apply(run, event, *now);
        } else if let Some(at) = run
            .next_retry_at()
            .filter(|_| run.state() == RunState::Running)
        {
            let step = run
                .steps()
                .iter()
                .find(|s| s.retry_at_ms == Some(at))
                .unwrap()
                .name
                .clone();
            *now = (*now).max(at);
            checker.apply(run, Event::RetryDue { step }, *now);
        } else {
            return;
        }
    }
    panic!("no quiescence: {run:#?}");
}

#[test]
fn random_event_sequences_keep_every_rule() {
    let mut ends = BTreeMap::new();
    let mut refused = 0;
    for seed in 0..400 {
        let mut rng = Rng::new(seed);
        let wf = random_spec(&mut rng);
        let mut run = new_run(&wf);
        let mut checker = Checker::new();
        let mut now = 0;
        checker.apply(&mut run, Event::Start, now);
        for _ in 0..rng.below(60) {
            now += rng.below(2_000);
            let event = random_event(&mut rng, &run, now);
            checker.apply(&mut run, event, now);
        }
        quiesce(&mut rng, &mut checker, &mut run, &mut now);
        let end = run.state();
        assert!(
            matches!(
                end,
                RunState::Succeeded | RunState::Failed | RunState::Cancelled | RunState::Suspended
            ),
            "seed {seed}: ends {end}: {run:#?}"
        );
        checker.replay(&wf, &run);
        refused += checker.refused;
        *ends.entry(end.as_str()).or_insert(0) += 1;
    }
    // The generator reaches every end.
    assert_eq!(ends.len(), 4, "{ends:?}");
    assert!(refused > 100, "{refused} refused");
}

#[test]
fn without_commands_eventually_succeeding_steps_make_the_order_succeed() {
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let wf = random_spec(&mut rng);
        let mut run = new_run(&wf);
        let mut checker = Checker::new();
        let mut now = 0;
        let mut dispatches: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        let mut record = |fx: Vec<Effect>| {
            for e in fx {
                if let Effect::Dispatch { step, params, .. } = e {
                    dispatches.push((step, params));
                }
            }
        };
        record(checker.apply(&mut run, Event::Start, now));
        for _ in 0..500 {
            now += 1 + rng.below(500);
            let live = running(&run);
            if let Some(&(ref step, attempt)) =
                live.get(rng.below(live.len().max(1) as u64) as usize)
            {
                let s = run.step(step).unwrap();
                // Fail only where the workflow lets the order go on.
                let may_fail = match s.on_failure {
                    OnFailure::Continue => true,
                    OnFailure::Retry { times, .. } => s.retries < times,
                    OnFailure::Stop => false,
                };
                let succeeded = !(may_fail && rng.percent(40));
                let event = Event::StepFinished {
                    step: step.clone(),
                    attempt,
                    succeeded,
                    exit_code: Some(if succeeded { 0 } else { 3 }),
                    outputs: BTreeMap::from([("k".to_string(), step.clone())]),
                };
                record(checker.apply(&mut run, event, now));
            } else if let Some(at) = run.next_retry_at() {
                now = now.max(at);
                let step = run
                    .steps()
                    .iter()
                    .find(|s| s.retry_at_ms == Some(at))
                    .unwrap()
                    .name
                    .clone();
                record(checker.apply(&mut run, Event::RetryDue { step }, now));
            } else {
                break;
            }
        }
        assert_eq!(run.state(), RunState::Succeeded, "seed {seed}: {run:#?}");
        let deps = wf.dependencies();
        for (i, step) in wf.steps.iter().enumerate() {
            let s = run.step(&step.name).unwrap();
            assert_eq!(s.attempt, 1 + s.retries, "seed {seed}");
            // Each dispatch saw the results of the steps it waits for.
            for (_, params) in dispatches.iter().filter(|(d, _)| *d == step.name) {
                for &d in &deps[i] {
                    let prefix = output_prefix(&wf.steps[d].name);
                    assert_eq!(params[&format!("{prefix}_k")], wf.steps[d].name);
                    assert!(params.contains_key(&format!("{prefix}_exit_code")));
                }
            }
        }
    }
}

#[test]
fn a_suspended_order_dispatches_nothing_until_resumed() {
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let wf = random_spec(&mut rng);
        let mut run = new_run(&wf);
        let mut checker = Checker::new();
        let mut now = 0;
        checker.apply(&mut run, Event::Start, now);
        checker.apply(
            &mut run,
            Event::Suspend {
                kill: rng.percent(50),
            },
            now,
        );
        for _ in 0..100 {
            now += rng.below(5_000);
            let event = random_event(&mut rng, &run, now);
            if matches!(event, Event::Resume { .. } | Event::Cancel { .. }) {
                continue;
            }
            let fx = checker.apply(&mut run, event, now);
            assert!(dispatched(&fx).is_empty(), "seed {seed}: {fx:?}");
            assert!(
                !matches!(run.state(), RunState::Running | RunState::Pending),
                "seed {seed}"
            );
        }
    }
}
