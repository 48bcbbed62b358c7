//! A merged WATCH: every cluster's stream multiplexed into one, each event carrying the
//! composite of every cluster's latest version. A cluster whose stream fails is retried from
//! its last version; one that lost the history to resume from is listed again and the
//! difference sent (see [`held`](super::held)); the watch answers once each cluster has
//! started or failed, with a `Warning` for those missing; a WatchList's initial events end
//! with one merged bookmark.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    BACKOFF, Body, Refusal, SNAPSHOTS, TIMEOUT, cluster_request,
    held::{Held, ListKey},
    list_key,
    merge::{self, Event, Object, WatchEvent},
    none_answered, query_value, read,
    token::Versions,
    version_for, versions, warn_missing,
};
use crate::{
    cluster::Registry,
    query,
    route::ClusterId,
    status::{Reason, Status},
    upstream::{
        self, RequestClass,
        lines::{self, Lines, MAX_EVENT},
    },
};

/// The merged watch's shared state: every cluster's latest version, what the client holds
/// from each, and where the initial events of a WatchList (`sendInitialEvents=true`) are.
struct Watching {
    versions: Versions,
    held: Held,
    /// Clusters whose initial events are all sent (their end bookmark came).
    initial_done: Vec<String>,
    /// Clusters that were down when the watch started: the initial events end without them
    /// (their objects arrive as ADDED events when they come back).
    missing_at_start: Vec<String>,
    /// Whether the one merged `k8s.io/initial-events-end` bookmark was sent.
    initial_end_sent: bool,
    /// The composite version of the last event sent: where the client resumes from.
    last_sent: Option<String>,
}

impl Watching {
    /// The merged initial-events-end bookmark, once: when every cluster of `all` has ended
    /// its initial events or was missing at the start.
    fn initial_end_due(&mut self, all: &[String]) -> Option<Vec<u8>> {
        let due = !self.initial_end_sent
            && all
                .iter()
                .all(|c| self.initial_done.contains(c) || self.missing_at_start.contains(c));
        if !due {
            return None;
        }
        self.initial_end_sent = true;
        let version = self.versions.encode();
        let line = merge::initial_events_end(&version);
        self.last_sent = Some(version);
        Some(line)
    }
}

/// How a cluster's first attempt at its part of a merged watch went: the merged watch
/// answers once every cluster has said (or [`START_WAIT`] passed).
#[derive(Debug)]
enum Start {
    /// It streams (or will repair a lost history).
    Watching,
    /// It could not be reached or failed: left out with a `Warning`, retried.
    Missing(String),
    /// It refused the request itself (a 4xx): the client's error, answered as such.
    Refused(StatusCode, String),
}

/// How long a merged watch waits for its clusters' first answers before answering the
/// client (those still silent are left out with a `Warning`, and retried).
const START_WAIT: Duration = Duration::from_secs(10);

/// What the clusters' watches send the client's stream.
enum Out {
    /// An event line.
    Line(Bytes),
    /// The merged watch ends here (after its one ERROR).
    End,
}

pub(super) async fn watch(
    registry: &Arc<Registry>,
    ids: &[ClusterId],
    head: http::request::Parts,
    accept: &str,
) -> Result<Response<Body>, Refusal> {
    let (composite, plain) = versions(&head)?;
    let deadline = query_value(&head, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs(seconds));
    let names: Vec<String> = ids
        .iter()
        .map(|&id| registry.get(id).name().to_string())
        .collect();
    let held = held_at_start(&head, accept, composite.as_ref(), plain.as_deref(), &names);
    let state = Arc::new(Mutex::new(Watching {
        versions: composite.clone().unwrap_or_default(),
        held,
        initial_done: Vec::new(),
        missing_at_start: Vec::new(),
        initial_end_sent: false,
        last_sent: None,
    }));
    let (events, received) = mpsc::channel::<Out>(256);
    let mut tasks = JoinSet::new();
    let mut starts = Vec::new();
    for (&id, name) in ids.iter().zip(&names) {
        let first = version_for(name, composite.as_ref(), plain.as_deref()).map(str::to_owned);
        let (started, start) = tokio::sync::oneshot::channel();
        let stream = ClusterWatch {
            registry: Arc::clone(registry),
            id,
            cluster: name.clone(),
            head: upstream::copy_head(&head),
            accept: accept.to_owned(),
            version: first,
            state: Arc::clone(&state),
            all: names.clone(),
            events: events.clone(),
            started: Some(started),
        };
        tasks.spawn(stream.run());
        starts.push(start);
    }
    drop(events);
    let until = tokio::time::Instant::now() + START_WAIT;
    let starts = join_all(starts.into_iter().map(|start| async move {
        match tokio::time::timeout_at(until, start).await {
            Ok(Ok(start)) => start,
            Ok(Err(_)) => Start::Missing("its watch ended".to_owned()),
            Err(_) => Start::Missing(format!("no answer within {START_WAIT:?}")),
        }
    }))
    .await;
    let mut missing = Vec::new();
    for (name, start) in names.iter().zip(starts) {
        match start {
            Start::Watching => {}
            Start::Missing(why) => {
                missing.push((name.clone(), (StatusCode::SERVICE_UNAVAILABLE, why)));
            }
            Start::Refused(code, why) => return Err(refused(code, name, &why)),
        }
    }
    if missing.len() == names.len() {
        return Err(none_answered(&missing));
    }
    let body = MergedWatch {
        received,
        deadline,
        tasks,
        ending: false,
        state,
        key: list_key(&head, accept, String::new()),
        names,
    };
    let mut response = Response::new(body.into_body());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    warn_missing(response.headers_mut(), &missing);
    Ok(response)
}

