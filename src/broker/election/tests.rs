//! Tests of the election: the five cases, leases and hand-overs, and
//! property tests over simulated agents: seeded sequences with delays,
//! loss, partitions, crashes and operator requests never leave two
//! Schedulers in the simulated cluster.

use super::*;
use HealthLevel::*;

/// After the quiet time of a broker started at 0 with default timings.
pub(super) const T0: u64 = 100_000;

fn cfg() -> ElectionConfig {
    ElectionConfig::default()
}

fn fresh() -> ElectionState {
    ElectionState::new(0, &cfg())
}

pub(super) fn a(id: &str, health: HealthLevel) -> AgentView {
    AgentView {
        id: id.into(),
        controlled: true,
        reported_on: false,
        health,
        switch_condition_met: false,
    }
}

pub(super) fn on(mut v: AgentView) -> AgentView {
    v.reported_on = true;
    v
}

fn off(mut v: AgentView) -> AgentView {
    v.reported_on = false;
    v
}

fn met(mut v: AgentView) -> AgentView {
    v.switch_condition_met = true;
    v
}

fn uncontrolled(mut v: AgentView) -> AgentView {
    v.controlled = false;
    v
}

fn run(s: &mut ElectionState, agents: &[AgentView], now: u64) -> Vec<Action> {
    decide(&cfg(), s, agents, &Request::None, now)
}

fn ask(s: &mut ElectionState, agents: &[AgentView], r: Request, now: u64) -> Vec<Action> {
    decide(&cfg(), s, agents, &r, now)
}

pub(super) fn turned_on(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::TurnOn { agent, .. } => Some(agent.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) fn turned_off(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::TurnOff { agent, .. } => Some(agent.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) fn renewed(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|x| match x {
            Action::Renew { agent, .. } => Some(agent.as_str()),
            _ => None,
        })
        .collect()
}

fn off_command(actions: &[Action], id: &str) -> CommandId {
    actions
        .iter()
        .find_map(|x| match x {
            Action::TurnOff { agent, command } if agent == id => Some(*command),
            _ => None,
        })
        .expect("a TurnOff")
}

fn rejection(actions: &[Action]) -> Option<&Rejection> {
    actions.iter().find_map(|x| match x {
        Action::Reject { reason, .. } => Some(reason),
        _ => None,
    })
}

/// A state where `id` holds a fresh lease and reports on at `now`.
fn with_scheduler(agents: &[AgentView], id: &str, now: u64) -> ElectionState {
    let mut s = fresh();
    let acts = run(&mut s, agents, now);
    assert_eq!(renewed(&acts), [id]);
    s
}

#[test]
fn config_defaults_and_humantime() {
    let c: ElectionConfig = toml::from_str("connection_timeout = \"15s\"\n").expect("parse");
    assert_eq!(c.connection_timeout, Duration::from_secs(15));
    assert_eq!(c.answer_timeout, Duration::from_secs(5));
    assert_eq!(cfg().connection_timeout, Duration::from_secs(2));
    assert!(toml::from_str::<ElectionConfig>("timeout = \"1s\"\n").is_err());
}

#[test]
fn a_scheduler_known_gone_is_replaced_at_once() {
    let agents = [on(a("a", Excellent)), a("b", Good), a("c", Ok)];
    let mut s = with_scheduler(&agents, "a", T0);
    // While it is only silent, its lease holds the others back.
    let rest = [a("b", Good), a("c", Ok)];
    assert!(turned_on(&run(&mut s, &rest, T0 + 100)).is_empty());
    s.gone("a");
    assert_eq!(s.lease_expires_at_ms("a"), None);
    assert_eq!(turned_on(&run(&mut s, &rest, T0 + 200)), ["b"]);
    // A spare known gone changes nothing: no lease, no hurry.
    let mut s = with_scheduler(&agents, "a", T0);
    s.gone("c");
    let acts = run(&mut s, &[on(a("a", Excellent)), a("b", Good)], T0 + 100);
    assert!(turned_on(&acts).is_empty(), "{acts:?}");
}

// Case 1: no Scheduler.

#[test]
fn case1_waits_the_connection_timeout_then_turns_on_the_healthiest() {
    let agents = [a("b", Good), a("c", Excellent), a("a", Ok)];
    let mut s = fresh();
    assert!(run(&mut s, &agents, T0).is_empty());
    assert_eq!(s.no_scheduler_since_ms(), Some(T0));
    assert!(run(&mut s, &agents, T0 + 1_999).is_empty());
    let acts = run(&mut s, &agents, T0 + 2_000);
    assert_eq!(
        acts,
        [Action::TurnOn {
            agent: "c".into(),
            command: 1,
            lease_ms: 10_000
        }]
    );
    assert_eq!(s.lease_expires_at_ms("c"), Some(T0 + 14_000));
    assert_eq!(s.no_scheduler_since_ms(), None);
    // Not asked again while the answer may still come.
    assert!(run(&mut s, &agents, T0 + 3_000).is_empty());
    let agents = [a("b", Good), on(a("c", Excellent)), a("a", Ok)];
    assert_eq!(renewed(&run(&mut s, &agents, T0 + 9_000)), ["c"]);
}

#[test]
fn case1_prefers_an_agent_not_meeting_the_switch_condition() {
    let agents = [met(a("c", Excellent)), a("b", Bad), met(a("a", Good))];
    let mut s = fresh();
    run(&mut s, &agents, T0);
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["b"]);
}

