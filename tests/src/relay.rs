//! A TCP relay between MCA and an API server that can go silent: [`Relay::freeze`] stops
//! relaying on the connections open now while keeping them open, as a peer behind a dead
//! network path does (no FIN, no RST). Connections made afterwards relay normally.

use std::{net::SocketAddr, sync::Mutex};

use tokio_util::sync::CancellationToken;

/// The relay; it stops (and closes every connection) when dropped.
pub struct Relay {
    addr: SocketAddr,
    freeze: std::sync::Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Relay {
    /// Relays connections accepted on `listener` to sockets `connect` opens.
    pub fn start(
        listener: std::net::TcpListener,
        connect: impl Fn() -> anyhow::Result<std::net::TcpStream> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let freeze = std::sync::Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (shared, stopped) = (std::sync::Arc::clone(&freeze), stop.clone());
        tokio::spawn(stopped.clone().run_until_cancelled_owned(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(server) = connect() else { continue };
                let Ok(_) = server.set_nonblocking(true) else {
                    continue;
                };
                let Ok(mut server) = tokio::net::TcpStream::from_std(server) else {
                    continue;
                };
                let frozen = shared.lock().unwrap().clone();
                tokio::spawn(stopped.clone().run_until_cancelled_owned(async move {
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        () = frozen.cancelled() => std::future::pending().await,
                    }
                }));
            }
        }));
        Ok(Self { addr, freeze, stop })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops relaying on every connection open now, leaving them open.
    pub fn freeze(&self) {
        let mut current = self.freeze.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }
}
