//! Delivery: each configured destination gets a [`Worker`] with its own durable cursor on
//! the log. A worker reads batches (by count, bytes and time), routes them by the
//! `integrations` switchboard, sends them, retries what the destination asks to retry
//! (exponential backoff with jitter, honouring `Retry-After`) until the maximum age, and
//! dead-letters what is refused or runs out of time, before it moves its cursor. Delivery
//! is at-least-once; idempotent destinations make the effect exactly-once.
//!
//! - [`worker`]: the per-destination loop.
//! - [`dead_letter`]: the durable, inspectable dead letter store.
//! - [`replay`]: re-sending a time range of the log, and redriving dead letters.
//! - [`retry`]: the backoff schedule.
//! - [`feed`]: the log as workers see it.

pub mod dead_letter;
pub mod feed;
pub mod replay;
pub mod retry;
pub mod worker;

pub use dead_letter::{DeadLetter, DeadLetters, Filter};
pub use feed::{Feed, Lease, Leased, LogView, SharedFeed};
pub use replay::{Progress, ReplayRequest, redrive, replay};
pub use retry::Backoff;
pub use worker::{Start, Worker, WorkerConfig, WorkerStatus, batch_cursor_name, cursor_name};
