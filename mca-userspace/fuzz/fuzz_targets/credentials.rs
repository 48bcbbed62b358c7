//! Fuzzes how MCA reads the credentials a client presents (`Authorization`, the bearer entry
//! of `Sec-WebSocket-Protocol`) and strips them: checking never panics, and after stripping no
//! bearer entry is left while every other subprotocol entry is kept, in order.
//!
//! Input: the `Authorization` value, then one `Sec-WebSocket-Protocol` value per line.
#![no_main]

use std::sync::LazyLock;

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use mca::{
    client_auth::{ClientAuth, is_bearer_entry, websocket_protocols},
    proxy::headers::strip_credentials,
};

static AUTH: LazyLock<ClientAuth> = LazyLock::new(|| ClientAuth::new().expect("random bytes"));

fuzz_target!(|input: &[u8]| {
    let mut lines = input.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    if let Some(value) = lines.next().and_then(|v| HeaderValue::from_bytes(v).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    for value in lines.take(4) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(header::SEC_WEBSOCKET_PROTOCOL, value);
        }
    }
    let others: Vec<Vec<u8>> = websocket_protocols(&headers)
        .filter(|entry| !is_bearer_entry(entry))
        .map(<[u8]>::to_vec)
        .collect();
    // Nobody guesses the token.
    assert!(AUTH.check(&headers).is_err());
    strip_credentials(&mut headers);
    assert!(headers.get(header::AUTHORIZATION).is_none());
    let left: Vec<Vec<u8>> = websocket_protocols(&headers).map(<[u8]>::to_vec).collect();
    assert_eq!(left, others);
});
