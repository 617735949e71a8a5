//! Step-level tests of bounded history: failed workflow orders expire
//! (`flows/expiry.rs`), ended records leave the journal at a takeover
//! (`takeover.rs`, `broker/retention.rs`), and the core's memory stays
//! bounded over many thousands of ended and failed orders.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::*;
use crate::broker::order_book::Order;
use crate::workflow::{step_order_id, Event as FlowEvent, FlowOrder};

const T0: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn job(name: &str) -> JobSpec {
    let spec = serde_json::json!({"name": name, "program": "true", "restartable": true});
    serde_json::from_value(spec).expect("a job")
}

/// A workflow of one step running job `step_job`.
fn workflow(step_job: &str) -> WorkflowSpec {
    let spec = serde_json::json!({"name": "w", "steps": [{"name": "a", "job": step_job}]});
    serde_json::from_value(spec).expect("a workflow")
}

fn now(base: Instant, ms: u64) -> Now {
    Now {
        at: base + Duration::from_millis(ms),
        ms: T0 + ms,
    }
}

fn config(failed_hold_ms: u64, keep_finished: usize) -> Config {
    let mut config = Config::default();
    config.broker.failed_hold = Duration::from_millis(failed_hold_ms);
    config.broker.keep_finished = keep_finished;
    config.broker.order_retention = Duration::from_millis(24 * HOUR);
    config
}

fn journal(orders: Vec<OrderInfo>) -> Journal {
    Journal {
        jobs: [("j".to_string(), job("j"))].into(),
        workflows: [("w".to_string(), workflow("j"))].into(),
        orders: (orders.into_iter().enumerate())
            .map(|(i, o)| (o.order_id.clone(), (o, i as u64 + 1)))
            .collect(),
        ..Journal::default()
    }
}

/// A core taking over `orders` at `now(base, 0)`, and its first effects.
fn take_over(
    base: Instant,
    config: Config,
    orders: Vec<OrderInfo>,
) -> (Core<u32>, Vec<Effect<u32>>) {
    let recovered = Recovered::from_journal(journal(orders), &config.broker, T0);
    let tenure = lease::Tenure::new(base, Duration::from_secs(365 * 24 * 3600));
    let mut core = Core::new("b".into(), config, 1, tenure, recovered, 1, now(base, 0));
    let effects = core.take_effects();
    (core, effects)
}

/// A workflow order of `w` whose step `a` was dispatched (and is running).
fn running_flow(id: &str) -> (FlowOrder, String) {
    let mut flow = FlowOrder::new(id.into(), &workflow("j"), BTreeMap::new(), None, None, T0)
        .expect("a workflow order");
    flow.durable = true;
    flow.apply(FlowEvent::Start, T0).expect("started");
    let step = step_order_id("baton", id, "a", 1);
    flow.dispatched("a", 1, "j", &step);
    (flow, step)
}

/// A workflow order of `w` that failed at `failed_at_ms`.
fn failed_flow(id: &str, failed_at_ms: u64) -> FlowOrder {
    let (mut flow, _) = running_flow(id);
    let failed = FlowEvent::StepFinished {
        step: "a".into(),
        attempt: 1,
        succeeded: false,
        exit_code: Some(3),
        outputs: BTreeMap::new(),
    };
    flow.apply(failed, failed_at_ms).expect("failed");
    flow
}

fn writes(effects: &[Effect<u32>]) -> Vec<&OrderInfo> {
    let writes = effects.iter().filter_map(|e| match e {
        Effect::Write { info, .. } => Some(&**info),
        _ => None,
    });
    writes.collect()
}

fn expiry_timers(effects: &[Effect<u32>]) -> Vec<(Duration, u64)> {
    let timers = effects.iter().filter_map(|e| match e {
        Effect::Later {
            after,
            timer: Timer::Expire { at_ms, .. },
        } => Some((*after, *at_ms)),
        _ => None,
    });
    timers.collect()
}

fn refusal(effects: &[Effect<u32>]) -> &ErrorReply {
    let found = effects.iter().find_map(|e| match e {
        Effect::Reply(_, Reply::Error(e)) => Some(e),
        _ => None,
    });
    found.expect("a refusal")
}

fn resume(order_id: &str) -> ResumeOrder {
    ResumeOrder {
        order_id: order_id.into(),
        from: None,
        force_succeeded: false,
    }
}

