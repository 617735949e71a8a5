//! The order book's tests (compiled only for tests, from `mod.rs`): each
//! job order's phases and events, one case per test. Long on purpose: the
//! cases share their small fixtures here.

use super::*;
use std::collections::BTreeMap;

fn order(id: &str) -> Order {
    Order::new(id.into(), "job".into(), BTreeMap::new(), None, 1)
}

fn ok_outcome() -> Outcome {
    Outcome {
        exit_code: Some(0),
        finished_at_ms: 5,
        ..Outcome::default()
    }
}

fn dispatched(book: &mut OrderBook, id: &str, sub: &str) -> String {
    let task = book.get(id).unwrap().next_task_id();
    book.apply(
        id,
        OrderEvent::Dispatched {
            task_id: task.clone(),
            subagent_id: sub.into(),
            instance_id: format!("{sub}-i1"),
        },
    )
    .unwrap();
    task
}

#[test]
fn happy_path_counts_and_queue() {
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.enqueue("a");
    assert_eq!(book.next_queued().unwrap().id, "a");
    let task = dispatched(&mut book, "a", "s1");
    assert!(book.next_queued().is_none());
    book.apply(
        "a",
        OrderEvent::Started {
            task_id: task.clone(),
            at_ms: 2,
        },
    )
    .unwrap();
    assert_eq!(book.counts().running, 1);
    let r = book
        .apply(
            "a",
            OrderEvent::Finished {
                at_ms: 0,
                task_id: task,
                outcome: ok_outcome(),
            },
        )
        .unwrap();
    assert_eq!(
        r,
        Applied::Moved {
            from: Phase::Running,
            to: Phase::Succeeded
        }
    );
    let c = book.counts();
    assert_eq!((c.accepted, c.running, c.succeeded), (0, 0, 1));
    assert_eq!(book.get("a").unwrap().info().exit_code, Some(0));
}

#[test]
fn result_before_start_confirmation_finishes_the_order() {
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.enqueue("a");
    let task = dispatched(&mut book, "a", "s1");
    let mut outcome = ok_outcome();
    outcome.exit_code = Some(3);
    book.apply(
        "a",
        OrderEvent::Finished {
            at_ms: 0,
            task_id: task.clone(),
            outcome,
        },
    )
    .unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
    // the late confirmation changes nothing
    let r = book
        .apply(
            "a",
            OrderEvent::Started {
                task_id: task,
                at_ms: 9,
            },
        )
        .unwrap();
    assert_eq!(r, Applied::Stale);
    assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
}

#[test]
fn stale_and_repeated_results_change_nothing() {
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.enqueue("a");
    let first = dispatched(&mut book, "a", "s1");
    book.apply(
        "a",
        OrderEvent::DispatchFailed {
            task_id: first.clone(),
        },
    )
    .unwrap();
    assert_eq!(book.next_queued().unwrap().id, "a");
    let second = dispatched(&mut book, "a", "s2");
    assert_eq!(
        second, first,
        "a dispatch that never started is not an attempt"
    );
    book.apply(
        "a",
        OrderEvent::Finished {
            at_ms: 0,
            task_id: second.clone(),
            outcome: ok_outcome(),
        },
    )
    .unwrap();
    let again = book
        .apply(
            "a",
            OrderEvent::Finished {
                at_ms: 0,
                task_id: second,
                outcome: Outcome::default(),
            },
        )
        .unwrap();
    assert_eq!(again, Applied::Stale);
    assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
    assert_eq!(book.counts().succeeded, 1);
}

#[test]
fn lost_subagent_requeues_unconfirmed_and_fails_running() {
    let mut book = OrderBook::new(10);
    for id in ["a", "b"] {
        book.insert(order(id));
        book.enqueue(id);
    }
    dispatched(&mut book, "a", "s1");
    let tb = dispatched(&mut book, "b", "s1");
    book.apply(
        "b",
        OrderEvent::Started {
            task_id: tb,
            at_ms: 2,
        },
    )
    .unwrap();
    let mut on = book.on_subagent("s1");
    on.sort();
    assert_eq!(on, vec!["a", "b"]);
    book.get_mut_for_test("b").restartable = false;
    for id in on {
        book.apply(&id, lost("s1", true, 0)).unwrap();
    }
    assert_eq!(book.get("a").unwrap().phase, Phase::Queued);
    assert_eq!(
        book.get("a").unwrap().attempt,
        0,
        "never confirmed, and its process is gone: not an attempt"
    );
    assert_eq!(book.next_queued().unwrap().id, "a");
    let b = book.get("b").unwrap().info();
    assert_eq!(b.state, OrderState::Failed);
    assert!(b.reason.unwrap().contains("subagent lost"));
}

/// `dead`: its reaper certified the death of the process the tasks
/// were placed on; otherwise it is only out of sight.
fn lost(sub: &str, dead: bool, rerun_at_ms: u64) -> OrderEvent {
    if dead {
        OrderEvent::Certified {
            subagent_id: sub.into(),
            instance_id: format!("{sub}-i1"),
            at_ms: 3,
        }
    } else {
        OrderEvent::SubagentLost {
            subagent_id: sub.into(),
            at_ms: 3,
            rerun_at_ms,
        }
    }
}

fn running(book: &mut OrderBook, id: &str, sub: &str) -> String {
    book.insert(order(id));
    book.enqueue(id);
    let task = dispatched(book, id, sub);
    let started = OrderEvent::Started {
        task_id: task.clone(),
        at_ms: 2,
    };
    book.apply(id, started).unwrap();
    task
}

