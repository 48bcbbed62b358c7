//! `mca operator`: turns each namespace's `Cluster` and `Route` resources ([`crd`]) into the
//! routing configuration its MCA sidecars hot-reload ([`render`], [`reconcile`]), and keeps
//! the webhook's serving certificate and `caBundle` current ([`webhook_tls`]). Replicas elect
//! one leader with a Lease ([`lease`]); only the leader writes.
//!
//! Namespaces are reconciled by a kube-runtime `Controller` ([`namespaces`]) when a `Cluster`
//! or `Route` in them changes (watches on both, cluster-wide) and every [`RESYNC`] in any
//! case, which is how changed credential Secrets reach the configuration unless the operator
//! is allowed to watch Secrets ([`Options::watch_credential_secrets`]). Clusters can also come
//! from SIG-Multicluster's inventory ([`inventory`]): `ClusterProfile`s, with credentials
//! from their access providers' exec plugins, which the operator runs.

pub mod crd;
pub mod inventory;
pub mod lease;
#[cfg(test)]
mod mock;
mod namespaces;
pub mod reconcile;
pub mod render;
pub mod webhook_tls;

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::coordination::v1::Lease,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    jiff::Timestamp,
};
use kube::{Api, Client, CustomResourceExt as _};

pub use self::namespaces::RESYNC;
use self::namespaces::RETRY;

/// How often the webhook's certificate is checked.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(600);

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable connection to the API server.
    #[error("connecting to the API server: {0}")]
    Client(#[from] kube::Error),
    /// Another replica holds the Lease now: this one stops writing at once (and exits, to
    /// start over as a follower).
    #[error("lost the leader Lease")]
    LostLease,
}

/// What the operator manages.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Secret each namespace's configuration is published as.
    pub published: String,
    /// The Lease's namespace (the operator's own) and name.
    pub lease: (String, String),
    /// This replica's identity (its pod name).
    pub identity: String,
    /// The webhook whose certificate the operator keeps, if any.
    pub webhook: Option<webhook_tls::Webhook>,
    /// Whether a changed credential Secret is acted on at once (a watch of the labelled
    /// Secrets' metadata, which needs `list` and `watch` on every Secret) rather than with the
    /// next [`RESYNC`].
    pub watch_credential_secrets: bool,
    /// The SIG-Multicluster cluster inventory to take clusters from, if any.
    pub inventory: Option<inventory::members::Options>,
}

/// Runs until SIGTERM or SIGINT (`Ok`), or until leadership is lost.
pub async fn run(client: Client, options: Options) -> Result<(), Error> {
    let elector = lease::Elector::new(
        Api::<Lease>::namespaced(client.clone(), &options.lease.0),
        &options.lease.1,
        &options.identity,
    );
    let signal = crate::signal::shutdown();
    tokio::pin!(signal);
    tracing::info!(identity = %options.identity, "waiting to lead");
    loop {
        tokio::select! {
            signal = &mut signal => {
                tracing::info!(signal, "shutting down");
                return Ok(());
            }
            () = tokio::time::sleep(lease::RETRY) => {}
        }
        match elector.try_acquire(Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "reading the Lease failed"),
        }
    }
    tracing::info!(identity = %options.identity, "leading");
    tokio::select! {
        signal = &mut signal => {
            tracing::info!(signal, "shutting down; releasing the Lease");
            if let Err(error) = elector.release(Timestamp::now()).await {
                tracing::warn!(%error, "releasing the Lease failed; it expires on its own");
            }
            Ok(())
        }
        lost = keep_leading(&elector) => Err(lost),
        () = lead(client, options) => Ok(()),
    }
}

/// Renews the Lease until that fails for longer than the Lease lasts.
async fn keep_leading(elector: &lease::Elector) -> Error {
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(lease::RETRY).await;
        match elector.try_acquire(Timestamp::now()).await {
            Ok(true) => renewed = tokio::time::Instant::now(),
            Ok(false) => return Error::LostLease,
            Err(error) => tracing::warn!(%error, "renewing the Lease failed"),
        }
        // Stop before another replica may take over.
        if renewed.elapsed() >= lease::DURATION - lease::RETRY {
            return Error::LostLease;
        }
    }
}

/// The leader's work, until it is dropped: namespaces as they change, and the webhook's
/// certificate.
async fn lead(client: Client, options: Options) {
    let certificate = async {
        let Some(webhook) = &options.webhook else {
            return;
        };
        loop {
            // Soon again after a failure: until the caBundle is set, the API server cannot
            // call the webhook, and pods of opted-in namespaces are refused.
            let next = match webhook_tls::ensure(&client, webhook, Timestamp::now()).await {
                Ok(_) => CERTIFICATE_CHECK,
                Err(error) => {
                    tracing::warn!(%error, "keeping the webhook's certificate current failed; trying again");
                    RETRY
                }
            };
            tokio::time::sleep(next).await;
        }
    };
    let inventory = options.inventory.clone().map(|inventory| {
        Arc::new(inventory::members::Inventory::new(
            client.clone(),
            &options.identity,
            inventory,
        ))
    });
    let namespaces = namespaces::reconcile_all(
        client.clone(),
        options.published.clone(),
        options.watch_credential_secrets,
        inventory,
    );
    tokio::join!(certificate, namespaces);
}

/// The CRDs, as `mca crds` prints them (YAML documents).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![crd::Cluster::crd(), crd::Route::crd()]
}

/// [`crds`] as YAML documents.
pub fn crds_yaml() -> String {
    let documents: Vec<_> = crds()
        .iter()
        .map(|crd| serde_json::to_value(crd).expect("a CRD serializes"))
        .collect();
    serde_saphyr::to_string_multiple(&documents).expect("CRDs serialize")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_helm_charts_crds_are_the_generated_ones() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/helm/mca/crds/mca.io.yaml"
        );
        let committed = std::fs::read_to_string(path).expect("the chart's CRDs");
        assert!(
            committed == super::crds_yaml(),
            "deploy/helm/mca/crds/mca.io.yaml is stale: `mca crds > deploy/helm/mca/crds/mca.io.yaml`"
        );
    }
}
