//! Mixpanel, Amplitude and Google Analytics 4 against local stand-ins that check what
//! the real APIs check (`ferry_destinations::standins`): the real-client captures become
//! the expected requests, revenue becomes each tool's revenue, and 429 / 5xx / 400
//! become retries and rejections.

use std::sync::Arc;
use std::time::Duration;

use ferry_destinations::amplitude::{Amplitude, AmplitudeConfig};
use ferry_destinations::ga4::{Ga4, Ga4Config};
use ferry_destinations::mixpanel::{Mixpanel, MixpanelConfig};
use ferry_destinations::standins;
use ferry_destinations::testing::real_client_events;
use ferry_destinations::{Destination, Event, Outcome};
use serde_json::{Value, json};

fn event(json: Value) -> Arc<Event> {
    Arc::new(Event::decode(json.to_string().as_bytes()).unwrap())
}

fn order(id: &str, properties: Value) -> Arc<Event> {
    event(
        json!({"type": "track", "messageId": id, "userId": "user_1", "anonymousId": "anon-1", "event": "Order Completed",
        "properties": properties, "timestamp": "2026-11-28T10:00:00.000Z", "receivedAt": "2026-11-28T10:00:00.000Z", "sourceId": "web"}),
    )
}

fn mixpanel_at(url: &str) -> Mixpanel {
    Mixpanel::new(MixpanelConfig {
        api_url: url.into(),
        project_token: "tok".into(),
        service_account: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_gets_every_real_client_event_with_transactions_and_profiles() {
    let stand_in = standins::mixpanel("tok").await;
    let events = real_client_events();
    let outcomes = mixpanel_at(&stand_in.url).send(&events).await;
    for (event, outcome) in events.iter().zip(&outcomes) {
        assert!(matches!(outcome, Outcome::Delivered | Outcome::Skipped { .. }), "{}: {outcome:?}", event.json());
    }
    let imported = stand_in.accepted("/import");
    let tracks = events.iter().filter(|e| e.kind.as_str() == "track").count();
    let pages = events.iter().filter(|e| matches!(e.kind.as_str(), "page" | "screen")).count();
    let names: Vec<&str> = imported.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| !n.starts_with('$') && !n.starts_with("Loaded")).count(), tracks);
    assert_eq!(names.iter().filter(|n| n.starts_with("Loaded")).count(), pages);
    assert!(names.contains(&"$create_alias") && names.contains(&"Mixpanel Only"), "{names:?}");
    // The EUR order: a People transaction of 19.99 for its user, and the event kept its currency.
    let orders: Vec<&Value> = imported.iter().filter(|e| e["event"] == "Order Completed").collect();
    assert!(orders.iter().all(|o| o["properties"]["currency"] == "EUR" && o["properties"]["revenue"] == 19.99));
    let engaged = stand_in.accepted("/engage");
    let transactions: Vec<&Value> = engaged.iter().filter(|u| u.get("$append").is_some()).collect();
    assert!(!transactions.is_empty());
    for t in &transactions {
        assert_eq!(t["$append"]["$transactions"]["$amount"], 19.99);
        assert!(t["$append"]["$transactions"]["$time"].as_str().unwrap().starts_with("2026-11-28T"));
    }
    let profiles: Vec<&Value> = engaged.iter().filter(|u| u.get("$set").is_some()).collect();
    assert!(profiles.iter().any(|p| p["$set"]["$email"] == "peter@example.com"), "{profiles:?}");
    // Every event kept the message id as its dedupe key (hashed to Mixpanel's 36 characters).
    let ids: std::collections::HashSet<&str> =
        imported.iter().map(|e| e["properties"]["$insert_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), imported.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixpanel_revenue_without_currency_is_usd_and_failures_map_to_outcomes() {
    let stand_in = standins::mixpanel("tok").await;
    let mixpanel = mixpanel_at(&stand_in.url);
    assert_eq!(mixpanel.send(&[order("o1", json!({"revenue": 5}))]).await, [Outcome::Delivered]);
    assert_eq!(stand_in.accepted("/import")[0]["properties"]["currency"], "USD");
    stand_in.force(&[(429, Some(11))]);
    let outcome = mixpanel.send(&[order("o2", json!({}))]).await.remove(0);
    assert!(matches!(&outcome, Outcome::Retry { after: Some(a), .. } if *a == Duration::from_secs(11)), "{outcome:?}");
    stand_in.force(&[(503, None)]);
    assert!(matches!(mixpanel.send(&[order("o3", json!({}))]).await[0], Outcome::Retry { .. }));
    // A placeholder distinct id is refused by strict import: only that event is rejected.
    let bad = event(
        json!({"type": "track", "messageId": "bad", "userId": "null", "event": "E", "receivedAt": "2026-11-28T10:00:00.000Z", "sourceId": "web"}),
    );
    let outcomes = mixpanel.send(&[order("o4", json!({})), bad]).await;
    assert_eq!(outcomes[0], Outcome::Delivered);
    assert!(matches!(&outcomes[1], Outcome::Reject { reason } if reason.contains("distinct_id")), "{outcomes:?}");
    // A wrong token: rejected (fix the configuration, then redrive).
    let wrong = Mixpanel::new(MixpanelConfig {
        api_url: stand_in.url.clone(),
        project_token: "nope".into(),
        service_account: None,
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert!(matches!(wrong.send(&[order("o5", json!({}))]).await[0], Outcome::Reject { .. }));
}

fn amplitude_at(url: &str) -> Amplitude {
    Amplitude::new(AmplitudeConfig { api_url: url.into(), api_key: "key".into(), timeout: Duration::from_secs(5) })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplitude_gets_every_real_client_event_with_revenue_fields() {
    let stand_in = standins::amplitude("key").await;
    let events = real_client_events();
    let outcomes = amplitude_at(&stand_in.url).send(&events).await;
    for (event, outcome) in events.iter().zip(&outcomes) {
        match event.kind.as_str() {
            "group" | "alias" => assert!(matches!(outcome, Outcome::Skipped { .. }), "{outcome:?}"),
            _ => assert_eq!(*outcome, Outcome::Delivered, "{}", event.json()),
        }
    }
    let ingested = stand_in.accepted("/2/httpapi");
    assert_eq!(ingested.len(), events.iter().filter(|e| !matches!(e.kind.as_str(), "group" | "alias")).count());
    let orders: Vec<&Value> = ingested.iter().filter(|e| e["event_type"] == "Order Completed").collect();
    assert!(!orders.is_empty());
    for o in orders {
        assert_eq!((o["revenue"].as_f64(), o["revenueType"].as_str()), (Some(19.99), Some("Purchase")));
        assert_eq!(o["event_properties"]["currency"], "EUR");
    }
    let identifies: Vec<&Value> = ingested.iter().filter(|e| e["event_type"] == "$identify").collect();
    assert!(identifies.iter().any(|i| i["user_properties"]["$set"]["email"] == "peter@example.com"));
    // Sending the same events again: Amplitude drops them by insert_id.
    amplitude_at(&stand_in.url).send(&events).await;
    assert_eq!(stand_in.accepted("/2/httpapi").len(), ingested.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplitude_price_times_quantity_and_failures() {
    let stand_in = standins::amplitude("key").await;
    let amplitude = amplitude_at(&stand_in.url);
    amplitude.send(&[order("o1", json!({"price": 4.0, "quantity": 3, "revenue": 1}))]).await;
    assert_eq!(stand_in.accepted("/2/httpapi")[0]["revenue"], 12.0);
    stand_in.force(&[(429, None)]);
    assert!(matches!(amplitude.send(&[order("o2", json!({}))]).await[0], Outcome::Retry { after: Some(_), .. }));
    stand_in.force(&[(500, None)]);
    assert!(matches!(amplitude.send(&[order("o3", json!({}))]).await[0], Outcome::Retry { .. }));
    // An event Amplitude finds invalid (a reserved event type) is rejected; its
    // neighbour in the request is retried, and goes through on the retry.
    let bad = event(json!({"type": "track", "messageId": "o4", "userId": "user_1", "event": "session_start",
        "receivedAt": "2026-11-28T10:00:00.000Z", "sourceId": "web"}));
    let good = order("o5", json!({"revenue": 2}));
    let outcomes = amplitude.send(&[good.clone(), bad]).await;
    assert!(matches!(&outcomes[0], Outcome::Retry { .. }), "{outcomes:?}");
    assert!(matches!(&outcomes[1], Outcome::Reject { reason } if reason.contains("event_type")), "{outcomes:?}");
    assert_eq!(amplitude.send(&[good]).await, [Outcome::Delivered]);
    let wrong = Amplitude::new(AmplitudeConfig {
        api_url: stand_in.url.clone(),
        api_key: "nope".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert!(matches!(wrong.send(&[order("o6", json!({}))]).await[0], Outcome::Reject { .. }));
}

fn ga4_at(url: &str) -> Ga4 {
    Ga4::new(Ga4Config {
        api_url: url.into(),
        measurement_id: "G-TEST".into(),
        api_secret: "sec".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_gets_valid_measurement_protocol_requests_for_real_client_events() {
    let stand_in = standins::ga4("G-TEST", "sec").await;
    let events = real_client_events();
    let outcomes = ga4_at(&stand_in.url).send(&events).await;
    for (event, outcome) in events.iter().zip(&outcomes) {
        match event.kind.as_str() {
            "identify" | "group" | "alias" => assert!(matches!(outcome, Outcome::Skipped { .. })),
            // The captures' Order Completed has no order_id: GA4 would drop the purchase.
            "track" if event.event.as_deref() == Some("Order Completed") => {
                assert!(
                    matches!(outcome, Outcome::Reject { reason } if reason.contains("transaction_id")),
                    "{outcome:?}"
                )
            }
            _ => assert_eq!(*outcome, Outcome::Delivered, "{}", event.json()),
        }
    }
    assert!(stand_in.problems().is_empty(), "{:?}", stand_in.problems());
    let kept = stand_in.accepted("/mp/collect");
    let names: std::collections::BTreeSet<&str> = kept.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(names.contains("page_view") && names.contains("course_started"), "{names:?}");
    for request in stand_in.requests("/mp/collect") {
        assert!(request["events"].as_array().unwrap().len() <= 25);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ga4_purchase_items_currency_and_failures() {
    let stand_in = standins::ga4("G-TEST", "sec").await;
    let ga4 = ga4_at(&stand_in.url);
    let purchase = order(
        "o1",
        json!({"order_id": "50314b8e", "total": 27.5, "revenue": 25, "currency": "USD",
        "products": [{"product_id": "507f1f77", "sku": "45790-32", "name": "Monopoly: 3rd Edition", "price": 19, "quantity": 1, "category": "Games"}]}),
    );
    assert_eq!(ga4.send(&[purchase]).await, [Outcome::Delivered]);
    let kept = stand_in.accepted("/mp/collect");
    assert_eq!(kept[0]["name"], "purchase");
    assert_eq!(kept[0]["client_id"], "anon-1");
    assert_eq!(kept[0]["user_id"], "user_1");
    assert_eq!(kept[0]["params"]["transaction_id"], "50314b8e");
    assert_eq!(kept[0]["params"]["value"], 27.5);
    assert_eq!(kept[0]["params"]["items"][0]["item_name"], "Monopoly: 3rd Edition");
    let bad_currency = order("o2", json!({"order_id": "x", "total": 1, "currency": "dollars"}));
    assert!(matches!(&ga4.send(&[bad_currency]).await[0], Outcome::Reject { reason } if reason.contains("iso 4217")));
    stand_in.force(&[(503, Some(2))]);
    assert!(matches!(ga4.send(&[order("o3", json!({"order_id": "y"}))]).await[0], Outcome::Retry { .. }));
    assert!(stand_in.problems().is_empty(), "{:?}", stand_in.problems());
}
