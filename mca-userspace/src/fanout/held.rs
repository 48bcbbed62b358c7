//! What the client of a merged watch holds from each cluster: every object's name and
//! version (and, for a Table watch, its row's cells), so that when a cluster's history is
//! lost (resuming its watch answers `410 Expired`: it restarted and its watch cache begins
//! after the version MCA had) MCA can list that cluster again and send the client the
//! difference as ADDED, MODIFIED and DELETED events instead of an ERROR.
//!
//! A holding is only useful when it is complete. It is for a cluster whose watch began with
//! every object as an ADDED event (no `resourceVersion`, `0`, or `sendInitialEvents`), and
//! for one whose starting version is that of a merged list MCA served moments before (what
//! `kubectl get -w` and informers do: list, then watch from the list's version) or where a
//! merged watch ended at its `timeoutSeconds` (an informer's next watch starts there), which
//! [`Snapshots`] keeps briefly. Otherwise MCA does not know what the client holds and a lost
//! history ends the merged watch with one `410 Expired`, so the client lists again.
//!
//! Both are bounded: [`MAX_HELD`] objects per watch, [`MAX_SNAPSHOTS`] over every recent
//! list. An entry is a key, a version and for Tables the cells (some 100-200 bytes), so a
//! watch holds at most a few MB, and past the bound it forgets everything and falls back to
//! the one `410`: a client watching more than that across clusters relists on a lost
//! history, as it would against one API server whose watch cache expired.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    merge::{Object, WatchEvent},
    shallow::Shallow,
};

/// The most objects one merged watch remembers, over all its clusters.
pub const MAX_HELD: usize = 10_000;
/// The most objects the recent merged lists keep, over all of them.
pub const MAX_SNAPSHOTS: usize = 20_000;
/// How long a merged list's snapshot waits for the watch that follows it.
const SNAPSHOT_LIFE: Duration = Duration::from_secs(120);

/// One object the client holds.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    version: Box<str>,
    /// A Table row's cells (JSON), to send the row of a DELETED event.
    cells: Option<Box<str>>,
}

/// The objects of one cluster, by `namespace/name`.
type Objects = HashMap<Box<str>, Entry>;

/// What the client holds from each cluster of one merged watch.
#[derive(Debug, Default)]
pub struct Held {
    clusters: HashMap<String, Objects>,
    total: usize,
    /// Past [`MAX_HELD`]: nothing is remembered any more.
    overflowed: bool,
}

impl Held {
    /// Starts holding `cluster` from nothing: its watch sends every object as ADDED first.
    pub fn start_empty(&mut self, cluster: &str) {
        self.clusters.entry(cluster.to_owned()).or_default();
    }

    /// Starts holding `cluster` as a snapshot of the list the client had from it.
    fn start_from(&mut self, cluster: &str, objects: Objects) {
        self.total += objects.len();
        self.clusters.insert(cluster.to_owned(), objects);
        self.check_bound();
    }

    /// Whether the client's objects from `cluster` are all known.
    pub fn complete(&self, cluster: &str) -> bool {
        !self.overflowed && self.clusters.contains_key(cluster)
    }

    /// Records an event from `cluster` (its type and object, a Table's rows included) as the
    /// client will see it.
    pub fn observe(&mut self, cluster: &str, event: &WatchEvent<'_>) {
        if self.overflowed {
            return;
        }
        let Some(objects) = self.clusters.get_mut(cluster) else {
            return;
        };
        for (key, entry) in entries(&event.object) {
            let before = objects.len();
            match event.kind.as_ref() {
                "ADDED" | "MODIFIED" => {
                    objects.insert(key, entry);
                }
                "DELETED" => {
                    objects.remove(&key);
                }
                _ => {}
            }
            self.total = (self.total + objects.len()).saturating_sub(before);
        }
        self.check_bound();
    }

