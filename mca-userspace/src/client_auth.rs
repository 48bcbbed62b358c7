//! Who may use MCA: whoever holds the token MCA wrote into the fake ServiceAccount (and the
//! fake kubeconfig). Without this, any process that can reach MCA's listener — any container
//! of the pod, anything in its network namespace — would wield the real credentials of every
//! cluster MCA serves.
//!
//! The token is 256 random bits, URL-safe base64. A request carries it as the API server would
//! accept a ServiceAccount token: `Authorization: Bearer <token>`, or, for a WebSocket upgrade
//! from a client that cannot set headers (a browser), as the `Sec-WebSocket-Protocol` entry
//! `base64url.bearer.authorization.k8s.io.<base64url(token)>`. It is compared in constant
//! time. The token is renewed with the serving certificate; the previous one is accepted for a
//! grace period, since clients re-read the token file only about once a minute.

use std::{
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::Engine;
use http::{HeaderMap, header};

/// Whether MCA checks the client's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every request must carry the token MCA provides (the default).
    Token,
    /// Anyone who reaches the listener is served with the real credentials: acceptable only
    /// when nothing untrusted can reach it (see `docs/operations.md`, *Client authentication*).
    None,
}

/// The prefix of the WebSocket subprotocol entry that carries a bearer token.
pub const WEBSOCKET_BEARER_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

const BASE64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It carried no token.
    #[error("the request carries no token: use the ServiceAccount token MCA provides")]
    Missing,
    /// It carried another token.
    #[error("the request's token is not the ServiceAccount token MCA provides")]
    Wrong,
}

/// The client tokens as `--state-dir` keeps them: the current one, and the previous one with
/// the Unix second until which it is accepted.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedTokens {
    current: String,
    previous: Option<(String, u64)>,
}

impl std::fmt::Debug for SavedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedTokens(<redacted>)")
    }
}

/// A secret that never shows in debug output.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug)]
struct Tokens {
    current: Secret,
    /// The one before, and until when it is accepted.
    previous: Option<(Secret, Instant)>,
}

/// The client token and its checks.
#[derive(Debug)]
pub struct ClientAuth {
    tokens: RwLock<Tokens>,
    rejected: AtomicU64,
}

impl ClientAuth {
    /// A fresh random token.
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            tokens: RwLock::new(Tokens {
                current: generate()?,
                previous: None,
            }),
            rejected: AtomicU64::new(0),
        })
    }

    fn tokens(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        self.tokens.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current token, to write for the application.
    pub fn token(&self) -> String {
        self.tokens().current.0.clone()
    }

    /// The tokens a previous run saved (see [`crate::state`]): a restarted MCA accepts the
    /// token the application holds.
    pub fn restore(saved: &SavedTokens) -> Self {
        let now = std::time::SystemTime::now();
        let previous = saved.previous.as_ref().and_then(|(token, until)| {
            let until = std::time::UNIX_EPOCH + Duration::from_secs(*until);
            let left = until.duration_since(now).ok()?;
            Some((Secret(token.clone()), Instant::now() + left))
        });
        Self {
            tokens: RwLock::new(Tokens {
                current: Secret(saved.current.clone()),
                previous,
            }),
            rejected: AtomicU64::new(0),
        }
    }

    /// What [`Self::restore`] needs.
    pub fn save(&self) -> SavedTokens {
        let tokens = self.tokens();
        let now = std::time::SystemTime::now();
        SavedTokens {
            current: tokens.current.0.clone(),
            previous: tokens.previous.as_ref().and_then(|(token, until)| {
                let left = until.checked_duration_since(Instant::now())?;
                let until = (now + left).duration_since(std::time::UNIX_EPOCH).ok()?;
                Some((token.0.clone(), until.as_secs()))
            }),
        }
    }

    /// Replaces the token; the old one stays accepted for `grace`.
    pub fn rotate(&self, grace: Duration) -> Result<(), rustls::Error> {
        let next = generate()?;
        let mut tokens = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        let previous = std::mem::replace(&mut tokens.current, next);
        tokens.previous = Some((previous, Instant::now() + grace));
        Ok(())
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Whether the request carries an accepted token.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let outcome = match presented(headers) {
            None => Err(Refused::Missing),
            Some(token) => {
                let tokens = self.tokens();
                let previous = tokens
                    .previous
                    .as_ref()
                    .filter(|(_, until)| Instant::now() < *until);
                // Both are compared, so the time taken does not say which one matched.
                let current = same(&token, tokens.current.0.as_bytes());
                let previous = previous.is_some_and(|(old, _)| same(&token, old.0.as_bytes()));
                if current | previous {
                    Ok(())
                } else {
                    Err(Refused::Wrong)
                }
            }
        };
        if outcome.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }
}

/// 256 random bits from the TLS stack's secure random source.
fn generate() -> Result<Secret, rustls::Error> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
    Ok(Secret(BASE64URL.encode(bytes)))
}

/// The token a request presents: the bearer credential of `Authorization`, else the WebSocket
/// subprotocol entry.
fn presented(headers: &HeaderMap) -> Option<Vec<u8>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.as_bytes();
        let (scheme, token) = value.split_at(value.iter().position(|&b| b == b' ')?);
        return scheme
            .eq_ignore_ascii_case(b"bearer")
            .then(|| token.trim_ascii().to_vec());
    }
    let encoded = websocket_protocols(headers)
        .find_map(|entry| entry.strip_prefix(WEBSOCKET_BEARER_PREFIX.as_bytes()))?;
    let unpadded = encoded
        .iter()
        .rposition(|&b| b != b'=')
        .map_or(0, |i| i + 1);
    BASE64URL.decode(&encoded[..unpadded]).ok()
}