/// A cluster's refusal of the client's request (a 4xx), as the client's error.
fn refused(code: StatusCode, cluster: &str, why: &str) -> Status {
    let reason = match code {
        StatusCode::FORBIDDEN => Reason::Forbidden,
        StatusCode::NOT_FOUND => Reason::NotFound,
        StatusCode::UNPROCESSABLE_ENTITY => Reason::Invalid,
        StatusCode::GONE => Reason::Expired,
        _ => Reason::BadRequest,
    };
    Status::new(
        code,
        reason,
        format!("cluster {cluster} refused this watch: {why}"),
    )
}

/// What the client holds from each cluster as the watch starts: nothing from a cluster
/// whose watch sends every object first (no version for it, `0`, or `sendInitialEvents`),
/// the list it just read when it resumes from a merged list's version MCA recorded, and
/// otherwise nothing MCA knows (such a cluster's lost history ends the watch with a 410).
fn held_at_start(
    head: &http::request::Parts,
    accept: &str,
    composite: Option<&Versions>,
    plain: Option<&str>,
    names: &[String],
) -> Held {
    let mut held = Held::default();
    let initial_events = query::flag(head.uri.query().unwrap_or(""), "sendInitialEvents");
    if let (Some(versions), false) = (composite, initial_events) {
        let key = list_key(head, accept, versions.encode());
        if SNAPSHOTS.resume(&key, names, &mut held) {
            return held;
        }
    }
    for name in names {
        let version = version_for(name, composite, plain);
        if initial_events || version.is_none_or(|v| v.is_empty() || v == "0") {
            held.start_empty(name);
        }
    }
    held
}

/// How one attempt at a cluster's watch ended.
enum Ended {
    /// The stream ended (a timeout, a closed connection): resume from the last version.
    Resumable,
    /// The cluster no longer has the version to resume from (`410`).
    Expired,
    /// The client is gone.
    ClientGone,
    /// The first attempt was refused: the merged watch answers with the refusal.
    Refused,
}

/// One cluster's part of a merged watch, restarted from its last version when it fails,
/// and brought up to date by a fresh list when its history is lost.
struct ClusterWatch {
    registry: Arc<Registry>,
    id: ClusterId,
    cluster: String,
    head: http::request::Parts,
    accept: String,
    version: Option<String>,
    state: Arc<Mutex<Watching>>,
    all: Vec<String>,
    events: mpsc::Sender<Out>,
    /// Told how the first attempt went, then `None`.
    started: Option<tokio::sync::oneshot::Sender<Start>>,
}

