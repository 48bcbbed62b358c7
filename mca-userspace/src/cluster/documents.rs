//! A cluster's discovery and OpenAPI documents, cached.
//!
//! Every kubectl invocation and every client-go program starts by reading discovery (`/api`,
//! `/apis`, the group versions) and often OpenAPI; the documents are large and change only
//! when the cluster's API does. MCA keeps each one it fetched for `ttl`, answers from memory
//! meanwhile (a `304` when the client already holds the same `ETag`), and afterwards asks the
//! API server again with `If-None-Match`, so an unchanged document costs a `304` and no body.
//! Concurrent requests for a document not yet held wait for the one fetch in flight instead of
//! each fetching it; one whose copy is being revalidated gets the copy.
//!
//! What is cached: `GET`s without a body of the discovery paths, `/version`, `/openapi/v2`
//! and `/openapi/v3[/...]`, whose query holds nothing but `timeout` and `hash` (the OpenAPI v3
//! content hash), answered `200`. The copy is keyed by path, `hash`, `Accept` and whether the
//! client takes gzip (the API server compresses large documents for clients that do, and the
//! copy is kept as it came). Discovery is the same for every identity with MCA's credentials,
//! which all requests to the cluster carry.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use tokio::{sync::watch, time::Instant};
use tower::BoxError;

use crate::upstream::{Body, UpstreamBody};

/// The largest document kept; a larger one is passed through. A big cluster's `/openapi/v2`
/// is tens of MiB uncompressed.
const MAX_DOCUMENT: usize = 32 << 20;
/// The most a cluster's copies may hold together; past it new documents are passed through.
const MAX_TOTAL: usize = 64 << 20;

/// The response headers a copy keeps: what describes the document, nothing about one exchange
/// (`Date`, `Audit-Id`, priority-and-fairness headers).
const KEPT_HEADERS: [header::HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::VARY,
];

/// A cluster's cached documents.
#[derive(Debug)]
pub struct Documents {
    ttl: Duration,
    state: Mutex<State>,
    counts: Counts,
}

/// How requests for documents were answered.
#[derive(Debug, Default)]
struct Counts {
    hits: AtomicU64,
    misses: AtomicU64,
    revalidated: AtomicU64,
}

/// What the cache answered, for the metrics: from memory, by fetching the document, or by
/// asking the API server whether the copy is still current (it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Answered from memory.
    pub hits: u64,
    /// Fetched from the API server (and kept if it could be).
    pub misses: u64,
    /// Answered from memory after the API server said the copy is current.
    pub revalidated: u64,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<Key, Slot>,
    bytes: usize,
}

/// Which copy a request is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Path, and `?hash=` when given.
    target: String,
    accept: Option<HeaderValue>,
    gzip: bool,
}

#[derive(Debug, Default)]
struct Slot {
    copy: Option<Arc<Kept>>,
    /// Closed when the fetch in flight for this key is over.
    fetching: Option<watch::Receiver<()>>,
}

/// A document as the API server answered it.
#[derive(Debug)]
struct Kept {
    headers: HeaderMap,
    body: Bytes,
    fetched: Instant,
}

