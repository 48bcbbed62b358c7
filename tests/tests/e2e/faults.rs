//! Faults around MCA: the API server dying under open streams, unreachable networks and
//! unusable credentials, SIGTERM with watches and tunnels open, start-up failures, and clients
//! that abandon connections halfway through (nothing may leak).
//!
//! The API server dying under two watches (HTTP/2, HTTP/1.1) and an exec session ends all three
//! within a second; an unreachable network and an exec plugin that starts failing get `503`
//! `Status` objects saying so; SIGTERM with a watch and an exec open: not ready after 0.8 ms, both
//! ended at the 2 s grace, exit 0 at 2.1 s; a fake ServiceAccount directory that cannot be written,
//! a taken listen address and a missing real ServiceAccount each give one error line naming the
//! path or address, exit 1, never ready; 1,000 connections abandoned silent, mid-ClientHello,
//! mid-head and mid-body (forwarded upstream as it came) leave MCA at its baseline of open files
//! and tasks (15 and 8; 965 and 1,158 while open).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mca_tests::{
    client::{self, Https, body_json, next_chunk, websocket_upgrade},
    harness::{Env, Mca, NAMESPACE, Process, http_get, mca_binary},
    sandbox::Pod,
};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::{WebSocketStream, tungstenite::protocol::Role};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];
const HOST: &str = "kubernetes.default.svc";

pub(crate) type Exec = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// `cat` in the pod's container over a WebSocket, through MCA.
pub(crate) async fn exec_cat(pod: &Pod) -> anyhow::Result<Exec> {
    let mut client = Https::connect(pod, HOST, H1).await?;
    let request = websocket_upgrade(
        &format!("/api/v1/namespaces/{NAMESPACE}/pods/web/exec?command=cat&stdin=true&stdout=true"),
        "v5.channel.k8s.io",
    )
    .header("authorization", client.bearer())
    .body(Full::<Bytes>::default())?;
    let response = client.send(request).await?;
    anyhow::ensure!(
        response.status() == StatusCode::SWITCHING_PROTOCOLS,
        "exec: {}",
        response.status()
    );
    let upgraded = hyper::upgrade::on(response).await?;
    Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
}

