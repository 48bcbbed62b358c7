//! Joining what several clusters answer into what one API server would: lists (plain and
//! `Table`, kubectl's default) and watch events. Every object is annotated with the cluster
//! it came from, and Tables get a `Cluster` column, so `kubectl get` shows where each row
//! lives.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    shallow::{self, Shallow},
    token::Versions,
};

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

/// A watch event as a cluster sent it, read as far as merging needs.
#[derive(Debug)]
pub struct WatchEvent<'a> {
    /// Its `type`: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: Cow<'a, str>,
    /// Its `object`.
    pub object: Object<'a>,
}

/// A watch event's object.
#[derive(Debug)]
pub enum Object<'a> {
    /// A Table (`kubectl get -w`), parsed whole: each row gets the `Cluster` cell.
    Table(Value),
    /// Any other object, read no deeper than its `metadata` (read member by member).
    Plain(Shallow<'a>),
}

impl<'a> WatchEvent<'a> {
    /// Reads one line of a watch; `None` when it is not a watch event (no `type`, or an
    /// `object` that is not a JSON object).
    pub fn parse(line: &'a [u8]) -> Option<Self> {
        #[derive(Deserialize)]
        struct Line<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(borrow)]
            object: Shallow<'a>,
        }
        let Line { kind, mut object } = serde_json::from_str(shallow::text(line)?).ok()?;
        if kind.is_empty() {
            return None;
        }
        let object = if object.str("kind").is_some_and(|kind| kind == "Table") {
            Object::Table(serde_json::from_slice(&object.to_vec()).ok()?)
        } else {
            object.object("metadata");
            Object::Plain(object)
        };
        Some(Self { kind, object })
    }

    /// The version the event brings its cluster to: its object's (a Table's first row's).
    pub fn version(&self) -> Option<Cow<'_, str>> {
        match &self.object {
            Object::Table(table) => table["rows"][0]["object"]["metadata"]["resourceVersion"]
                .as_str()
                .map(Cow::Borrowed),
            Object::Plain(object) => object.read_object("metadata")?.str("resourceVersion"),
        }
    }

    /// Whether it is the bookmark that ends a watch's initial events.
    fn ends_initial_events(&self) -> bool {
        if self.kind != "BOOKMARK" {
            return false;
        }
        match &self.object {
            Object::Table(table) => {
                table["metadata"]["annotations"][INITIAL_EVENTS_END].as_str() == Some("true")
            }
            Object::Plain(object) => object
                .str_at(&["metadata", "annotations", INITIAL_EVENTS_END])
                .is_some_and(|end| end == "true"),
        }
    }
}

/// What a watch event from `cluster` becomes in the merged stream.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// Send this line; the client then holds the composite `version`.
    Send {
        /// The event, rewritten, with its newline.
        line: Vec<u8>,
        /// The composite version it carries.
        version: String,
    },
    /// The cluster's initial events are done (a `k8s.io/initial-events-end` bookmark): send
    /// one such bookmark once every cluster's are.
    InitialEventsEnd,
}