impl ClusterWatch {
    async fn run(mut self) {
        let mut backoff = BACKOFF;
        let mut expired = false;
        loop {
            let attempt = if expired {
                self.resync().await.map(|()| {
                    expired = false;
                    Ended::Resumable
                })
            } else {
                self.stream().await
            };
            match attempt {
                Ok(Ended::Resumable) => backoff.reset(),
                Ok(Ended::Expired) => {
                    expired = true;
                    if !self.lock().held.complete(&self.cluster) {
                        self.expire().await;
                        return;
                    }
                    tracing::info!(cluster = %self.cluster, version = ?self.version, "a merged watch's cluster lost the history to resume from; listing it again");
                    continue;
                }
                Ok(Ended::ClientGone | Ended::Refused) => return,
                Err(why) => {
                    tracing::debug!(cluster = %self.cluster, %why, backoff = ?backoff.current(), "a merged watch's cluster stream failed; retrying");
                }
            }
            if self.events.is_closed() {
                return;
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watching> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Watches until the stream ends; every event goes to the merged stream.
    async fn stream(&mut self) -> Result<Ended, String> {
        // Once this cluster's initial events are sent, a resumed watch must not ask for them
        // again (a WatchList from a version sends them all anew).
        let resumed = self.lock().initial_done.contains(&self.cluster);
        let head = if resumed {
            without(&self.head, &["sendInitialEvents", "resourceVersionMatch"])
        } else {
            upstream::copy_head(&self.head)
        };
        let request = cluster_request(&head, &self.accept, self.version.as_deref(), None, false);
        let cluster = self.registry.get(self.id);
        let sent = tokio::time::timeout(TIMEOUT, cluster.send(request, RequestClass::LongRunning))
            .await
            .map_err(|_| "no answer".to_owned())
            .and_then(|sent| sent.map_err(|error| upstream::failure_status(&error).message));
        let response = match sent {
            Ok(response) => response,
            Err(why) => {
                self.report(Start::Missing(why.clone())).await;
                return Err(why);
            }
        };
        match response.status() {
            StatusCode::OK => {
                self.report(Start::Watching).await;
            }
            StatusCode::GONE => {
                self.report(Start::Watching).await;
                return Ok(Ended::Expired);
            }
            status
                if status.is_client_error()
                    && status != StatusCode::TOO_MANY_REQUESTS
                    && status != StatusCode::REQUEST_TIMEOUT =>
            {
                let why = upstream::error_message(response.into_body()).await;
                if self.report(Start::Refused(status, why.clone())).await {
                    return Ok(Ended::Refused);
                }
                return Err(format!("answered {status}: {why}"));
            }
            status => {
                let why = format!("answered {status}");
                self.report(Start::Missing(why.clone())).await;
                return Err(why);
            }
        }
        let mut body = response.into_body();
        let mut lines = Lines::new(MAX_EVENT);
        let cluster = self.cluster.clone();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| error.to_string())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let unread = |error: lines::Error| {
                // Not a passing failure: the same event comes back on every retry.
                tracing::warn!(%cluster, %error, "a merged watch's cluster sent what MCA does not read; its stream is retried from its last version");
                error.to_string()
            };
            lines.push(&data).map_err(unread)?;
            while let Some(line) = lines.next_line().map_err(unread)? {
                let Some(event) = WatchEvent::parse(&line) else {
                    continue;
                };
                if event.kind == "ERROR" {
                    // Never the client's to see: a lost history is repaired, anything else
                    // retried from the last version.
                    let Object::Plain(status) = &event.object else {
                        return Err("sent an ERROR that is a Table".to_owned());
                    };
                    if status.value("code").is_some_and(|code| code == 410) {
                        return Ok(Ended::Expired);
                    }
                    let message = status.str("message").unwrap_or_default();
                    return Err(format!("sent an ERROR: {message}"));
                }
                if !self.forward(event).await {
                    return Ok(Ended::ClientGone);
                }
            }
        }
        Ok(Ended::Resumable)
    }

    /// Lists the cluster again and sends the client what changed there since what it holds;
    /// the watch then resumes from the list's version.
    async fn resync(&mut self) -> Result<(), String> {
        let cluster = self.registry.get(self.id);
        let list = read(
            cluster,
            cluster_request(&relist_head(&self.head), &self.accept, None, None, false),
        )
        .await
        .map_err(|(_, why)| why)?;
        let version = list["metadata"]["resourceVersion"]
            .as_str()
            .ok_or("the list has no resourceVersion")?
            .to_owned();
        let events = self.lock().held.resync(&self.cluster, &list);
        tracing::info!(cluster = %self.cluster, %version, events = events.len(), "a merged watch's cluster is listed again; its changes are sent as events");
        for event in events {
            let line = serde_json::to_vec(&event).expect("JSON values serialize");
            let event = WatchEvent::parse(&line).expect("held makes watch events");
            if !self.forward(event).await {
                return Ok(());
            }
        }
        self.lock()
            .versions
            .0
            .insert(self.cluster.clone(), version.clone());
        self.version = Some(version);
        Ok(())
    }

    /// Tells the merged watch how the first attempt went (later attempts tell no one; a
    /// cluster missing at the start counts as done with its initial events). Whether this
    /// was the first attempt.
    async fn report(&mut self, start: Start) -> bool {
        let Some(started) = self.started.take() else {
            return false;
        };
        let missing = matches!(start, Start::Missing(_));
        let _ = started.send(start);
        if missing && let Ok(permit) = self.events.reserve().await {
            let end = {
                let mut state = self.lock();
                state.missing_at_start.push(self.cluster.clone());
                state.initial_end_due(&self.all)
            };
            if let Some(line) = end {
                permit.send(Out::Line(Bytes::from(line)));
            }
        }
        true
    }

    /// Ends the merged watch with one `410 Expired`: the client must list again, because MCA
    /// does not know what it holds from this cluster to repair the lost history.
    async fn expire(&self) {
        let status = Status::new(
            StatusCode::GONE,
            Reason::Expired,
            format!(
                "cluster {} of this merged watch lost the history to resume from, and MCA \
                 does not know what this watch holds from it: list again",
                self.cluster
            ),
        );
        let object: Value = serde_json::from_slice(&status.to_json()).expect("a Status is JSON");
        let mut line = serde_json::to_vec(&serde_json::json!({"type": "ERROR", "object": object}))
            .expect("JSON serializes");
        line.push(b'\n');
        let _ = self.events.send(Out::Line(Bytes::from(line))).await;
        let _ = self.events.send(Out::End).await;
    }

    /// Sends one event on (recording what the client will hold); false once the client is
    /// gone.
    async fn forward(&mut self, event: WatchEvent<'_>) -> bool {
        // The event's place in the client's stream first: what is recorded below is then
        // exactly what the client gets, even if this task is stopped while it waits.
        let Ok(permit) = self.events.reserve().await else {
            return false;
        };
        let out = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.held.observe(&self.cluster, &event);
            let outcome = merge::event(event, &self.cluster, &mut state.versions);
            self.version = state.versions.0.get(&self.cluster).cloned();
            match outcome {
                Event::Send { line, version } => {
                    state.last_sent = Some(version);
                    Some(line)
                }
                Event::InitialEventsEnd => {
                    if !state.initial_done.contains(&self.cluster) {
                        state.initial_done.push(self.cluster.clone());
                    }
                    state.initial_end_due(&self.all)
                }
            }
        };
        if let Some(line) = out {
            permit.send(Out::Line(Bytes::from(line)));
        }
        true
    }
}

