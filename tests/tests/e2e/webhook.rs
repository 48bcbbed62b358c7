//! `mca webhook` as the API server meets it: AdmissionReviews POSTed over TLS (verified
//! against the CA a `caBundle` would hold) are answered with a JSONPatch that injects MCA;
//! malformed reviews get a `400` Status; a rotated serving certificate is served to new
//! connections without a restart.
//!
//! `mca webhook` over TLS answering AdmissionReviews with a JSONPatch, a malformed review with 400,
//! a rotated certificate served without restart; floods of connections and reviews stay within the
//! bounds.

use std::{net::SocketAddr, path::Path, process::Command, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use mca_tests::{
    client::tls_config,
    harness::{Process, mca_binary},
};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

const NAME: &str = "mca-webhook.mca-system.svc";

/// A CA, and a serving certificate it signed written to `dir` as `tls.crt`/`tls.key`.
struct Authority {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    fn issue(&self, dir: &Path) -> anyhow::Result<()> {
        let params = CertificateParams::new(vec![NAME.to_owned()])?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
        std::fs::write(dir.join("tls.crt"), cert.pem())?;
        Ok(())
    }
}

/// POSTs `body` to `path` as the API server would; returns the status, the JSON answer and
/// the certificate the webhook presented.
async fn post(
    addr: SocketAddr,
    ca: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Value, CertificateDer<'static>)> {
    post_from(None, addr, ca, path, body).await
}

/// [`post`] from the source address `from`, if given.
async fn post_from(
    from: Option<SocketAddr>,
    addr: SocketAddr,
    ca: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(StatusCode, Value, CertificateDer<'static>)> {
    let tcp = dial(from, addr).await?;
    let config = tls_config(ca, &[b"h2", b"http/1.1"])?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(NAME)?, tcp)
        .await?;
    let presented = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await?;
    tokio::spawn(connection);
    let request = Request::post(format!("https://{NAME}{path}?timeout=10s"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&body)?, presented))
}

/// A TCP connection to `addr`, from `from` if given.
async fn dial(
    from: Option<SocketAddr>,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    match from {
        Some(from) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(from)?;
            socket.connect(addr).await
        }
        None => tokio::net::TcpStream::connect(addr).await,
    }
}

/// A free port on loopback, for a webhook to listen on.
fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(([127, 0, 0, 1], port).into())
}