#[test]
fn a_failed_workflow_order_expires_after_its_hold_and_is_then_refused() {
    let base = Instant::now();
    // the broker died after the step order's end was stored, before its
    // workflow order followed: taking over, the workflow order fails now
    let (flow, step) = running_flow("f");
    let mut step_order = Order::new(step.clone(), "j".into(), BTreeMap::new(), None, T0);
    step_order.parent = Some(ParentStep {
        order_id: "f".into(),
        workflow: "w".into(),
        step: "a".into(),
        attempt: 1,
    });
    let mut step_info = step_order.info();
    step_info.state = OrderState::Failed;
    step_info.exit_code = Some(3);
    step_info.finished_at_ms = Some(T0);
    let (mut core, effects) = take_over(base, config(HOUR, 100), vec![flow.info(), step_info]);
    let failed = writes(&effects);
    let failed = failed.iter().find(|w| w.order_id == "f").expect("f stored");
    assert_eq!(failed.state, OrderState::Failed);
    assert_eq!(
        failed.resumable_until_ms,
        Some(T0 + HOUR),
        "its record says until when"
    );
    assert_eq!(
        expiry_timers(&effects),
        [(Duration::from_millis(HOUR), T0 + HOUR)]
    );
    let infos: Vec<Box<OrderInfo>> = writes(&effects)
        .into_iter()
        .cloned()
        .map(Box::new)
        .collect();
    for (i, info) in infos.into_iter().enumerate() {
        let stored = Stored::At(10 + i as u64);
        core.step(Input::Written { info, stored }, now(base, 1));
    }
    // its timer early by the wall clock (stepped back): it waits again
    let timer = Timer::Expire {
        flow_id: "f".into(),
        at_ms: T0 + HOUR,
    };
    let effects = core.step(Input::Timer(timer.clone()), now(base, HOUR - 10));
    assert!(writes(&effects).is_empty());
    assert_eq!(
        expiry_timers(&effects),
        [(Duration::from_millis(10), T0 + HOUR)]
    );
    // due: it expires, stored, announced
    let effects = core.step(Input::Timer(timer), now(base, HOUR));
    let expired = writes(&effects);
    assert_eq!(expired.len(), 1, "{effects:?}");
    assert_eq!(expired[0].state, OrderState::Failed, "it stays failed");
    assert_eq!(expired[0].expired_at_ms, Some(T0 + HOUR));
    assert_eq!(expired[0].resumable_until_ms, None);
    assert!(expired[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("can no longer be resumed"));
    let announced = effects.iter().any(|e| {
        matches!(e, Effect::Publish(Event::Changed(c)) if c.what == "expired" && c.order_id == "f")
    });
    assert!(announced, "{effects:?}");
    // a resume (and a cancel) is refused, saying why
    let effects = core.step(Input::Resume(7, resume("f")), now(base, HOUR + 1));
    let e = refusal(&effects);
    assert_eq!(e.error.code, ErrorCode::InvalidState);
    assert!(
        e.error.message.contains("expired at") && e.error.message.contains("broker.failed_hold"),
        "{}",
        e.error.message
    );
    assert!(writes(&effects).is_empty());
    let cancel = CancelOrder {
        order_id: "f".into(),
        kill: false,
    };
    let effects = core.step(Input::Cancel(8, cancel), now(base, HOUR + 2));
    assert!(refusal(&effects)
        .error
        .message
        .contains("can no longer be cancelled"));
    // once forgotten (beyond broker.keep_finished), the refusal says it may have expired
    let effects = core.step(Input::Resume(9, resume("gone")), now(base, HOUR + 3));
    let e = refusal(&effects);
    assert_eq!(e.error.code, ErrorCode::NotFound);
    assert!(
        e.error.message.contains("failed and expired"),
        "{}",
        e.error.message
    );
}

#[test]
fn a_resume_before_the_deadline_works_and_the_old_timer_does_nothing() {
    let base = Instant::now();
    let failed = failed_flow("f", T0);
    let (mut core, effects) = take_over(base, config(HOUR, 100), vec![failed.info()]);
    assert_eq!(
        expiry_timers(&effects),
        [(Duration::from_millis(HOUR), T0 + HOUR)]
    );
    // its deadline, new to its record, lands
    let info = Box::new(writes(&effects)[0].clone());
    let stored = Stored::At(9);
    core.step(Input::Written { info, stored }, now(base, 5));
    let effects = core.step(Input::Resume(7, resume("f")), now(base, 10));
    let resumed = writes(&effects);
    assert_eq!(resumed[0].state, OrderState::Running);
    assert_eq!(resumed[0].resumable_until_ms, None);
    let timer = Timer::Expire {
        flow_id: "f".into(),
        at_ms: T0 + HOUR,
    };
    let effects = core.step(Input::Timer(timer), now(base, HOUR));
    assert!(writes(&effects).is_empty(), "{effects:?}");
    assert_eq!(core.book.flow("f").unwrap().expired_at_ms, None);
}

#[test]
fn a_broker_taking_over_expires_overdue_failed_orders_and_times_the_others() {
    let base = Instant::now();
    // records from before deadlines were recorded: none says until when
    let old = failed_flow("old", T0 - 2 * HOUR);
    let young = failed_flow("young", T0 - HOUR / 4);
    let (old_info, young_info) = (old.info(), young.info());
    assert_eq!(old_info.resumable_until_ms, None);
    let (core, effects) = take_over(base, config(HOUR, 100), vec![old_info, young_info]);
    let stored = writes(&effects);
    let old = stored
        .iter()
        .find(|w| w.order_id == "old")
        .expect("old stored");
    assert_eq!(old.expired_at_ms, Some(T0), "expired at the takeover");
    let young = stored
        .iter()
        .find(|w| w.order_id == "young")
        .expect("young stored");
    assert_eq!(young.resumable_until_ms, Some(T0 + 3 * HOUR / 4));
    assert_eq!(young.expired_at_ms, None);
    assert_eq!(
        expiry_timers(&effects),
        [(Duration::from_millis(3 * HOUR / 4), T0 + 3 * HOUR / 4)]
    );
    assert!(core.book.flow("old").unwrap().is_ended());
}

#[test]
fn a_takeover_sets_aside_ended_records_past_their_retention_and_never_an_unfinished_one() {
    let day = 24 * HOUR;
    let ended = |id: &str, state: OrderState, at: u64| {
        let mut info = Order::new(id.into(), "j".into(), BTreeMap::new(), None, at).info();
        info.state = state;
        info.finished_at_ms = Some(at);
        info
    };
    let mut waiting = ended("waiting", OrderState::Accepted, T0 - 90 * day);
    waiting.finished_at_ms = None;
    let mut running = ended("running", OrderState::Running, T0 - 90 * day);
    running.finished_at_ms = None;
    // a failed workflow order still resumable, with a step order ended long ago
    let mut resumable = failed_flow("resumable", T0 - 40 * day).info();
    resumable.resumable_until_ms = Some(T0 + day);
    let mut its_step = ended("its-step", OrderState::Failed, T0 - 40 * day);
    its_step.parent = Some(ParentStep {
        order_id: "resumable".into(),
        workflow: "w".into(),
        step: "a".into(),
        attempt: 1,
    });
    // an expired one: kept for the retention from its expiry
    let mut expired_lately = failed_flow("expired-lately", T0 - 40 * day).info();
    expired_lately.expired_at_ms = Some(T0 - day);
    let mut expired_long_ago = failed_flow("expired-long-ago", T0 - 40 * day).info();
    expired_long_ago.expired_at_ms = Some(T0 - 35 * day);
    let mut done_step = ended("done-step", OrderState::Succeeded, T0 - 40 * day);
    done_step.parent = Some(ParentStep {
        order_id: "expired-long-ago".into(),
        ..its_step.parent.clone().unwrap()
    });
    let records = vec![
        ended("old-succeeded", OrderState::Succeeded, T0 - 31 * day),
        ended("old-cancelled", OrderState::Cancelled, T0 - 31 * day),
        ended("young-failed", OrderState::Failed, T0 - 29 * day),
        waiting,
        running,
        resumable,
        its_step,
        expired_lately,
        expired_long_ago,
        done_step,
    ];
    let mut config = config(7 * day, 100);
    config.broker.order_retention = Duration::from_millis(30 * day);
    let recovered = Recovered::from_journal(journal(records), &config.broker, T0);
    let gone: Vec<&str> = recovered
        .expired
        .iter()
        .map(|(id, _)| id.as_str())
        .collect();
    assert_eq!(
        gone,
        [
            "done-step",
            "expired-long-ago",
            "old-cancelled",
            "old-succeeded"
        ]
    );
    for (id, revision) in &recovered.expired {
        assert!(!recovered.book.holds(id), "{id} is not held");
        assert!(*revision > 0);
    }
    for kept in [
        "young-failed",
        "waiting",
        "running",
        "resumable",
        "its-step",
        "expired-lately",
    ] {
        assert!(recovered.book.holds(kept), "{kept} is kept");
    }
}

/// Drives a core as its actor would, with every write and create landing
/// and timers firing on a simulated clock.
struct Driver {
    base: Instant,
    core: Core<u32>,
    clock: u64,
    revision: u64,
    inputs: VecDeque<Input<u32>>,
    timers: Vec<(u64, Timer)>,
}

impl Driver {
    fn carry_out(&mut self, effects: Vec<Effect<u32>>) {
        for effect in effects {
            self.revision += 1;
            let revision = self.revision;
            match effect {
                Effect::Create { info, .. } => self.inputs.push_back(Input::Created {
                    info,
                    created: Created::At(revision),
                }),
                Effect::Write { info, .. } => self.inputs.push_back(Input::Written {
                    info,
                    stored: Stored::At(revision),
                }),
                Effect::Later { after, timer } => self
                    .timers
                    .push((self.clock + after.as_millis() as u64, timer)),
                _ => {}
            }
        }
    }

    /// Runs every input and every timer due up to `until`.
    fn run_until(&mut self, until: u64) {
        loop {
            if let Some(input) = self.inputs.pop_front() {
                let effects = self.core.step(input, now(self.base, self.clock));
                self.carry_out(effects);
                continue;
            }
            let due = (self.timers.iter().enumerate())
                .filter(|(_, (at, _))| *at <= until)
                .min_by_key(|(_, (at, _))| *at)
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let (at, timer) = self.timers.swap_remove(i);
            self.clock = self.clock.max(at);
            self.inputs.push_back(Input::Timer(timer));
        }
        self.clock = self.clock.max(until);
    }

    fn submit(&mut self, job: &str) {
        let submit = SubmitOrder {
            job: job.into(),
            params: BTreeMap::new(),
            request_id: None,
            slot_ms: None,
        };
        self.inputs.push_back(Input::Submit(0, submit, None));
    }
}

#[test]
fn memory_stays_bounded_over_many_thousands_of_ended_and_failed_orders() {
    const ORDERS: u64 = 25_000;
    const KEEP: usize = 200;
    const SPACING_MS: u64 = 10;
    const HOLD_MS: u64 = 5_000;
    let base = Instant::now();
    // the step's job is not deployed: each workflow order fails at once
    let mut config = config(HOLD_MS, KEEP);
    config.prefix = "baton".into();
    let (core, _) = take_over(base, config, Vec::new());
    let mut d = Driver {
        base,
        core,
        clock: 0,
        revision: 0,
        inputs: VecDeque::new(),
        timers: Vec::new(),
    };
    d.core.workflows.insert("w".into(), workflow("gone"));
    // failed workflow orders within their hold, at most, plus the kept ended
    let held_failed = (HOLD_MS / SPACING_MS) as usize + 1;
    let (mut most_flows, mut most_jobs) = (0, 0);
    for i in 0..ORDERS {
        // a job order, cancelled while it waits (no subagent): it ends
        d.submit("j");
        d.run_until(d.clock);
        let waiting = d.core.book.active_of_job("j");
        for id in waiting {
            let cancel = CancelOrder {
                order_id: id,
                kill: false,
            };
            d.inputs.push_back(Input::Cancel(0, cancel));
        }
        // a workflow order, which fails
        d.submit("w");
        d.run_until(d.clock + SPACING_MS);
        most_flows = most_flows.max(d.core.book.flows().count());
        most_jobs = most_jobs.max(d.core.book.iter().count());
        if i == ORDERS / 2 {
            assert!(
                d.core.book.flows().any(|f| f.expired_at_ms.is_some()),
                "failed orders expire as it goes"
            );
        }
    }
    let counts = d.core.book.counts();
    assert_eq!(counts.cancelled, ORDERS, "every job order ended");
    assert!(most_jobs <= KEEP + 1, "job orders held: {most_jobs}");
    assert!(
        most_flows <= KEEP + held_failed + 1,
        "workflow orders held: {most_flows} (keep {KEEP} + {held_failed} within their hold)"
    );
    // past the last hold every failed order has expired, and only the
    // newest ended ones are held
    d.run_until(d.clock + HOLD_MS);
    assert_eq!(d.core.book.flows().count(), KEEP);
    assert!(d.core.book.flows().all(|f| f.is_ended()));
    assert!(d.core.writing.is_empty() && d.core.unannounced.is_empty());
    assert!(d.timers.is_empty(), "no timer left: {}", d.timers.len());
}