#[test]
fn only_the_current_tasks_results_are_kept() {
    let mut book = OrderBook::new(10);
    let first = running(&mut book, "r", "sub-1");
    let lost = lost("sub-1", true, 3);
    book.apply("r", lost).unwrap();
    let second = dispatched(&mut book, "r", "sub-2");
    let with = |value: &str| Outcome {
        outputs: [("k".to_string(), value.to_string())].into(),
        ..ok_outcome()
    };
    let stale = OrderEvent::Finished {
        at_ms: 0,
        task_id: first,
        outcome: with("stale"),
    };
    assert!(matches!(book.apply("r", stale), Ok(Applied::Stale)));
    assert!(book.get("r").unwrap().info().outputs.is_empty());
    let done = OrderEvent::Finished {
        at_ms: 0,
        task_id: second,
        outcome: with("current"),
    };
    book.apply("r", done).unwrap();
    assert_eq!(book.get("r").unwrap().info().outputs["k"], "current");
}

#[test]
fn a_skipped_order_ends_cancelled_with_its_reason_and_is_never_dispatched() {
    let mut book = OrderBook::new(10);
    running(&mut book, "r", "sub-1");
    book.insert(order("s"));
    book.enqueue("s");
    let mut active = book.active_of_job("job");
    active.sort();
    assert_eq!(active, ["r", "s"]);
    let skipped = OrderEvent::Skipped {
        reason: "skipped".into(),
        at_ms: 3,
    };
    book.apply("s", skipped.clone()).unwrap();
    let info = book.get("s").unwrap().info();
    assert_eq!(info.state, OrderState::Cancelled);
    assert_eq!(info.reason.as_deref(), Some("skipped"));
    assert_eq!(book.queued().count(), 0);
    assert_eq!(book.active_of_job("job"), ["r"]);
    // Only a waiting order can be skipped.
    assert!(book.apply("r", skipped).is_err());
}

#[test]
fn cancel_ends_a_waiting_order_at_once_and_a_running_one_when_its_task_ends() {
    let mut book = OrderBook::new(10);
    book.insert(order("w"));
    book.enqueue("w");
    book.apply("w", OrderEvent::Cancel { at_ms: 5 }).unwrap();
    assert_eq!(book.get("w").unwrap().phase, Phase::Cancelled);
    assert!(
        book.next_queued().is_none(),
        "a cancelled order is never dispatched"
    );
    assert_eq!(
        book.apply("w", OrderEvent::Cancel { at_ms: 6 }).unwrap(),
        Applied::Stale,
        "cancel is idempotent"
    );
    assert_eq!(book.counts().cancelled, 1);

    let task = running(&mut book, "r", "s1");
    assert_eq!(
        book.apply("r", OrderEvent::Cancel { at_ms: 7 }).unwrap(),
        Applied::Stale
    );
    assert!(book.get("r").unwrap().cancel_requested);
    let done = OrderEvent::Finished {
        at_ms: 0,
        task_id: task,
        outcome: ok_outcome(),
    };
    book.apply("r", done).unwrap();
    assert_eq!(book.get("r").unwrap().phase, Phase::Cancelled);

    // a cancelled order lost with its subagent does not run again
    let task = running(&mut book, "l", "s1");
    book.apply("l", OrderEvent::Cancel { at_ms: 8 }).unwrap();
    book.apply("l", lost("s1", true, 0)).unwrap();
    assert_eq!(book.get("l").unwrap().phase, Phase::Cancelled);
    let _ = task;

    // a finished order cannot be cancelled
    let t = running(&mut book, "f", "s1");
    let done = OrderEvent::Finished {
        at_ms: 0,
        task_id: t,
        outcome: ok_outcome(),
    };
    book.apply("f", done).unwrap();
    assert!(book.apply("f", OrderEvent::Cancel { at_ms: 9 }).is_err());
}

#[test]
fn a_non_restartable_task_lost_before_its_start_was_confirmed_fails() {
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.get_mut_for_test("a").restartable = false;
    book.enqueue("a");
    dispatched(&mut book, "a", "s1");
    book.apply("a", lost("s1", true, 0)).unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Failed);
    assert!(book.next_queued().is_none());
}

#[test]
fn a_dead_subagents_restartable_task_runs_again_as_the_next_attempt() {
    let mut book = OrderBook::new(10);
    let first = running(&mut book, "a", "s1");
    book.apply("a", lost("s1", true, 0)).unwrap();
    assert_eq!(book.next_queued().unwrap().id, "a");
    let second = dispatched(&mut book, "a", "s2");
    assert_ne!(first, second);
    assert_eq!(book.get("a").unwrap().attempt, 2);
    // the first copy's late result is recorded, never changes the order
    let late = OrderEvent::Finished {
        at_ms: 0,
        task_id: first,
        outcome: ok_outcome(),
    };
    assert_eq!(book.apply("a", late).unwrap(), Applied::Stale);
    assert_eq!(book.get("a").unwrap().phase, Phase::Dispatching);
}

#[test]
fn an_unreachable_subagents_task_waits_for_its_orphan_deadline() {
    let mut book = OrderBook::new(10);
    let task = running(&mut book, "a", "s1");
    book.apply("a", lost("s1", false, 100)).unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Orphaned);
    assert!(
        book.next_queued().is_none(),
        "not rerun while it may still run"
    );
    assert!(book.orphans_due(99).is_empty());
    assert_eq!(book.orphans_due(100), vec!["a"]);
    let early = OrderEvent::OrphanDeadline { at_ms: 99 };
    assert_eq!(book.apply("a", early).unwrap(), Applied::Stale);
    book.apply("a", OrderEvent::OrphanDeadline { at_ms: 100 })
        .unwrap();
    assert_eq!(book.next_queued().unwrap().id, "a");
    assert_eq!(book.get("a").unwrap().attempt, 1);
    let _ = task;
}

