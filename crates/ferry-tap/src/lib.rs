//! The tap: a lossy, bounded feed of what ferry sees — the events of each request (as
//! received and as stored, with warnings), the items it rejected (with the reason), and
//! what each destination made of its batches — for the debugger page and `ferry tail`.
//!
//! It can never slow the pipeline: [`Tap::publish`] does not wait for anyone (a
//! subscriber that falls behind loses the oldest observations and is told how many), it
//! keeps at most [`CAPACITY`] observations for subscribers and [`RECENT`] for a page that
//! opens later, and nothing is built at all while nobody watches ([`Tap::watched`]).
//!
//! Its memory is bounded in bytes too: a request shows at most about [`REQUEST_BYTES`]
//! of items (the rest of a large batch is counted in `omitted`), and a delivery at most
//! [`MAX_DELIVERY_IDS`] message ids, so the feed holds at most about
//! `CAPACITY × REQUEST_BYTES × 2` (raw and stored) = 32 MiB, whatever the traffic. And its
//! CPU: at most [`RATE_BYTES`] of items a second are shown ([`Tap::reserve`]); under
//! heavier traffic the feed is a sample, and what it skipped is counted in `omitted`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
pub use tokio::sync::broadcast::error::RecvError;

/// Observations a subscriber may fall behind by before it loses the oldest.
pub const CAPACITY: usize = 256;
/// Observations kept for a page that opens later (the newest of those above).
pub const RECENT: usize = 100;
/// The items of one request are shown until they add up to this many bytes as sent.
pub const REQUEST_BYTES: usize = 64 * 1024;
/// A delivery names at most this many message ids (the rest are counted).
pub const MAX_DELIVERY_IDS: usize = 1000;
/// Bytes of items (as sent) shown per second, over all requests.
pub const RATE_BYTES: usize = 1024 * 1024;
/// A request item shown in the debugger is cut to this many bytes.
pub const MAX_ITEM_BYTES: usize = 16 * 1024;

