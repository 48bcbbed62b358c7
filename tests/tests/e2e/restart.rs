//! MCA restarted under a running application, as the kubelet restarts a crashed (or
//! OOM-killed, or unhealthy) sidecar: the application's long-lived client, which loaded
//! `ca.crt` and the token once, must keep working with the restarted MCA.
//!
//! MCA itself SIGKILLed and restarted under a kube-rs client that loaded `ca.crt` and the token
//! once: with `--state-dir` every request after the restart succeeds, without it every one fails
//! with `UnknownIssuer`; a 9 s CA rotating with a 2 s overlap: a client reading `ca.crt` for each
//! connection never fails, one that kept the first CA fails only after the overlap.

use std::time::{Duration, Instant};

use mca_tests::harness::{Env, NAMESPACE, Process};

/// How long the poller runs: one list every 100 ms.
const POLLS: &str = "150";

/// Starts a kube-rs client in the pod that lists pods every 100 ms with the CA and token it
/// loaded at start.
fn poller(env: &Env) -> anyhow::Result<Process> {
    let mut command = env.pod.app(env!("CARGO_BIN_EXE_mca-kube-client"));
    command.args(["poll", NAMESPACE, POLLS, "100"]);
    Process::spawn("mca-kube-client poll", &mut command)
}

/// The poller's answers since line `from`: how many were `ok`, and the last error.
fn answers(poller: &Process, from: usize) -> (usize, Option<String>) {
    let lines = poller.lines();
    let recent = lines.get(from..).unwrap_or_default();
    let ok = recent.iter().filter(|l| l.starts_with("ok ")).count();
    let error = recent
        .iter()
        .rev()
        .find(|l| l.starts_with("error "))
        .cloned();
    (ok, error)
}

/// Kills MCA under a polling client and restarts it with `args`; returns the poller's
/// answers after the restart (how many `ok`, the last error), waiting for 10 answers.
fn crash_under_a_client(args: &[&str]) -> anyhow::Result<(usize, Option<String>)> {
    let mut env = Env::start_test(args)?;
    let poller = poller(&env)?;
    poller.wait_for_line(|l| l == "ok 3", Duration::from_secs(30))?;
    let upstream = env.apiserver().addr();
    env.mca.crash_and_restart(&env.pod, upstream, args)?;
    let from = poller.lines().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while poller.lines().len() < from + 10 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the poller stopped answering:\n{}",
            poller.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Answers in flight while MCA was down may fail; those after it was ready must not.
    let settled = poller.lines().len() - 5;
    Ok(answers(&poller, settled))
}

#[test]
fn a_restarted_mca_serves_the_running_clients_of_the_one_before() -> anyhow::Result<()> {
    let state = tempfile::tempdir()?;
    let dir = state.path().join("state");
    let arg = format!("--state-dir={}", dir.display());
    let (ok, error) = crash_under_a_client(&[&arg])?;
    assert_eq!((ok, error), (5, None), "answers after the restart");
    Ok(())
}

/// The same without `--state-dir`: the restarted MCA has a new CA, which the client's loaded
/// `ca.crt` does not verify. This is what the state directory is for, and shows that the
/// poller really keeps what it loaded.
#[test]
fn without_a_state_dir_a_restarted_mca_is_a_stranger_to_running_clients() -> anyhow::Result<()> {
    let (ok, error) = crash_under_a_client(&[])?;
    assert_eq!(ok, 0, "{error:?}");
    let error = error.expect("the client failed");
    assert!(
        error.contains("certificate") || error.contains("UnknownIssuer"),
        "{error}"
    );
    Ok(())
}

/// A CA rotation overlaps: the next CA is in `ca.crt` `--ca-overlap` before MCA serves with
/// it, so a client that reads `ca.crt` at any moment verifies MCA; one that kept only the
/// first CA fails only after the switch.
#[tokio::test(flavor = "multi_thread")]
async fn the_ca_rotates_with_an_overlap() -> anyhow::Result<()> {
    use mca_tests::client::{tcp, tls, tls_config};
    let args = ["--ca-validity=9s", "--ca-overlap=2s", "--cert-validity=2s"];
    let env = Env::start_test(&args)?;
    let ca_crt = env.pod.fake_sa_dir().join("ca.crt");
    let first = std::fs::read_to_string(&ca_crt)?;
    let first_only = std::sync::Arc::new(tls_config(&first, &[b"h2"])?);
    let start = Instant::now();
    let (mut published, mut switched) = (None, None);
    while start.elapsed() < Duration::from_secs(12) && switched.is_none() {
        let published_now = std::fs::read_to_string(&ca_crt)?
            .matches("BEGIN CERTIFICATE")
            .count();
        // A client reading ca.crt now verifies MCA, whichever CA serves.
        tls(&env.pod, tcp(&env.pod)?, "kubernetes.default.svc", &[b"h2"]).await?;
        if published_now == 2 && published.is_none() {
            published = Some(start.elapsed());
        }
        let name = rustls::pki_types::ServerName::try_from("kubernetes.default.svc")?;
        let kept_first = tokio_rustls::TlsConnector::from(first_only.clone())
            .connect(name, tcp(&env.pod)?)
            .await;
        if kept_first.is_err() {
            switched = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let published = published.expect("the next CA was published");
    let switched = switched.expect("MCA switched to the next CA");
    assert!(
        switched >= published + Duration::from_millis(1500),
        "published at {published:?}, served from {switched:?}"
    );
    Ok(())
}