#[test]
fn a_task_its_subagent_killed_runs_again_or_fails_as_lost() {
    let mut book = OrderBook::new(10);
    let ta = running(&mut book, "a", "s1");
    let tb = running(&mut book, "b", "s1");
    book.get_mut_for_test("b").restartable = false;
    for (id, task) in [("a", ta), ("b", tb)] {
        book.apply(id, lost("s1", false, 100)).unwrap();
        let event = OrderEvent::Abandoned {
            task_id: task,
            reason: "no broker heard for 10s".into(),
            at_ms: 50,
        };
        book.apply(id, event).unwrap();
    }
    assert_eq!(book.next_queued().unwrap().id, "a");
    assert_eq!(book.get("a").unwrap().attempt, 1);
    let b = book.get("b").unwrap().info();
    assert_eq!(b.state, OrderState::Failed);
    assert!(b.reason.unwrap().contains("subagent lost"));
}

#[test]
fn a_task_killed_for_its_cancel_is_cancelled_not_lost() {
    let mut book = OrderBook::new(10);
    let task = running(&mut book, "a", "s1");
    book.apply("a", OrderEvent::Cancel { at_ms: 40 }).unwrap();
    let event = OrderEvent::Abandoned {
        task_id: task,
        reason: "cancelled".into(),
        at_ms: 50,
    };
    book.apply("a", event).unwrap();
    let info = book.get("a").unwrap().info();
    assert_eq!(info.state, OrderState::Cancelled);
    let outcomes: Vec<_> = info.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [Some(crate::protocol::AttemptOutcome::Cancelled)]);
}

#[test]
fn an_orphaned_task_can_still_finish_or_be_found_running() {
    let mut book = OrderBook::new(10);
    let ta = running(&mut book, "a", "s1");
    let tb = running(&mut book, "b", "s1");
    book.apply("a", lost("s1", false, 100)).unwrap();
    book.apply("b", lost("s1", false, 100)).unwrap();
    // a's late result is accepted
    let late = OrderEvent::Finished {
        at_ms: 0,
        task_id: ta,
        outcome: ok_outcome(),
    };
    book.apply("a", late).unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
    // b's subagent is back and still runs it
    let back = OrderEvent::SubagentReturned {
        subagent_id: "s1".into(),
        running: vec![tb],
    };
    book.apply("b", back).unwrap();
    assert_eq!(book.get("b").unwrap().phase, Phase::Running);
    assert!(book.orphans_due(1000).is_empty());
}

#[test]
fn orphans_are_counted_every_way_they_come_and_go_so_a_check_finds_each() {
    let mut book = OrderBook::new(10);
    let ta = running(&mut book, "a", "s1");
    running(&mut book, "b", "s1");
    assert!(book.orphans_due(1_000).is_empty());
    book.apply("a", lost("s1", false, 100)).unwrap();
    book.apply("b", lost("s1", false, 100)).unwrap();
    assert_eq!(book.orphaned, 2);
    assert_eq!(book.orphans_due(100), vec!["a", "b"]);
    // a's late result takes it out; b's end stored by another broker too
    let late = OrderEvent::Finished {
        at_ms: 0,
        task_id: ta,
        outcome: ok_outcome(),
    };
    book.apply("a", late).unwrap();
    assert_eq!(book.orphans_due(100), vec!["b"]);
    let mut ended = book.get("b").unwrap().clone();
    ended.phase = Phase::Failed;
    book.adopt(ended);
    assert_eq!(book.orphaned, 0);
    assert!(book.orphans_due(1_000).is_empty());
    // an orphan a broker takes over is found too
    let mut c = order("c");
    c.phase = Phase::Orphaned;
    c.rerun_at_ms = Some(50);
    let mut taken_over = OrderBook::new(10);
    taken_over.restore([c]);
    assert_eq!(taken_over.orphans_due(50), vec!["c"]);
}

#[test]
fn finished_orders_are_forgotten_beyond_the_limit() {
    let mut book = OrderBook::new(2);
    for i in 0..5 {
        let id = format!("o{i}");
        let mut o = order(&id);
        o.request_id = Some(format!("r{i}"));
        book.insert(o);
        book.enqueue(&id);
        let t = dispatched(&mut book, &id, "s");
        book.apply(
            &id,
            OrderEvent::Finished {
                at_ms: 0,
                task_id: t,
                outcome: ok_outcome(),
            },
        )
        .unwrap();
    }
    assert!(book.get("o0").is_none() && book.by_request_id("r0").is_none());
    assert!(book.get("o4").is_some() && book.by_request_id("r4").is_some());
    assert_eq!(book.counts().succeeded, 5);
}

fn journaled(id: &str, state: OrderState, task: Option<(&str, &str)>) -> OrderInfo {
    let mut o = order(id);
    o.request_id = Some(format!("req-{id}"));
    let mut info = o.info();
    info.state = state;
    if let Some((task, sub)) = task {
        info.task_id = Some(task.into());
        info.subagent_id = Some(sub.into());
        info.subagent_instance_id = Some(format!("{sub}-i1"));
        info.attempt = 1;
    }
    info
}

fn reconciled(sub: &str, instance: &str, running: &[&str]) -> OrderEvent {
    OrderEvent::Reconciled {
        subagent_id: sub.into(),
        instance_id: instance.into(),
        running: running.iter().map(|t| t.to_string()).collect(),
        result_by_ms: 500,
        doubt_until_ms: 900,
        at_ms: 100,
    }
}

