//! The signals that stop a long-running `mca` command (the sidecar, the webhook, the
//! operator): SIGTERM, which the kubelet sends when a pod is deleted, and SIGINT, a terminal's
//! Ctrl-C. Each command drains what it serves in its own way once one arrives.

use tokio::signal::unix::{SignalKind, signal};

/// Waits for SIGTERM or SIGINT and names the one that came. The handlers are installed when
/// the future is first polled; until then a signal ends the process as by default.
pub async fn shutdown() -> &'static str {
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
