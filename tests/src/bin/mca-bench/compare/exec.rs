//! Exec-style round trips: one WebSocket exec session (`cat`, v5.channel.k8s.io) through a
//! target, a small stdin message echoed back on stdout, one at a time, for a fixed time.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use super::{
    client,
    servers::{NAMESPACE, Target},
};

/// Round trips on one session.
#[derive(Debug, Clone, Copy)]
pub struct RoundTrips {
    /// Per second.
    pub rate: f64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Runs round trips through `target` for `duration`.
pub async fn run(target: &Target, duration: Duration) -> anyhow::Result<RoundTrips> {
    let (stream, _) = client::stream(target, false).await?;
    let path =
        format!("/api/v1/namespaces/{NAMESPACE}/pods/web/exec?command=cat&stdin=true&stdout=true");
    let mut request = format!("ws://{}{path}", target.addr).into_client_request()?;
    let headers = request.headers_mut();
    headers.insert("sec-websocket-protocol", "v5.channel.k8s.io".parse()?);
    if let Some(token) = &target.token {
        headers.insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (mut socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .with_context(|| format!("exec through {}", target.name))?;
    ensure!(response.status() == 101, "exec: {}", response.status());
    let mut latencies = Vec::new();
    let end = Instant::now() + duration;
    let message = b"\x00ping".to_vec();
    while Instant::now() < end {
        let start = Instant::now();
        socket.send(Message::binary(message.clone())).await?;
        loop {
            match socket.next().await.context("the session ended")?? {
                Message::Binary(data) if data.first() == Some(&1) => break,
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
                other => anyhow::bail!("unexpected {other:?}"),
            }
        }
        latencies.push(start.elapsed());
    }
    let _ = socket.close(None).await;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(RoundTrips {
        rate: latencies.len() as f64 / duration.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    })
}
