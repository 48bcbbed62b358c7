//! JSON objects read no deeper than merging needs. A merged view touches an object's
//! `metadata` alone (the cluster annotation, the composite `resourceVersion`, the name and
//! version a watch's holding records); `spec`, `status` and `managedFields`, most of the
//! bytes, are copied as the cluster wrote them. Reading members as borrowed text and only
//! `metadata` (and its `annotations`) member by member costs a fraction of building a whole
//! [`serde_json::Value`] and writing it out again, which a merged watch would otherwise do for
//! every event and a merged list for every item.
//!
//! What is written is what a [`serde_json::Value`] would write of the same object after the
//! same changes: members in key order, the last of repeated keys kept.

use std::{borrow::Cow, fmt, io::Write};

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{IgnoredAny, MapAccess, Visitor},
};
use serde_json::value::RawValue;

/// A JSON object, member by member: sorted by key, each key once. A few members each, so a
/// vector searched by halves beats a map's nodes.
#[derive(Debug, Default)]
pub struct Shallow<'a>(Vec<(Cow<'a, str>, Member<'a>)>);

/// One member's value.
#[derive(Debug)]
enum Member<'a> {
    /// As the cluster wrote it.
    Raw(&'a RawValue),
    /// An object, read member by member in turn.
    Object(Shallow<'a>),
    /// Set by MCA: JSON text (a string, never read again as an object).
    Set(String),
}

impl<'a> Shallow<'a> {
    /// Reads `raw`; `Ok(None)` when it is JSON but not an object.
    pub fn parse(raw: &'a [u8]) -> Result<Option<Self>, serde_json::Error> {
        let Some(text) = text(raw) else {
            let invalid = std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8");
            return Err(serde_json::Error::io(invalid));
        };
        match serde_json::from_str(text) {
            Ok(object) => Ok(Some(object)),
            Err(error) if error.is_data() => {
                // Valid JSON of another type, or not JSON at all?
                serde_json::from_str::<IgnoredAny>(text)?;
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// The member `key` as an object, read member by member: made an empty one when it is
    /// missing or not an object.
    pub fn object(&mut self, key: &str) -> &mut Shallow<'a> {
        let index = match self.find(key) {
            Ok(index) => index,
            Err(index) => {
                let empty = Member::Object(Shallow::default());
                self.0.insert(index, (Cow::Owned(key.to_owned()), empty));
                index
            }
        };
        let member = &mut self.0[index].1;
        if !matches!(member, Member::Object(_)) {
            let read = match member {
                Member::Raw(raw) => serde_json::from_str::<Shallow<'a>>(raw.get()).ok(),
                _ => None,
            };
            *member = Member::Object(read.unwrap_or_default());
        }
        let Member::Object(object) = member else {
            unreachable!("made an object above")
        };
        object
    }

    /// Where `key` is, or would go.
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key))
    }

    fn get(&self, key: &str) -> Option<&Member<'a>> {
        self.find(key).ok().map(|index| &self.0[index].1)
    }

    /// The member `key` when it is an object already read with [`Self::object`].
    pub fn read_object(&self, key: &str) -> Option<&Shallow<'a>> {
        match self.get(key)? {
            Member::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The member `key` when it is a string.
    pub fn str(&self, key: &str) -> Option<Cow<'_, str>> {
        let text = match self.get(key)? {
            Member::Raw(raw) => raw.get(),
            Member::Set(text) => text,
            Member::Object(_) => return None,
        };
        match serde_json::from_str::<&str>(text) {
            Ok(borrowed) => Some(Cow::Borrowed(borrowed)),
            // Escapes: decoded into a string of its own.
            Err(_) => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
        }
    }

    /// The string at `path` (`["metadata", "name"]`), reading what it must on the way and
    /// changing nothing.
    pub fn str_at(&self, path: &[&str]) -> Option<Cow<'_, str>> {
        let (first, rest) = path.split_first()?;
        if rest.is_empty() {
            return self.str(first);
        }
        match self.get(first)? {
            Member::Object(object) => object.str_at(rest),
            Member::Raw(raw) => {
                let object: Shallow<'_> = serde_json::from_str(raw.get()).ok()?;
                object
                    .str_at(rest)
                    .map(|text| Cow::Owned(text.into_owned()))
            }
            Member::Set(_) => None,
        }
    }

    /// The member `key`, parsed.
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        match self.get(key)? {
            Member::Raw(raw) => serde_json::from_str(raw.get()).ok(),
            Member::Set(text) => serde_json::from_str(text).ok(),
            Member::Object(object) => serde_json::from_slice(&object.to_vec()).ok(),
        }
    }

    /// Sets the member `key` to `value`.
    pub fn set(&mut self, key: &str, value: &(impl Serialize + ?Sized)) {
        let member = Member::Set(serde_json::to_string(value).expect("MCA's values serialize"));
        match self.find(key) {
            Ok(index) => self.0[index].1 = member,
            Err(index) => self.0.insert(index, (Cow::Owned(key.to_owned()), member)),
        }
    }

    /// Writes the object as JSON.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        out.write_all(b"{")?;
        for (index, (key, member)) in self.0.iter().enumerate() {
            if index > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, key.as_ref())?;
            out.write_all(b":")?;
            match member {
                Member::Raw(raw) => out.write_all(raw.get().as_bytes())?,
                Member::Object(object) => object.write(out)?,
                Member::Set(text) => out.write_all(text.as_bytes())?,
            }
        }
        out.write_all(b"}")
    }

    /// The object as JSON.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out).expect("writing to memory");
        out
    }
}

