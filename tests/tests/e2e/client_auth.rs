//! Who may use MCA: only holders of the token it wrote into the fake ServiceAccount.
//! (kubectl, the Python client and kube-rs presenting it untouched, over every transport, are
//! the `clients` and `upgrades` suites: they all run with client authentication on.)
//!
//! Requests without MCA's token (none, another, the real one, Basic) get a `401` `Status` over
//! HTTP/2 and HTTP/1.1, reach no server, are counted on `/clients` and logged without token values;
//! a WebSocket exec carrying the token as a subprotocol entry is admitted and the server is offered
//! only the other subprotocols; two renewals with a 3 s certificate: file and kubeconfig updated,
//! the current and previous token accepted, the one before refused; renewed files are replaced,
//! never rewritten in place (a reader racing the writer, ~480,000 reads, never sees a partial
//! token; files held open still read whole); `--client-auth=none` serves anyone.

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use mca_tests::{
    client::{Https, body_json, websocket_upgrade},
    harness::{Env, NAMESPACE, REAL_TOKEN},
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];
const HOST: &str = "kubernetes.default.svc";

/// `GET /version` with `authorization` (if any): the status and the body as JSON.
async fn get_version(
    client: &mut Https,
    authorization: Option<&str>,
) -> anyhow::Result<(StatusCode, serde_json::Value)> {
    let mut request = Request::get("/version");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = client.send(request.body(Full::default())?).await?;
    Ok((response.status(), body_json(response).await?))
}

