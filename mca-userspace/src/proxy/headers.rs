//! Header rewriting between the application and the API server.
//!
//! Two kinds of headers never cross MCA:
//! - the application's credentials and identity claims (`Authorization`, every
//!   `Impersonate-*`): MCA authenticates upstream with its own, and must not let the app
//!   borrow MCA's identity to impersonate anyone;
//! - hop-by-hop headers (RFC 9110 §7.6.1), which describe one connection, not the request.
//!   On an upgrade `Connection: Upgrade` and `Upgrade` are kept: they are the request.

use http::{HeaderMap, HeaderName, header};

/// Request headers carrying the client's credentials or identity, removed before forwarding.
static CREDENTIAL_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("impersonate-user"),
    HeaderName::from_static("impersonate-group"),
    HeaderName::from_static("impersonate-uid"),
];

/// Prefix of `Impersonate-Extra-<key>` headers.
const IMPERSONATE_EXTRA_PREFIX: &str = "impersonate-extra-";

/// Hop-by-hop headers besides those named in `Connection`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the client's credentials and returns the names of what was removed (for the access
/// log: names only, never values).
pub fn strip_credentials(headers: &mut HeaderMap) -> Vec<&'static str> {
    let mut stripped = Vec::new();
    for name in &CREDENTIAL_HEADERS {
        if headers.remove(name).is_some() {
            stripped.push(name.as_str());
        }
    }
    let extras: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(IMPERSONATE_EXTRA_PREFIX))
        .cloned()
        .collect();
    if !extras.is_empty() {
        stripped.push("impersonate-extra-*");
    }
    for name in extras {
        headers.remove(name);
    }
    stripped
}

/// Removes hop-by-hop headers; with `keep_upgrade` the `Connection: Upgrade` and `Upgrade`
/// pair survives so the upgrade can be forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let upgrade = headers.get(header::UPGRADE).cloned();
    for name in named.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
    if keep_upgrade && let Some(upgrade) = upgrade {
        headers.insert(
            header::CONNECTION,
            header::HeaderValue::from_static("Upgrade"),
        );
        headers.insert(header::UPGRADE, upgrade);
    }
}

/// Whether the request asks to switch protocols (`Connection: Upgrade` plus `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn credentials_and_impersonation_are_removed() {
        let mut h = headers(&[
            ("authorization", "Bearer app"),
            ("impersonate-user", "admin"),
            ("impersonate-group", "system:masters"),
            ("impersonate-uid", "1"),
            ("impersonate-extra-scopes", "x"),
            ("impersonate-extra-other", "y"),
            ("accept", "application/json"),
        ]);
        let stripped = strip_credentials(&mut h);
        assert_eq!(
            stripped,
            [
                "authorization",
                "impersonate-user",
                "impersonate-group",
                "impersonate-uid",
                "impersonate-extra-*"
            ]
        );
        assert_eq!(h, headers(&[("accept", "application/json")]));
    }

    #[test]
    fn nothing_to_strip_reports_nothing() {
        let mut h = headers(&[("accept", "application/json")]);
        assert!(strip_credentials(&mut h).is_empty());
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, headers(&[("content-type", "application/json")]));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", "v4.channel.k8s.io"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(
            h,
            headers(&[
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", "v4.channel.k8s.io"),
            ])
        );
        strip_hop_by_hop(&mut h, false);
        assert!(!is_upgrade(&h));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket")
        ])));
    }
}
