//! The namespaces the operator reconciles, with kube-runtime's [`Controller`]: keyed by
//! namespace, triggered by every change to a `Cluster` or `Route` in it (a burst of changes,
//! such as one `kubectl apply`, debounced into one reconciliation), requeued every [`RESYNC`],
//! and on an error after [`RETRY`]; the Controller never runs two reconciliations of one
//! namespace at once.
//!
//! The key of a namespace is a `Namespace` object made here, not read from the API server:
//! the operator needs no permission on namespaces, only on what it routes by. Credential
//! Secrets are watched only when asked for ([`Options::watch_credential_secrets`]), since
//! RBAC cannot grant `list` and `watch` on only the labelled ones (see `SECURITY.md`):
//! without it the operator reads Secrets by name alone, and a changed credential reaches
//! the configuration with the next resync. With it, the watch asks for the metadata of the
//! labelled Secrets only, so no Secret's data reaches the operator through it.
//!
//! [`Options::watch_credential_secrets`]: super::Options::watch_credential_secrets

use std::{sync::Arc, time::Duration};

use futures_util::{Stream, StreamExt as _, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ObjectMeta, PartialObjectMeta},
    runtime::{
        WatchStreamExt as _,
        controller::{self, Action, Controller},
        reflector, watcher,
    },
};

use super::{
    crd::{CREDENTIALS_LABEL, Cluster, Route},
    inventory::members::Inventory,
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
    /// The cluster inventory, if the operator reads one.
    inventory: Option<Arc<Inventory>>,
}

/// Reconciles namespaces as their resources change, until dropped (leadership lost or the
/// operator stopping); with `watch_credential_secrets`, also as their labelled credential
/// Secrets change; with an `inventory`, every namespace known so far as its profiles change.
pub async fn reconcile_all(
    client: Client,
    published: String,
    watch_credential_secrets: bool,
    inventory: Option<Arc<Inventory>>,
) {
    let (store, mut writer) = reflector::store::<Namespace>();
    // The store is filled as namespaces come up, never listed: it is complete from the start
    // (the Controller waits for that before it reconciles anything).
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let mut sources = vec![
        namespaces_of(watcher(
            Api::<Cluster>::all(client.clone()),
            watcher::Config::default(),
        ))
        .boxed(),
        namespaces_of(watcher(
            Api::<Route>::all(client.clone()),
            watcher::Config::default(),
        ))
        .boxed(),
    ];
    if watch_credential_secrets {
        let labelled = watcher::Config::default().labels(&format!("{CREDENTIALS_LABEL}=true"));
        sources.push(
            namespaces_of(watcher(
                Api::<PartialObjectMeta<Secret>>::all(client.clone()),
                labelled,
            ))
            .boxed(),
        );
    }
    let touched = stream::select_all(sources).map(move |namespace| {
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
    let profiles_changed = match &inventory {
        Some(inventory) => Arc::clone(inventory).changes(client.clone()).boxed(),
        None => stream::pending().boxed(),
    };
    let context = Arc::new(Context {
        client,
        published,
        inventory,
    });
    Controller::for_stream(touched, store)
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .reconcile_all_on(profiles_changed)
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

/// The namespace of every object of a watch that changes (or is deleted).
fn namespaces_of<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> impl Stream<Item = String> + Send
where
    K: kube::Resource + Send + 'static,
{
    events
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
    let inventory = context.inventory.as_deref();
    let summary =
        reconcile::namespace(&context.client, &name, &context.published, inventory).await?;
    tracing::debug!(namespace = %name, ?summary, "reconciled");
    Ok(Action::requeue(
        summary.refresh.map_or(RESYNC, |due| due.min(RESYNC)),
    ))
}

fn error_policy(_: Arc<Namespace>, _: &kube::Error, _: Arc<Context>) -> Action {
    Action::requeue(RETRY)
}
