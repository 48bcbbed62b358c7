//! The mutation itself: a pod (or a workload's pod template) with MCA added as the seed's
//! deployment model has it. `mca inject` and `mca webhook` both call [`inject`].
//!
//! - MCA is the first init container, with `restartPolicy: Always` (a native sidecar: it is
//!   started, and must pass its startup probe on `/readyz`, before any other container, and
//!   stops last), so no container ever reaches the API before MCA serves it.
//! - `automountServiceAccountToken: false`: the kubelet mounts the real token nowhere. MCA
//!   gets it from a projected volume of its own (a token with an expiry the kubelet renews,
//!   `kube-root-ca.crt`, the namespace) mounted only into MCA.
//! - An in-memory `emptyDir` holds what MCA writes for the application: the fake
//!   ServiceAccount (mounted at the standard path in every other container) and the fake
//!   kubeconfig. Another, mounted into MCA alone, keeps its CA and client token across its
//!   own restarts, so the application's loaded `ca.crt` and token stay good.
//! - Env mode: every variable the kubelet derives from the `kubernetes` Service points at MCA
//!   in every other container. eBPF mode: no override, MCA runs as root with `CAP_BPF` and
//!   `CAP_NET_ADMIN` only, with the host's cgroup2 hierarchy mounted read-only so it can find
//!   the pod's cgroup from inside its container's cgroup namespace. Auto: both, so the
//!   application works whichever mode MCA ends up in.
//!
//! The pod is edited as the JSON the API server (or the manifest) holds, never round-tripped
//! through Kubernetes types: a field newer than the types MCA was built with would not
//! survive that. Injection only adds, besides replacing the automounted token; it checks so
//! before it answers ([`super::lost`]).

use serde_json::{Map, Value};

use super::{
    lost,
    sidecar::{self, CONTAINER, FAKE_VOLUME, SA_PATH},
};
use crate::intercept::Mode;

/// The annotation that opts a pod out (`disabled`) or, for the webhook, in (`enabled`).
pub const INJECT: &str = "mca.io/inject";
/// The annotation an injected pod carries: the version of MCA that injected it.
pub const INJECTED: &str = "mca.io/injected";
/// The annotation (`"true"`) by which a pod that shares its process namespace, or the
/// node's, accepts that its other processes may see MCA's ([`Refusal::SharedProcesses`]).
pub const ALLOW_SHARED_PROCESSES: &str = "mca.io/allow-shared-processes";

/// How to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// MCA's image.
    pub image: String,
    /// How the application's traffic reaches MCA.
    pub mode: Mode,
    /// A Secret holding the routing configuration (`config.yaml`), e.g. the operator's.
    pub config_secret: Option<String>,
    /// Lifetime of the projected ServiceAccount token (the kubelet renews it at 80%).
    pub token_expiration_seconds: i64,
    /// The port of the cluster's `kubernetes` Service, which the names of the service-link
    /// variables carry (`KUBERNETES_PORT_443_TCP`).
    pub service_port: u16,
}

/// What happened to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// MCA was added.
    Injected,
    /// MCA was already there: nothing changed.
    AlreadyInjected,
    /// The pod asked not to be injected (`mca.io/inject: disabled`).
    OptedOut,
}

/// Why a pod cannot be injected safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The metadata or spec is not what a pod has.
    #[error("its {what} is not a valid pod {what}: {reason}")]
    Invalid {
        /// `metadata` or `spec`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A host-network pod shares the node's network: MCA's 127.0.0.1:6443 would be the
    /// node's, and one such pod per node could hold it.
    #[error("it uses the host network: MCA's listener would be the node's")]
    HostNetwork,
    /// The pod shares a process namespace (its own, `shareProcessNamespace`, or the node's,
    /// `hostPID`): its other processes would see MCA's in `/proc`, where only MCA's
    /// non-dumpable flag stands between them and its credentials (and a process with
    /// `CAP_SYS_PTRACE` passes that). Injected anyway when the pod says so
    /// ([`ALLOW_SHARED_PROCESSES`]).
    #[error(
        "it sets spec.{field}: its other processes would see MCA's and could read its credentials through /proc (annotate the pod {ALLOW_SHARED_PROCESSES}: \"true\" to inject it anyway)"
    )]
    SharedProcesses {
        /// `shareProcessNamespace` or `hostPID`.
        field: &'static str,
    },
    /// A container mounts something at (or above) the ServiceAccount path itself.
    #[error("container {container:?} already mounts {path}: MCA would have to shadow it")]
    ServiceAccountPath {
        /// The container.
        container: String,
        /// Its mount path.
        path: String,
    },
    /// A name MCA needs is taken by something else.
    #[error("{what} {name:?} already exists and is not MCA's")]
    NameTaken {
        /// `container` or `volume`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A container sets what env mode must set.
    #[error("container {container:?} sets {variable} itself")]
    EnvSet {
        /// The container.
        container: String,
        /// The variable.
        variable: String,
    },
    /// The mutation would have dropped or changed something of the pod (a bug in MCA, caught
    /// before it reached the pod).
    #[error("injecting would change {path} of the pod, and MCA only adds")]
    WouldLose {
        /// The JSON pointer of what would be lost.
        path: String,
    },
}

