//! ferry's HTTP load benchmark, as a library shared by its binaries:
//!
//! - `noop-server` and `durable-noop-server`, the two ceilings of the machine (answer 200
//!   after reading the body; after appending it to one file with group commit and fdatasync);
//! - `loadgen`, which sends realistic analytics.js `track` events to one of them or to ferry
//!   (closed loop or open loop at a fixed rate), and probes the disk's fdatasync latency;
//! - `bench-http`, which runs all of it pinned to cores and prints the report
//!   (`scripts/bench-http.sh` builds and starts it).
//!
//! The modules hold what is worth testing without a network: the request bodies
//! ([`events`]), the HTTP/1.1 response parser ([`http`]), percentiles ([`stats`]), the
//! `/proc` readers ([`procfs`]) and the ceiling servers' router ([`server`]).

pub mod events;
pub mod http;
pub mod procfs;
pub mod server;
pub mod stats;