/// The entries of a request's `Sec-WebSocket-Protocol` headers, in order, trimmed, as bytes:
/// a value need not be UTF-8 to carry an entry, so none is skipped for it.
pub fn websocket_protocols(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(trim_space)
        .filter(|entry| !entry.is_empty())
}

/// `entry` without the leading and trailing white space Go's `strings.TrimSpace` removes
/// (Unicode's, as UTF-8: the API server's WebSocket authenticator trims entries so, and an
/// entry padded with U+00A0 that MCA did not trim would be a bearer token to it and none
/// to MCA). Bytes that are not UTF-8 are not space, as in Go.
fn trim_space(mut entry: &[u8]) -> &[u8] {
    let space =
        |bytes: &[u8]| std::str::from_utf8(bytes).is_ok_and(|c| c.chars().all(char::is_whitespace));
    'leading: while !entry.is_empty() {
        for width in 1..=entry.len().min(4) {
            if space(&entry[..width]) {
                entry = &entry[width..];
                continue 'leading;
            }
        }
        break;
    }
    'trailing: while !entry.is_empty() {
        for width in 1..=entry.len().min(4) {
            if space(&entry[entry.len() - width..]) {
                entry = &entry[..entry.len() - width];
                continue 'trailing;
            }
        }
        break;
    }
    entry
}

/// Whether a subprotocol entry carries a bearer token.
pub fn is_bearer_entry(entry: &[u8]) -> bool {
    entry.starts_with(WEBSOCKET_BEARER_PREFIX.as_bytes())
}

/// Equality in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_run_accepts_the_tokens_the_previous_one_handed_out() {
        let auth = ClientAuth::new().unwrap();
        let first = auth.token();
        auth.rotate(Duration::from_secs(600)).unwrap();
        let second = auth.token();
        let saved = serde_json::to_string(&auth.save()).unwrap();
        let restored = ClientAuth::restore(&serde_json::from_str(&saved).unwrap());
        assert_eq!(restored.token(), second);
        let bearer = |token: &str| with("authorization", &format!("Bearer {token}"));
        assert_eq!(restored.check(&bearer(&second)), Ok(()));
        assert_eq!(restored.check(&bearer(&first)), Ok(()), "within its grace");
        // A previous token whose grace is over is not restored.
        let expired = SavedTokens {
            current: second.clone(),
            previous: Some((first.clone(), 1)),
        };
        let restored = ClientAuth::restore(&expired);
        assert_eq!(restored.check(&bearer(&first)), Err(Refused::Wrong));
        assert!(!format!("{expired:?}").contains(&first));
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, value.parse().unwrap());
        headers
    }

    #[test]
    fn tokens_are_256_random_bits_url_safe() {
        let (a, b) = (ClientAuth::new().unwrap(), ClientAuth::new().unwrap());
        assert_ne!(a.token(), b.token());
        assert_eq!(BASE64URL.decode(a.token()).unwrap().len(), 32);
        assert!(!a.token().contains(['+', '/', '=']));
        assert!(
            !format!("{a:?}").contains(&a.token()),
            "never in debug output"
        );
    }

    #[test]
    fn bearer_tokens_and_websocket_protocol_entries() {
        let auth = ClientAuth::new().unwrap();
        let token = auth.token();
        assert_eq!(
            auth.check(&with("authorization", &format!("Bearer {token}"))),
            Ok(())
        );
        assert_eq!(
            auth.check(&with("authorization", &format!("bearer  {token}"))),
            Ok(())
        );
        let entry = format!("{WEBSOCKET_BEARER_PREFIX}{}", BASE64URL.encode(&token));
        let protocols = format!("v5.channel.k8s.io, {entry}");
        assert_eq!(
            auth.check(&with("sec-websocket-protocol", &protocols)),
            Ok(())
        );
        assert_eq!(auth.check(&HeaderMap::new()), Err(Refused::Missing));
        assert_eq!(
            auth.check(&with("authorization", "Bearer mca-placeholder-token")),
            Err(Refused::Wrong)
        );
        assert_eq!(
            auth.check(&with("authorization", &format!("Basic {token}"))),
            Err(Refused::Missing)
        );
        let truncated = &token[..token.len() - 1];
        assert_eq!(
            auth.check(&with("authorization", &format!("Bearer {truncated}"))),
            Err(Refused::Wrong)
        );
        assert_eq!(auth.rejected(), 4);
    }

    #[test]
    fn the_previous_token_is_accepted_for_the_grace_period() {
        let auth = ClientAuth::new().unwrap();
        let first = auth.token();
        auth.rotate(Duration::from_secs(600)).unwrap();
        let second = auth.token();
        assert_ne!(first, second);
        for token in [&first, &second] {
            assert_eq!(
                auth.check(&with("authorization", &format!("Bearer {token}"))),
                Ok(())
            );
        }
        auth.rotate(Duration::ZERO).unwrap();
        assert_eq!(
            auth.check(&with("authorization", &format!("Bearer {second}"))),
            Err(Refused::Wrong),
            "grace over"
        );
        assert_eq!(
            auth.check(&with("authorization", &format!("Bearer {first}"))),
            Err(Refused::Wrong),
            "only one previous token is kept"
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