#[test]
fn case1_falls_back_to_the_best_when_every_agent_meets_the_condition() {
    let agents = [met(a("c", Bad)), met(a("b", Ok))];
    let mut s = fresh();
    run(&mut s, &agents, T0);
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["b"]);
}

#[test]
fn case1_breaks_health_ties_by_the_smallest_id() {
    let agents = [a("c", Good), a("a", Good), a("b", Good)];
    let mut s = fresh();
    run(&mut s, &agents, T0);
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["a"]);
}

#[test]
fn case1_never_turns_on_an_uncontrolled_agent() {
    let agents = [uncontrolled(a("a", Excellent)), uncontrolled(a("b", Good))];
    let mut s = fresh();
    for t in (T0..T0 + 60_000).step_by(1_000) {
        assert!(run(&mut s, &agents, t).is_empty());
    }
    // No Scheduler for long: a controlled agent that joins is elected at once.
    let agents = [uncontrolled(a("a", Excellent)), a("z", VeryBad)];
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 60_000)), ["z"]);
}

#[test]
fn case1_a_scheduler_reporting_within_the_timeout_keeps_the_role() {
    let mut s = fresh();
    assert!(run(&mut s, &[a("a", Bad), a("b", Excellent)], T0).is_empty());
    let agents = [on(a("a", Bad)), a("b", Excellent)];
    assert_eq!(run(&mut s, &agents, T0 + 1_500).len(), 1, "a renewal");
    for t in (T0 + 2_000..T0 + 30_000).step_by(500) {
        let acts = run(&mut s, &agents, t);
        assert!(turned_on(&acts).is_empty() && turned_off(&acts).is_empty());
    }
}

#[test]
fn case1_a_silent_scheduler_is_replaced_only_after_its_lease() {
    let mut s = with_scheduler(&[on(a("a", Good)), a("b", Ok)], "a", T0);
    // a falls silent: the registry drops it.
    let agents = [a("b", Ok)];
    assert!(
        run(&mut s, &agents, T0 + 3_000).is_empty(),
        "not revoked while waiting"
    );
    let acts = run(&mut s, &agents, T0 + 5_000);
    assert_eq!(turned_off(&acts), ["a"]);
    assert!(turned_on(&acts).is_empty());
    assert_eq!(s.pending(), Some("b"));
    assert!(turned_on(&run(&mut s, &agents, T0 + 11_999)).is_empty());
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 12_000)), ["b"]);
}

#[test]
fn case1_a_new_broker_grants_nothing_for_one_lease_and_grace() {
    let agents = [a("a", Good)];
    let mut s = ElectionState::new(1_000, &cfg());
    assert!(run(&mut s, &agents, 1_000).is_empty());
    assert!(run(&mut s, &agents, 5_000).is_empty());
    assert_eq!(s.pending(), None, "chosen once the quiet time is over");
    assert!(run(&mut s, &agents, 12_999).is_empty());
    assert_eq!(turned_on(&run(&mut s, &agents, 13_000)), ["a"]);
}

#[test]
fn case1_the_wait_restarts_after_a_scheduler_was_seen() {
    let mut s = fresh();
    run(&mut s, &[a("a", Good), a("b", Good)], T0);
    run(&mut s, &[on(a("a", Good)), a("b", Good)], T0 + 1_000);
    assert_eq!(s.no_scheduler_since_ms(), None);
    // a leaves; the wait starts again from when it was missed.
    assert!(run(&mut s, &[a("b", Good)], T0 + 1_500).is_empty());
    assert_eq!(s.no_scheduler_since_ms(), Some(T0 + 1_500));
    assert!(turned_on(&run(&mut s, &[a("b", Good)], T0 + 3_499)).is_empty());
    assert_eq!(turned_off(&run(&mut s, &[a("b", Good)], T0 + 3_500)), ["a"]);
}

#[test]
fn a_scheduler_that_drops_the_role_by_itself_is_asked_to_take_it_again() {
    let agents = [on(a("a", Good)), a("b", Excellent)];
    let mut s = with_scheduler(&agents, "a", T0);
    let agents = [a("a", Good), a("b", Excellent)];
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_000)), ["a"]);
}

// Case 2: the Scheduler meets its switch condition.

