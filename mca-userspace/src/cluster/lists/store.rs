//! The objects of one resource as a watch keeps them: replaced by a LIST, changed by watch
//! events, rendered as a list for a [`Query`].
//!
//! Objects are kept as the JSON text the API server sent, with only what filtering needs
//! (namespace, name, labels) parsed out, so answering copies bytes and serializes nothing.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::query::Query;

/// Why a LIST or watch event could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not the JSON expected.
    #[error("unreadable {what}: {source}")]
    Json {
        /// A list, or an event.
        what: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// The watch ended with an error, e.g. `410 Gone` (its resourceVersion is too old).
    #[error("the watch failed: {code} {message}")]
    Watch {
        /// The `Status` code.
        code: u16,
        /// The `Status` message.
        message: String,
    },
}

/// The objects and the resourceVersion they are current at.
#[derive(Debug, Default)]
pub struct Store {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `None` until a LIST filled it, and again when the API server no longer has the
    /// changes since its version.
    synced: Option<Synced>,
    /// Whether the copy answers requests: not while its watch is broken, when it may be
    /// missing changes of unknown age.
    serving: bool,
}

#[derive(Debug)]
struct Synced {
    kind: String,
    api_version: String,
    resource_version: String,
    objects: BTreeMap<(String, String), Arc<Object>>,
    /// Whether an object without a namespace was seen: then namespaced requests are the
    /// API server's to refuse.
    cluster_scoped: bool,
}

/// One object: the API server's JSON and what filtering reads.
#[derive(Debug)]
struct Object {
    labels: BTreeMap<String, String>,
    json: Box<str>,
}

#[derive(Deserialize)]
struct ListDoc<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    metadata: ListMeta,
    #[serde(borrow, default)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: String,
}

#[derive(Deserialize)]
struct EventDoc<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    object: &'a RawValue,
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    code: u16,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One page of a LIST, parsed.
#[derive(Debug)]
pub struct Page {
    kind: String,
    api_version: String,
    resource_version: String,
    /// Where the next page starts, if there is one.
    pub continue_token: Option<String>,
    objects: Vec<((String, String), Arc<Object>)>,
}

impl Page {
    /// Parses a LIST answer.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let json = |source| Error::Json {
            what: "list",
            source,
        };
        let list: ListDoc<'_> = serde_json::from_slice(body).map_err(json)?;
        let objects = list
            .items
            .iter()
            .map(|raw| object(raw).map(|(key, object, _)| (key, object)))
            .collect::<Result<_, _>>()
            .map_err(json)?;
        Ok(Self {
            kind: list.kind,
            api_version: list.api_version,
            resource_version: list.metadata.resource_version,
            continue_token: Some(list.metadata.continue_token).filter(|c| !c.is_empty()),
            objects,
        })
    }

    /// Adds the objects of the page after this one.
    pub fn extend(&mut self, next: Page) {
        self.objects.extend(next.objects);
        self.continue_token = next.continue_token;
    }
}

type Key = (String, String);

/// Parses one object: its key, what is kept, and its resourceVersion.
fn object(raw: &RawValue) -> Result<(Key, Arc<Object>, String), serde_json::Error> {
    let head: Head = serde_json::from_str(raw.get())?;
    let meta = head.metadata;
    let object = Object {
        labels: meta.labels,
        json: raw.get().into(),
    };
    Ok((
        (meta.namespace, meta.name),
        Arc::new(object),
        meta.resource_version,
    ))
}

impl Store {
    /// Replaces everything with a whole LIST (all its pages); returns how many objects.
    pub fn replace(&self, page: Page) -> usize {
        let count = page.objects.len();
        let cluster_scoped = page.objects.iter().any(|((ns, _), _)| ns.is_empty());
        let mut state = self.lock();
        state.synced = Some(Synced {
            kind: page.kind,
            api_version: page.api_version,
            resource_version: page.resource_version,
            objects: page.objects.into_iter().collect(),
            cluster_scoped,
        });
        state.serving = true;
        count
    }

    /// Forgets the objects until the next LIST.
    pub fn unsync(&self) {
        *self.lock() = State::default();
    }

    /// Stops answering (the watch broke) until [`Self::resume`]; the objects and their
    /// version stay, for a watch to carry on from.
    pub fn pause(&self) {
        self.lock().serving = false;
    }

