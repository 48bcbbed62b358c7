//! Observability, the way an operator meets it. `/metrics` on the admin listener, scraped as
//! Prometheus does while real clients use MCA: requests by cluster, verb, resource and code;
//! latency without the long-running ones; open watches; upstream connections; certificate
//! expiry — and never a credential, path or namespace in a label, nor more series than the
//! bound however many resources clients invent. Trace context: the API server receives a
//! `traceparent` continuing the application's trace (or a new one), and the access log names
//! the trace; with the `otlp` build, the request spans reach an OTLP collector in the same
//! traces.
//!
//! `/metrics` scraped while kubectl and a Rust client use MCA (requests by cluster, verb, resource
//! and code, a 401 counted without a cluster, latency only for short requests, an open watch
//! counted until it ends, upstream connections, certificate expiry; no token, namespace, path or
//! name anywhere in the scrape); 1,050 invented resource names stay within the 1,000-series bound;
//! the API server receives a `traceparent` continuing the application's trace with MCA's span as
//! the parent, or a new unsampled one, and the access log names the trace; the `otlp` build,
//! against a stand-in OTLP collector, exports spans at exit that carry the application's trace id,
//! its span as the parent, and the span ids the API server received in `traceparent`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use mca_tests::{
    apiserver::ApiServer,
    client::{Https, body_bytes, open_watch},
    harness::{Env, Mca, NAMESPACE, REAL_TOKEN, mca_otlp_binary},
    otlp,
    sandbox::Pod,
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_clients_did() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let local = [("cluster", "local")];
    // kubectl: discovery, then a list.
    env.kubectl(&["get", "pods", "-n", NAMESPACE])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let missing = format!("/api/v1/namespaces/{NAMESPACE}/pods/no-such-pod");
    assert_eq!(client.get(&missing).await?.status(), 404);
    let refused = client
        .send(
            Request::get("/version")
                .header("authorization", "Bearer not-mcas-token")
                .body(Full::<Bytes>::default())?,
        )
        .await?;
    assert_eq!(refused.status(), 401);
    let watch_path = format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1");
    let watch = open_watch(&mut client, &watch_path).await?;

    let scrape = env.metrics()?;
    let list = [("verb", "list"), ("resource", "pods"), ("code", "200")];
    assert!(scrape.sum("mca_requests_total", &[&local[..], &list].concat()) >= 1.0);
    let not_found = [("verb", "get"), ("resource", "pods"), ("code", "404")];
    assert_eq!(
        scrape.sum("mca_requests_total", &[&local[..], &not_found].concat()),
        1.0
    );
    // The refusal never reached a cluster.
    assert_eq!(
        scrape.sum("mca_requests_total", &[("cluster", ""), ("code", "401")]),
        1.0
    );
    assert_eq!(scrape.sum("mca_client_auth_rejected_total", &[]), 1.0);
    // Timed: the list and the 404; the watch only counted, once it ends.
    assert_eq!(
        scrape.sum(
            "mca_request_duration_seconds_count",
            &[("verb", "get"), ("resource", "pods")]
        ),
        1.0
    );
    let watches = [("kind", "watch")];
    assert_eq!(scrape.sum("mca_long_running_requests", &watches), 1.0);
    assert!(scrape.sum("mca_response_bytes_total", &local) > 0.0);
    assert_eq!(scrape.sum("mca_cluster_healthy", &local), 1.0);
    // The open watch is in flight to the cluster, on a pooled HTTP/2 connection.
    assert!(scrape.sum("mca_cluster_requests_in_flight", &local) >= 1.0);
    assert!(scrape.sum("mca_upstream_connections", &[("protocol", "h2")]) >= 1.0);
    assert!(scrape.sum("mca_upstream_streams", &local) >= 1.0);
    assert!(scrape.sum("mca_upstream_connections_opened_total", &local) >= 1.0);
    assert_eq!(
        scrape.sum("mca_config_reloads_total", &[("result", "applied")]),
        0.0
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let expiry = scrape.sum("mca_serving_certificate_expiry_timestamp_seconds", &[]);
    assert!(
        (now + 23.0 * 3600.0..=now + 24.0 * 3600.0).contains(&expiry),
        "{expiry}"
    );
    assert!(scrape.sum("mca_runtime_tasks", &[]) > 0.0);

    drop(watch);
    env.mca
        .wait_for_access(|line| line["verb"] == "watch" && line["resource"] == "pods")?;
    let scrape = env.metrics()?;
    assert_eq!(scrape.sum("mca_long_running_requests", &watches), 0.0);
    let watch = [("verb", "watch"), ("resource", "pods")];
    assert_eq!(scrape.sum("mca_requests_total", &watch), 1.0);
    assert_eq!(
        scrape.sum("mca_request_duration_seconds_count", &watch),
        0.0
    );

    // Nothing secret or unbounded in any label: no token, no namespace, no path, no name.
    let (_, text) = env.admin_get("/metrics")?;
    for secret in [REAL_TOKEN, client.token(), NAMESPACE, "/api", "no-such-pod"] {
        assert!(!text.contains(secret), "{secret:?} in /metrics");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn invented_resources_collapse_into_one_series_past_the_bound() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    // More resources than MCA names (1,000): the API server has none of them.
    let invented = 1_050;
    for i in 0..invented {
        let response = client
            .get(&format!("/apis/invented.example.com/v1/things{i}"))
            .await?;
        assert_eq!(response.status(), 404);
        body_bytes(response).await?;
    }
    let scrape = tokio::time::timeout(Duration::from_secs(10), async { env.metrics() }).await??;
    let series = scrape.find("mca_requests_total", &[]).count();
    assert!(series <= 1_000 + 5, "{series} series");
    assert!(
        scrape.sum(
            "mca_requests_total",
            &[("resource", "other"), ("group", "other")]
        ) >= 50.0
    );
    assert_eq!(
        scrape.sum("mca_requests_total", &[("code", "404")]),
        invented as f64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_joins_the_applications_trace_with_mca_as_the_parent() -> anyhow::Result<()>
{
    let env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let incoming = format!("00-{trace}-00f067aa0ba902b7-01");
    let traced = client
        .send(
            Request::get("/version?probe=traced")
                .header("authorization", client.bearer())
                .header("traceparent", &incoming)
                .header("tracestate", "vendor=opaque")
                .body(Full::<Bytes>::default())?,
        )
        .await?;
    assert_eq!(traced.status(), 200);
    body_bytes(traced).await?;
    // kubectl sends no trace context: MCA starts a trace, unsampled.
    env.kubectl(&["get", "--raw", "/version?probe=untraced"])?;

    let received = |query: &str| -> anyhow::Result<String> {
        let request = env
            .apiserver()
            .requests()
            .into_iter()
            .find(|r| r.target.contains(query))
            .ok_or_else(|| anyhow::anyhow!("{query} never arrived"))?;
        assert_eq!(
            request
                .headers
                .iter()
                .filter(|(n, _)| n == "traceparent")
                .count(),
            1
        );
        if query == "probe=traced" {
            assert_eq!(request.header("tracestate"), Some("vendor=opaque"));
        }
        Ok(request.header("traceparent").unwrap_or_default().to_owned())
    };
    let forwarded = received("probe=traced")?;
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(parts.len(), 4, "{forwarded}");
    // Same trace and flags; the parent is MCA's span, not the application's.
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace, "01"));
    assert_eq!(parts[2].len(), 16);
    assert_ne!(parts[2], "00f067aa0ba902b7");
    let line = env
        .mca
        .wait_for_access(|l| l["path"] == "/version" && l["trace_id"] == trace)?;
    assert_eq!(line["status"], 200);

    let started = received("probe=untraced")?;
    let parts: Vec<&str> = started.split('-').collect();
    assert_eq!(parts.len(), 4, "{started}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1].len(), 32);
    assert_ne!(parts[1], "0".repeat(32));
    assert_eq!(parts[3], "00", "a trace MCA starts is not sampled");
    env.mca.wait_for_access(|l| l["trace_id"] == parts[1])?;
    Ok(())
}

/// `text` (hex digits) as bytes.
fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread")]
async fn request_spans_are_exported_over_otlp_in_the_applications_trace() -> anyhow::Result<()> {
    let pod = Pod::new()?;
    let apiserver = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    apiserver.state().pods.insert(NAMESPACE, "web");
    let collector = otlp::Receiver::start(pod.listen("127.0.0.1:0")?)?;
    let endpoint = collector.endpoint();
    let mca = Mca::start_command(
        {
            let mut command = pod.command(mca_otlp_binary());
            command.arg("run");
            command
        },
        &pod,
        apiserver.addr(),
        apiserver.ca_pem(),
        REAL_TOKEN,
        &["--otlp-endpoint", &endpoint],
    )?;
    let mut env = Env {
        mca,
        apiserver: Some(apiserver),
        pod,
    };
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let traced = client
        .send(
            Request::get(format!(
                "/api/v1/namespaces/{NAMESPACE}/pods/web?probe=traced"
            ))
            .header("authorization", client.bearer())
            .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
            .body(Full::<Bytes>::default())?,
        )
        .await?;
    assert_eq!(traced.status(), 200);
    body_bytes(traced).await?;
    // kubectl sends no trace context: with an exporter, MCA starts a trace its sampler keeps
    // (the SDK's default: always).
    env.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?probe=untraced"),
    ])?;

    let forwarded = |query: &str| -> anyhow::Result<Vec<String>> {
        let request = env
            .apiserver()
            .requests()
            .into_iter()
            .find(|r| r.target.contains(query))
            .ok_or_else(|| anyhow::anyhow!("{query} never arrived"))?;
        let value = request.header("traceparent").unwrap_or_default();
        Ok(value.split('-').map(str::to_owned).collect())
    };
    let hop = forwarded("probe=traced")?;
    assert_eq!((hop[1].as_str(), hop[3].as_str()), (trace, "01"), "{hop:?}");
    assert_ne!(hop[2], "b7ad6b7169203331");
    let fresh = forwarded("probe=untraced")?;
    assert_ne!(fresh[1], trace);
    assert_eq!(fresh[3], "01", "{fresh:?}");

    // At exit MCA sends what is still queued.
    env.mca.terminate(Duration::from_secs(10))?;
    let exported: Vec<u8> = collector.bodies().concat();
    assert!(
        !exported.is_empty(),
        "nothing was exported:\n{}",
        env.mca.log()
    );
    // The exported spans are the ones the API server was told about, in the same traces,
    // the first one a child of the application's span.
    for id in [trace, &hop[2], "b7ad6b7169203331", &fresh[1], &fresh[2]] {
        assert!(holds(&exported, &unhex(id)), "{id} was not exported");
    }
    for text in ["request", "mca", "pods", "web", "list"] {
        assert!(
            holds(&exported, text.as_bytes()),
            "{text:?} was not exported"
        );
    }
    Ok(())
}