#[test]
fn case2_turns_the_old_scheduler_off_first_and_the_spare_on_after_its_answer() {
    let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok), a("q", Bad)], "s", T0);
    let agents = [met(on(a("s", VeryBad))), a("p", Ok), a("q", Bad)];
    let acts = run(&mut s, &agents, T0 + 1_000);
    assert_eq!(turned_off(&acts), ["s"]);
    assert!(turned_on(&acts).is_empty());
    assert_eq!(s.pending(), Some("p"));
    let command = off_command(&acts, "s");
    assert!(
        run(&mut s, &agents, T0 + 1_100).is_empty(),
        "s still reports on"
    );
    assert!(s.off_confirmed("s", command));
    assert!(
        run(&mut s, &agents, T0 + 1_200).is_empty(),
        "s still reports on"
    );
    let agents = [met(a("s", VeryBad)), a("p", Ok), a("q", Bad)];
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_300)), ["p"]);
    assert_eq!(s.pending(), None);
    let agents = [met(a("s", VeryBad)), on(a("p", Ok)), a("q", Bad)];
    assert!(run(&mut s, &agents, T0 + 1_400).is_empty());
    assert_eq!(renewed(&run(&mut s, &agents, T0 + 6_300)), ["p"]);
}

#[test]
fn case2_without_an_answer_the_hand_over_waits_for_the_lease() {
    let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok)], "s", T0);
    let agents = [met(on(a("s", VeryBad))), a("p", Ok)];
    assert_eq!(turned_off(&run(&mut s, &agents, T0 + 1_000)), ["s"]);
    let gone = [a("p", Ok)];
    assert!(run(&mut s, &gone, T0 + 2_000).is_empty());
    assert_eq!(
        turned_off(&run(&mut s, &gone, T0 + 6_000)),
        ["s"],
        "asked again"
    );
    assert!(turned_on(&run(&mut s, &gone, T0 + 11_999)).is_empty());
    assert_eq!(turned_on(&run(&mut s, &gone, T0 + 12_000)), ["p"]);
}

#[test]
fn case2_keeps_the_scheduler_when_no_spare_is_fit() {
    let spares = [
        vec![],
        vec![met(a("p", Excellent))],
        vec![uncontrolled(a("p", Excellent))],
    ];
    for others in spares {
        let mut agents = vec![on(a("s", Good))];
        agents.extend(others.iter().cloned());
        let mut s = with_scheduler(&agents, "s", T0);
        agents[0] = met(on(a("s", VeryBad)));
        for t in (T0 + 1_000..T0 + 60_000).step_by(1_000) {
            let acts = run(&mut s, &agents, t);
            assert!(turned_off(&acts).is_empty() && turned_on(&acts).is_empty());
        }
        assert_eq!(s.pending(), None);
    }
}

#[test]
fn case2_skips_a_spare_an_operator_turned_off() {
    let agents = [on(a("s", Good)), a("p", Excellent), a("q", Ok)];
    let mut s = with_scheduler(&agents, "s", T0);
    ask(&mut s, &agents, Request::Off("p".into()), T0 + 100);
    let agents = [met(on(a("s", VeryBad))), a("p", Excellent), a("q", Ok)];
    run(&mut s, &agents, T0 + 1_000);
    assert_eq!(s.pending(), Some("q"));
}

#[test]
fn a_late_answer_to_an_older_command_does_not_count() {
    let mut s = with_scheduler(&[on(a("s", Good)), a("p", Ok)], "s", T0);
    let agents = [met(on(a("s", VeryBad))), a("p", Ok)];
    let first = off_command(&run(&mut s, &agents, T0 + 1_000), "s");
    let second = off_command(&run(&mut s, &agents, T0 + 6_000), "s");
    assert!(!s.off_confirmed("s", first));
    assert!(!s.off_confirmed("p", second));
    assert_eq!(s.lease_expires_at_ms("s"), Some(T0 + 12_000));
    assert!(s.off_confirmed("s", second));
    assert_eq!(s.lease_expires_at_ms("s"), None);
}

// Case 3: several Schedulers.

#[test]
fn case3_keeps_the_one_not_meeting_the_condition() {
    let agents = [met(on(a("a", Excellent))), on(a("b", Bad))];
    let mut s = fresh();
    let acts = run(&mut s, &agents, T0);
    assert_eq!(turned_off(&acts), ["a"]);
    assert_eq!(renewed(&acts), ["b"]);
    assert!(turned_on(&acts).is_empty());
}

#[test]
fn case3_keeps_the_healthier_then_the_smaller_id() {
    let agents = [on(a("a", Ok)), on(a("b", Good)), on(a("c", Good))];
    let mut s = fresh();
    let acts = run(&mut s, &agents, T0);
    assert_eq!(turned_off(&acts), ["a", "c"]);
    assert_eq!(renewed(&acts), ["b"]);
    // The losers are not taken back while their reports lag.
    let acts = run(&mut s, &agents, T0 + 1_000);
    assert!(acts.is_empty(), "{acts:?}");
}

