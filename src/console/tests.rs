use super::http::*;
use crate::bus::BusError;
use crate::protocol::*;

fn summary(id: &str, ms: u64) -> OrderSummary {
    OrderInfo::new(id.into(), "j".into(), OrderState::Succeeded, ms).summary()
}

#[test]
fn a_refusal_keeps_its_code_and_gets_its_status() {
    let remote = |code| BusError::Remote(ErrorReply::new(code, "no"));
    assert_eq!(error_status(&remote(ErrorCode::NotFound)).0, 404);
    assert_eq!(error_status(&remote(ErrorCode::UnknownJob)).0, 404);
    assert_eq!(error_status(&remote(ErrorCode::InvalidParam)).0, 400);
    assert_eq!(error_status(&remote(ErrorCode::InvalidState)).0, 409);
    assert_eq!(error_status(&remote(ErrorCode::Forbidden)).0, 403);
    let (status, body) = error_status(&remote(ErrorCode::Conflict));
    assert_eq!((status, body.error.code), (409, ErrorCode::Conflict));
    let none = BusError::NoResponders {
        subject: "baton.api.status".into(),
    };
    let (status, body) = error_status(&none);
    assert_eq!((status, body.error.code), (503, ErrorCode::Unavailable));
    assert!(body.error.message.contains("baton.api.status"));
    let denied = BusError::Denied {
        subject: "baton.api.deploy".into(),
        reason: "permissions violation".into(),
        hint: "admin".into(),
    };
    assert_eq!(error_status(&denied), (403, error_status(&denied).1));
    assert_eq!(error_status(&denied).1.error.code, ErrorCode::Forbidden);
}

