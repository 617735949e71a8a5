//! Step-level tests of the core: one input at a time, the effects checked.
//! (The simulation, `broker/sim/`, runs the core under faults.) Compiled
//! only for tests, from `mod.rs`; long on purpose, the cases sharing their
//! fixtures here.

use std::time::{Duration, Instant};

use super::*;
use crate::broker::order_book::{Order, Phase};
use crate::workflow::{Event as FlowEvent, FlowOrder};

const T0: u64 = 1_800_000_000_000;

fn job(name: &str) -> JobSpec {
    let spec = serde_json::json!({"name": name, "program": "true", "restartable": true});
    serde_json::from_value(spec).expect("a job")
}

fn now(base: Instant, ms: u64) -> Now {
    Now {
        at: base + Duration::from_millis(ms),
        ms: T0 + ms,
    }
}

/// A core that took over `orders` with job `j` deployed; replies go to a
/// number.
fn core_over(base: Instant, orders: Vec<OrderInfo>) -> Core<u32> {
    core_with(base, job("j"), orders)
}

/// [`core_over`] with job `j` as given.
fn core_with(base: Instant, j: JobSpec, orders: Vec<OrderInfo>) -> Core<u32> {
    let journal = Journal {
        jobs: [("j".to_string(), j)].into(),
        orders: (orders.into_iter().enumerate())
            .map(|(i, o)| (o.order_id.clone(), (o, i as u64 + 1)))
            .collect(),
        ..Journal::default()
    };
    let mut config = Config::default();
    config.broker.keep_finished = 100;
    let recovered = Recovered::from_journal(journal, &config.broker, T0);
    let tenure = lease::Tenure::new(base, Duration::from_secs(3600));
    let at = now(base, 0);
    let mut core = Core::new("b".into(), Config::default(), 1, tenure, recovered, 1, at);
    // what a takeover does first (timers, workflow orders picked up)
    core.take_effects();
    core
}

fn queued(id: &str) -> OrderInfo {
    Order::new(id.into(), "j".into(), Default::default(), None, T0).info()
}

fn replies(effects: &[Effect<u32>]) -> Vec<(u32, &Reply)> {
    let replies = effects.iter().filter_map(|e| match e {
        Effect::Reply(to, reply) => Some((*to, reply)),
        _ => None,
    });
    replies.collect()
}

fn written(effects: Vec<Effect<u32>>) -> Box<OrderInfo> {
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Write { info, .. } => Some(info),
            _ => None,
        })
        .expect("a journal write")
}

#[test]
fn a_cancel_is_answered_only_once_stored() {
    let base = Instant::now();
    let mut core = core_over(base, vec![queued("o")]);
    let cancel = CancelOrder {
        order_id: "o".into(),
        kill: false,
    };
    let effects = core.step(Input::Cancel(7, cancel), now(base, 10));
    assert!(replies(&effects).is_empty(), "not before the write");
    let info = written(effects);
    assert_eq!(info.state, OrderState::Cancelled);
    let stored = Stored::At(2);
    let effects = core.step(Input::Written { info, stored }, now(base, 20));
    match replies(&effects).as_slice() {
        [(7, Reply::Order(o))] => assert_eq!(o.state, OrderState::Cancelled),
        other => panic!("expected the order: {other:?}"),
    }
    let finished = effects
        .iter()
        .any(|e| matches!(e, Effect::Publish(Event::Finished(_))));
    assert!(finished, "finished once stored");
}

#[test]
fn a_cancel_not_stored_is_refused_and_written_again() {
    let base = Instant::now();
    let mut running = queued("o");
    running.state = OrderState::Running;
    running.task_id = Some("o-1".into());
    running.subagent_id = Some("s1".into());
    running.subagent_instance_id = Some("s1#1".into());
    running.attempt = 1;
    let mut core = core_over(base, vec![running]);
    let cancel = CancelOrder {
        order_id: "o".into(),
        kill: true,
    };
    let effects = core.step(Input::Cancel(7, cancel), now(base, 10));
    assert!(effects.iter().any(|e| matches!(e, Effect::Kill { .. })));
    let info = written(effects);
    assert!(info.cancel_requested && info.state == OrderState::Running);
    let stored = Stored::Unknown("timeout".into());
    let effects = core.step(Input::Written { info, stored }, now(base, 20));
    match replies(&effects).as_slice() {
        [(7, Reply::Error(e))] => assert_eq!(e.error.code, ErrorCode::Unavailable),
        other => panic!("expected a refusal: {other:?}"),
    }
    let again = effects.iter().any(|e| {
        matches!(e, Effect::Later { timer: Timer::Rewrite { order_id }, .. } if order_id == "o")
    });
    assert!(again, "a cancel is written until it lands: {effects:?}");
}

/// The deploy an [`Effect::Deploy`] writes.
fn deploy_written(effects: &[Effect<u32>]) -> Box<Deploying> {
    let mut deploys = effects.iter().filter_map(|e| match e {
        Effect::Deploy { deploy, .. } => Some(deploy.clone()),
        _ => None,
    });
    deploys.next().expect("a deploy to write")
}

