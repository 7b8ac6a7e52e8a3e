//! What every call to the worker port passes before its message is decoded (after
//! `net::guard::TrackLayer`, which counts it on its connection): its bearer token is
//! checked ([`PreAuth`]): a call without a
//! token the coordinator knows is answered `UNAUTHENTICATED` before a byte of its body is
//! read, so a peer without a token cannot make the coordinator decode (and hold) messages
//! of up to 64 MiB. Which worker the token speaks for is checked after decoding, against
//! the worker id inside the message (`gateway`).

use std::task::{Context, Poll};

use axum::http::{Request, Response};
use futures::future::BoxFuture;
use tower::{Layer, Service};

use crate::net::bearer::bearer;
use crate::net::guard::connection_of;
use crate::worker::gateway::WorkerTokens;

/// Refuses a call whose token is none of the workers' before its body is read.
#[derive(Debug, Clone)]
pub struct PreAuthLayer(pub WorkerTokens);

impl<S> Layer<S> for PreAuthLayer {
    type Service = PreAuth<S>;

    fn layer(&self, inner: S) -> PreAuth<S> {
        PreAuth {
            inner,
            tokens: self.0.clone(),
        }
    }
}

/// [`PreAuthLayer`]'s service.
#[derive(Debug, Clone)]
pub struct PreAuth<S> {
    inner: S,
    tokens: WorkerTokens,
}

impl<S, B> Service<Request<B>> for PreAuth<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<tonic::body::Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !self.tokens.is_empty() {
            let given = request
                .headers()
                .get("authorization")
                .map(|v| bearer(v.as_bytes()));
            let known = matches!(given, Some(Some(token)) if self.tokens.owner(token).is_some());
            if !known {
                let status = if given.is_some() {
                    tonic::Status::unauthenticated("unknown token")
                } else {
                    tonic::Status::unauthenticated("a bearer token is required")
                };
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            if let Some(conn) = connection_of(&request) {
                conn.authenticated();
            }
        }
        Box::pin(self.inner.call(request))
    }
}
