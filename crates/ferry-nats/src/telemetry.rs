//! This node's traffic with JetStream on `/metrics`: messages published, requests refused,
//! publish latency, leases, the connection and the stream's size.

use std::sync::atomic::Ordering;

use ferry_metrics::Writer;

use crate::Cluster;

pub const NATS_EVENTS: &str = "ferry_nats_published_events_total";
pub const NATS_BYTES: &str = "ferry_nats_published_bytes_total";
pub const NATS_REFUSED: &str = "ferry_nats_refused_requests_total";
pub const NATS_PUBLISH_SECONDS: &str = "ferry_nats_publish_duration_seconds";
pub const NATS_LEASES: &str = "ferry_nats_leased_events_total";
pub const NATS_CONNECTED: &str = "ferry_nats_connected";
pub const NATS_DISCONNECTS: &str = "ferry_nats_disconnects_total";
pub const NATS_STREAM_MESSAGES: &str = "ferry_nats_stream_messages";
pub const NATS_STREAM_BYTES: &str = "ferry_nats_stream_bytes";

/// Render this node's JetStream metrics.
pub fn render(out: &mut Writer, cluster: &Cluster) {
    let m = cluster.metrics();
    for (outcome, value) in
        [("stored", m.published.get()), ("duplicate", m.duplicates.get()), ("quarantined", m.quarantined.get())]
    {
        out.counter(
            NATS_EVENTS,
            "Messages this node published and JetStream acknowledged: stored events, duplicates (not stored again), quarantined items.",
            &[("outcome", outcome)],
            value,
        );
    }
    out.counter(NATS_BYTES, "Bytes of the events stored.", &[], m.published_bytes.get());
    for (reason, value) in [("unavailable", m.unavailable.get()), ("full", m.full.get())] {
        out.counter(
            NATS_REFUSED,
            "Appends refused (a request makes one for its events and one for its quarantined items): jetstream unavailable or too slow (503), stream full (429).",
            &[("reason", reason)],
            value,
        );
    }
    out.histogram(
        NATS_PUBLISH_SECONDS,
        "How long an append's publishes took until the last acknowledgement.",
        &[],
        &m.publish_seconds,
    );
    for (what, value) in [
        ("leased", m.leased.get()),
        ("acked", m.acked.get()),
        ("released", m.released.get()),
        ("extended", m.extended.get()),
    ] {
        out.counter(
            NATS_LEASES,
            "Events this node's workers leased, acknowledged, gave back, and extended leases of.",
            &[("action", what)],
            value,
        );
    }
    out.gauge(NATS_CONNECTED, "1 while connected to nats.", &[], f64::from(u8::from(cluster.connected())));
    out.counter(NATS_DISCONNECTS, "Times the connection to nats was lost.", &[], m.disconnects.get());
    out.gauge(
        NATS_STREAM_MESSAGES,
        "Messages in the stream at the last look.",
        &[],
        m.stream_messages.load(Ordering::Relaxed) as f64,
    );
    out.gauge(
        NATS_STREAM_BYTES,
        "Bytes of the stream at the last look.",
        &[],
        m.stream_bytes.load(Ordering::Relaxed) as f64,
    );
}