/// How long until `exec` ends (its stream closes or fails), at most `within`.
pub(crate) async fn exec_ends(exec: &mut Exec, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, exec.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_))) => return Some(start.elapsed()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// How long until `watch` ends (end of stream or an error), at most `within`.
async fn watch_ends(watch: &mut hyper::body::Incoming, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        match next_chunk(watch, within - start.elapsed()).await {
            Ok(Some(_)) => {}
            Ok(None) => return Some(start.elapsed()),
            Err(error) if error.to_string().contains("no data within") => return None,
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

/// A watch of the pods, its first event read.
async fn open_watch(client: &mut Https) -> anyhow::Result<hyper::body::Incoming> {
    client::open_watch(
        client,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true"),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_dying_ends_open_watches_and_exec_sessions_at_once() -> anyhow::Result<()> {
    let mut env = Env::start_test(&[])?;
    let mut h2 = Https::connect(&env.pod, HOST, H2).await?;
    let mut h1 = Https::connect(&env.pod, HOST, H1).await?;
    let mut watches = [open_watch(&mut h2).await?, open_watch(&mut h1).await?];
    let mut exec = exec_cat(&env.pod).await?;

    env.apiserver.as_mut().expect("test server").stop();
    let second = Duration::from_secs(1);
    for watch in &mut watches {
        let ended = watch_ends(watch, second).await;
        assert!(ended.is_some(), "a watch still open a second later");
    }
    let ended = exec_ends(&mut exec, second).await;
    assert!(ended.is_some(), "an exec session still open a second later");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_networks_and_unusable_credentials_get_503() -> anyhow::Result<()> {
    // The pod has no route out: connecting to a documentation address fails at once.
    let pod = Pod::new()?;
    let kubeconfig = pod.dir().join("unreachable.kubeconfig");
    std::fs::write(
        &kubeconfig,
        kubeconfig_yaml("https://192.0.2.1:6443", "token: t"),
    )?;
    let mca = Mca::start_with_kubeconfig(&pod, &kubeconfig, &[])?;
    let (code, status) = get_status(&pod).await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{status}");
    assert_eq!(status["reason"], "ServiceUnavailable", "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("unreachable"), "{message}");
    drop(mca);
    drop(pod);

    // An exec credential plugin handing out credentials that expire at once, until it fails:
    // MCA has no usable credential, and says so without the plugin's command, arguments or
    // output (which may hold a credential) anywhere the app or a log reader sees.
    let pod = Pod::new()?;
    let server = pod.listen("127.0.0.1:0")?;
    let plugin = pod.dir().join("plugin.sh");
    let broken = pod.dir().join("plugin-broken");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\n[ -e {broken} ] && {{ echo 'token service down: SECRET-OUT'; \
             echo 'SECRET-ERR' >&2; exit 1; }}\n\
             echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\
             \"kind\":\"ExecCredential\",\"status\":{{\"token\":\"t\",\
             \"expirationTimestamp\":\"'$(date -u -d '+1 second' +%Y-%m-%dT%H:%M:%SZ)'\"}}}}'\n",
            broken = broken.display()
        ),
    )?;
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let kubeconfig = pod.dir().join("failing-exec.kubeconfig");
    let user = format!(
        "exec:\n      apiVersion: client.authentication.k8s.io/v1\n      \
         command: {}\n      args: [--password, SECRET-ARG]\n      interactiveMode: Never",
        plugin.display()
    );
    std::fs::write(
        &kubeconfig,
        kubeconfig_yaml(&format!("https://{}", server.local_addr()?), &user),
    )?;
    let mca = Mca::start_with_kubeconfig(&pod, &kubeconfig, &[])?;
    std::fs::write(&broken, "")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, status) = get_status(&pod).await?;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(message.contains("no usable credentials"), "{message}");
    assert!(
        message.contains("its exec plugin failed (exit status: 1)"),
        "{message}"
    );
    let (_, readiness) = http_get(pod.connect(pod.admin_addr())?, "/readyz?verbose")?;
    let log = mca.log();
    for (what, text) in [("Status", message), ("/readyz", &readiness), ("log", &log)] {
        for secret in ["SECRET", "token service down", "plugin.sh"] {
            assert!(!text.contains(secret), "{secret} in the {what}: {text}");
        }
    }
    drop(mca);
    Ok(())
}

fn kubeconfig_yaml(server: &str, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
         clusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         insecure-skip-tls-verify: true\n\
         users:\n- name: u\n  user:\n    {user}\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: {NAMESPACE}\n"
    )
}

async fn get_status(pod: &Pod) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut client = Https::connect(pod, HOST, H2).await?;
    let response = client.get("/api/v1/namespaces/default/pods").await?;
    Ok((response.status(), body_json(response).await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_watches_and_tunnels_within_the_grace_period() -> anyhow::Result<()> {
    let grace = Duration::from_secs(2);
    let mut env = Env::start_test(&["--shutdown-grace", "2s"])?;
    let mut client = Https::connect(&env.pod, HOST, H2).await?;
    let mut watch = open_watch(&mut client).await?;
    let mut exec = exec_cat(&env.pod).await?;

    let start = Instant::now();
    env.mca.signal(nix::sys::signal::Signal::SIGTERM)?;
    // Not ready from the first moment, so no new traffic is sent this way.
    loop {
        let (code, _) = env.admin_get("/readyz")?;
        if code == 503 {
            break;
        }
        assert!(start.elapsed() < Duration::from_millis(500), "still ready");
    }
    let not_ready = start.elapsed();
    let limit = grace + Duration::from_secs(1);
    let (watch_ended, exec_ended) = tokio::join!(
        async { watch_ends(&mut watch, limit).await.map(|_| start.elapsed()) },
        async { exec_ends(&mut exec, limit).await.map(|_| start.elapsed()) },
    );
    let status = env.mca.terminate(Duration::from_secs(5))?;
    let exited = start.elapsed();
    println!(
        "SIGTERM: not ready after {not_ready:?}, watch ended after {watch_ended:?}, exec \
         after {exec_ended:?}, exited after {exited:?}"
    );
    assert!(watch_ended.is_some() && exec_ended.is_some());
    assert!(status.success(), "{status}");
    assert!(exited < limit + Duration::from_secs(1), "{exited:?}");
    Ok(())
}

/// Starts `mca run` with `args` in `pod` without waiting for it; its exit status and output.
fn run_to_failure(
    pod: &Pod,
    env: &[(&str, &str)],
    log_format: &str,
    args: &[&str],
) -> anyhow::Result<(i32, Vec<String>)> {
    let mut command = pod.command(mca_binary());
    command
        .args(["run", "--intercept", "env", "--log-format", log_format])
        .args(["--admin-listen", "127.0.0.1:9911"])
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let process = Process::spawn("MCA", &mut command)?;
    let status = process.wait(Duration::from_secs(20))?;
    Ok((status.code().unwrap_or(-1), process.lines()))
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_failures_are_one_clear_line_and_a_non_zero_exit() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let apiserver = env.apiserver().addr();
    let in_cluster = [
        ("KUBERNETES_SERVICE_HOST", apiserver.ip().to_string()),
        ("KUBERNETES_SERVICE_PORT", apiserver.port().to_string()),
    ];
    let in_cluster: Vec<(&str, &str)> = in_cluster.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let real_sa = env.pod.real_sa_dir();
    let real_sa = real_sa.display().to_string();
    let fake_sa = env.pod.dir().join("other-fake-sa").display().to_string();
    let busy = env.pod.listen("127.0.0.1:0")?;
    let busy = busy.local_addr()?.to_string();
    let free = "127.0.0.1:7443";
    let cases: [(&str, Vec<&str>, &str); 3] = [
        (
            "the fake ServiceAccount directory cannot be written",
            // Its parent is a regular file.
            vec![
                "--sa-dir",
                &real_sa,
                "--listen",
                free,
                "--fake-sa-dir",
                "/etc/hostname/sa",
            ],
            "/etc/hostname/sa",
        ),
        (
            "the listen address is taken",
            vec![
                "--sa-dir",
                &real_sa,
                "--listen",
                &busy,
                "--fake-sa-dir",
                &fake_sa,
            ],
            &busy,
        ),
        (
            "the real ServiceAccount is missing",
            vec![
                "--sa-dir",
                "/nonexistent/sa",
                "--listen",
                free,
                "--fake-sa-dir",
                &fake_sa,
            ],
            "/nonexistent/sa",
        ),
    ];
    for (what, args, named) in cases {
        let (code, lines) = run_to_failure(&env.pod, &in_cluster, "json", &args)?;
        assert_ne!(code, 0, "{what}: exit 0");
        let errors: Vec<&String> = lines.iter().filter(|l| l.contains("\"ERROR\"")).collect();
        assert_eq!(errors.len(), 1, "{what}: {lines:#?}");
        assert!(errors[0].contains(named), "{what}: {}", errors[0]);
        assert!(
            !lines.iter().any(|l| l.contains("MCA is ready")),
            "{what}: became ready: {lines:#?}"
        );
        println!("{what}: {}", errors[0]);
        assert!(!Path::new(&fake_sa).join("token").exists(), "{what}");
    }
    // As text, with stderr not a terminal (a container's log): no colour codes.
    let args = ["--sa-dir", "/nonexistent/sa", "--listen", free];
    let (code, lines) = run_to_failure(&env.pod, &in_cluster, "text", &args)?;
    assert_ne!(code, 0);
    assert!(lines.iter().any(|l| l.contains("ERROR")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "{lines:#?}");
    Ok(())
}

/// MCA's open file descriptors and live tokio tasks.
fn resources(env: &Env) -> anyhow::Result<(usize, u64)> {
    Ok((env.mca.open_fds()?, env.mca_tasks()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_abandoned_connections_leak_nothing() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    // Warm up: one request, so the upstream connection is part of the baseline.
    let mut warm = Https::connect(&env.pod, HOST, H2).await?;
    assert_eq!(warm.get("/version").await?.status(), StatusCode::OK);
    drop(warm);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = resources(&env)?;

    let mut abandoned: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let token = std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?;
    for i in 0..1000 {
        match i % 4 {
            // Connected, silent.
            0 => abandoned.push(Box::new(client::tcp(&env.pod)?)),
            // Half a TLS ClientHello.
            1 => {
                let mut tcp = client::tcp(&env.pod)?;
                tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                    .await?;
                abandoned.push(Box::new(tcp));
            }
            // Half a request head.
            2 => {
                let mut tls = client::tls(&env.pod, client::tcp(&env.pod)?, HOST, H1).await?;
                tls.write_all(b"GET /version HTTP/1.1\r\nHost: kubernetes\r\n")
                    .await?;
                tls.flush().await?;
                abandoned.push(Box::new(tls));
            }
            // Half a request body, forwarded upstream as it comes.
            _ => {
                let mut tls = client::tls(&env.pod, client::tcp(&env.pod)?, HOST, H1).await?;
                let head = format!(
                    "POST /api/v1/namespaces/{NAMESPACE}/pods HTTP/1.1\r\nHost: kubernetes\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                     Content-Length: 100000\r\n\r\n{{\"kind\":\"Pod\","
                );
                tls.write_all(head.as_bytes()).await?;
                tls.flush().await?;
                abandoned.push(Box::new(tls));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = resources(&env)?;
    println!("baseline {baseline:?}, with 1,000 half-open connections {busy:?}");
    assert!(
        busy.0 >= baseline.0 + 900,
        "the connections did not reach MCA: {busy:?}"
    );
    drop(abandoned);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = resources(&env)?;
    while (now.0 > baseline.0 || now.1 > baseline.1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = resources(&env)?;
    }
    println!("after abandoning them: {now:?}");
    assert!(
        now.0 <= baseline.0,
        "file descriptors leaked: {baseline:?} -> {now:?}"
    );
    assert!(now.1 <= baseline.1, "tasks leaked: {baseline:?} -> {now:?}");
    Ok(())
}
