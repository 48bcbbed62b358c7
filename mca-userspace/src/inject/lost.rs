//! Whether a JSON document kept everything of another: the invariant of injection, which only
//! adds to the pod it is given (besides the automounted token it replaces).
//!
//! Lists are compared as sets: each element of the original must be kept by some element of
//! the result, since injection inserts MCA's container before the others and appends to the
//! lists it extends, shifting indexes.

use serde_json::Value;

/// The path of the first value of `original` that `result` does not keep, if any: an object
/// keeps another when it keeps each of its fields, a list when each element is kept by one of
/// its own, a scalar when it is equal. A `null` is kept by anything: to the API server it is a
/// field not set (`env:` left empty in YAML), which injection may set.
pub fn first_lost(original: &Value, result: &Value) -> Option<String> {
    lost_at(original, result, &mut String::new())
}

fn lost_at(original: &Value, result: &Value, path: &mut String) -> Option<String> {
    match (original, result) {
        (Value::Null, _) => None,
        (Value::Object(fields), Value::Object(kept)) => {
            for (key, value) in fields {
                let len = path.len();
                path.push('/');
                path.push_str(key);
                let lost = match kept.get(key) {
                    Some(kept) => lost_at(value, kept, path),
                    None => Some(path.clone()),
                };
                if lost.is_some() {
                    return lost;
                }
                path.truncate(len);
            }
            None
        }
        (Value::Array(items), Value::Array(kept)) => {
            for (index, item) in items.iter().enumerate() {
                if !kept
                    .iter()
                    .any(|candidate| lost_at(item, candidate, &mut String::new()).is_none())
                {
                    return Some(format!("{path}/{index}"));
                }
            }
            None
        }
        (original, result) if original == result => None,
        _ => Some(if path.is_empty() {
            "/".to_owned()
        } else {
            path.clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn additions_keep_and_losses_are_named() {
        let original = json!({"spec": {"a": 1, "list": [{"name": "x", "v": [1, 2]}]}});
        let added = json!({"spec": {"a": 1, "b": 2,
                                    "list": [{"name": "mca"}, {"name": "x", "v": [2, 1, 3]}]}});
        assert_eq!(first_lost(&original, &added), None);
        assert_eq!(first_lost(&original, &original), None);
        let changed = json!({"spec": {"a": 2, "list": [{"name": "x", "v": [1, 2]}]}});
        assert_eq!(first_lost(&original, &changed).as_deref(), Some("/spec/a"));
        let dropped = json!({"spec": {"a": 1, "list": [{"name": "x", "v": [1]}]}});
        assert_eq!(
            first_lost(&original, &dropped).as_deref(),
            Some("/spec/list/0")
        );
        let missing = json!({"spec": {"list": [{"name": "x", "v": [1, 2]}]}});
        assert_eq!(first_lost(&original, &missing).as_deref(), Some("/spec/a"));
        assert_eq!(first_lost(&json!(1), &json!("1")).as_deref(), Some("/"));
        // `env:` left empty is no env at all: injection may give the container one.
        let unset = json!({"containers": [{"name": "app", "env": null}]});
        let set = json!({"containers": [{"name": "app", "env": [{"name": "K", "value": "v"}]}]});
        assert_eq!(first_lost(&unset, &set), None);
    }
}
