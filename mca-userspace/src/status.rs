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
    /// Something unexpected failed between MCA and the API server (500, 502).
    InternalError,
    /// The API server could not be reached or MCA has no credentials for it (503).
    ServiceUnavailable,
    /// The API server did not answer in time (504).
    Timeout,
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
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl Status {
    /// A status with `code` and `reason`.
    pub fn new(code: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
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
    }
}
