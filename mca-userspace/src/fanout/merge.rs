//! Joining what several clusters answer into what one API server would: lists (plain and
//! `Table`, kubectl's default) and watch events. Every object is annotated with the cluster
//! it came from, and Tables get a `Cluster` column, so `kubectl get` shows where each row
//! lives.

use std::collections::BTreeMap;

use serde_json::{Value, json, value::RawValue};

use super::token::Versions;

/// The annotation naming the cluster an object came from.
pub const CLUSTER_ANNOTATION: &str = "mca.multicluster.dev/cluster";

/// One cluster's page of a list.
#[derive(Debug)]
pub struct Page {
    /// The cluster.
    pub cluster: String,
    /// Its list (or Table) as it answered.
    pub list: Value,
}

impl Page {
    /// The cluster's own `resourceVersion` of the list.
    pub fn version(&self) -> Option<&str> {
        self.list["metadata"]["resourceVersion"].as_str()
    }

    /// The cluster's own `continue` token, if it has more.
    pub fn continues(&self) -> Option<&str> {
        self.list["metadata"]["continue"]
            .as_str()
            .filter(|token| !token.is_empty())
    }
}

/// Joins pages (in cluster order) into one list whose `resourceVersion` is `versions` and
/// whose `continue` is `next`.
pub fn lists(pages: Vec<Page>, versions: &Versions, next: Option<String>) -> Value {
    let mut pages = pages.into_iter();
    let Some(first) = pages.next() else {
        return Value::Null;
    };
    let table = first.list["kind"] == "Table";
    let mut merged = first.list.clone();
    let field = if table { "rows" } else { "items" };
    let mut entries = Vec::new();
    for page in std::iter::once(first).chain(pages) {
        let mut list = page.list;
        if let Some(items) = list[field].as_array_mut() {
            for item in items.iter_mut() {
                if table {
                    mark_row(item, &page.cluster);
                } else {
                    annotate(item, &page.cluster);
                }
            }
            entries.append(items);
        }
    }
    if table {
        add_cluster_column(&mut merged);
    }
    merged[field] = Value::Array(entries);
    let metadata = &mut merged["metadata"];
    if !metadata.is_object() {
        *metadata = json!({});
    }
    metadata["resourceVersion"] = json!(versions.encode());
    match next {
        Some(token) => metadata["continue"] = json!(token),
        None => {
            if let Some(metadata) = metadata.as_object_mut() {
                metadata.remove("continue");
            }
        }
    }
    if let Some(metadata) = metadata.as_object_mut() {
        // Counts of one cluster's remaining items mean nothing for the merged list.
        metadata.remove("remainingItemCount");
    }
    merged
}

/// What a watch event from `cluster` becomes in the merged stream.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Send this line.
    Send(Vec<u8>),
    /// The cluster's initial events are done (a `k8s.io/initial-events-end` bookmark): send
    /// one such bookmark once every cluster's are.
    InitialEventsEnd,
    /// Not a watch event; dropped.
    Garbage,
}

/// The annotation a bookmark carries at the end of a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Rewrites one watch event from `cluster` (never an `ERROR`: the cluster's watch handles
/// those): its object is annotated (a Table's rows get
/// the `Cluster` cell) and its `resourceVersion` becomes the composite of every cluster's
/// latest, updated with this one's, so a client can resume the merged watch from any event.
pub fn event(mut event: Value, cluster: &str, versions: &mut Versions) -> Event {
    let kind = event["type"].as_str().unwrap_or_default().to_owned();
    if kind.is_empty() {
        return Event::Garbage;
    }
    let object = &mut event["object"];
    let table = object["kind"] == "Table";
    // The object whose metadata carries the version: the event's, or each row's.
    let version = if table {
        object["rows"][0]["object"]["metadata"]["resourceVersion"].as_str()
    } else {
        object["metadata"]["resourceVersion"].as_str()
    };
    if let Some(version) = version {
        versions.0.insert(cluster.to_owned(), version.to_owned());
    }
    let composite = versions.encode();
    if kind == "BOOKMARK"
        && object["metadata"]["annotations"][INITIAL_EVENTS_END].as_str() == Some("true")
    {
        return Event::InitialEventsEnd;
    }
    if table {
        if let Some(rows) = object["rows"].as_array_mut() {
            for row in rows {
                mark_row(row, cluster);
                row["object"]["metadata"]["resourceVersion"] = json!(composite);
            }
        }
        if object["columnDefinitions"]
            .as_array()
            .is_some_and(|columns| !columns.is_empty())
        {
            add_cluster_column(object);
        }
    } else {
        if kind != "BOOKMARK" {
            annotate(object, cluster);
        }
        object["metadata"]["resourceVersion"] = json!(composite);
    }
    Event::Send(to_line(&event))
}

