//! Step-level tests of the core: one input at a time, the effects checked.
//! (The simulation, `broker/sim/`, runs the core under faults.)

use std::time::{Duration, Instant};

use super::*;
use crate::broker::order_book::Order;
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
    let journal = Journal {
        jobs: [("j".to_string(), job("j"))].into(),
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
    let slot = core.step(Input::Submit(2, submit_j(Some(T0), "j@1")), now(base, 40));
    assert!(refused_as_paused(&slot), "{slot:?}");
    let manual = core.step(Input::Submit(3, submit_j(None, "m1")), now(base, 50));
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
    core.step(stored, now(base, 60));
    let manual = core.step(Input::Submit(5, submit_j(None, "m2")), now(base, 70));
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
    let slot = core.step(Input::Submit(1, submit_j(Some(T0), "j@1")), now(base, 10));
    assert!(refused_as_paused(&slot), "{slot:?}");
}