#[test]
fn a_journaled_order_restores_to_the_same_info() {
    let mut book = OrderBook::new(10);
    for id in ["q", "d", "f"] {
        book.insert(order(id));
        book.enqueue(id);
    }
    dispatched(&mut book, "d", "s1");
    running(&mut book, "r2", "s1");
    let t = dispatched(&mut book, "f", "s1");
    book.apply("f", OrderEvent::Cancel { at_ms: 3 }).unwrap();
    let outputs: BTreeMap<String, String> = [("rows".into(), "42".into())].into();
    let done = OrderEvent::Finished {
        at_ms: 0,
        task_id: t,
        outcome: Outcome {
            outputs: outputs.clone(),
            ..ok_outcome()
        },
    };
    book.apply("f", done).unwrap();
    assert_eq!(book.get("f").unwrap().info().outputs, outputs);
    for id in ["q", "d", "r2", "f"] {
        let info = book.get(id).unwrap().info();
        let restored = Order::restore(&info, true);
        assert_eq!(restored.info(), info, "{id}");
        assert!(restored.durable);
    }
}

#[test]
fn restore_queues_waiting_orders_in_order_and_keeps_placed_ones_on_their_subagent() {
    let mut infos = [
        journaled("late", OrderState::Accepted, None),
        journaled("early", OrderState::Accepted, None),
        journaled("sent", OrderState::Accepted, Some(("sent-1", "s1"))),
        journaled("runs", OrderState::Running, Some(("runs-1", "s2"))),
    ];
    infos[0].accepted_at_ms = 20;
    infos[1].accepted_at_ms = 10;
    let mut book = OrderBook::new(10);
    book.restore(infos.iter().map(|i| Order::restore(i, true)));
    let queued: Vec<&str> = book.queued().map(|o| o.id.as_str()).collect();
    assert_eq!(queued, ["early", "late"]);
    assert_eq!(book.get("sent").unwrap().phase, Phase::Dispatching);
    assert_eq!(book.get("runs").unwrap().phase, Phase::Running);
    assert!(book.get("runs").unwrap().confirmed);
    assert_eq!(
        book.inherited_subagents().into_iter().collect::<Vec<_>>(),
        ["s1", "s2"]
    );
    assert_eq!(book.inherited_on("s1")[0].id, "sent");
    let c = book.counts();
    assert_eq!((c.accepted, c.running), (3, 1));
    let Some(Held::Job(runs)) = book.by_request_id("req-runs") else {
        panic!("a job order");
    };
    assert_eq!(runs.id, "runs");
    // the next attempt of a requeued order gets a new task id
    assert_eq!(book.get("runs").unwrap().next_task_id(), "runs-2");
}

#[test]
fn restore_remembers_only_the_newest_final_orders_but_counts_all() {
    let infos: Vec<OrderInfo> = (0..5)
        .map(|i| {
            let mut info = journaled(&format!("o{i}"), OrderState::Succeeded, None);
            info.finished_at_ms = Some(100 - i);
            info.exit_code = Some(0);
            info
        })
        .collect();
    let mut book = OrderBook::new(2);
    book.restore(infos.iter().map(|i| Order::restore(i, true)));
    // finished last: o0 and o1
    assert!(book.get("o0").is_some() && book.by_request_id("req-o1").is_some());
    assert!(book.get("o4").is_none() && book.by_request_id("req-o4").is_none());
    assert_eq!(book.counts().succeeded, 5);
    assert_eq!(book.get("o0").unwrap().info(), infos[0]);
    assert!(book.inherited_subagents().is_empty());
    assert!(book.queued().next().is_none());
}

#[test]
fn reconciling_an_inherited_task_confirms_resends_awaits_or_buries_it() {
    let mut book = OrderBook::new(10);
    let infos = [
        journaled("listed", OrderState::Accepted, Some(("listed-1", "s1"))),
        journaled("unsent", OrderState::Accepted, Some(("unsent-1", "s1"))),
        journaled("ended", OrderState::Running, Some(("ended-1", "s1"))),
        journaled("moved", OrderState::Running, Some(("moved-1", "s2"))),
    ];
    book.restore(infos.iter().map(|i| Order::restore(i, true)));
    for id in ["listed", "unsent", "ended"] {
        book.apply(id, reconciled("s1", "s1-i1", &["listed-1"]))
            .unwrap();
    }
    let phase = |book: &OrderBook, id: &str| book.get(id).unwrap().phase;
    assert_eq!(phase(&book, "listed"), Phase::Running);
    assert_eq!(
        phase(&book, "unsent"),
        Phase::Dispatching,
        "sent again, same task"
    );
    assert_eq!(phase(&book, "ended"), Phase::Orphaned);
    assert_eq!(book.get("ended").unwrap().rerun_at_ms, Some(500));
    assert!(book.inherited_on("s1").is_empty());
    // reconciled once: a later heartbeat changes nothing
    let again = book.apply("unsent", reconciled("s1", "s1-i1", &[]));
    assert_eq!(again.unwrap(), Applied::Stale);
    // the ended task's result is still accepted
    let late = OrderEvent::Finished {
        at_ms: 0,
        task_id: "ended-1".into(),
        outcome: ok_outcome(),
    };
    book.apply("ended", late).unwrap();
    assert_eq!(phase(&book, "ended"), Phase::Succeeded);
    // s2 restarted since: the old process is out of sight, not proven
    // dead, so its task is in doubt until its orphan deadline...
    book.apply("moved", reconciled("s2", "s2-i2", &[])).unwrap();
    assert_eq!(phase(&book, "moved"), Phase::Orphaned);
    assert_eq!(book.get("moved").unwrap().rerun_at_ms, Some(900));
    assert!(book.next_queued().is_none(), "never run again on suspicion");
    // ...or until that process's certificate, which proves it
    let other = OrderEvent::Certified {
        subagent_id: "s2".into(),
        instance_id: "s2-i2".into(),
        at_ms: 200,
    };
    assert_eq!(
        book.apply("moved", other).unwrap(),
        Applied::Stale,
        "another process's death proves nothing"
    );
    book.apply("moved", lost("s2", true, 0)).unwrap();
    assert_eq!(phase(&book, "moved"), Phase::Queued);
    assert_eq!(book.get("moved").unwrap().next_task_id(), "moved-2");
    assert_eq!(book.next_queued().unwrap().id, "moved");
}

