//! `mca-bench compare` (`cargo xtask bench`): MCA side by side with what users would otherwise
//! put in front of the Kubernetes API, in one run on loopback — the upstream directly, MCA as
//! shipped (access log on), an nginx TLS reverse proxy setting the token (Debian's nginx,
//! buffering off), and `kubectl proxy` — on the same workloads: GET of one object, LIST of 500,
//! POST of a 100 KB object (wrk, 16 connections, and one connection for latency), 1,000 and
//! 10,000 open watches each receiving an event, and exec round trips. Then MCA's own figures:
//! idle memory, start to ready, CPU time per request, upstream connections opened.
//! Everything shares the machine's cores, so the ratios are the result, not the absolute
//! figures. Writes `target/bench/compare.md` and `target/bench/compare.png`.

mod chart;
mod client;
mod documents;
mod exec;
mod report;
mod servers;
pub(crate) mod usage;
mod watches;
mod wrk;

use std::{path::Path, time::Duration};

use mca_tests::{apiserver::ApiServer, harness::REAL_TOKEN};

use self::{
    report::{Report, Request},
    servers::{Certs, Credentials, NAMESPACE, Target},
};

/// How long each measurement runs, and the watch counts.
pub struct Options {
    /// Each request workload's duration.
    pub seconds: u64,
    /// How many watches to hold, per measurement.
    pub watches: Vec<usize>,
    /// Instead of measuring, start the request targets, print where they are, and keep them
    /// up this long (to profile one under a load of one's own).
    pub hold: Option<Duration>,
}

/// Runs everything and writes the report.
pub fn run(options: &Options) -> anyhow::Result<()> {
    crate::raise_open_file_limit()?;
    let work = tempfile::tempdir()?;
    // nginx's workers run as `nobody` when started by root: they must reach the files they
    // serve below the (0700) directory, though not list it.
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let out = mca_tests::harness::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let certs = Certs::generate(work.path())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report::default();

    // Requests, against the static upstream.
    let (_upstream, upstream) = servers::static_upstream(work.path(), &certs)?;
    let targets = TARGETS
        .iter()
        .map(|make| make(work.path(), &certs, upstream, &certs.ca))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(hold) = options.hold {
        for target in &targets {
            let pid = target.process.as_ref().map(servers::Process::pid);
            println!(
                "{}: {} token {:?} pid {pid:?}",
                target.name,
                target.url(""),
                target.token
            );
        }
        std::thread::sleep(hold);
        return Ok(());
    }
    let mca = &targets[1];
    report.mca_ready = mca.ready_after;
    report.mca_idle_kib = Some(usage::resident_kib(
        mca.process.as_ref().expect("MCA").pid(),
    )?);
    // Idle again with in-cluster credentials, as an injected sidecar runs (no kubeconfig to
    // read, so none of the YAML and kubeconfig code paged in).
    let in_cluster = servers::mca(
        work.path(),
        upstream,
        &certs.ca,
        Credentials::InCluster,
        &[],
    )?;
    report.mca_idle_in_cluster_kib = Some(usage::resident_kib(
        in_cluster.process.as_ref().expect("MCA").pid(),
    )?);
    drop(in_cluster);
    let duration = Duration::from_secs(options.seconds);
    requests(&targets, work.path(), duration, &mut report)?;
    report.mca_upstream_connections = mca_upstream_connections(mca);
    drop(targets);

    // Watches and exec, against the test API server.
    let api = ApiServer::start(std::net::TcpListener::bind("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    api.state().pods.insert(NAMESPACE, "web");
    let api_ca = work.path().join("api-ca.crt");
    std::fs::write(&api_ca, api.ca_pem())?;
    let start = |make: &Make| make(work.path(), &certs, api.addr(), &api_ca);
    for &count in &options.watches {
        for make in &TARGETS {
            let target = start(make)?;
            eprintln!("{count} watches: {} ...", target.name);
            let tag = format!("{count}-{}", target.addr.port());
            let measured = runtime.block_on(watches::run(&target, &api, count, &tag))?;
            report.watches(count, target.name, measured);
        }
    }
    for make in &TARGETS {
        let target = start(make)?;
        eprintln!("exec: {} ...", target.name);
        let measured = runtime.block_on(exec::run(&target, duration / 2))?;
        report.exec(target.name, measured);
    }

    let markdown = report.markdown(options);
    std::fs::write(out.join("compare.md"), &markdown)?;
    chart::write(&out.join("compare.png"), &report.chart())?;
    println!("{markdown}");
    println!("written: {0}/compare.md, {0}/compare.png", out.display());
    Ok(())
}

/// The request workloads through every target: wrk at 16 connections, and at one for GET and
/// LIST latency, with each target's CPU time over the run.
fn requests(
    targets: &[Target],
    work: &Path,
    duration: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let body = work.join("configmap.json");
    std::fs::write(
        &body,
        documents::config_map("posted", 100 << 10).to_string(),
    )?;
    let object = format!("/api/v1/namespaces/{NAMESPACE}/pods/web");
    let collection = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let workloads = [
        (Request::Get, &object, None, [16, 1].as_slice()),
        (Request::List, &collection, None, [16, 1].as_slice()),
        (
            Request::Post,
            &collection,
            Some(body.as_path()),
            [16].as_slice(),
        ),
    ];
    for (request, path, post, connection_counts) in workloads {
        for &connections in connection_counts {
            for target in targets {
                let load = wrk::Load {
                    path,
                    post,
                    connections,
                    duration: if connections == 1 {
                        duration / 2
                    } else {
                        duration
                    },
                };
                eprintln!("{request:?} x{connections}: {} ...", target.name);
                let before = cpu_seconds(target)?;
                let run = wrk::run(target, &load, work)?;
                let cpu = cpu_seconds(target)?
                    .zip(before)
                    .map(|(after, before)| after - before);
                report.request(request, connections, target.name, run, cpu);
            }
        }
    }
    Ok(())
}

/// How to start each target in front of an upstream (address, CA), in the report's order.
type Make = fn(&Path, &Certs, std::net::SocketAddr, &Path) -> anyhow::Result<Target>;

const TARGETS: [Make; 4] = [
    |_, _, upstream, ca| Ok(servers::direct(upstream, ca)),
    |dir, _, upstream, ca| servers::mca(dir, upstream, ca, Credentials::Kubeconfig, &[]),
    |dir, certs, upstream, _| servers::nginx_proxy(dir, certs, upstream),
    |dir, _, upstream, ca| servers::kubectl_proxy(dir, upstream, ca),
];

fn cpu_seconds(target: &Target) -> anyhow::Result<Option<f64>> {
    target
        .process
        .as_ref()
        .map(|p| usage::cpu_seconds(p.pid()))
        .transpose()
}

/// The connections MCA opened to the upstream, from its `/metrics`.
fn mca_upstream_connections(mca: &Target) -> Option<u64> {
    let (_, text) = servers::admin_get(mca.admin?, "/metrics").ok()?;
    let scrape = mca_tests::metrics::Scrape::parse(&text).ok()?;
    Some(scrape.sum("mca_upstream_connections_opened_total", &[]) as u64)
}
