//! What the two ceiling servers share: a runtime with a fixed number of workers and a router
//! that answers every POST with `{"success":true}` once the body is read and handed to a sink.
//! It is the same HTTP stack as ferry (axum 0.8 on hyper 1, `axum::serve`).

use std::future::Future;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;

/// A multi-threaded runtime with `threads` workers, built like ferry's `--threads`.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(threads.max(1)).enable_all().build()
}

/// Answers every POST, on any path, with 200 `{"success":true}` after `sink` has the body
/// (the durable ceiling appends it and waits for its fdatasync; the no-op one drops it).
pub fn router<F, Fut>(sink: F) -> Router
where
    F: Fn(Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), &'static str>> + Send,
{
    let handler = move |body: Bytes| {
        let sink = sink.clone();
        async move {
            match sink(body).await {
                Ok(()) => (axum::http::StatusCode::OK, [("content-type", "application/json")], r#"{"success":true}"#),
                Err(_) => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    [("content-type", "application/json")],
                    r#"{"success":false}"#,
                ),
            }
        }
    };
    Router::new().route("/{*path}", post(handler))
}
