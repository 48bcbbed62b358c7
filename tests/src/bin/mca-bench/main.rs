//! `cargo xtask bench`: what MCA costs, measured side by side in one run on this machine
//! (absolute numbers vary a lot between machines and runs; the ratios are the result).
//!
//! - `compare`: MCA side by side with the upstream directly, an nginx TLS proxy and `kubectl
//!   proxy` on the same workloads (see [`compare`]);
//! - `connect`: what eBPF interception costs `connect()`;
//! - `watches`: MCA's memory per open watch, over HTTP/2 and over HTTP/1.1;
//! - `lists`: MCA's peak memory while it merges three large lists;
//! - `fanout`: a merged LIST and watch of ten members, one slower, against one member's;
//! - `clusters`: the idle cost of 100 configured clusters, and a hot reload of them under load;
//! - `route`: what a routing decision costs with 100 routes;
//! - `get`: GET requests per second and latency through MCA (`MCA_BIN` picks the build);
//! - `soak`: a bounded soak with open watches and steady GETs and LISTs (`cargo xtask soak`).

mod clusters;
mod compare;
mod connect;
mod fanout;
mod get;
mod lists;
mod route;
mod watches;

#[global_allocator]
static ALLOCATOR: route::Counting = route::Counting;

use clap::Parser;

#[derive(Parser)]
#[command(name = "mca-bench")]
enum Bench {
    /// MCA, nginx and kubectl proxy side by side against the upstream directly.
    Compare {
        /// How long each request workload runs.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Open-watch counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        watches: Vec<usize>,
        /// Start the request targets, print where they are, keep them up this long, measure
        /// nothing (for profiling one under a load of one's own).
        #[arg(long, value_parser = mca::duration::parse)]
        hold: Option<std::time::Duration>,
    },
    /// connect() throughput with and without the eBPF programs.
    Connect {
        /// Connects per measurement.
        #[arg(long, default_value_t = 5000)]
        connects: u32,
        /// Rounds (baseline, attached, redirected each); the medians are reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// MCA's resident memory per open watch.
    Watches {
        /// Watches to hold open over each protocol.
        #[arg(long, default_value_t = 1000)]
        count: usize,
    },
    /// MCA's peak memory growth while a fan-out route merges three large lists.
    Lists {
        /// The size of each cluster's list, in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: usize,
    },
    /// A merged LIST and watch of ten members (one 50 ms slower) against one member's.
    Fanout {
        /// Interleaved rounds of each.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// The idle CPU and memory of many configured clusters, and a hot reload under load.
    Clusters {
        /// Clusters to configure.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Time and allocations of a routing decision with 100 routes.
    Route {
        /// Decisions to time.
        #[arg(long, default_value_t = 1_000_000)]
        decisions: u32,
    },
    /// GET requests per second and latency through MCA.
    Get {
        /// How long to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Open watches and steady GETs and LISTs through MCA for a while: failures (none
    /// allowed), memory, open files and tasks over time.
    Soak {
        /// How long.
        #[arg(long, default_value = "60s", value_parser = mca::duration::parse)]
        time: std::time::Duration,
        /// Watches held open.
        #[arg(long, default_value_t = 1000)]
        watches: usize,
        /// GETs and LISTs per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// The connect loop that `connect` runs inside the pod.
    #[command(hide = true)]
    ConnectLoop {
        target: std::net::SocketAddr,
        count: u32,
    },
}

fn main() -> anyhow::Result<()> {
    match Bench::parse() {
        Bench::Compare {
            seconds,
            watches,
            hold,
        } => compare::run(&compare::Options {
            seconds,
            watches,
            hold,
        }),
        Bench::Connect { connects, rounds } => connect::run(connects, rounds),
        Bench::Watches { count } => watches::run(count),
        Bench::Route { decisions } => route::run(decisions),
        Bench::Lists { size_mib } => lists::run(size_mib),
        Bench::Fanout { rounds } => fanout::run(rounds),
        Bench::Clusters { count } => clusters::run(count),
        Bench::Get { seconds } => get::run(seconds),
        Bench::Soak {
            time,
            watches,
            rate,
        } => soak(time, watches, rate),
        Bench::ConnectLoop { target, count } => connect::connect_loop(target, count),
    }
}

/// Runs the soak against a fresh MCA and test API server; fails on any failure.
fn soak(duration: std::time::Duration, watches: usize, rate: u32) -> anyhow::Result<()> {
    let env = mca_tests::harness::Env::start_test(&[])?;
    let settings = mca_tests::soak::Settings {
        duration,
        watches,
        requests_per_second: rate,
    };
    let report = tokio::runtime::Runtime::new()?.block_on(mca_tests::soak::run(&env, settings))?;
    println!("{}", report.table());
    anyhow::ensure!(report.failures() == 0, "the soak saw failures");
    Ok(())
}

/// Lets the bench hold as many sockets as the system allows (10,000 watches over HTTP/1.1 are
/// 10,000 connections).
fn raise_open_file_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(())
}