#[test]
fn a_dry_run_deploy_is_answered_and_changes_nothing() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    let deploy = DeployRequest {
        dry_run: true,
        jobs: vec![job("k")],
        clusters: Vec::new(),
        workflows: Vec::new(),
        ..Default::default()
    };
    let effects = core.step(Input::Deploy(1, deploy.clone()), now(base, 10));
    assert!(matches!(
        replies(&effects).as_slice(),
        [(1, Reply::Deployed(d))] if d.dry_run && d.deployed == ["k"]
    ));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Deploy { .. })));
    assert!(!core.jobs.contains_key("k"));
    // written, then deployed
    let deploy = DeployRequest {
        dry_run: false,
        ..deploy
    };
    let effects = core.step(Input::Deploy(2, deploy.clone()), now(base, 20));
    assert!(replies(&effects).is_empty(), "answered once written");
    let deployed = Input::Deployed {
        to: 2,
        deploy: deploy_written(&effects),
        written: Ok(()),
    };
    let effects = core.step(deployed, now(base, 30));
    assert!(matches!(
        replies(&effects).as_slice(),
        [(2, Reply::Deployed(_))]
    ));
    assert!(core.jobs.contains_key("k"));
    // nothing to deploy: refused with the code clients match on
    let empty = DeployRequest {
        dry_run: false,
        jobs: Vec::new(),
        clusters: Vec::new(),
        workflows: Vec::new(),
        ..Default::default()
    };
    let effects = core.step(Input::Deploy(3, empty), now(base, 40));
    assert!(matches!(
        replies(&effects).as_slice(),
        [(3, Reply::Error(e))] if e.error.code == ErrorCode::InvalidJob
    ));
}

#[test]
fn a_retry_due_while_its_order_is_held_sets_no_timer() {
    let base = Instant::now();
    // two parallel steps: `a` failed and waits 10 s for its retry, `b` runs
    let spec: WorkflowSpec = serde_json::from_value(serde_json::json!({
        "name": "w",
        "steps": [
            {"name": "a", "job": "j",
             "on_failure": {"action": "retry", "times": 1, "backoff": "10s"}},
            {"name": "b", "job": "j", "after": []},
        ],
    }))
    .expect("a workflow");
    let mut flow = FlowOrder::new("f".into(), &spec, Default::default(), None, None, T0)
        .expect("a workflow order");
    flow.apply(FlowEvent::Start, T0).expect("started");
    let failed = FlowEvent::StepFinished {
        step: "a".into(),
        attempt: 1,
        succeeded: false,
        exit_code: Some(1),
        outputs: Default::default(),
    };
    flow.apply(failed, T0).expect("a failed");
    flow.apply(FlowEvent::Suspend { kill: false }, T0)
        .expect("suspending while b runs");
    let retry_at = flow
        .run
        .step("a")
        .and_then(|s| s.retry_at_ms)
        .expect("a waits");
    let info = flow.info();
    let mut core = core_over(base, vec![info]);
    // the retry comes due while the order is held: nothing to wait for again
    let due = Timer::RetryDue {
        flow_id: "f".into(),
        step: "a".into(),
    };
    let late = retry_at - T0 + 5;
    let effects = core.step(Input::Timer(due), now(base, late));
    let again = effects.iter().any(|e| {
        matches!(
            e,
            Effect::Later {
                timer: Timer::RetryDue { .. },
                ..
            }
        )
    });
    assert!(
        !again,
        "no timer while held (it would fire at once, forever): {effects:?}"
    );
}

#[test]
fn a_deploy_warns_of_an_at_trigger_in_the_past_and_an_unmatched_cluster() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    let spec = serde_json::json!({
        "name": "once", "program": "true", "cluster": "zone-b",
        "triggers": [{"kind": "at", "at": "2020-01-01T00:00:00Z"}],
    });
    let cluster = serde_json::json!({
        "name": "zone-b", "mode": "round-robin", "members": [{"labels": {"zone": "b"}}],
    });
    let deploy = DeployRequest {
        dry_run: true,
        jobs: vec![serde_json::from_value(spec).expect("a job")],
        clusters: vec![serde_json::from_value(cluster).expect("a cluster")],
        workflows: Vec::new(),
        ..Default::default()
    };
    let effects = core.step(Input::Deploy(1, deploy), now(base, 10));
    let [(1, Reply::Deployed(reply))] = replies(&effects)[..] else {
        panic!("a deploy reply: {effects:?}");
    };
    let warnings = reply.warnings.join("\n");
    assert!(warnings.contains("'once': its `at` trigger"), "{warnings}");
    assert!(
        warnings.contains("cluster 'zone-b': no known subagent"),
        "{warnings}"
    );
}

fn retrying_job() -> JobSpec {
    JobSpec {
        retry: Some(RetryPolicy {
            times: 2,
            backoff_ms: 2_000,
            max_backoff_ms: None,
            jitter: false,
        }),
        ..job("j")
    }
}

fn running_on_s1(id: &str) -> OrderInfo {
    let mut running = queued(id);
    running.state = OrderState::Running;
    running.task_id = Some(format!("{id}-1"));
    running.subagent_id = Some("s1".into());
    running.subagent_instance_id = Some("s1#1".into());
    running.attempt = 1;
    running
}

