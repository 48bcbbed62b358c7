//! `cargo xtask bench`: what MCA costs, measured side by side in one run on this machine
//! (absolute numbers vary a lot between machines and runs; the ratios are the result).
//!
//! - `connect`: what eBPF interception costs `connect()`;
//! - `watches`: MCA's memory per open watch, over HTTP/2 and over HTTP/1.1;
//! - `route`: what a routing decision costs with 100 routes.

mod connect;
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
        Bench::ConnectLoop { target, count } => connect::connect_loop(target, count),
    }
}
