//! Encoding: a valid, enriched event becomes the stored event's JSON, in one pass and one
//! buffer.

use std::collections::HashSet;

use ferry_wire::Raw;

use crate::Shared;
use crate::enrich::{Enriched, Warning};
use crate::json::{self, Writer};
use crate::validate::{Member, Valid};

/// The stored event of `valid` as enriched, with its message id.
pub(crate) fn encode(
    valid: &Valid<'_, '_>,
    enriched: &Enriched<'_>,
    message_id: &str,
    shared: &Shared<'_, '_>,
) -> Vec<u8> {
    let known = &valid.known;
    json::object(valid.size + 256, |w| {
        w.plain("type", valid.call.as_str());
        w.string("messageId", message_id);
        if let Some(id) = &valid.user_id {
            w.string("userId", id);
        }
        if let Some(id) = &valid.anonymous_id {
            w.string("anonymousId", id);
        }
        // `event`, `groupId` and `previousId` are checked only for the call that needs them;
        // on any other call they pass through as sent.
        if let Some(raw) = valid.event.or_else(|| known.get(Member::Event)) {
            w.raw("event", raw.get());
        }
        for (key, name) in [("name", Member::Name), ("category", Member::Category)] {
            if let Some(raw) = known.get(name) {
                w.raw(key, raw.get());
            }
        }
        for (key, checked, name) in
            [("groupId", &valid.group_id, Member::GroupId), ("previousId", &valid.previous_id, Member::PreviousId)]
        {
            match (checked, known.get(name)) {
                (Some(id), _) => w.string(key, id),
                (None, Some(raw)) => w.raw(key, raw.get()),
                (None, None) => {}
            }
        }
        if let Some(raw) = &enriched.properties {
            w.raw("properties", raw);
        }
        if let Some(raw) = known.get(Member::Traits) {
            w.raw("traits", raw.get());
        }
        match (&enriched.context, enriched.add_ip) {
            (Some(raw), Some(ip)) => w.object_with_ip("context", raw, ip),
            (Some(raw), None) => w.raw("context", raw),
            (None, _) => {}
        }
        w.raw("integrations", enriched.integrations.as_deref().unwrap_or("{}"));
        match known.get(Member::Channel) {
            Some(raw) => w.raw("channel", raw.get()),
            None => w.plain("channel", enriched.channel),
        }
        if let Some(original) = valid.original {
            w.time("originalTimestamp", original);
        }
        if let Some(sent) = valid.sent_at {
            w.time("sentAt", sent);
        }
        w.time("timestamp", enriched.timestamp);
        w.plain("receivedAt", shared.received_at_text);
        w.raw("version", "2");
        w.string("sourceId", shared.source_id);
        if !enriched.warnings.is_empty() {
            w.raw("_ferry", &warnings_json(&enriched.warnings));
        }
        write_passthrough(w, &valid.fields.members);
    })
}

/// Write the members the stored event does not handle itself, as sent; of duplicate
/// keys only the last, at its place.
fn write_passthrough(w: &mut Writer<'_>, members: &[(std::borrow::Cow<'_, str>, Raw<'_>)]) {
    let unknown = |key: &str| Member::of(key).is_none();
    if members.len() <= 64 {
        // Few members: a scan of the later ones beats hashing.
        for (i, (key, raw)) in members.iter().enumerate() {
            if unknown(key) && !members[i + 1..].iter().any(|(later, _)| later == key) {
                w.member(key, raw.get());
            }
        }
        return;
    }
    let mut seen = HashSet::new();
    let mut last: Vec<_> = members.iter().rev().filter(|(key, _)| unknown(key) && seen.insert(key.as_ref())).collect();
    last.reverse();
    for (key, raw) in last {
        w.member(key, raw.get());
    }
}

fn warnings_json(warnings: &[Warning]) -> String {
    let list: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| serde_json::json!({ "code": w.code(), "message": w.to_string(), "field": w.field() }))
        .collect();
    serde_json::json!({ "warnings": list }).to_string()
}