/// One thing ferry saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A request's events and rejected items.
    Request(RequestSeen),
    /// A batch a destination completed.
    Delivery(DeliverySeen),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSeen {
    /// When ferry received it (ISO-8601).
    pub at: String,
    pub source: String,
    /// The route it came in on (`/v1/batch`, `/v1/t`, ...).
    pub route: String,
    pub events: Vec<EventSeen>,
    pub rejected: Vec<RejectedSeen>,
    /// Items not shown: this request's past [`REQUEST_BYTES`], and those of requests
    /// skipped since the last observation because of [`RATE_BYTES`].
    pub omitted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventSeen {
    #[serde(rename = "messageId")]
    pub message_id: String,
    #[serde(rename = "type")]
    pub call: String,
    pub event: Option<String>,
    #[serde(rename = "userId")]
    pub user_id: Option<String>,
    #[serde(rename = "anonymousId")]
    pub anonymous_id: Option<String>,
    /// The item as the client sent it (cut to [`MAX_ITEM_BYTES`]).
    pub raw: String,
    /// The stored, enriched event.
    pub stored: String,
    pub warnings: Vec<Warning>,
    /// Already stored within the dedupe window: this copy was not stored again.
    pub duplicate: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Warning {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedSeen {
    pub index: usize,
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
    /// The item as received (cut to [`MAX_ITEM_BYTES`]).
    pub item: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverySeen {
    pub at: String,
    pub destination: String,
    /// `delivered`, `filtered`, `skipped`, `retrying` or `dead_lettered`.
    pub outcome: String,
    /// At most [`MAX_DELIVERY_IDS`] of them.
    #[serde(rename = "messageIds")]
    pub message_ids: Vec<String>,
    /// Events of the batch with this outcome past [`MAX_DELIVERY_IDS`].
    pub omitted: usize,
    pub error: Option<String>,
}

/// The feed.
pub struct Tap {
    sender: broadcast::Sender<Arc<Observation>>,
    recent: Mutex<VecDeque<Arc<Observation>>>,
    /// Live subscriptions; an atomic, so the hot path's [`Tap::watched`] takes no lock.
    watchers: Arc<AtomicUsize>,
    /// The second [`Tap::reserve`] counts bytes in, since `started`, and the bytes given.
    started: Instant,
    second: AtomicU64,
    given: AtomicUsize,
    /// Items skipped since the last published request.
    skipped: AtomicUsize,
    /// Somebody watches on another node (cluster mode): build observations and forward them.
    remote: AtomicBool,
    /// Observations made in this process, for the forwarder to other nodes.
    local: broadcast::Sender<Arc<Observation>>,
}

/// A live subscription; dropping it stops the watching.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<Observation>>,
    watchers: Arc<AtomicUsize>,
}

impl Subscription {
    /// The next observation; [`RecvError::Lagged`] says how many were lost by falling
    /// behind, [`RecvError::Closed`] that the tap is gone.
    pub async fn recv(&mut self) -> Result<Arc<Observation>, RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap").field("watchers", &self.watchers.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Default for Tap {
    fn default() -> Self {
        Tap::new()
    }
}

impl Tap {
    pub fn new() -> Tap {
        let (sender, _) = broadcast::channel(CAPACITY);
        let (local, _) = broadcast::channel(CAPACITY);
        Tap {
            remote: AtomicBool::new(false),
            local,
            sender,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            watchers: Arc::default(),
            started: Instant::now(),
            second: AtomicU64::new(0),
            given: AtomicUsize::new(0),
            skipped: AtomicUsize::new(0),
        }
    }

    /// How many bytes of items a request may show, at most `wanted`: what is left of this
    /// second's [`RATE_BYTES`]. Lock-free; racing requests may overshoot by a request.
    pub fn reserve(&self, wanted: usize) -> usize {
        let now = self.started.elapsed().as_secs();
        let second = self.second.load(Ordering::Relaxed);
        if second != now && self.second.compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.given.store(0, Ordering::Relaxed);
        }
        let given = self.given.fetch_add(wanted, Ordering::Relaxed);
        wanted.min(RATE_BYTES.saturating_sub(given))
    }

    /// Count items not shown at all; the next published request carries the count.
    pub fn skip(&self, items: usize) {
        self.skipped.fetch_add(items, Ordering::Relaxed);
    }

    /// The items skipped since the last call.
    pub fn take_skipped(&self) -> usize {
        self.skipped.swap(0, Ordering::Relaxed)
    }

    /// Whether anyone watches, here or on another node: producers build observations only
    /// then.
    pub fn watched(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0 || self.remote.load(Ordering::Relaxed)
    }

    /// Whether anyone watches in this process.
    pub fn watched_here(&self) -> bool {
        self.watchers.load(Ordering::Relaxed) > 0
    }

    /// Say whether somebody watches on another node (cluster mode).
    pub fn set_watched_elsewhere(&self, watched: bool) {
        self.remote.store(watched, Ordering::Relaxed);
    }

    /// Observations made in this process (not those from other nodes), for forwarding
    /// them; this does not count as watching.
    pub fn forwarded(&self) -> broadcast::Receiver<Arc<Observation>> {
        self.local.subscribe()
    }

    /// Pass an observation on, without waiting for anyone.
    pub fn publish(&self, observation: Observation) {
        if !self.watched() {
            return;
        }
        let observation = Arc::new(observation);
        if self.remote.load(Ordering::Relaxed) {
            let _ = self.local.send(observation.clone());
        }
        self.show(observation);
    }

    /// Show an observation another node made to this node's watchers.
    pub fn publish_from_elsewhere(&self, observation: Observation) {
        self.show(Arc::new(observation));
    }

    fn show(&self, observation: Arc<Observation>) {
        if !self.watched_here() {
            return;
        }
        if let Ok(mut recent) = self.recent.try_lock() {
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(observation.clone());
        }
        // Fails only when nobody listens any more: nothing to do.
        let _ = self.sender.send(observation);
    }

    /// A subscription: what was seen recently (oldest first; only what was published
    /// while somebody watched) and the live feed.
    pub fn subscribe(&self) -> (Vec<Arc<Observation>>, Subscription) {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        let receiver = self.sender.subscribe();
        let recent = self.recent.lock().map(|r| r.iter().cloned().collect()).unwrap_or_default();
        (recent, Subscription { receiver, watchers: self.watchers.clone() })
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes more)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: usize) -> Observation {
        Observation::Delivery(DeliverySeen {
            at: String::new(),
            destination: "d".into(),
            outcome: "delivered".into(),
            message_ids: vec![n.to_string()],
            omitted: 0,
            error: None,
        })
    }

    #[tokio::test]
    async fn nothing_is_kept_while_nobody_watches_and_slow_readers_lose_the_oldest() {
        let tap = Tap::new();
        tap.publish(delivery(0));
        let (recent, mut rx) = tap.subscribe();
        assert!(recent.is_empty(), "nothing was watched before");
        for n in 1..=CAPACITY + 10 {
            tap.publish(delivery(n));
        }
        // The reader fell behind: it is told, and then reads the newest CAPACITY.
        assert!(matches!(rx.recv().await, Err(RecvError::Lagged(10))));
        let Observation::Delivery(first) = &*rx.recv().await.unwrap() else { panic!() };
        assert_eq!(first.message_ids, ["11"]);
        let (recent, second) = tap.subscribe();
        assert_eq!(recent.len(), RECENT);
        assert!(tap.watched());
        drop((rx, second));
        assert!(!tap.watched(), "dropped subscriptions stop the watching");
    }

    #[tokio::test]
    async fn a_watcher_elsewhere_gets_this_nodes_observations_forwarded_but_not_back() {
        let tap = Tap::new();
        let mut forwarded = tap.forwarded();
        tap.publish(delivery(1));
        assert!(!tap.watched());
        tap.set_watched_elsewhere(true);
        assert!(tap.watched() && !tap.watched_here());
        tap.publish(delivery(2));
        let Observation::Delivery(seen) = &*forwarded.recv().await.unwrap() else { panic!() };
        assert_eq!(seen.message_ids, ["2"], "only what was made while somebody watched");
        // What another node forwards is shown here, never forwarded again.
        let (_, mut here) = tap.subscribe();
        tap.publish_from_elsewhere(delivery(3));
        let Observation::Delivery(shown) = &*here.recv().await.unwrap() else { panic!() };
        assert_eq!(shown.message_ids, ["3"]);
        assert!(forwarded.try_recv().is_err());
        // Observations travel between nodes as JSON.
        let json = serde_json::to_string(&delivery(4)).unwrap();
        let back: Observation = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }

    #[test]
    fn reserve_gives_at_most_the_rate_per_second() {
        let tap = Tap::new();
        let mut given = 0;
        for _ in 0..100 {
            given += tap.reserve(REQUEST_BYTES);
        }
        assert_eq!(given, RATE_BYTES, "one second's budget, then nothing");
        assert_eq!(tap.reserve(10), 0);
        tap.skip(5);
        tap.skip(2);
        assert_eq!((tap.take_skipped(), tap.take_skipped()), (7, 0));
    }

    #[test]
    fn observations_serialize_with_their_kind() {
        let json = serde_json::to_value(delivery(7)).unwrap();
        assert_eq!(json["kind"], "delivery");
        assert_eq!(json["messageIds"][0], "7");
        assert_eq!(bounded("héllo", 2), "h… (5 bytes more)");
        assert_eq!(bounded("abc", 10), "abc");
    }
}