    /// Answers again: a watch carries on from the copy's version.
    pub fn resume(&self) {
        let mut state = self.lock();
        state.serving = state.synced.is_some();
    }

    /// The resourceVersion the copy is current at, if it is synced.
    pub fn resource_version(&self) -> Option<String> {
        let state = self.lock();
        state.synced.as_ref().map(|s| s.resource_version.clone())
    }

    /// How many objects are kept.
    pub fn len(&self) -> usize {
        self.lock().synced.as_ref().map_or(0, |s| s.objects.len())
    }

    /// Applies one line of a watch (`{"type": ..., "object": ...}`).
    pub fn apply(&self, line: &[u8]) -> Result<(), Error> {
        let json = |source| Error::Json {
            what: "watch event",
            source,
        };
        let event: EventDoc<'_> = serde_json::from_slice(line).map_err(json)?;
        if event.kind == "ERROR" {
            let status: Head = serde_json::from_str(event.object.get()).map_err(json)?;
            return Err(Error::Watch {
                code: status.code,
                message: status.message,
            });
        }
        let (key, object, resource_version) = object(event.object).map_err(json)?;
        let mut state = self.lock();
        let Some(synced) = state.synced.as_mut() else {
            return Ok(());
        };
        match event.kind {
            "ADDED" | "MODIFIED" => {
                synced.cluster_scoped |= key.0.is_empty();
                synced.objects.insert(key, object);
            }
            "DELETED" => {
                synced.objects.remove(&key);
            }
            // BOOKMARK, or a type from a newer API server: only the version moves on.
            _ => {}
        }
        if !resource_version.is_empty() {
            synced.resource_version = resource_version;
        }
        Ok(())
    }