/// An application pod of one container, annotated `annotations`.
fn app_pod(annotations: &[(&str, String)]) -> Pod {
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            annotations: Some(
                annotations
                    .iter()
                    .map(|(key, value)| ((*key).to_owned(), value.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                image: Some("registry.example/web:1".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn review(pod: &Pod) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "3f1b5c9e-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": false,
        }
    })
    .to_string()
    .into_bytes()
}

/// Starts `mca` (run by `command`) as `mca webhook` on `addr` with the certificate in `dir`
/// (env mode), and waits until it is ready.
fn start_webhook(
    name: &str,
    mut command: Command,
    dir: &std::path::Path,
    addr: SocketAddr,
) -> anyhow::Result<Process> {
    let webhook = Process::spawn(
        name,
        command
            .arg("webhook")
            .arg(format!("--listen={addr}"))
            .arg(format!("--tls-cert={}", dir.join("tls.crt").display()))
            .arg(format!("--tls-key={}", dir.join("tls.key").display()))
            .args(["--mode=env", "--image=registry.example/mca:9.9.9"]),
    )?;
    webhook.wait_for_line(
        |l| l.contains("MCA webhook is ready"),
        Duration::from_secs(20),
    )?;
    Ok(webhook)
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_are_answered_with_a_patch_over_tls_and_certificates_rotate() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let authority = Authority::new()?;
    authority.issue(dir.path())?;
    let addr = free_addr()?;
    let _webhook = start_webhook("mca webhook", Command::new(mca_binary()), dir.path(), addr)?;

    let pod = app_pod(&[]);
    let (status, answer, first_cert) =
        post(addr, &authority.pem, "/inject/namespace", review(&pod)).await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let response = &answer["response"];
    assert_eq!(response["uid"], "3f1b5c9e-0000-4000-8000-000000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone())?;
    let patch: Vec<Value> = serde_json::from_slice(&bytes)?;
    let ops: Vec<(&str, &str)> = patch
        .iter()
        .map(|op| {
            (
                op["op"].as_str().unwrap_or(""),
                op["path"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(ops.contains(&("add", "/spec/initContainers")), "{ops:?}");
    assert!(
        ops.contains(&("add", "/spec/automountServiceAccountToken")),
        "{ops:?}"
    );
    let init = patch
        .iter()
        .find(|op| op["path"] == "/spec/initContainers")
        .expect("init containers");
    assert_eq!(init["value"][0]["image"], "registry.example/mca:9.9.9");

    // Not opted in: admitted as it is.
    let (_, answer, _) = post(addr, &authority.pem, "/inject/annotated", review(&pod)).await?;
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    // Malformed: a Status the API server logs.
    let (status, answer, _) =
        post(addr, &authority.pem, "/inject/namespace", b"{".to_vec()).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        (answer["kind"].as_str(), answer["reason"].as_str()),
        (Some("Status"), Some("BadRequest"))
    );

    // The operator rotates the certificate: new connections get the new one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    authority.issue(dir.path())?;
    let (status, _, second_cert) =
        post(addr, &authority.pem, "/inject/namespace", review(&pod)).await?;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        first_cert, second_cert,
        "the rotated certificate was not served"
    );
    Ok(())
}

/// Another process of MCA's own user (the application in env mode, in a pod that shares its
/// process namespace) cannot read MCA's environment or memory through `/proc`: every MCA
/// binary makes itself non-dumpable before it reads a credential.
#[tokio::test(flavor = "multi_thread")]
async fn floods_of_connections_and_reviews_are_bounded() -> anyhow::Result<()> {
    use mca::webhook::{HANDSHAKE, MAX_REVIEW, PER_PEER};
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir()?;
    let authority = Authority::new()?;
    authority.issue(dir.path())?;
    let addr = free_addr()?;
    let webhook = start_webhook("mca webhook", Command::new(mca_binary()), dir.path(), addr)?;
    let ca = authority.pem.clone();
    let path = "/inject/annotated";
    let enabled = app_pod(&[("mca.io/inject", "enabled".to_owned())]);

    // More than is ever read: refused before it is read.
    let (code, status, _) = post(addr, &ca, path, vec![b' '; MAX_REVIEW + 1]).await?;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{status}");
    assert_eq!(status["reason"], "RequestEntityTooLarge");

    // Twenty reviews of 3.5 MiB at once, each on a connection of its own (from addresses of
    // their own): all answered, and the webhook holds few of them at a time.
    let before = webhook.peak_resident_kib()?;
    let big = review(&app_pod(&[("big", "x".repeat(7 << 19))]));
    let answers = futures_util::future::join_all((0..20).map(|i| {
        let from = SocketAddr::from(([127, 0, 1, 1 + i], 0));
        post_from(Some(from), addr, &ca, path, big.clone())
    }))
    .await;
    for answer in answers {
        let (code, answer, _) = answer?;
        assert_eq!(code, StatusCode::OK, "{answer}");
    }
    let grown = (webhook.peak_resident_kib()? - before) / 1024;
    eprintln!("20 reviews of 3.5 MiB at once: peak RSS +{grown} MiB");
    assert!(grown < 64, "peak RSS grew by {grown} MiB");

    // One address holds its share of connections, silent; the next is closed at once, and
    // a review from elsewhere is answered meanwhile.
    let greedy: SocketAddr = "127.0.0.3:0".parse()?;
    let mut held = Vec::new();
    for _ in 0..PER_PEER {
        held.push(dial(Some(greedy), addr).await?);
    }
    let mut extra = dial(Some(greedy), addr).await?;
    let read = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut [0; 1])).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the peer's share was kept: {read:?}"
    );
    let (code, answer, _) = post(addr, &ca, path, review(&enabled)).await?;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert!(answer["response"].get("patch").is_some(), "{answer}");
    // The silent ones never shake hands: closed after HANDSHAKE, and the peer may come back.
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(HANDSHAKE * 3, held[0].read(&mut [0; 1])).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let waited = started.elapsed();
    assert!(waited < HANDSHAKE * 2, "closed after {waited:?}");
    drop(held);
    let (code, _, _) = post_from(Some(greedy), addr, &ca, path, review(&enabled)).await?;
    assert_eq!(code, StatusCode::OK);
    Ok(())
}

#[test]
fn another_process_of_the_same_user_cannot_read_mca_through_proc() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    Authority::new()?.issue(dir.path())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    for file in ["tls.crt", "tls.key"] {
        std::fs::set_permissions(
            dir.path().join(file),
            std::fs::Permissions::from_mode(0o644),
        )?;
    }
    let as_nonroot = |program: &std::path::Path| {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
            .arg(program);
        command
    };
    let addr = free_addr()?;
    let webhook = start_webhook(
        "mca webhook (uid 65532)",
        as_nonroot(&mca_binary()),
        dir.path(),
        addr,
    )?;
    // setpriv executes MCA in its own process: the PID is MCA's.
    let read = as_nonroot(std::path::Path::new("/bin/cat"))
        .arg(format!("/proc/{}/environ", webhook.pid()))
        .output()?;
    assert!(!read.status.success(), "read: {read:?}");
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Permission denied"),
        "{read:?}"
    );
    Ok(())
}