    /// The events that bring the client from what it holds of `cluster` to `list` (that
    /// cluster's list or Table, as it answered a fresh read), as that cluster's watch would
    /// send them; afterwards the client holds `list`.
    pub fn resync(&mut self, cluster: &str, list: &Value) -> Vec<Value> {
        let table = list["kind"] == "Table";
        let version = list["metadata"]["resourceVersion"].clone();
        let mut old = self.clusters.remove(cluster).unwrap_or_default();
        self.total = self.total.saturating_sub(old.len());
        let mut now = Objects::new();
        let mut events = Vec::new();
        let field = if table { "rows" } else { "items" };
        for item in list[field].as_array().into_iter().flatten() {
            let object = if table { &item["object"] } else { item };
            let Some((key, entry)) = entry(&object["metadata"], table.then_some(item)) else {
                continue;
            };
            let kind = match old.remove(&key) {
                Some(held) if held.version == entry.version => None,
                Some(_) => Some("MODIFIED"),
                None => Some("ADDED"),
            };
            if let Some(kind) = kind {
                events.push(one(kind, item.clone(), table));
            }
            now.insert(key, entry);
        }
        let mut gone: Vec<_> = old.into_iter().collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, held) in gone {
            let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
            let mut metadata = json!({"name": name, "resourceVersion": version});
            if !namespace.is_empty() {
                metadata["namespace"] = json!(namespace);
            }
            let item = if table {
                let cells = held
                    .cells
                    .and_then(|cells| serde_json::from_str(&cells).ok())
                    .unwrap_or_else(|| json!([name]));
                json!({"cells": cells, "object": {"kind": "PartialObjectMetadata",
                       "apiVersion": "meta.k8s.io/v1", "metadata": metadata}})
            } else {
                let kind = list["kind"].as_str().unwrap_or_default();
                json!({"kind": kind.strip_suffix("List").unwrap_or(kind),
                       "apiVersion": list["apiVersion"], "metadata": metadata})
            };
            events.push(one("DELETED", item, table));
        }
        self.start_from(cluster, now);
        events
    }

    fn check_bound(&mut self) {
        if self.total > MAX_HELD {
            self.clusters.clear();
            self.total = 0;
            self.overflowed = true;
        }
    }
}

/// A watch event of `kind` for `item` (an object, or a Table row).
fn one(kind: &str, item: Value, table: bool) -> Value {
    let object = if table {
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
               "columnDefinitions": [], "rows": [item]})
    } else {
        item
    };
    json!({"type": kind, "object": object})
}

/// The entries of an event's object: itself, or each row of a Table.
fn entries(object: &Object<'_>) -> Vec<(Box<str>, Entry)> {
    match object {
        Object::Table(table) => table["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|row| entry(&row["object"]["metadata"], Some(row)))
            .collect(),
        Object::Plain(object) => entry_of_plain(object).into_iter().collect(),
    }
}

/// An object's key and entry (with its Table `row`'s cells).
fn entry(metadata: &Value, row: Option<&Value>) -> Option<(Box<str>, Entry)> {
    let text = |key: &str| metadata[key].as_str().unwrap_or_default();
    Some(keyed(
        metadata["name"].as_str()?,
        text("namespace"),
        text("resourceVersion"),
        row.map(|row| row["cells"].to_string().into()),
    ))
}

/// An object's key and entry, from its `metadata` read member by member.
fn entry_of_plain(object: &Shallow<'_>) -> Option<(Box<str>, Entry)> {
    let metadata = object.read_object("metadata")?;
    let text = |key: &str| metadata.str(key).unwrap_or_default();
    Some(keyed(
        &metadata.str("name")?,
        &text("namespace"),
        &text("resourceVersion"),
        None,
    ))
}

/// An object's key (`namespace/name`) and entry.
fn keyed(name: &str, namespace: &str, version: &str, cells: Option<Box<str>>) -> (Box<str>, Entry) {
    let key = format!("{namespace}/{name}").into();
    let version = version.into();
    (key, Entry { version, cells })
}

/// One object of a list, as a snapshot keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept(Box<str>, Entry);

/// The objects of one cluster's list (or Table) `page`, as a snapshot keeps them.
pub fn kept(page: &Value) -> Vec<Kept> {
    let table = page["kind"] == "Table";
    let field = if table { "rows" } else { "items" };
    page[field]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| entry_of(item, table))
        .collect()
}

/// One item of a list (an object, or a Table's row), as a snapshot keeps it.
pub fn entry_of(item: &Value, table: bool) -> Option<Kept> {
    let (key, entry) = if table {
        entry(&item["object"]["metadata"], Some(item))?
    } else {
        entry(&item["metadata"], None)?
    };
    Some(Kept(key, entry))
}

