//! Jobs that spread one order over every (or N) members of a cluster, with
//! real processes: each member runs the task once; a member killed with
//! SIGKILL mid-run runs its task again when it comes back within
//! `spread.rejoin`, never on another member; one that stays away fails
//! its task, and the order ends by its `spread.succeed` policy.

mod common;

use std::path::Path;
use std::time::Duration;

use baton::bus::{decode, Encoding};
use baton::protocol::{EventKind, OrderChanged, OrderInfo, OrderState};
use common::*;
use futures::StreamExt;
use nix::sys::signal::Signal;

const THREE: [&str; 3] = ["sub-1", "sub-2", "sub-3"];

/// A cluster of the three subagents, and spread jobs that append
/// `start SUBAGENT` and `end SUBAGENT` to `marks`; the `gated` ones run
/// until the file `go` exists.
fn jobs(marks: &Path, go: &Path) -> String {
    let marks = marks.display();
    let go = go.display();
    let run = format!("echo start $BATON_SUBAGENT >> {marks}; echo end $BATON_SUBAGENT >> {marks}");
    let gated = format!(
        "echo start $BATON_SUBAGENT >> {marks}; while [ ! -e {go} ]; do sleep 0.05; done; echo end $BATON_SUBAGENT >> {marks}"
    );
    format!(
        r#"
[[cluster]]
name = "three"
mode = "round-robin"
members = [{{ subagent = "sub-1" }}, {{ subagent = "sub-2" }}, {{ subagent = "sub-3" }}]

[[job]]
name = "everywhere"
program = "sh"
args = ["-c", "{run}"]
cluster = "three"
spread = "all"

[[job]]
name = "two-of-them"
program = "sh"
args = ["-c", "{run}"]
cluster = "three"
spread = {{ count = 2 }}

[[job]]
name = "comes-back"
program = "sh"
args = ["-c", "{gated}"]
cluster = "three"
spread = {{ rejoin = "2m" }}

[[job]]
name = "tolerant"
program = "sh"
args = ["-c", "{gated}"]
cluster = "three"
spread = {{ succeed = 2, rejoin = "1s" }}

[[job]]
name = "strict"
program = "sh"
args = ["-c", "{gated}"]
cluster = "three"
restartable = false
spread = "all"

[[workflow]]
name = "roll-out"

[[workflow.steps]]
name = "everywhere"
job = "everywhere"

[[workflow.steps]]
name = "then-two"
job = "two-of-them"
after = ["everywhere"]
"#
    )
}

fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn count(marks: &[String], line: &str) -> usize {
    marks.iter().filter(|m| *m == line).count()
}

async fn ended(h: &Harness, order_id: &str) -> OrderInfo {
    wait_for(Duration::from_secs(40), "the spread order ends", || async {
        order_info(&h.bus, order_id)
            .await
            .filter(|o| o.state.is_final())
    })
    .await
}

async fn setup() -> (Harness, std::path::PathBuf, std::path::PathBuf) {
    let h = cluster(&THREE).await;
    let marks = h.scratch().join("marks");
    let go = h.scratch().join("go");
    let reply = deploy(&h.bus, &jobs(&marks, &go)).await;
    assert_eq!(reply.deployed.len(), 5, "{reply:?}");
    assert_eq!(reply.workflows.len(), 1, "{reply:?}");
    (h, marks, go)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_order_runs_once_on_every_member_or_on_count_of_them() {
    let (h, marks_file, _) = setup().await;
    let s = h.bus.subjects().clone();
    let mut events = within(
        REQUEST,
        "subscribe",
        h.bus.listen_raw(s.job_events("everywhere")),
    )
    .await
    .expect("subscribe");
    let all = submit(&h.bus, "everywhere", &[]).await;
    let info = ended(&h, &all).await;
    // watchers hear where it went and how each member ended
    let mut news = Vec::new();
    while news.len() < 4 {
        let next = tokio::time::timeout(REQUEST, events.next()).await;
        let Ok(Some((subject, payload))) = next else {
            panic!("changed events so far: {news:?}");
        };
        if let Some((_, id, EventKind::Changed)) = s.parse_event(&subject) {
            if id == all {
                let changed: OrderChanged =
                    decode(Encoding::MessagePack, &payload).expect("decodes");
                news.push(changed.what);
            }
        }
    }
    assert_eq!(
        news[0], "placed on its members sub-1, sub-2, sub-3",
        "{news:?}"
    );
    for sub in THREE {
        assert!(
            news.contains(&format!("member {sub} succeeded")),
            "{news:?}"
        );
    }
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    let members: Vec<&str> = info
        .members
        .iter()
        .map(|m| m.subagent_id.as_str())
        .collect();
    assert_eq!(members, THREE, "{info:?}");
    assert!(info
        .members
        .iter()
        .all(|m| m.state == OrderState::Succeeded && m.attempt == 1));
    let m = marks(&marks_file);
    for sub in THREE {
        assert_eq!(count(&m, &format!("start {sub}")), 1, "{m:?}");
        assert_eq!(count(&m, &format!("end {sub}")), 1, "{m:?}");
    }
    // each member's order is an order of its own, bound to its member
    let member = order_info(&h.bus, &info.members[1].order_id)
        .await
        .expect("member order");
    assert_eq!(member.member_of.as_deref(), Some(all.as_str()));
    assert_eq!(member.pin.as_deref(), Some("sub-2"));
    assert_eq!(member.subagent_id.as_deref(), Some("sub-2"));

    std::fs::remove_file(&marks_file).expect("clear marks");
    let two = submit(&h.bus, "two-of-them", &[]).await;
    let info = ended(&h, &two).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    assert_eq!(info.members.len(), 2, "{info:?}");
    assert_ne!(info.members[0].subagent_id, info.members[1].subagent_id);
    assert_eq!(
        marks(&marks_file).len(),
        4,
        "two tasks, each started and ended"
    );

    let shown = run_baton(&h, &["order", "show", &all], REQUEST).await;
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("members (3 of 3 ended):"), "{text}");
    assert!(text.contains("every member that is up"), "{text}");
}

