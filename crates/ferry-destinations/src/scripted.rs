//! A destination whose outcomes a test decides, recording every batch it was sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{BoxFuture, Destination, Event, Outcome};

type Script = dyn Fn(&Event, usize) -> Outcome + Send + Sync;

/// Each event's outcome comes from `script(event, attempt)`, where `attempt` counts the
/// times this destination was sent that message id before (0 the first time).
pub struct Scripted {
    script: Box<Script>,
    delay: Duration,
    follows_integrations: bool,
    stable_batches: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    batches: Vec<Vec<Arc<Event>>>,
    times: Vec<std::time::Instant>,
    attempts: std::collections::HashMap<String, usize>,
}

impl Scripted {
    /// A destination answering with `script`.
    pub fn new(script: impl Fn(&Event, usize) -> Outcome + Send + Sync + 'static) -> Scripted {
        Scripted {
            script: Box::new(script),
            delay: Duration::ZERO,
            follows_integrations: true,
            stable_batches: false,
            state: Mutex::default(),
        }
    }

    /// A destination that delivers everything.
    pub fn accepting() -> Scripted {
        Scripted::new(|_, _| Outcome::Delivered)
    }

    /// Take this long over every batch (a slow destination).
    pub fn with_delay(mut self, delay: Duration) -> Scripted {
        self.delay = delay;
        self
    }

    /// Ignore `integrations`, as warehouses do.
    pub fn ignoring_integrations(mut self) -> Scripted {
        self.follows_integrations = false;
        self
    }

    /// Ask for stable batches, as file destinations do.
    pub fn with_stable_batches(mut self) -> Scripted {
        self.stable_batches = true;
        self
    }

    /// Every batch sent so far.
    pub fn batches(&self) -> Vec<Vec<Arc<Event>>> {
        self.state.lock().map(|s| s.batches.clone()).unwrap_or_default()
    }

    /// When each batch arrived.
    pub fn times(&self) -> Vec<std::time::Instant> {
        self.state.lock().map(|s| s.times.clone()).unwrap_or_default()
    }

    /// The message ids of every event sent so far, in order, repeats included.
    pub fn sent_ids(&self) -> Vec<String> {
        self.batches().iter().flatten().map(|e| e.message_id.clone()).collect()
    }
}

impl Destination for Scripted {
    fn follows_integrations(&self) -> bool {
        self.follows_integrations
    }

    fn needs_stable_batches(&self) -> bool {
        self.stable_batches
    }

    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let Ok(mut state) = self.state.lock() else {
                return vec![Outcome::retry("scripted destination poisoned"); events.len()];
            };
            state.batches.push(events.to_vec());
            state.times.push(std::time::Instant::now());
            events
                .iter()
                .map(|event| {
                    let attempt = state.attempts.entry(event.message_id.clone()).or_default();
                    let outcome = (self.script)(event, *attempt);
                    *attempt += 1;
                    outcome
                })
                .collect()
        })
    }
}
