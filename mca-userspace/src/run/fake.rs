//! The fake credentials MCA writes for the application, and keeps current.

use std::{net::SocketAddr, sync::Arc};

use super::Error;
use crate::{
    client_auth::ClientAuth,
    reload::{Live, Routing},
    sa,
    state::{self, State, Store},
    tls::ServingCert,
};

/// What MCA writes for the application instead of real credentials: the fake ServiceAccount
/// and the fake kubeconfig, both carrying MCA's CAs and the client token; and, in
/// `--state-dir`, what a restarted MCA needs to go on serving them. The state is always
/// saved before the application's files change, so a crash in between leaves nothing the
/// application holds unknown to the next run.
pub(super) struct FakeCredentials {
    pub(super) sa_dir: std::path::PathBuf,
    pub(super) kubeconfig: std::path::PathBuf,
    pub(super) serving: Arc<ServingCert>,
    pub(super) store: Option<Store>,
    pub(super) listen: SocketAddr,
    pub(super) namespace: String,
    pub(super) client_auth: Option<Arc<ClientAuth>>,
}

impl FakeCredentials {
    pub(super) fn token(&self) -> String {
        self.client_auth
            .as_ref()
            .map_or_else(|| sa::PLACEHOLDER_TOKEN.to_owned(), |auth| auth.token())
    }

    pub(super) fn write_all(&self, routing: &Routing) -> Result<(), Error> {
        self.save_state()?;
        let ca = self.serving.ca_pem();
        sa::provision(&self.sa_dir, &ca, &self.token(), &self.namespace)?;
        Ok(self.write_kubeconfig(routing)?)
    }

    pub(super) fn save_state(&self) -> Result<(), state::Error> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        store.save(&State {
            authorities: self.serving.save_authorities(),
            tokens: self.client_auth.as_ref().map(|auth| auth.save()),
        })
    }

    pub(super) fn write_kubeconfig(&self, routing: &Routing) -> Result<(), sa::Error> {
        let names: Vec<&str> = routing.clusters.iter().map(|c| &**c.name()).collect();
        sa::write_kubeconfig(
            &self.kubeconfig,
            &self.serving.ca_pem(),
            &self.token(),
            self.listen,
            &self.namespace,
            &names,
        )
    }

    /// Renews the client token (the old one stays good for `grace`) and writes the new one.
    pub(super) fn renew_token(&self, routing: &Routing, grace: std::time::Duration) {
        let Some(auth) = &self.client_auth else {
            return;
        };
        let renewed = auth
            .rotate(grace)
            .map_err(|error| error.to_string())
            .and_then(|()| {
                self.save_state().map_err(|e| e.to_string())?;
                sa::write_token(&self.sa_dir, &auth.token()).map_err(|e| e.to_string())?;
                self.write_kubeconfig(routing).map_err(|e| e.to_string())
            });
        match renewed {
            Ok(()) => tracing::info!(
                ?grace,
                "renewed the client token; the previous one is accepted for the grace period"
            ),
            Err(error) => tracing::error!(%error, "renewing the client token failed"),
        }
    }

    /// Keeps the CAs moving ([`ServingCert::maintain`]) for as long as MCA runs: a new set is
    /// saved and published in `ca.crt` (and the kubeconfig) as soon as it is made, which is
    /// `--ca-overlap` before MCA serves with it.
    pub(super) async fn maintain_authorities(self: Arc<Self>, live: Arc<Live>) {
        loop {
            let now = time::OffsetDateTime::now_utc();
            let published = self
                .serving
                .maintain(now)
                .map_err(Error::from)
                .and_then(|done| {
                    if done.authorities {
                        self.write_all(&live.load())?;
                    }
                    Ok(done)
                });
            match published {
                Ok(done) if done.authorities => tracing::info!("published MCA's CAs in ca.crt"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "maintaining MCA's CAs failed; retrying"),
            }
            let wait = self
                .serving
                .next_maintenance(time::OffsetDateTime::now_utc());
            tokio::time::sleep(wait.max(std::time::Duration::from_secs(1))).await;
        }
    }
}
