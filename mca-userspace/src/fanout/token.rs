//! The opaque strings a merged view hands to clients: a composite `resourceVersion` (each
//! cluster's own, so a watch can resume every cluster where it was) and a composite `continue`
//! token (which cluster a paginated list is at, and that cluster's own token).
//!
//! Both are URL-safe base64 of a small JSON object keyed by cluster name, so they survive a
//! reordering of the configuration. They come back from clients, so decoding is strict and
//! bounded: anything malformed is an error the client sees as a 400, never a panic.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

const ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The longest token accepted: every cluster's version or token, with room to spare.
const MAX_LEN: usize = 64 << 10;

/// Prefix of composite versions, so they are not mistaken for a cluster's own.
const VERSION_PREFIX: &str = "mca.";

/// Why a client's token is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(&'static str);

/// Each cluster's resourceVersion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions(pub BTreeMap<String, String>);

impl Versions {
    /// The composite version clients see: written by hand because a merged watch makes one
    /// for every event it sends; the JSON is what `serde_json` writes of the map.
    pub fn encode(&self) -> String {
        let size = self
            .0
            .iter()
            .map(|(c, v)| c.len() + v.len() + 6)
            .sum::<usize>();
        let mut json = Vec::with_capacity(size + 2);
        json.push(b'{');
        for (index, (cluster, version)) in self.0.iter().enumerate() {
            if index > 0 {
                json.push(b',');
            }
            push_json_str(&mut json, cluster);
            json.push(b':');
            push_json_str(&mut json, version);
        }
        json.push(b'}');
        let mut encoded = String::with_capacity(VERSION_PREFIX.len() + json.len().div_ceil(3) * 4);
        encoded.push_str(VERSION_PREFIX);
        ENGINE.encode_string(&json, &mut encoded);
        encoded
    }

    /// Reads a composite version. `Ok(None)`: not a composite (`""`, `"0"`, or a version of
    /// one cluster's), which then goes to every cluster as it is.
    pub fn decode(text: &str) -> Result<Option<Self>, Malformed> {
        let Some(encoded) = text.strip_prefix(VERSION_PREFIX) else {
            return Ok(None);
        };
        decode(encoded).map(|versions| Some(Self(versions)))
    }
}

/// Where a paginated merged list is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    /// The cluster being paged.
    pub cluster: String,
    /// Its own continue token; empty to start it from the top.
    pub token: String,
    /// The versions the list started at, to report on every page.
    pub versions: BTreeMap<String, String>,
    /// The list's `kind` and `apiVersion`, for an empty last page when the clusters left
    /// all fail.
    pub kind: (String, String),
}

impl Continue {
    /// The composite token clients see.
    pub fn encode(&self) -> String {
        ENGINE.encode(serde_json::to_vec(self).expect("strings serialize"))
    }

    /// Reads a composite token.
    pub fn decode(text: &str) -> Result<Self, Malformed> {
        decode(text)
    }
}

/// Appends `text` as a JSON string; one that needs no escapes (a cluster's name, a
/// `resourceVersion`) is copied as it is.
fn push_json_str(json: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        json.push(b'"');
        json.extend_from_slice(text.as_bytes());
        json.push(b'"');
    } else {
        serde_json::to_writer(json, text).expect("a string serializes");
    }
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Malformed> {
    if text.len() > MAX_LEN {
        return Err(Malformed("the token is too long"));
    }
    let json = ENGINE
        .decode(text)
        .map_err(|_| Malformed("the token is not MCA's (not base64)"))?;
    serde_json::from_slice(&json).map_err(|_| Malformed("the token is not MCA's (not its JSON)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_plain_versions_pass() {
        let versions = Versions(
            [
                ("east".to_owned(), "123".to_owned()),
                ("west".to_owned(), "9".to_owned()),
            ]
            .into(),
        );
        let encoded = versions.encode();
        assert!(encoded.starts_with("mca.") && !encoded.contains(['/', '+', '=']));
        assert_eq!(Versions::decode(&encoded), Ok(Some(versions)));
        for plain in ["", "0", "12345"] {
            assert_eq!(Versions::decode(plain), Ok(None), "{plain:?}");
        }
        for bad in ["mca.!!", "mca.bm90IGpzb24", "mca.WzEsMl0"] {
            assert!(Versions::decode(bad).is_err(), "{bad:?}");
        }
        assert!(Versions::decode(&format!("mca.{}", "A".repeat(MAX_LEN + 1))).is_err());
    }

    #[test]
    fn versions_are_encoded_as_serde_json_writes_them() {
        let versions = Versions(
            [
                ("east".to_owned(), "123".to_owned()),
                ("we\"st\\".to_owned(), "9\u{1}é/".to_owned()),
            ]
            .into(),
        );
        let json = serde_json::to_vec(&versions.0).unwrap();
        assert_eq!(versions.encode(), format!("mca.{}", ENGINE.encode(json)));
        assert_eq!(
            Versions::default().encode(),
            format!("mca.{}", ENGINE.encode("{}"))
        );
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = Continue {
            cluster: "west".into(),
            token: "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ".into(),
            versions: [("east".to_owned(), "1".to_owned())].into(),
            kind: ("PodList".into(), "v1".into()),
        };
        assert_eq!(Continue::decode(&token.encode()), Ok(token));
        assert!(Continue::decode("not a token").is_err());
        assert!(Continue::decode("e30").is_err(), "{{}} lacks the fields");
    }
}