impl Kept {
    fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// The answer to a request with `headers`: `304` when it holds this copy's `ETag`.
    fn answer(&self, headers: &HeaderMap) -> Response<Body> {
        let held = self.etag().is_some_and(|etag| {
            headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|tag| tag.trim() == "*" || tag.trim().as_bytes() == etag.as_bytes())
        });
        let mut response = if held {
            let mut response = Response::new(Body::buffered(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            if let Some(etag) = self.etag() {
                response.headers_mut().insert(header::ETAG, etag.clone());
            }
            response
        } else {
            let mut response = Response::new(Body::buffered(self.body.clone()));
            *response.headers_mut() = self.headers.clone();
            response
        };
        response
            .headers_mut()
            .insert("x-mca-cache", HeaderValue::from_static("hit"));
        response
    }
}

/// What to do with a request for a document.
enum Step {
    Answer(Arc<Kept>),
    Wait(watch::Receiver<()>),
    Fetch(Option<Arc<Kept>>, watch::Sender<()>),
}

impl Documents {
    /// A cache keeping documents for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::default(),
            counts: Counts::default(),
        }
    }

    /// How requests were answered so far.
    pub fn tally(&self) -> Tally {
        Tally {
            hits: self.counts.hits.load(Ordering::Relaxed),
            misses: self.counts.misses.load(Ordering::Relaxed),
            revalidated: self.counts.revalidated.load(Ordering::Relaxed),
        }
    }

    /// The key of `request`'s document, when it is for one this cache keeps.
    pub fn key(&self, request: &Request<UpstreamBody>) -> Option<Key> {
        if self.ttl.is_zero() {
            return None;
        }
        key(request)
    }

    /// Answers `request` for the document `key` names ([`Self::key`]) from memory, or through
    /// `send`, which forwards a request to the cluster.
    pub async fn serve<F>(
        &self,
        key: Key,
        request: Request<UpstreamBody>,
        send: impl Fn(Request<UpstreamBody>) -> F,
    ) -> Result<Response<Body>, BoxError>
    where
        F: Future<Output = Result<Response<Body>, BoxError>>,
    {
        loop {
            match self.step(&key) {
                Step::Answer(copy) => {
                    self.counts.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(copy.answer(request.headers()));
                }
                Step::Wait(mut done) => {
                    // Closed (an error) when the fetch is over, however it ended.
                    let _ = done.changed().await;
                }
                Step::Fetch(stale, done) => {
                    let fetch = Fetch {
                        documents: self,
                        key: &key,
                        _done: done,
                    };
                    return fetch.run(request, stale, send).await;
                }
            }
        }
    }

    fn step(&self, key: &Key) -> Step {
        let mut state = self.lock();
        if let Some(copy) = state.slots.get(key).and_then(|slot| slot.copy.as_ref())
            && copy.fetched.elapsed() < self.ttl
        {
            return Step::Answer(Arc::clone(copy));
        }
        let slot = state.slots.entry(key.clone()).or_default();
        let stale = slot.copy.clone();
        match (&slot.fetching, stale) {
            // Being revalidated: the copy will do meanwhile.
            (Some(_), Some(stale)) => Step::Answer(stale),
            (Some(fetching), None) => Step::Wait(fetching.clone()),
            (None, stale) => {
                let (done, fetching) = watch::channel(());
                slot.fetching = Some(fetching);
                Step::Fetch(stale, done)
            }
        }
    }

    /// Keeps `copy` for `key` if it fits.
    fn keep(&self, key: &Key, copy: Arc<Kept>) {
        let mut state = self.lock();
        let state = &mut *state;
        let slot = state.slots.entry(key.clone()).or_default();
        let previous = slot.copy.as_ref().map_or(0, |copy| copy.body.len());
        let total = state.bytes - previous + copy.body.len();
        if total <= MAX_TOTAL {
            state.bytes = total;
            slot.copy = Some(copy);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one fetch of a document in flight; when it ends (or is dropped with its request),
/// requests waiting for it look again.
struct Fetch<'a> {
    documents: &'a Documents,
    key: &'a Key,
    _done: watch::Sender<()>,
}

impl Fetch<'_> {
    /// Fetches the document (revalidating `stale` when it has an `ETag`) and answers.
    async fn run<F>(
        self,
        mut request: Request<UpstreamBody>,
        stale: Option<Arc<Kept>>,
        send: impl Fn(Request<UpstreamBody>) -> F,
    ) -> Result<Response<Body>, BoxError>
    where
        F: Future<Output = Result<Response<Body>, BoxError>>,
    {
        let counts = &self.documents.counts;
        let client_headers = request.headers().clone();
        // MCA wants the document itself; the client's own conditions are answered from it.
        let headers = request.headers_mut();
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        if let Some(etag) = stale.as_ref().and_then(|copy| copy.etag()) {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        let response = send(request).await?;
        if let (StatusCode::NOT_MODIFIED, Some(stale)) = (response.status(), &stale) {
            counts.revalidated.fetch_add(1, Ordering::Relaxed);
            let renewed = Arc::new(Kept {
                headers: stale.headers.clone(),
                body: stale.body.clone(),
                fetched: Instant::now(),
            });
            self.documents.keep(self.key, Arc::clone(&renewed));
            return Ok(renewed.answer(&client_headers));
        }
        counts.misses.fetch_add(1, Ordering::Relaxed);
        if response.status() != StatusCode::OK {
            return Ok(response);
        }
        let (parts, mut body) = response.into_parts();
        let mut read = BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                read.extend_from_slice(&data);
            }
            if read.len() > MAX_DOCUMENT {
                let body = Body::prefixed(read.freeze(), body);
                return Ok(Response::from_parts(parts, body));
            }
        }
        let mut headers = HeaderMap::new();
        for name in KEPT_HEADERS {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let copy = Arc::new(Kept {
            headers,
            body: read.freeze(),
            fetched: Instant::now(),
        });
        self.documents.keep(self.key, Arc::clone(&copy));
        let mut response = copy.answer(&client_headers);
        response
            .headers_mut()
            .insert("x-mca-cache", HeaderValue::from_static("miss"));
        Ok(response)
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        let mut state = self.documents.lock();
        if let Some(slot) = state.slots.get_mut(self.key) {
            slot.fetching = None;
            if slot.copy.is_none() {
                state.slots.remove(self.key);
            }
        }
    }
}

