//! The stored event: the one JSON object per accepted event that goes to the log, written
//! by `encode` and read back by destinations as an [`Event`].
//!
//! Members in this order (absent ones left out):
//! `type`, `messageId`, `userId`, `anonymousId`, `event`, `name`, `category`, `groupId`,
//! `previousId`, `properties`, `traits`, `context`, `integrations` (always; `{}` when none),
//! `channel`, `originalTimestamp`, `sentAt`, `timestamp`, `receivedAt`, `version` (2),
//! `sourceId`, `_ferry` (only with warnings: `{"warnings": [{"code", "field", "message"}]}`),
//! then every other member as sent (`_metadata`, `options`, ...; the last of duplicate
//! keys). `writeKey` is never stored; a caller's `sourceId`, `_ferry`, `receivedAt` and
//! `version` are replaced. `messageId` is the caller's, else one from
//! [`Ctx::new_message_id`](crate::Ctx::new_message_id). Sub-objects (`properties`,
//! `traits`, `context`, unknown members) are copied byte for byte, except for the edits
//! named here.
//!
//! Times are UTC ISO-8601 with milliseconds (`2026-11-28T10:37:14.724Z`; finer precision is
//! truncated). `originalTimestamp` is the caller's `timestamp` (or, without one, its
//! `originalTimestamp`); `sentAt` is the item's or the envelope's;
//! `timestamp = receivedAt − (sentAt − originalTimestamp)` when both are known, else
//! `originalTimestamp`, else `receivedAt`.
//!
//! Batch-envelope `sentAt`, `context` and `integrations` apply to items lacking their own;
//! objects are merged key by key at their top level, the item's keys winning.
//! `context.ip` is set from [`Ctx::client_ip`](crate::Ctx::client_ip) (as the first member
//! of `context`) when `context` has no `ip` and the event is client-side: a browser or
//! mobile library in `context.library.name` (see `channel`), or `context.direct: true`.
//! `channel`, when not sent, is `browser` (analytics.js and other JavaScript browser
//! libraries), `mobile` (analytics-ios, -android, -react-native, -kotlin, -swift, -flutter,
//! -xamarin) or `server` (anything else, or no library).

mod decode;
mod encode;

pub use decode::{DecodeError, Event, integrations_allow};
pub(crate) use encode::encode;
