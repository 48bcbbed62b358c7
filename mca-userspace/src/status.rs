//! Kubernetes `Status` objects for the errors MCA itself answers with.
//!
//! When MCA cannot serve a request it answers the way the API server would, with a `v1 Status`
//! body, so kubectl prints `Error from server (ServiceUnavailable): ...` and client libraries
//! raise their usual API exceptions instead of a confusing connection reset.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// The `reason` field: a machine-readable cause, from the API server's `StatusReason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reason {
    /// The request itself is malformed for MCA (400).
    BadRequest,
    /// The client did not present MCA's token (401).
    Unauthorized,
    /// The client may not do this (403), as a cluster answered.
    Forbidden,
    /// It names something MCA does not have, such as a cluster (404).
    NotFound,
    /// The route does not allow the verb, such as a write to a fan-out view (405).
    MethodNotAllowed,
    /// The client accepts no format MCA can produce for the request (406).
    NotAcceptable,
    /// The request body is larger than MCA reads (413).
    RequestEntityTooLarge,
    /// Something unexpected failed between MCA and the API server (500, 502).
    InternalError,
    /// The API server could not be reached or MCA has no credentials for it (503).
    ServiceUnavailable,
    /// The API server did not answer in time (504).
    Timeout,
    /// MCA has no capacity for the request now; retry after a moment (429).
    TooManyRequests,
    /// A watch cannot go on from where it is: list again (410, as a watch `ERROR` event).
    Expired,
    /// The request is not valid, as a cluster answered (422).
    Invalid,
}

/// An error MCA answers with, rendered as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// HTTP status code, also the Status `code` field.
    pub code: StatusCode,
    /// Machine-readable reason.
    pub reason: Reason,
    /// Human-readable message. Never contains credentials.
    pub message: String,
    /// Seconds after which a retry may succeed: the `Retry-After` header and
    /// `details.retryAfterSeconds`, which client-go honours.
    pub retry_after: Option<u32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    message: &'a str,
    reason: Reason,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Details {
    retry_after_seconds: u32,
}

impl Status {
    /// A status with `code` and `reason`.
    pub fn new(code: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same status, telling the client to retry after `seconds`.
    pub fn retry_after(self, seconds: u32) -> Self {
        Self {
            retry_after: Some(seconds),
            ..self
        }
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        let wire = Wire {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.retry_after.map(|seconds| Details {
                retry_after_seconds: seconds,
            }),
            code: self.code.as_u16(),
        };
        serde_json::to_vec(&wire)
            .expect("a Status always serializes")
            .into()
    }

    /// The full HTTP response, with a body of any type that can be built from bytes.
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        let mut response = Response::new(B::from(self.to_json()));
        *response.status_mut() = self.code;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?}: {}",
            self.code.as_u16(),
            self.reason,
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_api_server() {
        let status = Status::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::ServiceUnavailable,
            "upstream unreachable",
        );
        let json: serde_json::Value = serde_json::from_slice(&status.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "upstream unreachable",
                "reason": "ServiceUnavailable",
                "code": 503
            })
        );
        let response: Response<Bytes> = status.into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn retry_after_is_a_header_and_a_detail() {
        let status = Status::new(
            StatusCode::TOO_MANY_REQUESTS,
            Reason::TooManyRequests,
            "busy",
        )
        .retry_after(1);
        let json: serde_json::Value = serde_json::from_slice(&status.to_json()).unwrap();
        assert_eq!(json["reason"], "TooManyRequests");
        assert_eq!(json["details"], serde_json::json!({"retryAfterSeconds": 1}));
        let response: Response<Bytes> = status.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }
}
