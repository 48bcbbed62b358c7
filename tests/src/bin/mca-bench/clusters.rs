//! Many clusters configured: 100 (ten test API servers in the pod sandbox, ten entries each),
//! health probes on (every 5 s, MCA's default).
//!
//! - Idle: MCA's CPU over 20 s as a share of one core, and its resident memory against an MCA
//!   with one cluster configured: the growth per configured cluster.
//! - A hot reload under load: GETs through MCA on 8 connections while the configuration is
//!   rewritten 10 times (the route moving between members each time); every GET must succeed.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::ensure;
use mca_tests::{
    apiserver::ApiServer,
    client::Https,
    harness::{Mca, REAL_TOKEN},
    sandbox::Pod,
};

use crate::compare::usage::cpu_seconds;

/// The test API servers the clusters are spread over.
const SERVERS: usize = 10;
/// The namespace the load's GETs read, routed to one cluster at a time.
const ROUTED: &str = "routed";
/// How long MCA idles before it is measured.
const SETTLE: Duration = Duration::from_secs(10);
/// How long its idle CPU is measured.
const IDLE: Duration = Duration::from_secs(20);
/// Connections sending GETs during the reloads.
const CONNECTIONS: usize = 8;
/// Reloads under load, and the time between them.
const RELOADS: usize = 10;
const BETWEEN_RELOADS: Duration = Duration::from_millis(500);

/// Measures and prints the idle cost of `count` clusters and a hot reload of them under load.
pub fn run(count: usize) -> anyhow::Result<()> {
    // One cluster, in a pod of its own (a pod's volumes are made once).
    let small = Sandbox::new(1)?;
    let one = small.start(1)?;
    let rss_one = one.resident_kib()?;
    drop((one, small));
    let sandbox = Sandbox::new(SERVERS)?;
    let (pod, servers) = (&sandbox.pod, &sandbox.servers);
    let config = pod.dir().join("mca.yaml");
    let many = sandbox.start(count)?;
    let rss_many = many.resident_kib()?;
    let before = cpu_seconds(many.pid())?;
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu_seconds(many.pid())? - before) / IDLE.as_secs_f64();
    println!(
        "{count} clusters configured ({SERVERS} servers), health probes every 5 s: idle CPU \
         {:.2}% of a core over {} s; resident {:.1} MB against {:.1} MB with one cluster: \
         +{:.1} KB per configured cluster",
        idle_cpu * 100.0,
        IDLE.as_secs(),
        rss_many as f64 / 1024.0,
        rss_one as f64 / 1024.0,
        rss_many.saturating_sub(rss_one) as f64 / (count - 1) as f64,
    );

    // Load, and the configuration rewritten under it.
    let runtime = tokio::runtime::Runtime::new()?;
    let (sent, failed) = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut load = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut client = Https::connect(pod, "kubernetes.default.svc", &[b"h2"]).await?;
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            load.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let ok = client
                        .get(&format!("/api/v1/namespaces/{ROUTED}/pods/web"))
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let started = Instant::now();
        for reload in 1..=RELOADS {
            tokio::time::sleep(BETWEEN_RELOADS).await;
            let next = pod.dir().join("mca.yaml.next");
            std::fs::write(&next, configuration(servers, count, reload))?;
            std::fs::rename(&next, &config)?;
        }
        tokio::time::sleep(BETWEEN_RELOADS).await;
        stop.store(true, Ordering::Relaxed);
        for task in load {
            task.await?;
        }
        println!(
            "Hot reload under load: {RELOADS} rewrites of the {count}-cluster configuration in \
             {:.1} s while {CONNECTIONS} connections sent GETs",
            started.elapsed().as_secs_f64()
        );
        anyhow::Ok((sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed)))
    })?;
    let reloaded = many.log().matches("configuration reloaded").count();
    println!("  {sent} GETs, {failed} failed; MCA reloaded {reloaded} times");
    ensure!(
        failed == 0,
        "{failed} of {sent} GETs failed during the reloads"
    );
    ensure!(
        reloaded == RELOADS,
        "MCA reloaded {reloaded} times, not {RELOADS}"
    );
    Ok(())
}

/// A pod with its local API server and more, each holding [`ROUTED`]'s pod `web`.
struct Sandbox {
    pod: Pod,
    local: ApiServer,
    /// Each with its token.
    servers: Vec<(ApiServer, String)>,
}

impl Sandbox {
    fn new(servers: usize) -> anyhow::Result<Self> {
        let pod = Pod::new()?;
        let local = ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
        let mut members = Vec::new();
        for index in 0..servers {
            let token = format!("server-{index}-token");
            let server = ApiServer::start(pod.listen("127.0.0.1:0")?, &token, &[])?;
            std::fs::write(pod.dir().join(format!("s{index}-ca.crt")), server.ca_pem())?;
            server.state().pods.insert(ROUTED, "web");
            members.push((server, token));
        }
        Ok(Self {
            pod,
            local,
            servers: members,
        })
    }

    /// MCA with `clusters` clusters over the servers, once it idled for [`SETTLE`].
    fn start(&self, clusters: usize) -> anyhow::Result<Mca> {
        let config = self.pod.dir().join("mca.yaml");
        std::fs::write(&config, configuration(&self.servers, clusters, 0))?;
        let mca = Mca::start(
            &self.pod,
            self.local.addr(),
            self.local.ca_pem(),
            &["--config", config.to_str().expect("UTF-8")],
        )?;
        std::thread::sleep(SETTLE);
        Ok(mca)
    }
}

/// `clusters` clusters spread over `servers`, with [`ROUTED`] routed to the cluster
/// `generation` picks (so each rewrite moves it).
fn configuration(servers: &[(ApiServer, String)], clusters: usize, generation: usize) -> String {
    let mut text = String::from("clusters:\n");
    for index in 0..clusters {
        let server = index % servers.len();
        let (api, token) = &servers[server];
        text.push_str(&format!(
            "  - {{name: c{index}, server: \"https://{}\", certificateAuthority: s{server}-ca.crt, token: {token}}}\n",
            api.addr()
        ));
    }
    text.push_str(&format!(
        "routes:\n  - {{name: routed, match: {{namespaces: [{ROUTED}]}}, to: {{clusters: [c{}]}}}}\n",
        generation % clusters
    ));
    text
}
