//! A request's query string, read the way the API server reads it, so that what MCA decides
//! from a parameter (a watch or a list, a deadline, a selector to route by) is what the
//! API server then does.
//!
//! Go's `url.ParseQuery` splits on `&` only and drops a pair that holds a `;` or a bad
//! `%` escape; the API server's parameter decoding then takes the *first* value of a
//! repeated parameter, and a boolean is false only when absent, `0` or `false` in any case
//! (`runtime.Convert_Slice_string_To_bool`). A reader that took any true value, or the last
//! one, could be told `?watch=false&watch=1` is a watch while the API server serves a full
//! list.

use std::borrow::Cow;

/// The parameters of `query` (without its `?`), in order, as Go's `url.ParseQuery` yields
/// them: split on `&`, empty pairs and pairs holding `;` or a bad escape dropped, `+` read
/// as a space.
pub fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.contains(';'))
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((unescape(key)?, unescape(value)?))
        })
}

/// The first value of `key` in `query`, the one the API server decodes.
pub fn first<'a>(query: &'a str, key: &str) -> Option<Cow<'a, str>> {
    pairs(query).find(|(k, _)| k == key).map(|(_, value)| value)
}

/// The boolean parameter `key` as the API server decodes it: false when absent, else false
/// only when its first value is `0` or `false` in any case (so `?watch=yes` and `?watch=`
/// are watches).
pub fn flag(query: &str, key: &str) -> bool {
    first(query, key).is_some_and(|value| value != "0" && !value.eq_ignore_ascii_case("false"))
}

/// `url.QueryUnescape`: `%XX` is a byte, `+` a space; `None` for a `%` without two hex
/// digits. Bytes that are not UTF-8 are replaced (the names MCA looks for are ASCII).
fn unescape(text: &str) -> Option<Cow<'_, str>> {
    if !text.contains(['%', '+']) {
        return Some(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes.get(at + 1..at + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                at += 3;
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    Some(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_read_from_the_first_value_as_the_api_server_does() {
        // (query, watch?)
        let cases = [
            ("", false),
            ("watch", true),
            ("watch=", true),
            ("watch=1", true),
            ("watch=true", true),
            ("watch=yes", true),
            ("watch=junk", true),
            ("watch=0", false),
            ("watch=false", false),
            ("watch=FALSE", false),
            ("watch=fAlSe", false),
            ("watch=false&watch=1", false),
            ("watch=0&watch=true", false),
            ("watch=1&watch=false", true),
            ("watch=false;watch=1", false),
            ("watch=1;x=2", false),
            ("x=1;y&watch=1", true),
            ("watch=%zz&watch=1", true),
            ("watch=%31", true),
            ("watch=%30", false),
            ("%77atch=1", true),
            ("watch+=1", false),
            ("Watch=1", false),
            ("&&watch=1&", true),
            ("limit=5&watch=f", true),
        ];
        for (query, watch) in cases {
            assert_eq!(flag(query, "watch"), watch, "{query:?}");
        }
    }

    #[test]
    fn values_are_the_first_one_unescaped() {
        assert_eq!(first("a=1&a=2", "a").as_deref(), Some("1"));
        assert_eq!(first("a=%zz&a=2", "a").as_deref(), Some("2"));
        assert_eq!(first("a=x%3Dy+z", "a").as_deref(), Some("x=y z"));
        assert_eq!(first("a=%ff", "a").as_deref(), Some("\u{fffd}"));
        assert_eq!(first("a=%4", "a"), None);
        assert_eq!(first("a", "a").as_deref(), Some(""));
        assert_eq!(first("b=1", "a"), None);
        let all: Vec<_> = pairs("a=1&;&b&c=%&d=2").collect();
        assert_eq!(
            all,
            [
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("d".into(), "2".into())
            ]
        );
    }
}
