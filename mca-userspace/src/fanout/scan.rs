//! Splitting a Kubernetes list as it streams in: the elements of its `items` (or a Table's
//! `rows`) one at a time, and its other members (`kind`, `apiVersion`, `metadata`,
//! `columnDefinitions`) whole, without ever holding the list. A merged LIST passes each
//! cluster's items on as they arrive, so its memory does not grow with the lists' size.
//!
//! The scanner only finds where each value begins and ends (strings, escapes, nesting); the
//! pieces are parsed by serde_json one at a time. The input comes from clusters, so every
//! piece is bounded and anything that is not one JSON object is an error, never a panic.

/// The array members whose elements are passed on one by one.
const ARRAYS: [&[u8]; 2] = [b"items", b"rows"];

/// A member of the list: one element of its items (or rows), or any other member whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// One element of `items` or `rows`, as raw JSON.
    Item(Vec<u8>),
    /// Another member: its key, and its value as raw JSON.
    Field(String, Vec<u8>),
}

/// Why the input is not a list MCA can pass on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Not a JSON object where one was expected.
    #[error("the list is not a JSON object (unexpected byte {0:#04x})")]
    Unexpected(u8),
    /// One value is larger than the bound.
    #[error("a value of the list is larger than {0} bytes")]
    TooLarge(usize),
    /// The input ended inside the object.
    #[error("the list ends before its object closes")]
    Truncated,
    /// Bytes after the object.
    #[error("the list has data after its object")]
    Trailing,
}

/// Where the scanner is in the top-level object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the object's `{`.
    Start,
    /// Before a key, a `,` or the closing `}`.
    Key,
    /// Inside a key's string.
    InKey { escape: bool },
    /// Before a key's `:`.
    Colon,
    /// Before a value.
    Value,
    /// Inside a value (`into_array`: an element of `items`/`rows`).
    Capture { into_array: bool },
    /// In `items`/`rows`, before an element, a `,` or the `]`.
    Element,
    /// After the closing `}`.
    Done,
}

/// The scanner of one list.
#[derive(Debug)]
pub struct Scanner {
    at: At,
    key: Vec<u8>,
    value: Vec<u8>,
    /// Nesting inside the value being captured.
    depth: usize,
    in_string: bool,
    escape: bool,
    /// The largest piece accepted.
    limit: usize,
}

impl Scanner {
    /// A scanner accepting pieces of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            at: At::Start,
            key: Vec::new(),
            value: Vec::new(),
            depth: 0,
            in_string: false,
            escape: false,
            limit,
        }
    }

    /// Scans `chunk`, appending the pieces it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Piece>) -> Result<(), Malformed> {
        let mut i = 0;
        while i < chunk.len() {
            let byte = chunk[i];
            match self.at {
                At::Capture { into_array } => {
                    // Copy the run of bytes that cannot end the value in one go.
                    let end = self.capture(&chunk[i..]);
                    self.value.extend_from_slice(&chunk[i..i + end.taken]);
                    if self.value.len() > self.limit {
                        return Err(Malformed::TooLarge(self.limit));
                    }
                    i += end.taken;
                    if end.complete {
                        self.complete(into_array, out)?;
                    }
                    continue;
                }
                _ if byte.is_ascii_whitespace() && !matches!(self.at, At::InKey { .. }) => {}
                At::Start if byte == b'{' => self.at = At::Key,
                At::Key => match byte {
                    b'"' => {
                        self.key.clear();
                        self.at = At::InKey { escape: false };
                    }
                    b',' => {}
                    b'}' => self.at = At::Done,
                    other => return Err(Malformed::Unexpected(other)),
                },
                At::InKey { escape } => {
                    if !escape && byte == b'"' {
                        self.at = At::Colon;
                    } else {
                        self.key.push(byte);
                        if self.key.len() > self.limit {
                            return Err(Malformed::TooLarge(self.limit));
                        }
                        self.at = At::InKey {
                            escape: !escape && byte == b'\\',
                        };
                    }
                }
                At::Colon if byte == b':' => self.at = At::Value,
                At::Value if byte == b'[' && ARRAYS.contains(&self.key.as_slice()) => {
                    self.at = At::Element;
                }
                At::Value => {
                    self.start_value();
                    self.at = At::Capture { into_array: false };
                    continue;
                }
                At::Element => match byte {
                    b',' => {}
                    b']' => self.at = At::Key,
                    _ => {
                        self.start_value();
                        self.at = At::Capture { into_array: true };
                        continue;
                    }
                },
                At::Done => return Err(Malformed::Trailing),
                At::Start | At::Colon => return Err(Malformed::Unexpected(byte)),
            }
            i += 1;
        }
        Ok(())
    }

    /// Checks that the object closed.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.at == At::Done {
            Ok(())
        } else {
            Err(Malformed::Truncated)
        }
    }

    fn start_value(&mut self) {
        self.value.clear();
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
    }

    /// How much of `bytes` belongs to the value being captured, and whether it ends there.
    /// A scalar (number, `true`, `false`, `null`) ends before the byte that follows it.
    fn capture(&mut self, bytes: &[u8]) -> Captured {
        let first = self.value.first().copied().unwrap_or(bytes[0]);
        let scalar = !matches!(first, b'{' | b'[' | b'"');
        for (index, &byte) in bytes.iter().enumerate() {
            if scalar {
                if matches!(byte, b',' | b'}' | b']') || byte.is_ascii_whitespace() {
                    return Captured {
                        taken: index,
                        complete: true,
                    };
                }
                continue;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if byte == b'\\' {
                    self.escape = true;
                } else if byte == b'"' {
                    self.in_string = false;
                    if self.depth == 0 {
                        return Captured {
                            taken: index + 1,
                            complete: true,
                        };
                    }
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        return Captured {
                            taken: index + 1,
                            complete: true,
                        };
                    }
                }
                _ => {}
            }
        }
        Captured {
            taken: bytes.len(),
            complete: false,
        }
    }

    fn complete(&mut self, into_array: bool, out: &mut Vec<Piece>) -> Result<(), Malformed> {
        let value = std::mem::take(&mut self.value);
        if value.is_empty() {
            // A scalar cannot be empty: the byte that ended it is not a value's start.
            return Err(Malformed::Unexpected(b','));
        }
        if into_array {
            out.push(Piece::Item(value));
            self.at = At::Element;
        } else {
            let key = String::from_utf8_lossy(&self.key).into_owned();
            out.push(Piece::Field(key, value));
            self.at = At::Key;
        }
        Ok(())
    }
}

