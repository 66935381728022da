//! The debugger: `GET /debugger`, a page served from the binary itself (no build step),
//! and `GET /debugger/stream`, the live feed behind it as server-sent events (the tap:
//! lossy and bounded, so a slow or stalled browser never slows the pipeline). Filters in
//! the query string (`source`, `type`, `event`, `user`, `text`) are applied on the server
//! too, for `ferry tail`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

use crate::AppState;
use ferry_tap::{Observation, RecvError};

/// The page: HTML, CSS and JavaScript in one file.
const PAGE: &str = include_str!("debugger.html");

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/debugger", get(page)).route("/debugger/stream", get(stream_events))
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], PAGE).into_response()
}

/// Filters of the stream; every given one must match (case-insensitive substrings).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct Filters {
    source: Option<String>,
    #[serde(rename = "type")]
    call: Option<String>,
    event: Option<String>,
    user: Option<String>,
    text: Option<String>,
    /// Accepted with the token check; not a filter.
    #[allow(dead_code)]
    token: Option<String>,
}

impl Filters {
    fn any(&self) -> bool {
        self.source.is_some()
            || self.call.is_some()
            || self.event.is_some()
            || self.user.is_some()
            || self.text.is_some()
    }

    /// The observation with only what matches; `None` when nothing does.
    fn apply(&self, observation: &Observation) -> Option<Observation> {
        if !self.any() {
            return Some(observation.clone());
        }
        let has = |value: Option<&str>, wanted: &Option<String>| {
            wanted.as_ref().is_none_or(|w| value.is_some_and(|v| v.to_lowercase().contains(&w.to_lowercase())))
        };
        match observation {
            Observation::Request(request) => {
                if !has(Some(&request.source), &self.source) {
                    return None;
                }
                let mut request = request.clone();
                request.events.retain(|e| {
                    has(Some(&e.call), &self.call)
                        && has(e.event.as_deref(), &self.event)
                        && (self.user.is_none()
                            || has(e.user_id.as_deref(), &self.user)
                            || has(e.anonymous_id.as_deref(), &self.user))
                        && has(Some(&e.raw), &self.text)
                });
                // Rejected items match on their text only.
                request.rejected.retain(|r| {
                    self.call.is_none() && self.event.is_none() && self.user.is_none() && has(Some(&r.item), &self.text)
                });
                (!request.events.is_empty() || !request.rejected.is_empty()).then_some(Observation::Request(request))
            }
            // Delivery outcomes are joined by message id on the page; they pass.
            Observation::Delivery(_) => Some(observation.clone()),
        }
    }
}

fn sse(observation: &Observation) -> SseEvent {
    let name = match observation {
        Observation::Request(_) => "request",
        Observation::Delivery(_) => "delivery",
    };
    SseEvent::default().event(name).data(serde_json::to_string(observation).unwrap_or_default())
}

async fn stream_events(
    State(state): State<AppState>,
    Query(filters): Query<Filters>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (recent, receiver) = state.inner.tap.subscribe();
    let filters = Arc::new(filters);
    let first = filters.clone();
    let history = stream::iter(recent.into_iter().filter_map(move |o| first.apply(&o).map(|o| Ok(sse(&o)))));
    let live = stream::unfold((receiver, filters), |(mut receiver, filters)| async move {
        loop {
            match receiver.recv().await {
                Ok(observation) => {
                    if let Some(observation) = filters.apply(&observation) {
                        return Some((Ok(sse(&observation)), (receiver, filters)));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let event = SseEvent::default().event("lagged").data(format!("{{\"missed\":{missed}}}"));
                    return Some((Ok(event), (receiver, filters)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(history.chain(live)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_tap::{EventSeen, RejectedSeen, RequestSeen};

    fn event(id: &str, call: &str, name: Option<&str>, user: Option<&str>, anonymous: Option<&str>) -> EventSeen {
        EventSeen {
            message_id: id.to_owned(),
            call: call.to_owned(),
            event: name.map(str::to_owned),
            user_id: user.map(str::to_owned),
            anonymous_id: anonymous.map(str::to_owned),
            raw: format!(r#"{{"messageId":"{id}","note":"raw-{id}"}}"#),
            stored: String::new(),
            warnings: Vec::new(),
            duplicate: false,
        }
    }

    fn request() -> Observation {
        Observation::Request(RequestSeen {
            at: "2026-12-01T10:00:00.000Z".to_owned(),
            source: "web".to_owned(),
            route: "/v1/batch".to_owned(),
            events: vec![
                event("a", "track", Some("Order Completed"), Some("u1"), None),
                event("b", "page", None, None, Some("anon-7")),
                event("c", "identify", None, Some("U2"), None),
            ],
            omitted: 0,
            rejected: vec![RejectedSeen {
                index: 3,
                message_id: Some("d".to_owned()),
                code: "missing_field".to_owned(),
                message: "`event` is required".to_owned(),
                field: Some("event".to_owned()),
                item: r#"{"type":"track","note":"broken"}"#.to_owned(),
            }],
        })
    }

    fn ids(filters: &Filters) -> Option<Vec<String>> {
        match filters.apply(&request())? {
            Observation::Request(r) => Some(
                r.events
                    .iter()
                    .map(|e| e.message_id.clone())
                    .chain(r.rejected.iter().map(|r| format!("rejected:{}", r.item)))
                    .collect(),
            ),
            Observation::Delivery(_) => unreachable!(),
        }
    }

    fn filters(query: &str) -> Filters {
        serde_json::from_value(serde_json::Value::Object(
            url_pairs(query).into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect(),
        ))
        .unwrap()
    }

    fn url_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn filters_keep_only_what_matches_case_insensitively() {
        assert_eq!(ids(&filters("")).unwrap().len(), 4, "no filter passes everything");
        assert_eq!(ids(&filters("token=x")).unwrap().len(), 4, "the token is no filter");
        assert_eq!(ids(&filters("event=order")).unwrap(), ["a"]);
        assert_eq!(ids(&filters("type=page")).unwrap(), ["b"]);
        assert_eq!(ids(&filters("user=ANON")).unwrap(), ["b"], "user matches anonymousId too");
        assert_eq!(ids(&filters("user=u2")).unwrap(), ["c"]);
        assert_eq!(ids(&filters("text=broken")).unwrap(), [r#"rejected:{"type":"track","note":"broken"}"#]);
        assert_eq!(ids(&filters("source=WE&event=order")).unwrap(), ["a"]);
        assert_eq!(ids(&filters("source=ios")), None, "another source: nothing at all");
        assert_eq!(ids(&filters("event=nothing")), None);
    }
}
