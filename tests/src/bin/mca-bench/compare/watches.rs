//! Many open watches through a target, each receiving one event: the target's memory per
//! watch, and how long the event takes to reach every watch. HTTP/2 clients carry 100 watches
//! per connection, as client-go multiplexes them; `kubectl proxy` speaks HTTP/1.1 to its
//! clients, so there each watch has a connection.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures_util::{StreamExt as _, stream};
use http_body_util::BodyExt as _;
use mca_tests::apiserver::ApiServer;

use super::{client::Connection, servers::Target, usage};

/// Watches per HTTP/2 connection.
const PER_CONNECTION: usize = 100;
/// Any one step's bound.
const STEP: Duration = Duration::from_secs(120);

/// What holding `count` watches cost and how fast they heard of an event.
#[derive(Debug, Clone, Copy)]
pub struct Watches {
    /// The target's resident memory per open watch (None for the upstream itself).
    pub kib_per_watch: Option<f64>,
    /// Until half the watches had the event.
    pub p50: Duration,
    /// Until 99% had it.
    pub p99: Duration,
    /// Until all had it.
    pub all: Duration,
}

/// Opens `count` watches through `target` on `api`'s pods, creates a pod, and measures.
pub async fn run(
    target: &Target,
    api: &ApiServer,
    count: usize,
    tag: &str,
) -> anyhow::Result<Watches> {
    let h2 = target.tls;
    let connections = if h2 {
        count.div_ceil(PER_CONNECTION)
    } else {
        count
    };
    let before = target
        .process
        .as_ref()
        .map(|p| usage::resident_kib(p.pid()))
        .transpose()?;
    let opened: Vec<Connection> = stream::iter(0..connections)
        .map(|_| Connection::open(target, h2))
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    // A namespace of their own holding one pod: each watch starts with its ADDED event (as a
    // watch from resourceVersion 0 does), which proves it open end to end whatever the proxy
    // does with response headers; the next event is the measured one.
    let namespace = format!("watch-{tag}");
    api.state().pods.insert(&namespace, "seed");
    let path = format!("/api/v1/namespaces/{namespace}/pods?watch=1&timeoutSeconds=600");
    let per = count.div_ceil(connections);
    // Each watch its own stream (HTTP/2) or connection (HTTP/1.1).
    let requests = opened
        .into_iter()
        .flat_map(|connection| match connection.stream() {
            Some(_) => (0..per)
                .filter_map(|_| connection.stream())
                .collect::<Vec<_>>(),
            None => vec![connection],
        });
    let bodies: Vec<_> = stream::iter(requests.take(count))
        .map(|mut connection| {
            let path = path.clone();
            async move {
                let response = tokio::time::timeout(STEP, connection.get(target, &path)).await??;
                ensure!(response.status() == 200, "watch: {}", response.status());
                let mut body = response.into_body();
                tokio::time::timeout(STEP, first_event(&mut body))
                    .await
                    .context("no initial event")??;
                anyhow::Ok(body)
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    ensure!(bodies.len() == count);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kib_per_watch = match (&target.process, before) {
        (Some(process), Some(before)) => {
            let after = usage::resident_kib(process.pid())?;
            Some(after.saturating_sub(before) as f64 / count as f64)
        }
        _ => None,
    };
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let mut held = Vec::with_capacity(count);
    for mut body in bodies {
        let arrived = arrived.clone();
        held.push(tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                if frame.is_ok_and(|f| f.data_ref().is_some_and(|d| !d.is_empty())) {
                    let _ = arrived.send(Instant::now());
                    break;
                }
            }
            // Keep the watch open until the measurement is over.
            body
        }));
    }
    let created = Instant::now();
    api.state().pods.insert(&namespace, "event");
    let mut delays = Vec::with_capacity(count);
    while delays.len() < count {
        let at = tokio::time::timeout(STEP, arrivals.recv())
            .await
            .context("watches still waiting for the event")?
            .context("a watch ended")?;
        delays.push(at - created);
    }
    delays.sort();
    let at = |q: f64| delays[((delays.len() - 1) as f64 * q) as usize];
    for task in held {
        task.abort();
    }
    Ok(Watches {
        kib_per_watch,
        p50: at(0.5),
        p99: at(0.99),
        all: at(1.0),
    })
}

/// Reads the watch's first event.
async fn first_event(body: &mut hyper::body::Incoming) -> anyhow::Result<()> {
    while let Some(frame) = body.frame().await {
        if frame?.data_ref().is_some_and(|d| !d.is_empty()) {
            return Ok(());
        }
    }
    anyhow::bail!("the watch ended")
}
