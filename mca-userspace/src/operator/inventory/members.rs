//! The inventory as one namespace sees it: the `ClusterProfile`s its routes name (by name or
//! by a `clusterSelector` over the profiles' properties), each resolved into a [`Member`]
//! with a credential from its provider's plugin, or the reason it cannot be one.
//!
//! Only namespaces matching `--clusterprofile-consumers` get members: a profile's credential
//! is the fleet's, and a route in any other namespace naming a profile is refused with that
//! reason. Only the profiles a namespace's routes name are resolved and published there, so
//! a credential reaches no namespace that does not route to its cluster.
//!
//! Credentials are cached per profile and shared by every namespace using it; a plugin runs
//! again when the profile's access changes and, before its credential expires, at two
//! thirds of its lifetime ([`refresh_at`]), which leaves the last third for the published
//! Secret to reach the sidecars' volumes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{Stream, StreamExt as _, stream};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{
    Api, Client, Resource as _,
    api::{ApiResource, DynamicObject, ListParams},
    runtime::{
        WatchStreamExt as _,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};

use super::{
    exec::{self, Credential, Secret},
    profile::{ClusterProfile, GROUP, KIND, VERSIONS},
    provider::{Plan, Providers},
};
use crate::{
    operator::{
        crd::Route,
        reconcile::MANAGER,
        render::{Member, Members},
    },
    route::{pattern::NamespacePattern, selector::Selector},
};

/// How long a credential without an `expirationTimestamp` is used before its plugin runs
/// again.
pub const REFRESH_WITHOUT_EXPIRY: Duration = Duration::from_secs(600);
/// After a plugin failed, how soon it runs again.
const RETRY_FAILED: Duration = Duration::from_secs(10);
/// The wait between tries to find the `ClusterProfile` API.
const DISCOVERY_RETRY: Duration = Duration::from_secs(30);

/// Where the inventory is and who may use it.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespaces holding `ClusterProfile`s, first wins on a repeated name.
    pub namespaces: Vec<String>,
    /// The namespaces whose routes may use them.
    pub consumers: Vec<NamespacePattern>,
    /// The consumer's provider file.
    pub providers: Providers,
}

