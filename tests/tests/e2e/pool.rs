//! MCA's connections to the API server under many long-running requests.
//!
//! The test API server allows [`STREAM_LIMIT`] concurrent HTTP/2 streams per connection, as
//! kube-apiserver allows 100. Applications hold three times that many watches through MCA —
//! from kube-rs over one HTTP/2 connection, from the Python client over many HTTP/1.1
//! connections, and from as many kubectl processes — and every watch must get its response
//! headers and its events, while a GET, a new watch and an exec each answer within a second.
//! At the connection bound a request gets a `429` Status after the connect timeout, not an
//! endless wait; idle extra connections are closed.
//!
//! The upstream pool. The test API server allows 10 streams per connection; 30 watches (three
//! connections' worth) from kube-rs over one HTTP/2 connection, from the Python client over 30
//! HTTP/1.1 connections, and from 30 `kubectl get -w` processes all get their headers and events
//! while a GET, a new watch and an exec each answer within a second; at the connection bound a
//! watch gets `429` after the connect timeout while a GET still passes, and idle connections close.
//! A scripted HTTP/2 server (`tests/src/rawh2.rs`) lowers its stream limit on a live connection and
//! refuses a stream, which MCA honours and retries. With `K8S_BIN` set (a control plane built by
//! `../shared/k8s/build.sh`), 150 watches against a real kube-apiserver (100 streams per
//! connection) do the same; without them that test is reported ignored.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mca::upstream::{Limits, RequestClass, Upstream, UpstreamBody};
use mca_tests::{
    apiserver::Options,
    client::{Https, body_json, next_chunk, websocket_upgrade},
    harness::{Env, NAMESPACE, Process, client_script, venv_program},
    k8s::Cluster,
    rawh2::RawH2Server,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

/// Streams per connection the test API server allows.
const STREAM_LIMIT: u32 = 10;
/// Watches the applications hold: three connections' worth.
const WATCHES: usize = 30;
/// How fast other requests must be answered while the watches are open.
const PROMPT: Duration = Duration::from_secs(1);
/// Upper bound for the watch processes to get going (they start 30 requests on 2 cores).
const SETTLE: Duration = Duration::from_secs(20);

const H1: &[&[u8]] = &[b"http/1.1"];
const H2: &[&[u8]] = &[b"h2"];

fn env(args: &[&str]) -> anyhow::Result<Env> {
    let options = Options {
        max_concurrent_streams: Some(STREAM_LIMIT),
        ..Options::default()
    };
    Env::start_test_with(options, args)
}

/// The pool as MCA's admin endpoint reports it.
fn pool_stats(env: &Env) -> anyhow::Result<serde_json::Value> {
    let (code, body) = env.admin_get("/upstream")?;
    anyhow::ensure!(code == 200, "/upstream answered {code}: {body}");
    Ok(serde_json::from_str::<serde_json::Value>(&body)?["clusters"][0]["pool"].clone())
}

/// The watch requests the API server received, and how many connections they came on.
fn watches_received(env: &Env) -> (usize, usize) {
    let watches: Vec<_> = env
        .apiserver()
        .requests()
        .into_iter()
        .filter(|r| r.target.contains("watch=true") || r.target.contains("watch=1"))
        .collect();
    let connections: BTreeSet<u64> = watches.iter().map(|r| r.connection).collect();
    (watches.len(), connections.len())
}

/// What a GET, a new watch and an exec ask for while the watches are open, and what answers
/// them.
struct Probe {
    /// An object to GET, and its name.
    get: (String, &'static str),
    /// A collection to watch, and what its first event contains.
    watch: (String, &'static str),
    /// A pod to exec `echo prompt` in, and whether it runs (a real cluster without nodes
    /// refuses, which is an answer too).
    exec: (String, bool),
}

impl Probe {
    /// Against the test API server: its pod `web`.
    fn test_server() -> Self {
        let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        Self {
            get: (format!("{pods}/web"), "web"),
            watch: (format!("{pods}?watch=true"), r#""name":"web""#),
            exec: (format!("{pods}/web"), true),
        }
    }
}

/// With the watches open, a GET, a new watch and an exec each answer within [`PROMPT`].
async fn others_are_served_promptly(env: &Env, probe: &Probe) -> anyhow::Result<()> {
    let mut h2 = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let started = Instant::now();
    let response = tokio::time::timeout(PROMPT, h2.get(&probe.get.0))
        .await
        .context("a GET got no answer within 1 s")??;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await?["metadata"]["name"], probe.get.1);
    eprintln!("GET answered in {:?}", started.elapsed());

    let started = Instant::now();
    let response = tokio::time::timeout(PROMPT, h2.get(&probe.watch.0))
        .await
        .context("a new watch got no response headers within 1 s")??;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = next_chunk(&mut body, PROMPT)
        .await?
        .expect("an initial event");
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains(probe.watch.1), "{first}");
    eprintln!("new watch's first event in {:?}", started.elapsed());

    let mut h1 = Https::connect(&env.pod, "kubernetes.default.svc", H1).await?;
    let started = Instant::now();
    let exec = websocket_upgrade(
        &format!(
            "{}/exec?command=echo&command=prompt&stdout=true",
            probe.exec.0
        ),
        "v5.channel.k8s.io",
    )
    .header("authorization", h1.bearer())
    .body(Full::default())?;
    let mut response = tokio::time::timeout(PROMPT, h1.send(exec))
        .await
        .context("an exec got no answer within 1 s")??;
    if !probe.exec.1 {
        eprintln!(
            "exec answered {} in {:?}",
            response.status(),
            started.elapsed()
        );
        return Ok(());
    }
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut response).await?;
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
    let stdout = tokio::time::timeout(PROMPT, async {
        while let Some(message) = socket.next().await {
            if let Message::Binary(data) = message?
                && data.first() == Some(&1)
            {
                return Ok(data.slice(1..));
            }
        }
        anyhow::bail!("the exec session ended without output")
    })
    .await
    .context("the exec printed nothing within 1 s")??;
    assert_eq!(stdout, "prompt\n");
    eprintln!("exec output in {:?}", started.elapsed());
    Ok(())
}

/// Drives `watchers`, an application process that opens `count` watches, prints `watching N`
/// once all have response headers, then `ADDED <pod> <i>` as each sees the pod: checks that
/// `probe` is served meanwhile, has `add` create the pod, and waits for every watch to see it.
async fn hold_watches(
    env: &Env,
    watchers: &Process,
    count: usize,
    probe: &Probe,
    add: impl FnOnce() -> anyhow::Result<()>,
    pod: &str,
) -> anyhow::Result<()> {
    watchers
        .wait_for_line(|l| l == format!("watching {count}"), SETTLE)
        .with_context(|| format!("MCA's log:\n{}", env.mca.log()))?;
    others_are_served_promptly(env, probe).await?;
    add()?;
    for i in 0..count {
        watchers.wait_for_line(|l| l == format!("ADDED {pod} {i}"), SETTLE)?;
    }
    let status = watchers.wait(SETTLE)?;
    assert!(status.success(), "{status}: {}", watchers.output());
    Ok(())
}

/// MCA spread the watches over at least as many connections as the stream limit requires.
fn assert_spread(env: &Env, watches: usize) {
    let (received, connections) = watches_received(env);
    assert!(received >= watches, "{received} watches arrived");
    let needed = watches.div_ceil(STREAM_LIMIT as usize);
    assert!(
        connections >= needed,
        "{received} watches came on {connections} connections; {needed} needed"
    );
}

/// Runs `watchers` (see [`hold_watches`]) with [`WATCHES`] watches against the test API
/// server, which adds the pod; checks they were spread over enough connections.
async fn hold_test_server_watches(
    env: &Env,
    name: &str,
    watchers: &mut Command,
) -> anyhow::Result<()> {
    let pod = env.unique_name(name);
    let watchers = Process::spawn(
        name,
        watchers
            .args(["watch-many", NAMESPACE, &pod])
            .arg(WATCHES.to_string()),
    )?;
    let add = || {
        env.apiserver().state().pods.insert(NAMESPACE, &pod);
        Ok(())
    };
    hold_watches(env, &watchers, WATCHES, &Probe::test_server(), add, &pod).await?;
    assert_spread(env, WATCHES);
    Ok(())
}

/// Whether MCA logs (once they end) [`WATCHES`] watches that came over `http`.
async fn watches_came_over(env: &Env, http: &str) -> bool {
    let deadline = Instant::now() + SETTLE;
    while Instant::now() < deadline {
        let logged = env
            .mca
            .access_log()
            .iter()
            .filter(|l| l["verb"] == "watch" && l["http"] == http)
            .count();
        if logged >= WATCHES {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_holds_three_connections_worth_of_watches_over_http2() -> anyhow::Result<()> {
    let env = env(&[])?;
    let mut kube_rs = env.pod.app(env!("CARGO_BIN_EXE_mca-kube-client"));
    kube_rs.arg("--http2");
    hold_test_server_watches(&env, "kube-rs", &mut kube_rs).await?;
    // They came to MCA over HTTP/2, sharing the connection the first one opened.
    assert!(watches_came_over(&env, "HTTP/2.0").await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_holds_three_connections_worth_of_watches_over_http1() -> anyhow::Result<()> {
    let env = env(&[])?;
    let mut python = env.pod.app(venv_program("python"));
    python.arg(client_script("python_client.py"));
    hold_test_server_watches(&env, "python", &mut python).await?;
    assert!(watches_came_over(&env, "HTTP/1.1").await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_processes_hold_three_connections_worth_of_watches() -> anyhow::Result<()> {
    let env = env(&[])?;
    let pod = env.unique_name("kubectl");
    let kubectls = (0..WATCHES)
        .map(|i| {
            Process::spawn(
                &format!("kubectl get -w #{i}"),
                env.pod
                    .app(venv_program("kubectl"))
                    .args(["get", "pods", "--watch", "--output", "name"])
                    .args(["--namespace", NAMESPACE, "--request-timeout", "0"]),
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // kubectl lists, then watches: wait until every watch reached the API server.
    let deadline = Instant::now() + SETTLE;
    while watches_received(&env).0 < WATCHES {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {WATCHES} watches reached the API server; MCA's log:\n{}",
            watches_received(&env).0,
            env.mca.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    others_are_served_promptly(&env, &Probe::test_server()).await?;
    env.apiserver().state().pods.insert(NAMESPACE, &pod);
    for kubectl in &kubectls {
        kubectl.wait_for_line(|l| l == format!("pod/{pod}"), SETTLE)?;
    }
    assert_spread(&env, WATCHES);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_bound_requests_get_a_status_not_a_wait() -> anyhow::Result<()> {
    // Two connections of two streams: long-running requests may use one connection, short
    // requests also the second.
    let env = Env::start_test_with(
        Options {
            max_concurrent_streams: Some(2),
            ..Options::default()
        },
        &[
            "--upstream-max-connections",
            "2",
            "--upstream-connect-timeout",
            "1s",
            "--upstream-idle-timeout",
            "1s",
        ],
    )?;
    let watch = format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true");
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let mut open = Vec::new();
    for _ in 0..2 {
        let response = client.get(&watch).await?;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response.into_body());
    }

    // A third watch finds no stream and may not take the last connection: 429 after the
    // connect timeout.
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(&watch))
        .await
        .context("a watch at the bound waited for more than 10 s")??;
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    let status = body_json(response).await?;
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["details"]["retryAfterSeconds"], 1);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("--upstream-max-connections"),
        "{status}"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );

    // A GET still gets through, on the connection kept for short requests.
    let response = tokio::time::timeout(
        PROMPT,
        client.get(&format!("/api/v1/namespaces/{NAMESPACE}/pods/web")),
    )
    .await
    .context("a GET at the bound got no answer within 1 s")??;
    assert_eq!(response.status(), StatusCode::OK);
    body_json(response).await?;
    let stats = pool_stats(&env)?;
    assert_eq!(stats["connections"], 2, "{stats}");

    // Once the watches end, the connections fall idle and are closed.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = pool_stats(&env)?;
        if stats["connections"] == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "idle connections still open: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The access log recorded the refusal with its reason.
    let refused = env.mca.wait_for_access(|l| l["status"] == 429)?;
    assert_eq!(refused["verb"], "watch");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a real kube-apiserver: K8S_BIN or ~/.cache/mca-k8s/bin (../shared/k8s/build.sh); cargo xtask test runs it when found"]
async fn real_apiserver_serves_150_watches_and_everything_else() -> anyhow::Result<()> {
    // kube-apiserver allows 100 streams per connection; this is the issue's measurement.
    const COUNT: usize = 150;
    let cluster = Cluster::start()?;
    // No controllers run: the ServiceAccount a pod needs is made by hand.
    cluster.kubectl(&["create", "serviceaccount", "default"])?;
    let env = Env::start_with_kubeconfig(&cluster.kubeconfig(), &[])?;
    let pod = env.unique_name("real");
    let watchers = Process::spawn(
        "kube-rs watches",
        env.pod
            .app(env!("CARGO_BIN_EXE_mca-kube-client"))
            .args(["--http2", "watch-many", "default", &pod])
            .arg(COUNT.to_string()),
    )?;
    let probe = Probe {
        get: ("/api/v1/namespaces/default".to_owned(), "default"),
        watch: (
            "/api/v1/namespaces?watch=true".to_owned(),
            r#""kind":"Namespace""#,
        ),
        exec: (format!("/api/v1/namespaces/default/pods/{pod}"), false),
    };
    let add = || {
        let manifest = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{pod}"}},
                "spec":{{"containers":[{{"name":"app","image":"busybox"}}]}}}}"#
        );
        let path = env.pod.dir().join("pod.json");
        std::fs::write(&path, manifest)?;
        cluster.kubectl(&["create", "-f", path.to_str().expect("UTF-8")])?;
        Ok(())
    };
    hold_watches(&env, &watchers, COUNT, &probe, add, &pod).await?;
    Ok(())
}

/// MCA's upstream client, straight from its library, to the scripted server.
fn upstream_to(server: &RawH2Server) -> anyhow::Result<Upstream> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut config = kube::Config::new(format!("https://{}", server.addr()).parse()?);
    config.root_cert = Some(
        CertificateDer::pem_slice_iter(server.ca_pem().as_bytes())
            .map(|cert| cert.map(|cert| cert.to_vec()))
            .collect::<Result<_, _>>()?,
    );
    config.auth_info.token = Some("a-token".to_owned().into());
    let limits = Limits {
        max_connections: 8,
        connect_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(90),
        keep_alive: mca::upstream::KeepAlive::CLIENT_GO,
    };
    Ok(Upstream::from_config(config, limits)?)
}

/// A watch through `upstream`, whose response headers arrive within 5 s.
async fn upstream_watch(
    upstream: &Upstream,
) -> anyhow::Result<http::Response<mca::upstream::Body>> {
    let request = Request::get("/api/v1/pods?watch=true").body(UpstreamBody::default())?;
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        upstream.send(request, RequestClass::LongRunning),
    )
    .await
    .context("no response headers within 5 s")?
    .map_err(|error| anyhow::anyhow!(error))?;
    assert_eq!(response.status(), StatusCode::OK);
    Ok(response)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_limit_lowered_on_a_live_connection_is_honoured() -> anyhow::Result<()> {
    let server = RawH2Server::start(3, 0).await?;
    let upstream = upstream_to(&server)?;
    let first = upstream_watch(&upstream).await?;
    // The connection is offered to other requests once the server's SETTINGS are known
    // (after a PING round trip).
    while server.connections()[0].pings == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = upstream_watch(&upstream).await?;
    assert_eq!(server.connections().len(), 1, "{:?}", server.connections());

    // Two streams open, and the server now allows two: a third must not queue behind them.
    server.announce(0, 2)?;
    while server.connections()[0].settings_acks < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let third = upstream_watch(&upstream).await?;
    let connections = server.connections();
    assert_eq!(connections.len(), 2, "{connections:?}");
    assert_eq!(
        (connections[0].streams, connections[1].streams),
        (2, 1),
        "{connections:?}"
    );
    drop((first, second, third));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_stream_is_sent_again() -> anyhow::Result<()> {
    let server = RawH2Server::start(10, 1).await?;
    let upstream = upstream_to(&server)?;
    let _watch = upstream_watch(&upstream).await?;
    let streams: u32 = server.connections().iter().map(|c| c.streams).sum();
    assert_eq!(streams, 2, "{:?}", server.connections());
    Ok(())
}
