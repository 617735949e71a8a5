//! The registry of each role encodes in the Prometheus text format, with
//! the names the README lists.

use super::*;

fn scrape(role: Role) -> String {
    let mut text = String::new();
    let registry = registry(role, Arc::new(Stats::default()));
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    text
}

#[test]
fn the_broker_set_encodes_with_its_names_and_the_bus_counters() {
    broker()
        .orders_accepted
        .get_or_create(&label("job", broker().job("hello")))
        .inc();
    let text = scrape(Role::Broker);
    for name in [
        "# TYPE baton_orders_accepted_total counter",
        "baton_orders_accepted_total{job=\"hello\"}",
        "# TYPE baton_dispatch_latency_seconds histogram",
        "baton_broker_epoch",
        "baton_messages_refused_total{reason=\"sender\"} 0",
        "baton_messages_dropped_total{reason=\"unstored\"} 0",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(!text.contains("baton_subagent_"), "{text}");
}

#[test]
fn the_agent_and_subagent_sets_are_their_own() {
    agent().fired(false, false);
    let text = scrape(Role::Agent);
    assert!(
        text.contains("baton_scheduler_slots_total{outcome=\"fired\",reason=\"on_time\"}"),
        "{text}"
    );
    assert!(!text.contains("baton_orders_accepted"), "{text}");
    let text = scrape(Role::Subagent);
    assert!(text.contains("baton_subagent_running_tasks"), "{text}");
    assert!(!text.contains("baton_scheduler_slots"), "{text}");
}