/// The inventory, with its credential cache.
pub struct Inventory {
    options: Options,
    recorder: Recorder,
    /// The served `ClusterProfile` API, once found.
    resource: tokio::sync::Mutex<Option<ApiResource>>,
    /// By profile (`namespace/name`); one lock each, so a slow plugin holds up only the
    /// namespaces using its cluster.
    credentials: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

/// What [`Inventory::credential`] found.
enum Obtained {
    /// A credential and when it is refreshed.
    Fresh(Credential, Timestamp),
    /// The plugin failed (why), but the last credential is good until it expires.
    Stale(Credential, Timestamp, String),
    /// No credential, and why.
    None(String),
}

/// A credential and what it was obtained for.
struct Cached {
    plan: Plan,
    credential: Credential,
    refresh: Timestamp,
}

/// A namespace's members, and when the first of their credentials is due for a refresh.
#[derive(Debug, Default)]
pub struct Resolved {
    /// By profile name.
    pub members: Members,
    /// How soon to reconcile again for a credential's sake.
    pub refresh: Option<Duration>,
}

impl Inventory {
    /// An inventory read with `client`; events are reported as `identity`.
    pub fn new(client: Client, identity: &str, options: Options) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity.to_owned()),
        };
        Self {
            options,
            recorder: Recorder::new(client, reporter),
            resource: tokio::sync::Mutex::new(None),
            credentials: Mutex::new(BTreeMap::new()),
        }
    }

    /// The served `ClusterProfile` API (the first of [`VERSIONS`] the server has), or `None`
    /// when its CRD is not installed.
    async fn resource(&self, client: &Client) -> Result<Option<ApiResource>, kube::Error> {
        let mut resource = self.resource.lock().await;
        if resource.is_none() {
            *resource = discover(client).await?;
        }
        Ok(resource.clone())
    }

    /// A tick for every change to a `ClusterProfile` of the inventory, for as long as it is
    /// polled (waiting for the API to appear if its CRD is not installed yet).
    pub fn changes(self: Arc<Self>, client: Client) -> impl Stream<Item = ()> + Send {
        let found = stream::once(async move {
            loop {
                match self.resource(&client).await {
                    Ok(Some(resource)) => return (self, client, resource),
                    Ok(None) => tracing::warn!(
                        "no {KIND} API ({GROUP}) on the API server: install its CRD; looking again in {}s",
                        DISCOVERY_RETRY.as_secs()
                    ),
                    Err(error) => tracing::warn!(%error, "discovering the {KIND} API failed"),
                }
                tokio::time::sleep(DISCOVERY_RETRY).await;
            }
        });
        found.flat_map(|(inventory, client, resource)| {
            let watches = inventory.options.namespaces.iter().map(|namespace| {
                let api =
                    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .touched_objects()
                    .filter_map(|event| async move {
                        match event {
                            Ok(_) => Some(()),
                            Err(error) => {
                                tracing::warn!(%error, "watching {KIND}s failed; resuming");
                                None
                            }
                        }
                    })
                    .boxed()
            });
            stream::select_all(watches.collect::<Vec<_>>())
        })
    }

    /// The members `routes` of `namespace` name.
    pub async fn members(
        &self,
        client: &Client,
        namespace: &str,
        routes: &[Route],
    ) -> Result<Resolved, kube::Error> {
        let mut resolved = Resolved::default();
        let Some(resource) = self.resource(client).await? else {
            return Ok(resolved);
        };
        let profiles = self.profiles(client, &resource).await?;
        let consumer = self.options.consumers.iter().any(|p| p.matches(namespace));
        let now = Timestamp::now();
        for (object, profile) in referenced(&profiles, routes) {
            let name = profile.metadata.name.clone();
            if !consumer {
                let why = format!(
                    "ClusterProfile {} is not offered to namespace {namespace}: \
                     --clusterprofile-consumers does not match it",
                    profile.key()
                );
                resolved.members.insert(name, Err(why));
                continue;
            }
            let (member, again) = self.member(object, profile, &resource, now).await;
            let due = again.duration_since(now).unsigned_abs();
            resolved.refresh = Some(resolved.refresh.map_or(due, |r| r.min(due)));
            resolved.members.insert(name, member);
        }
        self.forget_all_but(&profiles);
        Ok(resolved)
    }

    /// The inventory's profiles, the first of each name.
    async fn profiles(
        &self,
        client: &Client,
        resource: &ApiResource,
    ) -> Result<Vec<(DynamicObject, ClusterProfile)>, kube::Error> {
        let mut profiles: Vec<(DynamicObject, ClusterProfile)> = Vec::new();
        for namespace in &self.options.namespaces {
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, resource);
            let listed = match api.list(&ListParams::default()).await {
                Ok(listed) => listed,
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    // The CRD went away: find the API again next time.
                    *self.resource.lock().await = None;
                    return Ok(Vec::new());
                }
                Err(error) => return Err(error),
            };
            for object in listed.items {
                let read = serde_json::to_value(&object)
                    .and_then(serde_json::from_value::<ClusterProfile>);
                match read {
                    Ok(profile)
                        if profiles
                            .iter()
                            .any(|(_, p)| p.metadata.name == profile.metadata.name) =>
                    {
                        tracing::warn!(profile = %profile.key(), "another {KIND} of this name comes first; ignored");
                    }
                    Ok(profile) => profiles.push((object, profile)),
                    Err(error) => tracing::warn!(
                        namespace, name = object.metadata.name.as_deref().unwrap_or_default(),
                        %error, "an unreadable {KIND}; ignored"
                    ),
                }
            }
        }
        Ok(profiles)
    }

    /// `profile` as a member, or why it cannot be one (also reported as an event on the
    /// profile and in the log), and when to look at it again.
    async fn member(
        &self,
        object: &DynamicObject,
        profile: &ClusterProfile,
        resource: &ApiResource,
        now: Timestamp,
    ) -> (Result<Member, String>, Timestamp) {
        let key = profile.key();
        let retry = after(now, RETRY_FAILED);
        let plan = match self.options.providers.plan(profile) {
            Ok(plan) => plan,
            Err(why) => return (Err(self.failed(object, resource, &key, &why).await), retry),
        };
        let (credential, refresh) = match self.credential(&key, &plan, now).await {
            Obtained::Fresh(credential, refresh) => (credential, refresh),
            Obtained::Stale(credential, expires, why) => {
                let why =
                    format!("{why}; its current credential is used until it expires at {expires}");
                tracing::warn!(profile = %key, reason = %why, "refreshing the ClusterProfile's credential failed");
                self.report(object, resource, "RefreshFailed", &why).await;
                (credential, retry.min(expires))
            }
            Obtained::None(why) => {
                return (Err(self.failed(object, resource, &key, &why).await), retry);
            }
        };
        let mut files = BTreeMap::new();
        match credential.secret {
            Secret::Token(token) => {
                files.insert("token".to_owned(), token.into_bytes());
            }
            Secret::Certificate { certificate, key } => {
                files.insert("tls.crt".to_owned(), certificate);
                files.insert("tls.key".to_owned(), key);
            }
        }
        if let Some(ca) = plan.certificate_authority {
            files.insert("ca.crt".to_owned(), ca);
        }
        let member = Member {
            server: plan.server,
            tls_server_name: plan.tls_server_name,
            labels: profile.labels(),
            credential: files,
            unhealthy: profile.reported_down(),
        };
        (Ok(member), refresh)
    }

    /// Reports that no credential could be had for the profile `key`, and says why.
    async fn failed(
        &self,
        object: &DynamicObject,
        resource: &ApiResource,
        key: &str,
        why: &str,
    ) -> String {
        tracing::warn!(profile = %key, reason = %why, "no credential for the ClusterProfile; its cluster is left out");
        self.report(object, resource, "NoCredential", why).await;
        format!("no credential for ClusterProfile {key}: {why}")
    }

    /// The credential for the profile `key` by `plan`: the cached one while it is good for
    /// that plan, else a new one from the plugin; when the plugin fails, the cached one for
    /// as long as it has not expired.
    async fn credential(&self, key: &str, plan: &Plan, now: Timestamp) -> Obtained {
        let slot = Arc::clone(
            self.credentials
                .lock()
                .expect("not poisoned")
                .entry(key.to_owned())
                .or_default(),
        );
        let mut slot = slot.lock().await;
        let cached = slot.as_ref().filter(|cached| cached.plan == *plan);
        if let Some(cached) = cached
            && now < cached.refresh
        {
            return Obtained::Fresh(cached.credential.clone(), cached.refresh);
        }
        let started = Timestamp::now();
        let ran = exec::run(plan)
            .await
            .map_err(|error| error.to_string())
            .and_then(|credential| Ok((refresh_at(started, credential.expires)?, credential)));
        match ran {
            Ok((refresh, credential)) => {
                tracing::info!(profile = key, provider = %plan.provider, expires = ?credential.expires, "obtained a credential");
                *slot = Some(Cached {
                    plan: plan.clone(),
                    credential: credential.clone(),
                    refresh,
                });
                Obtained::Fresh(credential, refresh)
            }
            Err(why) => match cached.and_then(|c| Some((c, c.credential.expires?))) {
                Some((cached, expires)) if now < expires => {
                    Obtained::Stale(cached.credential.clone(), expires, why)
                }
                _ => {
                    *slot = None;
                    Obtained::None(why)
                }
            },
        }
    }

    /// Drops the cached credentials of profiles no longer in the inventory.
    fn forget_all_but(&self, profiles: &[(DynamicObject, ClusterProfile)]) {
        let keep: BTreeSet<String> = profiles.iter().map(|(_, p)| p.key()).collect();
        self.credentials
            .lock()
            .expect("not poisoned")
            .retain(|key, _| keep.contains(key));
    }

    /// A warning event on the profile (best effort: a failure to report is only logged).
    async fn report(
        &self,
        object: &DynamicObject,
        resource: &ApiResource,
        reason: &str,
        why: &str,
    ) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            note: Some(why.chars().take(1000).collect()),
            action: "ObtainCredential".to_owned(),
            secondary: None,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &object.object_ref(resource))
            .await
        {
            tracing::warn!(%error, "reporting an event failed");
        }
    }
}

