//! The debugger across nodes. A node whose debugger page (or `ferry tail`) is open says so
//! once a second on `<prefix>.tap.watch`; every node that heard that within the last
//! [`HEARD_FOR`] builds its observations and forwards them on `<prefix>.tap.seen`; the
//! watching nodes show what other nodes forward. Core NATS, not the stream: the feed is
//! lossy by design, and nothing is sent while nobody watches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_tap::{Observation, Tap};
use futures_util::StreamExt;

use crate::Cluster;

/// How often a watching node says so.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long after the last heartbeat other nodes keep forwarding.
pub const HEARD_FOR: Duration = Duration::from_secs(3);
/// The header naming the node an observation comes from.
const NODE: &str = "Ferry-Node";

impl Cluster {
    /// Connect this node's tap to the other nodes' until the process ends.
    pub fn bridge_tap(&self, tap: Arc<Tap>) {
        let prefix = &self.config.subject_prefix;
        let watch = format!("{prefix}.tap.watch");
        let seen = format!("{prefix}.tap.seen");
        let node = self.config.node.clone();
        let client = self.client.clone();

        // Say so while somebody watches here.
        {
            let (client, tap, watch, node) = (client.clone(), tap.clone(), watch.clone(), node.clone());
            tokio::spawn(async move {
                loop {
                    if tap.watched_here() {
                        let _ = client.publish(watch.clone(), node.clone().into()).await;
                    }
                    tokio::time::sleep(HEARTBEAT).await;
                }
            });
        }
        // Hear other nodes' watchers, and forget them when they stop.
        {
            let (client, tap, node) = (client.clone(), tap.clone(), node.clone());
            tokio::spawn(async move {
                let mut subscription = match client.subscribe(watch).await {
                    Ok(s) => s,
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for debugger watchers on other nodes");
                        return;
                    }
                };
                let mut heard: Option<Instant> = None;
                let mut tick = tokio::time::interval(HEARTBEAT / 2);
                loop {
                    tokio::select! {
                        message = subscription.next() => {
                            let Some(message) = message else { return };
                            if message.payload != node.as_bytes() {
                                heard = Some(Instant::now());
                                tap.set_watched_elsewhere(true);
                            }
                        }
                        _ = tick.tick() => {
                            let recent = heard.is_some_and(|at| at.elapsed() < HEARD_FOR);
                            tap.set_watched_elsewhere(recent);
                        }
                    }
                }
            });
        }
        // Forward what this node sees while somebody elsewhere watches.
        {
            let (client, tap, seen, node) = (client.clone(), tap.clone(), seen.clone(), node.clone());
            tokio::spawn(async move {
                let mut forwarded = tap.forwarded();
                loop {
                    let observation = match forwarded.recv().await {
                        Ok(observation) => observation,
                        Err(ferry_tap::RecvError::Lagged(_)) => continue,
                        Err(ferry_tap::RecvError::Closed) => return,
                    };
                    let Ok(json) = serde_json::to_vec(&*observation) else { continue };
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(NODE, node.as_str());
                    let _ = client.publish_with_headers(seen.clone(), headers, json.into()).await;
                }
            });
        }
        // Show what other nodes forward.
        tokio::spawn(async move {
            let mut subscription = match client.subscribe(seen).await {
                Ok(s) => s,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other nodes' debugger feed");
                    return;
                }
            };
            while let Some(message) = subscription.next().await {
                let from = message.headers.as_ref().and_then(|h| h.get(NODE)).map(|v| v.as_str().to_owned());
                if from.as_deref() == Some(node.as_str()) || !tap.watched_here() {
                    continue;
                }
                match serde_json::from_slice::<Observation>(&message.payload) {
                    Ok(observation) => tap.publish_from_elsewhere(observation),
                    Err(error) => tracing::debug!(%error, "unreadable observation from another node"),
                }
            }
        });
    }
}
