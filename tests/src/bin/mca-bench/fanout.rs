//! What fan-out costs as members are added: ten members (test API servers in the pod
//! sandbox), the last answering every request 50 ms late, behind one MCA.
//!
//! - A merged LIST of the ten (100 pods each) against a LIST routed to the slow member alone,
//!   both through MCA, interleaved: fan-out that asks the members one after another would
//!   take the sum (≥ 10 round trips, one of them 50 ms), one that asks them at once takes the
//!   slowest; the goal is within 1.2× of the slow member's own.
//! - A merged watch of the ten against a watch of one member, both through MCA: the time from
//!   a change on a member until the application has the event, the goal within 1.2×; and
//!   MCA's CPU per event of each, what reading and rewriting the members' events costs.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use mca_tests::{
    apiserver::{ApiServer, Options},
    client::{Https, next_chunk},
    harness::{Mca, NAMESPACE, REAL_TOKEN},
    sandbox::Pod,
};

use crate::compare::usage::cpu_seconds;

/// Members.
const MEMBERS: usize = 10;
/// How late the slow member answers.
const SLOW: Duration = Duration::from_millis(50);
/// Pods in each member's list.
const PODS: usize = 100;
/// The namespace routed to the slow member alone.
const SINGLE: &str = "single";
/// Events per watch for MCA's CPU per event (each some 50 µs of it: 0.1 s in all).
const CPU_EVENTS: usize = 2000;
/// The namespace watched on the first member alone.
const SINGLE_WATCH: &str = "single-watch";

/// Measures and prints the merged LIST and watch against their single-cluster counterparts.
pub fn run(rounds: usize) -> anyhow::Result<()> {
    let pod = Pod::new()?;
    let local = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    let mut members = Vec::new();
    for index in 0..MEMBERS {
        let options = Options {
            delay: (index == MEMBERS - 1).then_some(SLOW),
            ..Options::default()
        };
        let token = format!("member-{index}-token");
        let server = ApiServer::start_with(pod.listen("127.0.0.1:0")?, &token, &[], options)?;
        std::fs::write(pod.dir().join(format!("m{index}-ca.crt")), server.ca_pem())?;
        for n in 0..PODS {
            server
                .state()
                .pods
                .insert(NAMESPACE, &format!("m{index}-{n}"));
        }
        // One pod each to watch from.
        server
            .state()
            .pods
            .insert("watched", &format!("m{index}-seed"));
        members.push((server, token));
    }
    let (slow, _) = &members[MEMBERS - 1];
    for n in 0..PODS {
        slow.state().pods.insert(SINGLE, &format!("single-{n}"));
    }
    members[0].0.state().pods.insert(SINGLE_WATCH, "seed");
    let config = pod.dir().join("mca.yaml");
    std::fs::write(&config, configuration(&members))?;
    let mca = Mca::start(
        &pod,
        local.addr(),
        local.ca_pem(),
        &["--config", config.to_str().expect("UTF-8")],
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut client = Https::connect(&pod, "kubernetes.default.svc", &[b"h2"]).await?;
        let merged_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
        let single_path = format!("/api/v1/namespaces/{SINGLE}/pods");
        // Warm: every upstream connection open.
        list(&mut client, &merged_path, MEMBERS * PODS).await?;
        list(&mut client, &single_path, PODS).await?;
        let (mut merged, mut single) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            merged.push(list(&mut client, &merged_path, MEMBERS * PODS).await?);
            single.push(list(&mut client, &single_path, PODS).await?);
        }
        let (merged, single) = (median(&mut merged), median(&mut single));
        // MCA's own work per merged list (the members' is in this process, not in MCA).
        let before = cpu_seconds(mca.pid())?;
        for _ in 0..rounds {
            list(&mut client, &merged_path, MEMBERS * PODS).await?;
        }
        let merged_cpu = (cpu_seconds(mca.pid())? - before) / rounds as f64;
        let before = cpu_seconds(mca.pid())?;
        for _ in 0..rounds {
            list(&mut client, &single_path, PODS).await?;
        }
        let single_cpu = (cpu_seconds(mca.pid())? - before) / rounds as f64;
        println!(
            "Fan-out LIST: MCA's CPU per list: merged {:.2} ms, the slow member alone {:.2} ms",
            merged_cpu * 1000.0,
            single_cpu * 1000.0
        );
        println!(
            "Fan-out LIST: {MEMBERS} members x {PODS} pods, one {} ms slower; medians of {rounds}, \
             interleaved, through MCA: merged {:.1} ms, the slow member alone {:.1} ms: {:.2}x",
            SLOW.as_millis(),
            ms(merged),
            ms(single),
            merged.as_secs_f64() / single.as_secs_f64()
        );

        let mut merged_watch = watch(
            &mut client,
            "/api/v1/namespaces/watched/pods?watch=true",
            MEMBERS,
        )
        .await?;
        let single_path = format!("/api/v1/namespaces/{SINGLE_WATCH}/pods?watch=true");
        let mut single_watch = watch(&mut client, &single_path, 1).await?;
        let (mut merged, mut single) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let (member, _) = &members[round % (MEMBERS - 1)];
            let name = format!("event-{round}");
            let started = Instant::now();
            member.state().pods.insert("watched", &name);
            wait_for(&mut merged_watch, &name).await?;
            merged.push(started.elapsed());
            let started = Instant::now();
            members[0].0.state().pods.insert(SINGLE_WATCH, &name);
            wait_for(&mut single_watch, &name).await?;
            single.push(started.elapsed());
        }
        let (merged, single) = (median(&mut merged), median(&mut single));
        // MCA's own work per event: what merging adds to passing a watch's events through.
        let mut cpu = Vec::new();
        for (watch, path) in [
            (&mut merged_watch, "watched"),
            (&mut single_watch, SINGLE_WATCH),
        ] {
            let before = cpu_seconds(mca.pid())?;
            for n in 0..CPU_EVENTS {
                let name = format!("cpu-{n}");
                members[0].0.state().pods.insert(path, &name);
                wait_for(watch, &name).await?;
            }
            cpu.push((cpu_seconds(mca.pid())? - before) / CPU_EVENTS as f64);
        }
        println!(
            "Fan-out watch: MCA's CPU per event: merged {:.1} µs, one member {:.1} µs",
            cpu[0] * 1e6,
            cpu[1] * 1e6
        );
        println!(
            "Fan-out watch: event latency, medians of {rounds}, through MCA: merged over \
             {MEMBERS} members {:.2} ms, one member {:.2} ms: {:.2}x",
            ms(merged),
            ms(single),
            merged.as_secs_f64() / single.as_secs_f64()
        );
        anyhow::Ok(())
    })?;
    drop(mca);
    Ok(())
}

