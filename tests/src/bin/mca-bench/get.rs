//! GETs through MCA: requests per second and latency percentiles, four HTTP/2 clients each
//! sending one request at a time for a fixed time, against the test API server. Run with
//! `MCA_BIN` set to compare two builds of MCA side by side in one run.

use std::time::{Duration, Instant};

use anyhow::ensure;
use mca_tests::{
    client::{Https, body_bytes},
    harness::{Env, NAMESPACE},
};

const CLIENTS: usize = 4;

/// Measures and prints.
pub fn run(seconds: u64) -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut latencies = runtime.block_on(async {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/web");
        // Warm up: connections to MCA and to the API server.
        let mut warm = Https::connect(&env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
        for _ in 0..100 {
            body_bytes(warm.get(&path).await?).await?;
        }
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let mut client = Https::connect(&env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
            let path = path.clone();
            tasks.push(tokio::spawn(async move {
                let end = Instant::now() + Duration::from_secs(seconds);
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let start = Instant::now();
                    let response = client.get(&path).await?;
                    ensure!(response.status() == 200, "GET: {}", response.status());
                    body_bytes(response).await?;
                    latencies.push(start.elapsed());
                }
                Ok(latencies)
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await??);
        }
        anyhow::Ok(all)
    })?;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "GET through MCA ({}): {:.0} requests/s, p50 {} µs, p99 {} µs ({} requests, {CLIENTS} \
         HTTP/2 clients, one request at a time each, {seconds} s)",
        mca_tests::harness::sidecar().join(" ".as_ref()).display(),
        latencies.len() as f64 / seconds as f64,
        at(0.5).as_micros(),
        at(0.99).as_micros(),
        latencies.len(),
    );
    Ok(())
}
