use std::collections::BTreeMap;

use super::*;

fn mapping(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn message<'a>(
    subject: &'a str,
    headers: &'a [(String, String)],
    payload: &'a str,
) -> Incoming<'a> {
    Incoming {
        subject,
        headers,
        payload: payload.as_bytes(),
    }
}

#[test]
fn subjects_are_checked_for_syntax_and_reserved_names() {
    for ok in ["orders.created.>", "orders.*.eu", "a", "a.b-c_d.*"] {
        assert_eq!(check_subject(ok), Ok(()), "{ok}");
    }
    let cases = [
        ("", "empty"),
        ("orders..created", "empty token"),
        ("orders.", "empty token"),
        ("orders created", "whitespace"),
        ("orders.cre*", "whole token"),
        ("orders.>.x", "last token"),
        ("baton.api.submit", "reserved"),
        ("$JS.API.x", "reserved"),
        ("$SYS.>", "reserved"),
        ("_INBOX.x", "reserved"),
        (">", "reserved"),
        ("*.created", "reserved"),
    ];
    for (subject, why) in cases {
        let e = check_subject(subject).unwrap_err();
        assert!(e.contains(why), "{subject}: {e}");
    }
}

#[test]
fn mappings_parse_and_bad_ones_say_what_is_accepted() {
    assert_eq!(
        parse_source("$.order.items[2].id"),
        Ok(Source::Json(vec![
            Step::Key("order".into()),
            Step::Key("items".into()),
            Step::Index(2),
            Step::Key("id".into())
        ]))
    );
    assert_eq!(parse_source("$"), Ok(Source::Json(vec![])));
    assert_eq!(
        parse_source("header:Region"),
        Ok(Source::Header("Region".into()))
    );
    assert_eq!(parse_source("token:3"), Ok(Source::Token(3)));
    assert_eq!(parse_source("subject"), Ok(Source::Subject));
    assert_eq!(
        parse_source("literal:a b"),
        Ok(Source::Literal("a b".into()))
    );
    for (bad, why) in [
        ("$.a..b", "empty field"),
        ("$.a[x]", "no array index"),
        ("$.a[1", "without ']'"),
        ("$a", "unexpected"),
        ("token:0", "from 1"),
        ("token:x", "from 1"),
        ("header:", "header name"),
        ("order.id", "is no mapping"),
    ] {
        let e = parse_source(bad).unwrap_err();
        assert!(e.contains(why), "{bad}: {e}");
    }
}

#[test]
fn a_trigger_maps_only_declared_parameters() {
    let declared = |p: &str| ["id", "region"].contains(&p);
    let ok = mapping(&[("id", "$.order.id"), ("region", "header:Region")]);
    assert_eq!(check_trigger("orders.>", &ok, &declared), Ok(()));
    let (field, e) =
        check_trigger("orders.>", &mapping(&[("other", "subject")]), &declared).unwrap_err();
    assert_eq!(field, "params.other");
    assert!(e.contains("does not declare"), "{e}");
    let (field, e) = check_trigger("orders.>", &mapping(&[("id", "id")]), &declared).unwrap_err();
    assert_eq!(field, "params.id");
    assert!(e.contains("is no mapping"), "{e}");
    let (field, _) = check_trigger("baton.x", &ok, &declared).unwrap_err();
    assert_eq!(field, "name");
}

