//! The quarantine record of a rejected item: one JSON object,
//! `{"receivedAt", "sourceId", "index", "code", "message", "field", "messageId", "item"}`,
//! `field` and `messageId` `null` when unknown, `item` the item's JSON as received (a batch
//! item's members as sent, re-joined without the whitespace between them).

use std::borrow::Cow;

use ferry_wire::{Kind, as_str, kind};

use crate::decode::Item;
use crate::{Rejected, Shared, json};

/// The caller's message id of a rejected item, when it has a usable one to report it by.
pub(crate) fn message_id(item: &Item<'_>) -> Option<String> {
    let raw = item.fields.as_ref()?.get("messageId")?;
    match kind(raw) {
        Kind::String => as_str(raw).map(Cow::into_owned),
        Kind::Number => Some(raw.get().to_owned()),
        _ => None,
    }
}

/// The quarantine record of a rejected item.
pub(crate) fn record(item: &Item<'_>, rejected: &Rejected, shared: &Shared<'_, '_>) -> Vec<u8> {
    let Rejected { index, message_id, rejection } = rejected;
    let raw_item = item.json();
    json::object(raw_item.len() + 256, |w| {
        w.string("receivedAt", shared.received_at_text);
        w.string("sourceId", shared.source_id);
        w.raw("index", &index.to_string());
        w.string("code", rejection.code());
        w.string("message", &rejection.to_string());
        match rejection.field() {
            Some(field) => w.string("field", field),
            None => w.raw("field", "null"),
        }
        match message_id.as_deref() {
            Some(id) => w.string("messageId", id),
            None => w.raw("messageId", "null"),
        }
        w.raw("item", &raw_item);
    })
}
