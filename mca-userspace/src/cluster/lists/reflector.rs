//! Keeps one resource's [`Store`] current, as client-go's reflector does: LIST (in pages),
//! then WATCH from the list's resourceVersion with bookmarks, and again from the last version
//! seen whenever a watch ends or breaks; LIST anew only when the API server no longer has the
//! changes since that version (`410 Gone`). While the watch is broken the copy answers
//! nothing: requests go to the API server.

use std::{sync::Arc, time::Duration};

use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tokio::time::Instant;
use tower::BoxError;

use super::{
    Informer,
    store::{self, Page},
};
use crate::{
    backoff::Backoff,
    upstream::{
        self, RequestClass, Upstream, UpstreamBody,
        lines::{self, Lines, MAX_EVENT},
    },
};

/// Objects per LIST page.
const PAGE: usize = 500;
/// The most one page may hold.
const MAX_READ: usize = 64 << 20;
/// How long a LIST page may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
/// Between failed attempts: unhurried, since LISTs go to the API server meanwhile.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A watch ending sooner than this (without an error) counts as broken, so a server that
/// ends every watch at once is not asked in a tight loop.
const SHORTEST_WATCH: Duration = Duration::from_secs(1);

/// Why a LIST or watch failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Send(String),
    #[error("answered {0}: {1}")]
    Refused(StatusCode, String),
    #[error("reading the answer: {0}")]
    Read(BoxError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the watch ended at once")]
    Short,
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Failure {
    /// Whether the API server no longer has the changes since the version asked for.
    fn is_gone(&self) -> bool {
        matches!(
            self,
            Self::Refused(StatusCode::GONE, _) | Self::Store(store::Error::Watch { code: 410, .. })
        )
    }
}

/// One resource's reflector.
struct Reflector {
    informer: Arc<Informer>,
    upstream: Upstream,
    cluster: Arc<str>,
    backoff: Backoff,
    /// Whether the last attempt failed (and said so in the log).
    failing: bool,
}

/// Keeps `informer`'s store current with `upstream` until the task is cancelled.
pub(super) async fn run(informer: Arc<Informer>, upstream: Upstream, cluster: Arc<str>) {
    let mut reflector = Reflector {
        informer,
        upstream,
        cluster,
        backoff: BACKOFF,
        failing: false,
    };
    loop {
        match reflector.list().await {
            Ok(page) => {
                let objects = reflector.informer.store.replace(page);
                reflector.recovered(objects);
            }
            Err(error) => {
                reflector.failed("LIST failed", &error).await;
                continue;
            }
        }
        loop {
            let started = Instant::now();
            let error = match reflector.watch().await {
                Ok(()) if started.elapsed() >= SHORTEST_WATCH => continue,
                Ok(()) => Failure::Short,
                Err(error) => error,
            };
            if error.is_gone() {
                tracing::debug!(cluster = %reflector.cluster, resource = %reflector.informer.resource, %error, "list cache: listing again");
                reflector.informer.store.unsync();
                break;
            }
            reflector.informer.store.pause();
            reflector.failed("the watch broke", &error).await;
        }
    }
}

impl Reflector {
    /// Logs a failure (the first of a series) and waits before the next attempt.
    async fn failed(&mut self, what: &str, error: &Failure) {
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(cluster = %self.cluster, resource = %self.informer.resource, %error, "list cache: {what}; its LISTs go to the API server until it recovers");
        }
        tokio::time::sleep(self.backoff.next()).await;
    }

    /// Notes that the copy is current again.
    fn recovered(&mut self, objects: usize) {
        self.backoff.reset();
        if std::mem::take(&mut self.failing) {
            tracing::info!(cluster = %self.cluster, resource = %self.informer.resource, objects, "list cache: current again");
        }
    }

    /// Sends a GET for `target` and returns the answer if it is a `200`.
    async fn get(
        &self,
        target: &str,
        class: RequestClass,
    ) -> Result<http::Response<upstream::Body>, Failure> {
        let request = Request::get(target)
            .header(header::ACCEPT, "application/json")
            .body(UpstreamBody::default())
            .expect("a GET of a path builds");
        let response = self
            .upstream
            .send(request, class)
            .await
            .map_err(|error| Failure::Send(upstream::failure_status(&error).message))?;
        if response.status() == StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), 64 << 10);
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Err(Failure::Refused(status, message))
    }

    /// Reads every page of the collection.
    async fn list(&self) -> Result<Page, Failure> {
        let collection = self.informer.resource.collection();
        let mut target = format!("{collection}?limit={PAGE}");
        let mut whole: Option<Page> = None;
        loop {
            let page = async {
                let response = self.get(&target, RequestClass::Short).await?;
                let body = http_body_util::Limited::new(response.into_body(), MAX_READ);
                let body = body.collect().await.map_err(Failure::Read)?.to_bytes();
                Ok::<_, Failure>(Page::parse(&body)?)
            };
            let page = tokio::time::timeout(LIST_TIMEOUT, page)
                .await
                .map_err(|_| Failure::Timeout(LIST_TIMEOUT))??;
            let next = page.continue_token.clone();
            match whole.as_mut() {
                Some(whole) => whole.extend(page),
                None => whole = Some(page),
            }
            let Some(token) = next else {
                return Ok(whole.expect("one page was read"));
            };
            let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            target = format!("{collection}?limit={PAGE}&continue={token}");
        }
    }

    /// Watches from the copy's version, applying each event, until the API server ends the
    /// watch (`Ok`) or something fails.
    async fn watch(&mut self) -> Result<(), Failure> {
        let informer = Arc::clone(&self.informer);
        let store = &informer.store;
        let Some(version) = store.resource_version() else {
            return Err(Failure::Refused(StatusCode::GONE, "no copy".into()));
        };
        // As client-go: between five and ten minutes, so sidecars do not renew together.
        let timeout = 300 + fastrand::u64(..300);
        let version: String = form_urlencoded::byte_serialize(version.as_bytes()).collect();
        let target = format!(
            "{}?watch=1&allowWatchBookmarks=true&resourceVersion={version}&timeoutSeconds={timeout}",
            self.informer.resource.collection()
        );
        let mut body = self
            .get(&target, RequestClass::LongRunning)
            .await?
            .into_body();
        // The API server sends the changes since `version` first: the copy is as current as
        // its watch cache, which is what `resourceVersion=0` promises.
        store.resume();
        if self.failing {
            self.recovered(store.len());
        }
        let mut lines = Lines::new(MAX_EVENT);
        let unreadable = |error: lines::Error| Failure::Read(error.into());
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(Failure::Read)?.into_data() else {
                continue;
            };
            lines.push(&data).map_err(unreadable)?;
            while let Some(line) = lines.next_line().map_err(unreadable)? {
                store.apply(&line)?;
            }
        }
        if let Some(rest) = lines.finish() {
            store.apply(&rest)?;
        }
        Ok(())
    }
}
