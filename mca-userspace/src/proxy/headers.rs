//! Header rewriting between the application and the API server.
//!
//! Two kinds of headers never cross MCA:
//! - the application's credentials and identity claims: `Authorization`,
//!   `Proxy-Authorization`, every `Impersonate-*`, the front-proxy identity headers
//!   (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Uid`, `X-Remote-Extra-*`) and the bearer
//!   token entry of `Sec-WebSocket-Protocol`. MCA authenticates upstream with its own
//!   credentials, and must not let the app borrow MCA's identity to impersonate anyone;
//! - hop-by-hop headers (RFC 9110 §7.6.1), which describe one connection, not the request.
//!   On an upgrade `Connection: Upgrade` and `Upgrade` are kept: they are the request.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::client_auth::{is_bearer_entry, websocket_protocols};

/// Request headers carrying the client's credentials or identity, removed before forwarding.
static CREDENTIAL_HEADERS: [HeaderName; 8] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("impersonate-user"),
    HeaderName::from_static("impersonate-group"),
    HeaderName::from_static("impersonate-uid"),
    HeaderName::from_static("x-remote-user"),
    HeaderName::from_static("x-remote-group"),
    HeaderName::from_static("x-remote-uid"),
];

/// Prefixes of identity headers with a key in their name, and how the log names them.
const CREDENTIAL_PREFIXES: [(&str, &str); 2] = [
    ("impersonate-extra-", "impersonate-extra-*"),
    ("x-remote-extra-", "x-remote-extra-*"),
];

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

/// The bearer entry of `Sec-WebSocket-Protocol`, as the access log names it.
const WEBSOCKET_BEARER: &str = "sec-websocket-protocol:bearer";

/// The credentials a request carried and MCA removed, by name (never by value): a bit for
/// each of [`CREDENTIAL_HEADERS`], then [`CREDENTIAL_PREFIXES`], then the WebSocket bearer
/// entry. A set, not a list of names, since every request has one and it lives as long as
/// the exchange (minutes, for a watch).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Stripped(u16);

impl Stripped {
    /// The names, in the order above.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        let headers = CREDENTIAL_HEADERS.iter().map(HeaderName::as_str);
        let prefixes = CREDENTIAL_PREFIXES.iter().map(|(_, logged)| *logged);
        headers
            .chain(prefixes)
            .chain([WEBSOCKET_BEARER])
            .enumerate()
            .filter(move |(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| name)
    }

    /// The names joined by commas, as the access log prints them; borrowed for none or one.
    pub fn joined(self) -> Cow<'static, str> {
        let mut names = self.names();
        match (names.next(), names.next()) {
            (None, _) => Cow::Borrowed(""),
            (Some(only), None) => Cow::Borrowed(only),
            _ => Cow::Owned(self.names().collect::<Vec<_>>().join(",")),
        }
    }

    fn add(&mut self, bit: usize) {
        self.0 |= 1 << bit;
    }
}

impl std::fmt::Debug for Stripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// Removes the client's credentials and returns what was removed (for the access log: names
/// only, never values).
pub fn strip_credentials(headers: &mut HeaderMap) -> Stripped {
    let mut stripped = Stripped::default();
    for (bit, name) in CREDENTIAL_HEADERS.iter().enumerate() {
        if headers.remove(name).is_some() {
            stripped.add(bit);
        }
    }
    for (bit, (prefix, _)) in CREDENTIAL_PREFIXES.iter().enumerate() {
        let extras: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with(prefix))
            .cloned()
            .collect();
        if !extras.is_empty() {
            stripped.add(CREDENTIAL_HEADERS.len() + bit);
        }
        for name in extras {
            headers.remove(name);
        }
    }
    if strip_websocket_bearer(headers) {
        stripped.add(CREDENTIAL_HEADERS.len() + CREDENTIAL_PREFIXES.len());
    }
    stripped
}

