//! Shared pieces of the HTTP benchmark: a runtime builder and the no-op router the two
//! ceiling servers use.

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

/// A runtime with `threads` workers (the benchmark pins servers to one core).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()
}

/// Answers every POST with `{"success":true}` after reading the body; `sink` sees the body
/// first (the durable ceiling appends it and waits for its fsync).
pub fn router<F, Fut>(sink: F) -> Router
where
    F: Fn(Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let handler = move |body: Bytes| {
        let sink = sink.clone();
        async move {
            sink(body).await;
            ([("content-type", "application/json")], r#"{"success":true}"#)
        }
    };
    Router::new().route("/{*path}", post(handler))
}
