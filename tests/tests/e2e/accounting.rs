//! What MCA keeps per cluster is kept where a request leaves for it, whoever sends it: an exec
//! that cannot connect counts against the cluster's health as a read does (it used to reset
//! the cluster's failures instead), a fan-out watch is in flight to every cluster it watches
//! (it used to count nowhere), and an exec is in flight until its tunnel closes.

use std::time::Duration;

use anyhow::Context as _;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use mca_tests::{
    apiserver::Options,
    client::{Https, body_json, open_watch, websocket_upgrade},
    fleet::Fleet,
    harness::{Env, NAMESPACE, eventually},
    metrics::Scrape,
};

use super::{
    faults::{exec_cat, exec_ends},
    routing::{HA_ROUTES, fan_out_fleet, wait_for_readyz},
};

/// Waits until `check` holds for a scrape of `env`'s `/metrics`.
fn wait_for_metrics(env: &Env, what: &str, check: impl Fn(&Scrape) -> bool) -> anyhow::Result<()> {
    eventually(Duration::from_secs(10), || {
        let scrape = env.metrics()?;
        Ok((check(&scrape), ()))
    })
    .with_context(|| format!("{what} never held"))
}

fn in_flight(scrape: &Scrape, cluster: &str) -> f64 {
    scrape.sum("mca_cluster_requests_in_flight", &[("cluster", cluster)])
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_that_cannot_connect_counts_against_the_cluster() -> anyhow::Result<()> {
    // Probes too slow to notice anything during the test: only requests find east dead.
    let mut fleet = Fleet::start(
        HA_ROUTES,
        "    health: {interval: 1h, unhealthyAfter: 2}\n",
        Options::default(),
    )?;
    let mut client =
        Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"http/1.1"]).await?;
    fleet.east.stop();
    for attempt in 1..=2 {
        let exec = websocket_upgrade(
            "/api/v1/namespaces/ha-1/pods/web/exec?command=cat&stdin=true&stdout=true",
            "v5.channel.k8s.io",
        )
        .header("authorization", client.bearer())
        .body(Full::<Bytes>::default())?;
        let response = client.send(exec).await?;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "exec {attempt}"
        );
        assert_eq!(body_json(response).await?["reason"], "ServiceUnavailable");
    }
    let (code, body) = wait_for_readyz(&fleet, "[-]cluster-east failed").await?;
    assert_eq!(code, 200, "west still takes requests:\n{body}");
    assert!(
        body.contains("2 consecutive requests could not connect"),
        "{body}"
    );

    // East is out of the route: a read goes to west at once, with nothing to retry.
    let response = client.get("/api/v1/namespaces/ha-2/pods").await?;
    assert_eq!(response.status(), StatusCode::OK);
    let line = fleet
        .env
        .mca
        .wait_for_access(|l| l["namespace"] == "ha-2")?;
    assert_eq!(line["cluster"], "west");
    assert!(
        line["note"].as_str().unwrap_or_default().is_empty(),
        "{line}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fan_out_watch_is_in_flight_to_every_cluster_it_watches() -> anyhow::Result<()> {
    let fleet = fan_out_fleet()?;
    let mut client = Https::connect(&fleet.env.pod, "kubernetes.default.svc", &[b"h2"]).await?;
    let watch = open_watch(
        &mut client,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=true"),
    )
    .await?;
    wait_for_metrics(
        &fleet.env,
        "one watch in flight to each cluster",
        |scrape| {
            ["local", "east", "west"]
                .iter()
                .all(|c| in_flight(scrape, c) == 1.0)
        },
    )?;

    drop(watch);
    drop(client);
    wait_for_metrics(&fleet.env, "nothing in flight", |scrape| {
        ["local", "east", "west"]
            .iter()
            .all(|c| in_flight(scrape, c) == 0.0)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_is_in_flight_until_its_tunnel_closes() -> anyhow::Result<()> {
    let env = Env::start_test(&[])?;
    let mut exec = exec_cat(&env.pod).await?;
    wait_for_metrics(&env, "the exec in flight", |scrape| {
        in_flight(scrape, "local") == 1.0
    })?;

    exec.close(None).await?;
    assert!(exec_ends(&mut exec, Duration::from_secs(5)).await.is_some());
    wait_for_metrics(&env, "nothing in flight", |scrape| {
        in_flight(scrape, "local") == 0.0
    })
}