/// kill -9 of a member mid-run: its task waits for it (never runs on
/// another member) and runs again there once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_mid_run_runs_its_task_again_when_it_comes_back() {
    let (mut h, marks_file, go) = setup().await;
    let order = submit(&h.bus, "comes-back", &[]).await;
    wait_until(Duration::from_secs(20), "three starts", || async {
        marks(&marks_file).len() == 3
    })
    .await;
    h.cluster
        .signal("sub-2", Signal::SIGKILL)
        .expect("kill -9 sub-2");
    let member = wait_for(
        Duration::from_secs(20),
        "sub-2's task waits for it",
        || async {
            let info = order_info(&h.bus, &order).await?;
            let m = info
                .members
                .iter()
                .find(|m| m.subagent_id == "sub-2")?
                .clone();
            let o = order_info(&h.bus, &m.order_id).await?;
            (o.state == OrderState::Accepted && o.attempt == 1).then_some(o)
        },
    )
    .await;
    assert_eq!(member.pin.as_deref(), Some("sub-2"));
    holds_throughout(
        Duration::from_secs(1),
        "no other member takes it",
        || async { marks(&marks_file).len() == 3 },
    )
    .await;
    h.cluster.spawn_subagent("sub-2", &[]).expect("sub-2 back");
    wait_until(Duration::from_secs(30), "sub-2 starts it again", || async {
        count(&marks(&marks_file), "start sub-2") == 2
    })
    .await;
    std::fs::write(&go, "").expect("go");
    let info = ended(&h, &order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    let m = marks(&marks_file);
    assert_eq!(m.len(), 7, "3 starts, 1 start again, 3 ends: {m:?}");
    for sub in THREE {
        assert_eq!(count(&m, &format!("end {sub}")), 1, "{m:?}");
    }
    assert_eq!(count(&m, "start sub-2"), 2, "{m:?}");
    // sub-2's order ran both of its tasks there, and nowhere else (its
    // first may count as no attempt: killed before its start was confirmed)
    let o2 = order_info(&h.bus, &info.members[1].order_id)
        .await
        .expect("sub-2's order");
    assert_eq!(o2.state, OrderState::Succeeded, "{o2:?}");
    assert!(
        o2.attempts.iter().all(|a| a.subagent_id == "sub-2"),
        "{o2:?}"
    );
    assert!(
        info.members
            .iter()
            .all(|m| m.state == OrderState::Succeeded),
        "{info:?}"
    );
}

/// A member killed and not back within `rejoin` fails its task; a job
/// whose `succeed` is 2 of 3 still succeeds, a non-restartable one that
/// needs all fails, naming the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stays_away_fails_its_task_and_the_policy_decides() {
    let (mut h, marks_file, go) = setup().await;
    let tolerant = submit(&h.bus, "tolerant", &[]).await;
    let strict = submit(&h.bus, "strict", &[]).await;
    wait_until(Duration::from_secs(20), "six starts", || async {
        marks(&marks_file).len() == 6
    })
    .await;
    h.cluster
        .signal("sub-3", Signal::SIGKILL)
        .expect("kill -9 sub-3");
    let lost = |order: String| {
        let bus = h.bus.clone();
        async move {
            wait_for(Duration::from_secs(20), "sub-3's task fails", || async {
                let info = order_info(&bus, &order).await?;
                let m = info
                    .members
                    .iter()
                    .find(|m| m.subagent_id == "sub-3")?
                    .clone();
                (m.state == OrderState::Failed).then_some(m)
            })
            .await
        }
    };
    let t = lost(tolerant.clone()).await;
    assert!(
        t.reason
            .as_deref()
            .unwrap_or("")
            .contains("did not come back within 1s"),
        "{t:?}"
    );
    let s = lost(strict.clone()).await;
    assert!(
        s.reason
            .as_deref()
            .unwrap_or("")
            .contains("not restartable"),
        "{s:?}"
    );
    std::fs::write(&go, "").expect("go");
    let t = ended(&h, &tolerant).await;
    assert_eq!(t.state, OrderState::Succeeded, "2 of 3 will do: {t:?}");
    let s = ended(&h, &strict).await;
    assert_eq!(s.state, OrderState::Failed, "{s:?}");
    let reason = s.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("2 of 3 members succeeded") && reason.contains("sub-3"),
        "{reason}"
    );
    let m = marks(&marks_file);
    assert_eq!(count(&m, "start sub-3"), 2, "never again, anywhere: {m:?}");
    assert_eq!(m.len(), 10, "6 starts, 4 ends: {m:?}");
}

/// A workflow step may name a spread job: the step's order is a spread
/// order, and the step succeeds with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_step_spreads_over_the_members() {
    let (h, marks_file, _) = setup().await;
    let order = submit(&h.bus, "roll-out", &[]).await;
    let info = ended(&h, &order).await;
    assert_eq!(info.state, OrderState::Succeeded, "{info:?}");
    let first = info
        .history
        .iter()
        .find(|a| a.step == "everywhere")
        .expect("step ran");
    let step = order_info(&h.bus, &first.order_id)
        .await
        .expect("step order");
    assert_eq!(step.members.len(), 3, "{step:?}");
    assert_eq!(step.state, OrderState::Succeeded, "{step:?}");
    let m = marks(&marks_file);
    assert_eq!(m.len(), 10, "3 + 2 tasks, each started and ended: {m:?}");
}