#[test]
fn the_order_query_becomes_the_broker_s_request_or_a_clear_error() {
    let q = OrderQuery {
        job: Some("hello".into()),
        workflow: Some(String::new()),
        state: Some("running".into()),
        limit: Some(20),
        ..Default::default()
    };
    let r = list_query(&q).unwrap();
    assert_eq!(r.list.job.as_deref(), Some("hello"));
    assert_eq!(r.list.workflow, None, "empty means any");
    assert_eq!(r.list.state, Some(OrderState::Running));
    assert_eq!(
        r.list.limit,
        Some(21),
        "one more tells whether a next page exists"
    );
    let bad = |q: OrderQuery| list_query(&q).unwrap_err();
    assert!(bad(OrderQuery {
        state: Some("done".into()),
        ..Default::default()
    })
    .contains("succeeded"));
    assert!(bad(OrderQuery {
        limit: Some(0),
        ..Default::default()
    })
    .contains("limit"));
    assert!(bad(OrderQuery {
        after: Some("x".into()),
        ..Default::default()
    })
    .contains("after"));
    let after = list_query(&OrderQuery {
        after: Some("1000.2".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(after.list.until_ms, Some(1001));
    assert_eq!(
        (after.skip, after.list.limit),
        (2, Some(2 + DEFAULT_PAGE + 1))
    );
}

#[test]
fn pages_neither_skip_nor_repeat_orders_of_one_millisecond() {
    // newest first; three orders share 900
    let all: Vec<OrderSummary> = [("a", 1000), ("b", 900), ("c", 900), ("d", 900), ("e", 800)]
        .into_iter()
        .map(|(id, ms)| summary(id, ms))
        .collect();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let q = OrderQuery {
            limit: Some(2),
            after: after.clone(),
            ..Default::default()
        };
        let r = list_query(&q).unwrap();
        // what the broker answers: newest first, accepted before until_ms
        let answer: Vec<OrderSummary> = all
            .iter()
            .filter(|o| r.list.until_ms.is_none_or(|u| o.accepted_at_ms < u))
            .take(r.list.limit.unwrap() as usize)
            .cloned()
            .collect();
        let (page, next) = cut_page(&r, answer, false);
        seen.extend(page.into_iter().map(|o| o.order_id));
        match next {
            Some(n) => after = Some(n.text()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
}

#[test]
fn events_become_json_and_log_lines_and_forgeries_stay_out() {
    let s = Subjects::new("baton");
    let finished = OrderFinished {
        order_id: "o1".into(),
        job: "hello".into(),
        state: OrderState::Succeeded,
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        reason: None,
        subagent_id: Some("sub-1".into()),
        attempt: 1,
        duration_ms: Some(5),
        at_ms: 7,
        workflow: None,
    };
    let payload = rmp_serde::to_vec_named(&finished).unwrap();
    let subject = s.event("hello", "o1", EventKind::Finished);
    let json = event_json(&s, &subject, &payload).unwrap();
    assert_eq!(json["type"], "order");
    assert_eq!(json["kind"], "finished");
    assert_eq!(json["order"], "o1");
    assert_eq!(json["data"]["state"], "succeeded");
    let started = TaskStarted {
        order_id: "o1".into(),
        job: "hello".into(),
        task_id: "t".into(),
        attempt: 1,
        subagent_id: "sub-1".into(),
        pid: None,
        at_ms: 1,
    };
    let payload = rmp_serde::to_vec_named(&started).unwrap();
    let own = s.task_event("hello", "o1", EventKind::Started, "sub-1");
    assert!(event_json(&s, &own, &payload).is_some());
    let forged = s.task_event("hello", "o1", EventKind::Started, "sub-2");
    assert!(
        event_json(&s, &forged, &payload).is_none(),
        "another's name"
    );
    let log = s.task_event("hello", "o1", EventKind::Log, "sub-1");
    assert!(event_json(&s, &log, &payload).is_none(), "lines stay out");
    let cluster = event_json(&s, &s.subagent_changed("sub-1"), &payload).unwrap();
    assert_eq!(cluster["type"], "subagent");
    assert!(event_json(&s, "baton.hb.broker", &payload).is_none());
    assert!(event_json(&s, &subject, b"\xc1garbage").is_none());
}

#[test]
fn an_sse_frame_has_one_data_line_per_line() {
    assert_eq!(sse_frame("message", "{}"), "event: message\ndata: {}\n\n");
    assert_eq!(
        sse_frame("line", "a\nb"),
        "event: line\ndata: a\ndata: b\n\n"
    );
}

#[test]
fn the_openapi_document_refers_only_to_generated_schemas() {
    let files = crate::schema::generate();
    let doc = super::openapi::document();
    fn refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(r)) = map.get("$ref") {
                    out.push(r.clone());
                }
                map.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 10);
    for r in found {
        let (file, pointer) = r.split_once('#').unwrap_or((&r, ""));
        let text = files
            .get(file)
            .unwrap_or_else(|| panic!("no schema file {file}"));
        let schema: serde_json::Value = serde_json::from_str(text).unwrap();
        assert!(schema.pointer(pointer).is_some(), "dangling {r}");
    }
    assert!(doc["paths"]["/api/orders"]["get"]["responses"]["404"].is_object());
}

#[test]
fn actions_need_a_json_body_so_other_sites_cannot_send_them() {
    assert!(cross_site_safe("GET", None));
    assert!(cross_site_safe("POST", Some("application/json")));
    assert!(cross_site_safe(
        "POST",
        Some("Application/JSON; charset=utf-8")
    ));
    assert!(!cross_site_safe("POST", None));
    assert!(!cross_site_safe("POST", Some("text/plain")));
    assert!(!cross_site_safe(
        "POST",
        Some("application/x-www-form-urlencoded")
    ));
    assert!(!cross_site_safe(
        "POST",
        Some("multipart/form-data; boundary=x")
    ));
}

#[test]
fn a_loopback_console_answers_only_its_own_host_names() {
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST",
        "[::1]:8080",
        "127.0.0.2",
    ] {
        assert!(host_allowed(Some(host), true), "{host}");
    }
    for host in ["evil.example:8080", "evil.example", "10.0.0.1:8080", ""] {
        assert!(!host_allowed(Some(host), true), "{host}");
    }
    assert!(!host_allowed(None, true));
    assert!(
        host_allowed(Some("console.internal"), false),
        "behind a proxy"
    );
}
