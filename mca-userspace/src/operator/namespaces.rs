//! The namespaces the operator reconciles, with kube-runtime's [`Controller`]: keyed by
//! namespace, triggered by every change to a `Cluster` or `Route` in it (a burst of changes,
//! such as one `kubectl apply`, debounced into one reconciliation), requeued every [`RESYNC`],
//! and on an error after [`RETRY`]; the Controller never runs two reconciliations of one
//! namespace at once.
//!
//! The key of a namespace is a `Namespace` object made here, not read from the API server:
//! the operator needs no permission on namespaces, only on what it routes by. Credential
//! Secrets are not watched either: RBAC cannot grant `list` and `watch` on only the labelled
//! ones, and the operator reads Secrets by name alone (see `SECURITY.md`); a changed
//! credential reaches the configuration with the next resync.

use std::{sync::Arc, time::Duration};

use futures_util::{StreamExt as _, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt as _,
    api::ObjectMeta,
    runtime::{
        WatchStreamExt as _,
        controller::{self, Action, Controller},
        reflector, watcher,
    },
};

use super::{
    crd::{Cluster, Route},
    reconcile,
};

/// How often every known namespace is reconciled even without a change to its resources.
pub const RESYNC: Duration = Duration::from_secs(60);
/// The wait before a namespace whose reconciliation failed is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// Changes this close together are one reconciliation.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What every reconciliation needs.
struct Context {
    client: Client,
    /// The Secret each namespace's configuration is published as.
    published: String,
}

/// Reconciles namespaces as their resources change, until dropped (leadership lost or the
/// operator stopping).
pub async fn reconcile_all(client: Client, published: String) {
    let (store, mut writer) = reflector::store::<Namespace>();
    // The store is filled as namespaces come up, never listed: it is complete from the start
    // (the Controller waits for that before it reconciles anything).
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let touched = stream::select(
        namespaces_of::<Cluster>(&client),
        namespaces_of::<Route>(&client),
    )
    .map(move |namespace| {
        let key = Namespace {
            metadata: ObjectMeta {
                name: Some(namespace),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        writer.apply_watcher_event(&watcher::Event::Apply(key.clone()));
        Ok(key)
    });
    let context = Arc::new(Context { client, published });
    Controller::for_stream(touched, store)
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                Ok(_) => {}
                Err(controller::Error::ReconcilerFailed(error, namespace)) => {
                    tracing::warn!(namespace = %namespace.name, %error, "reconciling failed; trying again");
                }
                Err(error) => tracing::warn!(%error, "the namespace controller failed"),
            }
        })
        .await;
}

/// The namespace of every `K` that changes (or is deleted).
fn namespaces_of<K>(client: &Client) -> impl futures_util::Stream<Item = String> + Send + use<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move {
            match event {
                Ok(object) => object.namespace(),
                Err(error) => {
                    tracing::warn!(%error, "watch failed; resuming");
                    None
                }
            }
        })
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, kube::Error> {
    let name = namespace.name_any();
    let summary = reconcile::namespace(&context.client, &name, &context.published).await?;
    tracing::debug!(namespace = %name, ?summary, "reconciled");
    Ok(Action::requeue(RESYNC))
}

fn error_policy(_: Arc<Namespace>, _: &kube::Error, _: Arc<Context>) -> Action {
    Action::requeue(RETRY)
}
