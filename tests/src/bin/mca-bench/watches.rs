//! MCA's memory per open watch.
//!
//! An application in a pod sandbox opens `count` watches through MCA and keeps them open;
//! MCA's resident set is read before and after, and again once every watch has carried one
//! event. The upstream is the test API server allowing 100 streams per HTTP/2 connection, as
//! kube-apiserver does, so MCA spreads the watches over `count / 100` upstream connections.
//! Measured twice, each time with a fresh MCA: over HTTP/2 (100 watches per client
//! connection, as client-go multiplexes them) and over HTTP/1.1 (a connection per watch).

use std::time::Duration;

use anyhow::{Context, ensure};
use mca_tests::{
    apiserver::Options,
    client::{Https, next_chunk, open_watch},
    harness::{Env, NAMESPACE},
};

/// Streams per upstream connection, as kube-apiserver allows.
const UPSTREAM_STREAMS: u32 = 100;
/// How long any one step may take.
const STEP: Duration = Duration::from_secs(30);

struct Protocol {
    name: &'static str,
    alpn: &'static [&'static [u8]],
    watches_per_connection: usize,
}

const PROTOCOLS: [Protocol; 2] = [
    Protocol {
        name: "HTTP/2",
        alpn: &[b"h2"],
        watches_per_connection: 100,
    },
    Protocol {
        name: "HTTP/1.1",
        alpn: &[b"http/1.1"],
        watches_per_connection: 1,
    },
];

/// Measures and prints MCA's memory per watch over each protocol.
pub fn run(count: usize) -> anyhow::Result<()> {
    crate::raise_open_file_limit()?;
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "MCA's resident memory with {count} open watches (upstream: {UPSTREAM_STREAMS} streams \
         per connection):"
    );
    for protocol in &PROTOCOLS {
        let env = Env::start_test_with(
            Options {
                max_concurrent_streams: Some(UPSTREAM_STREAMS),
                ..Options::default()
            },
            &[],
        )?;
        let measured = runtime.block_on(measure(&env, protocol, count))?;
        let per_watch = |rss: u64| (rss.saturating_sub(measured.idle) * 1024) as f64 / count as f64;
        println!(
            "  {:<8} ({} client connections): idle {:.1} MB, watching {:.1} MB = {:.1} KB per \
             watch; after one event each {:.1} KB per watch; upstream connections {}",
            protocol.name,
            count.div_ceil(protocol.watches_per_connection),
            measured.idle as f64 / 1024.0,
            measured.watching as f64 / 1024.0,
            per_watch(measured.watching) / 1024.0,
            per_watch(measured.after_event) / 1024.0,
            measured.upstream_connections,
        );
    }
    Ok(())
}

/// Resident set sizes in KiB.
struct Measured {
    idle: u64,
    watching: u64,
    after_event: u64,
    upstream_connections: u64,
}

async fn measure(env: &Env, protocol: &Protocol, count: usize) -> anyhow::Result<Measured> {
    let watch_path = format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true");
    // Warm up: a watch opened and closed, so lazily built state exists before the baseline.
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", protocol.alpn).await?;
    drop(open_watch(&mut client, &watch_path).await?);
    drop(client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = env.mca.resident_kib()?;

    let mut clients = Vec::new();
    let mut watches = Vec::with_capacity(count);
    for i in 0..count {
        if i % protocol.watches_per_connection == 0 {
            clients.push(Https::connect(&env.pod, "kubernetes.default.svc", protocol.alpn).await?);
        }
        let client = clients.last_mut().expect("a client was just added");
        watches.push(
            open_watch(client, &watch_path)
                .await
                .with_context(|| format!("watch {i}"))?,
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watching = env.mca.resident_kib()?;

    env.apiserver().state().pods.insert(NAMESPACE, "event");
    for (i, watch) in watches.iter_mut().enumerate() {
        let event = next_chunk(watch, STEP).await?.context("a watch ended")?;
        ensure!(
            String::from_utf8_lossy(&event).contains(r#""name":"event""#),
            "watch {i} got {event:?}"
        );
    }
    let after_event = env.mca.resident_kib()?;
    let (code, body) = env.admin_get("/upstream")?;
    ensure!(code == 200, "/upstream answered {code}");
    let stats: serde_json::Value = serde_json::from_str(&body)?;
    Ok(Measured {
        idle,
        watching,
        after_event,
        upstream_connections: stats["clusters"][0]["pool"]["connections"]
            .as_u64()
            .unwrap_or_default(),
    })
}
