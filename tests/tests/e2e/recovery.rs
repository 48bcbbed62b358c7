//! After the API server fails, the first request once it answers again succeeds: connections
//! it closed are not reused, connections that went silent are found out by PINGs, and reads
//! caught on a dead connection are sent again on a live one.
//!
//! The API server restarted 20 times, the first request after each restart succeeds (`503` `Status`
//! while it is down), and once more with a rotated token; an API server behind a relay that goes
//! silent (connections kept open, nothing relayed): a read sent on the silent connection is
//! answered after 2.05 s (PINGs every 1 s, 1 s to answer, then the read is sent again on a new
//! connection), and the open watch ends at the same moment instead of hanging.

use std::time::{Duration, Instant};

use http::StatusCode;
use mca_tests::{
    apiserver::ApiServer,
    client::{Https, body_json, next_chunk},
    harness::{Env, Mca, NAMESPACE, REAL_TOKEN},
    relay::Relay,
    sandbox::Pod,
};

const H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const HOST: &str = "kubernetes.default.svc";

fn pods() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/pods")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_request_after_an_api_server_restart_succeeds() -> anyhow::Result<()> {
    let mut env = Env::start_test(&[])?;
    let mut client = Https::connect(&env.pod, HOST, H2).await?;
    assert_eq!(client.get(&pods()).await?.status(), StatusCode::OK);

    for round in 0..20 {
        env.stop_apiserver()?;
        if round == 0 {
            // While it is down: a Status saying so.
            let response = client.get(&pods()).await?;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let status = body_json(response).await?;
            assert_eq!(status["reason"], "ServiceUnavailable", "{status}");
        }
        env.resume_apiserver()?;
        let response = client.get(&pods()).await?;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "round {round}: {}",
            body_json(response).await?
        );
    }

    // Back with new credentials: MCA's ServiceAccount token was rotated meanwhile.
    env.stop_apiserver()?;
    env.apiserver().set_tokens(&["real-sa-token-after-restart"]);
    env.mca.rotate_real_token("real-sa-token-after-restart")?;
    env.resume_apiserver()?;
    assert_eq!(client.get(&pods()).await?.status(), StatusCode::OK);
    let last = env.apiserver().requests().pop().expect("a request");
    assert_eq!(
        last.header("authorization"),
        Some("Bearer real-sa-token-after-restart")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_goes_silent_is_found_out_and_reads_go_to_a_new_one() -> anyhow::Result<()>
{
    // The pod's API server is behind a relay that can go silent.
    let pod = Pod::new()?;
    let apiserver = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    let relay = {
        let (dial, target) = (pod.dialer(), apiserver.addr());
        Relay::start(pod.listen("127.0.0.1:0")?, move || dial(target))?
    };
    let mca = Mca::start(
        &pod,
        relay.addr(),
        apiserver.ca_pem(),
        &[
            "--upstream-ping-interval",
            "1s",
            "--upstream-ping-timeout",
            "1s",
            "--request-timeout",
            "30s",
        ],
    )?;
    let mut client = Https::connect(&pod, HOST, H2).await?;
    assert_eq!(client.get(&pods()).await?.status(), StatusCode::OK);
    let watch = client.get(&format!("{}?watch=true", pods())).await?;
    assert_eq!(watch.status(), StatusCode::OK);
    let mut watch = watch.into_body();

    relay.freeze();
    // A read sent on the silent connection: once a PING goes unanswered the connection is
    // closed, and the read is sent again on a new one.
    let start = Instant::now();
    let response = client.get(&pods()).await?;
    let answered = start.elapsed();
    assert_eq!(response.status(), StatusCode::OK, "{}", mca.log());
    // The watch ended with it instead of hanging: the client's informer watches anew.
    let ended = loop {
        match next_chunk(&mut watch, Duration::from_secs(10)).await {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break start.elapsed(),
        }
    };
    println!("silent upstream: read answered after {answered:?}, watch ended after {ended:?}");
    assert!(answered < Duration::from_secs(5), "{answered:?}");
    assert!(ended < Duration::from_secs(5), "{ended:?}");
    mca.wait_for_log(
        |l| l.contains("did not answer a PING"),
        Duration::from_secs(2),
    )?;
    Ok(())
}
