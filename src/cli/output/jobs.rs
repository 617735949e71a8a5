//! The job inventory for people: `job list`'s table, `job show`, the
//! answers to `job pause|resume`, and a deploy's plan.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::{clock_s, span, table, took};
use crate::protocol::*;

/// A slot on its trigger's wall clock, with the zone and its UTC offset:
/// "2026-12-06 17:00:00 CET (+01:00)".
pub fn fire_time(fire: &FireTime) -> String {
    match local(fire) {
        Some(at) => at.format("%Y-%m-%d %H:%M:%S %Z (%:z)").to_string(),
        None => clock_s(fire.at_ms),
    }
}

/// A slot's instant on its trigger's clock (UTC when it names no zone).
fn local(fire: &FireTime) -> Option<DateTime<Tz>> {
    let at = DateTime::<Utc>::from_timestamp_millis(fire.at_ms as i64)?;
    let zone: Tz = (fire.time_zone.as_deref())
        .and_then(|z| z.parse().ok())
        .unwrap_or(Tz::UTC);
    Some(at.with_timezone(&zone))
}

/// A slot on its trigger's clock and in UTC, marked when its UTC offset
/// differs from `before`, the slot before it on the same clock (a daylight
/// saving change between):
/// "2026-03-29 03:00:00 CEST (+02:00) = 2026-03-29 01:00:00 UTC  <- DST
/// change: +01:00 before".
fn fire_line(fire: &FireTime, before: Option<&FireTime>) -> String {
    let offset = |f: &FireTime| local(f).map(|t| t.format("%:z").to_string());
    let mut line = fire_time(fire);
    if fire.time_zone.is_some() {
        let utc = local(fire).map(|t| t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S UTC"));
        if let Some(utc) = utc {
            let _ = write!(line, " = {utc}");
        }
    }
    if let Some(was) = before
        .and_then(offset)
        .filter(|was| Some(was) != offset(fire).as_ref())
    {
        let _ = write!(line, "  <- DST change: {was} before");
    }
    if let Some(note) = &fire.note {
        let _ = write!(line, "  <- {note}");
    }
    line
}

/// A trigger as an operator wrote it: "cron 0 0 * * * * (Europe/Berlin)",
/// "every 30s", "at 2026-12-24T18:00:00Z".
pub fn trigger_text(trigger: &TriggerSpec) -> String {
    match trigger {
        TriggerSpec::Cron {
            expr,
            time_zone,
            dst,
            calendar,
            jitter,
        } => {
            let zone = time_zone.as_deref().unwrap_or("UTC");
            let mut text = format!("cron {expr} ({zone})");
            if let Some(calendar) = calendar {
                let days_off = match calendar.on_holiday {
                    OnHoliday::Skip => "skipped",
                    OnHoliday::Next => "moved to the next working day",
                    OnHoliday::Previous => "moved to the previous working day",
                };
                let _ = write!(text, ", calendar {} (days off {days_off})", calendar.name);
            }
            if !dst.is_default() {
                let gap = match dst.gap {
                    GapRule::Shift => "shift",
                    GapRule::Skip => "skip",
                };
                let overlap = match dst.overlap {
                    OverlapRule::First => "first",
                    OverlapRule::Last => "last",
                    OverlapRule::Both => "both",
                };
                let _ = write!(text, ", DST gap {gap}, overlap {overlap}");
            }
            text + &jitter_text(jitter)
        }
        TriggerSpec::Interval {
            every,
            start,
            jitter,
        } => {
            let text = match start {
                Some(start) => format!("every {} from {}", span(*every), start.to_rfc3339()),
                None => format!("every {}", span(*every)),
            };
            text + &jitter_text(jitter)
        }
        TriggerSpec::At { at } => format!("at {}", at.to_rfc3339()),
        TriggerSpec::Subject { name, params } => {
            let mut text = format!("on messages on {name}");
            if !params.is_empty() {
                let mapped: Vec<String> =
                    params.iter().map(|(p, s)| format!("{p} = {s}")).collect();
                let _ = write!(text, " ({})", mapped.join(", "));
            }
            text
        }
        TriggerSpec::File {
            dir,
            pattern,
            settle,
            ..
        } => format!(
            "on files in {dir} matching {pattern} (settled {})",
            span(*settle)
        ),
    }
}

/// "on messages on orders.created.>, orders.deleted" for a job with
/// subject triggers, which fire on events, not at a time.
fn on_messages(triggers: &[TriggerSpec]) -> Option<String> {
    let subjects: Vec<&str> = (triggers.iter())
        .filter_map(|t| match t {
            TriggerSpec::Subject { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    (!subjects.is_empty()).then(|| format!("on messages on {}", subjects.join(", ")))
}

/// A trigger that fires on events (files), not on the clock.
fn on_events(trigger: &TriggerSpec) -> bool {
    matches!(trigger, TriggerSpec::File { .. })
}

fn jitter_text(jitter: &Option<Duration>) -> String {
    jitter.map_or_else(String::new, |j| format!(", jitter {}", span(j)))
}

fn kind(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Job => "job",
        JobKind::Workflow => "workflow",
    }
}

/// "paused by admin at 2026-...": who paused it and when; `--all` said.
fn paused_text(pause: &OperatorSwitch) -> String {
    let all = if pause.all {
        " (manual submits refused too)"
    } else {
        ""
    };
    format!("paused by {} at {}{all}", pause.by, clock_s(pause.at_ms))
}

/// An order in one cell: "succeeded 2026-...Z (1.2s) 0190ab12".
fn order_cell(o: &OrderSummary) -> String {
    let took = (o.finished_at_ms)
        .map(|f| format!(" ({})", took(f.saturating_sub(o.accepted_at_ms))))
        .unwrap_or_default();
    let id: String = o.order_id.chars().take(12).collect();
    format!(
        "{} {}{took} {id}",
        o.state.as_str(),
        clock_s(o.accepted_at_ms)
    )
}

/// `baton job list`.
pub fn job_list_text(list: &JobList) -> String {
    if list.jobs.is_empty() {
        return "no jobs or workflows are deployed; deploy some with `baton deploy FILE.toml`\n"
            .to_string();
    }
    let rows: Vec<Vec<String>> = (list.jobs.iter())
        .map(|j| {
            let triggers: Vec<String> = j.triggers.iter().map(trigger_text).collect();
            vec![
                j.name.clone(),
                kind(j.kind).to_string(),
                j.cluster.clone().unwrap_or_else(|| "-".into()),
                if triggers.is_empty() {
                    "-".into()
                } else {
                    triggers.join("; ")
                },
                match &j.paused {
                    Some(p) if p.all => "yes (all)".into(),
                    Some(_) => "yes".into(),
                    None => "no".into(),
                },
                match (&j.next_fire, &j.paused) {
                    (Some(_), Some(_)) => "- (paused)".into(),
                    (Some(f), None) => fire_time(f),
                    (None, _) if j.triggers.iter().any(on_events) => "on files".into(),
                    (None, _) => on_messages(&j.triggers).unwrap_or_else(|| "-".into()),
                },
                j.last_order.as_ref().map_or("-".into(), order_cell),
            ]
        })
        .collect();
    let mut out = String::new();
    let header = [
        "NAME",
        "KIND",
        "CLUSTER",
        "TRIGGERS",
        "PAUSED",
        "NEXT FIRE",
        "LAST ORDER",
    ];
    table(&mut out, "", &header, &rows);
    out
}

/// `baton job show NAME`.
pub fn job_text(info: &JobInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", kind(info.kind), info.name);
    match &info.paused {
        Some(p) => {
            let _ = writeln!(out, "state: {}", paused_text(p));
            let _ = writeln!(
                out,
                "skipped slots since the pause: {} (on resume its misfire policy decides about them)",
                info.skipped_slots
            );
        }
        None => {
            let _ = writeln!(out, "state: active");
        }
    }
    if !info.used_by.is_empty() {
        let _ = writeln!(out, "run by workflows: {}", info.used_by.join(", "));
    }
    if let Some(p) = info.job.as_ref().and_then(|j| j.spread.as_ref()) {
        let _ = writeln!(out, "spread: {}", super::spread::words(p));
    }
    let definition = match (&info.job, &info.workflow) {
        (Some(job), _) => serde_json::to_value(job),
        (None, Some(workflow)) => serde_json::to_value(workflow),
        (None, None) => Ok(serde_json::Value::Null),
    };
    let _ = writeln!(out, "definition (as deployed; --json for every field):");
    for line in definition_text(definition.unwrap_or_default()).lines() {
        let _ = writeln!(out, "  {line}");
    }
    let triggers = match (&info.job, &info.workflow) {
        (Some(job), _) => job.triggers.as_slice(),
        (None, Some(workflow)) => workflow.triggers.as_slice(),
        (None, None) => &[],
    };
    if let Some(text) = on_messages(triggers) {
        let _ = writeln!(out, "fires {text}");
    }
    for trigger in triggers.iter().filter(|t| on_events(t)) {
        let _ = writeln!(out, "fires {}", trigger_text(trigger));
    }
    if info.next_fires.is_empty() && triggers.iter().any(on_events) {
        let _ = writeln!(out, "next fires: none on the clock");
    } else if info.next_fires.is_empty() {
        let _ = writeln!(out, "next fires: none (no clock trigger, or none left)");
    } else {
        let note = if info.paused.is_some() {
            " (skipped while paused)"
        } else {
            ""
        };
        let _ = writeln!(out, "next fires{note}:");
        // a DST change shows between two fires on the same clock
        let mut before: std::collections::HashMap<&Option<String>, &FireTime> = Default::default();
        for fire in &info.next_fires {
            let previous = before.insert(&fire.time_zone, fire);
            let _ = writeln!(out, "  {}", fire_line(fire, previous));
        }
    }
    if info.recent_orders.is_empty() {
        let _ = writeln!(out, "recent orders: none held");
    } else {
        let _ = writeln!(out, "recent orders:");
        let rows: Vec<Vec<String>> = (info.recent_orders.iter())
            .map(|o| {
                let took = (o.finished_at_ms)
                    .map_or("-".into(), |f| took(f.saturating_sub(o.accepted_at_ms)));
                vec![
                    o.order_id.clone(),
                    o.state.as_str().to_string(),
                    clock_s(o.accepted_at_ms),
                    took,
                    o.reason.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let header = ["ORDER", "STATE", "ACCEPTED", "TOOK", "REASON"];
        table(&mut out, "  ", &header, &rows);
    }
    out
}

/// The answer to `job pause|resume`.
pub fn job_switched_text(reply: &JobControlReply) -> String {
    let what = format!("{} {}", kind(reply.kind), reply.name);
    let switch = &reply.switched;
    match (switch.off, reply.changed) {
        (true, changed) => {
            let already = if changed { "" } else { "already " };
            let submits = if switch.all {
                "manual submits are refused too"
            } else {
                "manual submits still run"
            };
            format!(
                "{what} {already}paused by {} at {}: its triggers do not fire; {submits}",
                switch.by,
                clock_s(switch.at_ms)
            )
        }
        (false, true) => format!(
            "{what} resumed by {}: its triggers fire again (its misfire policy decides about the slots skipped)",
            switch.by
        ),
        (false, false) => format!("{what} was not paused; nothing changed"),
    }
}

/// A deploy's plan: one line per definition, changed fields indented.
pub fn plan_text(plan: &DeployPlan) -> String {
    let mut out = String::new();
    let name = |n: &Named| format!("{} {}", spec_kind(n.kind), n.name);
    for n in &plan.added {
        let _ = writeln!(out, "  + add {}", name(n));
    }
    for c in &plan.changed {
        let _ = writeln!(out, "  ~ change {} {}", spec_kind(c.kind), c.name);
        for f in &c.fields {
            let _ = writeln!(out, "      {}: {} -> {}", f.field, f.before, f.after);
        }
    }
    for n in &plan.removed {
        let _ = writeln!(out, "  - remove {}", name(n));
    }
    for n in &plan.unchanged {
        let _ = writeln!(out, "  = unchanged {}", name(n));
    }
    for n in &plan.kept {
        let _ = writeln!(
            out,
            "  . kept {} (not in these files; --prune would remove it)",
            name(n)
        );
    }
    if plan.kept_more > 0 {
        let _ = writeln!(
            out,
            "  . and {} more kept (see `baton job list`)",
            plan.kept_more
        );
    }
    out
}

fn spec_kind(kind: SpecKind) -> &'static str {
    match kind {
        SpecKind::Cluster => "cluster",
        SpecKind::Job => "job",
        SpecKind::Workflow => "workflow",
    }
}

/// A definition as TOML, like the file it came from, without the fields
/// left unset (null, empty); JSON if TOML cannot hold it (pure).
fn definition_text(mut value: serde_json::Value) -> String {
    fn compact(value: &mut serde_json::Value) {
        if let serde_json::Value::Object(map) = value {
            map.values_mut().for_each(compact);
            map.retain(|_, v| match v {
                serde_json::Value::Null => false,
                serde_json::Value::Object(m) => !m.is_empty(),
                serde_json::Value::Array(a) => !a.is_empty(),
                _ => true,
            });
        } else if let serde_json::Value::Array(items) = value {
            items.iter_mut().for_each(compact);
        }
    }
    compact(&mut value);
    // the name first, as in a deploy file (the rest in key order)
    let name = match value.as_object_mut().and_then(|m| m.remove("name")) {
        Some(serde_json::Value::String(name)) => {
            format!("name = {}\n", toml::Value::String(name))
        }
        _ => String::new(),
    };
    match toml::to_string_pretty(&value) {
        Ok(rest) => name + &rest,
        Err(_) => serde_json::to_string_pretty(&value).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_reads_as_toml_name_first_without_unset_fields() {
        let job = serde_json::json!({
            "program": "echo", "name": "hello", "working_dir": null, "env": {},
            "args": [], "params": {"who": {"default": "world", "description": null}},
        });
        assert_eq!(
            definition_text(job),
            "name = \"hello\"\nprogram = \"echo\"\n\n[params.who]\ndefault = \"world\"\n"
        );
    }

    #[test]
    fn a_file_trigger_is_shown_as_firing_on_files() {
        let file = TriggerSpec::File {
            dir: "/data/in".into(),
            pattern: "*.csv".into(),
            settle: Duration::from_secs(2),
            rescan: Duration::from_secs(10),
        };
        assert_eq!(
            trigger_text(&file),
            "on files in /data/in matching *.csv (settled 2s)"
        );
        assert!(on_events(&file));
    }

    #[test]
    fn a_slot_is_shown_on_its_trigger_s_wall_clock_with_the_offset() {
        // 2026-12-06T16:00:00Z
        let at_ms = 1_796_572_800_000;
        let berlin = FireTime {
            at_ms,
            time_zone: Some("Europe/Berlin".into()),
            note: None,
        };
        assert_eq!(fire_time(&berlin), "2026-12-06 17:00:00 CET (+01:00)");
        let utc = FireTime {
            at_ms,
            time_zone: None,
            note: None,
        };
        assert_eq!(fire_time(&utc), "2026-12-06 16:00:00 UTC (+00:00)");
    }

    #[test]
    fn a_fire_after_a_dst_change_is_marked_with_the_offset_before() {
        let zone = Some("Europe/Berlin".to_string());
        // 2026-03-28 and 2026-03-29 at 03:00 local: CET, then CEST
        let saturday = FireTime {
            at_ms: 1_774_663_200_000,
            time_zone: zone.clone(),
            note: None,
        };
        let sunday = FireTime {
            at_ms: 1_774_746_000_000,
            time_zone: zone,
            note: None,
        };
        let first = fire_line(&saturday, None);
        assert_eq!(
            first,
            "2026-03-28 03:00:00 CET (+01:00) = 2026-03-28 02:00:00 UTC"
        );
        let second = fire_line(&sunday, Some(&saturday));
        assert_eq!(
            second,
            "2026-03-29 03:00:00 CEST (+02:00) = 2026-03-29 01:00:00 UTC  <- DST change: +01:00 before"
        );
    }

    #[test]
    fn fires_on_two_clocks_are_not_taken_for_a_dst_change() {
        let fire = |at_ms, zone: Option<&str>| FireTime {
            at_ms,
            time_zone: zone.map(str::to_string),
            note: None,
        };
        let info = JobInfo {
            name: "multi".into(),
            kind: JobKind::Job,
            job: None,
            workflow: None,
            paused: None,
            skipped_slots: 0,
            next_fires: vec![
                fire(1_796_572_800_000, Some("Asia/Kolkata")),
                fire(1_796_572_860_000, None),
                fire(1_796_659_200_000, Some("Asia/Kolkata")),
            ],
            recent_orders: vec![],
            used_by: vec![],
        };
        let text = job_text(&info);
        assert!(!text.contains("DST change"), "{text}");
        assert!(text.contains("IST (+05:30)"), "{text}");
    }

    #[test]
    fn a_subject_trigger_reads_as_firing_on_messages() {
        let trigger = TriggerSpec::Subject {
            name: "orders.created.>".into(),
            params: [("id".to_string(), "$.order.id".to_string())].into(),
        };
        assert_eq!(
            trigger_text(&trigger),
            "on messages on orders.created.> (id = $.order.id)"
        );
        let every = TriggerSpec::interval(Duration::from_secs(60), None);
        assert_eq!(on_messages(std::slice::from_ref(&every)), None);
        assert_eq!(
            on_messages(&[every, trigger]).as_deref(),
            Some("on messages on orders.created.>")
        );
    }

    #[test]
    fn a_plan_lists_each_change_with_its_fields() {
        let plan = DeployPlan {
            added: vec![Named {
                kind: SpecKind::Job,
                name: "new".into(),
            }],
            changed: vec![SpecChanged {
                kind: SpecKind::Job,
                name: "old".into(),
                fields: vec![FieldChange {
                    field: "timeout_ms".into(),
                    before: "null".into(),
                    after: "5000".into(),
                }],
            }],
            removed: vec![Named {
                kind: SpecKind::Workflow,
                name: "gone".into(),
            }],
            unchanged: vec![],
            kept: vec![Named {
                kind: SpecKind::Cluster,
                name: "c".into(),
            }],
            kept_more: 41,
        };
        let text = plan_text(&plan);
        assert!(text.contains("+ add job new"), "{text}");
        assert!(
            text.contains("~ change job old\n      timeout_ms: null -> 5000"),
            "{text}"
        );
        assert!(text.contains("- remove workflow gone"), "{text}");
        assert!(
            text.contains(". kept cluster c (not in these files")
                && text.contains("and 41 more kept"),
            "{text}"
        );
    }
}
