//! MCA's upstream from a kubeconfig (`--kubeconfig`, `--context`), with each way kube-rs
//! authenticates: bearer token, token file, exec plugin, client certificate.
//!
//! The user's kubeconfig at the fake kubeconfig's default place is refused and left byte for byte
//! as it was; MCA's own fake kubeconfig, or a server on MCA's listener, as the upstream is refused.
//!
//! A kubeconfig upstream with a token, a token file, an exec plugin, a client certificate, and
//! `--context`.

use std::os::unix::fs::PermissionsExt;

use http::StatusCode;
use mca_tests::{
    apiserver::ApiServer,
    client::{Https, body_json},
    harness::{Mca, REAL_TOKEN},
    sandbox::Pod,
};
use serde_json::{Value, json};

const NAMESPACE: &str = "from-context";

/// Writes a kubeconfig whose context `good` uses `user` against `server`, plus a context `bad`
/// pointing nowhere; `bad` is the current context unless `current` says otherwise. It lives
/// in a directory of its own: `kubeconfig` beside the fake ServiceAccount is where MCA writes
/// the fake one by default.
fn write_kubeconfig(
    pod: &Pod,
    server: &ApiServer,
    user: Value,
    current: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = pod.dir().join("user");
    std::fs::create_dir_all(&dir)?;
    write_kubeconfig_at(
        &dir.join("kubeconfig"),
        &format!("https://{}", server.addr()),
        server,
        user,
        current,
    )
}

fn write_kubeconfig_at(
    path: &std::path::Path,
    url: &str,
    server: &ApiServer,
    user: Value,
    current: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let config = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [
            {"name": "test", "cluster": {"server": url,
                                         "certificate-authority-data": encode(server.ca_pem())}},
            {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}
        ],
        "users": [{"name": "mca", "user": user}],
        "contexts": [
            {"name": "good", "context": {"cluster": "test", "user": "mca", "namespace": NAMESPACE}},
            {"name": "bad", "context": {"cluster": "nowhere", "user": "mca"}}
        ]
    });
    std::fs::write(path, config.to_string())?;
    Ok(path.to_owned())
}

/// kubeconfig `*-data` fields are base64.
fn encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Starts MCA with the kubeconfig and checks a list goes through; returns what the server saw.
async fn list_through_mca(
    pod: &Pod,
    server: &ApiServer,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> anyhow::Result<mca_tests::apiserver::Recorded> {
    let _mca = Mca::start_with_kubeconfig(pod, kubeconfig, args)?;
    // The fake ServiceAccount carries the context's namespace.
    assert_eq!(
        std::fs::read_to_string(pod.fake_sa_dir().join("namespace"))?,
        NAMESPACE
    );
    server.state().pods.insert(NAMESPACE, "web");
    let mut client = Https::connect(pod, "kubernetes.default.svc", &[b"h2"]).await?;
    let response = client
        .get(&format!("/api/v1/namespaces/{NAMESPACE}/pods"))
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        body_json(response).await?["items"][0]["metadata"]["name"],
        "web"
    );
    Ok(server.requests().pop().expect("the server saw the list"))
}

fn assert_real_bearer(seen: mca_tests::apiserver::Recorded) -> anyhow::Result<()> {
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {REAL_TOKEN}").as_str())
    );
    Ok(())
}

fn setup() -> anyhow::Result<(Pod, ApiServer)> {
    let pod = Pod::new()?;
    let server = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    Ok((pod, server))
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_and_context_selection() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let kubeconfig = write_kubeconfig(&pod, &server, json!({"token": REAL_TOKEN}), "bad")?;
    assert_real_bearer(list_through_mca(&pod, &server, &kubeconfig, &["--context", "good"]).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_file() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let token_file = pod.dir().join("token");
    std::fs::write(&token_file, REAL_TOKEN)?;
    let kubeconfig = write_kubeconfig(&pod, &server, json!({"tokenFile": token_file}), "good")?;
    assert_real_bearer(list_through_mca(&pod, &server, &kubeconfig, &[]).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_plugin() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let plugin = pod.dir().join("credential-plugin");
    std::fs::write(
        &plugin,
        format!(
            "#!/bin/sh\necho '{}'\n",
            json!({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                   "status": {"token": REAL_TOKEN}})
        ),
    )?;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755))?;
    let user = json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                "command": plugin, "interactiveMode": "Never"}});
    let kubeconfig = write_kubeconfig(&pod, &server, user, "good")?;
    assert_real_bearer(list_through_mca(&pod, &server, &kubeconfig, &[]).await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificate() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let (cert, key) = server.client_certificate("mca")?;
    let user = json!({"client-certificate-data": encode(&cert),
                      "client-key-data": encode(&key)});
    let kubeconfig = write_kubeconfig(&pod, &server, user, "good")?;
    let seen = list_through_mca(&pod, &server, &kubeconfig, &[]).await?;
    assert!(seen.client_user.is_some());
    // The app's placeholder token is gone and no other replaced it.
    assert_eq!(seen.header("authorization"), None);
    Ok(())
}

/// `mca run --kubeconfig ./kubeconfig --fake-sa-dir ./fake-sa`: the fake kubeconfig's default
/// place is the user's kubeconfig. MCA refuses, naming the flag, and the file is untouched (it
/// used to be replaced, and the next start proxied to itself).
#[tokio::test(flavor = "multi_thread")]
async fn the_users_kubeconfig_is_never_overwritten() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let path = pod.dir().join("kubeconfig");
    let url = format!("https://{}", server.addr());
    write_kubeconfig_at(&path, &url, &server, json!({"token": REAL_TOKEN}), "good")?;
    let before = std::fs::read(&path)?;
    let refused = Mca::start_with_kubeconfig(&pod, &path, &[])
        .err()
        .expect("MCA refused to start");
    let message = format!("{refused:#}");
    assert!(message.contains("refusing to overwrite"), "{message}");
    assert!(message.contains("--fake-kubeconfig"), "{message}");
    assert_eq!(
        std::fs::read(&path)?,
        before,
        "the user's kubeconfig changed"
    );

    // Given a path of its own, MCA serves, and its fake kubeconfig is then refused as an
    // upstream: it names MCA itself.
    let fake = pod.dir().join("fake-kubeconfig");
    let arg = format!("--fake-kubeconfig={}", fake.display());
    drop(Mca::start_with_kubeconfig(&pod, &path, &[&arg])?);
    let refused = Mca::start_with_kubeconfig(&pod, &fake, &["--fake-kubeconfig=/dev/null/x"])
        .err()
        .expect("MCA refused its own fake kubeconfig");
    assert!(
        format!("{refused:#}").contains("is the fake kubeconfig MCA writes"),
        "{refused:#}"
    );
    Ok(())
}

/// A kubeconfig whose server is MCA's own listener would make MCA its own upstream.
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_is_mca_itself_is_refused() -> anyhow::Result<()> {
    let (pod, server) = setup()?;
    let path = pod.dir().join("loop.kubeconfig");
    let url = format!("https://localhost:{}", pod.mca_addr().port());
    write_kubeconfig_at(&path, &url, &server, json!({"token": REAL_TOKEN}), "good")?;
    let refused = Mca::start_with_kubeconfig(&pod, &path, &[])
        .err()
        .expect("MCA refused to start");
    assert!(
        format!("{refused:#}").contains("which is MCA's own listener"),
        "{refused:#}"
    );
    Ok(())
}