/// An object of a list (its `metadata` read member by member), as a snapshot keeps it.
pub fn entry_of_object(object: &Shallow<'_>) -> Option<Kept> {
    let (key, entry) = entry_of_plain(object)?;
    Some(Kept(key, entry))
}

/// Which merged list a snapshot is of: the request's path and selectors, whether it was a
/// Table, and the composite version the list answered with (what the watch resumes from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    /// The path and the selectors (`labelSelector`, `fieldSelector`).
    pub what: String,
    /// Whether the list was a Table.
    pub table: bool,
    /// The composite `resourceVersion`.
    pub version: String,
}

/// A merged list as its client received it, cluster by cluster.
#[derive(Debug)]
struct Snapshot {
    key: ListKey,
    taken: Instant,
    clusters: HashMap<String, Objects>,
    /// Every page served (a paginated list is recorded page by page).
    finished: bool,
    size: usize,
}

/// The recent merged lists, for the watches that follow them. Shared by every request.
#[derive(Debug, Default, Clone)]
pub struct Snapshots(Arc<Mutex<Recent>>);

#[derive(Debug, Default)]
struct Recent {
    lists: VecDeque<Snapshot>,
    size: usize,
}

impl Snapshots {
    /// Records what one cluster's part of the merged list `key` showed (its [`kept`]);
    /// `last`: the merged list is complete with it.
    pub fn record(&self, key: &ListKey, cluster: &str, objects: Vec<Kept>, last: bool) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.expire(Instant::now());
        let position = recent.lists.iter().position(|s| s.key == *key);
        let snapshot = match position {
            Some(at) => &mut recent.lists[at],
            None => {
                recent.lists.push_back(Snapshot {
                    key: key.clone(),
                    taken: Instant::now(),
                    clusters: HashMap::new(),
                    finished: false,
                    size: 0,
                });
                recent.lists.back_mut().expect("just pushed")
            }
        };
        let added = objects.len();
        snapshot.size += added;
        snapshot.finished = last;
        snapshot
            .clusters
            .entry(cluster.to_owned())
            .or_default()
            .extend(objects.into_iter().map(|Kept(key, entry)| (key, entry)));
        recent.size += added;
        recent.bound();
    }

    /// Keeps what the client of a merged watch that ended holds, as the list `key` (its last
    /// version), for the watch it opens next; only when every one of `clusters` is known.
    pub fn keep(&self, key: ListKey, held: Held, clusters: &[String]) {
        if held.overflowed || !clusters.iter().all(|c| held.clusters.contains_key(c)) {
            return;
        }
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.expire(Instant::now());
        recent.size += held.total;
        recent.lists.push_back(Snapshot {
            key,
            taken: Instant::now(),
            clusters: held.clusters,
            finished: true,
            size: held.total,
        });
        recent.bound();
    }

    /// Starts `held` from the finished list `key` if one was recorded: each of `clusters`
    /// is held as that list showed it (a cluster the list lacked, as nothing: its watch has
    /// no version to resume from and sends every object first). False when there is none.
    pub fn resume(&self, key: &ListKey, clusters: &[String], held: &mut Held) -> bool {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.expire(Instant::now());
        let Some(at) = recent
            .lists
            .iter()
            .position(|s| s.key == *key && s.finished)
        else {
            return false;
        };
        let mut snapshot = recent.lists.remove(at).expect("found");
        recent.size -= snapshot.size;
        drop(recent);
        for cluster in clusters {
            match snapshot.clusters.remove(cluster) {
                Some(objects) => held.start_from(cluster, objects),
                None => held.start_empty(cluster),
            }
        }
        true
    }
}

