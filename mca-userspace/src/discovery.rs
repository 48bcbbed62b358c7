//! Discovery merged across clusters, for `discovery: merged`: kubectl and client-go learn
//! which resources exist from `/api`, `/apis` and `/apis/<group>/<version>`, and when the
//! resources an application uses live on different clusters, MCA must present them as one API
//! server's. Each healthy cluster is asked, in the order the default route names them and then
//! the rest, and the answers are joined: groups, versions and resources are the union, and
//! where clusters disagree (a group's preferred version, a resource's details) the first
//! cluster's answer wins.
//!
//! Both discovery formats are merged: the aggregated `apidiscovery.k8s.io/v2`
//! `APIGroupDiscoveryList` when the client asks for it and every cluster answers with it, and
//! otherwise the legacy documents (`APIVersions`, `APIGroupList`, `APIGroup`,
//! `APIResourceList`), which client-go then walks group by group. `/version` and the OpenAPI
//! documents are not merged: they come from the default route's cluster.

use serde_json::Value;

/// The content type of aggregated discovery.
pub const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A discovery document MCA merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `/api`: `APIVersions`, or the core group as aggregated discovery.
    Api,
    /// `/apis`: `APIGroupList`, or every other group as aggregated discovery.
    Apis,
    /// `/apis/<group>`: `APIGroup`.
    Group,
    /// `/api/v1` or `/apis/<group>/<version>`: `APIResourceList`.
    Resources,
}

impl Document {
    /// The document a `GET` of `path` (decoded, without query) asks for, if any.
    pub fn of(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["api"] => Some(Self::Api),
            ["apis"] => Some(Self::Apis),
            ["api", _] => Some(Self::Resources),
            ["apis", _] => Some(Self::Group),
            ["apis", _, _] => Some(Self::Resources),
            _ => None,
        }
    }

    /// Whether the document can come in the aggregated format.
    pub fn may_be_aggregated(self) -> bool {
        matches!(self, Self::Api | Self::Apis)
    }
}

/// Whether an `Accept` header asks for aggregated discovery (version `v2`).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let parameters: Vec<&str> = media.split(';').map(str::trim).collect();
        ["g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"]
            .iter()
            .all(|wanted| parameters.contains(wanted))
    })
}

/// Whether a response's `Content-Type` is aggregated discovery.
pub fn is_aggregated(content_type: &str) -> bool {
    content_type
        .replace(' ', "")
        .contains("as=APIGroupDiscoveryList")
}

/// Joins the documents of several clusters, first first. `aggregated` says which format they
/// are all in.
pub fn merge(document: Document, aggregated: bool, answers: Vec<Value>) -> Value {
    let mut answers = answers.into_iter();
    let Some(mut merged) = answers.next() else {
        return Value::Null;
    };
    for answer in answers {
        match (document, aggregated) {
            (_, true) => join_by(
                &mut merged,
                &answer,
                "items",
                group_name,
                join_group_discovery,
            ),
            (Document::Api, false) => union_strings(&mut merged, &answer, "versions"),
            (Document::Apis, false) => join_by(&mut merged, &answer, "groups", name, join_group),
            (Document::Group, false) => join_group(&mut merged, &answer),
            (Document::Resources, false) => {
                join_by(&mut merged, &answer, "resources", name, |_, _| {})
            }
        }
    }
    merged
}

fn name(value: &Value) -> Option<&str> {
    value["name"].as_str()
}

fn group_name(value: &Value) -> Option<&str> {
    value["metadata"]["name"].as_str()
}

fn version(value: &Value) -> Option<&str> {
    value["version"].as_str()
}

fn group_version(value: &Value) -> Option<&str> {
    value["groupVersion"].as_str()
}

fn resource(value: &Value) -> Option<&str> {
    value["resource"].as_str()
}

/// `APIGroup`s: versions joined; the preferred version stays the first cluster's.
fn join_group(into: &mut Value, from: &Value) {
    join_by(into, from, "versions", group_version, |_, _| {});
}

/// An aggregated group: versions joined, and within a version the resources.
fn join_group_discovery(into: &mut Value, from: &Value) {
    join_by(into, from, "versions", version, |into, from| {
        join_by(into, from, "resources", resource, |_, _| {});
    });
}

/// Joins the array `field` of `from` into that of `into`: entries with a new key (`key`) are
/// appended; entries with a key already there are joined by `join`.
fn join_by(
    into: &mut Value,
    from: &Value,
    field: &str,
    key: fn(&Value) -> Option<&str>,
    join: impl Fn(&mut Value, &Value),
) {
    let Some(incoming) = from[field].as_array() else {
        return;
    };
    let Some(object) = into.as_object_mut() else {
        return;
    };
    let entries = object
        .entry(field)
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entries.is_array() {
        *entries = Value::Array(Vec::new());
    }
    let entries = entries.as_array_mut().expect("made an array");
    for entry in incoming {
        let Some(wanted) = key(entry) else { continue };
        match entries.iter_mut().find(|e| key(e) == Some(wanted)) {
            Some(existing) => join(existing, entry),
            None => entries.push(entry.clone()),
        }
    }
}