/// Removes the bearer token entry from `Sec-WebSocket-Protocol`, keeping the others (the
/// subprotocols the client offers) in order; whether there was one.
fn strip_websocket_bearer(headers: &mut HeaderMap) -> bool {
    let (bearer, kept): (Vec<&[u8]>, Vec<&[u8]>) =
        websocket_protocols(headers).partition(|entry| is_bearer_entry(entry));
    if bearer.is_empty() {
        return false;
    }
    // Entries of valid values joined by ", " form a valid value.
    let kept = (!kept.is_empty()).then(|| HeaderValue::from_bytes(&kept.join(&b", "[..])));
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if let Some(Ok(value)) = kept {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    true
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
            stripped.names().collect::<Vec<_>>(),
            [
                "authorization",
                "impersonate-user",
                "impersonate-group",
                "impersonate-uid",
                "impersonate-extra-*"
            ]
        );
        assert_eq!(
            stripped.joined(),
            "authorization,impersonate-user,impersonate-group,impersonate-uid,impersonate-extra-*"
        );
        assert_eq!(h, headers(&[("accept", "application/json")]));
    }

    #[test]
    fn proxy_and_front_proxy_credentials_are_removed() {
        let mut h = headers(&[
            ("proxy-authorization", "Basic dXNlcjpwYXNz"),
            ("x-remote-user", "admin"),
            ("x-remote-group", "system:masters"),
            ("x-remote-uid", "0f9d4c6e"),
            ("x-remote-extra-scopes", "x"),
            ("accept", "application/json"),
        ]);
        let stripped = strip_credentials(&mut h);
        assert_eq!(
            stripped.names().collect::<Vec<_>>(),
            [
                "proxy-authorization",
                "x-remote-user",
                "x-remote-group",
                "x-remote-uid",
                "x-remote-extra-*"
            ]
        );
        assert_eq!(h, headers(&[("accept", "application/json")]));
    }

    #[test]
    fn the_websocket_bearer_entry_goes_and_the_subprotocols_stay() {
        let mut h = headers(&[(
            "sec-websocket-protocol",
            "v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.dG9rZW4, v4.channel.k8s.io",
        )]);
        assert_eq!(
            strip_credentials(&mut h).joined(),
            "sec-websocket-protocol:bearer"
        );
        assert_eq!(
            h,
            headers(&[(
                "sec-websocket-protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io"
            )])
        );
        // Only the token: the header goes.
        let mut h = headers(&[(
            "sec-websocket-protocol",
            "base64url.bearer.authorization.k8s.io.dG9rZW4",
        )]);
        strip_credentials(&mut h);
        assert!(h.is_empty());
        // Padded with white space Go's TrimSpace removes (U+00A0, U+3000, U+0085), as the
        // API server reads it: a bearer entry all the same.
        for padded in [
            "\u{a0}base64url.bearer.authorization.k8s.io.dG9rZW4\u{a0}, v5.channel.k8s.io",
            "\u{3000}\t base64url.bearer.authorization.k8s.io.dG9rZW4, v5.channel.k8s.io",
            "\u{85}base64url.bearer.authorization.k8s.io.dG9rZW4,v5.channel.k8s.io\u{2009}",
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_bytes(padded.as_bytes()).unwrap(),
            );
            assert_eq!(
                strip_credentials(&mut h).joined(),
                "sec-websocket-protocol:bearer",
                "{padded:?}"
            );
            assert_eq!(
                h[header::SEC_WEBSOCKET_PROTOCOL],
                "v5.channel.k8s.io",
                "{padded:?}"
            );
        }
        // No token: untouched.
        let mut h = headers(&[("sec-websocket-protocol", "v5.channel.k8s.io")]);
        assert!(strip_credentials(&mut h) == Stripped::default());
        assert_eq!(
            h,
            headers(&[("sec-websocket-protocol", "v5.channel.k8s.io")])
        );
        // A value that is not UTF-8 (obs-text) still has its bearer entry removed, and
        // entries spread over several values are all considered.
        let mut h = HeaderMap::new();
        let odd = HeaderValue::from_bytes(
            b"base64url.bearer.authorization.k8s.io.dG9rZW4, caf\xe9.k8s.io",
        )
        .unwrap();
        h.append(header::SEC_WEBSOCKET_PROTOCOL, odd);
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v5.channel.k8s.io"),
        );
        assert_eq!(
            strip_credentials(&mut h).joined(),
            "sec-websocket-protocol:bearer"
        );
        let values: Vec<&[u8]> = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(values, [&b"caf\xe9.k8s.io, v5.channel.k8s.io"[..]]);
    }

    #[test]
    fn nothing_to_strip_reports_nothing() {
        let mut h = headers(&[("accept", "application/json")]);
        assert!(strip_credentials(&mut h) == Stripped::default());
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