/// The first of [`VERSIONS`] the API server serves `ClusterProfile`s in.
async fn discover(client: &Client) -> Result<Option<ApiResource>, kube::Error> {
    let group = match kube::discovery::group(client, GROUP).await {
        Ok(group) => group,
        // Not among the API server's groups.
        Err(kube::Error::Discovery(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    Ok(VERSIONS.iter().find_map(|version| {
        group
            .versioned_resources(version)
            .into_iter()
            .map(|(resource, _)| resource)
            .find(|resource| resource.kind == KIND)
    }))
}

/// The profiles `routes` name, by name or by selector over their properties.
fn referenced<'a>(
    profiles: &'a [(DynamicObject, ClusterProfile)],
    routes: &[Route],
) -> impl Iterator<Item = (&'a DynamicObject, &'a ClusterProfile)> {
    let named: BTreeSet<&str> = routes
        .iter()
        .flat_map(|r| r.spec.to.clusters.iter().map(String::as_str))
        .collect();
    let selectors: Vec<Selector> = routes
        .iter()
        .filter_map(|r| Selector::parse(r.spec.to.cluster_selector.as_deref()?).ok())
        .filter(|s| !s.is_empty())
        .collect();
    profiles
        .iter()
        .filter(move |(_, profile)| {
            let labels = profile.labels();
            named.contains(profile.metadata.name.as_str())
                || selectors
                    .iter()
                    .any(|s| s.matches(|key| labels.get(key).map(String::as_str)))
        })
        .map(|(object, profile)| (object, profile))
}

/// `duration` after `at`.
fn after(at: Timestamp, duration: Duration) -> Timestamp {
    SignedDuration::try_from(duration)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(at)
}

/// When a credential obtained at `obtained` is refreshed: at two thirds of its lifetime, or
/// after [`REFRESH_WITHOUT_EXPIRY`] when it does not say. One already expired is refused.
pub fn refresh_at(obtained: Timestamp, expires: Option<Timestamp>) -> Result<Timestamp, String> {
    let Some(expires) = expires else {
        return Ok(after(obtained, REFRESH_WITHOUT_EXPIRY));
    };
    let lifetime = expires.duration_since(obtained);
    if lifetime <= SignedDuration::ZERO {
        return Err(format!("its credential expired already (at {expires})"));
    }
    Ok(obtained.checked_add(lifetime * 2 / 3).unwrap_or(expires))
}

#[cfg(test)]
mod tests;
