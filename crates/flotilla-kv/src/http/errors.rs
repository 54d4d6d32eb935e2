//! JSON error answers (INTERFACE.md: `{"error": "<code>", "message": "..."}`), shared with
//! the node's own routes.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use flotilla_node::ClientError;
use serde_json::{Map, Value, json};

/// The `retry_after_ms` advertised when a leader id is known but not its api address.
pub const UNKNOWN_LEADER_RETRY_MS: u64 = 200;

/// `{"error": code, "message": message}` with `status`.
pub fn json_error(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    json_error_with(status, code, message, Map::new())
}

/// [`json_error`] with extra fields in the body (e.g. `"leader"`, `"retry_after_ms"`).
pub fn json_error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: Map<String, Value>,
) -> HttpResponse {
    let mut body = Map::new();
    body.insert("error".into(), Value::from(code));
    body.insert("message".into(), Value::from(message.into()));
    body.extend(extra);
    HttpResponse::build(status).json(Value::Object(body))
}

/// `Retry-After` in whole seconds, rounded up, at least 1 (INTERFACE.md).
pub fn retry_after_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).max(1)
}

/// The absolute URL of the same path and query on `leader_api` (`host:port`, or a URL
/// that already has a scheme).
pub fn leader_location(leader_api: &str, req: &HttpRequest) -> String {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    flotilla_node::http::location_on(leader_api, path_and_query)
}

/// The INTERFACE.md answer for a [`ClientError`]:
///
/// | error | status | body `error` | headers |
/// |---|---|---|---|
/// | `NotLeader` with api address | 307 | `not_leader` (+ `leader`) | `Location` |
/// | `NotLeader` without | 503 | `no_leader` (+ `retry_after_ms`, `leader`) | `Retry-After` |
/// | `NoLeader` | 503 | `no_leader` (+ `retry_after_ms`) | `Retry-After` |
/// | `Busy` | 503 | `busy` | `Retry-After: 1` |
/// | `ShuttingDown` | 503 | `shutting_down` | `Retry-After: 1` |
/// | `Invalid` | 400 | `bad_request` | |
/// | `Timeout` | 504 | `timeout` | |
/// | `LeadershipLost` | 504 | `leadership_lost` | |
pub fn client_error_response(err: &ClientError, req: &HttpRequest) -> HttpResponse {
    match err {
        ClientError::NotLeader { leader, leader_api: Some(api) } => {
            let mut extra = Map::new();
            extra.insert("leader".into(), json!(leader.0));
            let mut resp = json_error_with(
                StatusCode::TEMPORARY_REDIRECT,
                "not_leader",
                format!("node {leader} is the leader"),
                extra,
            );
            if let Ok(v) = HeaderValue::from_str(&leader_location(api, req)) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        ClientError::NotLeader { leader, leader_api: None } => {
            let mut extra = Map::new();
            extra.insert("leader".into(), json!(leader.0));
            no_leader(
                UNKNOWN_LEADER_RETRY_MS,
                format!("node {leader} leads but its api address is not known yet"),
                extra,
            )
        }
        ClientError::NoLeader { retry_after_ms } => {
            no_leader(*retry_after_ms, "no leader is known; retry after an election", Map::new())
        }
        ClientError::Busy => retry_later(StatusCode::SERVICE_UNAVAILABLE, err),
        ClientError::ShuttingDown => retry_later(StatusCode::SERVICE_UNAVAILABLE, err),
        ClientError::Invalid(_) => json_error(StatusCode::BAD_REQUEST, err.code(), err.to_string()),
        ClientError::Timeout | ClientError::LeadershipLost => {
            json_error(StatusCode::GATEWAY_TIMEOUT, err.code(), err.to_string())
        }
    }
}

fn no_leader(
    retry_after_ms: u64,
    message: impl Into<String>,
    mut extra: Map<String, Value>,
) -> HttpResponse {
    extra.insert("retry_after_ms".into(), json!(retry_after_ms));
    let mut resp = json_error_with(StatusCode::SERVICE_UNAVAILABLE, "no_leader", message, extra);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(retry_after_ms)));
    resp
}

fn retry_later(status: StatusCode, err: &ClientError) -> HttpResponse {
    let mut resp = json_error(status, err.code(), err.to_string());
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    resp
}

/// `405 {"error":"method_not_allowed"}`: the default service of a known resource.
pub async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.path()),
    )
}

/// `404 {"error":"no_route"}`: the app's default service.
pub async fn no_route(req: HttpRequest) -> HttpResponse {
    json_error(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {} {}", req.method(), req.path()),
    )
}

/// `500 {"error":"internal"}`.
pub fn internal(message: impl std::fmt::Display) -> HttpResponse {
    json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_at_least_one() {
        for (ms, s) in [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 2), (2500, 3)] {
            assert_eq!(retry_after_secs(ms), s, "{ms} ms");
        }
    }
}