/// `raw` as text, checked for UTF-8 once. Read from a `&str`, serde_json takes each member's
/// text as it is; read from bytes, it checks every member's UTF-8 again as it takes it.
pub fn text(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(raw).ok()
}

impl<'de: 'a, 'a> Deserialize<'de> for Shallow<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A key, borrowed from the input unless it has escapes.
        #[derive(Deserialize)]
        struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = Shallow<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, Member::Raw(map.next_value()?)));
                }
                // Stable: of repeated keys, the last is kept, as serde_json does.
                members.sort_by(|(a, _), (b, _)| a.cmp(b));
                members.dedup_by(|later, kept| {
                    let repeated = later.0 == kept.0;
                    if repeated {
                        std::mem::swap(later, kept);
                    }
                    repeated
                });
                Ok(Shallow(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn an_object_read_shallow_writes_as_the_object_read_whole() {
        let raw = br#"{"spec":{"a":[1,2.50,"x"]},"kind":"Pod","metadata":{"name":"w\u0065b","uid":"1"},"kind":"Pod2","\u0061pi":true}"#;
        let shallow = Shallow::parse(raw).unwrap().unwrap();
        let whole: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&shallow.to_vec()).unwrap(),
            whole
        );
        let text = String::from_utf8(shallow.to_vec()).unwrap();
        assert!(
            text.contains(r#""spec":{"a":[1,2.50,"x"]}"#),
            "as written: {text}"
        );
        assert_eq!(
            shallow.str("kind").as_deref(),
            Some("Pod2"),
            "the last kept"
        );
        assert!(
            text.starts_with(r#"{"api":true,"kind":"Pod2""#),
            "key order: {text}"
        );
    }

    #[test]
    fn members_are_read_set_and_made_objects() {
        let raw = br#"{"metadata":{"name":"w\u0065b","annotations":"not an object"},"status":7}"#;
        let mut object = Shallow::parse(raw).unwrap().unwrap();
        let metadata = object.object("metadata");
        assert_eq!(metadata.str("name").as_deref(), Some("web"));
        metadata.object("annotations").set("a", "b");
        metadata.set("resourceVersion", "9");
        object.object("missing").set("x", &1);
        assert_eq!(object.str("status"), None);
        assert_eq!(
            object.str_at(&["metadata", "annotations", "a"]).as_deref(),
            Some("b")
        );
        let raw = br#"{"metadata":{"annotations":{"end":"true"}}}"#;
        let unread = Shallow::parse(raw).unwrap().unwrap();
        assert_eq!(
            unread
                .str_at(&["metadata", "annotations", "end"])
                .as_deref(),
            Some("true")
        );
        assert_eq!(unread.str_at(&["metadata", "labels", "end"]), None);
        assert_eq!(object.value("status"), Some(json!(7)));
        assert_eq!(
            object
                .read_object("metadata")
                .and_then(|m| m.str("resourceVersion"))
                .as_deref(),
            Some("9")
        );
        let written: Value = serde_json::from_slice(&object.to_vec()).unwrap();
        assert_eq!(
            written,
            json!({"metadata": {"name": "web", "annotations": {"a": "b"}, "resourceVersion": "9"},
                   "status": 7, "missing": {"x": 1}})
        );
    }

    #[test]
    fn what_is_not_an_object_is_told_from_what_is_not_json() {
        assert!(Shallow::parse(b"[1]").unwrap().is_none());
        assert!(Shallow::parse(b"\"x\"").unwrap().is_none());
        assert!(Shallow::parse(br#"{"a":"#).is_err());
        assert!(Shallow::parse(b"{} x").is_err());
        assert!(Shallow::parse(b"{\"a\":\"\xff\"}").is_err(), "not UTF-8");
    }
}
