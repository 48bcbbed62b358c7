//! Pods: the one resource the test server stores, with the verbs MCA must carry.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{Body, LOG_GATE_TIMEOUT, State, bytes_response, json_response, status};

/// A change to a pod, as a watch reports it.
#[derive(Debug, Clone)]
struct Event {
    resource_version: u64,
    namespace: String,
    kind: &'static str,
    object: Value,
}

/// How many past events a watch from an older resourceVersion can be given (kube-apiserver's
/// watch cache keeps a window too); older versions get `410 Gone`.
const HISTORY: usize = 1024;

/// Pods by (namespace, name), the last resource version handed out, and the latest changes.
#[derive(Default)]
struct Pods {
    by_key: BTreeMap<(String, String), Value>,
    resource_version: u64,
    history: std::collections::VecDeque<Event>,
}

/// The pods, and a feed of changes for watches.
pub struct PodStore {
    inner: Mutex<Pods>,
    events: broadcast::Sender<Event>,
    /// Bumped by [`PodStore::restart`]: every watch opened before ends.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Default for PodStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            events: broadcast::channel(256).0,
            generation: tokio::sync::watch::channel(0).0,
        }
    }
}

impl PodStore {
    /// Adds a running pod named `name` with one container `app`.
    pub fn insert(&self, namespace: &str, name: &str) -> Value {
        self.insert_labelled(namespace, name, &[])
    }