fn failed_result(task_id: &str, order_id: &str) -> TaskResult {
    TaskResult {
        task_id: task_id.into(),
        order_id: order_id.into(),
        job: "j".into(),
        attempt: 1,
        subagent_id: "s1".into(),
        exit_code: Some(1),
        signal: None,
        timed_out: false,
        error: None,
        abandoned: None,
        outputs: Default::default(),
        pid: None,
        started_at_ms: T0,
        finished_at_ms: T0 + 5,
    }
}

fn retry_timer(effects: &[Effect<u32>]) -> Option<Duration> {
    effects.iter().find_map(|e| match e {
        Effect::Later {
            after,
            timer: Timer::OrderRetry { .. },
        } => Some(*after),
        _ => None,
    })
}

#[test]
fn those_following_a_job_order_are_told_when_it_runs_again_and_why() {
    let base = Instant::now();
    let mut core = core_with(base, retrying_job(), vec![running_on_s1("o")]);
    let effects = core.step(Input::Result(7, failed_result("o-1", "o")), now(base, 10));
    let what = changed(&effects).map(|c| c.what.clone());
    assert_eq!(what.as_deref(), Some("retry 1 of 2 after exit 1, in 2s"));

    let mut running = running_on_s1("o");
    running.attempts = vec![TaskAttempt {
        started_at_ms: Some(T0),
        ..TaskAttempt::placed(1, "o-1", "s1")
    }];
    let mut core = core_with(base, retrying_job(), vec![running]);
    let mut abandoned = failed_result("o-1", "o");
    abandoned.abandoned = Some("killed by its subagent: no broker heard for 10s".into());
    let effects = core.step(Input::Result(7, abandoned), now(base, 10));
    let what = changed(&effects)
        .map(|c| c.what.clone())
        .unwrap_or_default();
    assert!(
        what.starts_with("runs again: attempt 1 was lost on s1 (it killed the task itself)"),
        "{what}"
    );
}

#[test]
fn a_retry_is_stored_before_its_result_is_acknowledged_and_its_timer_armed() {
    let base = Instant::now();
    let mut core = core_with(base, retrying_job(), vec![running_on_s1("o")]);
    let result = failed_result("o-1", "o");
    let effects = core.step(Input::Result(7, result), now(base, 10));
    assert!(replies(&effects).is_empty(), "no ack before the write");
    assert_eq!(retry_timer(&effects), None, "no timer before the write");
    let info = written(effects);
    assert_eq!(info.state, OrderState::Accepted);
    assert_eq!(info.retry_at_ms, Some(T0 + 10 + 2_000));
    // not stored: no ack, no timer, written again
    let stored = Stored::Unknown("timeout".into());
    let effects = core.step(Input::Written { info, stored }, now(base, 20));
    assert!(replies(&effects).is_empty() && retry_timer(&effects).is_none());
    let again = effects.iter().any(|e| {
        matches!(e, Effect::Later { timer: Timer::Rewrite { order_id }, .. } if order_id == "o")
    });
    assert!(again, "a retry's due time is written until it lands");
    // the result repeated meanwhile: acknowledged only once stored
    let repeated = failed_result("o-1", "o");
    let effects = core.step(Input::Result(8, repeated), now(base, 1_020));
    assert!(replies(&effects).is_empty(), "{effects:?}");
    let info = written(effects);
    let stored = Stored::At(3);
    let effects = core.step(Input::Written { info, stored }, now(base, 1_030));
    assert!(matches!(replies(&effects).as_slice(), [(8, Reply::Ack(_))]));
    assert_eq!(
        retry_timer(&effects),
        Some(Duration::from_millis(980)),
        "armed for its due time once stored: {effects:?}"
    );
    // due: back in the queue, stored without its due time
    let due = Timer::OrderRetry {
        order_id: "o".into(),
    };
    let info = written(core.step(Input::Timer(due), now(base, 2_010)));
    assert_eq!((info.retry_at_ms, info.retries), (None, 1));
    assert_eq!(core.book.get("o").unwrap().phase, Phase::Queued);
}