fn rejected(env: &Env) -> anyhow::Result<u64> {
    let (code, body) = env.admin_get("/clients")?;
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(report["auth"], "token", "{report}");
    report["rejected"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{report}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_mcas_token_get_401_and_reach_no_cluster() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let real = format!("Bearer {REAL_TOKEN}");
    let wrong_attempts = [
        None,
        Some("Bearer not-the-token"),
        // The real credential is no key to MCA either.
        Some(real.as_str()),
        Some("Basic dXNlcjpwYXNz"),
    ];
    for alpn in [H2, H1] {
        let mut client = Https::connect(&env.pod, HOST, alpn).await?;
        for authorization in wrong_attempts {
            let (status, body) = get_version(&mut client, authorization).await?;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{authorization:?}: {body}"
            );
            assert_eq!(body["kind"], "Status");
            assert_eq!(body["reason"], "Unauthorized", "{body}");
            assert_eq!(body["code"], 401);
        }
        // The client's token, on the same connection, still works.
        let bearer = client.bearer();
        let (status, _) = get_version(&mut client, Some(&bearer)).await?;
        assert_eq!(status, StatusCode::OK);
    }
    // Nothing refused was forwarded: the server saw only the first good request (MCA answered
    // the second from its copy of `/version`).
    let seen: Vec<String> = env
        .apiserver()
        .requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(seen, ["/version"]);
    assert_eq!(rejected(&env)?, 2 * wrong_attempts.len() as u64);
    // Each refusal is logged (once its exchange is over, a moment after the client has the
    // answer), with no token value.
    let refusals = || {
        let log = env.mca.access_log();
        log.iter().filter(|line| line["status"] == 401).count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while refusals() < 2 * wrong_attempts.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(refusals(), 2 * wrong_attempts.len());
    let log = env.mca.log();
    let token = std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?;
    for secret in [token.as_str(), "not-the-token", REAL_TOKEN, "dXNlcjpwYXNz"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    Ok(())
}

/// An exec upgrade over WebSocket carrying the token as a `Sec-WebSocket-Protocol` entry, as
/// browsers and some clients do: the status MCA answers with.
async fn websocket_exec(env: &Env, token: &str) -> anyhow::Result<StatusCode> {
    let mut client = Https::connect(&env.pod, HOST, H1).await?;
    let entry = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
    let request = websocket_upgrade(
        &format!("/api/v1/namespaces/{NAMESPACE}/pods/web/exec?command=true&stdout=true"),
        &format!("v5.channel.k8s.io, base64url.bearer.authorization.k8s.io.{entry}"),
    )
    .body(Full::<Bytes>::default())?;
    Ok(client.send(request).await?.status())
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_bearer_subprotocol_admits_and_is_not_forwarded() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    assert_eq!(
        websocket_exec(&env, "not-the-token").await?,
        StatusCode::UNAUTHORIZED
    );
    assert!(env.apiserver().requests().is_empty());
    let token = std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?;
    assert_eq!(
        websocket_exec(&env, &token).await?,
        StatusCode::SWITCHING_PROTOCOLS
    );
    let requests = env.apiserver().requests();
    let [exec] = requests.as_slice() else {
        panic!("{requests:?}");
    };
    // The API server was offered the subprotocols, not MCA's token, and got the real one.
    assert_eq!(
        exec.header("sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    assert_eq!(
        exec.header("authorization"),
        Some(format!("Bearer {REAL_TOKEN}").as_str())
    );
    assert_eq!(rejected(&env)?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_renewed_with_the_certificate_and_the_previous_one_kept_for_a_while()
-> anyhow::Result<()> {
    let env = Env::start_test(&["--cert-validity", "3s", "--client-token-grace", "10m"])?;
    let token_file = env.pod.fake_sa_dir().join("token");
    let kubeconfig = env.pod.dir().join("kubeconfig");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    let mut tokens = vec![read(&token_file)];
    assert!(read(&kubeconfig).contains(&tokens[0]));
    // Two renewals (the certificate is renewed after two thirds of its validity).
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokens.len() < 3 {
        assert!(Instant::now() < deadline, "no renewal:\n{}", env.mca.log());
        let token = read(&token_file);
        if Some(&token) != tokens.last() {
            // The kubeconfig carries the same token (written just after the token file).
            while !read(&kubeconfig).contains(&token) {
                assert!(Instant::now() < deadline, "kubeconfig not renewed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokens.push(token);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [oldest, previous, current] = &tokens[..] else {
        unreachable!()
    };
    env.mca.wait_for_log(
        |l| l.contains("renewed the client token"),
        Duration::from_secs(2),
    )?;
    let mut client = Https::connect(&env.pod, HOST, H2).await?;
    let mut status = async |token: &str| {
        let bearer = format!("Bearer {token}");
        get_version(&mut client, Some(&bearer))
            .await
            .map(|(s, _)| s)
    };
    // The one in the file and the one before it (within its grace period) are accepted; the
    // one before that was replaced twice and is not.
    assert_eq!(status(current).await?, StatusCode::OK);
    assert_eq!(status(previous).await?, StatusCode::OK);
    assert_eq!(status(oldest).await?, StatusCode::UNAUTHORIZED);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_auth_none_serves_anyone_with_a_placeholder_token() -> anyhow::Result<()> {
    let env = Env::start_test(&["--client-auth", "none"])?;
    assert_eq!(
        std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?,
        "mca-placeholder-token"
    );
    let mut client = Https::connect(&env.pod, HOST, H2).await?;
    let (status, _) = get_version(&mut client, None).await?;
    assert_eq!(status, StatusCode::OK);
    // Whatever the app sends is still stripped and replaced.
    let (status, _) = get_version(&mut client, Some("Bearer anything")).await?;
    assert_eq!(status, StatusCode::OK);
    for request in env.apiserver().requests() {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {REAL_TOKEN}").as_str())
        );
    }
    let (_, report) = env.admin_get("/clients")?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&report)?,
        serde_json::json!({"auth": "none"})
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn renewed_files_are_replaced_whole_never_rewritten_in_place() -> anyhow::Result<()> {
    use std::io::{Read, Seek};

    let env = Env::start_test(&["--cert-validity", "3s"])?;
    let token_file = env.pod.fake_sa_dir().join("token");
    let kubeconfig = env.pod.dir().join("kubeconfig");
    // Hold the files as a client that opened them just before the renewal does.
    let old_token = std::fs::read_to_string(&token_file)?;
    let old_kubeconfig = std::fs::read_to_string(&kubeconfig)?;
    let mut held_token = std::fs::File::open(&token_file)?;
    let mut held_kubeconfig = std::fs::File::open(&kubeconfig)?;
    // Meanwhile a reader races the writer: it never sees an empty or partial token.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = std::thread::spawn({
        let (stop, token_file) = (std::sync::Arc::clone(&stop), token_file.clone());
        move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let token = std::fs::read_to_string(&token_file).unwrap();
                assert_eq!(token.len(), 43, "a partial token: {token:?}");
                reads += 1;
            }
            reads
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&token_file)? == old_token
        || std::fs::read_to_string(&kubeconfig)? == old_kubeconfig
    {
        assert!(Instant::now() < deadline, "no renewal:\n{}", env.mca.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("no partial token");
    // A new file took the name; the held ones still read whole and unchanged.
    for (held, old) in [
        (&mut held_token, &old_token),
        (&mut held_kubeconfig, &old_kubeconfig),
    ] {
        let mut content = String::new();
        held.rewind()?;
        held.read_to_string(&mut content)?;
        assert_eq!(&content, old);
    }
    println!("{reads} racing reads, none partial");
    Ok(())
}