/// Injects MCA into the pod template whose metadata is `meta` (`null` if it has none) and
/// whose spec is `spec`; the injected annotation goes on `meta`. Nothing changes unless the
/// outcome is [`Outcome::Injected`].
pub fn inject(meta: &mut Value, spec: &mut Value, settings: &Settings) -> Result<Outcome, Refusal> {
    validate(meta, spec)?;
    let annotation = |key: &str| meta.get("annotations")?.get(key)?.as_str();
    if annotation(INJECT) == Some("disabled") {
        return Ok(Outcome::OptedOut);
    }
    let ours = items(spec, "initContainers").any(|c| name(c) == CONTAINER);
    let mut edited = spec.clone();
    let outcome = if annotation(INJECTED).is_some() && ours {
        rewire(&mut edited, settings)?
    } else {
        check_processes(&edited, annotation(ALLOW_SHARED_PROCESSES) == Some("true"))?;
        remove_automounted_token(&mut edited);
        edited["automountServiceAccountToken"] = Value::Bool(false);
        check(&edited, settings)?;
        let replaced = edited.clone();
        add(&mut edited, settings);
        only_added(&replaced, &edited)?;
        Outcome::Injected
    };
    if outcome == Outcome::Injected {
        let version = Value::from(env!("CARGO_PKG_VERSION"));
        match meta.pointer_mut("/annotations") {
            Some(Value::Object(annotations)) => {
                annotations.insert(INJECTED.to_owned(), version);
            }
            _ => meta["annotations"] = Value::Object(Map::from_iter([(INJECTED.into(), version)])),
        }
        *spec = edited;
    }
    Ok(outcome)
}

/// Adds MCA to a pod spec that has none of it.
fn add(spec: &mut Value, settings: &Settings) {
    for container in app_containers(spec) {
        wire(container, settings);
    }
    let mca = json(sidecar::container(settings));
    match spec.get_mut("initContainers") {
        Some(Value::Array(init)) => init.insert(0, mca),
        _ => spec["initContainers"] = Value::Array(vec![mca]),
    }
    for volume in sidecar::volumes(settings) {
        push(spec, "volumes", json(volume));
    }
}

/// An injected pod again (a webhook reinvoked after another added containers): containers
/// without the fake ServiceAccount get it; the rest stays as it is.
fn rewire(spec: &mut Value, settings: &Settings) -> Result<Outcome, Refusal> {
    let before = spec.clone();
    let wired = |c: &Value| {
        items(c, "volumeMounts").any(|m| {
            m.get("name").and_then(Value::as_str) == Some(FAKE_VOLUME)
                && m.get("mountPath").and_then(Value::as_str) == Some(SA_PATH)
        })
    };
    let mut outcome = Outcome::AlreadyInjected;
    for container in app_containers(spec).filter(|c| !wired(c)) {
        check_container(container, settings)?;
        wire(container, settings);
        outcome = Outcome::Injected;
    }
    only_added(&before, spec)?;
    Ok(outcome)
}

/// Gives an application container the fake ServiceAccount and kubeconfig, and in env mode
/// the overrides.
fn wire(container: &mut Value, settings: &Settings) {
    for mount in sidecar::app_mounts() {
        push(container, "volumeMounts", json(mount));
    }
    if settings.mode != Mode::Ebpf {
        for (name, value) in sidecar::service_overrides(settings.service_port) {
            push(container, "env", json(sidecar::var(&name, &value)));
        }
    }
    let has_kubeconfig = items(container, "env").any(|v| name(v) == "KUBECONFIG");
    if settings.config_secret.is_some() && !has_kubeconfig {
        push(container, "env", json(sidecar::kubeconfig_var()));
    }
}

/// Removes the ServiceAccount token volume the API server's ServiceAccount admission plugin
/// adds (`kube-api-access-*`, projected, mounted at the standard path in every container)
/// before mutating webhooks run: MCA mounts the real token into itself alone.
fn remove_automounted_token(spec: &mut Value) {
    let automounted = |volume: &Value| {
        name(volume).starts_with("kube-api-access-")
            && volume.get("projected").is_some_and(|p| {
                items(p, "sources").any(|s| s.get("serviceAccountToken").is_some())
            })
    };
    let removed: Vec<String> = items(spec, "volumes")
        .filter(|v| automounted(v))
        .map(|v| name(v).to_owned())
        .collect();
    if removed.is_empty() {
        return;
    }
    retain(spec, "volumes", |v| !removed.iter().any(|r| r == name(v)));
    for container in app_containers(spec) {
        retain(container, "volumeMounts", |m| {
            !removed.iter().any(|r| r == name(m))
        });
    }
}