#[test]
fn a_message_maps_fields_headers_tokens_subject_and_literals() {
    let params = mapping(&[
        ("id", "$.order.id"),
        ("count", "$.order.items[1].n"),
        ("flag", "$.ok"),
        ("whole", "$.order.items[0]"),
        ("region", "header:region"),
        ("kind", "token:2"),
        ("subject", "subject"),
        ("fixed", "literal:yes"),
    ]);
    let triggers = [("orders.*.>", &params)];
    let headers = vec![("Region".to_string(), "eu".to_string())];
    let payload = r#"{"order":{"id":"A-1","items":[{"n":1},{"n":2.5}]},"ok":true}"#;
    let got = map_message(&triggers, message("orders.created.eu", &headers, payload)).unwrap();
    let want = mapping(&[
        ("id", "A-1"),
        ("count", "2.5"),
        ("flag", "true"),
        ("whole", r#"{"n":1}"#),
        ("region", "eu"),
        ("kind", "created"),
        ("subject", "orders.created.eu"),
        ("fixed", "yes"),
    ]);
    assert_eq!(got, want);
}

#[test]
fn the_first_matching_trigger_maps_and_none_matching_is_unmappable() {
    let a = mapping(&[("x", "literal:a")]);
    let b = mapping(&[("x", "literal:b")]);
    let triggers = [("orders.eu", &a), ("orders.*", &b)];
    let got = |s| map_message(&triggers, message(s, &[], ""));
    assert_eq!(got("orders.eu").unwrap()["x"], "a");
    assert_eq!(got("orders.us").unwrap()["x"], "b");
    assert!(matches!(got("other"), Err(Unmappable::NoTrigger { .. })));
}

#[test]
fn unmappable_messages_say_which_parameter_and_why() {
    let params = mapping(&[("id", "$.order.id")]);
    let triggers = [("orders.>", &params)];
    let reason = |payload: &str| {
        map_message(&triggers, message("orders.x", &[], payload))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        reason(r#"{"order":{}}"#),
        "parameter 'id': $.order.id: no such field in the payload"
    );
    assert_eq!(
        reason(r#"{"order":{"id":null}}"#),
        "parameter 'id': $.order.id: no such field in the payload"
    );
    assert!(reason("not json").contains("the payload is not JSON"));
    let headers = mapping(&[("r", "header:Region")]);
    let e = map_message(&[("o.>", &headers)], message("o.x", &[], "")).unwrap_err();
    assert!(matches!(e, Unmappable::MissingHeader { .. }), "{e}");
    let token = mapping(&[("t", "token:5")]);
    let e = map_message(&[("o.>", &token)], message("o.x", &[], "")).unwrap_err();
    assert!(e.to_string().contains("fewer tokens"), "{e}");
    let big = format!("{{\"v\":\"{}\"}}", "x".repeat(MAX_PARAM_BYTES + 1));
    let value = mapping(&[("v", "$.v")]);
    let e = map_message(&[("o.>", &value)], message("o.x", &[], &big)).unwrap_err();
    assert!(matches!(e, Unmappable::BadValue { .. }), "{e}");
}

#[test]
fn the_minimal_cover_drops_duplicates_and_covered_subjects() {
    let cover = minimal_cover(["a.b.c", "a.>", "a.b.c", "x.*", "x.y", "z"]);
    assert_eq!(cover, ["a.>", "x.*", "z"]);
    // partly overlapping, neither covering: both kept (JetStream refuses)
    assert_eq!(minimal_cover(["a.*.c", "a.b.*"]), ["a.*.c", "a.b.*"]);
    assert!(overlap("a.*.c", "a.b.*"));
    assert!(overlap("a.>", "a.b"));
    assert!(!overlap("a.b", "a.c"));
    assert!(!overlap("a.b", "a.b.c"));
}

#[test]
fn consumer_names_and_request_ids_are_per_job() {
    assert_eq!(consumer_name("ingest"), "job_ingest");
    assert_eq!(consumer_job("job_ingest"), Some("ingest"));
    assert_eq!(consumer_job("other"), None);
    assert_eq!(request_id("ingest", 17, 42), "ingest@msg:17:42");
}

#[test]
fn the_stream_plan_has_one_consumer_per_job_and_captures_every_subject_once() {
    let params = BTreeMap::new();
    let subject = |name: &str| TriggerSpec::Subject {
        name: name.into(),
        params: params.clone(),
    };
    let a = vec![subject("orders.created.>"), subject("orders.created.eu")];
    let b = vec![subject("orders.>")];
    let c = vec![TriggerSpec::interval(
        std::time::Duration::from_secs(5),
        None,
    )];
    let ours = vec![subject("acme.api.submit")];
    let plan = stream_plan(
        "acme",
        [
            ("d", ours.as_slice()),
            ("a", a.as_slice()),
            ("b", b.as_slice()),
            ("c", c.as_slice()),
        ],
    );
    assert_eq!(plan.subjects, ["orders.>"]);
    assert_eq!(plan.consumers.len(), 2);
    assert_eq!(plan.consumers["job_a"], ["orders.created.>"]);
    assert_eq!(plan.consumers["job_b"], ["orders.>"]);
    assert_eq!(
        stream_plan("acme", [("c", c.as_slice())]),
        StreamPlan::default()
    );
}

/// The README's subject trigger example deploys as written, and deploy
/// refuses an unmapped required parameter and an undeclared mapping by
/// file, job and field.
#[test]
fn the_readme_example_deploys_and_bad_mappings_are_refused_by_field() {
    let today = chrono::NaiveDate::from_ymd_opt(2026, 12, 6).unwrap();
    let parse = |text: &str| {
        let files = vec![("jobs.toml".to_string(), text.to_string())];
        crate::jobs::parse_deploy_files(&files, today).map_err(|e| e.to_string())
    };
    let readme = include_str!("../../README.md");
    let start = readme
        .find("```toml\n[[job]]\nname = \"ingest\"")
        .expect("the example")
        + 8;
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let all = parse(text).unwrap();
    let job = &all[0].1.jobs[0];
    assert_eq!(
        subject_triggers(&job.triggers),
        [(
            "orders.created.>",
            &mapping(&[("id", "$.order.id"), ("region", "header:Region")])
        )]
    );
    let e = parse(&text.replace("region = \"header:Region\"", "regio = \"header:Region\""))
        .unwrap_err();
    assert!(
        e.starts_with("jobs.toml: job 'ingest': field 'triggers[0].params.regio': maps parameter 'regio', which the job does not declare"),
        "{e}"
    );
    let e = parse(&text.replace("id = \"$.order.id\", ", "")).unwrap_err();
    assert!(
        e.starts_with("jobs.toml: job 'ingest': field 'triggers[0].params': maps no value for required parameter 'id'"),
        "{e}"
    );
    let clock = format!("{text}[[job.triggers]]\nkind = \"interval\"\nevery = \"1m\"\n");
    let e = parse(&clock).unwrap_err();
    assert!(e.contains("field 'params.id'"), "{e}");
    let e = parse(&text.replace("orders.created.>", "baton.api.submit")).unwrap_err();
    assert!(e.contains("field 'triggers[0].name'"), "{e}");
}

#[test]
fn the_stream_widens_subjects_that_overlap_without_covering() {
    assert_eq!(stream_subjects(["a.*.c", "a.b.*"]), ["a.*.*"]);
    assert_eq!(stream_subjects(["a.*.c", "a.b.>"]), ["a.*.>"]);
    assert_eq!(stream_subjects(["a.b", "c.d", "a.*"]), ["a.*", "c.d"]);
    assert_eq!(stream_subjects(["x.*.1", "x.2.*", "y"]), ["x.*.*", "y"]);
}
