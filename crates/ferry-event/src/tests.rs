//! Unit tests: one `check` helper runs a body through parse + process with a fixed clock,
//! source and id generator; the cases cover every code, every enrichment rule.

use serde_json::{Value, json};

use super::*;
use crate::enrich::ip_text;
use crate::time::parse_canonical_time;

const RECEIVED: &str = "2026-11-28T10:37:15.000Z";

struct Outcome {
    accepted: Vec<Value>,
    warnings: Vec<Vec<Warning>>,
    rejected: Vec<(usize, &'static str, Option<String>)>,
    quarantine: Vec<Value>,
}

fn run(body: &str, route: Route, ip: Option<&str>) -> Result<Outcome, RequestError> {
    let limits = Limits::default();
    let parsed = parse(body.as_bytes(), route, &limits)?;
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("gen-{n}")
    };
    let mut ctx = Ctx {
        received_at: RECEIVED.parse().unwrap(),
        source_id: "src",
        client_ip: ip.map(|ip| ip.parse().unwrap()),
        limits: &limits,
        new_message_id: &mut ids,
        describe: true,
    };
    let processed = process(parsed, &mut ctx);
    Ok(Outcome {
        accepted: processed.events.iter().map(|e| serde_json::from_slice(&e.payload).expect("valid json")).collect(),
        warnings: processed.described.iter().map(|d| d.warnings.clone()).collect(),
        rejected: processed
            .rejected
            .iter()
            .map(|r| (r.index, r.rejection.code(), r.rejection.field().map(str::to_owned)))
            .collect(),
        quarantine: processed.quarantine.iter().map(|q| serde_json::from_slice(&q.payload).unwrap()).collect(),
    })
}

fn one(body: &str, route: Route) -> Value {
    let outcome = run(body, route, None).unwrap();
    assert!(outcome.rejected.is_empty(), "rejected: {:?}", outcome.rejected);
    outcome.accepted.into_iter().next().unwrap()
}

fn rejected_code(body: &str, route: Route) -> &'static str {
    let outcome = run(body, route, None).unwrap();
    assert!(outcome.accepted.is_empty(), "accepted: {:?}", outcome.accepted);
    // Messages are lowercase, with no trailing period; the quarantine record names the code.
    let message = outcome.quarantine[0]["message"].as_str().unwrap();
    assert!(!message.ends_with('.') && !message.starts_with(char::is_uppercase), "{message}");
    assert_eq!(outcome.quarantine[0]["code"], outcome.rejected[0].1);
    outcome.rejected[0].1
}

const TRACK: Route = Route::Single(CallType::Track);

#[test]
fn track_is_enriched() {
    let event = one(
        r#"{"event":"Signed Up","userId":"u1","messageId":"m1","properties":{"plan":"pro"},"writeKey":"wk","_metadata":{"x":1}}"#,
        TRACK,
    );
    assert_eq!(
        event,
        json!({
            "type": "track", "messageId": "m1", "userId": "u1", "event": "Signed Up",
            "properties": {"plan": "pro"}, "integrations": {}, "channel": "server",
            "timestamp": RECEIVED, "receivedAt": RECEIVED, "version": 2, "sourceId": "src",
            "_metadata": {"x": 1}
        })
    );
}

#[test]
fn route_sets_the_type_and_member_order_is_canonical() {
    let limits = Limits::default();
    let body = br#"{"type":"identify","userId":"u1","messageId":"m","traits":{"a":1}}"#;
    let parsed = parse(body, Route::Single(CallType::Page), &limits).unwrap();
    let mut ids = || "x".to_owned();
    let mut ctx = Ctx {
        received_at: RECEIVED.parse().unwrap(),
        source_id: "s",
        client_ip: None,
        limits: &limits,
        new_message_id: &mut ids,
        describe: false,
    };
    let json = String::from_utf8(process(parsed, &mut ctx).events.remove(0).payload).unwrap();
    assert_eq!(
        json,
        r#"{"type":"page","messageId":"m","userId":"u1","traits":{"a":1},"integrations":{},"channel":"server","timestamp":"2026-11-28T10:37:15.000Z","receivedAt":"2026-11-28T10:37:15.000Z","version":2,"sourceId":"s"}"#
    );
}