#[test]
fn a_broker_taking_over_arms_the_retries_its_journal_shows_waiting() {
    let base = Instant::now();
    let mut soon = queued("soon");
    soon.retry_at_ms = Some(T0 + 3_000);
    soon.retries = 1;
    soon.reason = Some("retry 1 of 2 after exit 1".into());
    let mut overdue = queued("overdue");
    overdue.retry_at_ms = Some(T0 - 60_000);
    overdue.retries = 1;
    let journal = Journal {
        jobs: [("j".to_string(), retrying_job())].into(),
        orders: [soon, overdue]
            .into_iter()
            .enumerate()
            .map(|(i, o)| (o.order_id.clone(), (o, i as u64 + 1)))
            .collect(),
        ..Journal::default()
    };
    let recovered = Recovered::from_journal(journal, &Config::default().broker, T0);
    let tenure = lease::Tenure::new(base, Duration::from_secs(3600));
    let mut core: Core<u32> = Core::new(
        "b".into(),
        Config::default(),
        1,
        tenure,
        recovered,
        1,
        now(base, 0),
    );
    let mut timers: Vec<(String, Duration)> = (core.take_effects().into_iter())
        .filter_map(|e| match e {
            Effect::Later {
                after,
                timer: Timer::OrderRetry { order_id },
            } => Some((order_id, after)),
            _ => None,
        })
        .collect();
    timers.sort();
    assert_eq!(
        timers,
        [
            ("overdue".to_string(), Duration::ZERO),
            ("soon".to_string(), Duration::from_millis(3_000))
        ]
    );
    let info = core.info_of("soon").unwrap();
    assert_eq!(info.reason.as_deref(), Some("retry 1 of 2 after exit 1"));
    // early (the wall clock stepped back): armed again, not run
    let due = Timer::OrderRetry {
        order_id: "soon".into(),
    };
    let effects = core.step(Input::Timer(due), now(base, 1_000));
    assert_eq!(retry_timer(&effects), Some(Duration::from_millis(2_000)));
    // a cancel ends it at once, and its timer then does nothing
    let cancel = CancelOrder {
        order_id: "soon".into(),
        kill: true,
    };
    let effects = core.step(Input::Cancel(9, cancel), now(base, 1_500));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Kill { .. })));
    assert_eq!(written(effects).state, OrderState::Cancelled);
    let due = Timer::OrderRetry {
        order_id: "soon".into(),
    };
    let effects = core.step(Input::Timer(due), now(base, 3_000));
    assert!(effects.is_empty(), "{effects:?}");
}

/// A submit of job `j`, by a trigger's slot or by a client.
fn submit_j(slot_ms: Option<u64>, request_id: &str) -> SubmitOrder {
    SubmitOrder {
        job: "j".into(),
        params: Default::default(),
        request_id: Some(request_id.into()),
        slot_ms,
    }
}

fn refused_as_paused(effects: &[Effect<u32>]) -> bool {
    let replies = replies(effects);
    matches!(replies.as_slice(), [(_, Reply::Error(e))] if e.error.message.contains("is paused"))
}

#[test]
fn a_pause_is_stored_before_it_holds_and_refuses_slots_then_submits_with_all() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    let pause = JobControl {
        name: "j".into(),
        pause: true,
        all: false,
    };
    let effects = core.step(Input::JobControl(1, pause, "admin".into()), now(base, 10));
    let Some(Effect::Switch { of, switch, .. }) =
        effects.iter().find(|e| matches!(e, Effect::Switch { .. }))
    else {
        panic!("stored first: {effects:?}")
    };
    assert_eq!(of.key(), "job.j");
    assert!(replies(&effects).is_empty(), "answered once stored");
    // not stored: refused, and nothing holds
    let failed = Input::Switched {
        to: 1,
        of: of.clone(),
        switch: switch.clone(),
        stored: Err("timeout".into()),
    };
    let effects = core.step(failed, now(base, 20));
    assert!(matches!(replies(&effects)[..], [(1, Reply::Error(_))]));
    assert!(core.paused("j").is_none());
    let stored = Input::Switched {
        to: 1,
        of: of.clone(),
        switch: switch.clone(),
        stored: Ok(()),
    };
    let effects = core.step(stored, now(base, 30));
    assert!(matches!(replies(&effects)[..], [(1, Reply::JobSwitched(r))] if r.switched.off));
    // a slot is refused; a client's submit is taken
    let slot = core.step(
        Input::Submit(2, submit_j(Some(T0), "j@1"), None),
        now(base, 40),
    );
    assert!(refused_as_paused(&slot), "{slot:?}");
    let manual = core.step(Input::Submit(3, submit_j(None, "m1"), None), now(base, 50));
    assert!(
        manual.iter().any(|e| matches!(e, Effect::Create { .. })),
        "{manual:?}"
    );
    // with --all, clients are refused too
    let all = OperatorSwitch {
        all: true,
        ..switch.clone()
    };
    let stored = Input::Switched {
        to: 4,
        of: of.clone(),
        switch: all,
        stored: Ok(()),
    };
    let effects = core.step(stored, now(base, 60));
    assert!(
        matches!(replies(&effects)[..], [(4, Reply::JobSwitched(r))] if r.changed && r.switched.all),
        "a pause that now holds manual submits too is a change: {effects:?}"
    );
    let manual = core.step(Input::Submit(5, submit_j(None, "m2"), None), now(base, 70));
    assert!(refused_as_paused(&manual), "{manual:?}");
    // unknown names are refused before anything is stored
    let unknown = JobControl {
        name: "nope".into(),
        pause: true,
        all: false,
    };
    let effects = core.step(Input::JobControl(6, unknown, "admin".into()), now(base, 80));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Switch { .. })));
    assert!(
        matches!(replies(&effects)[..], [(6, Reply::Error(e))] if e.error.code == ErrorCode::UnknownJob)
    );
}