#[test]
fn case3_an_uncontrolled_scheduler_turns_the_controlled_ones_off() {
    let agents = [uncontrolled(on(a("u", VeryBad))), on(a("a", Excellent))];
    let mut s = fresh();
    let acts = run(&mut s, &agents, T0);
    assert_eq!(acts.len(), 1);
    assert_eq!(turned_off(&acts), ["a"]);
    let agents = [uncontrolled(on(a("u", VeryBad))), a("a", Excellent)];
    for t in (T0 + 1_000..T0 + 60_000).step_by(1_000) {
        assert!(turned_on(&run(&mut s, &agents, t)).is_empty());
    }
    let acts = ask(&mut s, &agents, Request::On("a".into()), T0 + 60_000);
    assert_eq!(
        rejection(&acts),
        Some(&Rejection::UncontrolledScheduler { agent: "u".into() })
    );
}

// Case 4: scheduler on X.

#[test]
fn case4_turns_the_current_scheduler_off_then_the_chosen_one_on() {
    let agents = [on(a("s", Excellent)), a("x", Bad)];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 1_000);
    assert_eq!(turned_off(&acts), ["s"]);
    assert!(turned_on(&acts).is_empty());
    assert!(s.off_confirmed("s", off_command(&acts, "s")));
    let agents = [a("s", Excellent), a("x", Bad)];
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_100)), ["x"]);
    let agents = [a("s", Excellent), on(a("x", Bad))];
    for t in (T0 + 1_200..T0 + 60_000).step_by(500) {
        let acts = run(&mut s, &agents, t);
        assert!(turned_on(&acts).is_empty() && turned_off(&acts).is_empty());
    }
}

#[test]
fn case4_an_unanswering_scheduler_is_asked_again_and_nobody_is_turned_on_beside_it() {
    let agents = [on(a("s", Excellent)), a("x", Bad)];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 1_000);
    assert_eq!(turned_off(&acts), ["s"]);
    let mut asked = 1;
    for t in (T0 + 1_500..T0 + 60_000).step_by(500) {
        let acts = run(&mut s, &agents, t);
        assert!(turned_on(&acts).is_empty());
        asked += turned_off(&acts).len();
    }
    assert_eq!(asked, 12, "once per answer timeout");
}

#[test]
fn case4_rejects_unknown_and_uncontrolled_agents() {
    let agents = [on(a("s", Good)), uncontrolled(a("u", Excellent))];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::On("nope".into()), T0 + 1);
    assert_eq!(rejection(&acts), Some(&Rejection::NotConnected));
    let acts = ask(&mut s, &agents, Request::On("u".into()), T0 + 2);
    assert_eq!(rejection(&acts), Some(&Rejection::NotControlled));
    assert!(turned_off(&acts).is_empty());
    let acts = ask(&mut s, &agents, Request::Off("u".into()), T0 + 3);
    assert_eq!(rejection(&acts), Some(&Rejection::NotControlled));
    let acts = ask(&mut s, &agents, Request::Off("nope".into()), T0 + 4);
    assert_eq!(rejection(&acts), Some(&Rejection::NotConnected));
}

#[test]
fn case4_on_the_current_scheduler_changes_nothing() {
    let agents = [on(a("s", Bad)), a("x", Excellent)];
    let mut s = with_scheduler(&agents, "s", T0);
    assert!(ask(&mut s, &agents, Request::On("s".into()), T0 + 1_000).is_empty());
    assert_eq!(s.pending(), None);
}

#[test]
fn case4_brings_back_an_agent_an_operator_turned_off() {
    let agents = [a("x", Good)];
    let mut s = fresh();
    ask(&mut s, &agents, Request::Off("x".into()), T0);
    assert!(s.is_excluded("x"));
    assert!(run(&mut s, &agents, T0 + 10_000).is_empty());
    let acts = ask(&mut s, &agents, Request::On("x".into()), T0 + 20_000);
    assert_eq!(turned_on(&acts), ["x"]);
    assert!(!s.is_excluded("x"));
}

// Case 5: scheduler off X.

#[test]
fn case5_elects_a_successor_without_the_connection_timeout() {
    let agents = [on(a("s", Excellent)), a("p", Ok), met(a("q", Good))];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
    assert_eq!(turned_off(&acts), ["s"]);
    assert!(turned_on(&acts).is_empty());
    assert_eq!(s.pending(), Some("p"), "q meets the switch condition");
    assert!(s.off_confirmed("s", off_command(&acts, "s")));
    let agents = [a("s", Excellent), a("p", Ok), met(a("q", Good))];
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 1_001)), ["p"]);
}

#[test]
fn case5_with_another_scheduler_left_nobody_is_elected() {
    let agents = [on(a("s", Excellent)), on(a("t", Ok)), a("p", Good)];
    let mut s = fresh();
    let acts = ask(&mut s, &agents, Request::Off("s".into()), T0);
    assert_eq!(turned_off(&acts), ["s"]);
    assert_eq!(renewed(&acts), ["t"]);
    assert!(turned_on(&acts).is_empty());
    assert_eq!(s.pending(), None);
}