/// The part of a chunk a value took.
struct Captured {
    taken: usize,
    complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Scans `text` fed in chunks of `size` bytes.
    fn scan(text: &[u8], size: usize) -> Result<Vec<Piece>, Malformed> {
        let mut scanner = Scanner::new(1 << 20);
        let mut out = Vec::new();
        for chunk in text.chunks(size.max(1)) {
            scanner.feed(chunk, &mut out)?;
        }
        scanner.finish()?;
        Ok(out)
    }

    /// The pieces put back together as a JSON object.
    fn rebuild(pieces: &[Piece]) -> Value {
        let mut object = serde_json::Map::new();
        let mut items = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Item(raw) => items.push(serde_json::from_slice(raw).unwrap()),
                Piece::Field(key, raw) => {
                    object.insert(key.clone(), serde_json::from_slice(raw).unwrap());
                }
            }
        }
        if !items.is_empty() {
            object.insert("items".into(), Value::Array(items));
        }
        Value::Object(object)
    }

    #[test]
    fn a_list_splits_into_its_items_and_other_members_in_any_chunking() {
        let list = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "12", "continue": ""},
            "items": [{"metadata": {"name": "a", "annotations": {"x": "}]\"{["}}},
                      {"metadata": {"name": "b"}, "n": -1.5e3, "t": true, "z": null, "s": "\\"}]});
        let text = serde_json::to_vec_pretty(&list).unwrap();
        for size in [1, 2, 3, 7, 64, text.len()] {
            let pieces = scan(&text, size).unwrap();
            assert_eq!(rebuild(&pieces), list, "chunks of {size}");
            let items = pieces
                .iter()
                .filter(|p| matches!(p, Piece::Item(_)))
                .count();
            assert_eq!(items, 2);
        }
    }

    #[test]
    fn scalars_tables_and_empty_arrays() {
        let table =
            br#"{"kind":"Table","rows":[],"columnDefinitions":[{"name":"Name"}],"n":5,"b":false}"#;
        let pieces = scan(table, 4).unwrap();
        assert_eq!(
            pieces,
            [
                Piece::Field("kind".into(), br#""Table""#.to_vec()),
                Piece::Field("columnDefinitions".into(), br#"[{"name":"Name"}]"#.to_vec()),
                Piece::Field("n".into(), b"5".to_vec()),
                Piece::Field("b".into(), b"false".to_vec()),
            ]
        );
        let rows = scan(br#"{"rows":[{"cells":["a"]} , {"cells":["b"]}]}"#, 5).unwrap();
        assert_eq!(rows.len(), 2);
    }

    #[test]
    fn what_is_not_one_object_is_an_error() {
        for bad in [
            &b"[1,2]"[..],
            b"{\"a\":1",
            b"{\"a\":1}x",
            b"{\"a\" 1}",
            b"{1:2}",
            b"{\"a\":,}",
            b"",
        ] {
            assert!(scan(bad, 3).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut scanner = Scanner::new(8);
        let error = scanner
            .feed(br#"{"items":[{"much too long":1}]}"#, &mut Vec::new())
            .unwrap_err();
        assert_eq!(error, Malformed::TooLarge(8));
    }
}
