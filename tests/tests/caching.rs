//! Discovery and OpenAPI documents served from MCA's copy: a burst of kubectl invocations
//! (each with its own empty cache, as in fresh pods or CI jobs) costs the API server one
//! discovery fetch, and once the copy is older than `--discovery-cache-ttl` MCA asks with
//! `If-None-Match` and the API server answers `304`.

use std::{process::Stdio, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use mca_tests::{
    client::{Https, body_bytes},
    harness::{Env, NAMESPACE, venv_program},
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// How many requests for `path` (query aside) reached the API server.
fn upstream_requests(env: &Env, path: &str) -> usize {
    env.apiserver()
        .requests()
        .iter()
        .filter(|r| r.target.split('?').next() == Some(path))
        .count()
}

#[test]
fn a_burst_of_kubectl_invocations_costs_one_discovery_fetch() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let invocations = 100;
    let parallel = 10;
    for wave in 0..invocations / parallel {
        let children: Vec<_> = (0..parallel)
            .map(|i| {
                // A cache directory of its own: kubectl's disk cache cannot help.
                let cache = env.pod.dir().join(format!("kube-cache-{wave}-{i}"));
                env.pod
                    .app(venv_program("kubectl"))
                    .args(["get", "pods", "-n", NAMESPACE, "--cache-dir"])
                    .arg(&cache)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        for child in children {
            let output = child.wait_with_output()?;
            anyhow::ensure!(output.status.success(), "kubectl: {output:?}");
        }
    }
    let lists = upstream_requests(&env, &format!("/api/v1/namespaces/{NAMESPACE}/pods"));
    assert_eq!(lists, invocations, "every list reaches the API server");
    assert_eq!(upstream_requests(&env, "/api"), 1);
    assert_eq!(upstream_requests(&env, "/apis"), 1);
    let scrape = env.metrics()?;
    let local = ("cluster", "local");
    assert_eq!(
        scrape.sum("mca_cache_requests_total", &[local, ("result", "miss")]),
        2.0
    );
    assert_eq!(
        scrape.sum("mca_cache_requests_total", &[local, ("result", "hit")]),
        (2 * invocations - 2) as f64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_old_copy_is_revalidated_with_its_etag_and_clients_get_304_for_theirs()
-> anyhow::Result<()> {
    let env = Env::start_test(&["--discovery-cache-ttl", "1s"])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let bearer = client.bearer();
    let get = |if_none_match: Option<&str>| {
        let mut request = Request::get("/apis?timeout=32s")
            .header("authorization", &bearer)
            .header(header::ACCEPT, AGGREGATED);
        if let Some(etag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        request.body(Full::<Bytes>::default())
    };
    let first = client.send(get(None)?).await?;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-mca-cache"], "miss");
    let etag = first.headers()[header::ETAG].to_str()?.to_owned();
    let document = body_bytes(first).await?;

    let again = client.send(get(None)?).await?;
    assert_eq!(again.headers()["x-mca-cache"], "hit");
    assert_eq!(body_bytes(again).await?, document);
    // A client holding the document gets 304, from MCA's copy.
    let held = client.send(get(Some(&etag))?).await?;
    assert_eq!(held.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(upstream_requests(&env, "/apis"), 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revalidated = client.send(get(None)?).await?;
    assert_eq!(revalidated.status(), StatusCode::OK);
    assert_eq!(body_bytes(revalidated).await?, document);
    let requests = env.apiserver().requests();
    let asked: Vec<_> = requests
        .iter()
        .filter(|r| r.target.starts_with("/apis?"))
        .collect();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].header("if-none-match"), Some(etag.as_str()));
    let scrape = env.metrics()?;
    assert_eq!(
        scrape.sum("mca_cache_requests_total", &[("result", "revalidated")]),
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_of_zero_caches_nothing() -> anyhow::Result<()> {
    let env = Env::start_test(&["--discovery-cache-ttl", "0s"])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    for _ in 0..3 {
        let response = client.get("/apis").await?;
        assert!(!response.headers().contains_key("x-mca-cache"));
        body_bytes(response).await?;
    }
    assert_eq!(upstream_requests(&env, "/apis"), 3);
    Ok(())
}
