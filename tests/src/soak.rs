//! A bounded soak through MCA: many open watches receiving events, and a steady mix of GETs
//! and LISTs, for a set time, with MCA's memory, open files and tasks sampled every second.
//! `cargo xtask soak` runs it at full size; the e2e suite runs a short one.
//!
//! Nothing may fail: every request answered 200, every watch open to the end and delivered
//! every event; once the load stops MCA must be back at the open files and tasks it had before
//! it started (connections and watches are held throughout, so those are fixed).

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use crate::{
    client::{Https, next_chunk, open_watch},
    harness::{Env, NAMESPACE},
};

const HOST: &str = "kubernetes.default.svc";
const H2: &[&[u8]] = &[b"h2"];
/// Watches per client connection, as client-go multiplexes them.
const WATCHES_PER_CONNECTION: usize = 100;
/// Client connections sending GETs and LISTs.
const WORKERS: u32 = 4;

/// How big and how long.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long the load runs.
    pub duration: Duration,
    /// Watches held open.
    pub watches: usize,
    /// GETs and LISTs per second, together.
    pub requests_per_second: u32,
}

/// One second's sample of MCA.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since the load started.
    pub at: Duration,
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// Open files.
    pub fds: usize,
    /// Live tasks.
    pub tasks: u64,
    /// Requests answered so far.
    pub requests: u64,
}

/// What the soak saw.
#[derive(Debug)]
pub struct Report {
    /// The settings it ran with.
    pub settings: Settings,
    /// MCA before the load (watches and connections open, nothing in flight).
    pub before: Sample,
    /// Every second under load.
    pub samples: Vec<Sample>,
    /// MCA once the load stopped (watches and connections still open).
    pub after: Sample,
    /// Requests answered 200.
    pub requests: u64,
    /// Requests that failed, and the first few reasons.
    pub errors: u64,
    /// The first few failures.
    pub first_errors: Vec<String>,
    /// Objects created during the soak (each an event on every watch).
    pub events: u64,
    /// Watches that ended early or missed an event.
    pub broken_watches: usize,
}

impl Report {
    /// Failures of any kind.
    pub fn failures(&self) -> u64 {
        self.errors + self.broken_watches as u64
    }

    /// A markdown summary: settings, every tenth sample, before and after.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "soak: {:?}, {} watches, {} GET+LIST/s: {} requests, {} errors, {} events on \
             every watch, {} watches broken\n\n| t | RSS MB | open fds | tasks | requests |\n\
             | --- | --- | --- | --- | --- |\n",
            s.duration,
            s.watches,
            s.requests_per_second,
            self.requests,
            self.errors,
            self.events,
            self.broken_watches
        );
        let step = (self.samples.len() / 10).max(1);
        let rows = std::iter::once(("before", &self.before))
            .chain(self.samples.iter().step_by(step).map(|sample| ("", sample)))
            .chain(std::iter::once(("after", &self.after)));
        for (label, sample) in rows {
            let t = if label.is_empty() {
                format!("{} s", sample.at.as_secs())
            } else {
                label.to_owned()
            };
            let _ = writeln!(
                out,
                "| {t} | {:.1} | {} | {} | {} |",
                sample.rss_kib as f64 / 1024.0,
                sample.fds,
                sample.tasks,
                sample.requests
            );
        }
        for error in &self.first_errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}

