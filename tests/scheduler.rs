//! The Scheduler role: one agent at a time fires the deployed triggers, the
//! broker elects it by health and moves it when it dies, sickens, or an
//! operator asks; every slot becomes exactly one order.
//!
//! The `tick` job fires every second and appends its slot
//! (`BATON_SLOT_MS`) to a file, so the test counts runs per slot from
//! outside Baton: a slot run twice or never is a failure.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use baton::auth::Role;
use baton::protocol::*;
use common::proxy::Proxy;
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

/// For every process: a short lease so hand-overs are quick to test.
const ENV: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "2s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "500ms"),
    ("BATON_SCHEDULER__CONNECTION_TIMEOUT", "2s"),
];

/// Long enough for an election after a broker start (lease + grace) and a
/// kill's detection, short enough to fail fast.
const ELECTION: Duration = Duration::from_secs(15);

/// A job firing every second that records its slot in `file`.
fn tick_jobs(file: &Path, misfire: &str, extra: &str) -> String {
    format!(
        r#"
[[job]]
name = "tick"
program = "sh"
args = ["-c", 'echo "$BATON_SLOT_MS" >> "$BATON_PARAM_FILE"']
misfire = {misfire}
[job.params.file]
default = "{}"
[[job.triggers]]
kind = "cron"
expr = "* * * * * *"
{extra}
"#,
        file.display()
    )
}

async fn status(h: &Harness) -> StatusReply {
    let ask = StatusRequest::default();
    let request = h.bus.request(h.bus.subjects().status(), &ask, REQUEST);
    within(REQUEST * 2, "status", request)
        .await
        .expect("status reply")
}

async fn schedulers(h: &Harness) -> Vec<String> {
    let s = status(h).await;
    let on = s.agents.iter().filter(|a| a.role == AgentRole::Scheduler);
    on.map(|a| a.id.clone()).collect()
}

/// Waits until exactly one agent, other than `not`, is the Scheduler.
async fn one_scheduler(h: &Harness, not: Option<&str>) -> String {
    wait_for(ELECTION, "exactly one Scheduler", || async {
        match &schedulers(h).await[..] {
            [one] if Some(one.as_str()) != not => Some(one.clone()),
            _ => None,
        }
    })
    .await
}

/// Runs per slot recorded in `file`.
fn runs(file: &Path) -> BTreeMap<u64, usize> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut runs = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let slot: u64 = line.trim().parse().expect("a slot in ms");
        *runs.entry(slot).or_insert(0) += 1;
    }
    runs
}

/// Waits until every slot from the first recorded up to `until_ms` has
/// run, then checks each ran exactly once. Returns the first slot.
async fn every_slot_once(file: &Path, until_ms: u64) -> u64 {
    let last = until_ms / 1000 * 1000;
    wait_until(
        Duration::from_secs(20),
        "every slot up to the end ran",
        || {
            let r = runs(file);
            async move {
                let Some(&first) = r.keys().next() else {
                    return false;
                };
                (first..=last).step_by(1000).all(|s| r.contains_key(&s))
            }
        },
    )
    .await;
    let r = runs(file);
    let first = *r.keys().next().expect("a slot ran");
    let twice: Vec<_> = r.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "slots run more than once: {twice:?}");
    let missing: Vec<u64> = (first..=last)
        .step_by(1000)
        .filter(|s| !r.contains_key(s))
        .collect();
    assert!(missing.is_empty(), "slots never run: {missing:?}");
    for slot in r.keys() {
        assert_eq!(slot % 1000, 0, "a cron slot falls on a whole second");
    }
    first
}

fn now_ms() -> u64 {
    baton::time::now_ms()
}