#[test]
fn case5_off_on_a_spare_leaves_the_scheduler_alone() {
    let agents = [on(a("s", Good)), a("p", Excellent)];
    let mut s = with_scheduler(&agents, "s", T0);
    assert!(ask(&mut s, &agents, Request::Off("p".into()), T0 + 1).is_empty());
    assert!(s.is_excluded("p"));
    let agents = [met(on(a("s", VeryBad))), a("p", Excellent)];
    assert!(run(&mut s, &agents, T0 + 2).is_empty(), "p is no spare now");
}

#[test]
fn case5_the_only_candidate_stays_off_until_an_operator_turns_it_on() {
    let agents = [on(a("s", Good)), uncontrolled(a("u", Excellent))];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
    assert!(s.off_confirmed("s", off_command(&acts, "s")));
    let agents = [a("s", Good), uncontrolled(a("u", Excellent))];
    for t in (T0 + 2_000..T0 + 120_000).step_by(1_000) {
        assert!(run(&mut s, &agents, t).is_empty());
    }
    let acts = ask(&mut s, &agents, Request::On("s".into()), T0 + 120_000);
    assert_eq!(turned_on(&acts), ["s"]);
}

#[test]
fn case5_with_only_unfit_spares_case1_elects_one_after_the_timeout() {
    let agents = [on(a("s", Good)), met(a("p", Bad))];
    let mut s = with_scheduler(&agents, "s", T0);
    let acts = ask(&mut s, &agents, Request::Off("s".into()), T0 + 1_000);
    assert_eq!(s.pending(), None);
    assert!(s.off_confirmed("s", off_command(&acts, "s")));
    let agents = [off(agents[0].clone()), met(a("p", Bad))];
    assert!(run(&mut s, &agents, T0 + 2_999).is_empty());
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 3_000)), ["p"]);
}

#[test]
fn case5_off_on_a_pending_agent_cancels_the_hand_over() {
    let agents = [on(a("s", Good)), a("x", Ok)];
    let mut s = with_scheduler(&agents, "s", T0);
    ask(&mut s, &agents, Request::On("x".into()), T0 + 1);
    assert_eq!(s.pending(), Some("x"));
    let acts = ask(&mut s, &agents, Request::Off("x".into()), T0 + 2);
    assert_eq!(s.pending(), None);
    assert_eq!(renewed(&acts), ["s"], "s is the Scheduler again");
}

// Leases.

#[test]
fn the_scheduler_is_renewed_when_half_its_lease_is_left() {
    let agents = [on(a("s", Good))];
    let mut s = with_scheduler(&agents, "s", T0);
    assert!(run(&mut s, &agents, T0 + 4_999).is_empty());
    let acts = run(&mut s, &agents, T0 + 5_000);
    assert!(matches!(
        &acts[..],
        [Action::Renew {
            lease_ms: 10_000,
            ..
        }]
    ));
    assert_eq!(s.lease_expires_at_ms("s"), Some(T0 + 17_000));
}

#[test]
fn an_agent_that_never_takes_the_role_is_given_up_and_ranked_last() {
    let agents = [a("p", Excellent), a("q", Bad)];
    let mut s = fresh();
    run(&mut s, &agents, T0);
    assert_eq!(turned_on(&run(&mut s, &agents, T0 + 2_000)), ["p"]);
    assert!(run(&mut s, &agents, T0 + 6_999).is_empty());
    assert_eq!(
        turned_on(&run(&mut s, &agents, T0 + 7_000)),
        ["p"],
        "asked again"
    );
    let acts = run(&mut s, &agents, T0 + 12_000);
    assert_eq!(turned_off(&acts), ["p"]);
    assert!(s.is_unresponsive("p"));
    // p's lease from the second ask runs until T0 + 19_000.
    let mut first_on = None;
    for t in (T0 + 12_500..T0 + 30_000).step_by(500) {
        if let [x] = &turned_on(&run(&mut s, &agents, t))[..] {
            first_on.get_or_insert((t, x.to_string()));
        }
    }
    assert_eq!(first_on, Some((T0 + 19_000, "q".to_string())));
    // Reporting on clears the mark.
    run(&mut s, &[on(a("p", Excellent)), a("q", Bad)], T0 + 30_000);
    assert!(!s.is_unresponsive("p"));
}

#[test]
fn a_spontaneous_scheduler_gets_a_lease() {
    let mut s = fresh();
    let acts = run(&mut s, &[on(a("a", Ok))], 0);
    assert_eq!(
        renewed(&acts),
        ["a"],
        "renewals are allowed in the quiet time"
    );
    assert_eq!(s.lease_expires_at_ms("a"), Some(12_000));
}

// Property tests.

use crate::testing::Rng;

const IDS: [&str; 4] = ["a", "b", "c", "d"];