/// The list request for a watch's `head`: the same path and selectors, without what makes it
/// a watch or says where to start.
fn relist_head(head: &http::request::Parts) -> http::request::Parts {
    without(
        head,
        &[
            "watch",
            "allowWatchBookmarks",
            "sendInitialEvents",
            "timeoutSeconds",
            "limit",
            "resourceVersionMatch",
        ],
    )
}

/// `head` without the query parameters `keys`.
fn without(head: &http::request::Parts, keys: &[&str]) -> http::request::Parts {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            query::pairs(head.uri.query().unwrap_or(""))
                .filter(|(key, _)| !keys.contains(&key.as_ref())),
        )
        .finish();
    let mut trimmed = upstream::copy_head(head);
    let target = if query.is_empty() {
        head.uri.path().to_owned()
    } else {
        format!("{}?{query}", head.uri.path())
    };
    trimmed.uri = target.parse().expect("a path and an encoded query");
    trimmed
}

/// The merged stream the client reads; its cluster watches end when it is dropped. A watch
/// that ends at the client's `timeoutSeconds` (as informers' do, every few minutes) leaves
/// what the client holds as a snapshot, so the watch it opens next, from the last version it
/// got, can repair a lost history too.
struct MergedWatch {
    received: mpsc::Receiver<Out>,
    deadline: Option<tokio::time::Instant>,
    tasks: JoinSet<()>,
    /// Past the deadline: the clusters' watches are stopped, what they sent is handed over.
    ending: bool,
    state: Arc<Mutex<Watching>>,
    /// The watch's path and selectors, for the snapshot.
    key: ListKey,
    names: Vec<String>,
}

impl MergedWatch {
    fn into_body(self) -> Body {
        let stream = futures_util::stream::unfold(self, |mut watch| async move {
            let line = watch.next().await?;
            Some((Ok::<_, tower::BoxError>(Frame::data(line)), watch))
        });
        StreamBody::new(stream).boxed_unsync()
    }

    /// The next line for the client; `None` when the watch ends.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.ending {
            let received = match self.deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, self.received.recv())
                    .await
                    .ok(),
                None => Some(self.received.recv().await),
            };
            match received {
                Some(Some(Out::Line(line))) => return Some(line),
                Some(Some(Out::End) | None) => return None,
                None => {
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    self.ending = true;
                }
            }
        }
        match self.received.try_recv() {
            Ok(Out::Line(line)) => Some(line),
            Ok(Out::End) => None,
            Err(_) => {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(version) = state.last_sent.take() {
                    let key = ListKey {
                        version,
                        ..self.key.clone()
                    };
                    SNAPSHOTS.keep(key, std::mem::take(&mut state.held), &self.names);
                }
                None
            }
        }
    }
}
