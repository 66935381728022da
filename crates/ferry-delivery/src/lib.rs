//! Delivery: each configured destination gets a [`Worker`] reading the log through its
//! own consumer (the log contract's: a durable cursor on the embedded log, a shared
//! durable consumer on JetStream). A worker reads batches (by count, bytes and time), routes them by the
//! `integrations` switchboard, sends them, retries what the destination asks to retry
//! (exponential backoff with jitter, honouring `Retry-After`) until the maximum age, and
//! dead-letters what is refused or runs out of time, before it moves its cursor. Delivery
//! is at-least-once; idempotent destinations make the effect exactly-once.
//!
//! - [`worker`]: the per-destination loop.
//! - [`dead_letter`]: the durable, inspectable dead letter store.
//! - [`replay`]: re-sending a time range of the log, and redriving dead letters.
//! - [`retry`]: the backoff schedule.

pub mod dead_letter;
pub mod replay;
pub mod retry;
pub mod worker;

pub use dead_letter::{DeadLetter, DeadLetters, Filter};
pub use ferry_log_contract::Start;
pub use replay::{Progress, ReplayRequest, redrive, replay};
pub use retry::Backoff;
pub use worker::{Worker, WorkerConfig, WorkerStatus};