/// What must hold of every decision, given the state before it.
fn check_decision(
    before: &ElectionState,
    after: &ElectionState,
    agents: &[AgentView],
    request: &Request,
    acts: &[Action],
    now: u64,
) {
    let ctx = || format!("at {now}: {agents:?} {request:?} -> {acts:?}");
    let find = |id: &str| agents.iter().find(|a| a.id == id);
    let ons = turned_on(acts);
    assert!(ons.len() <= 1, "{}", ctx());
    for x in ons {
        let v = find(x).expect("turned on while not connected");
        assert!(
            v.controlled && !v.reported_on && !after.is_excluded(x),
            "{}",
            ctx()
        );
        assert!(
            now >= before.quiet_until_ms,
            "turned on in the quiet time: {}",
            ctx()
        );
        for y in agents.iter().filter(|y| y.id != x) {
            assert!(!y.reported_on, "{} is on: {}", y.id, ctx());
        }
        for (y, expires) in before.leases.iter().filter(|(y, _)| *y != x) {
            assert!(*expires <= now, "{y} holds a lease: {}", ctx());
        }
    }
    for x in renewed(acts) {
        assert!(
            find(x).is_some_and(|v| v.controlled && v.reported_on),
            "{}",
            ctx()
        );
    }
    for x in turned_off(acts) {
        let leased = before.leases.get(x).is_some_and(|e| *e > now);
        assert!(find(x).is_none_or(|v| v.controlled) || leased, "{}", ctx());
    }
    if *request == Request::None {
        assert!(rejection(acts).is_none(), "{}", ctx());
    }
    // At most one agent is told to be on and holds a lease.
    let told_on = after
        .sent
        .iter()
        .filter(|(id, s)| s.told != Told::Off && after.leases.contains_key(*id))
        .count();
    assert!(told_on <= 1, "{:?} {}", after.sent, ctx());
}

#[test]
fn decisions_on_random_views_never_turn_on_beside_a_possible_scheduler() {
    let mut turn_ons = 0;
    for seed in 0..300 {
        let mut rng = Rng::new(seed);
        let mut s = fresh();
        let mut world: Vec<(bool, AgentView)> = IDS
            .iter()
            .map(|id| (rng.percent(70), a(id, rng.pick(&HealthLevel::ALL))))
            .collect();
        let mut offs: Vec<(String, CommandId)> = Vec::new();
        let mut now = 0;
        for _ in 0..300 {
            now += rng.below(3_000);
            for (present, v) in world.iter_mut() {
                if rng.percent(5) {
                    *present = !*present;
                }
                if rng.percent(8) {
                    v.reported_on = !v.reported_on;
                }
                if rng.percent(3) {
                    v.controlled = !v.controlled;
                }
                if rng.percent(10) {
                    v.health = rng.pick(&HealthLevel::ALL);
                }
                if rng.percent(5) {
                    v.switch_condition_met = !v.switch_condition_met;
                }
            }
            if !offs.is_empty() && rng.percent(40) {
                let (id, command) = offs.remove(rng.below(offs.len() as u64) as usize);
                s.off_confirmed(&id, command);
            }
            let request = match rng.below(20) {
                0 => Request::On(rng.pick(&IDS).into()),
                1 => Request::Off(rng.pick(&IDS).into()),
                _ => Request::None,
            };
            let agents: Vec<AgentView> = world
                .iter()
                .filter(|(p, _)| *p)
                .map(|(_, v)| v.clone())
                .collect();
            let before = s.clone();
            let acts = decide(&cfg(), &mut s, &agents, &request, now);
            check_decision(&before, &s, &agents, &request, &acts, now);
            for act in &acts {
                match act {
                    Action::TurnOff { agent, command } => offs.push((agent.clone(), *command)),
                    Action::TurnOn { .. } => turn_ons += 1,
                    _ => {}
                }
            }
        }
    }
    assert!(
        turn_ons > 1_000,
        "the fuzzing reached elections: {turn_ons}"
    );
}

/// A message in flight, delivered at a time.
#[derive(Debug)]
enum Msg {
    Command(Action),
    Heartbeat {
        on: bool,
        controlled: bool,
        level: HealthLevel,
    },
    OffAnswer(CommandId),
}

struct SimAgent {
    id: String,
    connected: bool,
    controlled: bool,
    on: bool,
    lease_until: u64,
    level: HealthLevel,
    next_heartbeat: u64,
    inbox: std::collections::VecDeque<(u64, Msg)>,
    outbox: std::collections::VecDeque<(u64, Msg)>,
}

struct Seen {
    last_ms: u64,
    controlled: bool,
    on: bool,
    history: crate::broker::health::HealthHistory,
}

const MAX_DELAY: u64 = 1_000;
const REGISTRY_TIMEOUT: u64 = 3_000;

struct Sim {
    rng: Rng,
    now: u64,
    loss: u64,
    agents: Vec<SimAgent>,
    registry: BTreeMap<String, Seen>,
    state: ElectionState,
    cond: crate::config::SwitchCondition,
    turn_ons: usize,
    offs: usize,
    /// Agents whose process crashed since the last step.
    crashed: Vec<String>,
    /// The broker died since the last step: a standby takes over.
    broker_died: bool,
    takeovers: usize,
    /// The Scheduler lease record in JetStream: holder and end. The
    /// broker writes it before sending a grant (here: at once).
    record: Option<(String, u64)>,
}

