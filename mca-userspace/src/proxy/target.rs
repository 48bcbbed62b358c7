//! The request target as MCA reads it and as it sends it on: a `/clusters/<name>/` prefix
//! picks the cluster itself, and what goes upstream is in origin form (path and query: the
//! upstream client adds its own scheme and authority).

use std::borrow::Cow;

use http::StatusCode;

use crate::status::{Reason, Status};

/// Splits `/clusters/<name>/rest?query` into the name and the request target `/rest?query`
/// (`/clusters/<name>` alone is the cluster's root, `/`).
pub fn cluster_prefix(target: &str) -> Option<(&str, Cow<'_, str>)> {
    let after = target.strip_prefix("/clusters/")?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (name, rest) = after.split_at(end);
    if name.is_empty() {
        return None;
    }
    let rest = if rest.starts_with('/') {
        Cow::Borrowed(rest)
    } else {
        Cow::Owned(format!("/{rest}"))
    };
    Some((name, rest))
}

/// Makes `parts` the request to send on: its target reduced to path and query (`target`, the
/// request without a `/clusters/<name>` prefix, when one was taken off), and no `Host`, which
/// belongs to MCA's address, not the API server's.
pub fn to_origin_form(
    parts: &mut http::request::Parts,
    target: Option<&str>,
) -> Result<(), Status> {
    if parts.method == http::Method::CONNECT {
        return Err(Status::new(
            StatusCode::BAD_REQUEST,
            Reason::BadRequest,
            "MCA is not a forward proxy: CONNECT is not supported",
        ));
    }
    let target = match target {
        Some(target) => target.parse().expect("a part of a valid request target"),
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    };
    parts.uri = target.into();
    parts.headers.remove(http::header::HOST);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_prefixes_name_a_cluster_and_leave_the_request() {
        let split = |target| cluster_prefix(target).map(|(name, rest)| (name, rest.into_owned()));
        let cases = [
            (
                "/clusters/east/api/v1/pods?watch=1",
                Some(("east", "/api/v1/pods?watch=1")),
            ),
            ("/clusters/east/", Some(("east", "/"))),
            ("/clusters/east", Some(("east", "/"))),
            (
                "/clusters/east?timeout=32s",
                Some(("east", "/?timeout=32s")),
            ),
            ("/clusters/", None),
            ("/clusters", None),
            ("/api/v1/clusters/east", None),
            ("/apis/clusters/v1", None),
        ];
        for (target, expected) in cases {
            assert_eq!(
                split(target),
                expected.map(|(name, rest)| (name, rest.to_owned())),
                "{target}"
            );
        }
    }

    #[test]
    fn the_target_sent_on_is_path_and_query_without_host() {
        let parts = |method, uri| {
            let (mut parts, ()) = http::Request::builder()
                .method(method)
                .uri(uri)
                .header("host", "kubernetes.default.svc")
                .body(())
                .unwrap()
                .into_parts();
            parts
                .headers
                .insert("accept", "application/json".parse().unwrap());
            parts
        };
        let mut get = parts("GET", "https://kubernetes.default.svc/api/v1/pods?limit=5");
        to_origin_form(&mut get, None).unwrap();
        assert_eq!(get.uri, "/api/v1/pods?limit=5");
        assert!(get.headers.get("host").is_none() && get.headers.get("accept").is_some());

        let mut explicit = parts("GET", "/clusters/east/api/v1/pods");
        to_origin_form(&mut explicit, Some("/api/v1/pods")).unwrap();
        assert_eq!(explicit.uri, "/api/v1/pods");

        let mut connect = parts("CONNECT", "kubernetes.default.svc:443");
        let refused = to_origin_form(&mut connect, None).unwrap_err();
        assert_eq!(refused.code, StatusCode::BAD_REQUEST);
    }
}