/// The annotation a bookmark carries at the end of a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Rewrites one watch event from `cluster` (never an `ERROR`: the cluster's watch handles
/// those): its object is annotated (a Table's rows get the `Cluster` cell) and its
/// `resourceVersion` becomes the composite of every cluster's latest, updated with this
/// one's, so a client can resume the merged watch from any event. Of a plain object only
/// `metadata` is rewritten; the rest is copied as the cluster wrote it.
pub fn event(event: WatchEvent<'_>, cluster: &str, versions: &mut Versions) -> Event {
    if let Some(version) = event.version() {
        versions.0.insert(cluster.to_owned(), version.into_owned());
    }
    if event.ends_initial_events() {
        return Event::InitialEventsEnd;
    }
    let bookmark = event.kind == "BOOKMARK";
    let composite = versions.encode();
    let mut line = Vec::with_capacity(512);
    line.extend_from_slice(br#"{"type":"#);
    serde_json::to_writer(&mut line, &event.kind).expect("a string serializes");
    line.extend_from_slice(br#","object":"#);
    match event.object {
        Object::Table(mut table) => {
            if let Some(rows) = table["rows"].as_array_mut() {
                for row in rows.iter_mut().filter(|row| row["object"].is_object()) {
                    mark_row(row, cluster);
                    row["object"]["metadata"]["resourceVersion"] = json!(composite);
                }
            }
            if table["columnDefinitions"]
                .as_array()
                .is_some_and(|columns| !columns.is_empty())
            {
                add_cluster_column(&mut table);
            }
            serde_json::to_writer(&mut line, &table).expect("JSON values serialize");
        }
        Object::Plain(mut object) => {
            let metadata = object.object("metadata");
            if !bookmark {
                metadata
                    .object("annotations")
                    .set(CLUSTER_ANNOTATION, cluster);
            }
            metadata.set("resourceVersion", &composite);
            object.write(&mut line).expect("writing to memory");
        }
    }
    line.extend_from_slice(b"}\n");
    Event::Send {
        line,
        version: composite,
    }
}

/// The merged initial-events-end bookmark, at the composite `version`.
pub fn initial_events_end(version: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "type": "BOOKMARK",
        "object": {"metadata": {"resourceVersion": version,
                                "annotations": {INITIAL_EVENTS_END: "true"}}}
    }))
    .expect("JSON values serialize");
    line.push(b'\n');
    line
}

/// Marks an object with its cluster.
pub fn annotate(object: &mut Value, cluster: &str) {
    if !object.is_object() {
        return;
    }
    let metadata = &mut object["metadata"];
    if !metadata.is_object() {
        *metadata = json!({});
    }
    let annotations = &mut metadata["annotations"];
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[CLUSTER_ANNOTATION] = json!(cluster);
}

/// The object `raw` (JSON) marked with its cluster, written to `out`, and returned (its
/// `metadata` read, see [`Shallow::object`]); `None` when `raw` is not an object. The result
/// is what [`annotate`] makes of the whole object, but only `metadata` is parsed.
pub fn annotate_raw<'a>(
    raw: &'a [u8],
    cluster: &str,
    mut out: impl std::io::Write,
) -> Result<Option<Shallow<'a>>, serde_json::Error> {
    let Some(mut object) = Shallow::parse(raw)? else {
        let object: Value = serde_json::from_slice(raw)?;
        serde_json::to_writer(out, &object)?;
        return Ok(None);
    };
    object
        .object("metadata")
        .object("annotations")
        .set(CLUSTER_ANNOTATION, cluster);
    object.write(&mut out).map_err(serde_json::Error::io)?;
    Ok(Some(object))
}