fn spawn_agent(h: &mut Harness, name: &str, id: &str, extra: &[&str]) {
    let mut args = vec!["agent", "--id", id];
    args.extend_from_slice(extra);
    h.cluster.spawn(name, &args).expect("spawn agent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_one_scheduler_five_kills_every_slot_once() {
    let mut h = cluster_with_env(&["sub-1", "sub-2"], ENV).await;
    let file = h.scratch().join("ticks");
    deploy(&h.bus, &tick_jobs(&file, "{ policy = \"fire-all\" }", "")).await;
    for id in ["a1", "a2", "a3"] {
        spawn_agent(&mut h, id, id, &[]);
    }
    let mut scheduler = one_scheduler(&h, None).await;
    wait_until(Duration::from_secs(10), "the first slots run", || {
        let n = runs(&file).len();
        async move { n >= 2 }
    })
    .await;
    for round in 0..5 {
        h.cluster
            .signal(&scheduler, Signal::SIGKILL)
            .expect("kill the Scheduler");
        let next = one_scheduler(&h, Some(&scheduler)).await;
        eprintln!("round {round}: killed {scheduler}, {next} took over");
        // Bring the killed agent back, so three are up for the next round.
        spawn_agent(&mut h, &scheduler, &scheduler, &[]);
        let ran = runs(&file).len();
        wait_until(Duration::from_secs(10), "the new Scheduler fires", || {
            let n = runs(&file).len();
            async move { n >= ran + 2 }
        })
        .await;
        scheduler = next;
    }
    every_slot_once(&file, now_ms() - 1_500).await;
    let agents = status(&h).await.agents;
    assert_eq!(agents.len(), 3, "{agents:?}");
    for a in &agents {
        assert!(a.controlled);
        assert!(a.heartbeat_age_ms < 2_000, "{a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_forced_double_schedulers_still_fire_each_slot_once() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let file = h.scratch().join("ticks");
    deploy(&h.bus, &tick_jobs(&file, "{ policy = \"fire-all\" }", "")).await;
    let proxy = Proxy::start(&h.nats_url()).await.expect("start proxy");
    h.cluster
        .spawn_via("a1", &["agent", "--id", "a1"], &proxy.url())
        .expect("spawn a1");
    assert_eq!(one_scheduler(&h, None).await, "a1");
    spawn_agent(&mut h, "a2", "a2", &[]);
    wait_until(Duration::from_secs(10), "a1 fires", || {
        let n = runs(&file).len();
        async move { n >= 2 }
    })
    .await;

    // Cut a1 off: it loses its lease and turns itself off; a2 takes over.
    proxy.cut();
    assert_eq!(one_scheduler(&h, Some("a1")).await, "a2");
    let ran = runs(&file).len();
    wait_until(
        Duration::from_secs(10),
        "a2 fires while a1 is cut off",
        || {
            let n = runs(&file).len();
            async move { n >= ran + 2 }
        },
    )
    .await;
    proxy.heal();
    wait_until(ELECTION, "a1 back as a spare", || async {
        let s = status(&h).await;
        s.agents
            .iter()
            .any(|a| a.id == "a1" && a.role == AgentRole::Spare && a.heartbeat_age_ms < 1_000)
    })
    .await;
    assert_eq!(schedulers(&h).await, ["a2"]);

    // Force a second Scheduler: a rogue command in the broker's own epoch.
    let brokers = status(&h).await.brokers;
    let active = brokers.iter().find(|b| b.role == BrokerRole::Active);
    let epoch = active.expect("an active broker").epoch;
    let rogue = RoleCommand {
        broker_id: "rogue".into(),
        epoch,
        command: 1,
        action: RoleAction::On,
        lease_ms: 60_000,
    };
    let s = h.bus.subjects().clone();
    // only a broker's credentials may command an agent
    let rogue_broker = h.connect_as(Role::Broker, None).await;
    let answer: RoleAnswer = within(
        REQUEST,
        "rogue role command",
        rogue_broker.request(s.agent_role("a1"), &rogue, REQUEST),
    )
    .await
    .expect("a1 obeys a command of the current epoch");
    assert_eq!(answer.role, AgentRole::Scheduler);
    // The broker sees two Schedulers and turns one off.
    wait_until(ELECTION, "one Scheduler again", || async {
        schedulers(&h).await.len() == 1
    })
    .await;
    // A command from an older epoch is refused.
    let stale = RoleCommand {
        epoch: epoch - 1,
        ..rogue
    };
    let refused = h
        .bus
        .request::<_, RoleAnswer>(s.agent_role("a1"), &stale, REQUEST)
        .await;
    assert!(refused.is_err(), "a stale epoch is obeyed: {refused:?}");
    let ran = runs(&file).len();
    wait_until(
        Duration::from_secs(10),
        "slots run after the double",
        || {
            let n = runs(&file).len();
            async move { n >= ran + 2 }
        },
    )
    .await;
    every_slot_once(&file, now_ms() - 1_500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_in_very_bad_health_loses_the_role_to_a_healthy_spare() {
    let env = [
        ENV,
        &[
            ("BATON_SCHEDULER__SWITCH_CONDITION__AT_OR_BELOW", "very_bad"),
            ("BATON_SCHEDULER__SWITCH_CONDITION__FOR", "3s"),
        ],
    ]
    .concat();
    let mut h = cluster_with_env(&[], &env).await;
    // Only `sick` reports 99% CPU, from its own configuration file.
    let sick_config = h.scratch().join("sick.toml");
    std::fs::write(&sick_config, "[agent]\nsimulate_cpu_percent = 99\n").expect("write config");
    let sick_config = sick_config.display().to_string();
    spawn_agent(&mut h, "sick", "sick", &["--config", &sick_config]);
    // Alone, it is elected all the same: a poor Scheduler beats none.
    assert_eq!(one_scheduler(&h, None).await, "sick");
    spawn_agent(&mut h, "well", "well", &[]);
    let sick = wait_for(
        Duration::from_secs(20),
        "the role moves to well",
        || async {
            let s = status(&h).await;
            let on: Vec<&str> = s
                .agents
                .iter()
                .filter(|a| a.role == AgentRole::Scheduler)
                .map(|a| a.id.as_str())
                .collect();
            let sick = s.agents.iter().find(|a| a.id == "sick")?;
            (on == ["well"]).then(|| sick.clone())
        },
    )
    .await;
    assert_eq!(sick.health_level, HealthLevel::VeryBad);
    assert!(sick.switch_condition_met);
    assert_eq!(sick.role, AgentRole::Spare);
}

/// Runs `baton scheduler ARGS` and returns (exit code, stdout + stderr).
async fn scheduler_cmd(h: &Harness, args: &[&str]) -> (i32, String) {
    let mut all = vec!["scheduler"];
    all.extend_from_slice(args);
    let out = run_baton(h, &all, Duration::from_secs(20)).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_move_the_role_by_hand_even_off_the_only_eligible_agent() {
    let mut h = cluster_with_env(&[], ENV).await;
    spawn_agent(&mut h, "a1", "a1", &[]);
    spawn_agent(&mut h, "a2", "a2", &[]);
    let first = one_scheduler(&h, None).await;
    let other = if first == "a1" { "a2" } else { "a1" };

    // Case 4: on, for the spare; the CLI waits until it holds the role.
    let (code, text) = scheduler_cmd(&h, &["on", other]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("agent {other} is scheduler")),
        "{text}"
    );
    assert_eq!(schedulers(&h).await, [other]);

    // Case 5: off; the other agent is elected.
    let (code, text) = scheduler_cmd(&h, &["off", other]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(one_scheduler(&h, Some(other)).await, first);

    // Off on the only eligible agent: no Scheduler remains, as asked.
    let (code, text) = scheduler_cmd(&h, &["off", &first]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no agent is Scheduler now"), "{text}");
    // Past the connection timeout, still nobody is elected.
    holds_throughout(Duration::from_secs(3), "no Scheduler", || async {
        schedulers(&h).await.is_empty()
    })
    .await;
    let s = status(&h).await;
    assert!(s.agents.iter().all(|a| a.excluded), "{:?}", s.agents);
    let (_, text) = scheduler_cmd(&h, &[]).await;
    assert!(text.contains("Usage"), "{text}");
    let out = run_baton(&h, &["status"], Duration::from_secs(10)).await;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("turned off by "), "{shown}");

    // On again brings it back.
    let (code, text) = scheduler_cmd(&h, &["on", &first]).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(schedulers(&h).await, [first.as_str()]);

    // Errors name the problem.
    let (code, text) = scheduler_cmd(&h, &["on", "nobody"]).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("no agent 'nobody' is connected"), "{text}");
    spawn_agent(&mut h, "free", "free", &["--no-role-control"]);
    wait_until(ELECTION, "the uncontrolled agent is seen", || async {
        status(&h).await.agents.iter().any(|a| a.id == "free")
    })
    .await;
    let (code, text) = scheduler_cmd(&h, &["on", "free"]).await;
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("does not let the broker control"), "{text}");
    // An agent outside broker control that is on is the Scheduler: the
    // broker turns the controlled one off rather than risk two.
    assert_eq!(one_scheduler(&h, None).await, "free");
}

/// Finished events of `job` collected in the background.
fn collect_finished(
    h: &Harness,
    job: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<OrderFinished>>> {
    use futures::StreamExt;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (bus, subject, sink) = (
        h.bus.clone(),
        h.bus.subjects().job_events(job),
        seen.clone(),
    );
    tokio::spawn(async move {
        let mut events = bus.listen_raw(subject).await.expect("subscribe");
        while let Some((subject, payload)) = events.next().await {
            if subject.ends_with(".finished") {
                let e: OrderFinished =
                    baton::bus::decode(baton::bus::Encoding::MessagePack, &payload)
                        .expect("a finished event");
                sink.lock().unwrap().push(e);
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misfire_and_concurrency_policies_end_to_end() {
    let mut h = cluster_with_env(&["sub-1", "sub-2"], ENV).await;
    let dir = h.scratch();
    let (all, skip) = (dir.join("fire-all"), dir.join("skip"));
    let spans = dir.join("spans");
    let jobs = format!(
        r#"{}
[[job]]
name = "skipper"
program = "sh"
args = ["-c", 'echo "$BATON_SLOT_MS" >> "{skip}"']
misfire = {{ policy = "skip" }}
[[job.triggers]]
kind = "cron"
expr = "* * * * * *"

[[job]]
name = "long"
program = "sh"
args = ["-c", 'echo "start $(date +%s%3N)" >> "{spans}"; sleep 2.5; echo "end $(date +%s%3N)" >> "{spans}"']
concurrency = "forbid"
[[job.triggers]]
kind = "cron"
expr = "* * * * * *"

[[job]]
name = "replaced"
program = "sleep"
args = ["30"]
concurrency = "replace"
[[job.triggers]]
kind = "interval"
every = "2s"
"#,
        tick_jobs(&all, "{ policy = \"fire-all\" }", ""),
        skip = skip.display(),
        spans = spans.display(),
    );
    deploy(&h.bus, &jobs).await;
    let long = collect_finished(&h, "long");
    let replaced = collect_finished(&h, "replaced");
    spawn_agent(&mut h, "a1", "a1", &[]);
    one_scheduler(&h, None).await;
    wait_until(Duration::from_secs(10), "both jobs fire", || {
        let (a, s) = (runs(&all).len(), runs(&skip).len());
        async move { a >= 2 && s >= 2 }
    })
    .await;

    // No Scheduler for 4 seconds: fire-all catches every slot up, skip none.
    h.cluster.signal("a1", Signal::SIGKILL).expect("kill a1");
    let down_at = now_ms();
    wait_until(ELECTION, "a1 is known gone", || async {
        schedulers(&h).await.is_empty()
    })
    .await;
    holds_throughout(Duration::from_secs(3), "no Scheduler", || async {
        schedulers(&h).await.is_empty()
    })
    .await;
    spawn_agent(&mut h, "a1", "a1", &[]);
    one_scheduler(&h, None).await;
    let back_at = now_ms();
    wait_until(
        Duration::from_secs(10),
        "both fire after the outage",
        || {
            let (a, s) = (runs(&all), runs(&skip));
            let after = |r: &BTreeMap<u64, usize>| r.keys().filter(|&&k| k > back_at).count();
            async move { after(&a) >= 2 && after(&s) >= 2 }
        },
    )
    .await;
    every_slot_once(&all, now_ms() - 1_500).await;
    let skipped = runs(&skip);
    let gap: Vec<u64> = (down_at / 1000 * 1000 + 1000..back_at.saturating_sub(2_000))
        .step_by(1000)
        .filter(|s| skipped.contains_key(s))
        .collect();
    assert!(gap.is_empty(), "skip fired missed slots: {gap:?}");
    assert!(
        skipped.keys().any(|&s| s > back_at),
        "skip fires again after the outage"
    );
    assert!(skipped.values().all(|&n| n == 1), "{skipped:?}");

    // forbid: a slot that comes while a run is active is skipped (its order
    // ends cancelled, saying why), and runs never overlap.
    wait_until(Duration::from_secs(15), "forbid skips slots", || {
        let skipped = long.lock().unwrap().iter().any(|e| {
            e.state == OrderState::Cancelled
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("concurrency = forbid"))
        });
        async move { skipped }
    })
    .await;
    let text = std::fs::read_to_string(&spans).unwrap_or_default();
    let mut active = 0;
    for line in text.lines() {
        if line.starts_with("start") {
            active += 1;
            assert!(active <= 1, "two runs of a forbid job overlap:\n{text}");
        } else {
            active -= 1;
        }
    }
    assert!(
        long.lock()
            .unwrap()
            .iter()
            .any(|e| e.state == OrderState::Succeeded),
        "forbid still runs the job"
    );

    // replace: each new slot cancels the run still going.
    wait_until(Duration::from_secs(15), "a run is replaced", || {
        let n = replaced
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.state == OrderState::Cancelled)
            .count();
        async move { n >= 2 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_keeps_firing_each_slot_once_across_a_broker_fail_over() {
    let mut h = cluster_with_env(&["sub-1"], &[]).await;
    let file = h.scratch().join("ticks");
    deploy(&h.bus, &tick_jobs(&file, "{ policy = \"fire-all\" }", "")).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn b2");
    spawn_agent(&mut h, "a1", "a1", &[]);
    spawn_agent(&mut h, "a2", "a2", &[]);
    let scheduler = one_scheduler(&h, None).await;
    wait_until(Duration::from_secs(10), "slots run", || {
        let n = runs(&file).len();
        async move { n >= 2 }
    })
    .await;
    // Kill the active broker: the Scheduler's fires wait for the next one.
    let first = status(&h).await.broker_id;
    let name = if first == "b2" { "b2" } else { "broker" };
    h.cluster
        .signal(name, Signal::SIGKILL)
        .expect("kill the broker");
    wait_for(
        Duration::from_secs(20),
        "the other broker answers",
        || async {
            let ask = StatusRequest::default();
            let s = h
                .bus
                .request::<_, StatusReply>(h.bus.subjects().status(), &ask, REQUEST);
            s.await.ok().filter(|s| s.broker_id != first)
        },
    )
    .await;
    let ran = runs(&file).len();
    wait_until(Duration::from_secs(15), "slots run again", || {
        let n = runs(&file).len();
        async move { n >= ran + 3 }
    })
    .await;
    // The same agent kept the role: its lease outlived the fail-over.
    assert_eq!(one_scheduler(&h, None).await, scheduler);
    every_slot_once(&file, now_ms() - 1_500).await;
}

/// The orders `ask` lists, each as the broker holds it (with its slot).
async fn listed(h: &Harness, ask: ListOrders) -> Vec<OrderInfo> {
    let list = h.bus.request(h.bus.subjects().order_list(), &ask, REQUEST);
    let list: OrderList = within(REQUEST * 2, "order.list", list)
        .await
        .expect("order list");
    let mut infos = Vec::new();
    for summary in list.orders {
        if let Some(info) = order_info(&h.bus, &summary.order_id).await {
            infos.push(info);
        }
    }
    infos
}

/// Waits until at least two orders `ask` lists, of distinct slots, have
/// succeeded; returns them.
async fn two_fired(h: &Harness, what: &str, ask: ListOrders) -> Vec<OrderInfo> {
    wait_for(Duration::from_secs(20), what, || async {
        let ask = ListOrders {
            state: Some(OrderState::Succeeded),
            ..ask.clone()
        };
        let fired: Vec<OrderInfo> = listed(h, ask)
            .await
            .into_iter()
            .filter(|o| o.parent.is_none() && o.slot_ms.is_some())
            .collect();
        let slots: std::collections::BTreeSet<u64> =
            fired.iter().filter_map(|o| o.slot_ms).collect();
        (slots.len() >= 2).then_some(fired)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_triggers_start_workflow_orders_beside_the_jobs_own() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let reply = deploy(
        &h.bus,
        r#"
[[job]]
name = "stamp"
program = "true"
[[job.triggers]]
kind = "interval"
every = "1s"

[[workflow]]
name = "twice"
misfire = { policy = "skip" }
[[workflow.steps]]
name = "first"
job = "stamp"
[[workflow.steps]]
name = "second"
job = "stamp"
[[workflow.triggers]]
kind = "interval"
every = "1s"
"#,
    )
    .await;
    assert_eq!(reply.workflows, ["twice"]);
    spawn_agent(&mut h, "a1", "a1", &[]);
    one_scheduler(&h, None).await;

    let ask = ListOrders {
        workflow: Some("twice".into()),
        ..Default::default()
    };
    let flows = two_fired(&h, "two slots of the workflow succeed", ask).await;
    for flow in &flows {
        let slot = flow.slot_ms.expect("a fired order has its slot");
        assert_eq!(slot % 1000, 0, "an interval of 1s falls on whole seconds");
        assert_eq!(flow.job, "twice");
        assert_eq!(flow.workflow.as_deref(), Some("twice"));
        assert_eq!(
            flow.request_id.as_deref(),
            Some(format!("workflow.twice@{slot}").as_str())
        );
        let ran: Vec<(&str, OrderState)> = flow
            .history
            .iter()
            .map(|a| (a.step.as_str(), a.state))
            .collect();
        assert_eq!(
            ran,
            [
                ("first", OrderState::Succeeded),
                ("second", OrderState::Succeeded)
            ],
            "{flow:?}"
        );
    }

    // The job's own trigger fires beside the workflow's, under its own key.
    let ask = ListOrders {
        job: Some("stamp".into()),
        ..Default::default()
    };
    let runs = two_fired(&h, "two slots of the job succeed", ask).await;
    for run in &runs {
        let slot = run.slot_ms.expect("a fired order has its slot");
        assert_eq!(
            run.request_id.as_deref(),
            Some(format!("stamp@{slot}").as_str())
        );
    }

    // Each keeps its own record of how far it has fired.
    let agent = h.connect_as(Role::Agent, None).await;
    let fired: baton::bus::Kv<FiredSlot> = within(
        REQUEST,
        "open the fired bucket",
        agent.kv(&format!("{}_fired", h.bus.subjects().prefix())),
    )
    .await
    .expect("the fired bucket");
    let newest = flows.iter().filter_map(|f| f.slot_ms).max().unwrap();
    wait_until(REQUEST, "both records are written", || async {
        let wf = fired.get("workflow.twice").await.ok().flatten();
        let job = fired.get("stamp").await.ok().flatten();
        wf.is_some_and(|r| r.job == "workflow.twice" && r.slot_ms >= newest)
            && job.is_some_and(|r| r.job == "stamp")
    })
    .await;
}

/// A lease long enough that waiting it out after a fail-over would show.
const LONG_LEASE: &[(&str, &str)] = &[
    ("BATON_SCHEDULER__LEASE", "30s"),
    ("BATON_SCHEDULER__LEASE_GRACE", "2s"),
];

/// From killing the active broker and the Scheduler to the spare's first
/// fire: the standby's takeover and two probes of the dead Scheduler, far
/// below the 32 s a successor waits when it cannot read the lease record.
const FIRE_AFTER_DOUBLE_KILL: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_broker_with_the_scheduler_moves_the_role_without_waiting_out_the_lease()
{
    let mut h = cluster_with_env(&["sub-1"], LONG_LEASE).await;
    let file = h.scratch().join("ticks");
    deploy(&h.bus, &tick_jobs(&file, "{ policy = \"fire-all\" }", "")).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn b2");
    spawn_agent(&mut h, "a1", "a1", &[]);
    spawn_agent(&mut h, "a2", "a2", &[]);
    let victim = wait_for(
        Duration::from_secs(60),
        "one Scheduler, a spare and a standby",
        || async {
            let s = status(&h).await;
            let standby = s.brokers.iter().any(|b| b.role == BrokerRole::Standby);
            let on: Vec<&AgentStatus> = s
                .agents
                .iter()
                .filter(|a| a.role == AgentRole::Scheduler)
                .collect();
            match &on[..] {
                [one] if standby && s.agents.len() == 2 => {
                    Some((s.broker_id.clone(), one.id.clone()))
                }
                _ => None,
            }
        },
    )
    .await;
    let (broker, scheduler) = victim;
    let spare = if scheduler == "a1" { "a2" } else { "a1" };
    wait_until(Duration::from_secs(10), "slots run", || {
        let n = runs(&file).len();
        async move { n >= 2 }
    })
    .await;
    let accepted = h
        .bus
        .listen::<OrderAccepted>(h.bus.subjects().event("tick", "*", EventKind::Accepted))
        .await
        .expect("subscribe");
    let killed_at = now_ms();
    let broker_process = if broker == "b2" { "b2" } else { "broker" };
    h.cluster
        .signal(broker_process, Signal::SIGKILL)
        .expect("kill the active broker");
    h.cluster
        .signal(&scheduler, Signal::SIGKILL)
        .expect("kill the Scheduler");
    // Only the spare can fire now, and only the standby accept its fires.
    use futures::StreamExt;
    let mut accepted = accepted.filter(|a| std::future::ready(a.body.at_ms > killed_at));
    let first = within(
        FIRE_AFTER_DOUBLE_KILL,
        "the spare's first fire",
        accepted.next(),
    )
    .await
    .expect("accepted events");
    assert!(
        first.body.slot_ms.is_some(),
        "a trigger's fire: {:?}",
        first.body
    );
    assert_eq!(one_scheduler(&h, Some(scheduler.as_str())).await, spare);
    // fire-all: the slots missed in between are fired too, each once
    every_slot_once(&file, now_ms() - 1_500).await;
}

/// The status the active broker gives, if one answers now.
async fn status_now(h: &Harness) -> Option<StatusReply> {
    let ask = StatusRequest::default();
    h.bus
        .request(h.bus.subjects().status(), &ask, REQUEST)
        .await
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_an_operator_turned_off_stay_off_under_the_next_broker() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    h.cluster
        .spawn("b2", &["broker", "--id", "b2"])
        .expect("spawn a standby broker");
    for id in ["a1", "a2"] {
        spawn_agent(&mut h, id, id, &[]);
    }
    one_scheduler(&h, None).await;
    let mut news = h
        .bus
        .listen::<TriggersChanged>(h.bus.subjects().triggers_changed())
        .await
        .expect("listen for triggers news");
    for id in ["a1", "a2"] {
        let out = run_baton(&h, &["scheduler", "off", id], ELECTION).await;
        assert_eq!(out.status.code(), Some(0), "scheduler off {id}: {out:?}");
    }
    wait_for(ELECTION, "no Scheduler", || async {
        schedulers(&h).await.is_empty().then_some(())
    })
    .await;
    // an event says the triggers stopped, and why
    let stopped = within(ELECTION, "triggers news", news.next())
        .await
        .expect("a TriggersChanged event")
        .body;
    assert!(!stopped.firing, "{stopped:?}");
    assert!(
        stopped
            .reason
            .contains("every agent is turned off by an operator"),
        "{stopped:?}"
    );
    let first = status(&h).await.broker_id;
    // the harness's broker is the process "broker"; ours is "b2"
    let process = if first == "b2" { "b2" } else { "broker" };
    h.cluster
        .signal(process, Signal::SIGKILL)
        .expect("kill the active broker");

    let heard = wait_for(ELECTION, "the next broker hears both agents", || async {
        let s = status_now(&h).await.filter(|s| s.broker_id != first)?;
        (s.agents.len() == 2).then_some(s)
    })
    .await;
    for a in &heard.agents {
        let switch = a.switched.as_ref().expect("who turned it off, and when");
        assert!(a.excluded && switch.off && !switch.by.is_empty(), "{a:?}");
    }
    // past the new broker's settling time (two agent heartbeats) and a
    // lease, it still elects nobody
    holds_throughout(Duration::from_secs(4), "no Scheduler", || async {
        schedulers(&h).await.is_empty()
    })
    .await;
    let text = run_baton(&h, &["status"], ELECTION).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("turned off by "), "{text}");
    let jobs = run_baton(&h, &["job", "list"], ELECTION).await;
    let jobs = String::from_utf8_lossy(&jobs.stdout);
    assert!(
        jobs.contains("note: triggers are NOT firing now: every agent is turned off"),
        "{jobs}"
    );

    // turned on again, it is the Scheduler, and the news says they fire
    let mut news = h
        .bus
        .listen::<TriggersChanged>(h.bus.subjects().triggers_changed())
        .await
        .expect("listen for triggers news");
    let out = run_baton(&h, &["scheduler", "on", "a2"], ELECTION).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(one_scheduler(&h, None).await, "a2");
    let again = within(ELECTION, "the triggers fire again", async {
        loop {
            let next = news.next().await.expect("triggers news").body;
            if next.firing {
                return next;
            }
        }
    })
    .await;
    assert_eq!(again.scheduler.as_deref(), Some("a2"), "{again:?}");
}

/// A job deployed while no agent holds the Scheduler role, never fired:
/// the slots due before a Scheduler arrives meet its misfire policy
/// (`fire-all`: each runs once), as a fired job's missed slots do, rather
/// than being passed over unseen because nothing recorded a first fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_of_a_never_fired_job_due_before_any_scheduler_meet_its_misfire_policy() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    let file = h.scratch().join("ticks");
    let deployed_ms = now_ms();
    deploy(&h.bus, &tick_jobs(&file, "{ policy = \"fire-all\" }", "")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(runs(&file).is_empty(), "no Scheduler yet, nothing fired");
    let agent_started_ms = now_ms();
    spawn_agent(&mut h, "a1", "a1", &[]);
    one_scheduler(&h, None).await;
    let first = every_slot_once(&file, now_ms() - 1_500).await;
    assert!(
        first <= deployed_ms + 1_000 && first < agent_started_ms - 2_000,
        "the first slot run ({first}) is the first after the deploy ({deployed_ms}), \
         not one after the agent started ({agent_started_ms})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_agent_is_named_as_silent_not_as_missing() {
    let mut h = cluster_with_env(&["sub-1"], ENV).await;
    spawn_agent(&mut h, "a1", "a1", &[]);
    one_scheduler(&h, None).await;
    // frozen, still connected: its heartbeats stop
    h.cluster.signal("a1", Signal::SIGSTOP).expect("stop a1");
    let why = wait_for(
        ELECTION * 2,
        "the triggers are said not to fire",
        || async { status_now(&h).await?.not_firing },
    )
    .await;
    assert!(
        why.starts_with("no agent is heard from: a1 silent since ") && why.contains("frozen"),
        "{why}"
    );
    let out = run_baton(&h, &["status"], ELECTION).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a1 silent since"), "{text}");
    // thawed: heard again, it is the Scheduler and nothing is said to be wrong
    h.cluster
        .signal("a1", Signal::SIGCONT)
        .expect("continue a1");
    one_scheduler(&h, None).await;
    wait_until(ELECTION, "the triggers fire again", || async {
        status_now(&h).await.is_some_and(|s| s.not_firing.is_none())
    })
    .await;
}
