//! Bearer tokens: every endpoint but `/healthz` needs `Authorization: Bearer <token>` with
//! one of the server's tokens, compared in constant time. A server with no token takes
//! every request, and listens only on loopback addresses and Unix sockets
//! ([`crate::service::listen::ListenAddr::is_local`]).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::service::AppState;
use crate::service::error::{ApiError, ErrorCode};

/// The tokens a server accepts.
#[derive(Clone, Default)]
pub(crate) struct Tokens(Vec<Box<[u8]>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        write!(f, "Tokens({})", self.0.len())
    }
}

impl Tokens {
    pub(crate) fn new(tokens: &[String]) -> Tokens {
        Tokens(tokens.iter().map(|t| t.as_bytes().into()).collect())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is one of the tokens. Every token is compared, each in time that
    /// depends only on the lengths, so the time taken does not say how much matched.
    fn accepts(&self, given: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.as_ref().ct_eq(given)
            })
            .into()
    }
}

/// The token of a request's `Authorization: Bearer` header.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
}

/// Refuses a request without an accepted token (401 `UNAUTHENTICATED`).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let tokens = &state.shared.tokens;
    if tokens.is_empty() || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    match bearer(&request) {
        Some(token) if tokens.accepts(token) => next.run(request).await,
        given => {
            let message = if given.is_some() {
                "the bearer token is not one this server accepts"
            } else {
                "this server needs `Authorization: Bearer <token>`"
            };
            let mut response = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_token_is_accepted() {
        let tokens = Tokens::new(&["alpha-token".into(), "beta".into()]);
        assert!(tokens.accepts(b"alpha-token"));
        assert!(tokens.accepts(b"beta"));
        assert!(!tokens.accepts(b"alpha"));
        assert!(!tokens.accepts(b"alpha-token2"));
        assert!(!tokens.accepts(b""));
        assert!(!Tokens::default().accepts(b"anything"));
    }
}