    /// The JSON list `query` asks for, or `None` while the copy is not synced or the
    /// request is one the API server should refuse.
    pub fn render(&self, query: &Query) -> Option<Bytes> {
        let (head, objects) = {
            let state = self.lock();
            let synced = state.synced.as_ref().filter(|_| state.serving)?;
            if synced.cluster_scoped && query.namespace.is_some() {
                return None;
            }
            let head = serde_json::json!({
                "kind": synced.kind,
                "apiVersion": synced.api_version,
                "metadata": {"resourceVersion": synced.resource_version},
            });
            let objects: Vec<Arc<Object>> = synced
                .objects
                .iter()
                .filter(|((namespace, name), object)| {
                    query.matches(namespace, name, |key| {
                        object.labels.get(key).map(String::as_str)
                    })
                })
                .map(|(_, object)| Arc::clone(object))
                .collect();
            (head, objects)
        };
        let head = head.to_string();
        let size = head.len() + objects.iter().map(|o| o.json.len() + 1).sum::<usize>() + 16;
        let mut out = BytesMut::with_capacity(size);
        // `{...head}` becomes `{...head,"items":[...]}`.
        out.put_slice(&head.as_bytes()[..head.len() - 1]);
        out.put_slice(br#","items":["#);
        for (index, object) in objects.iter().enumerate() {
            if index > 0 {
                out.put_u8(b',');
            }
            out.put_slice(object.json.as_bytes());
        }
        out.put_slice(b"]}");
        Some(out.freeze())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::cluster::lists::query::Resource;

    fn config_map(namespace: &str, name: &str, rv: u64, app: &str) -> Value {
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": name,
            "namespace": namespace, "resourceVersion": rv.to_string(), "labels": {"app": app}},
            "data": {"k": "v"}})
    }

    fn synced() -> Store {
        let list = json!({"kind": "ConfigMapList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "10"},
            "items": [config_map("a", "one", 3, "web"), config_map("b", "two", 4, "db")]});
        let store = Store::default();
        let page = Page::parse(list.to_string().as_bytes()).unwrap();
        assert_eq!(store.replace(page), 2);
        store
    }

    fn event(kind: &str, object: Value) -> Vec<u8> {
        json!({"type": kind, "object": object})
            .to_string()
            .into_bytes()
    }

    fn list(store: &Store, path: &str, query: &str) -> Value {
        let resources: [Resource; 1] = ["v1/configmaps".parse().unwrap()];
        let query = Query::parse(&resources, path, query, None).unwrap();
        serde_json::from_slice(&store.render(&query).expect("synced")).unwrap()
    }

    fn names(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_list_answers_as_the_api_server_would() {
        let store = synced();
        let all = list(&store, "/api/v1/configmaps", "resourceVersion=0");
        assert_eq!(all["kind"], "ConfigMapList");
        assert_eq!(all["apiVersion"], "v1");
        assert_eq!(all["metadata"]["resourceVersion"], "10");
        assert_eq!(names(&all), ["one", "two"]);
        assert_eq!(all["items"][0], config_map("a", "one", 3, "web"));
        let in_b = list(
            &store,
            "/api/v1/namespaces/b/configmaps",
            "resourceVersion=0",
        );
        assert_eq!(names(&in_b), ["two"]);
        let web = list(
            &store,
            "/api/v1/configmaps",
            "resourceVersion=0&labelSelector=app%3Dweb",
        );
        assert_eq!(names(&web), ["one"]);
        let empty = list(
            &store,
            "/api/v1/namespaces/c/configmaps",
            "resourceVersion=0",
        );
        assert_eq!(empty["items"], json!([]));
    }

    #[test]
    fn watch_events_change_the_copy_and_its_version() {
        let store = synced();
        store
            .apply(&event("ADDED", config_map("a", "three", 11, "web")))
            .unwrap();
        store
            .apply(&event("MODIFIED", config_map("a", "one", 12, "db")))
            .unwrap();
        store
            .apply(&event("DELETED", config_map("b", "two", 13, "db")))
            .unwrap();
        store
            .apply(&event(
                "BOOKMARK",
                json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"resourceVersion": "20"}}),
            ))
            .unwrap();
        assert_eq!(store.resource_version().as_deref(), Some("20"));
        let all = list(&store, "/api/v1/configmaps", "resourceVersion=0");
        assert_eq!(names(&all), ["one", "three"]);
        assert_eq!(all["items"][0]["metadata"]["labels"]["app"], "db");
        assert_eq!(all["metadata"]["resourceVersion"], "20");
    }

    #[test]
    fn a_watch_error_is_returned_and_an_unsynced_copy_answers_nothing() {
        let store = synced();
        let gone = event(
            "ERROR",
            json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "code": 410, "reason": "Expired", "message": "too old"}),
        );
        match store.apply(&gone) {
            Err(Error::Watch { code: 410, message }) => assert_eq!(message, "too old"),
            other => panic!("{other:?}"),
        }
        assert!(store.apply(b"{not json").is_err());
        let resources: [Resource; 1] = ["v1/configmaps".parse().unwrap()];
        let query = Query::parse(&resources, "/api/v1/configmaps", "resourceVersion=0", None);
        let query = query.unwrap();
        // A broken watch pauses the copy; one carrying on from its version resumes it.
        store.pause();
        assert_eq!(store.render(&query), None);
        assert_eq!(store.resource_version().as_deref(), Some("10"));
        store.resume();
        assert!(store.render(&query).is_some());
        store.unsync();
        assert_eq!(store.render(&query), None);
        assert_eq!(store.resource_version(), None);
        store.resume();
        assert_eq!(store.render(&query), None);
    }

    #[test]
    fn pages_join_and_cluster_scoped_objects_refuse_namespaced_lists() {
        let page = |items: Vec<Value>, next: &str| {
            let list = json!({"kind": "NamespaceList", "apiVersion": "v1",
                "metadata": {"resourceVersion": "7", "continue": next}, "items": items});
            Page::parse(list.to_string().as_bytes()).unwrap()
        };
        let named = |name: &str| json!({"metadata": {"name": name}});
        let mut first = page(vec![named("a")], "more");
        assert_eq!(first.continue_token.as_deref(), Some("more"));
        first.extend(page(vec![named("b")], ""));
        assert_eq!(first.continue_token, None);
        let store = Store::default();
        assert_eq!(store.replace(first), 2);
        let resources: [Resource; 1] = ["v1/configmaps".parse().unwrap()];
        let namespaced = Query::parse(
            &resources,
            "/api/v1/namespaces/x/configmaps",
            "resourceVersion=0",
            None,
        );
        assert_eq!(store.render(&namespaced.unwrap()), None);
    }
}
