//! What eBPF interception costs `connect()`.
//!
//! In a pod sandbox, a child process in the pod's `app` cgroup opens and resets TCP connections
//! to a local listener as fast as it can, in rounds that alternate:
//! - **baseline**: no programs attached;
//! - **attached, not intercepted**: programs attached, destination not in the intercept map
//!   (the cost every other connect of the application pays: one map lookup);
//! - **attached, redirected**: programs attached, destination intercepted and rewritten.

use std::{
    net::{SocketAddr, TcpStream},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use mca::intercept::{Interception, Settings};
use mca_tests::sandbox::{Pod, SERVICE_V4};

const LISTENER: &str = "127.0.0.1:7000";

/// Runs `rounds` rounds of `connects` connects each and prints the medians.
pub fn run(connects: u32, rounds: u32) -> anyhow::Result<()> {
    let pod = Pod::with_service()?;
    // A deep accept queue: a full one drops SYNs, and each drop costs the client a one-second
    // retransmit that would swamp what is measured.
    let listener = pod.in_netns(|| {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, setsockopt,
            socket, sockopt::ReuseAddr,
        };
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )?;
        setsockopt(&fd, ReuseAddr, &true)?;
        bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 7000))?;
        listen(&fd, Backlog::new(4096)?)?;
        Ok(std::net::TcpListener::from(fd))
    })?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    let settings = Settings {
        cgroup: pod.cgroup().map(ToOwned::to_owned),
        host_cgroup_root: None,
        destinations: vec![SERVICE_V4.parse()?],
        redirect_v4: LISTENER.parse()?,
        redirect_v6: None,
        exempt_uids: Vec::new(),
        log: false,
    };
    let run = |target: &str| -> anyhow::Result<f64> {
        let output = pod
            .app(std::env::current_exe()?)
            .args(["connect-loop", target, &connects.to_string()])
            .output()?;
        if !output.status.success() {
            bail!(
                "connect loop failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
    };

    let (mut baseline, mut passthrough, mut redirected) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        baseline.push(run(LISTENER)?);
        let interception = Interception::start(&settings).context("attaching the programs")?;
        passthrough.push(run(LISTENER)?);
        redirected.push(run(SERVICE_V4)?);
        drop(interception);
        eprintln!(
            "round {round}: baseline {:.0}/s, attached {:.0}/s, redirected {:.0}/s",
            baseline.last().unwrap(),
            passthrough.last().unwrap(),
            redirected.last().unwrap()
        );
    }
    let (b, p, r) = (
        median(&mut baseline),
        median(&mut passthrough),
        median(&mut redirected),
    );
    println!("connect() throughput, median of {rounds} rounds of {connects} connects each:");
    println!("  baseline (no programs):         {b:>9.0} connects/s");
    println!(
        "  attached, not intercepted:      {p:>9.0} connects/s  ({:.3} of baseline)",
        p / b
    );
    println!(
        "  attached, redirected to MCA:    {r:>9.0} connects/s  ({:.3} of baseline)",
        r / b
    );
    Ok(())
}

/// In the child: `count` connects to `target`, each reset at once (no TIME_WAIT to exhaust
/// ports); prints connects per second.
pub fn connect_loop(target: SocketAddr, count: u32) -> anyhow::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    let reset = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let start = Instant::now();
    for _ in 0..count {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        setsockopt(&stream.as_fd(), Linger, &reset)?;
    }
    println!("{}", f64::from(count) / start.elapsed().as_secs_f64());
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