/// A Table row: its object annotated, and the cluster as its last cell.
pub fn mark_row(row: &mut Value, cluster: &str) {
    if !row.is_object() {
        return;
    }
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

    /// What `event` makes of `line` from `cluster`, as JSON.
    fn merged(line: &[u8], cluster: &str, seen: &mut Versions) -> Value {
        let parsed = WatchEvent::parse(line).expect("a watch event");
        let Event::Send { line, version } = event(parsed, cluster, seen) else {
            panic!("an event to send");
        };
        assert_eq!(line.last(), Some(&b'\n'));
        let sent: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(version, seen.encode());
        sent
    }

    #[test]
    fn events_carry_the_composite_version_and_their_cluster() {
        let mut seen = versions(&[("east", "10"), ("west", "7")]);
        let line = br#"{"type":"ADDED","object":{"metadata":{"name":"a","resourceVersion":"12"}}}"#;
        let sent = merged(line, "east", &mut seen);
        assert_eq!(seen, versions(&[("east", "12"), ("west", "7")]));
        assert_eq!(sent["type"], "ADDED");
        assert_eq!(sent["object"]["metadata"]["resourceVersion"], seen.encode());
        assert_eq!(
            sent["object"]["metadata"]["annotations"][CLUSTER_ANNOTATION],
            "east"
        );

        let table = br#"{"type":"MODIFIED","object":{"kind":"Table","columnDefinitions":[],
            "rows":[{"cells":["a"],"object":{"metadata":{"name":"a","resourceVersion":"8"}}},7]}}"#;
        let sent = merged(table, "west", &mut seen);
        assert_eq!(seen.0["west"], "8");
        assert_eq!(sent["object"]["rows"][0]["cells"], json!(["a", "west"]));
        assert_eq!(
            sent["object"]["rows"][0]["object"]["metadata"]["resourceVersion"],
            seen.encode()
        );
        assert_eq!(
            sent["object"]["rows"][1], 7,
            "a row that is not one is left"
        );
        assert_eq!(sent["object"]["columnDefinitions"], json!([]));

        // A bookmark's version moves, it is not annotated.
        let bookmark =
            br#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"15"}}}"#;
        let sent = merged(bookmark, "west", &mut seen);
        assert_eq!(seen.0["west"], "15");
        assert!(sent["object"]["metadata"].get("annotations").is_none());

        let end = br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"20",
            "annotations":{"k8s.io/initial-events-end":"true"}}}}"#;
        let parsed = WatchEvent::parse(end).unwrap();
        assert_eq!(event(parsed, "west", &mut seen), Event::InitialEventsEnd);
        assert_eq!(seen.0["west"], "20");
        let end: Value = serde_json::from_slice(&initial_events_end(&seen.encode())).unwrap();
        assert_eq!(end["object"]["metadata"]["resourceVersion"], seen.encode());
    }

    #[test]
    fn what_is_not_a_watch_event_is_not_read_as_one() {
        for line in [
            &b"{}"[..],
            br#"{"type":"","object":{}}"#,
            br#"{"type":"ADDED"}"#,
            br#"{"type":"ADDED","object":"a pod"}"#,
            br#"{"type":"ADDED","object":{"metadata":}}"#,
            b"[]",
        ] {
            assert!(
                WatchEvent::parse(line).is_none(),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn an_event_rewritten_from_its_metadata_is_the_event_rewritten_whole() {
        let line = br#"{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"a","resourceVersion":"31","annotations":{"x":"1"}},"spec":{"containers":[{"name":"app","image":"i"}]},"status":{"phase":"Running"}}}"#;
        let mut seen = Versions::default();
        let sent = merged(line, "east", &mut seen);
        let mut whole: Value = serde_json::from_slice(line).unwrap();
        annotate(&mut whole["object"], "east");
        whole["object"]["metadata"]["resourceVersion"] = json!(seen.encode());
        assert_eq!(sent, whole);
        let Event::Send { line: text, .. } =
            event(WatchEvent::parse(line).unwrap(), "east", &mut seen)
        else {
            panic!("an event to send");
        };
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r#""spec":{"containers":[{"name":"app","image":"i"}]}"#),
            "copied as the cluster wrote it: {text}"
        );
    }

    #[test]
    fn an_object_annotated_from_its_bytes_is_the_object_annotated_whole() {
        let raw = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"a","annotations":{"x":"1"}},"spec":{"containers":[{"name":"app","image":"i"}]},"status":{"phase":"Running"}}"#;
        let mut fast = Vec::new();
        let object = annotate_raw(raw, "east", &mut fast).unwrap().unwrap();
        let mut whole: Value = serde_json::from_slice(raw).unwrap();
        annotate(&mut whole, "east");
        assert_eq!(serde_json::from_slice::<Value>(&fast).unwrap(), whole);
        let fast = String::from_utf8(fast).unwrap();
        assert!(
            fast.contains(r#""spec":{"containers":[{"name":"app","image":"i"}]}"#),
            "copied as the cluster wrote it: {fast}"
        );
        assert_eq!(object.value("metadata").unwrap(), whole["metadata"]);

        // No metadata, or not an object: as `annotate` does.
        let mut out = Vec::new();
        let object = annotate_raw(br#"{"kind":"Pod"}"#, "east", &mut out).unwrap();
        let metadata = object.unwrap().value("metadata").unwrap();
        assert_eq!(metadata["annotations"][CLUSTER_ANNOTATION], "east");
        let mut out = Vec::new();
        assert!(annotate_raw(b"[1, 2]", "east", &mut out).unwrap().is_none());
        assert_eq!(out, b"[1,2]");
        assert!(annotate_raw(br#"{"kind": "Pod""#, "east", &mut Vec::new()).is_err());
    }
}
