//! Discovery and OpenAPI documents served from MCA's copy: a burst of kubectl invocations
//! (each with its own empty cache, as in fresh pods or CI jobs) costs the API server one
//! discovery fetch, and once the copy is older than `--discovery-cache-ttl` MCA asks with
//! `If-None-Match` and the API server answers `304`.
//!
//! 100 kubectl invocations, each with its own empty cache, cost the API server one `/api` and one
//! `/apis` request; after `--discovery-cache-ttl` the copy is revalidated with its `ETag` (the
//! server answers 304) and a client holding the `ETag` gets `304` from MCA; `0s` caches nothing.
//! `--list-cache v1/pods`: informer-style LISTs at `resourceVersion=0` (Python client, label
//! selector) answered from the watch-fed copy with no request to the API server, changes arriving
//! through the watch, the watch resumed after an outage and the copy listed again (three pages)
//! after a `410`.

use std::{process::Stdio, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use mca_tests::{
    client::{Https, body_bytes},
    harness::{Env, NAMESPACE, eventually, venv_program},
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// How long a cached copy may take to catch up.
const SETTLE: Duration = Duration::from_secs(20);

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

#[test]
fn lists_at_any_version_of_a_cached_resource_are_answered_from_a_watch_fed_copy()
-> anyhow::Result<()> {
    let env = Env::start_test(&["--list-cache", "v1/pods"])?;
    let pods = &env.apiserver().state().pods;
    pods.insert_labelled(NAMESPACE, "web-1", &[("app", "web")]);
    pods.insert_labelled(NAMESPACE, "db-1", &[("app", "db")]);
    pods.insert_labelled("elsewhere", "web-2", &[("app", "web")]);
    let objects = || -> anyhow::Result<f64> {
        Ok(env.metrics()?.sum(
            "mca_list_cache_objects",
            &[("cluster", "local"), ("resource", "v1/pods")],
        ))
    };
    // The harness's own pod and the three above.
    eventually(SETTLE, || Ok((objects()? == 4.0, ())))?;
    let collection = |env: &Env| upstream_requests(env, "/api/v1/pods");
    let reflector = collection(&env);
    assert_eq!(reflector, 2, "one LIST and one WATCH of the collection");

    // An informer-style client: 20 LISTs at resourceVersion=0 with a label selector.
    let listed = env.python(&["list-any-version", NAMESPACE, "app=web", "20"])?;
    assert_eq!(listed.trim(), "web-1");
    let namespaced = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    assert_eq!(
        upstream_requests(&env, &namespaced),
        0,
        "none reached the API server"
    );
    let hits = env.metrics()?.sum(
        "mca_list_cache_requests_total",
        &[("resource", "v1/pods"), ("result", "hit")],
    );
    assert_eq!(hits, 20.0);

    // Changes arrive through the watch.
    pods.insert_labelled(NAMESPACE, "web-3", &[("app", "web")]);
    assert!(pods.remove(NAMESPACE, "web-1"));
    let names = eventually(SETTLE, || {
        let names = env.python(&["list-any-version", NAMESPACE, "app=web", "1"])?;
        Ok((names.trim() == "web-3", names))
    })?;
    assert_eq!(names.trim(), "web-3");
    assert_eq!(upstream_requests(&env, &namespaced), 0);
    assert_eq!(collection(&env), reflector, "the watch carried the changes");

    // A LIST without resourceVersion=0 asks for the latest state: the API server's.
    let out = env.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "name"])?;
    assert!(
        out.contains("pod/web-3") && !out.contains("pod/web-1"),
        "{out}"
    );
    assert_eq!(upstream_requests(&env, &namespaced), 1);
    Ok(())
}

#[test]
fn a_copy_resumes_its_watch_after_an_outage_and_lists_again_when_too_far_behind()
-> anyhow::Result<()> {
    let mut env = Env::start_test(&["--list-cache", "v1/pods"])?;
    let collection = "/api/v1/pods";
    eventually(SETTLE, || {
        Ok((upstream_requests(&env, collection) == 2, ()))
    })?;
    let since = |env: &Env, what: &str, from: usize| {
        env.apiserver().requests()[from..]
            .iter()
            .filter(|r| r.target.starts_with(what))
            .count()
    };

    // A short outage, a few changes meanwhile: the watch carries on from the copy's version
    // and the API server replays what was missed. No LIST.
    env.stop_apiserver()?;
    env.apiserver()
        .state()
        .pods
        .insert(NAMESPACE, "during-outage");
    let before = env.apiserver().requests().len();
    env.resume_apiserver()?;
    let listed = eventually(SETTLE, || {
        let names = env.python(&["list-any-version", NAMESPACE, "", "1"])?;
        Ok((names.contains("during-outage"), names))
    })?;
    assert_eq!(listed.trim(), "during-outage,web");
    // The client may be answered before the copy is back (from the API server itself); the
    // copy resumes its watch in its own time.
    eventually(SETTLE, || {
        Ok((since(&env, "/api/v1/pods?watch=1", before) == 1, ()))
    })?;
    assert_eq!(since(&env, "/api/v1/pods?limit=", before), 0);

    // A long one: more changes than the API server remembers. It answers the watch with
    // 410 Expired and the copy lists again, in pages of 500.
    env.stop_apiserver()?;
    for i in 0..1100 {
        env.apiserver()
            .state()
            .pods
            .insert(NAMESPACE, &format!("p-{i:04}"));
    }
    let before = env.apiserver().requests().len();
    env.resume_apiserver()?;
    let listed = eventually(SETTLE, || {
        let names = env.python(&["list-any-version", NAMESPACE, "", "1"])?;
        Ok((names.split(',').count() == 1102, names))
    })?;
    assert!(listed.contains("p-1099"));
    eventually(SETTLE, || {
        Ok((since(&env, "/api/v1/pods?watch=1", before) >= 2, ()))
    })?;
    assert_eq!(since(&env, "/api/v1/pods?limit=", before), 3, "three pages");
    Ok(())
}