#[test]
fn a_broker_taking_over_holds_the_pauses_it_reads() {
    let pause = OperatorSwitch {
        off: true,
        by: "admin".into(),
        at_ms: T0,
        all: false,
    };
    let journal = Journal {
        jobs: [("j".to_string(), job("j"))].into(),
        switches: [
            ("job.j".to_string(), pause.clone()),
            ("subagent.s".to_string(), pause),
        ]
        .into(),
        ..Journal::default()
    };
    let recovered = Recovered::from_journal(journal, &Config::default().broker, T0);
    assert_eq!(recovered.pauses.keys().collect::<Vec<_>>(), ["j"]);
    assert_eq!(recovered.switches.keys().collect::<Vec<_>>(), ["s"]);
    let base = Instant::now();
    let tenure = lease::Tenure::new(base, Duration::from_secs(3600));
    let mut core = Core::new(
        "b".into(),
        Config::default(),
        1,
        tenure,
        recovered,
        1,
        now(base, 0),
    );
    core.take_effects();
    let slot = core.step(
        Input::Submit(1, submit_j(Some(T0), "j@1"), None),
        now(base, 10),
    );
    assert!(refused_as_paused(&slot), "{slot:?}");
}

/// A subagent process registering with `labels`, capacity 1.
fn register(id: &str, zone: &str) -> Register {
    Register {
        subagent_id: id.into(),
        instance_id: format!("{id}#1"),
        labels: [("zone".to_string(), zone.to_string())].into(),
        capacity: 1,
        hostname: None,
        pid: None,
        protocol: PROTOCOL_VERSION,
        heartbeat_interval_ms: 250,
        orphan_timeout_ms: 10_000,
    }
}

fn heartbeat(r: &Register, at_ms: u64) -> SubagentHeartbeat {
    SubagentHeartbeat {
        subagent_id: r.subagent_id.clone(),
        instance_id: r.instance_id.clone(),
        labels: r.labels.clone(),
        capacity: r.capacity,
        running: Vec::new(),
        sent_at_ms: at_ms,
        protocol: PROTOCOL_VERSION,
        load: None,
        draining: false,
        heartbeat_interval_ms: r.heartbeat_interval_ms,
        orphan_timeout_ms: r.orphan_timeout_ms,
        refused: 0,
    }
}

/// The reasons of the `waiting` events among `effects`.
/// The first `changed` event among `effects`.
fn changed(effects: &[Effect<u32>]) -> Option<&OrderChanged> {
    effects.iter().find_map(|e| match e {
        Effect::Publish(Event::Changed(c)) => Some(c),
        _ => None,
    })
}

fn waiting(effects: &[Effect<u32>]) -> Vec<String> {
    let told = effects.iter().filter_map(|e| match e {
        Effect::Publish(Event::Changed(c)) => c.waiting.clone(),
        _ => None,
    });
    told.collect()
}

fn zone_b() -> ClusterSpec {
    let spec = serde_json::json!({
        "name": "zone-b", "mode": "round-robin", "members": [{"labels": {"zone": "b"}}]
    });
    serde_json::from_value(spec).expect("a cluster")
}

#[test]
fn a_waiting_order_says_why_once_and_again_when_the_reason_changes() {
    let base = Instant::now();
    let mut core = core_over(base, vec![queued("o")]);
    let mut j = job("j");
    j.cluster = Some("zone-b".into());
    core.step(
        Input::Spec(SpecChange::Job("j".into(), Some(j))),
        now(base, 1),
    );
    core.step(
        Input::Spec(SpecChange::Cluster("zone-b".into(), Some(zone_b()))),
        now(base, 2),
    );
    let a = register("s1", "a");
    let effects = core.step(Input::Register(1, a.clone()), now(base, 10));
    let told = waiting(&effects);
    assert!(
        matches!(&told[..], [w] if w.contains("no known subagent matches cluster 'zone-b'")),
        "{told:?}"
    );
    let event = changed(&effects).expect("a changed event");
    assert_eq!(
        (event.order_id.as_str(), event.workflow.as_str()),
        ("o", "j")
    );
    assert_eq!(event.state, OrderState::Accepted);
    // every further pass with the same reason tells nothing
    for ms in [20, 30, 40] {
        let effects = core.step(Input::Heartbeat(heartbeat(&a, T0 + ms)), now(base, ms));
        assert_eq!(waiting(&effects), Vec::<String>::new(), "at {ms}");
    }
    // another reason: told again, once
    core.step(
        Input::Spec(SpecChange::Cluster("zone-b".into(), None)),
        now(base, 50),
    );
    let effects = core.step(Input::Heartbeat(heartbeat(&a, T0 + 60)), now(base, 60));
    let told = waiting(&effects);
    assert!(
        matches!(&told[..], [w] if w.contains("cluster 'zone-b' is not deployed")),
        "{told:?}"
    );
    let effects = core.step(Input::Heartbeat(heartbeat(&a, T0 + 70)), now(base, 70));
    assert!(waiting(&effects).is_empty());
    core.step(
        Input::Spec(SpecChange::Cluster("zone-b".into(), Some(zone_b()))),
        now(base, 80),
    );
    let effects = core.step(Input::Heartbeat(heartbeat(&a, T0 + 90)), now(base, 90));
    assert_eq!(
        waiting(&effects).len(),
        1,
        "back to the first reason: a change"
    );
    // placed: no word of waiting, and nothing held for it
    let effects = core.step(Input::Register(2, register("s2", "b")), now(base, 100));
    assert!(waiting(&effects).is_empty());
    assert_eq!(written(effects).subagent_id.as_deref(), Some("s2"));
    assert!(core.told_waiting.is_empty());
}

