//! `cargo xtask bench`: what MCA costs, measured side by side in one run on this machine
//! (absolute numbers vary a lot between machines and runs; the ratios are the result).
//!
//! - `connect`: what eBPF interception costs `connect()`;
//! - `watches`: MCA's memory per open watch, over HTTP/2 and over HTTP/1.1;
//! - `route`: what a routing decision costs with 100 routes;
//! - `get`: GET requests per second and latency through MCA (`MCA_BIN` picks the build);
//! - `soak`: a bounded soak with open watches and steady GETs and LISTs (`cargo xtask soak`).

mod connect;
mod get;
mod route;
mod watches;

#[global_allocator]
static ALLOCATOR: route::Counting = route::Counting;

use clap::Parser;

#[derive(Parser)]
#[command(name = "mca-bench")]
enum Bench {
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
        #[arg(long, default_value = "60s", value_parser = mca::cli::parse_duration)]
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
        Bench::Connect { connects, rounds } => connect::run(connects, rounds),
        Bench::Watches { count } => watches::run(count),
        Bench::Route { decisions } => route::run(decisions),
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