#[test]
fn an_ended_inherited_task_without_result_runs_again_only_after_its_deadline() {
    let mut book = OrderBook::new(10);
    let info = journaled("a", OrderState::Running, Some(("a-1", "s1")));
    book.restore([Order::restore(&info, true)]);
    // a result of another task is stale
    let other = OrderEvent::Finished {
        at_ms: 0,
        task_id: "a-0".into(),
        outcome: ok_outcome(),
    };
    assert_eq!(book.apply("a", other).unwrap(), Applied::Stale);
    book.apply("a", reconciled("s1", "s1-i1", &[])).unwrap();
    assert!(book.orphans_due(499).is_empty());
    assert!(book.next_queued().is_none());
    book.apply("a", OrderEvent::OrphanDeadline { at_ms: 500 })
        .unwrap();
    assert_eq!(book.next_queued().unwrap().id, "a");
    assert_eq!(book.get("a").unwrap().attempt, 1, "it started: counted");
}

#[test]
fn an_inherited_task_of_a_silent_subagent_waits_and_can_still_be_found_running() {
    let mut book = OrderBook::new(10);
    let infos = [
        journaled("a", OrderState::Running, Some(("a-1", "s1"))),
        journaled("b", OrderState::Accepted, Some(("b-1", "s1"))),
    ];
    book.restore(infos.iter().map(|i| Order::restore(i, false)));
    for id in ["a", "b"] {
        book.apply(id, lost("s1", false, 900)).unwrap();
        assert_eq!(book.get(id).unwrap().phase, Phase::Orphaned);
    }
    assert_eq!(
        book.inherited_on("s1").len(),
        2,
        "reconciled when heard from"
    );
    // heard from late: a still runs; b is not there and waits at most
    // for its result
    book.apply("a", reconciled("s1", "s1-i1", &["a-1"]))
        .unwrap();
    book.apply("b", reconciled("s1", "s1-i1", &["a-1"]))
        .unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Running);
    assert_eq!(book.get("b").unwrap().rerun_at_ms, Some(500));
    // not restartable: never run twice
    book.apply("b", OrderEvent::OrphanDeadline { at_ms: 500 })
        .unwrap();
    assert_eq!(book.get("b").unwrap().phase, Phase::Failed);
    assert!(book.next_queued().is_none());
}

#[test]
fn a_cancel_requested_before_the_takeover_still_ends_the_order_cancelled() {
    let mut info = journaled("a", OrderState::Running, Some(("a-1", "s1")));
    info.cancel_requested = true;
    let mut book = OrderBook::new(10);
    book.restore([Order::restore(&info, true)]);
    book.apply("a", reconciled("s1", "s1-i2", &[])).unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Orphaned);
    book.apply("a", OrderEvent::OrphanDeadline { at_ms: 900 })
        .unwrap();
    assert_eq!(book.get("a").unwrap().phase, Phase::Cancelled);
    assert!(book.next_queued().is_none());
}

#[test]
fn no_event_sequence_leaves_a_final_order() {
    // every event applied to a final order is stale or refused
    let events = [
        OrderEvent::Dispatched {
            task_id: "x-1".into(),
            subagent_id: "s".into(),
            instance_id: "s-i1".into(),
        },
        OrderEvent::DispatchFailed {
            task_id: "a-1".into(),
        },
        OrderEvent::Started {
            task_id: "a-1".into(),
            at_ms: 1,
        },
        OrderEvent::Finished {
            at_ms: 0,
            task_id: "a-1".into(),
            outcome: Outcome::default(),
        },
        lost("s1", true, 0),
        lost("s1", false, 0),
        OrderEvent::OrphanDeadline { at_ms: 9 },
        OrderEvent::SubagentReturned {
            subagent_id: "s1".into(),
            running: vec!["a-1".into()],
        },
        reconciled("s1", "s1-i2", &[]),
        reconciled("s1", "s1-i1", &["a-1"]),
    ];
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.enqueue("a");
    let t = dispatched(&mut book, "a", "s1");
    book.apply(
        "a",
        OrderEvent::Finished {
            at_ms: 0,
            task_id: t,
            outcome: ok_outcome(),
        },
    )
    .unwrap();
    for e in events {
        let _ = book.apply("a", e);
        assert_eq!(book.get("a").unwrap().phase, Phase::Succeeded);
    }
}