/// The cache key of a request for a document, `None` when it is not one.
fn key(request: &Request<UpstreamBody>) -> Option<Key> {
    if request.method() != http::Method::GET
        || !http_body::Body::is_end_stream(request.body())
        || request.headers().contains_key(header::RANGE)
    {
        return None;
    }
    let path = request.uri().path();
    let document = crate::discovery::Document::of(path).is_some()
        || path == "/version"
        || path == "/openapi/v2"
        || path == "/openapi/v3"
        || path.starts_with("/openapi/v3/");
    if !document {
        return None;
    }
    let mut hash = None;
    for (name, value) in crate::query::pairs(request.uri().query().unwrap_or("")) {
        match &*name {
            "timeout" => {}
            "hash" => hash = Some(value),
            _ => return None,
        }
    }
    let target = match hash {
        Some(hash) => format!("{path}?hash={hash}"),
        None => path.to_owned(),
    };
    let gzip = request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("gzip"));
    Some(Key {
        target,
        accept: request.headers().get(header::ACCEPT).cloned(),
        gzip,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::FutureExt as _;

    use super::*;

    /// A cluster that serves `/apis` with an `ETag`, counting what it was asked.
    #[derive(Default)]
    struct Server {
        asked: AtomicUsize,
        revalidations: AtomicUsize,
    }

    impl Server {
        async fn send(&self, request: Request<UpstreamBody>) -> Result<Response<Body>, BoxError> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            let mut response = if request.headers().get(header::IF_NONE_MATCH)
                == Some(&HeaderValue::from_static("\"v1\""))
            {
                self.revalidations.fetch_add(1, Ordering::SeqCst);
                let mut response = Response::new(Body::buffered(Bytes::new()));
                *response.status_mut() = StatusCode::NOT_MODIFIED;
                response
            } else if request.uri().path() == "/apis" {
                let mut response =
                    Response::new(Body::buffered(Bytes::from_static(b"{\"groups\":[]}")));
                response
                    .headers_mut()
                    .insert("audit-id", HeaderValue::from_static("one-exchange"));
                response
            } else {
                let mut response = Response::new(Body::buffered(Bytes::from_static(b"{}")));
                *response.status_mut() = StatusCode::NOT_FOUND;
                return Ok(response);
            };
            response
                .headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"v1\""));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
    }

    fn get(target: &str) -> Request<UpstreamBody> {
        Request::get(target).body(UpstreamBody::default()).unwrap()
    }

    async fn body(response: Response<Body>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_burst_costs_one_fetch_and_the_copy_keeps_only_the_documents_headers() {
        let (documents, server) = (Documents::new(Duration::from_secs(30)), Server::default());
        let send = |request| server.send(request);
        let burst = (0..100).map(|_| {
            documents.serve(
                documents.key(&get("/apis?timeout=32s")).unwrap(),
                get("/apis?timeout=32s"),
                send,
            )
        });
        let answers = futures_util::future::join_all(burst).await;
        assert_eq!(server.asked.load(Ordering::SeqCst), 1);
        for answer in answers {
            let answer = answer.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            assert_eq!(answer.headers()[header::ETAG], "\"v1\"");
            assert!(!answer.headers().contains_key("audit-id"));
            assert_eq!(body(answer).await, "{\"groups\":[]}");
        }
        assert_eq!(
            documents.tally(),
            Tally {
                hits: 99,
                misses: 1,
                revalidated: 0
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_ttl_the_copy_is_revalidated_with_its_etag() {
        let (documents, server) = (Documents::new(Duration::from_secs(30)), Server::default());
        let send = |request| server.send(request);
        documents
            .serve(documents.key(&get("/apis")).unwrap(), get("/apis"), send)
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(31)).await;
        let answer = documents
            .serve(documents.key(&get("/apis")).unwrap(), get("/apis"), send)
            .await
            .unwrap();
        assert_eq!(server.revalidations.load(Ordering::SeqCst), 1);
        assert_eq!(body(answer).await, "{\"groups\":[]}");
        // Fresh again: no further request.
        documents
            .serve(documents.key(&get("/apis")).unwrap(), get("/apis"), send)
            .await
            .unwrap();
        assert_eq!(server.asked.load(Ordering::SeqCst), 2);
        assert_eq!(documents.tally().revalidated, 1);
    }

    #[tokio::test]
    async fn a_client_holding_the_copys_etag_gets_304() {
        let (documents, server) = (Documents::new(Duration::from_secs(30)), Server::default());
        let send = |request| server.send(request);
        let mut request = get("/apis");
        request
            .headers_mut()
            .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        // On the first fetch MCA asks for the document itself, then answers the condition.
        let answer = documents
            .serve(documents.key(&request).unwrap(), request, send)
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(server.revalidations.load(Ordering::SeqCst), 0);
        assert!(body(answer).await.is_empty());
    }

    #[tokio::test]
    async fn errors_are_not_kept_and_only_documents_are_cached() {
        let (documents, server) = (Documents::new(Duration::from_secs(30)), Server::default());
        let send = |request| server.send(request);
        for _ in 0..2 {
            let missing = get("/apis/missing.example.com");
            let answer = documents
                .serve(documents.key(&missing).unwrap(), missing, send)
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(server.asked.load(Ordering::SeqCst), 2);
        for target in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/apis/apps/v1?hash=ABC",
        ] {
            assert!(documents.key(&get(target)).is_some(), "{target}");
        }
        for target in [
            "/api/v1/pods",
            "/apis/apps/v1/deployments",
            "/apis?watch=1",
            "/healthz",
            "/openapi/v3/apis/apps/v1?hash=ABC&extra=1",
        ] {
            assert!(documents.key(&get(target)).is_none(), "{target}");
        }
        let post = Request::post("/apis")
            .body(UpstreamBody::default())
            .unwrap();
        assert!(documents.key(&post).is_none());
        assert!(Documents::new(Duration::ZERO).key(&get("/apis")).is_none());
    }

    #[tokio::test]
    async fn a_fetch_abandoned_by_its_client_lets_the_waiting_ones_fetch() {
        let documents = Documents::new(Duration::from_secs(30));
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let held = std::sync::Mutex::new(Some(held));
        let server = Server::default();
        let send = |request| {
            let held = held.lock().unwrap().take();
            let server = &server;
            async move {
                if let Some(held) = held {
                    // The first fetch never finishes on its own.
                    let _ = held.await;
                    std::future::pending::<()>().await;
                }
                server.send(request).await
            }
        };
        let mut first =
            Box::pin(documents.serve(documents.key(&get("/apis")).unwrap(), get("/apis"), send));
        assert!((&mut first).now_or_never().is_none());
        let mut second =
            Box::pin(documents.serve(documents.key(&get("/apis")).unwrap(), get("/apis"), send));
        assert!((&mut second).now_or_never().is_none());
        drop(first);
        drop(release);
        let answer = second.await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_document_too_large_to_keep_is_passed_through_whole() {
        let documents = Documents::new(Duration::from_secs(30));
        let large = Bytes::from(vec![b'x'; MAX_DOCUMENT + 1]);
        let send = |_| std::future::ready(Ok(Response::new(Body::buffered(large.clone()))));
        let answer = documents
            .serve(
                documents.key(&get("/openapi/v2")).unwrap(),
                get("/openapi/v2"),
                send,
            )
            .await
            .unwrap();
        assert_eq!(body(answer).await, large);
        assert_eq!(documents.lock().bytes, 0);
    }
}
