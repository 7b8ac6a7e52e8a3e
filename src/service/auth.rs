//! Bearer tokens: every endpoint but `/healthz` and `/readyz` (probes carry no token) and
//! the run view's pages needs `Authorization: Bearer <token>` with one of the server's
//! tokens (`crate::net::bearer`: the scheme in any case, compared in constant time). A
//! server with no token takes every request, listens only on loopback addresses and Unix
//! sockets ([`crate::service::listen::ListenAddr::is_local`]), and answers only requests
//! whose `Host` names loopback ([`check_host`]: no DNS rebinding).

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::net::bearer::{TokenSet, bearer};
use crate::net::guard::{Local, connection_of};
use crate::service::listen::host_part;

use crate::service::AppState;
use crate::service::error::{ApiError, ErrorCode};

/// The tokens a server accepts.
pub(crate) type Tokens = TokenSet<()>;

/// The tokens of `tokens`, none owning anything.
pub(crate) fn tokens(tokens: &[String]) -> Tokens {
    TokenSet::new(tokens.iter().map(|t| (t.clone(), ())))
}

/// Refuses a request without an accepted token (401 `UNAUTHENTICATED`). An accepted one
/// tells its connection so (`net::guard`: a connection must carry one early to stay).
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let tokens = &state.shared.tokens;
    if tokens.is_empty() || request.uri().path() == "/healthz" || request.uri().path() == "/readyz"
    {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| bearer(v.as_bytes()));
    match given {
        Some(Some(token)) if tokens.find(token).is_some() => {
            if let Some(conn) = connection_of(&request) {
                conn.authenticated();
            }
            next.run(request).await
        }
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

/// On a server without tokens, refuses (403 `HOST_NOT_ALLOWED`) a TCP request whose `Host`
/// names neither this machine's loopback nor a configured listen address: a web page that
/// had its own name rebound to 127.0.0.1 (DNS rebinding) sends its own name, and is refused.
/// Requests through a Unix socket, which no browser reaches, and servers with tokens,
/// which need the token whatever the `Host`, are not checked.
pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let checked = state.shared.tokens.is_empty()
        && connection_of(&request).is_some_and(|c| c.local() != Local::Unix);
    if !checked {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().map(str::to_owned).unwrap_or_default())
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        Some(host) if !allowed_host(&host, &state.shared.hosts) => ApiError::new(
            ErrorCode::HostNotAllowed,
            "this server takes no token, so it answers only requests addressed to a loopback name or address (or a --listen host): the Host header names another",
        )
        .with_details(json!({ "host": host.chars().take(256).collect::<String>() }))
        .into_response(),
        // No Host at all is no browser's request.
        _ => next.run(request).await,
    }
}

/// Whether `host` (a `Host` value, with or without a port) is `localhost`, a name under
/// `.localhost`, a loopback address, or one of `listen_hosts`.
pub(crate) fn allowed_host(host: &str, listen_hosts: &[String]) -> bool {
    let name = host_part(host);
    if name.is_empty() {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || lower
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || listen_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses_are_allowed_hosts_and_others_are_not() {
        let listen = ["shipsec-box".to_owned()];
        for host in [
            "localhost",
            "localhost:7420",
            "LOCALHOST",
            "app.localhost:80",
            "127.0.0.1:7420",
            "127.3.4.5",
            "[::1]:7420",
            "[::1]",
            "shipsec-box:7420",
        ] {
            assert!(allowed_host(host, &listen), "{host}");
        }
        for host in [
            "evil.example:7420",
            "localhost.evil.example",
            "10.0.0.1:7420",
            "[::2]",
            "",
            ":7420",
        ] {
            assert!(!allowed_host(host, &listen), "{host}");
        }
    }
}