/// How long a new broker waits for the agents' first heartbeats.
const SETTLE: Duration = Duration::from_millis(500);

/// Queues `msg` behind what is already in flight on the same path, so a
/// path delivers in order like one NATS connection.
fn queue(
    rng: &mut Rng,
    q: &mut std::collections::VecDeque<(u64, Msg)>,
    now: u64,
    loss: u64,
    msg: Msg,
) {
    if rng.percent(loss) {
        return;
    }
    let at = (now + rng.below(MAX_DELAY)).max(q.back().map_or(0, |(t, _)| *t));
    q.push_back((at, msg));
}

impl Sim {
    fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed);
        let agents = IDS[..n]
            .iter()
            .map(|id| SimAgent {
                id: id.to_string(),
                connected: true,
                controlled: rng.percent(85),
                on: false,
                lease_until: 0,
                level: rng.pick(&HealthLevel::ALL),
                next_heartbeat: rng.below(1_000),
                inbox: Default::default(),
                outbox: Default::default(),
            })
            .collect();
        Sim {
            rng,
            now: 0,
            loss: 10,
            agents,
            registry: BTreeMap::new(),
            state: fresh(),
            cond: crate::config::SwitchCondition {
                at_or_below: Bad,
                for_: Duration::from_secs(5),
            },
            turn_ons: 0,
            offs: 0,
            crashed: Vec::new(),
            broker_died: false,
            takeovers: 0,
            record: None,
        }
    }

    /// A standby takes over from a dead broker: it knows no agent, the
    /// answers to its predecessor's commands are lost, and it reads the
    /// lease record (or fails to, one time in five).
    fn take_over(&mut self) {
        let known = match &self.record {
            _ if self.rng.percent(20) => Predecessor::Unknown,
            None => Predecessor::NoLease,
            Some((agent, until_ms)) => Predecessor::Granted {
                agent: agent.clone(),
                until_ms: *until_ms,
            },
        };
        self.state = ElectionState::taking_over(self.now, &cfg(), &known, SETTLE);
        self.registry.clear();
        for ag in &mut self.agents {
            ag.outbox.retain(|(_, m)| !matches!(m, Msg::OffAnswer(_)));
        }
        self.takeovers += 1;
    }

    /// The lease of `id` is over for the broker: its record goes.
    fn clear_record(&mut self, id: &str) {
        if self.record.as_ref().is_some_and(|(holder, _)| holder == id) {
            self.record = None;
        }
    }

    fn chaos(&mut self) -> Request {
        let rng = &mut self.rng;
        let i = rng.below(self.agents.len() as u64) as usize;
        let ag = &mut self.agents[i];
        match rng.below(100) {
            0..=2 => ag.connected = !ag.connected,
            3 => {
                // A crash: the process restarts off, with nothing in
                // flight, and the broker learns its process is gone (no
                // responders on its connection's subjects).
                ag.on = false;
                ag.lease_until = 0;
                ag.inbox.clear();
                ag.outbox.clear();
                self.crashed.push(ag.id.clone());
            }
            4..=8 => ag.level = rng.pick(&HealthLevel::ALL),
            9 => {
                // Leaving broker control, the agent drops the role.
                ag.controlled = !ag.controlled;
                ag.on = false;
            }
            10..=11 => return Request::On(ag.id.clone()),
            12 => return Request::Off(ag.id.clone()),
            13 => self.broker_died = true,
            _ => {}
        }
        Request::None
    }

    fn step(&mut self, chaos: bool) {
        self.now += 50 + self.rng.below(600);
        let now = self.now;
        let request = if chaos { self.chaos() } else { Request::None };
        let lease_ms = millis(cfg().lease);
        for ag in &mut self.agents {
            if ag.on && now >= ag.lease_until {
                ag.on = false;
            }
            while ag.inbox.front().is_some_and(|(t, _)| *t <= now) {
                let Some((at, Msg::Command(cmd))) = ag.inbox.pop_front() else {
                    continue;
                };
                if !ag.connected || !ag.controlled {
                    continue;
                }
                match cmd {
                    Action::TurnOn { lease_ms, .. } => {
                        ag.on = true;
                        ag.lease_until = at + lease_ms;
                    }
                    Action::Renew { lease_ms, .. } if ag.on => ag.lease_until = at + lease_ms,
                    Action::TurnOff { command, .. } => {
                        ag.on = false;
                        let msg = Msg::OffAnswer(command);
                        queue(&mut self.rng, &mut ag.outbox, at, self.loss, msg);
                    }
                    _ => {}
                }
            }
            debug_assert!(!ag.on || ag.lease_until <= now + lease_ms);
            if now >= ag.next_heartbeat {
                ag.next_heartbeat = now + 700 + self.rng.below(600);
                if ag.connected {
                    let msg = Msg::Heartbeat {
                        on: ag.on,
                        controlled: ag.controlled,
                        level: ag.level,
                    };
                    queue(&mut self.rng, &mut ag.outbox, now, self.loss, msg);
                }
            }
            while ag.outbox.front().is_some_and(|(t, _)| *t <= now) {
                let Some((at, msg)) = ag.outbox.pop_front() else {
                    continue;
                };
                if !ag.connected {
                    continue;
                }
                match msg {
                    Msg::Heartbeat {
                        on,
                        controlled,
                        level,
                    } => {
                        let seen = self.registry.entry(ag.id.clone()).or_insert(Seen {
                            last_ms: at,
                            controlled,
                            on,
                            history: Default::default(),
                        });
                        seen.last_ms = at;
                        seen.controlled = controlled;
                        seen.on = on;
                        seen.history.record(at, level);
                    }
                    Msg::OffAnswer(command) => {
                        let confirmed = self.state.off_confirmed(&ag.id, command);
                        let recorded = self.record.as_ref().map(|(holder, _)| holder);
                        if confirmed && recorded == Some(&ag.id) {
                            self.record = None;
                        }
                    }
                    Msg::Command(_) => {}
                }
            }
        }
        for id in std::mem::take(&mut self.crashed) {
            self.state.gone(&id);
            self.clear_record(&id);
            self.registry.remove(&id);
        }
        if std::mem::take(&mut self.broker_died) {
            self.take_over();
        }
        self.registry
            .retain(|_, seen| now.saturating_sub(seen.last_ms) <= REGISTRY_TIMEOUT);
        let views: Vec<AgentView> = self
            .registry
            .iter()
            .map(|(id, seen)| AgentView {
                id: id.clone(),
                controlled: seen.controlled,
                reported_on: seen.on,
                health: seen.history.latest().unwrap_or(VeryBad),
                switch_condition_met: seen.history.condition_met(&self.cond, now),
            })
            .collect();
        let before = self.state.clone();
        let acts = decide(&cfg(), &mut self.state, &views, &request, now);
        check_decision(&before, &self.state, &views, &request, &acts, now);
        for act in acts {
            if let Action::TurnOn { agent, .. } | Action::Renew { agent, .. } = &act {
                if let Action::TurnOn { .. } = &act {
                    let other_live = self
                        .record
                        .as_ref()
                        .is_some_and(|(holder, until)| holder != agent && *until > now);
                    assert!(!other_live, "{agent} turned on beside {:?}", self.record);
                }
                let until = self.state.lease_expires_at_ms(agent).expect("granted");
                self.record = Some((agent.clone(), until));
            }
            let to = match &act {
                Action::TurnOn { agent, .. } => {
                    self.turn_ons += 1;
                    agent
                }
                Action::TurnOff { agent, .. } => {
                    self.offs += 1;
                    agent
                }
                Action::Renew { agent, .. } => agent,
                Action::Reject { .. } => continue,
            };
            if let Some(ag) = self.agents.iter_mut().find(|ag| &ag.id == to) {
                if ag.connected {
                    queue(
                        &mut self.rng,
                        &mut ag.inbox,
                        now,
                        self.loss,
                        Msg::Command(act),
                    );
                }
            }
        }
        let on: Vec<&str> = self
            .agents
            .iter()
            .filter(|ag| ag.on)
            .map(|ag| ag.id.as_str())
            .collect();
        assert!(on.len() <= 1, "two Schedulers at {now}: {on:?}");
    }
}

