//! The layer around the whole router: CORS for every request (preflights are answered
//! here), and the latency metric of the ingest routes.
//!
//! The ingest routes are timed here, by their path, rather than by a route layer: a route
//! layer wraps each route in one more boxed service, cloned with its future boxed on every
//! request. With `axum::middleware::from_fn` for CORS and a route layer for the metric,
//! the two cost 9% of the single-event throughput on one core (`scripts/bench-http.sh`);
//! this layer has its own future and allocates nothing. The other routes keep the route
//! layer (`metrics::TrackLayer`), which knows their matched path.

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

use crate::{AppState, collect, cors};

/// The route label of a path this layer times: the ingest routes, whose paths have no
/// parameters, so the path is the matched route.
pub(crate) fn ingest_route(path: &str) -> Option<&'static str> {
    collect::SINGLE_ROUTES
        .iter()
        .map(|(route, _)| *route)
        .chain(collect::BATCH_ROUTES.iter().copied())
        .chain([collect::BROWSER_METRICS_ROUTE])
        .find(|route| *route == path)
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
        let timed = ingest_route(request.uri().path()).map(|route| (route, Instant::now(), self.state.clone()));
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
                let mut response = ready!(future.poll(cx))?;
                if let Some((route, started, state)) = timed.take() {
                    state.inner.metrics.observe(route, response.status().as_u16(), started.elapsed().as_secs_f64());
                }
                cors::allow_origin(response.headers_mut(), origin.take());
                Poll::Ready(Ok(response))
            }
        }
    }
}
