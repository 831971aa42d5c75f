//! The router's errors, typed by where they came from and whether the request may be
//! tried again elsewhere (in the manner of pingora's `Error`: a source, a kind, a
//! retry flag), so the forwarding loop decides from the type, not from strings.

use http::StatusCode;
use std::fmt;

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A host: its link, its stream, its answer.
    Upstream,
    /// The caller: a bad request, a missing key. Never used yet by the forwarding path
    /// (callers' errors are answered before it), kept so every error has an origin.
    #[allow(dead_code)]
    Downstream,
    /// The router itself: no candidate, a response it could not build.
    Internal,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No stream could be opened on the host's link (link lost, stream limit).
    Connect,
    /// The host's stream failed or broke the protocol before a response head.
    BeforeHead,
    /// The host sent no response head in time.
    FirstByteTimeout,
    /// The host has no route for the path (the app's deploy has not reached it): no
    /// component ran.
    NoRoute,
    /// The host is paused by its provider (its report saying so had not arrived yet):
    /// no component ran.
    Paused,
    /// No host could take the request.
    NoCandidate,
    /// Every candidate failed before answering.
    AllFailed,
}

/// One error on the forwarding path.
#[derive(Debug, Clone)]
pub(crate) struct RouteError {
    pub(crate) origin: Origin,
    pub(crate) kind: Kind,
    /// Whether trying the next candidate is safe: nothing reached a component yet, or
    /// the host refused before running it. A timeout is never retried (the host may
    /// still be working on it, and running a request twice is worse than a clear 504).
    pub(crate) retry: bool,
    pub(crate) message: String,
}

impl RouteError {
    /// A host's failure.
    pub(crate) fn upstream(kind: Kind, message: impl Into<String>) -> Self {
        let retry = matches!(kind, Kind::Connect | Kind::BeforeHead | Kind::NoRoute | Kind::Paused);
        Self { origin: Origin::Upstream, kind, retry, message: message.into() }
    }

    /// The router's own failure.
    pub(crate) fn internal(kind: Kind, message: impl Into<String>) -> Self {
        Self { origin: Origin::Internal, kind, retry: false, message: message.into() }
    }

    /// The status the caller gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self.kind {
            Kind::FirstByteTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::NoCandidate | Kind::Paused => StatusCode::SERVICE_UNAVAILABLE,
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::Connect | Kind::BeforeHead | Kind::AllFailed => StatusCode::BAD_GATEWAY,
        }
    }

    /// The label of `wasmesh_router_errors_total`.
    pub(crate) fn origin_label(&self) -> &'static str {
        match self.origin {
            Origin::Upstream => "upstream",
            Origin::Downstream => "downstream",
            Origin::Internal => "internal",
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_before_a_component_ran_are_retried() {
        assert!(RouteError::upstream(Kind::Connect, "lost").retry);
        assert!(RouteError::upstream(Kind::BeforeHead, "reset").retry);
        let timeout = RouteError::upstream(Kind::FirstByteTimeout, "slow");
        assert!(!timeout.retry);
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let none = RouteError::internal(Kind::NoCandidate, "no host");
        assert_eq!(
            (none.retry, none.status(), none.origin_label()),
            (false, StatusCode::SERVICE_UNAVAILABLE, "internal")
        );
    }
}