#[test]
fn simulated_cluster_never_has_two_schedulers_and_settles_on_one() {
    let (mut turn_ons, mut offs, mut settled_on, mut takeovers) = (0, 0, 0, 0);
    for seed in 0..300 {
        let n = 1 + (seed as usize % IDS.len());
        let mut sim = Sim::new(seed, n);
        for _ in 0..600 {
            sim.step(true);
        }
        // Calm: everyone reachable, nothing lost, nothing changes.
        sim.loss = 0;
        for ag in &mut sim.agents {
            ag.connected = true;
        }
        let calm_from = sim.now;
        while sim.now < calm_from + 90_000 {
            sim.step(false);
        }
        let eligible: Vec<&str> = sim
            .agents
            .iter()
            .filter(|ag| ag.controlled && !sim.state.is_excluded(&ag.id))
            .map(|ag| ag.id.as_str())
            .collect();
        let on: Vec<&str> = sim
            .agents
            .iter()
            .filter(|ag| ag.on)
            .map(|ag| ag.id.as_str())
            .collect();
        if eligible.is_empty() {
            assert!(on.is_empty(), "seed {seed}: {on:?}");
        } else {
            assert_eq!(on.len(), 1, "seed {seed}: no Scheduler among {eligible:?}");
            assert!(eligible.contains(&on[0]), "seed {seed}");
            assert!(sim.registry[on[0]].on, "seed {seed}: the broker sees it");
            settled_on += 1;
        }
        turn_ons += sim.turn_ons;
        offs += sim.offs;
        takeovers += sim.takeovers;
    }
    assert!(turn_ons > 600 && offs > 600, "{turn_ons} {offs}");
    assert!(takeovers > 600, "brokers took over: {takeovers}");
    assert!(settled_on > 150, "{settled_on}");
}
