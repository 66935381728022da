//! The router's layer (axum applies it to every route and to the fallback, after the
//! router has matched the path): CORS for every request (preflights are answered here),
//! the latency metric of the ingest routes, and the dispatch of their `POST`s.
//!
//! The ingest routes are timed here, by their path, rather than by a route layer: a route
//! layer wraps each route in one more boxed service, cloned with its future boxed on every
//! request. With `axum::middleware::from_fn` for CORS and a route layer for the metric,
//! the two cost 9% of the single-event throughput on one core (`scripts/bench-http.sh`);
//! this layer has its own future. The other routes keep the route layer
//! (`metrics::TrackLayer`), which knows their matched path.
//!
//! A `POST` to a single-call or batch route goes straight to its handler function rather
//! than through the route's boxed handler service and its futures (1.7 K instructions of
//! about 65 K per single-event request). The routes stay in the router, which matches
//! them and answers their other methods (405).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use ferry_event::Route;

use crate::{AppState, collect, cors};

/// The route label of a path this layer times (the ingest routes, whose paths have no
/// parameters, so the path is the matched route), and what its `POST` is, when this
/// layer calls the handler itself.
pub(crate) fn ingest_route(path: &str) -> Option<(&'static str, Option<Route>)> {
    if let Some((route, call)) = collect::SINGLE_ROUTES.iter().find(|(route, _)| *route == path) {
        return Some((route, Some(Route::Single(*call))));
    }
    if let Some(route) = collect::BATCH_ROUTES.iter().find(|route| **route == path) {
        return Some((route, Some(Route::Batch)));
    }
    (path == collect::BROWSER_METRICS_ROUTE).then_some((collect::BROWSER_METRICS_ROUTE, None))
}

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
        let Some((label, direct)) = ingest_route(request.uri().path()) else {
            return EdgeFuture::Inner { future: self.inner.call(request), origin, timed: None };
        };
        let timed = Some((label, Instant::now(), self.state.clone()));
        match direct {
            Some(route) if request.method() == Method::POST => {
                let future = Box::pin(collect::collect(self.state.clone(), route, request));
                EdgeFuture::Direct { future, origin, timed }
            }
            _ => EdgeFuture::Inner { future: self.inner.call(request), origin, timed },
        }
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
            timed: Option<(&'static str, Instant, AppState)>,
        },
        /// A `POST` to an ingest route: its handler, called here.
        Direct {
            future: Pin<Box<dyn Future<Output = Response> + Send>>,
            origin: Option<HeaderValue>,
            timed: Option<(&'static str, Instant, AppState)>,
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
            Projected::Direct { future, origin, timed } => {
                let response = ready!(future.as_mut().poll(cx));
                Poll::Ready(Ok(finish(response, origin, timed)))
            }
        }
    }
}

/// Count the request, if timed, and add the CORS headers.
fn finish(
    mut response: Response,
    origin: &mut Option<HeaderValue>,
    timed: &mut Option<(&'static str, Instant, AppState)>,
) -> Response {
    if let Some((route, started, state)) = timed.take() {
        state.inner.metrics.observe(route, response.status().as_u16(), started.elapsed().as_secs_f64());
    }
    cors::allow_origin(response.headers_mut(), origin.take());
    response
}