/// Property: whatever mix of suspicion a running task's subagent draws
/// (silence, a return without the task, a restart under its id seen at
/// a takeover, certificates of other processes, deadlines not yet due),
/// the task is never run again nor failed: only proof moves it.
#[test]
fn suspicion_alone_never_runs_a_task_again() {
    for seed in 0..2_000u64 {
        let mut rng = crate::testing::Rng::new(seed);
        let mut book = OrderBook::new(10);
        let restartable = rng.percent(50);
        let mut o = order("a");
        o.restartable = restartable;
        book.insert(o);
        book.enqueue("a");
        let task = dispatched(&mut book, "a", "s1");
        if rng.percent(70) {
            let started = OrderEvent::Started {
                task_id: task.clone(),
                at_ms: 1,
            };
            book.apply("a", started).unwrap();
        }
        for step in 0..rng.below(12) {
            let now = 10 + step;
            let rerun_at = book.get("a").unwrap().rerun_at_ms;
            let event = match rng.below(6) {
                0 => lost("s1", false, now + 100 + rng.below(100)),
                1 => OrderEvent::SubagentReturned {
                    subagent_id: "s1".into(),
                    running: if rng.percent(50) {
                        vec![task.clone()]
                    } else {
                        vec![]
                    },
                },
                2 => OrderEvent::Certified {
                    subagent_id: rng.pick(&["s1", "s2"]).into(),
                    instance_id: "s1-i2".into(),
                    at_ms: now,
                },
                3 => OrderEvent::Certified {
                    subagent_id: "s2".into(),
                    instance_id: "s1-i1".into(),
                    at_ms: now,
                },
                4 => OrderEvent::OrphanDeadline {
                    at_ms: rerun_at.map_or(now, |t| t.saturating_sub(1)),
                },
                _ => OrderEvent::DispatchFailed {
                    task_id: "a-9".into(),
                },
            };
            let _ = book.apply("a", event.clone());
            let a = book.get("a").unwrap();
            assert!(
                matches!(
                    a.phase,
                    Phase::Dispatching | Phase::Running | Phase::Orphaned
                ),
                "seed {seed}: {event:?} moved the order to {:?}",
                a.phase
            );
            assert_eq!(a.task_id.as_deref(), Some(task.as_str()), "seed {seed}");
            assert_eq!(a.attempt, 1, "seed {seed}");
        }
        // proof of the right process's death releases it
        book.apply("a", lost("s1", true, 0)).unwrap();
        let a = book.get("a").unwrap();
        if restartable {
            assert_eq!(a.phase, Phase::Queued, "seed {seed}");
        } else {
            assert_eq!(a.phase, Phase::Failed, "seed {seed}");
        }
    }
}

#[test]
fn one_request_id_index_finds_job_and_workflow_orders() {
    let spec: crate::protocol::WorkflowSpec =
        toml::from_str("name = 'wf'\n[[steps]]\nname = 'a'\njob = 'job'\n").expect("a workflow");
    let flow = FlowOrder::new(
        "f".into(),
        &spec,
        BTreeMap::new(),
        Some("r-f".into()),
        None,
        1,
    )
    .expect("a valid workflow");
    let mut book = OrderBook::new(10);
    book.insert_flow(flow);
    let mut o = order("o");
    o.request_id = Some("r-o".into());
    book.insert(o);
    assert!(matches!(book.by_request_id("r-f"), Some(Held::Flow(f)) if f.id == "f"));
    assert!(matches!(book.by_request_id("r-o"), Some(Held::Job(o)) if o.id == "o"));
    assert_eq!(book.info("f").map(|i| i.job), Some("wf".to_string()));
    assert!(book.holds("f") && book.holds("o") && !book.holds("x"));
    book.remove_flow("f");
    assert!(book.by_request_id("r-f").is_none() && !book.holds("f"));
    book.remove("o");
    assert!(book.by_request_id("r-o").is_none() && !book.holds("o"));
}

#[test]
fn the_start_of_an_id_finds_job_and_workflow_orders() {
    let mut book = OrderBook::new(10);
    for id in ["ab1", "ab2", "cd1"] {
        book.insert(order(id));
    }
    assert_eq!(book.matching("ab", 3), ["ab1", "ab2"]);
    assert_eq!(book.matching("ab", 1), ["ab1"]);
    assert_eq!(book.matching("cd", 3), ["cd1"]);
    // the end of an id, as `baton watch` prints it
    assert_eq!(book.matching("d1", 3), ["cd1"]);
    assert!(book.matching("x", 3).is_empty());
}

fn with_retries(id: &str, times: u32) -> Order {
    order(id).with_retry(Some(crate::protocol::RetryPolicy {
        times,
        backoff_ms: 1_000,
        max_backoff_ms: None,
        jitter: false,
    }))
}

fn exit(code: i32, at_ms: u64) -> Outcome {
    Outcome {
        exit_code: Some(code),
        started_at_ms: Some(at_ms - 1),
        finished_at_ms: at_ms,
        ..Outcome::default()
    }
}

/// Runs the order's next task to `outcome`, the broker taking it at `at_ms`.
fn run_to(book: &mut OrderBook, id: &str, outcome: Outcome, at_ms: u64) -> Applied {
    let task = dispatched(book, id, "s1");
    let started = OrderEvent::Started {
        task_id: task.clone(),
        at_ms: at_ms - 1,
    };
    book.apply(id, started).unwrap();
    let done = OrderEvent::Finished {
        task_id: task,
        outcome,
        at_ms,
    };
    book.apply(id, done).unwrap()
}

