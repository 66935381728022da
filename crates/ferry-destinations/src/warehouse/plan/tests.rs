use super::*;

fn event(json: &str) -> Arc<Event> {
    Arc::new(Event::decode(json.as_bytes()).unwrap_or_else(|e| panic!("{e}: {json}")))
}

fn track(id: &str, name: &str, properties: &str) -> Arc<Event> {
    event(&format!(
        r#"{{"type":"track","messageId":"{id}","userId":"u1","event":{},"properties":{properties},"context":{{"ip":"1.2.3.4","library":{{"name":"analytics.js","version":"2.1"}}}},"integrations":{{}},"originalTimestamp":"2026-11-28T10:37:14.724Z","sentAt":"2026-11-28T10:37:14.754Z","timestamp":"2026-11-28T10:37:14.869Z","receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"web"}}"#,
        serde_json::to_string(name).unwrap()
    ))
}

fn identify(id: &str, received: &str, traits: &str) -> Arc<Event> {
    event(&format!(
        r#"{{"type":"identify","messageId":"{id}","userId":"u1","traits":{traits},"receivedAt":"{received}","sourceId":"web"}}"#
    ))
}

fn now() -> jiff::Timestamp {
    "2026-11-28T10:37:15Z".parse().unwrap()
}

fn table<'p, 'a>(plan: &'p Plan<'a>, name: &str) -> &'p TableLoad<'a> {
    plan.tables.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no table {name} in {plan:#?}"))
}

/// A table's rows as `column=value` strings, columns in the plan's order.
fn rows(load: &TableLoad<'_>) -> Vec<Vec<String>> {
    load.rows
        .iter()
        .map(|row| {
            let mut values: Vec<(usize, String)> = row
                .values
                .iter()
                .map(|(c, v)| {
                    let text = match v {
                        Value::Int(i) => i.to_string(),
                        Value::Float(f) => format!("{f:?}"),
                        Value::Bool(b) => b.to_string(),
                        Value::Time(t) => t.to_string(),
                        Value::Text(s) => format!("{s:?}"),
                    };
                    (*c, format!("{}={text}", load.columns[*c].0))
                })
                .collect();
            values.sort();
            values.into_iter().map(|(_, v)| v).collect()
        })
        .collect()
}

fn types(load: &TableLoad<'_>) -> Vec<(String, &'static str)> {
    load.columns.iter().map(|(c, t)| (c.clone(), t.name())).collect()
}

#[test]
fn a_track_fills_tracks_and_its_own_table() {
    let events = [track(
        "m1",
        "Order Completed",
        r#"{"revenue": 19.99, "count": 2, "paid": true, "when": "2026-01-01T00:00:00Z", "tags": ["a", "b"], "address": {"city": "Paris"}, "gone": null}"#,
    )];
    let plan = plan("web", &events, &Schema::default(), now());
    assert_eq!(plan.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["order_completed", "tracks"]);
    let tracks = table(&plan, "tracks");
    assert!(tracks.create);
    assert_eq!(
        rows(tracks)[0],
        [
            r#"id="m1""#,
            r#"user_id="u1""#,
            "received_at=2026-11-28T10:37:14.899Z",
            "sent_at=2026-11-28T10:37:14.754Z",
            "timestamp=2026-11-28T10:37:14.869Z",
            "original_timestamp=2026-11-28T10:37:14.724Z",
            "uuid_ts=2026-11-28T10:37:15Z",
            r#"event="order_completed""#,
            r#"event_text="Order Completed""#,
            r#"context_ip="1.2.3.4""#,
            r#"context_library_name="analytics.js""#,
            r#"context_library_version="2.1""#,
        ]
    );
    let own = table(&plan, "order_completed");
    let row = rows(own).remove(0);
    for expected in [
        "revenue=19.99",
        "count=2",
        "paid=true",
        "when=2026-01-01T00:00:00Z",
        r#"tags="[\"a\",\"b\"]""#,
        r#"address_city="Paris""#,
    ] {
        assert!(row.contains(&expected.to_owned()), "{expected} not in {row:?}");
    }
    assert!(!row.iter().any(|v| v.starts_with("gone")), "nulls create nothing");
    let types = types(own);
    for expected in
        [("revenue", "float"), ("count", "integer"), ("paid", "boolean"), ("when", "timestamp"), ("tags", "text")]
    {
        assert!(types.contains(&(expected.0.to_owned(), expected.1)), "{expected:?} not in {types:?}");
    }
}

#[test]
fn values_that_do_not_fit_go_to_discards_and_integers_widen() {
    let mut schema = Schema::default();
    let columns = [
        ("id", ColumnType::Text),
        ("count", ColumnType::Integer),
        ("paid", ColumnType::Boolean),
        ("note", ColumnType::Text),
    ];
    let mut existing = TableSchema::default();
    for (c, t) in fixed_columns("signed_up", TableKind::Events).into_iter().chain(columns) {
        existing.columns.insert(c.to_owned(), t);
    }
    schema.tables.insert("signed_up".to_owned(), existing.clone());
    schema.tables.insert("tracks".to_owned(), existing);
    let events = [track("m1", "Signed Up", r#"{"count": 2.5, "paid": "maybe", "note": 7, "fresh": 1}"#)];
    let plan = plan("web", &events, &schema, now());
    let own = table(&plan, "signed_up");
    assert!(!own.create);
    assert_eq!(own.widen, ["count"]);
    assert!(own.add.contains(&("fresh".to_owned(), ColumnType::Integer)), "{:?}", own.add);
    assert!(own.add.iter().all(|(c, _)| c == "fresh" || c.starts_with("context_")), "{:?}", own.add);
    let row = rows(own).remove(0);
    assert!(row.contains(&"count=2.5".to_owned()), "{row:?}");
    assert!(row.contains(&r#"note="7""#.to_owned()), "a number fits a text column: {row:?}");
    assert!(!row.iter().any(|v| v.starts_with("paid")), "{row:?}");
    let discards = table(&plan, "discards");
    assert!(discards.create);
    assert_eq!(
        rows(discards),
        [[
            r#"message_id="m1""#,
            r#"table_name="signed_up""#,
            r#"column_name="paid""#,
            r#"value="\"maybe\"""#,
            r#"expected_type="boolean""#,
            r#"reason="type_mismatch""#,
            "received_at=2026-11-28T10:37:14.899Z",
            "uuid_ts=2026-11-28T10:37:15Z",
        ]]
    );
}

#[test]
fn within_one_batch_the_first_value_decides_and_integers_still_widen() {
    let events =
        [track("m1", "E", r#"{"n": 1, "s": "x", "b": true}"#), track("m2", "E", r#"{"n": 1.5, "s": 2, "b": "nope"}"#)];
    let plan = plan("web", &events, &Schema::default(), now());
    let own = table(&plan, "e");
    assert!(own.create && own.widen.is_empty(), "a new table is created with the wider type");
    let types = types(own);
    assert!(types.contains(&("n".to_owned(), "float")), "{types:?}");
    assert!(types.contains(&("s".to_owned(), "text")), "{types:?}");
    assert_eq!(rows(table(&plan, "discards")).len(), 1);
}

#[test]
fn reserved_names_step_aside_and_duplicates_are_discarded() {
    let events =
        [track("m1", "E", r#"{"userId": "x", "id": 5, "user_name": "a", "userName": "b", "context_ip": "c"}"#)];
    let plan = plan("web", &events, &Schema::default(), now());
    let row = rows(table(&plan, "e")).remove(0);
    for expected in [r#"_user_id="x""#, "_id=5", r#"user_name="a""#, r#"_context_ip="c""#, r#"user_id="u1""#] {
        assert!(row.contains(&expected.to_owned()), "{expected} not in {row:?}");
    }
    let discards = rows(table(&plan, "discards"));
    assert_eq!(discards.len(), 1);
    assert!(discards[0].contains(&r#"reason="duplicate_column""#.to_owned()), "{discards:?}");
    assert!(discards[0].contains(&r#"value="\"b\"""#.to_owned()), "{discards:?}");
}

#[test]
fn injection_shaped_names_become_harmless() {
    let events = [track(
        "m1",
        "\"; drop table users; --",
        r#"{"a\"; delete from tracks; --": 1, "Robert'); DROP TABLE students;--": 2}"#,
    )];
    let plan = plan("web", &events, &Schema::default(), now());
    let own = table(&plan, "drop_table_users");
    let names: Vec<&str> = own.columns.iter().map(|(c, _)| c.as_str()).collect();
    assert!(names.contains(&"a_delete_from_tracks"), "{names:?}");
    assert!(names.contains(&"robert_drop_table_students"), "{names:?}");
    for (name, _) in plan.tables.iter().flat_map(|t| &t.columns) {
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
    }
}

#[test]
fn identifies_fold_into_one_users_row_newest_first() {
    let events = [
        identify("m1", "2026-11-28T10:00:00.000Z", r#"{"email": "new@example.com", "plan": "pro"}"#),
        identify("m2", "2026-11-28T09:00:00.000Z", r#"{"email": "old@example.com", "age": 41}"#),
    ];
    let plan = plan("web", &events, &Schema::default(), now());
    assert_eq!(table(&plan, "identifies").rows.len(), 2);
    let users = table(&plan, "users");
    assert_eq!(
        rows(users),
        [[
            r#"id="u1""#,
            "received_at=2026-11-28T10:00:00Z",
            "uuid_ts=2026-11-28T10:37:15Z",
            r#"email="new@example.com""#,
            r#"plan="pro""#,
            "age=41",
        ]]
    );
    assert_eq!(users.rows[0].event, 0, "the row follows its newest identify");
}

#[test]
fn every_call_type_has_its_table() {
    let common = r#""userId":"u1","receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"web""#;
    let events = [
        event(&format!(
            r#"{{"type":"page","messageId":"p","name":"Home","category":"Docs","properties":{{"path":"/","name":"Home","category":"Other"}},{common}}}"#
        )),
        event(&format!(r#"{{"type":"screen","messageId":"s","name":"Cart",{common}}}"#)),
        event(&format!(r#"{{"type":"group","messageId":"g","groupId":"acme","traits":{{"employees":30}},{common}}}"#)),
        event(&format!(r#"{{"type":"alias","messageId":"a","previousId":"anon-1",{common}}}"#)),
    ];
    let plan = plan("web", &events, &Schema::default(), now());
    assert!(rows(table(&plan, "pages"))[0].contains(&r#"path="/""#.to_owned()));
    assert!(rows(table(&plan, "pages"))[0].contains(&r#"category="Docs""#.to_owned()));
    assert!(rows(table(&plan, "screens"))[0].contains(&r#"name="Cart""#.to_owned()));
    assert!(rows(table(&plan, "groups"))[0].contains(&r#"group_id="acme""#.to_owned()));
    assert!(rows(table(&plan, "groups"))[0].contains(&"employees=30".to_owned()));
    assert!(rows(table(&plan, "aliases"))[0].contains(&r#"previous_id="anon-1""#.to_owned()));
    // `properties.name` repeats the page name: no conflict; a different category is one.
    let discards = rows(table(&plan, "discards"));
    assert_eq!(discards.len(), 1, "{discards:?}");
    assert!(discards[0].contains(&r#"column_name="category""#.to_owned()), "{discards:?}");
}

#[test]
fn columns_beyond_the_limit_are_discarded() {
    let properties: Vec<String> = (0..MAX_COLUMNS + 5).map(|i| format!("\"p{i}\": {i}")).collect();
    let events = [track("m1", "Wide", &format!("{{{}}}", properties.join(",")))];
    let plan = plan("web", &events, &Schema::default(), now());
    assert_eq!(table(&plan, "wide").columns.len(), MAX_COLUMNS);
    let discards = rows(table(&plan, "discards"));
    assert!(discards.len() > 5 && discards.iter().all(|d| d.contains(&r#"reason="column_limit""#.to_owned())));
}

#[test]
fn nul_bytes_are_replaced_and_the_original_kept() {
    let events = [track("m1", "E", r#"{"s": "a\u0000b"}"#)];
    let plan = plan("web", &events, &Schema::default(), now());
    assert!(rows(table(&plan, "e"))[0].contains(&"s=\"a\u{fffd}b\"".to_owned()));
    let discards = rows(table(&plan, "discards"));
    assert!(discards[0].contains(&r#"reason="nul_replaced""#.to_owned()), "{discards:?}");
}

#[test]
fn timestamps_in_strings_are_recognised_strictly() {
    assert!(as_time("2026-01-01T00:00:00Z").is_some());
    assert!(as_time("2026-01-01T00:00:00.123+02:00").is_some());
    assert!(as_time("2026-01-01 00:00:00").is_some());
    assert!(as_time("2026-01-01").is_none());
    assert!(as_time("hello").is_none());
    assert!(as_time("2026-13-01T00:00:00Z").is_none());
}