/// A submit of job `j` without a request id.
fn submit_plain() -> SubmitOrder {
    SubmitOrder {
        job: "j".into(),
        params: Default::default(),
        request_id: None,
        slot_ms: None,
    }
}

/// The record a [`Effect::Create`] among `effects` creates.
fn create_asked(effects: Vec<Effect<u32>>) -> Box<OrderInfo> {
    let created = effects.into_iter().find_map(|e| match e {
        Effect::Create { info, .. } => Some(info),
        _ => None,
    });
    created.expect("a create")
}

#[test]
fn an_order_placed_at_once_never_says_it_waits() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let effects = core.step(Input::Submit(2, submit_plain(), None), now(base, 10));
    let info = create_asked(effects);
    let created = Created::At(1);
    let effects = core.step(Input::Created { info, created }, now(base, 20));
    assert!(waiting(&effects).is_empty(), "{effects:?}");
    assert_eq!(run_sent(&effects).expect("its task sent").0, "s1");
    assert!(core.told_waiting.is_empty());
}

#[test]
fn a_new_order_with_room_is_created_dispatched_and_its_task_sent_once_stored() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let effects = core.step(Input::Submit(2, submit_plain(), None), now(base, 10));
    assert!(replies(&effects).is_empty(), "answered once stored");
    assert!(run_sent(&effects).is_none(), "sent once stored");
    let info = create_asked(effects);
    // one write: the record is created dispatched to s1
    assert_eq!(info.state, OrderState::Accepted);
    assert_eq!(info.subagent_id.as_deref(), Some("s1"));
    assert_eq!(info.subagent_instance_id.as_deref(), Some("s1#1"));
    assert_eq!(info.attempt, 1);
    let task_id = info.task_id.clone().expect("a task");
    let order_id = info.order_id.clone();
    // its room is held meanwhile: a second submit is not placed there
    let second = create_asked(core.step(Input::Submit(3, submit_plain(), None), now(base, 11)));
    assert_eq!(second.subagent_id, None, "s1 has no room left");
    let created = Created::At(1);
    let effects = core.step(Input::Created { info, created }, now(base, 20));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Write { .. })),
        "no second write: {effects:?}"
    );
    match replies(&effects).as_slice() {
        [(2, Reply::Submitted(r))] => assert_eq!(r.order_id, order_id),
        other => panic!("expected the submit's answer: {other:?}"),
    }
    let accepted = effects
        .iter()
        .position(|e| matches!(e, Effect::Publish(Event::Accepted(_))));
    let run = effects.iter().position(|e| matches!(e, Effect::Run { .. }));
    assert!(
        accepted < run && accepted.is_some(),
        "accepted, then run: {effects:?}"
    );
    let (subagent_id, run) = run_sent(&effects).expect("its task sent");
    assert_eq!(
        (subagent_id.as_str(), run.task_id.as_str()),
        ("s1", task_id.as_str())
    );
    assert_eq!(run.attempt, 1);
    let order = core.book.get(&order_id).expect("held");
    assert_eq!(order.phase, Phase::Dispatching);
    assert_eq!(order.info().task_id.as_deref(), Some(task_id.as_str()));
}

#[test]
fn a_placement_that_no_longer_holds_once_stored_is_written_queued_and_nothing_sent() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let info = create_asked(core.step(Input::Submit(2, submit_plain(), None), now(base, 10)));
    assert_eq!(info.subagent_instance_id.as_deref(), Some("s1#1"));
    // s1 restarts before the record is stored: the room held was on the
    // process that is gone
    let mut again = register("s1", "a");
    again.instance_id = "s1#2".into();
    core.step(Input::Register(3, again), now(base, 15));
    let order_id = info.order_id.clone();
    let created = Created::At(1);
    let effects = core.step(Input::Created { info, created }, now(base, 20));
    assert!(run_sent(&effects).is_none(), "nothing sent: {effects:?}");
    assert!(matches!(
        replies(&effects).as_slice(),
        [(2, Reply::Submitted(_))]
    ));
    let info = written(effects);
    assert_eq!(info.task_id, None, "written back queued over the dispatch");
    assert_eq!(info.state, OrderState::Accepted);
    // then placed on the new process, as any queued order
    let effects = core.step(
        Input::Written {
            info,
            stored: Stored::At(2),
        },
        now(base, 30),
    );
    let info = written(effects);
    assert_eq!(info.subagent_instance_id.as_deref(), Some("s1#2"));
    let effects = core.step(
        Input::Written {
            info,
            stored: Stored::At(3),
        },
        now(base, 40),
    );
    let (_, run) = run_sent(&effects).expect("sent to the new process");
    assert_eq!(run.instance_id.as_deref(), Some("s1#2"));
    assert_eq!(run.order_id, order_id);
}