/// The merged initial-events-end bookmark, at `versions`.
pub fn initial_events_end(versions: &Versions) -> Vec<u8> {
    to_line(&json!({
        "type": "BOOKMARK",
        "object": {"metadata": {"resourceVersion": versions.encode(),
                                "annotations": {INITIAL_EVENTS_END: "true"}}}
    }))
}

fn to_line(value: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(value).expect("JSON values serialize");
    line.push(b'\n');
    line
}

/// Marks an object with its cluster.
pub fn annotate(object: &mut Value, cluster: &str) {
    if !object.is_object() {
        return;
    }
    annotate_metadata(&mut object["metadata"], cluster);
}

/// The object `raw` (JSON) marked with its cluster, written to `out`, and its annotated
/// `metadata`; `None` when `raw` is not an object. Only `metadata` is parsed: the other
/// members (`spec`, `status`: most of the bytes) are copied as the cluster wrote them, which
/// makes a merged list several times cheaper than parsing every object whole. Members come
/// out in key order, as from [`annotate`].
pub fn annotate_raw(
    raw: &[u8],
    cluster: &str,
    out: impl std::io::Write,
) -> Result<Option<Value>, serde_json::Error> {
    let Ok(mut members) = serde_json::from_slice::<BTreeMap<String, &RawValue>>(raw) else {
        let object: Value = serde_json::from_slice(raw)?;
        serde_json::to_writer(out, &object)?;
        return Ok(None);
    };
    let mut metadata: Value = match members.get("metadata") {
        Some(metadata) => serde_json::from_str(metadata.get())?,
        None => Value::Null,
    };
    annotate_metadata(&mut metadata, cluster);
    let written = RawValue::from_string(metadata.to_string())?;
    members.insert("metadata".to_owned(), &written);
    serde_json::to_writer(out, &members)?;
    Ok(Some(metadata))
}

