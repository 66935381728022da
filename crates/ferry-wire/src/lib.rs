//! Segment JSON shapes as client libraries send them, decoded leniently.
//!
//! SKELETON: the helper owning this crate replaces this file.

/// The call type a route or an item names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

/// What the request path says about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/track`, `/v1/t`, ...: the body is one call of this type.
    Single(CallType),
    /// `/v1/batch`, `/v1/import`, `/v1/b`: the body is a batch envelope.
    Batch,
}