#[test]
fn a_placed_order_not_stored_gives_its_room_back() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let info = create_asked(core.step(Input::Submit(2, submit_j(None, "r1"), None), now(base, 10)));
    assert_eq!(info.subagent_id.as_deref(), Some("s1"));
    let created = Created::Failed("no quorum".into());
    let effects = core.step(Input::Created { info, created }, now(base, 20));
    assert!(run_sent(&effects).is_none());
    match replies(&effects).as_slice() {
        [(2, Reply::Error(e))] => assert_eq!(e.error.code, ErrorCode::Unavailable),
        other => panic!("expected a refusal: {other:?}"),
    }
    assert_eq!(
        core.registry.get("s1").unwrap().free(),
        1,
        "room given back"
    );
    let info = create_asked(core.step(Input::Submit(3, submit_j(None, "r2"), None), now(base, 30)));
    assert_eq!(
        info.subagent_id.as_deref(),
        Some("s1"),
        "placed there again"
    );
}

#[test]
fn a_repeat_takes_up_queued_an_order_its_first_try_stored_placed_at_once() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let first =
        create_asked(core.step(Input::Submit(2, submit_j(None, "r1"), None), now(base, 10)));
    assert_eq!(first.subagent_id.as_deref(), Some("s1"));
    // its create landed, but the answer was lost: refused, nothing sent
    let created = Created::Failed("timeout".into());
    let effects = core.step(
        Input::Created {
            info: first.clone(),
            created,
        },
        now(base, 20),
    );
    assert!(run_sent(&effects).is_none());
    // the client sends it again: the same order, found stored dispatched
    let again =
        create_asked(core.step(Input::Submit(3, submit_j(None, "r1"), None), now(base, 30)));
    assert_eq!(again.order_id, first.order_id);
    let created = Created::Exists(Some((first.clone(), 5)));
    let effects = core.step(
        Input::Created {
            info: again,
            created,
        },
        now(base, 40),
    );
    assert!(
        run_sent(&effects).is_none(),
        "not sent before the new dispatch is stored"
    );
    assert!(matches!(
        replies(&effects).as_slice(),
        [(3, Reply::Submitted(_))]
    ));
    // taken up queued, placed again, and its dispatch written over the first
    let info = written(effects);
    assert_eq!(info.order_id, first.order_id);
    assert_eq!((info.attempt, info.subagent_id.as_deref()), (1, Some("s1")));
    assert_eq!(info.task_id, first.task_id, "the attempt was not used up");
    assert_eq!(core.revisions.get(&first.order_id), Some(5));
    let effects = core.step(
        Input::Written {
            info,
            stored: Stored::At(6),
        },
        now(base, 50),
    );
    let (_, run) = run_sent(&effects).expect("sent once stored");
    assert_eq!(run.order_id, first.order_id);

    // with no room for it now, it is written back queued over the dispatch
    let mut core = core_over(base, Vec::new());
    let again =
        create_asked(core.step(Input::Submit(4, submit_j(None, "r1"), None), now(base, 60)));
    let created = Created::Exists(Some((first.clone(), 5)));
    let effects = core.step(
        Input::Created {
            info: again,
            created,
        },
        now(base, 70),
    );
    assert!(matches!(
        replies(&effects).as_slice(),
        [(4, Reply::Submitted(_))]
    ));
    let info = written(effects);
    assert_eq!((info.task_id, info.subagent_id), (None, None));
    assert_eq!((info.state, info.attempt), (OrderState::Accepted, 0));
    assert_eq!(core.book.get(&first.order_id).unwrap().phase, Phase::Queued);
}

#[test]
fn a_step_order_waiting_is_told_on_its_workflow_order() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    // a step order as its workflow order places it (the journal's would
    // be stopped at a takeover without its workflow order)
    let mut step = Order::new("s".into(), "j".into(), Default::default(), None, T0);
    step.parent = Some(ParentStep {
        order_id: "flow".into(),
        workflow: "nightly".into(),
        step: "build".into(),
        attempt: 1,
    });
    core.book.insert(step);
    core.book.enqueue("s");
    let mut j = job("j");
    j.cluster = Some("zone-b".into());
    core.step(
        Input::Spec(SpecChange::Job("j".into(), Some(j))),
        now(base, 1),
    );
    let effects = core.step(Input::Register(1, register("s1", "a")), now(base, 10));
    let event = changed(&effects).expect("a changed event");
    assert_eq!(
        (event.order_id.as_str(), event.workflow.as_str()),
        ("flow", "nightly")
    );
    assert_eq!(event.step_order_id.as_deref(), Some("s"));
    assert!(
        event
            .what
            .starts_with("step build waiting: subagent cluster 'zone-b' is not deployed"),
        "{}",
        event.what
    );
}

#[test]
fn an_order_waiting_only_for_room_is_not_told() {
    let base = Instant::now();
    let mut core = core_over(base, vec![queued("o1"), queued("o2")]);
    let s1 = register("s1", "a");
    let effects = core.step(Input::Register(1, s1.clone()), now(base, 10));
    assert_eq!(written(effects).order_id, "o1", "placed");
    let effects = core.step(Input::Heartbeat(heartbeat(&s1, T0 + 20)), now(base, 20));
    assert!(
        waiting(&effects).is_empty(),
        "o2 waits for room: {effects:?}"
    );
    assert!(core.told_waiting.is_empty());
}

/// The `run` among `effects`.
fn run_sent(effects: &[Effect<u32>]) -> Option<(String, RunTask)> {
    effects.iter().find_map(|e| match e {
        Effect::Run {
            subagent_id, run, ..
        } => Some((subagent_id.clone(), (**run).clone())),
        _ => None,
    })
}