/// The routing: the members, pods of [`NAMESPACE`] and `watched` merged from all, [`SINGLE`]
/// from the slow one, [`SINGLE_WATCH`] from the first.
fn configuration(members: &[(ApiServer, String)]) -> String {
    let mut text = String::from("clusters:\n");
    for (index, (server, token)) in members.iter().enumerate() {
        text.push_str(&format!(
            "  - {{name: m{index}, server: \"https://{}\", certificateAuthority: m{index}-ca.crt, token: {token}}}\n",
            server.addr()
        ));
    }
    let all: Vec<String> = (0..members.len()).map(|i| format!("m{i}")).collect();
    text.push_str(&format!(
        "routes:\n\
         \x20 - {{name: merged, match: {{namespaces: [{NAMESPACE}, watched], resources: [pods]}}, to: {{clusters: [{}], strategy: fanOut}}}}\n\
         \x20 - {{name: slow, match: {{namespaces: [{SINGLE}]}}, to: {{clusters: [m{}]}}}}\n\
         \x20 - {{name: first, match: {{namespaces: [{SINGLE_WATCH}]}}, to: {{clusters: [m0]}}}}\n",
        all.join(", "),
        members.len() - 1
    ));
    text
}

/// How long a LIST of `path` took; checks it has `items` items.
async fn list(client: &mut Https, path: &str, items: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let body = crate::lists::fetch(client, path).await?;
    let took = started.elapsed();
    let got = crate::lists::items(&body)?;
    ensure!(got == items, "{path}: {got} items, not {items}");
    Ok(took)
}

/// Opens a watch of `path` and reads its first `events` events (the pods there already).
async fn watch(
    client: &mut Https,
    path: &str,
    events: usize,
) -> anyhow::Result<hyper::body::Incoming> {
    let response = client.get(path).await?;
    ensure!(
        response.status() == 200,
        "watch {path}: {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut text = String::new();
    while text.matches("\"ADDED\"").count() < events {
        let chunk = next_chunk(&mut body, Duration::from_secs(10))
            .await?
            .context("the watch ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(body)
}

/// Reads a watch until an event names `name`.
async fn wait_for(watch: &mut hyper::body::Incoming, name: &str) -> anyhow::Result<()> {
    let needle = format!("\"name\":\"{name}\"");
    loop {
        let chunk = next_chunk(watch, Duration::from_secs(10))
            .await?
            .context("the watch ended")?;
        if String::from_utf8_lossy(&chunk).contains(&needle) {
            return Ok(());
        }
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