impl Recent {
    /// Forgets the oldest snapshots until they hold at most [`MAX_SNAPSHOTS`] objects.
    fn bound(&mut self) {
        while self.size > MAX_SNAPSHOTS {
            let Some(oldest) = self.lists.pop_front() else {
                break;
            };
            self.size -= oldest.size;
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .lists
            .front()
            .is_some_and(|s| now.duration_since(s.taken) > SNAPSHOT_LIFE)
        {
            let oldest = self.lists.pop_front().expect("a front");
            self.size -= oldest.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, version: &str) -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": "ns", "resourceVersion": version}})
    }

    /// Records the event `kind` of `object` as a cluster's watch would send it.
    fn observe(held: &mut Held, cluster: &str, kind: &str, object: &Value) {
        let line = json!({"type": kind, "object": object}).to_string();
        held.observe(cluster, &WatchEvent::parse(line.as_bytes()).unwrap());
    }

    fn list(version: &str, pods: &[Value]) -> Value {
        json!({"kind": "PodList", "apiVersion": "v1",
               "metadata": {"resourceVersion": version}, "items": pods})
    }

    fn summary(events: &[Value]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_relist_becomes_the_difference_from_what_the_client_holds() {
        let mut held = Held::default();
        held.start_empty("east");
        for (name, version) in [("same", "1"), ("changed", "2"), ("deleted", "3")] {
            observe(&mut held, "east", "ADDED", &pod(name, version));
        }
        observe(&mut held, "east", "ADDED", &pod("gone-before", "4"));
        observe(&mut held, "east", "DELETED", &pod("gone-before", "5"));
        assert!(held.complete("east"));
        let now = list(
            "90",
            &[pod("same", "1"), pod("changed", "7"), pod("new", "8")],
        );
        let events = held.resync("east", &now);
        assert_eq!(
            summary(&events),
            [
                ("MODIFIED".into(), "changed".into()),
                ("ADDED".into(), "new".into()),
                ("DELETED".into(), "deleted".into()),
            ]
        );
        let deleted = &events[2]["object"];
        assert_eq!(deleted["kind"], "Pod");
        assert_eq!(deleted["metadata"]["namespace"], "ns");
        assert_eq!(deleted["metadata"]["resourceVersion"], "90");
        // What it holds now is the list: the same list again changes nothing.
        assert!(held.resync("east", &now).is_empty());
    }

    #[test]
    fn a_table_relist_sends_rows_and_deleted_rows_keep_their_cells() {
        let row = |name: &str, version: &str, phase: &str| {
            json!({"cells": [name, phase], "object": {"kind": "PartialObjectMetadata",
                   "metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}})
        };
        let table = |rows: Vec<Value>| {
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"resourceVersion": "50"}, "columnDefinitions": [], "rows": rows})
        };
        let mut held = Held::default();
        held.start_empty("west");
        observe(
            &mut held,
            "west",
            "ADDED",
            &table(vec![row("a", "1", "Running")]),
        );
        let events = held.resync("west", &table(vec![row("b", "2", "Pending")]));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["type"], "ADDED");
        assert_eq!(events[0]["object"]["kind"], "Table");
        assert_eq!(events[1]["type"], "DELETED");
        assert_eq!(
            events[1]["object"]["rows"][0]["cells"],
            json!(["a", "Running"])
        );
    }

    #[test]
    fn an_unknown_cluster_or_too_many_objects_are_not_complete() {
        let mut held = Held::default();
        assert!(!held.complete("east"), "never started");
        held.start_empty("east");
        for n in 0..=MAX_HELD {
            observe(&mut held, "east", "ADDED", &pod(&format!("p{n}"), "1"));
        }
        assert!(!held.complete("east"), "past the bound");
        assert!(held.clusters.is_empty(), "and forgotten");
    }

    #[test]
    fn a_finished_list_seeds_the_watch_that_resumes_from_its_version() {
        let snapshots = Snapshots::default();
        let key = ListKey {
            what: "/api/v1/pods".into(),
            table: false,
            version: "mca.x".into(),
        };
        snapshots.record(&key, "east", kept(&list("5", &[pod("a", "5")])), false);
        let mut held = Held::default();
        let clusters = ["east".to_owned(), "west".to_owned()];
        assert!(
            !snapshots.resume(&key, &clusters, &mut held),
            "not finished"
        );
        snapshots.record(&key, "west", kept(&list("9", &[pod("b", "9")])), true);
        assert!(snapshots.resume(&key, &clusters, &mut held));
        assert!(held.complete("east") && held.complete("west"));
        let events = held.resync("east", &list("6", &[]));
        assert_eq!(summary(&events), [("DELETED".into(), "a".into())]);
        assert!(!snapshots.resume(&key, &clusters, &mut held), "taken once");
    }
}
