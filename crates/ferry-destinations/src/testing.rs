//! Fixtures for tests (feature `test-util`): the events real Segment libraries sent.

use std::path::Path;
use std::sync::Arc;

use crate::Event;

/// The stored events of every real-client capture (`ferry-event/tests/expected/*.json`,
/// the accepted items of each, in file order), as a destination receives them.
pub fn real_client_events() -> Vec<Arc<Event>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ferry-event/tests/expected");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut paths: Vec<_> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut events = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let outcomes: Vec<serde_json::Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not json: {e}", path.display()));
        for outcome in outcomes {
            for event in outcome["accepted"].as_array().cloned().unwrap_or_default() {
                let event = Event::decode(event.to_string().as_bytes()).expect("an accepted item is a stored event");
                events.push(Arc::new(event));
            }
        }
    }
    events
}
