//! Who started an order, for people: the trigger and slot a Scheduler
//! fired it for (the slot in the trigger's time zone, with its offset from
//! UTC), or the client that submitted it.

use super::jobs::{fire_time, trigger_text};
use crate::protocol::*;

/// "trigger 2 of nightly: cron 0 0 16 * * * (Europe/Berlin); slot
/// 2026-12-06 16:00:00 CET (+01:00)", "a client signed by admin
/// (verified), request id X", or "a client, request id X"; `None` for a
/// workflow step's order (its workflow order says). Triggers and slots are
/// written as `job show` writes them (`jobs.rs`).
pub fn origin(o: &OrderInfo) -> Option<String> {
    // a step's order says its workflow order, a member's its spread order
    if o.parent.is_some() || o.member_of.is_some() {
        return None;
    }
    if let Some(slot_ms) = o.slot_ms {
        let slot = slot_text(slot_ms, o.fired_by.as_ref());
        return Some(match &o.fired_by {
            Some(f) => format!(
                "trigger {} of {}: {}; slot {slot}",
                f.number,
                o.job,
                trigger_text(&f.trigger)
            ),
            None => format!(
                "a trigger of {} (none of its triggers deployed now has this slot); slot {slot}",
                o.job
            ),
        });
    }
    let request = match &o.request_id {
        Some(id) => format!("request id {id}"),
        None => "no request id".to_string(),
    };
    Some(match &o.submitted_by {
        Some(who) => format!("a client signed by {who} (verified), {request}"),
        None => format!("a client, {request}"),
    })
}

/// A slot in its trigger's time zone (a cron trigger's; UTC for the
/// others, and when unknown), with the zone's offset from UTC:
/// "2026-12-06 16:00:00 CET (+01:00)".
pub fn slot_text(slot_ms: u64, fired_by: Option<&FiredBy>) -> String {
    let time_zone = fired_by.and_then(|f| match &f.trigger {
        TriggerSpec::Cron { time_zone, .. } => time_zone.clone(),
        _ => None,
    });
    fire_time(&FireTime {
        at_ms: slot_ms,
        time_zone,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-06T15:00:00Z
    const SLOT: u64 = 1_796_569_200_000;

    fn fired(order: &mut OrderInfo, number: u32, trigger: TriggerSpec) {
        order.slot_ms = Some(SLOT);
        order.fired_by = Some(FiredBy { number, trigger });
    }

    #[test]
    fn a_fired_order_names_its_trigger_and_its_slot_in_the_trigger_s_zone() {
        let mut o = OrderInfo::new("o".into(), "nightly".into(), OrderState::Succeeded, SLOT);
        let cron = TriggerSpec::Cron {
            expr: "0 0 16 * * *".into(),
            time_zone: Some("Europe/Berlin".into()),
            dst: Default::default(),
            calendar: None,
            jitter: None,
        };
        fired(&mut o, 2, cron);
        assert_eq!(
            origin(&o).unwrap(),
            "trigger 2 of nightly: cron 0 0 16 * * * (Europe/Berlin); slot 2026-12-06 16:00:00 CET (+01:00)"
        );
        let every = TriggerSpec::Interval {
            every: std::time::Duration::from_secs(900),
            start: None,
            jitter: None,
        };
        fired(&mut o, 1, every);
        assert_eq!(
            origin(&o).unwrap(),
            "trigger 1 of nightly: every 15m; slot 2026-12-06 15:00:00 UTC (+00:00)"
        );
        o.fired_by = None;
        assert!(origin(&o)
            .unwrap()
            .starts_with("a trigger of nightly (none of its"));
        assert_eq!(slot_text(SLOT, None), "2026-12-06 15:00:00 UTC (+00:00)");
    }

    #[test]
    fn a_submitted_order_names_its_client_when_known() {
        let mut o = OrderInfo::new("o".into(), "j".into(), OrderState::Accepted, SLOT);
        o.request_id = Some("cli-1".into());
        assert_eq!(origin(&o).unwrap(), "a client, request id cli-1");
        o.submitted_by = Some("admin".into());
        assert_eq!(
            origin(&o).unwrap(),
            "a client signed by admin (verified), request id cli-1"
        );
        o.request_id = None;
        assert_eq!(
            origin(&o).unwrap(),
            "a client signed by admin (verified), no request id"
        );
        o.parent = Some(ParentStep {
            order_id: "f".into(),
            workflow: "w".into(),
            step: "s".into(),
            attempt: 1,
        });
        assert_eq!(origin(&o), None);
    }
}