#[test]
fn a_failed_task_waits_for_its_retry_then_runs_again_until_the_retries_are_used_up() {
    let mut book = OrderBook::new(10);
    book.insert(with_retries("a", 2));
    book.enqueue("a");
    let applied = run_to(&mut book, "a", exit(1, 100), 100);
    assert_eq!(
        applied,
        Applied::Moved {
            from: Phase::Running,
            to: Phase::Retrying
        }
    );
    let info = book.get("a").unwrap().info();
    assert_eq!(info.state, OrderState::Accepted, "waiting, not over");
    assert_eq!((info.retries, info.retry_at_ms), (1, Some(1_100)));
    assert_eq!(info.reason.as_deref(), Some("retry 1 of 2 after exit 1"));
    assert_eq!(info.task_id, None, "no task while it waits");
    assert!(
        book.next_queued().is_none(),
        "not dispatched before it is due"
    );
    // early: nothing; due: queued again, the next task a new attempt
    let early = book.apply("a", OrderEvent::RetryDue { at_ms: 1_099 });
    assert_eq!(early, Ok(Applied::Stale));
    book.apply("a", OrderEvent::RetryDue { at_ms: 1_100 })
        .unwrap();
    assert_eq!(book.next_queued().unwrap().next_task_id(), "a-2");
    // the second retry waits twice as long
    run_to(&mut book, "a", exit(2, 2_000), 2_000);
    let info = book.get("a").unwrap().info();
    assert_eq!(info.retry_at_ms, Some(4_000));
    assert_eq!(info.reason.as_deref(), Some("retry 2 of 2 after exit 2"));
    book.apply("a", OrderEvent::RetryDue { at_ms: 4_000 })
        .unwrap();
    // used up: the third failure fails the order
    let applied = run_to(&mut book, "a", exit(3, 5_000), 5_000);
    assert!(matches!(
        applied,
        Applied::Moved {
            to: Phase::Failed,
            ..
        }
    ));
    let info = book.get("a").unwrap().info();
    assert_eq!((info.exit_code, info.retry_at_ms), (Some(3), None));
    let reruns: Vec<Option<&str>> = info.attempts.iter().map(|a| a.rerun.as_deref()).collect();
    assert_eq!(
        reruns,
        [
            Some("retry 1 of 2 after exit 1"),
            Some("retry 2 of 2 after exit 2"),
            None
        ]
    );
    let attempts: Vec<u32> = info.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(book.get("a").unwrap().attempts.failed(), 3);
}

#[test]
fn success_a_cancel_or_a_task_that_could_not_run_is_never_retried() {
    let mut book = OrderBook::new(10);
    for id in ["ok", "cancelled", "unrunnable", "no-policy"] {
        let o = if id == "no-policy" {
            order(id)
        } else {
            with_retries(id, 3)
        };
        book.insert(o);
        book.enqueue(id);
    }
    run_to(&mut book, "ok", exit(0, 10), 10);
    assert_eq!(book.get("ok").unwrap().phase, Phase::Succeeded);
    // cancelled while running: killed by a signal, it ends cancelled
    let task = dispatched(&mut book, "cancelled", "s1");
    book.apply("cancelled", OrderEvent::Cancel { at_ms: 5 })
        .unwrap();
    let killed = Outcome {
        signal: Some(15),
        ..exit(0, 10)
    };
    let done = OrderEvent::Finished {
        task_id: task,
        outcome: killed,
        at_ms: 10,
    };
    book.apply("cancelled", done).unwrap();
    assert_eq!(book.get("cancelled").unwrap().phase, Phase::Cancelled);
    let unrunnable = Outcome {
        error: Some("no such program".into()),
        finished_at_ms: 10,
        ..Outcome::default()
    };
    run_to(&mut book, "unrunnable", unrunnable, 10);
    assert_eq!(book.get("unrunnable").unwrap().phase, Phase::Failed);
    run_to(&mut book, "no-policy", exit(1, 10), 10);
    assert_eq!(book.get("no-policy").unwrap().phase, Phase::Failed);
}

#[test]
fn a_cancel_ends_an_order_waiting_for_its_retry_at_once() {
    let mut book = OrderBook::new(10);
    book.insert(with_retries("a", 3));
    book.enqueue("a");
    run_to(&mut book, "a", exit(1, 100), 100);
    let applied = book.apply("a", OrderEvent::Cancel { at_ms: 200 }).unwrap();
    assert!(matches!(
        applied,
        Applied::Moved {
            to: Phase::Cancelled,
            ..
        }
    ));
    let info = book.get("a").unwrap().info();
    assert_eq!(info.retry_at_ms, None);
    assert_eq!(info.finished_at_ms, Some(200));
    // its timer finds nothing to do
    let due = book.apply("a", OrderEvent::RetryDue { at_ms: 2_000 });
    assert_eq!(due, Ok(Applied::Stale));
    assert!(book.next_queued().is_none());
}

#[test]
fn an_order_waiting_for_its_retry_restores_waiting_with_its_due_time_and_history() {
    let mut book = OrderBook::new(10);
    book.insert(with_retries("a", 3));
    book.enqueue("a");
    run_to(&mut book, "a", exit(1, 100), 100);
    let info = book.get("a").unwrap().info();
    let restored = Order::restore(&info, true);
    assert_eq!(restored.phase, Phase::Retrying);
    assert_eq!(restored.retry_at_ms, Some(1_100));
    assert_eq!(restored.info(), info, "the record rebuilds the same order");
    let mut other = OrderBook::new(10);
    other.restore([restored]);
    assert!(other.next_queued().is_none(), "it waits for its timer");
    assert_eq!(other.counts().accepted, 1);
}

#[test]
fn the_history_says_whether_a_lost_task_was_known_to_run() {
    let mut book = OrderBook::new(10);
    book.insert(order("a"));
    book.enqueue("a");
    // placed, never confirmed, its subagent certified dead
    dispatched(&mut book, "a", "s1");
    book.apply("a", lost("s1", true, 0)).unwrap();
    // placed again, confirmed, then out of sight past its orphan deadline
    let task = dispatched(&mut book, "a", "s1");
    let started = OrderEvent::Started {
        task_id: task,
        at_ms: 4,
    };
    book.apply("a", started).unwrap();
    book.apply("a", lost("s1", false, 50)).unwrap();
    book.apply("a", OrderEvent::OrphanDeadline { at_ms: 50 })
        .unwrap();
    run_to(&mut book, "a", exit(0, 90), 90);
    let info = book.get("a").unwrap().info();
    let [never, ran, ok] = &info.attempts[..] else {
        panic!("three tasks: {:#?}", info.attempts);
    };
    use crate::protocol::AttemptOutcome;
    assert_eq!(never.outcome, Some(AttemptOutcome::Lost));
    let why = never.reason.as_deref().unwrap();
    assert!(why.contains("never confirmed started"), "{why}");
    assert_eq!(never.rerun.as_deref(), Some("s1 lost"));
    assert_eq!(ran.outcome, Some(AttemptOutcome::Lost));
    assert!(ran.reason.as_deref().unwrap().contains("it was running"));
    assert_eq!(ran.started_at_ms, Some(4));
    assert_eq!(ok.outcome, Some(AttemptOutcome::Succeeded));
    // an unconfirmed task whose process is gone is no attempt: same number
    assert_eq!((never.attempt, ran.attempt, ok.attempt), (1, 1, 2));
}

