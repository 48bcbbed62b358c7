//! MCA's memory while it merges large lists: three clusters (test API servers) each holding
//! a list of `size_mib` MiB, merged by a fan-out route into one LIST read by an application
//! in the pod sandbox. MCA's peak resident set (`VmHWM`) is read after a small merged list
//! (the baseline) and after the large one; the difference is what merging costs. `MCA_BIN`
//! picks the build, for a before-and-after comparison.

use std::time::Instant;

use anyhow::{Context, ensure};
use http_body_util::BodyExt;
use mca_tests::{apiserver::Options, client::Https, fleet::Fleet, harness::NAMESPACE};

/// Every pod of every cluster, merged.
const ROUTES: &str = "routes:\n\
    \x20 - name: everything\n\
    \x20   match: {resources: [pods]}\n\
    \x20   to: {clusters: [local, east, west], strategy: fanOut}\n";
/// The size of each pod, mostly an annotation.
const POD_BYTES: usize = 16 << 10;

/// Measures and prints MCA's peak memory growth for a merged LIST of three `size_mib` lists.
pub fn run(size_mib: usize) -> anyhow::Result<()> {
    let fleet = Fleet::start(ROUTES, "", Options::default())?;
    let pods = (size_mib << 20) / POD_BYTES;
    for (name, server, _) in fleet.clusters() {
        for n in 0..pods {
            server
                .state()
                .pods
                .insert_padded(NAMESPACE, &format!("{name}-{n}"), POD_BYTES);
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
        // The baseline: a small merged list, so what any list builds exists already.
        read(&mut client, "/api/v1/namespaces/nothing-here/pods").await?;
        let baseline = fleet.env.mca.peak_resident_kib()?;
        let started = Instant::now();
        let (bytes, items) = read(&mut client, &format!("/api/v1/namespaces/{NAMESPACE}/pods")).await?;
        let took = started.elapsed();
        let peak = fleet.env.mca.peak_resident_kib()?;
        ensure!(items == 3 * pods + 1, "{items} items merged, not {}", 3 * pods + 1);
        println!(
            "Merged LIST of 3 clusters x {size_mib} MiB ({} objects, {:.1} MiB answered in {:.2} s): \
             MCA's peak resident set {:.1} MB before, {:.1} MB after: +{:.1} MB",
            items,
            bytes as f64 / f64::from(1 << 20),
            took.as_secs_f64(),
            baseline as f64 / 1024.0,
            peak as f64 / 1024.0,
            peak.saturating_sub(baseline) as f64 / 1024.0,
        );
        anyhow::Ok(())
    })
}

/// GETs `path`; the answer's size and its number of items.
async fn read(client: &mut Https, path: &str) -> anyhow::Result<(usize, usize)> {
    let body = fetch(client, path).await?;
    Ok((body.len(), items(&body)?))
}

/// GETs `path`: the whole body of its successful answer.
pub(crate) async fn fetch(client: &mut Https, path: &str) -> anyhow::Result<bytes::Bytes> {
    let response = client.get(path).await?;
    ensure!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    Ok(response.into_body().collect().await?.to_bytes())
}

/// The number of items in a list.
pub(crate) fn items(body: &[u8]) -> anyhow::Result<usize> {
    let list: serde_json::Value = serde_json::from_slice(body).context("a JSON list")?;
    Ok(list["items"].as_array().map_or(0, Vec::len))
}