/// What a pod's metadata and spec must be for injection to make sense: what the Kubernetes
/// types accept (unknown fields aside), so a manifest with a broken template is reported,
/// not half-injected.
fn validate(meta: &Value, spec: &Value) -> Result<(), Refusal> {
    use k8s_openapi::{api::core::v1::PodSpec, apimachinery::pkg::apis::meta::v1::ObjectMeta};
    use serde::Deserialize as _;
    let invalid = |what, error: serde_json::Error| Refusal::Invalid {
        what,
        reason: error.to_string(),
    };
    if !meta.is_null() {
        ObjectMeta::deserialize(meta).map_err(|e| invalid("metadata", e))?;
    }
    PodSpec::deserialize(spec).map_err(|e| invalid("spec", e))?;
    Ok(())
}

/// Refuses a pod whose other processes would see MCA's, unless it `allowed` that.
fn check_processes(spec: &Value, allowed: bool) -> Result<(), Refusal> {
    let shared = ["shareProcessNamespace", "hostPID"]
        .into_iter()
        .find(|field| spec.get(field) == Some(&Value::Bool(true)));
    match shared {
        Some(field) if !allowed => Err(Refusal::SharedProcesses { field }),
        _ => Ok(()),
    }
}

/// What makes injection unsafe, checked before anything is added.
fn check(spec: &Value, settings: &Settings) -> Result<(), Refusal> {
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Err(Refusal::HostNetwork);
    }
    let all = items(spec, "initContainers").chain(items(spec, "containers"));
    for container in all {
        if name(container) == CONTAINER {
            return Err(Refusal::NameTaken {
                what: "container",
                name: CONTAINER.to_owned(),
            });
        }
        check_container(container, settings)?;
    }
    if let Some(volume) = items(spec, "volumes").find(|v| sidecar::VOLUMES.contains(&name(v))) {
        return Err(Refusal::NameTaken {
            what: "volume",
            name: name(volume).to_owned(),
        });
    }
    Ok(())
}

/// What makes one application container unsafe to give the fake ServiceAccount.
fn check_container(container: &Value, settings: &Settings) -> Result<(), Refusal> {
    for mount in items(container, "volumeMounts") {
        let shown = mount
            .get("mountPath")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let path = shown.trim_end_matches('/');
        let above = SA_PATH.starts_with(path) && SA_PATH[path.len()..].starts_with('/');
        if above || path == SA_PATH {
            return Err(Refusal::ServiceAccountPath {
                container: name(container).to_owned(),
                path: shown.to_owned(),
            });
        }
    }
    if settings.mode != Mode::Ebpf {
        let overrides = sidecar::service_overrides(settings.service_port);
        for variable in items(container, "env").map(name) {
            if overrides.iter().any(|(name, _)| name == variable) {
                return Err(Refusal::EnvSet {
                    container: name(container).to_owned(),
                    variable: variable.to_owned(),
                });
            }
        }
    }
    Ok(())
}

/// Refuses a result that does not keep all of `before`.
fn only_added(before: &Value, after: &Value) -> Result<(), Refusal> {
    match lost::first_lost(before, after) {
        None => Ok(()),
        Some(path) => Err(Refusal::WouldLose { path }),
    }
}

/// Every container but MCA: the application's, and its init containers.
fn app_containers(spec: &mut Value) -> impl Iterator<Item = &mut Value> {
    spec.as_object_mut()
        .into_iter()
        .flat_map(|spec| spec.iter_mut())
        .filter(|(key, _)| *key == "initContainers" || *key == "containers")
        .filter_map(|(_, list)| list.as_array_mut())
        .flatten()
        .filter(|c| name(c) != CONTAINER)
}

/// The elements of the list at `key` of `object`, none if there is no list.
fn items<'a>(object: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    object
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The `name` of a container, volume, mount or variable.
fn name(item: &Value) -> &str {
    item.get("name").and_then(Value::as_str).unwrap_or_default()
}

/// Appends `item` to the list at `key` of `object`, creating it if needed.
fn push(object: &mut Value, key: &str, item: Value) {
    match object.get_mut(key) {
        Some(Value::Array(list)) => list.push(item),
        _ => object[key] = Value::Array(vec![item]),
    }
}

/// Keeps the elements of the list at `key` that `keep` accepts, and drops the list if none
/// is left (as the typed field's `None`).
fn retain(object: &mut Value, key: &str, keep: impl Fn(&Value) -> bool) {
    let Some(Value::Array(list)) = object.get_mut(key) else {
        return;
    };
    list.retain(|item| keep(item));
    if list.is_empty() {
        object.as_object_mut().expect("it has a list").remove(key);
    }
}

/// One of MCA's own pieces as JSON.
fn json(piece: impl serde::Serialize) -> Value {
    serde_json::to_value(piece).expect("Kubernetes types serialize")
}