/// Runs the soak against `env`'s MCA and test API server.
pub async fn run(env: &Env, settings: Settings) -> anyhow::Result<Report> {
    let apiserver = env.apiserver();
    // Held for the whole soak: the API server ends a watch after its `timeoutSeconds` (the
    // test server's default is 5 minutes, kube-apiserver's up to 30), so ask for longer.
    let timeout = settings.duration.as_secs() + 60;
    let watch_path =
        format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true&timeoutSeconds={timeout}");
    let stop = Arc::new(AtomicBool::new(false));

    // The watches, each counting the events it gets.
    let mut watch_clients = Vec::new();
    let mut watches = Vec::new();
    for i in 0..settings.watches {
        if i % WATCHES_PER_CONNECTION == 0 {
            watch_clients.push(Https::connect(&env.pod, HOST, H2).await?);
        }
        let client = watch_clients.last_mut().expect("just added");
        let mut body = open_watch(client, &watch_path)
            .await
            .with_context(|| format!("watch {i}"))?;
        let seen = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&seen);
        let stop = Arc::clone(&stop);
        watches.push((
            seen,
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // One event per line.
                    match next_chunk(&mut body, Duration::from_secs(3600)).await {
                        Ok(Some(chunk)) => {
                            let lines = chunk.iter().filter(|&&b| b == b'\n').count();
                            counted.fetch_add(lines as u64, Ordering::Relaxed);
                        }
                        Ok(None) | Err(_) => return false,
                    }
                }
                true
            }),
        ));
    }
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        workers.push(Https::connect(&env.pod, HOST, H2).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = Arc::new(AtomicU64::new(0));
    let sample = |start: Instant| -> anyhow::Result<Sample> {
        Ok(Sample {
            at: start.elapsed(),
            rss_kib: env.mca.resident_kib()?,
            fds: env.mca.open_fds()?,
            tasks: env.mca_tasks()?,
            requests: requests.load(Ordering::Relaxed),
        })
    };
    let start = Instant::now();
    let before = sample(start)?;

    // The load: GETs and LISTs at a steady pace, and an object created every second.
    let errors = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let period = Duration::from_secs(1) * WORKERS / settings.requests_per_second.max(1);
    let get_path = format!("/api/v1/namespaces/{NAMESPACE}/pods/web");
    let list_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let mut load = Vec::new();
    for mut client in workers {
        let (requests, errors) = (Arc::clone(&requests), Arc::clone(&errors));
        let paths = [get_path.clone(), list_path.clone()];
        let duration = settings.duration;
        load.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0.. {
                tick.tick().await;
                if start.elapsed() >= duration {
                    break;
                }
                let failure = match client.get(&paths[n % 2]).await {
                    Ok(response) if response.status() == 200 => {
                        match http_body_util::BodyExt::collect(response.into_body()).await {
                            Ok(_) => None,
                            Err(error) => Some(format!("reading {}: {error}", paths[n % 2])),
                        }
                    }
                    Ok(response) => Some(format!("{}: {}", paths[n % 2], response.status())),
                    Err(error) => Some(format!("{}: {error}", paths[n % 2])),
                };
                match failure {
                    None => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(why) => {
                        let mut errors = errors.lock().unwrap();
                        errors.0 += 1;
                        if errors.1.len() < 5 {
                            errors.1.push(why);
                        }
                    }
                }
            }
            client
        }));
    }
    let mut samples = Vec::new();
    let mut events = 0u64;
    while start.elapsed() < settings.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        events += 1;
        apiserver
            .state()
            .pods
            .insert(NAMESPACE, &format!("soak-{events}"));
        samples.push(sample(start)?);
    }
    let mut idle_workers = Vec::new();
    for worker in load {
        idle_workers.push(worker.await?);
    }

    // Every watch got every event, and is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while watches
        .iter()
        .any(|(seen, _)| seen.load(Ordering::Relaxed) < events)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut broken_watches = 0;
    for (seen, task) in &watches {
        if seen.load(Ordering::Relaxed) < events || task.is_finished() {
            broken_watches += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sample(start)?;
    stop.store(true, Ordering::Relaxed);
    for (_, task) in watches {
        task.abort();
    }
    drop(idle_workers);
    drop(watch_clients);
    let (errors, first_errors) = std::mem::take(&mut *errors.lock().unwrap());
    Ok(Report {
        settings,
        before,
        samples,
        after,
        requests: requests.load(Ordering::Relaxed),
        errors,
        first_errors,
        events,
        broken_watches,
    })
}
