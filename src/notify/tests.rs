use std::time::Duration;

use super::body::{of_order, of_subagent, of_triggers, Sender};
use super::retry::{backoff, next, Next, Tried};
use super::rules::{kind_of, targets, Outages};
use super::url::{check_webhook_url, endpoint, redacted};
use crate::config::NotifyConfig;
use crate::protocol::{
    NotifyKind, NotifyRules, OrderInfo, OrderState, ParentStep, SubagentChanged, SubagentState,
    TriggersChanged,
};

fn record(state: OrderState) -> OrderInfo {
    let mut info = OrderInfo::new("o-1".into(), "backup".into(), state, 1_000);
    info.exit_code = Some(3);
    info.finished_at_ms = Some(2_000);
    info.attempt = 2;
    info.subagent_id = Some("sub-1".into());
    info
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn only_ended_orders_of_their_own_call_for_a_notification() {
    assert_eq!(
        kind_of(&record(OrderState::Failed)),
        Some(NotifyKind::Failure)
    );
    assert_eq!(
        kind_of(&record(OrderState::Succeeded)),
        Some(NotifyKind::Success)
    );
    for state in [
        OrderState::Accepted,
        OrderState::Running,
        OrderState::Cancelled,
        OrderState::Suspended,
    ] {
        assert_eq!(kind_of(&record(state)), None, "{state:?}");
    }
    let mut step = record(OrderState::Failed);
    step.parent = Some(ParentStep {
        order_id: "w-1".into(),
        workflow: "w".into(),
        step: "a".into(),
        attempt: 1,
    });
    assert_eq!(
        kind_of(&step),
        None,
        "a step is told through its workflow order"
    );
    let mut expired = record(OrderState::Failed);
    expired.expired_at_ms = Some(9_000);
    assert_eq!(kind_of(&expired), None, "told once, when it failed");
}

#[test]
fn targets_are_the_global_and_own_rules_once_each() {
    let global = NotifyConfig {
        on_failure: names(&["ops", "pager"]),
        on_success: names(&["audit"]),
        ..NotifyConfig::default()
    };
    let own = NotifyRules {
        failure: names(&["team", "ops"]),
        success: vec![],
        missed: Vec::new(),
    };
    assert_eq!(
        targets(&global, &own, NotifyKind::Failure),
        names(&["ops", "pager", "team"])
    );
    assert_eq!(
        targets(&global, &own, NotifyKind::Success),
        names(&["audit"])
    );
    let none = NotifyConfig::default();
    assert!(targets(&none, &NotifyRules::default(), NotifyKind::Failure).is_empty());
}

fn sender(broker: &str) -> Sender {
    Sender {
        broker_id: broker.into(),
        prefix: "baton".into(),
    }
}

#[test]
fn the_body_says_what_ended_and_its_id_is_stable() {
    let failed = record(OrderState::Failed);
    let n = of_order(&failed, NotifyKind::Failure, &sender("broker-a"));
    assert_eq!(n.id, "o-1:failure:2000");
    assert_eq!(n.summary, "order o-1 of job backup failed: exit code 3");
    assert_eq!(n.job.as_deref(), Some("backup"));
    assert_eq!(
        (n.exit_code, n.attempts, n.at_ms),
        (Some(3), Some(2), 2_000)
    );
    assert_eq!(n.subagent_id.as_deref(), Some("sub-1"));
    assert!(n.hint.contains("baton order show o-1"), "{}", n.hint);
    // another broker sends the same id
    let again = of_order(&failed, NotifyKind::Failure, &sender("broker-b"));
    assert_eq!(again.id, n.id);
    let json = serde_json::to_value(&n).unwrap();
    assert_eq!(json["kind"], "failure");
    assert_eq!(json["state"], "failed");
    assert!(json.get("timed_out").is_none(), "false is left out: {json}");
    let mut flow = record(OrderState::Succeeded);
    flow.workflow = Some("nightly".into());
    let n = of_order(&flow, NotifyKind::Success, &sender("b"));
    assert_eq!(n.summary, "order o-1 of workflow nightly succeeded");
}

#[test]
fn cluster_events_call_for_their_kinds_only() {
    let mut lost = SubagentChanged {
        subagent_id: "sub-2".into(),
        state: SubagentState::Lost,
        reason: "lost: no responders".into(),
        at_ms: 5,
    };
    let mut outages = Outages::default();
    lost.state = SubagentState::Suspect;
    assert_eq!(outages.subagent(&lost), None, "suspicion is not loss");
    lost.state = SubagentState::Lost;
    assert_eq!(outages.subagent(&lost), Some(NotifyKind::SubagentLost));
    let n = of_subagent(&lost, NotifyKind::SubagentLost, &sender("b"));
    assert_eq!(
        (n.id.as_str(), n.subagent_id.as_deref()),
        ("subagent:sub-2:lost:5", Some("sub-2"))
    );
    assert!(n.order_id.is_none());
    // heard again: told once, as the end of that outage
    let back = SubagentChanged {
        state: SubagentState::Available,
        reason: "back".into(),
        at_ms: 9,
        ..lost.clone()
    };
    assert_eq!(outages.subagent(&back), Some(NotifyKind::SubagentBack));
    let n = of_subagent(&back, NotifyKind::SubagentBack, &sender("b"));
    assert_eq!(n.id, "subagent:sub-2:back:9");
    assert_eq!(n.summary, "subagent sub-2 is back (back): available");
    assert_eq!(outages.subagent(&back), None, "once");
    let joined = SubagentChanged {
        subagent_id: "sub-9".into(),
        ..back.clone()
    };
    assert_eq!(outages.subagent(&joined), None, "never told lost");

    let mut stopped = TriggersChanged {
        firing: false,
        scheduler: None,
        reason: "no agent connected".into(),
        at_ms: 7,
    };
    stopped.firing = true;
    assert_eq!(
        outages.triggers(&stopped),
        None,
        "firing, nothing told before"
    );
    stopped.firing = false;
    assert_eq!(outages.triggers(&stopped), Some(NotifyKind::NoScheduler));
    assert_eq!(
        of_triggers(&stopped, NotifyKind::NoScheduler, &sender("b")).summary,
        "no trigger fires: no agent connected"
    );
    let again = TriggersChanged {
        firing: true,
        scheduler: Some("agent-1".into()),
        reason: "triggers fire again: agent agent-1 is the Scheduler".into(),
        at_ms: 8,
    };
    assert_eq!(outages.triggers(&again), Some(NotifyKind::SchedulerBack));
    let n = of_triggers(&again, NotifyKind::SchedulerBack, &sender("b"));
    assert_eq!(
        (n.id.as_str(), n.summary.as_str()),
        (
            "scheduler:back:8",
            "triggers fire again: agent agent-1 is the Scheduler"
        )
    );
    assert_eq!(outages.triggers(&again), None, "once");
    let global = NotifyConfig {
        on_subagent_lost: names(&["ops"]),
        ..NotifyConfig::default()
    };
    let own = NotifyRules {
        failure: names(&["team"]),
        success: names(&["team"]),
        missed: Vec::new(),
    };
    assert_eq!(
        targets(&global, &own, NotifyKind::SubagentLost),
        names(&["ops"])
    );
    assert_eq!(
        targets(&global, &own, NotifyKind::SubagentBack),
        names(&["ops"]),
        "the end of an outage goes where its start went"
    );
    assert!(targets(&global, &own, NotifyKind::NoScheduler).is_empty());
    assert!(targets(&global, &own, NotifyKind::SchedulerBack).is_empty());
    // missed slots: the global rule and the job's own
    let global = NotifyConfig {
        on_missed_slot: names(&["ops"]),
        ..NotifyConfig::default()
    };
    let own = NotifyRules {
        missed: names(&["team"]),
        ..NotifyRules::default()
    };
    assert_eq!(
        targets(&global, &own, NotifyKind::MissedSlot),
        names(&["ops", "team"])
    );
    let gap = crate::protocol::SlotsMissed {
        job: "nightly".into(),
        workflow: false,
        scheduler: "agent-2".into(),
        count: 3,
        after_ms: 1_767_225_600_000,
        until_ms: 1_767_225_603_500,
        at_ms: 1_767_225_603_600,
    };
    let n = super::body::of_missed_slots(&gap, &sender("b"));
    assert_eq!(n.kind, NotifyKind::MissedSlot);
    assert_eq!(n.job.as_deref(), Some("nightly"));
    assert_eq!(n.id, "missed:nightly:1767225600000:1767225603500");
    assert_eq!(
        n.summary,
        "3 slot(s) of job nightly missed between 2026-01-01T00:00:00Z and 2026-01-01T00:00:03Z (its misfire policy passed them over; Scheduler agent-2)"
    );
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let (base, cap) = (Duration::from_secs(1), Duration::from_secs(10));
    let waits: Vec<u64> = (1..=6).map(|r| backoff(r, base, cap).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
    assert_eq!(backoff(1_000, base, cap), cap);
}

#[test]
fn failures_are_retried_until_the_budget_and_refusals_are_not() {
    let (base, cap) = (Duration::from_millis(100), Duration::from_secs(1));
    let no_answer = Tried::NoAnswer("cannot connect".into());
    assert_eq!(next(&Tried::Delivered, 0, 3, base, cap), Next::Done);
    assert_eq!(next(&no_answer, 0, 3, base, cap), Next::Retry(base));
    assert_eq!(
        next(&Tried::Status(503), 2, 3, base, cap),
        Next::Retry(Duration::from_millis(400))
    );
    assert_eq!(next(&no_answer, 3, 3, base, cap), Next::GiveUp);
    assert_eq!(next(&Tried::Status(404), 0, 3, base, cap), Next::GiveUp);
    assert!(matches!(
        next(&Tried::Status(429), 0, 3, base, cap),
        Next::Retry(_)
    ));
    assert!(matches!(
        next(&Tried::Status(408), 0, 3, base, cap),
        Next::Retry(_)
    ));
}

#[test]
fn webhook_urls_are_checked_without_repeating_them() {
    assert!(check_webhook_url("https://hooks.example.com/x").is_ok());
    assert!(check_webhook_url("http://127.0.0.1:8080").is_ok());
    for bad in [
        "ftp://secret-host/x",
        "hooks.example.com/secret",
        "https:///secret",
    ] {
        let reason = check_webhook_url(bad).unwrap_err();
        assert!(!reason.contains("secret"), "{bad}: {reason}");
    }
    let e = endpoint("https://user:pw@hooks.example.com/a/b?token=t1").unwrap();
    assert!(e.tls);
    assert_eq!((e.host.as_str(), e.port), ("hooks.example.com", 443));
    assert_eq!(e.path_and_query, "/a/b?token=t1");
    assert_eq!(e.authorization.as_deref(), Some("Basic dXNlcjpwdw=="));
    let plain = endpoint("http://127.0.0.1:9000").unwrap();
    assert_eq!((plain.port, plain.path_and_query.as_str()), (9000, "/"));
}

#[test]
fn a_url_is_shown_without_user_info_or_query() {
    let shown = redacted("https://user:pw@hooks.example.com:8443/a/b?token=t1#f");
    assert_eq!(shown, "https://hooks.example.com:8443/a/b");
    assert!(!redacted("not a url at all %%").contains('%'));
}