#[test]
fn message_id_is_generated_when_absent_null_or_empty() {
    for body in [
        r#"{"event":"E","userId":"u"}"#,
        r#"{"event":"E","userId":"u","messageId":null}"#,
        r#"{"event":"E","userId":"u","messageId":""}"#,
    ] {
        assert_eq!(one(body, TRACK)["messageId"], "gen-1", "{body}");
    }
    assert_eq!(one(r#"{"event":"E","userId":"u","messageId":42}"#, TRACK)["messageId"], "42");
}

#[test]
fn numeric_ids_become_strings_and_null_means_absent() {
    let event = one(r#"{"event":"E","userId":123,"anonymousId":null}"#, TRACK);
    assert_eq!(event["userId"], "123");
    assert!(event.get("anonymousId").is_none());
    let event = one(r#"{"userId":"u","groupId":42}"#, Route::Single(CallType::Group));
    assert_eq!(event["groupId"], "42");
}

#[test]
fn every_rejection_code() {
    let batch = |item: &str| format!(r#"{{"batch":[{item}]}}"#);
    let cases: Vec<(String, Route, &str)> = vec![
        (batch("1"), Route::Batch, "not_an_object"),
        (batch(r#"{"userId":"u","event":"E"}"#), Route::Batch, "missing_type"),
        (batch(r#"{"type":"bogus","userId":"u"}"#), Route::Batch, "invalid_type"),
        (batch(r#"{"type":5,"userId":"u"}"#), Route::Batch, "invalid_type"),
        (r#"{"event":"E"}"#.into(), TRACK, "missing_user_id"),
        (r#"{"event":"E","userId":"","anonymousId":null}"#.into(), TRACK, "missing_user_id"),
        (r#"{"event":"E","userId":true}"#.into(), TRACK, "invalid_user_id"),
        (r#"{"event":"E","anonymousId":{}}"#.into(), TRACK, "invalid_anonymous_id"),
        (r#"{"userId":"u"}"#.into(), TRACK, "missing_event"),
        (r#"{"userId":"u","event":""}"#.into(), TRACK, "missing_event"),
        (r#"{"userId":"u","event":7}"#.into(), TRACK, "invalid_event"),
        (r#"{"userId":"u"}"#.into(), Route::Single(CallType::Group), "missing_group_id"),
        (r#"{"userId":"u","groupId":[1]}"#.into(), Route::Single(CallType::Group), "invalid_group_id"),
        (r#"{"previousId":"a"}"#.into(), Route::Single(CallType::Alias), "missing_user_id"),
        (r#"{"userId":"u"}"#.into(), Route::Single(CallType::Alias), "missing_previous_id"),
        (r#"{"userId":"u","previousId":false}"#.into(), Route::Single(CallType::Alias), "invalid_previous_id"),
        (r#"{"userId":"u","event":"E","messageId":{}}"#.into(), TRACK, "invalid_message_id"),
        (format!(r#"{{"userId":"u","event":"E","messageId":"{}"}}"#, "m".repeat(101)), TRACK, "message_id_too_long"),
        (r#"{"userId":"u","event":"E","properties":[]}"#.into(), TRACK, "invalid_properties"),
        (r#"{"userId":"u","traits":"x"}"#.into(), Route::Single(CallType::Identify), "invalid_traits"),
        (r#"{"userId":"u","event":"E","context":1}"#.into(), TRACK, "invalid_context"),
        (r#"{"userId":"u","event":"E","integrations":true}"#.into(), TRACK, "invalid_integrations"),
        (r#"{"userId":"u","event":"E","timestamp":"yesterday"}"#.into(), TRACK, "invalid_timestamp"),
        (r#"{"userId":"u","event":"E","sentAt":12}"#.into(), TRACK, "invalid_timestamp"),
        (
            batch(&format!(
                r#"{{"type":"track","userId":"u","event":"E","properties":{{"x":"{}"}}}}"#,
                "a".repeat(33 * 1024)
            )),
            Route::Batch,
            "event_too_large",
        ),
    ];
    for (body, route, code) in cases {
        assert_eq!(rejected_code(&body, route), code, "{}", &body[..body.len().min(120)]);
    }
    // A message id of exactly 100 characters is fine.
    one(&format!(r#"{{"userId":"u","event":"E","messageId":"{}"}}"#, "m".repeat(100)), TRACK);
}

#[test]
fn every_request_error_code() {
    let cases: Vec<(Vec<u8>, Route, &str)> = vec![
        (b"\xff\xfe{}".to_vec(), TRACK, "invalid_utf8"),
        (b"{\"a\":\"\xc3\x28\"}".to_vec(), TRACK, "invalid_utf8"),
        (b"{nope".to_vec(), TRACK, "invalid_json"),
        (b"".to_vec(), TRACK, "invalid_json"),
        (b"[1]".to_vec(), Route::Batch, "not_an_object"),
        (b"\"s\"".to_vec(), TRACK, "not_an_object"),
        ("[".repeat(10_000).into_bytes(), Route::Batch, "too_deep"),
        (
            format!(r#"{{"batch":[{{"properties":{}{}}}]}}"#, r#"{"a":"#.repeat(100), "}".repeat(100)).into_bytes(),
            Route::Batch,
            "too_deep",
        ),
        (br#"{"writeKey":"k"}"#.to_vec(), Route::Batch, "invalid_batch"),
        (br#"{"batch":{}}"#.to_vec(), Route::Batch, "invalid_batch"),
        (br#"{"batch":null}"#.to_vec(), Route::Batch, "invalid_batch"),
        (vec![b' '; 33 * 1024], TRACK, "payload_too_large"),
        (vec![b' '; 501 * 1024], Route::Batch, "payload_too_large"),
        (format!(r#"{{"batch":[{}]}}"#, vec!["{}"; 2501].join(",")).into_bytes(), Route::Batch, "too_many_events"),
    ];
    for (body, route, code) in cases {
        let error = parse(&body, route, &Limits::default()).err().unwrap_or_else(|| panic!("{code}: accepted"));
        assert_eq!(error.code(), code, "{}", String::from_utf8_lossy(&body[..body.len().min(80)]));
        let message = error.to_string();
        assert!(!message.is_empty() && !message.ends_with('.'));
    }
}

#[test]
fn write_key_from_body_envelope_or_first_item() {
    let limits = Limits::default();
    let key = |body: &str, route| parse(body.as_bytes(), route, &limits).unwrap().write_key().map(str::to_owned);
    assert_eq!(key(r#"{"writeKey":"a","event":"E"}"#, TRACK).as_deref(), Some("a"));
    assert_eq!(key(r#"{"writeKey":"","event":"E"}"#, TRACK), None);
    assert_eq!(key(r#"{"writeKey":"env","batch":[{"writeKey":"item"}]}"#, Route::Batch).as_deref(), Some("env"));
    assert_eq!(key(r#"{"batch":[{"type":"track"},{"writeKey":"item"}]}"#, Route::Batch).as_deref(), Some("item"));
}

#[test]
fn timestamps_are_normalized_and_skew_corrected() {
    // The device clock is 10 s ahead: sentAt says 10:37:25 when the server got it at 10:37:15.
    let event = one(
        r#"{"event":"E","userId":"u","timestamp":"2026-11-28T10:37:20.123456+00:00","sentAt":"2026-11-28T12:37:25.000+02:00"}"#,
        TRACK,
    );
    assert_eq!(event["originalTimestamp"], "2026-11-28T10:37:20.123Z");
    assert_eq!(event["sentAt"], "2026-11-28T10:37:25.000Z");
    assert_eq!(event["timestamp"], "2026-11-28T10:37:10.123Z");
    assert_eq!(event["receivedAt"], RECEIVED);
    // No sentAt: timestamp is the caller's.
    let event = one(r#"{"event":"E","userId":"u","timestamp":"2023-06-01T12:34:56.789Z"}"#, TRACK);
    assert_eq!(event["timestamp"], "2023-06-01T12:34:56.789Z");
    // originalTimestamp is used when timestamp is absent; no offset means UTC.
    let event = one(r#"{"event":"E","userId":"u","originalTimestamp":"2023-06-01T12:34:56"}"#, TRACK);
    assert_eq!(event["timestamp"], "2023-06-01T12:34:56.000Z");
    assert_eq!(event["originalTimestamp"], "2023-06-01T12:34:56.000Z");
}

#[test]
fn envelope_applies_to_items_lacking_their_own() {
    let body = r#"{"sentAt":"2026-11-28T10:37:15.000Z","context":{"library":{"name":"analytics-go"},"locale":"en"},"integrations":{"All":false},"batch":[
        {"type":"track","event":"A","userId":"u","timestamp":"2026-11-28T10:37:14.000Z"},
        {"type":"track","event":"B","userId":"u","sentAt":"2026-11-28T10:37:16.000Z","timestamp":"2026-11-28T10:37:14.000Z","context":{"locale":"fr","page":{}},"integrations":{"Mixpanel":true}}
    ]}"#;
    let outcome = run(body, Route::Batch, None).unwrap();
    let (a, b) = (&outcome.accepted[0], &outcome.accepted[1]);
    assert_eq!(a["sentAt"], "2026-11-28T10:37:15.000Z");
    assert_eq!(a["timestamp"], "2026-11-28T10:37:14.000Z");
    assert_eq!(a["context"], json!({"library":{"name":"analytics-go"},"locale":"en"}));
    assert_eq!(a["integrations"], json!({"All": false}));
    assert_eq!(b["sentAt"], "2026-11-28T10:37:16.000Z");
    assert_eq!(b["timestamp"], "2026-11-28T10:37:13.000Z");
    assert_eq!(b["context"], json!({"locale":"fr","page":{},"library":{"name":"analytics-go"}}));
    assert_eq!(b["integrations"], json!({"Mixpanel": true, "All": false}));
}

#[test]
fn ip_is_added_for_client_side_events_only() {
    let browser =
        r#"{"event":"E","anonymousId":"a","context":{"library":{"name":"analytics.js","version":"npm:next-1.84.3"}}}"#;
    let event = run(browser, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
    assert_eq!(event["context"]["ip"], "203.0.113.9");
    assert_eq!(event["channel"], "browser");
    let mobile = r#"{"event":"E","anonymousId":"a","context":{"library":{"name":"analytics-ios"}}}"#;
    let event = run(mobile, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
    assert_eq!(event["context"]["ip"], "203.0.113.9");
    assert_eq!(event["channel"], "mobile");
    let direct = r#"{"event":"E","anonymousId":"a","context":{"direct":true}}"#;
    let event = run(direct, TRACK, Some("::1")).unwrap().accepted.remove(0);
    assert_eq!(event["context"]["ip"], "::1");
    let server = r#"{"event":"E","anonymousId":"a","context":{"library":{"name":"analytics-python"}}}"#;
    let event = run(server, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
    assert!(event["context"].get("ip").is_none());
    assert_eq!(event["channel"], "server");
    let own_ip = r#"{"event":"E","anonymousId":"a","context":{"ip":"198.51.100.1","library":{"name":"analytics.js"}}}"#;
    let event = run(own_ip, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
    assert_eq!(event["context"]["ip"], "198.51.100.1");
    let sent_channel =
        r#"{"event":"E","anonymousId":"a","channel":"server","context":{"library":{"name":"analytics.js"}}}"#;
    assert_eq!(one(sent_channel, TRACK)["channel"], "server");
}

#[test]
fn reserved_properties_warn_but_never_reject() {
    let run_props = |props: &str| {
        let outcome = run(&format!(r#"{{"event":"E","userId":"u","properties":{props}}}"#), TRACK, None).unwrap();
        (
            outcome.accepted[0]["properties"].clone(),
            outcome.warnings[0].iter().map(|w| w.code()).collect::<Vec<_>>(),
            outcome.accepted[0].clone(),
        )
    };
    let (props, codes, _) = run_props(r#"{"revenue":19.99,"currency":"EUR","value":5}"#);
    assert_eq!(props, json!({"revenue":19.99,"currency":"EUR","value":5}));
    assert!(codes.is_empty());
    let (props, codes, event) = run_props(r#"{"revenue":"$19.99","value":"7","other":1}"#);
    assert_eq!(props, json!({"revenue":19.99,"value":7,"other":1}));
    assert_eq!(codes, ["revenue_not_number", "value_not_number"]);
    assert_eq!(event["_ferry"]["warnings"][0]["field"], "properties.revenue");
    let (props, codes, _) = run_props(r#"{"revenue":" 1,299.50 ","currency":"USD"}"#);
    assert_eq!(props, json!({"revenue":1299.5,"currency":"USD"}));
    assert_eq!(codes, ["revenue_not_number"]);
    // Identify has no reserved properties.
    let event = one(r#"{"userId":"u","properties":{"revenue":"x"}}"#, Route::Single(CallType::Identify));
    assert!(event.get("_ferry").is_none());
    let (props, codes, _) = run_props(r#"{"revenue":"lots","currency":"euro"}"#);
    assert_eq!(props, json!({"revenue":"lots","currency":"euro"}));
    assert_eq!(codes, ["invalid_revenue", "invalid_currency"]);
    // Revenue without currency: no warning, nothing added (USD is the documented default).
    let (props, codes, event) = run_props(r#"{"revenue":10}"#);
    assert_eq!(props, json!({"revenue":10}));
    assert!(codes.is_empty());
    assert!(event.get("_ferry").is_none());
}

#[test]
fn quarantine_records_keep_the_raw_item_and_reason() {
    let outcome =
        run(r#"{"batch":[{"type":"track","userId":"u","messageId":"q1","x":[1,2]}]}"#, Route::Batch, None).unwrap();
    assert_eq!(outcome.rejected, vec![(0, "missing_event", Some("event".to_owned()))]);
    assert_eq!(
        outcome.quarantine[0],
        json!({"receivedAt": RECEIVED, "sourceId": "src", "index": 0, "code": "missing_event",
               "message": "track needs `event`", "field": "event", "messageId": "q1",
               "item": {"type":"track","userId":"u","messageId":"q1","x":[1,2]}})
    );
}

#[test]
fn batch_keeps_valid_items_and_reports_invalid_ones_by_index() {
    let outcome = run(
        r#"{"batch":[{"type":"track","event":"A","userId":"u"},{"type":"track","userId":"u"},{"type":"alias","userId":"u","previousId":"p"}]}"#,
        Route::Batch,
        None,
    )
    .unwrap();
    assert_eq!(outcome.accepted.len(), 2);
    assert_eq!(outcome.rejected[0].0, 1);
    assert_eq!(outcome.accepted[1]["previousId"], "p");
}

#[test]
fn duplicate_keys_keep_the_last_and_unknown_members_pass_through() {
    let event = one(r#"{"event":"E","userId":"a","userId":"b","extra":1,"extra":2,"options":{"x":1}}"#, TRACK);
    assert_eq!(event["userId"], "b");
    assert_eq!(event["extra"], 2);
    assert_eq!(event["options"], json!({"x":1}));
    assert!(event.get("writeKey").is_none());
}

#[test]
fn the_last_context_and_properties_decide_enrichment() {
    // `context` and `properties` are scanned with the item; of duplicates only the last
    // counts, as for every other member, whatever kinds the earlier ones were.
    let browser = r#"{"library":{"name":"analytics.js"}}"#;
    let server = r#"{"library":{"name":"analytics-python"}}"#;
    for (contexts, channel, ip) in [
        ([browser, server], "server", false),
        ([server, browser], "browser", true),
        (["7", browser], "browser", true),
        ([browser, "null"], "server", false),
    ] {
        let body = format!(r#"{{"event":"E","userId":"u","context":{},"context":{}}}"#, contexts[0], contexts[1]);
        let event = run(&body, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
        assert_eq!(event["channel"], channel, "{body}");
        assert_eq!(event.get("context").and_then(|c| c.get("ip")).is_some(), ip, "{body}");
    }
    // Inside `context`, too: the last `library` or `direct` counts, and `null` is absent.
    for (context, channel, ip) in [
        (r#"{"library":{"name":"analytics-python"},"library":{"name":"analytics.js"}}"#, "browser", true),
        (r#"{"library":{"name":"analytics.js"},"library":null}"#, "server", false),
        (r#"{"direct":true,"direct":false}"#, "server", false),
        (r#"{"direct":false,"direct":true}"#, "server", true),
    ] {
        let body = format!(r#"{{"event":"E","userId":"u","context":{context}}}"#);
        let event = run(&body, TRACK, Some("203.0.113.9")).unwrap().accepted.remove(0);
        assert_eq!(event["channel"], channel, "{body}");
        assert_eq!(event["context"].get("ip").is_some(), ip, "{body}");
    }
    let body = r#"{"event":"E","userId":"u","properties":{"revenue":"$5"},"properties":{"revenue":5}}"#;
    let outcome = run(body, TRACK, None).unwrap();
    assert!(outcome.warnings[0].is_empty());
    assert_eq!(outcome.accepted[0]["properties"], json!({"revenue":5}));
    let body = r#"{"event":"E","userId":"u","properties":{"revenue":5},"properties":{"revenue":"$5"}}"#;
    let outcome = run(body, TRACK, None).unwrap();
    assert_eq!(outcome.warnings[0][0].code(), "revenue_not_number");
    assert_eq!(outcome.accepted[0]["properties"], json!({"revenue":5}));
    let body = r#"{"event":"E","userId":"u","properties":{"revenue":5},"properties":"x"}"#;
    assert_eq!(rejected_code(body, TRACK), "invalid_properties");
}

#[test]
fn keys_with_unpaired_surrogate_escapes_are_kept_as_text() {
    // Found by the fuzzer: serde_json takes `"\udaAe"` inside a value it skips; such a key
    // cannot be decoded, so it is stored with its escape as characters (valid Unicode).
    let body = r#"{"event":"E","userId":"u","x\udaAe":1,"context":{"library":{"name":"analytics.js"}}}"#;
    let event = one(body, TRACK);
    assert_eq!(event["x\\udaAe"], 1);
    assert_eq!(event["channel"], "browser");
    assert_eq!(event["context"]["library"]["name"], "analytics.js");
}

#[test]
fn member_keys_with_escapes_are_escaped_again_wherever_they_are_written() {
    // Passed through, in properties rewritten for `revenue`, in a context merged with the
    // envelope's, and in quarantine: keys written without a check are only those scanned
    // without escapes.
    let item = r#"{"type":"track","event":"E","user\u0049d":"u","a\"b":1,"tab\tkey":2,"properties":{"q\\x":1,"revenue":"$5"},"context":{"k\nl":true}}"#;
    let bad = r#"{"type":"track","userId":"u","c\"d":3}"#;
    let body = format!(r#"{{"context":{{"e\"f":1}},"batch":[{item},{bad}]}}"#);
    let outcome = run(&body, Route::Batch, None).unwrap();
    let event = &outcome.accepted[0];
    assert_eq!(event["userId"], "u");
    assert_eq!(event["a\"b"], 1);
    assert_eq!(event["tab\tkey"], 2);
    assert_eq!(event["properties"], json!({"q\\x": 1, "revenue": 5}));
    assert_eq!(event["context"]["k\nl"], true);
    assert_eq!(event["context"]["e\"f"], 1);
    assert_eq!(outcome.quarantine[0]["item"]["c\"d"], 3);
}

#[test]
fn items_that_are_not_objects_are_quarantined_as_sent() {
    let outcome = run(
        r#"{"batch":[ [1, 2.50] , "s\u00e9", 3e2, {"type":"track","event":"E","userId":"u"}]}"#,
        Route::Batch,
        None,
    )
    .unwrap();
    assert_eq!(outcome.accepted.len(), 1);
    let items: Vec<&Value> = outcome.quarantine.iter().map(|q| &q["item"]).collect();
    assert_eq!(items, [&json!([1, 2.5]), &json!("sé"), &json!(300.0)]);
    assert!(outcome.rejected.iter().all(|r| r.1 == "not_an_object"));
}

#[test]
fn a_batch_over_the_count_is_refused_after_one_checked_pass() {
    // Items past the limit are checked but not kept; bad JSON after them is still found.
    let many = vec!["{}"; 3000].join(",");
    let error = parse(format!(r#"{{"batch":[{many}]}}"#).as_bytes(), Route::Batch, &Limits::default()).err().unwrap();
    assert_eq!(error.code(), "too_many_events");
    assert!(error.to_string().contains("3000"), "{error}");
    let error = parse(format!(r#"{{"batch":[{many},]}}"#).as_bytes(), Route::Batch, &Limits::default()).err().unwrap();
    assert_eq!(error.code(), "invalid_json");
    assert!(error.to_string().starts_with("the body is not valid JSON: expected a value at byte "), "{error}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

    /// The arithmetic formatter writes what jiff writes, from year 0 to 9999.
    #[test]
    fn times_are_written_as_jiff_writes_them(ms in jiff::Timestamp::MIN.as_millisecond()..=jiff::Timestamp::MAX.as_millisecond()) {
        let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
        proptest::prop_assert_eq!(format_time(ts), format!("{ts:.3}"));
    }

    /// The canonical-form parser agrees with jiff on every string of that shape, valid
    /// dates or not (it leaves leap seconds, day 31 of short months and the like to jiff),
    /// and what it takes is already written as ferry writes it.
    #[test]
    fn canonical_times_are_read_as_jiff_reads_them(
        year in 0u32..10_000, month in 0u32..14, day in 0u32..33, hour in 0u32..26,
        minute in 0u32..61, second in 0u32..62, ms in 0u32..1000,
    ) {
        let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{ms:03}Z");
        let jiff = text.parse::<jiff::Timestamp>().ok();
        let fast = parse_canonical_time(&text);
        if let Some(ts) = fast {
            proptest::prop_assert_eq!(fast, jiff);
            // A time the fast path takes is stored as sent, so it must be its stored form.
            proptest::prop_assert_eq!(&format_time(ts), &text);
        }
        proptest::prop_assert_eq!(parse_time(&text), jiff);
        if (1..=12).contains(&month) && (1..=28).contains(&day) && hour < 24 && minute < 60 && second < 60 {
            proptest::prop_assert!(fast.is_some(), "{} not taken by the fast path", text);
        }
    }
}

#[test]
fn client_addresses_are_written_as_display_writes_them() {
    let octets = [0u8, 1, 9, 10, 42, 99, 100, 101, 199, 200, 250, 255];
    for a in octets {
        for b in octets {
            for c in octets {
                for d in octets {
                    let ip = IpAddr::from([a, b, c, d]);
                    assert_eq!(ip_text(ip), ip.to_string());
                }
            }
        }
    }
    for v6 in ["::1", "2001:db8::8a2e:370:7334", "::ffff:192.0.2.1", "fe80::1"] {
        let ip: IpAddr = v6.parse().unwrap();
        assert_eq!(ip_text(ip), ip.to_string());
    }
}

#[test]
fn time_edges() {
    for text in
        ["1970-01-01T00:00:00.000Z", "2000-02-29T23:59:59.999Z", "9999-12-30T21:59:59.999Z", "0000-01-01T00:00:00.000Z"]
    {
        let ts = parse_time(text).unwrap();
        assert_eq!(format_time(ts), text);
        assert_eq!(parse_canonical_time(text), text.parse().ok());
    }
    assert_eq!(parse_canonical_time("2001-02-29T00:00:00.000Z"), None);
    // Past jiff's range (the end of year 9999 less a day), like jiff.
    assert_eq!(parse_time("9999-12-31T23:59:59.999Z"), None);
    assert_eq!(parse_canonical_time("2026-11-28T10:37:14.724+00:00"), None);
    assert_eq!(format_time(parse_time("2026-11-28T11:37:14.724512+01:00").unwrap()), "2026-11-28T10:37:14.724Z");
}

#[test]
fn every_real_client_capture_is_accepted_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/real-clients");
    let mut events = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let capture: Value = serde_json::from_str(line).unwrap();
            if capture["method"] != "POST" {
                continue;
            }
            let route = match capture["path"].as_str().unwrap() {
                "/v1/batch" | "/v1/b" | "/v1/import" => Route::Batch,
                "/v1/t" | "/v1/track" => TRACK,
                "/v1/i" | "/v1/identify" => Route::Single(CallType::Identify),
                "/v1/p" | "/v1/page" => Route::Single(CallType::Page),
                "/v1/s" | "/v1/screen" => Route::Single(CallType::Screen),
                "/v1/g" | "/v1/group" => Route::Single(CallType::Group),
                "/v1/a" | "/v1/alias" => Route::Single(CallType::Alias),
                _ => continue,
            };
            let body = serde_json::to_string(&capture["body"]).unwrap();
            let outcome = run(&body, route, Some("127.0.0.1")).unwrap();
            assert!(outcome.rejected.is_empty(), "{}: {:?}", path.display(), outcome.rejected);
            events += outcome.accepted.len();
        }
    }
    assert!(events >= 60, "only {events} events in the captures");
}

#[test]
fn fields_checked_for_one_call_pass_through_on_others() {
    let event = one(r#"{"event":"E","userId":"u","groupId":"g","previousId":7}"#, TRACK);
    assert_eq!(event["groupId"], "g");
    assert_eq!(event["previousId"], 7);
    let event = one(r#"{"userId":"u","event":"Viewed","name":"Home"}"#, Route::Single(CallType::Page));
    assert_eq!(event["event"], "Viewed");
    assert_eq!(event["name"], "Home");
}

#[test]
fn original_timestamp_is_used_only_without_timestamp() {
    let body = r#"{"event":"E","userId":"u","timestamp":"2026-11-28T10:00:00Z","originalTimestamp":"garbage"}"#;
    assert_eq!(one(body, TRACK)["originalTimestamp"], "2026-11-28T10:00:00.000Z");
    let body = r#"{"event":"E","userId":"u","originalTimestamp":"2026-11-28T09:00:00.123456-01:00"}"#;
    assert_eq!(one(body, TRACK)["originalTimestamp"], "2026-11-28T10:00:00.123Z");
    let body = r#"{"event":"E","userId":"u","originalTimestamp":"garbage"}"#;
    assert_eq!(rejected_code(body, TRACK), "invalid_timestamp");
}

#[test]
fn envelope_context_must_be_an_object() {
    for body in [r#"{"batch":[],"context":"x"}"#, r#"{"batch":[],"integrations":[1]}"#] {
        assert_eq!(run(body, Route::Batch, None).err().unwrap().code(), "invalid_batch");
    }
    // null is absent.
    assert!(run(r#"{"batch":[],"context":null}"#, Route::Batch, None).is_ok());
}

#[test]
fn channel_is_inferred_from_the_library() {
    let channel = |library: &str| {
        let body = format!(r#"{{"event":"E","userId":"u","context":{{"library":{{"name":"{library}"}}}}}}"#);
        one(&body, TRACK)["channel"].as_str().unwrap().to_owned()
    };
    assert_eq!(channel("analytics.js"), "browser");
    assert_eq!(channel("RudderLabs JavaScript SDK"), "browser");
    for mobile in [
        "analytics-ios",
        "analytics-android",
        "analytics-react-native",
        "analytics-kotlin",
        "analytics-swift",
        "analytics-flutter",
    ] {
        assert_eq!(channel(mobile), "mobile", "{mobile}");
    }
    for server in ["analytics-python", "@segment/analytics-node", "analytics-ruby", "rudder-sdk-node"] {
        assert_eq!(channel(server), "server", "{server}");
    }
    assert_eq!(one(r#"{"event":"E","userId":"u"}"#, TRACK)["channel"], "server");
}

#[test]
fn pixel_data_parses_as_a_single_call() {
    // The HTTP layer base64-decodes `data`; the JSON is one call of the path's type.
    let event = one(r#"{"writeKey":"wk","event":"Opened Email","userId":"u"}"#, TRACK);
    assert_eq!(event["type"], "track");
    assert!(event.get("writeKey").is_none());
}

#[test]
fn fuzz_entry_point_survives_hostile_input() {
    let deep = "[".repeat(10_000);
    let deep_object = r#"{"a":"#.repeat(10_000);
    for input in [
        b"".as_slice(),
        b"\xff\xfe",
        deep.as_bytes(),
        deep_object.as_bytes(),
        br#"{"batch":[1,"x",null,[],{"type":"track"},{"type":"track","event":"E","userId":"u","messageId":5}]}"#,
        br#"{"event":"E","userId":"u","context":{"library":{"name":"analytics.js"}},"properties":{"revenue":"$1"}}"#,
        br#"{"event":"E","userId":"u","timestamp":"-009999-01-01T00:00:00Z","sentAt":"9999-12-31T23:59:59Z"}"#,
    ] {
        // The first byte picks the route: every route, each with the whole input.
        for route in 0..7 {
            fuzz_one(&[&[route], input].concat());
        }
    }
}