/// Joins the array of strings `field`.
fn union_strings(into: &mut Value, from: &Value, field: &str) {
    let (Some(incoming), Some(object)) = (from[field].as_array(), into.as_object_mut()) else {
        return;
    };
    let entries = object
        .entry(field)
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(entries) = entries.as_array_mut() {
        for entry in incoming {
            if !entries.contains(entry) {
                entries.push(entry.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_by_path() {
        assert_eq!(Document::of("/api"), Some(Document::Api));
        assert_eq!(Document::of("/apis/"), Some(Document::Apis));
        assert_eq!(Document::of("/api/v1"), Some(Document::Resources));
        assert_eq!(Document::of("/apis/apps"), Some(Document::Group));
        assert_eq!(Document::of("/apis/apps/v1"), Some(Document::Resources));
        assert_eq!(Document::of("/api/v1/pods"), None);
        assert_eq!(Document::of("/version"), None);
        assert_eq!(Document::of("/openapi/v3"), None);
    }

    #[test]
    fn accept_and_content_types() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                       application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
                       application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(is_aggregated(AGGREGATED));
        assert!(!is_aggregated("application/json"));
    }

    #[test]
    fn legacy_documents_are_joined_first_wins() {
        let a = json!({"kind": "APIGroupList", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]});
        let b = json!({"kind": "APIGroupList", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v2", "version": "v2"},
                                          {"groupVersion": "apps/v1", "version": "v1"}],
             "preferredVersion": {"groupVersion": "apps/v2", "version": "v2"}},
            {"name": "example.com", "versions": [{"groupVersion": "example.com/v1", "version": "v1"}]}]});
        let merged = merge(Document::Apis, false, vec![a, b]);
        let groups = merged["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0]["preferredVersion"]["version"], "v1");
        let versions: Vec<&str> = groups[0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v1", "v2"]);
        assert_eq!(groups[1]["name"], "example.com");

        let merged = merge(
            Document::Resources,
            false,
            vec![
                json!({"groupVersion": "v1", "resources": [{"name": "pods", "kind": "Pod"}]}),
                json!({"groupVersion": "v1", "resources": [{"name": "pods", "kind": "Other"},
                                                           {"name": "configmaps"}]}),
            ],
        );
        assert_eq!(merged["resources"].as_array().unwrap().len(), 2);
        assert_eq!(merged["resources"][0]["kind"], "Pod");

        let merged = merge(
            Document::Api,
            false,
            vec![
                json!({"kind": "APIVersions", "versions": ["v1"]}),
                json!({"kind": "APIVersions", "versions": ["v1", "v2"]}),
            ],
        );
        assert_eq!(merged["versions"], json!(["v1", "v2"]));
        assert_eq!(merged["kind"], "APIVersions");
    }

    #[test]
    fn aggregated_documents_are_joined_by_group_version_and_resource() {
        let group = |name: &str, version: &str, resources: &[&str]| {
            let resources: Vec<Value> = resources.iter().map(|r| json!({"resource": r})).collect();
            json!({"metadata": {"name": name},
                   "versions": [{"version": version, "resources": resources}]})
        };
        let a = json!({"kind": "APIGroupDiscoveryList",
                       "items": [group("example.com", "v1", &["widgets"])]});
        let b = json!({"kind": "APIGroupDiscoveryList",
                       "items": [group("example.com", "v1", &["gadgets", "widgets"]),
                                 group("example.com", "v2", &["widgets"]),
                                 group("other.io", "v1", &["things"])]});
        let merged = merge(Document::Apis, true, vec![a, b]);
        let items = merged["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        let versions = items[0]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        let v1: Vec<&str> = versions[0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["resource"].as_str().unwrap())
            .collect();
        assert_eq!(v1, ["widgets", "gadgets"]);
    }

    #[test]
    fn nothing_to_merge_and_odd_shapes() {
        assert_eq!(merge(Document::Api, false, vec![]), Value::Null);
        // Documents without the expected arrays are joined as far as they go, not panicked on.
        let merged = merge(
            Document::Apis,
            false,
            vec![
                json!({"kind": "x"}),
                json!({"groups": "not an array"}),
                json!([1, 2]),
            ],
        );
        assert_eq!(merged, json!({"kind": "x"}));
    }
}