/// `o` dispatched to `s1`, stored, and its start confirmed: the effects of
/// the confirmation.
fn started_on_s1(core: &mut Core<u32>, base: Instant) -> (RunTask, Vec<Effect<u32>>) {
    let effects = core.step(Input::Register(1, register("s1", "a")), now(base, 10));
    let info = written(effects);
    assert_eq!(info.subagent_id.as_deref(), Some("s1"));
    let stored = Stored::At(2);
    let effects = core.step(Input::Written { info, stored }, now(base, 20));
    let (subagent_id, run) = run_sent(&effects).expect("sent once stored");
    let reply = Input::RunReply {
        subagent_id,
        run: Box::new(run.clone()),
        again: false,
        reply: RunReply::Accepted,
    };
    (run, core.step(reply, now(base, 30)))
}

#[test]
fn a_start_is_written_a_while_later_and_only_if_the_task_still_runs() {
    let base = Instant::now();
    let mut core = core_over(base, vec![queued("o")]);
    let (run, effects) = started_on_s1(&mut core, base);
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Write { .. })),
        "no write at the start: {effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Later { .. })),
        "no timer per start: {effects:?}"
    );
    assert_eq!(core.book.get("o").unwrap().phase, Phase::Running);
    // not yet due at a check before the delay has passed
    let before = 30 + STARTED_WRITE_DELAY.as_millis() as u64 - 10;
    let effects = core.step(Input::Check, now(base, before));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Write { .. })));
    // still running at the first check once due: written as running
    let due = 30 + STARTED_WRITE_DELAY.as_millis() as u64;
    let effects = core.step(Input::Check, now(base, due));
    let info = written(effects);
    assert_eq!(info.state, OrderState::Running);
    // and only once: stored, later checks write nothing more
    let stored = Stored::At(3);
    core.step(Input::Written { info, stored }, now(base, due + 10));
    let effects = core.step(Input::Check, now(base, due + 100));
    assert!(!effects.iter().any(|e| matches!(e, Effect::Write { .. })));

    // a task that ended first: its final state is the only write
    let mut core = core_over(base, vec![queued("o")]);
    let (_, effects) = started_on_s1(&mut core, base);
    assert!(!effects.iter().any(|e| matches!(e, Effect::Write { .. })));
    let mut result = failed_result(&run.task_id, "o");
    result.exit_code = Some(0);
    let effects = core.step(Input::Result(7, result), now(base, 40));
    let info = written(effects);
    assert_eq!(info.state, OrderState::Succeeded);
    core.step(
        Input::Written {
            info,
            stored: Stored::At(3),
        },
        now(base, 50),
    );
    let due = 30 + STARTED_WRITE_DELAY.as_millis() as u64;
    let effects = core.step(Input::Check, now(base, due));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Write { .. })),
        "an ended order is not written as running: {effects:?}"
    );
}

#[test]
fn an_order_nothing_can_take_does_not_send_new_orders_through_the_queue() {
    let base = Instant::now();
    let mut core = core_over(base, Vec::new());
    let gpu = serde_json::json!({"name": "gpu", "program": "true", "cluster": "gpu"});
    core.jobs
        .insert("gpu".into(), serde_json::from_value(gpu).expect("a job"));
    core.step(Input::Register(1, register("s1", "a")), now(base, 1));
    let stuck = SubmitOrder {
        job: "gpu".into(),
        ..submit_plain()
    };
    let info = create_asked(core.step(Input::Submit(2, stuck, None), now(base, 10)));
    assert_eq!(info.subagent_id, None, "its cluster is not deployed");
    let created = Created::At(1);
    let effects = core.step(Input::Created { info, created }, now(base, 20));
    assert_eq!(
        waiting(&effects).len(),
        1,
        "it says why it waits: {effects:?}"
    );
    assert!(core.book.next_queued().is_some());
    // a new order with room is created dispatched all the same: one write
    let info = create_asked(core.step(Input::Submit(3, submit_plain(), None), now(base, 30)));
    assert_eq!(info.subagent_id.as_deref(), Some("s1"), "{info:?}");
    let created = Created::At(2);
    let effects = core.step(Input::Created { info, created }, now(base, 40));
    let (_, first) = run_sent(&effects).expect("its task sent");
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Write { .. })),
        "no second write: {effects:?}"
    );
    // s1 is full: the next one is created to be queued ...
    let waits = create_asked(core.step(Input::Submit(4, submit_plain(), None), now(base, 50)));
    assert_eq!(waits.subagent_id, None, "no room");
    // ... and once s1 has room, a newer one does not take it from it
    let mut result = failed_result(&first.task_id, &first.order_id);
    result.exit_code = Some(0);
    core.step(Input::Result(7, result), now(base, 60));
    let newer = create_asked(core.step(Input::Submit(5, submit_plain(), None), now(base, 70)));
    assert_eq!(newer.subagent_id, None, "the earlier order goes first");
    let created = Created::At(3);
    let effects = core.step(
        Input::Created {
            info: waits,
            created,
        },
        now(base, 80),
    );
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Write { .. })),
        "the earlier one placed from the queue: {effects:?}"
    );
}
