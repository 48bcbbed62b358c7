//! What MCA does to requests, checked precisely with a Rust client in the pod and the test
//! API server's record of what arrived.
//!
//! Certificate names and renewal, ALPN on both sides, credential stripping, streaming, pagination,
//! compression, error `Status` objects, health, graceful shutdown.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use mca_tests::{
    apiserver::ApiServer,
    client::{Https, body_bytes, body_json, next_chunk},
    harness::{Env, Mca, NAMESPACE, REAL_TOKEN},
    sandbox::Pod,
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread")]
async fn fake_service_account_and_serving_certificate() -> anyhow::Result<()> {
    let env = Env::start_test(&["--extra-san", "mca.example.test", "--extra-san", "10.1.2.3"])?;
    let sa = env.pod.fake_sa_dir();
    // MCA's client token: 256 random bits, URL-safe base64.
    let token = std::fs::read_to_string(sa.join("token"))?;
    assert_eq!(token.len(), 43, "{token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );
    assert_eq!(std::fs::read_to_string(sa.join("namespace"))?, NAMESPACE);
    let ca = std::fs::read_to_string(sa.join("ca.crt"))?;
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // Only the three files and MCA's marker; without --state-dir MCA's CA key is nowhere on
    // disk.
    let mut files: Vec<String> = std::fs::read_dir(&sa)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert_eq!(
        files,
        [".mca-fake-serviceaccount", "ca.crt", "namespace", "token"]
    );

    for name in [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "mca.example.test",
        "10.1.2.3",
    ] {
        let mut client = Https::connect(&env.pod, name, H2).await?;
        assert_eq!(
            client.get("/version").await?.status(),
            StatusCode::OK,
            "{name}"
        );
    }
    assert!(
        Https::connect(&env.pod, "other.example.test", H2)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn alpn_picks_http2_or_http1_on_both_sides() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    for (alpn, version) in [(H2, Version::HTTP_2), (H1, Version::HTTP_11)] {
        let mut client = Https::connect(&env.pod, "kubernetes.default.svc", alpn).await?;
        let response = client.get("/version").await?;
        assert_eq!(response.version(), version);
        assert_eq!(body_json(response).await?["gitVersion"], "v1.33.0-mca-test");
    }
    // Upstream, MCA negotiated HTTP/2 with the API server.
    assert!(
        env.apiserver()
            .requests()
            .iter()
            .all(|r| r.version == "HTTP/2.0")
    );
    Ok(())
}

/// MCA serves on one thread unless told otherwise; with a pool of worker threads it serves the
/// same, connections spread over them (`/runtime` reports the workers).
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_of_worker_threads_serves_the_same() -> anyhow::Result<()> {
    let env = Env::start_test(&["--worker-threads", "2"])?;
    let pods = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let mut clients = Vec::new();
    for alpn in [H2, H1, H2, H1] {
        clients.push(Https::connect(&env.pod, "kubernetes.default.svc", alpn).await?);
    }
    let answers = futures_util::future::join_all(clients.iter_mut().map(|client| {
        let pods = pods.clone();
        async move { body_json(client.get(&pods).await?).await }
    }))
    .await;
    for answer in answers {
        assert_eq!(answer?["kind"], "PodList");
    }
    assert_eq!(
        env.kubectl(&["get", "pods", "-n", NAMESPACE, "-o", "name"])?
            .trim(),
        "pod/web"
    );
    let (_, runtime) = env.admin_get("/runtime")?;
    let runtime: serde_json::Value = serde_json::from_str(&runtime)?;
    assert_eq!(runtime["workers"], 2, "{runtime}");
    let default = Env::start_test(&[])?;
    let (_, runtime) = default.admin_get("/runtime")?;
    let runtime: serde_json::Value = serde_json::from_str(&runtime)?;
    assert_eq!(runtime["workers"], 1, "{runtime}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn app_credentials_are_replaced_and_everything_else_passes() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let body = r#"{"metadata":{"name":"exact","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
    for alpn in [H2, H1] {
        let mut client = Https::connect(&env.pod, "kubernetes.default.svc", alpn).await?;
        let request = Request::post(format!(
            "/api/v1/namespaces/{NAMESPACE}/pods?fieldManager=test"
        ))
        .header("authorization", client.bearer())
        .header("proxy-authorization", "Basic dXNlcjpwYXNz")
        .header("x-remote-user", "system:admin")
        .header("x-remote-group", "system:masters")
        .header("x-remote-extra-scopes", "everything")
        .header("impersonate-user", "system:admin")
        .header("impersonate-group", "system:masters")
        .header("impersonate-group", "admins")
        .header("impersonate-uid", "42")
        .header("impersonate-extra-scopes", "everything")
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf, application/json",
        )
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        let response = client.send(request).await?;
        let status = response.status();
        let created = body_json(response).await?;
        if alpn == H2 {
            assert_eq!(status, StatusCode::CREATED, "{created}");
            assert_eq!(created["metadata"]["labels"]["a"], "b");
        } else {
            // Same name again: the server's own 409 Status passes through untouched.
            assert_eq!(status, StatusCode::CONFLICT);
            assert_eq!(created["reason"], "AlreadyExists");
        }
    }
    let posts: Vec<_> = env
        .apiserver()
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 2);
    for post in posts {
        assert_eq!(
            post.target,
            format!("/api/v1/namespaces/{NAMESPACE}/pods?fieldManager=test")
        );
        assert_eq!(
            post.header("authorization"),
            Some(format!("Bearer {REAL_TOKEN}").as_str())
        );
        assert!(!post.has_header_prefix("impersonate-"), "{post:?}");
        assert!(!post.has_header_prefix("x-remote-"), "{post:?}");
        assert_eq!(post.header("proxy-authorization"), None);
        assert_eq!(
            post.header("accept"),
            Some("application/vnd.kubernetes.protobuf, application/json")
        );
        assert_eq!(post.header("content-type"), Some("application/json"));
        assert_eq!(post.header("x-custom"), Some("kept"));
        assert_eq!(
            post.header("content-length"),
            Some(body.len().to_string().as_str())
        );
    }
    let line = env
        .mca
        .wait_for_access(|l| l["verb"] == "create" && l["status"] == 201)?;
    assert_eq!(
        line["stripped"],
        "authorization,proxy-authorization,impersonate-user,impersonate-group,impersonate-uid,\
         x-remote-user,x-remote-group,impersonate-extra-*,x-remote-extra-*"
    );
    assert_eq!(line["bytes_in"], body.len());
    // No credential of either side reaches the log.
    let log = env.mca.log();
    let app_token = std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?;
    assert!(!log.contains(REAL_TOKEN) && !log.contains(&app_token));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn watches_and_log_follow_stream_through() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let response = client
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"))
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = next_chunk(&mut body, WAIT).await?.expect("initial event");
    assert!(String::from_utf8_lossy(&first).contains(r#""name":"web""#));
    // An event that happens after the watch started arrives while it is open.
    env.apiserver().state().pods.insert(NAMESPACE, "later");
    let next = next_chunk(&mut body, WAIT)
        .await?
        .expect("the new pod's event");
    assert!(String::from_utf8_lossy(&next).contains(r#""name":"later""#));
    drop(body);
    let watch = env.mca.wait_for_access(|l| l["verb"] == "watch")?;
    assert_eq!(watch["resource"], "pods");

    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H1).await?;
    let response = client
        .get(&format!(
            "/api/v1/namespaces/{NAMESPACE}/pods/web/log?follow=true"
        ))
        .await?;
    let mut body = response.into_body();
    assert_eq!(next_chunk(&mut body, WAIT).await?.unwrap(), "log line 1\n");
    // The server holds line 2 back until we have line 1: MCA did not wait for the end.
    env.apiserver().release_log_line();
    assert_eq!(next_chunk(&mut body, WAIT).await?.unwrap(), "log line 2\n");
    assert_eq!(next_chunk(&mut body, WAIT).await?, None);
    let log = env.mca.wait_for_access(|l| l["subresource"] == "log")?;
    assert_eq!(log["bytes_out"], 22);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_and_compression_pass_through() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    env.apiserver().state().pods.insert(NAMESPACE, "second");
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let page = body_json(
        client
            .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods?limit=1"))
            .await?,
    )
    .await?;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let page = body_json(
        client
            .get(&format!(
                "/api/v1/namespaces/{NAMESPACE}/pods?limit=1&continue={token}"
            ))
            .await?,
    )
    .await?;
    assert_eq!(page["items"][0]["metadata"]["name"], "web");
    assert!(page["metadata"]["continue"].is_null());

    let response = client
        .send(
            Request::get(format!("/api/v1/namespaces/{NAMESPACE}/pods"))
                .header("authorization", client.bearer())
                .header("accept-encoding", "gzip")
                .body(Full::default())?,
        )
        .await?;
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = body_bytes(response).await?;
    let mut json = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut json,
    )?;
    assert!(json.contains(r#""kind":"PodList""#), "{json}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_pass_through_untouched() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    let response = client
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods/missing"))
        .await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let status = body_json(response).await?;
    assert_eq!(status["message"], "pods \"missing\" not found");
    // If the API server rejects MCA's credentials, the app sees the server's answer.
    env.apiserver().set_tokens(&["some-other-token"]);
    let response = client.get("/version").await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(response).await?["reason"], "Unauthorized");
    Ok(())
}

/// MCA in a pod whose upstream is `upstream` (with `ca` as its CA); then one GET /version.
async fn status_from(
    pod: &Pod,
    upstream: std::net::SocketAddr,
    ca: &str,
    args: &[&str],
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let _mca = Mca::start(pod, upstream, ca, args)?;
    let mut client = Https::connect(pod, "kubernetes.default.svc", H2).await?;
    let response = client.get("/version").await?;
    Ok((response.status(), body_json(response).await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn mca_answers_with_a_status_when_it_cannot_serve() -> anyhow::Result<()> {
    let some_ca = rcgen::generate_simple_self_signed(vec!["x".into()])?
        .cert
        .pem();

    // Nothing listens upstream: 503.
    let pod = Pod::new()?;
    let closed = pod.listen("127.0.0.1:0")?.local_addr()?;
    let (code, status) = status_from(&pod, closed, &some_ca, &[]).await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{status}");
    assert_eq!(
        (status["kind"].as_str(), status["reason"].as_str()),
        (Some("Status"), Some("ServiceUnavailable"))
    );
    assert!(
        status["message"].as_str().unwrap().contains("unreachable"),
        "{status}"
    );
    drop(pod);

    // Upstream accepts TCP but never answers the TLS handshake: 504 after the timeout.
    let pod = Pod::new()?;
    let black_hole = pod.listen("127.0.0.1:0")?;
    let (code, status) = status_from(
        &pod,
        black_hole.local_addr()?,
        &some_ca,
        &["--upstream-connect-timeout", "1s"],
    )
    .await?;
    assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{status}");
    assert_eq!(status["reason"], "Timeout");
    drop(pod);

    // Upstream's certificate is not signed by the CA MCA trusts: 502.
    let pod = Pod::new()?;
    let server = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    let (code, status) = status_from(&pod, server.addr(), &some_ca, &[]).await?;
    assert_eq!(code, StatusCode::BAD_GATEWAY, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("TLS"),
        "{status}"
    );

    // A request MCA cannot forward at all: 400.
    let env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H1).await?;
    let connect = Request::connect("kubernetes.default.svc:443")
        .header("authorization", client.bearer())
        .body(Full::default())?;
    let response = client.send(connect).await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await?["reason"], "BadRequest");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_and_graceful_shutdown() -> anyhow::Result<()> {
    let mut env = Env::start_test(&["--shutdown-grace", "5s"])?;
    assert_eq!(env.admin_get("/livez")?.0, 200);
    assert_eq!(env.admin_get("/readyz")?.0, 200);
    assert_eq!(env.admin_get("/other")?.0, 404);

    // A watch is in flight when SIGTERM arrives.
    let mut client = Https::connect(&env.pod, "kubernetes.default.svc", H1).await?;
    let response = client
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"))
        .await?;
    let mut body = response.into_body();
    next_chunk(&mut body, WAIT).await?.expect("initial event");
    env.mca.signal(nix::sys::signal::Signal::SIGTERM)?;
    env.mca
        .wait_for_log(|l| l.contains("stopped accepting"), WAIT)?;
    assert_eq!(env.admin_get("/readyz")?.0, 503);
    // No new connections...
    assert!(
        Https::connect(&env.pod, "kubernetes.default.svc", H1)
            .await
            .is_err()
    );
    // ...but the watch still streams.
    env.apiserver()
        .state()
        .pods
        .insert(NAMESPACE, "during-drain");
    let next = next_chunk(&mut body, WAIT)
        .await?
        .expect("event during drain");
    assert!(String::from_utf8_lossy(&next).contains("during-drain"));
    // After the grace period MCA closes what is left and exits 0.
    let status = env.mca.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn serving_certificate_is_renewed_without_restart() -> anyhow::Result<()> {
    let env = Env::start_test(&["--cert-validity", "3s"])?;
    let renewals = |env: &Env| {
        env.mca
            .log()
            .matches("renewed the serving certificate")
            .count()
    };
    let first = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    // Renewal happens after two thirds of the validity; wait for one after this connection.
    let before = renewals(&env);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while renewals(&env) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no renewal:\n{}",
            env.mca.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = Https::connect(&env.pod, "kubernetes.default.svc", H2).await?;
    assert_ne!(first.peer_certificate, second.peer_certificate);
    // Same CA (the app's ca.crt is unchanged), still serving.
    assert_eq!(second.get("/version").await?.status(), StatusCode::OK);
    Ok(())
}