/// `metadata` (made an object if it is not one) with the cluster annotation.
fn annotate_metadata(metadata: &mut Value, cluster: &str) {
    if !metadata.is_object() {
        *metadata = json!({});
    }
    let annotations = &mut metadata["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[CLUSTER_ANNOTATION] = json!(cluster);
}

/// A Table row: its object annotated, and the cluster as its last cell.
pub fn mark_row(row: &mut Value, cluster: &str) {
    annotate(&mut row["object"], cluster);
    if let Some(cells) = row["cells"].as_array_mut() {
        cells.push(json!(cluster));
    }
}

/// Adds the `Cluster` column to a Table's `columnDefinitions`.
pub fn add_cluster_column(table: &mut Value) {
    if let Some(columns) = table["columnDefinitions"].as_array_mut() {
        columns.push(json!({"name": "Cluster", "type": "string", "format": "",
                            "description": "The cluster MCA read the object from.",
                            "priority": 0}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(pairs: &[(&str, &str)]) -> Versions {
        Versions(
            pairs
                .iter()
                .map(|(c, v)| ((*c).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn lists_are_concatenated_and_annotated() {
        let pages = vec![
            Page {
                cluster: "east".into(),
                list: json!({"kind": "PodList", "apiVersion": "v1",
                             "metadata": {"resourceVersion": "10", "remainingItemCount": 3},
                             "items": [{"metadata": {"name": "a"}}]}),
            },
            Page {
                cluster: "west".into(),
                list: json!({"kind": "PodList", "metadata": {"resourceVersion": "7"},
                             "items": [{"metadata": {"name": "b", "annotations": {"x": "y"}}}]}),
            },
        ];
        let all = versions(&[("east", "10"), ("west", "7")]);
        let merged = lists(pages, &all, Some("next".into()));
        assert_eq!(merged["kind"], "PodList");
        assert_eq!(
            merged["items"][0]["metadata"]["annotations"][CLUSTER_ANNOTATION],
            "east"
        );
        assert_eq!(
            merged["items"][1]["metadata"]["annotations"][CLUSTER_ANNOTATION],
            "west"
        );
        assert_eq!(merged["items"][1]["metadata"]["annotations"]["x"], "y");
        assert_eq!(merged["metadata"]["resourceVersion"], all.encode());
        assert_eq!(merged["metadata"]["continue"], "next");
        assert!(merged["metadata"].get("remainingItemCount").is_none());
    }

    #[test]
    fn tables_get_a_cluster_column() {
        let table = |name: &str| {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "1"},
                   "columnDefinitions": [{"name": "Name"}],
                   "rows": [{"cells": [name], "object": {"metadata": {"name": name}}}]})
        };
        let pages = vec![
            Page {
                cluster: "east".into(),
                list: table("a"),
            },
            Page {
                cluster: "west".into(),
                list: table("b"),
            },
        ];
        let merged = lists(pages, &Versions::default(), None);
        assert_eq!(merged["columnDefinitions"].as_array().unwrap().len(), 2);
        assert_eq!(merged["columnDefinitions"][1]["name"], "Cluster");
        assert_eq!(merged["rows"][1]["cells"], json!(["b", "west"]));
        assert!(merged["metadata"].get("continue").is_none());
    }

    #[test]
    fn events_carry_the_composite_version_and_their_cluster() {
        let mut seen = versions(&[("east", "10"), ("west", "7")]);
        let line = br#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"12"}}}"#;
        let parse = |line: &[u8]| serde_json::from_slice::<Value>(line).unwrap();
        let Event::Send(sent) = event(parse(line), "east", &mut seen) else {
            panic!("an event");
        };
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(seen, versions(&[("east", "12"), ("west", "7")]));
        assert_eq!(sent["object"]["metadata"]["resourceVersion"], seen.encode());
        assert_eq!(
            sent["object"]["metadata"]["annotations"][CLUSTER_ANNOTATION],
            "east"
        );

        let table = br#"{"type":"MODIFIED","object":{"kind":"Table","columnDefinitions":[],
            "rows":[{"cells":["a"],"object":{"metadata":{"name":"a","resourceVersion":"8"}}}]}}"#;
        let Event::Send(sent) = event(parse(table), "west", &mut seen) else {
            panic!("an event");
        };
        let sent: Value = serde_json::from_slice(&sent).unwrap();
        assert_eq!(seen.0["west"], "8");
        assert_eq!(sent["object"]["rows"][0]["cells"], json!(["a", "west"]));
        assert_eq!(sent["object"]["columnDefinitions"], json!([]));

        let bookmark = br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"20",
            "annotations":{"k8s.io/initial-events-end":"true"}}}}"#;
        assert_eq!(
            event(parse(bookmark), "west", &mut seen),
            Event::InitialEventsEnd
        );
        assert_eq!(seen.0["west"], "20");
        let end: Value = serde_json::from_slice(&initial_events_end(&seen)).unwrap();
        assert_eq!(end["object"]["metadata"]["resourceVersion"], seen.encode());
        assert_eq!(event(parse(b"{}"), "east", &mut seen), Event::Garbage);
    }

    #[test]
    fn an_object_annotated_from_its_bytes_is_the_object_annotated_whole() {
        let raw = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"a","annotations":{"x":"1"}},"spec":{"containers":[{"name":"app","image":"i"}]},"status":{"phase":"Running"}}"#;
        let mut fast = Vec::new();
        let metadata = annotate_raw(raw, "east", &mut fast).unwrap().unwrap();
        let mut whole: Value = serde_json::from_slice(raw).unwrap();
        annotate(&mut whole, "east");
        assert_eq!(serde_json::from_slice::<Value>(&fast).unwrap(), whole);
        let fast = String::from_utf8(fast).unwrap();
        assert!(
            fast.contains(r#""spec":{"containers":[{"name":"app","image":"i"}]}"#),
            "copied as the cluster wrote it: {fast}"
        );
        assert_eq!(metadata, whole["metadata"]);
        assert_eq!(metadata["annotations"][CLUSTER_ANNOTATION], "east");

        // No metadata, or not an object: as `annotate` does.
        let mut out = Vec::new();
        let metadata = annotate_raw(br#"{"kind":"Pod"}"#, "east", &mut out).unwrap();
        assert_eq!(metadata.unwrap()["annotations"][CLUSTER_ANNOTATION], "east");
        let mut out = Vec::new();
        assert_eq!(annotate_raw(b"[1, 2]", "east", &mut out).unwrap(), None);
        assert_eq!(out, b"[1,2]");
        assert!(annotate_raw(br#"{"kind": "Pod""#, "east", &mut Vec::new()).is_err());
    }
}
