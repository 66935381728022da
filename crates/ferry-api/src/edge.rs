//! The router's layer (axum applies it to every route and to the fallback, after the
//! router has matched the path): CORS for every request (preflights are answered here) and
//! the latency metric of every matched route.
//!
//! A tower layer with its own future: `axum::middleware::from_fn` for CORS and a route
//! layer for the metric, as before, boxed a future and cloned a boxed service on every
//! request, and cost 9% of the single-event throughput on one core
//! (`scripts/bench-http.sh`).
//!
//! Ingest `POST`s go through their routes' handlers like every other request: calling the
//! handlers from here saved 1.7% of a single-event request, under the 3% a bypass must earn.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{AppState, cors};

/// A request being timed: its matched route, when it started, and where to count it.
type Timed = (MatchedPath, Instant, AppState);

#[derive(Clone)]
pub(crate) struct EdgeLayer {
    pub(crate) state: AppState,
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, state: self.state.clone() }
    }
}

#[derive(Clone)]
pub(crate) struct Edge<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> EdgeFuture<S::Future> {
        let origin = request.headers().get(header::ORIGIN).cloned();
        if request.method() == Method::OPTIONS {
            let mut response = cors::preflight(request.headers());
            cors::allow_origin(response.headers_mut(), origin);
            return EdgeFuture::Preflight { response: Some(response) };
        }
        // The fallback (no route matched) is not timed. A clone of the matched path
        // shares its text.
        let timed =
            request.extensions().get::<MatchedPath>().cloned().map(|route| (route, Instant::now(), self.state.clone()));
        EdgeFuture::Inner { future: self.inner.call(request), origin, timed }
    }
}

pin_project! {
    /// The response of an [`Edge`] service.
    #[project = Projected]
    pub(crate) enum EdgeFuture<F> {
        /// A preflight, answered here.
        Preflight { response: Option<Response> },
        /// Any other request: the inner service's answer, with the origin to allow, and
        /// the route, start and state to time it with.
        Inner {
            #[pin]
            future: F,
            origin: Option<HeaderValue>,
            timed: Option<Timed>,
        },
    }
}

impl<F, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // Polled again after it was ready: answer something rather than panic.
            Projected::Preflight { response } => {
                Poll::Ready(Ok(response.take().unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())))
            }
            Projected::Inner { future, origin, timed } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(finish(response, origin, timed)))
            }
        }
    }
}

/// Count the request, if timed, and add the CORS headers.
fn finish(mut response: Response, origin: &mut Option<HeaderValue>, timed: &mut Option<Timed>) -> Response {
    if let Some((route, started, state)) = timed.take() {
        state.inner.metrics.observe(route.as_str(), response.status().as_u16(), started.elapsed().as_secs_f64());
    }
    cors::allow_origin(response.headers_mut(), origin.take());
    response
}