#[test]
fn a_task_that_ended_unreported_says_so_in_the_history() {
    // placed and started under one broker; the next finds it no longer runs
    let mut book = OrderBook::new(10);
    running(&mut book, "a", "s1");
    let info = book.get("a").unwrap().info();
    let mut taken_over = OrderBook::new(10);
    taken_over.restore([Order::restore(&info, true)]);
    taken_over
        .apply("a", reconciled("s1", "s1-i1", &[]))
        .unwrap();
    let deadline = taken_over.get("a").unwrap().rerun_at_ms.unwrap();
    taken_over
        .apply("a", OrderEvent::OrphanDeadline { at_ms: deadline })
        .unwrap();
    let info = taken_over.get("a").unwrap().info();
    let [task] = &info.attempts[..] else {
        panic!("one task: {:#?}", info.attempts);
    };
    assert_eq!(task.outcome, Some(crate::protocol::AttemptOutcome::Lost));
    let why = task.reason.as_deref().unwrap();
    assert!(
        why.contains("it had ended, and its result never came"),
        "{why}"
    );
    assert_eq!(task.rerun.as_deref(), Some("s1 lost"));
}

#[test]
fn the_queue_sheds_stale_entries_as_they_gather_so_a_pass_costs_what_is_queued() {
    let mut book = OrderBook::new(100_000);
    let ids: Vec<String> = (0..2000).map(|i| format!("o{i:05}")).collect();
    for id in &ids {
        book.insert(order(id));
        book.enqueue(id);
    }
    // the queue's middle goes stale (cancelled), its front as orders are placed
    for id in ids.iter().skip(1000).step_by(2) {
        book.apply(id, OrderEvent::Cancel { at_ms: 1 }).unwrap();
    }
    for (placed, id) in ids.iter().take(1000).enumerate() {
        dispatched(&mut book, id, "s1");
        book.tidy_queue();
        let queued = 2000 - 500 - (placed + 1);
        assert_eq!(book.queued().count(), queued);
        assert!(
            book.queue_len() <= 500 + queued,
            "{placed}: {}",
            book.queue_len()
        );
    }
    // left: 500 queued with 500 cancelled between them; placing all but
    // the last 20 leaves the 19 cancelled between those, which the front
    // does not reach
    for id in ids.iter().skip(1001).step_by(2).take(480) {
        dispatched(&mut book, id, "s1");
        book.tidy_queue();
        let accepted = book.counts().accepted as usize;
        assert!(
            book.queue_len() <= 2 * accepted + 64,
            "{}",
            book.queue_len()
        );
    }
    let left: Vec<&str> = book.queued().map(|o| o.id.as_str()).collect();
    assert_eq!(left.len(), 20);
    assert_eq!(book.queue_len(), 39, "the cancelled ones between them");
    // with 20 accepted, 39 entries are within the bound: they stay
    for id in ids
        .iter()
        .take(1000)
        .chain(ids.iter().skip(1001).step_by(2).take(480))
    {
        let task = book.get(id).unwrap().task_id.clone().unwrap();
        book.apply(id, OrderEvent::Cancel { at_ms: 2 }).unwrap();
        let outcome = ok_outcome();
        let finished = OrderEvent::Finished {
            at_ms: 3,
            task_id: task,
            outcome,
        };
        book.apply(id, finished).unwrap();
    }
    assert_eq!(book.counts().accepted, 20);
    book.tidy_queue();
    assert_eq!(book.queue_len(), 39, "within twice the accepted plus 64");
    for id in ids.iter().skip(1961).step_by(2).take(9) {
        dispatched(&mut book, id, "s1");
    }
    book.tidy_queue();
    assert_eq!(book.queued().count(), 11);
    assert_eq!(
        book.next_queued().map(|o| o.id.clone()),
        Some(ids[1979].clone())
    );
}

#[test]
fn stale_entries_behind_a_waiting_order_go_once_they_outnumber_the_accepted() {
    let mut book = OrderBook::new(100_000);
    let ids: Vec<String> = (0..1000).map(|i| format!("o{i:04}")).collect();
    for id in &ids {
        book.insert(order(id));
        book.enqueue(id);
    }
    for id in &ids[1..999] {
        book.apply(id, OrderEvent::Cancel { at_ms: 1 }).unwrap();
    }
    book.tidy_queue();
    assert_eq!(book.queue_len(), 2);
    let left: Vec<&str> = book.queued().map(|o| o.id.as_str()).collect();
    assert_eq!(left, ["o0000", "o0999"]);
}

#[test]
fn a_failed_order_says_why_in_the_order_list_too() {
    let mut book = OrderBook::new(10);
    for id in ["a", "b"] {
        book.insert(order(id));
        book.enqueue(id);
    }
    run_to(&mut book, "a", exit(3, 10), 10);
    run_to(&mut book, "b", ok_outcome(), 11);
    let list = book.list(&ListOrders::default());
    let reason = |id: &str| {
        let o = list.orders.iter().find(|o| o.order_id == id).unwrap();
        o.reason.clone()
    };
    assert_eq!(reason("a").as_deref(), Some("its task exited with code 3"));
    assert_eq!(reason("b"), None);
}