    /// Adds a running pod named `name` with `labels` and one container `app`.
    pub fn insert_labelled(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Value {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        self.create(
            namespace,
            json!({"metadata": {"name": name, "labels": labels},
                   "spec": {"containers": [{"name": "app", "image": "busybox"}]}}),
        )
        .expect("inserting a new pod")
    }

    /// Restarts as kube-apiserver does with its etcd kept while something else changed: every
    /// open watch ends, `while_away` changes the pods (no watch sees it happen), and the
    /// history starts over, so a watch resuming from any earlier version gets `410 Expired`
    /// ("too old resource version") while the versions themselves go on.
    pub fn restart(&self, while_away: impl FnOnce(&Self)) {
        self.generation.send_modify(|generation| *generation += 1);
        while_away(self);
        self.inner.lock().unwrap().history.clear();
    }

    /// Adds a pod `name` carrying `padding` bytes in an annotation, for lists of a given size.
    pub fn insert_padded(&self, namespace: &str, name: &str, padding: usize) -> Value {
        self.create(
            namespace,
            json!({"metadata": {"name": name, "annotations": {"padding": "x".repeat(padding)}},
                   "spec": {"containers": [{"name": "app", "image": "busybox"}]}}),
        )
        .expect("inserting a new pod")
    }

    /// Deletes a pod, as a `DELETE` would; whether it was there.
    pub fn remove(&self, namespace: &str, name: &str) -> bool {
        self.delete(namespace, name).is_some()
    }

    /// The names of the pods in `namespace`, sorted.
    pub fn list_names(&self, namespace: &str) -> Vec<String> {
        self.list(namespace)
            .0
            .iter()
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    fn create(&self, namespace: &str, mut pod: Value) -> Result<Value, String> {
        let name = pod["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("metadata.name is required")?
            .to_owned();
        let mut inner = self.inner.lock().unwrap();
        let key = (namespace.to_owned(), name.clone());
        if inner.by_key.contains_key(&key) {
            return Err(format!("pods \"{name}\" already exists"));
        }
        inner.resource_version += 1;
        let rv = inner.resource_version;
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        let meta = &mut pod["metadata"];
        meta["namespace"] = json!(namespace);
        meta["resourceVersion"] = json!(rv.to_string());
        meta["uid"] = json!(format!("00000000-0000-0000-0000-{rv:012}"));
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        if pod["status"]["phase"].is_null() {
            pod["status"] = json!({"phase": "Running"});
        }
        inner.by_key.insert(key, pod.clone());
        self.notify(&mut inner, namespace, "ADDED", &pod);
        Ok(pod)
    }

    fn delete(&self, namespace: &str, name: &str) -> Option<Value> {
        let mut inner = self.inner.lock().unwrap();
        let mut pod = inner
            .by_key
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        // As in kube-apiserver, a deletion is a change with a version of its own.
        inner.resource_version += 1;
        pod["metadata"]["resourceVersion"] = json!(inner.resource_version.to_string());
        self.notify(&mut inner, namespace, "DELETED", &pod);
        Some(pod)
    }

    /// Records a change and tells open watches (none listening is fine). Called with the
    /// store locked, so a watch that subscribes under the lock misses nothing.
    fn notify(&self, inner: &mut Pods, namespace: &str, kind: &'static str, pod: &Value) {
        let event = Event {
            resource_version: inner.resource_version,
            namespace: namespace.to_owned(),
            kind,
            object: pod.clone(),
        };
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        let _ = self.events.send(event);
    }

    /// Subscribes to changes after `from`: the recorded ones since then and a feed of the
    /// rest; `None` when `from` is older than the history holds.
    #[allow(clippy::type_complexity)]
    fn changes_since(&self, from: u64) -> Option<(Vec<Event>, broadcast::Receiver<Event>)> {
        let inner = self.inner.lock().unwrap();
        let oldest = inner
            .history
            .front()
            .map_or(inner.resource_version, |e| e.resource_version - 1);
        if from < oldest {
            return None;
        }
        let past = inner
            .history
            .iter()
            .filter(|e| e.resource_version > from)
            .cloned()
            .collect();
        Some((past, self.events.subscribe()))
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .by_key
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The pods of `namespace` (every namespace's for `""`), the version they are at, and a
    /// feed of the changes after.
    fn current(&self, namespace: &str) -> (Vec<Value>, u64, broadcast::Receiver<Event>) {
        let inner = self.inner.lock().unwrap();
        (
            Self::select(&inner, namespace),
            inner.resource_version,
            self.events.subscribe(),
        )
    }

    /// The pods of `namespace` (every namespace's for `""`) and the latest resource version.
    fn list(&self, namespace: &str) -> (Vec<Value>, u64) {
        let inner = self.inner.lock().unwrap();
        (Self::select(&inner, namespace), inner.resource_version)
    }

    fn select(inner: &Pods, namespace: &str) -> Vec<Value> {
        inner
            .by_key
            .iter()
            .filter(|((ns, _), _)| namespace.is_empty() || ns == namespace)
            .map(|(_, pod)| pod.clone())
            .collect()
    }
}

/// Serves `/api/v1/namespaces/{namespace}/pods/{rest}` (`namespace` empty: every namespace's,
/// `/api/v1/pods`).
pub async fn route(
    state: Arc<State>,
    request: Request<Incoming>,
    namespace: &str,
    rest: &str,
) -> Response<Body> {
    // As kube-apiserver decodes parameters: the first of repeated ones, and a boolean false
    // only when `0` or `false` in any case.
    let mut query = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        query.entry(key.into_owned()).or_insert(value.into_owned());
    }
    let watching = query
        .get("watch")
        .is_some_and(|w| w != "0" && !w.eq_ignore_ascii_case("false"));
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match (request.method().clone(), parts.as_slice()) {
        (Method::GET, []) if watching => watch(&state, namespace, &query),
        (Method::GET, []) => list(&state, &request, namespace, &query),
        (Method::POST, []) => create(&state, request, namespace).await,
        (Method::GET, [name]) => match state.pods.get(namespace, name) {
            Some(pod) => json_response(StatusCode::OK, &pod),
            None => not_found(name),
        },
        (Method::DELETE, [name]) => match state.pods.delete(namespace, name) {
            Some(pod) => json_response(StatusCode::OK, &pod),
            None => not_found(name),
        },
        (_, [name, _]) if state.pods.get(namespace, name).is_none() => not_found(name),
        (Method::GET, [_, "log"]) => log(state, &query),
        (_, [_, "exec" | "attach"]) => super::remotecommand::exec(request),
        (_, [_, "portforward"]) => super::remotecommand::port_forward(request),
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the test server",
        ),
    }
}

fn not_found(name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("pods \"{name}\" not found"),
    )
}

fn list(
    state: &State,
    request: &Request<Incoming>,
    namespace: &str,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let (items, rv) = state.pods.list(namespace);
    let start: usize = query
        .get("continue")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let end = start.saturating_add(limit).min(items.len());
    let page = items.get(start..end).unwrap_or_default().to_vec();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        metadata["continue"] = json!(end.to_string());
    }
    let accept = header_str(request, header::ACCEPT);
    let body = if accept.contains("as=Table") {
        table(&page, metadata)
    } else {
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": metadata, "items": page})
    };
    if state.options.truncate_lists {
        let text = body.to_string();
        let half = Bytes::copy_from_slice(&text.as_bytes()[..text.len() / 2]);
        return bytes_response(StatusCode::OK, "application/json", half);
    }
    let mut response = json_response(StatusCode::OK, &body);
    if header_str(request, header::ACCEPT_ENCODING).contains("gzip") {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(body.to_string().as_bytes())
            .expect("gzip to memory");
        response = bytes_response(
            StatusCode::OK,
            "application/json",
            Bytes::from(gz.finish().expect("gzip to memory")),
        );
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    response
}

fn header_str(request: &Request<Incoming>, name: header::HeaderName) -> String {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

fn table(pods: &[Value], metadata: Value) -> Value {
    let column = |name: &str| json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": 0});
    let rows: Vec<Value> = pods
        .iter()
        .map(|pod| {
            json!({
                "cells": [pod["metadata"]["name"], pod["status"]["phase"], "1m"],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": pod["metadata"]}
            })
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": [column("Name"), column("Status"), column("Age")], "rows": rows})
}

async fn create(state: &State, request: Request<Incoming>, namespace: &str) -> Response<Body> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
    };
    let pod: Value = match serde_json::from_slice(&body) {
        Ok(pod) => pod,
        Err(error) => return status(StatusCode::BAD_REQUEST, "BadRequest", &error.to_string()),
    };
    match state.pods.create(namespace, pod) {
        Ok(pod) => json_response(StatusCode::CREATED, &pod),
        Err(message) if message.contains("exists") => {
            status(StatusCode::CONFLICT, "AlreadyExists", &message)
        }
        Err(message) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message),
    }
}

/// A streaming body fed through a channel.
fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok(Frame::data(chunk)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// A watch: from `resourceVersion` (the changes since, then live ones), or with the current
/// pods as `ADDED` events first when it is absent or `0`, or with `sendInitialEvents=true`
/// (then a `k8s.io/initial-events-end` bookmark); a version older than the history gets an
/// `ERROR` event with a `410 Expired` Status, as kube-apiserver sends. As there,
/// `resourceVersionMatch` without `sendInitialEvents` is refused (422).
fn watch(state: &State, namespace: &str, query: &BTreeMap<String, String>) -> Response<Body> {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let initial_events = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    if query.contains_key("resourceVersionMatch") && !initial_events {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        );
    }
    let (initial, events): (Vec<(&str, Value)>, _) = if from == 0 || initial_events {
        // A WatchList (sendInitialEvents=true): the current pods, then a bookmark saying
        // they are all there.
        let (pods, version, events) = state.pods.current(namespace);
        let mut initial: Vec<(&str, Value)> = pods.into_iter().map(|pod| ("ADDED", pod)).collect();
        if initial_events {
            initial.push((
                "BOOKMARK",
                json!({"kind": "Pod", "apiVersion": "v1", "metadata": {
                    "resourceVersion": version.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}),
            ));
        }
        (initial, Some(events))
    } else {
        match state.pods.changes_since(from) {
            Some((past, events)) => {
                let past = past
                    .into_iter()
                    .filter(|e| namespace.is_empty() || e.namespace == namespace)
                    .map(|e| (e.kind, e.object))
                    .collect();
                (past, Some(events))
            }
            None => {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {from}")});
                (vec![("ERROR", gone)], None)
            }
        }
    };
    let timeout = Duration::from_secs(
        query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(300),
    );
    let namespace = namespace.to_owned();
    let (tx, body) = channel_body();
    let mut generation = state.pods.generation.subscribe();
    let started = *generation.borrow_and_update();
    tokio::spawn(async move {
        let line = |kind: &str, object: &Value| {
            Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
        };
        for (kind, object) in &initial {
            if tx.send(line(kind, object)).await.is_err() {
                return;
            }
        }
        let Some(mut events) = events else {
            return;
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return,
                _ = generation.changed() => return,
                event = events.recv() => match event {
                    // A change made while the server restarts: this watch is already over.
                    Ok(_) if *generation.borrow() != started => return,
                    Ok(event) if namespace.is_empty() || event.namespace == namespace => {
                        if tx.send(line(event.kind, &event.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `log`: two lines; with `follow=true` the second waits for the test to release it, so a
/// test can prove the first arrived through MCA while the stream was still open.
fn log(state: Arc<State>, query: &BTreeMap<String, String>) -> Response<Body> {
    let follow = query.get("follow").is_some_and(|f| f == "true" || f == "1");
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"log line 1\n")).await;
        if follow {
            match tokio::time::timeout(LOG_GATE_TIMEOUT, state.log_gate.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => return,
            }
        }
        let _ = tx.send(Bytes::from_static(b"log line 2\n")).await;
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}
