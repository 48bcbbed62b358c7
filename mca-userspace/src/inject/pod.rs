//! The mutation itself: a pod spec (and its template's metadata) with MCA added as the
//! seed's deployment model has it. `mca inject` and `mca webhook` both call [`inject`].
//!
//! - MCA is the first init container, with `restartPolicy: Always` (a native sidecar: it is
//!   started, and must pass its startup probe on `/readyz`, before any other container, and
//!   stops last), so no container ever reaches the API before MCA serves it.
//! - `automountServiceAccountToken: false`: the kubelet mounts the real token nowhere. MCA
//!   gets it from a projected volume of its own (a token with an expiry the kubelet renews,
//!   `kube-root-ca.crt`, the namespace) mounted only into MCA.
//! - An in-memory `emptyDir` holds what MCA writes for the application: the fake
//!   ServiceAccount (mounted at the standard path in every other container) and the fake
//!   kubeconfig.
//! - Env mode: `KUBERNETES_SERVICE_HOST=127.0.0.1`, `KUBERNETES_SERVICE_PORT=6443` in every
//!   other container. eBPF mode: no override, MCA runs as root with `CAP_BPF` and
//!   `CAP_NET_ADMIN` only (no privilege escalation, other capabilities dropped), with the
//!   host's cgroup2 hierarchy mounted read-only so it can find the pod's cgroup from inside
//!   its container's cgroup namespace. Auto: both, so the application works whichever mode
//!   MCA ends up in.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
        DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, HTTPGetAction, HostPathVolumeSource,
        KeyToPath, ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource,
        ResourceRequirements, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection,
        Volume, VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::{
        api::resource::Quantity, apis::meta::v1::ObjectMeta, util::intstr::IntOrString,
    },
};

use crate::intercept::Mode;

/// The annotation that opts a pod out (`disabled`) or, for the webhook, in (`enabled`).
pub const INJECT: &str = "mca.io/inject";
/// The annotation an injected pod carries: the version of MCA that injected it.
pub const INJECTED: &str = "mca.io/injected";
/// The standard ServiceAccount path, where clients look for credentials.
pub const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// MCA's container.
pub const CONTAINER: &str = "mca";
/// The projected volume with the real ServiceAccount, MCA's only.
pub const REAL_SA_VOLUME: &str = "mca-real-sa";
/// The `emptyDir` MCA writes the fake ServiceAccount and kubeconfig into.
pub const FAKE_VOLUME: &str = "mca-fake";
/// The routing configuration's Secret volume.
pub const CONFIG_VOLUME: &str = "mca-config";
/// The host's cgroup2 hierarchy (eBPF modes), where MCA finds the pod's cgroup.
pub const HOST_CGROUP_VOLUME: &str = "mca-host-cgroup";
/// Where it is mounted in MCA.
const HOST_CGROUP_DIR: &str = "/host/sys/fs/cgroup";
/// Where the `emptyDir` is mounted.
const FAKE_DIR: &str = "/var/run/mca";
/// Where the routing configuration is mounted in MCA.
const CONFIG_DIR: &str = "/etc/mca";
/// The admin port (probes, metrics).
const ADMIN_PORT: i32 = 9901;
/// The sidecar's program in MCA's image (`deploy/Dockerfile`): `mca run` alone, without the
/// control plane's code, so every pod's copy is smaller in memory.
pub const SIDECAR_PROGRAM: &str = "/usr/local/bin/mca-sidecar";

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
    /// A host-network pod shares the node's network: MCA's 127.0.0.1:6443 would be the
    /// node's, and one such pod per node could hold it.
    #[error("it uses the host network: MCA's listener would be the node's")]
    HostNetwork,
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
        variable: &'static str,
    },
}

/// Injects MCA into the pod `spec` whose metadata is `meta` (a pod's, or a workload's pod
/// template's); the injected annotation goes on `meta`.
pub fn inject(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    settings: &Settings,
) -> Result<Outcome, Refusal> {
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    if annotation(INJECT).is_some_and(|v| v == "disabled") {
        return Ok(Outcome::OptedOut);
    }
    let ours = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == CONTAINER);
    if annotation(INJECTED).is_some() && ours {
        return rewire(spec, settings);
    }
    remove_automounted_token(spec);
    check(spec, settings)?;

    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INJECTED.to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    spec.automount_service_account_token = Some(false);
    for container in app_containers(spec) {
        wire(container, settings);
    }
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, sidecar(settings));
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.push(real_service_account(settings.token_expiration_seconds));
    volumes.push(Volume {
        name: FAKE_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity("1Mi".to_owned())),
        }),
        ..Volume::default()
    });
    if settings.mode != Mode::Env {
        volumes.push(Volume {
            name: HOST_CGROUP_VOLUME.to_owned(),
            host_path: Some(HostPathVolumeSource {
                path: "/sys/fs/cgroup".to_owned(),
                type_: Some("Directory".to_owned()),
            }),
            ..Volume::default()
        });
    }
    if let Some(secret) = &settings.config_secret {
        volumes.push(Volume {
            name: CONFIG_VOLUME.to_owned(),
            // Optional: the operator publishes it once the namespace has a Cluster or a
            // Route; until then MCA serves the local cluster (`--config-optional`).
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                optional: Some(true),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    Ok(Outcome::Injected)
}

/// An injected pod again (a webhook reinvoked after another added containers): containers
/// without the fake ServiceAccount get it; the rest stays as it is.
fn rewire(spec: &mut PodSpec, settings: &Settings) -> Result<Outcome, Refusal> {
    let unwired = |c: &Container| {
        c.name != CONTAINER
            && !c
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == FAKE_VOLUME && m.mount_path == SA_PATH)
    };
    let mut outcome = Outcome::AlreadyInjected;
    for container in app_containers(spec).filter(|c| unwired(c)) {
        check_container(container, settings)?;
        wire(container, settings);
        outcome = Outcome::Injected;
    }
    Ok(outcome)
}

/// Gives an application container the fake ServiceAccount and kubeconfig, and in env mode
/// the overrides.
fn wire(container: &mut Container, settings: &Settings) {
    let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
    mounts.push(VolumeMount {
        name: FAKE_VOLUME.to_owned(),
        mount_path: SA_PATH.to_owned(),
        sub_path: Some("serviceaccount".to_owned()),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    mounts.push(VolumeMount {
        name: FAKE_VOLUME.to_owned(),
        mount_path: FAKE_DIR.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    });
    let env = container.env.get_or_insert_with(Vec::new);
    if settings.mode != Mode::Ebpf {
        env.push(var("KUBERNETES_SERVICE_HOST", "127.0.0.1"));
        env.push(var("KUBERNETES_SERVICE_PORT", "6443"));
    }
    // The fake kubeconfig has a context per cluster (`kubectl --context east`).
    if settings.config_secret.is_some() && !env.iter().any(|v| v.name == "KUBECONFIG") {
        env.push(var("KUBECONFIG", &format!("{FAKE_DIR}/kubeconfig")));
    }
    if env.is_empty() {
        container.env = None;
    }
}

/// Removes the ServiceAccount token volume the API server's ServiceAccount admission plugin
/// adds (`kube-api-access-*`, projected, mounted at the standard path in every container)
/// before mutating webhooks run: MCA mounts the real token into itself alone.
fn remove_automounted_token(spec: &mut PodSpec) {
    let automounted = |volume: &Volume| {
        volume.name.starts_with("kube-api-access-")
            && volume.projected.as_ref().is_some_and(|projected| {
                projected
                    .sources
                    .iter()
                    .flatten()
                    .any(|source| source.service_account_token.is_some())
            })
    };
    let Some(volumes) = spec.volumes.as_mut() else {
        return;
    };
    let removed: Vec<String> = volumes
        .iter()
        .filter(|v| automounted(v))
        .map(|v| v.name.clone())
        .collect();
    volumes.retain(|v| !removed.contains(&v.name));
    if volumes.is_empty() {
        spec.volumes = None;
    }
    for container in app_containers(spec) {
        if let Some(mounts) = container.volume_mounts.as_mut() {
            mounts.retain(|m| !removed.contains(&m.name));
            if mounts.is_empty() {
                container.volume_mounts = None;
            }
        }
    }
}

/// What makes injection unsafe, checked before anything changes.
fn check(spec: &PodSpec, settings: &Settings) -> Result<(), Refusal> {
    if spec.host_network == Some(true) {
        return Err(Refusal::HostNetwork);
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for container in containers {
        if container.name == CONTAINER {
            return Err(Refusal::NameTaken {
                what: "container",
                name: CONTAINER.to_owned(),
            });
        }
        check_container(container, settings)?;
    }
    for volume in spec.volumes.iter().flatten() {
        let ours = [
            REAL_SA_VOLUME,
            FAKE_VOLUME,
            CONFIG_VOLUME,
            HOST_CGROUP_VOLUME,
        ];
        if ours.contains(&volume.name.as_str()) {
            return Err(Refusal::NameTaken {
                what: "volume",
                name: volume.name.clone(),
            });
        }
    }
    Ok(())
}

/// What makes one application container unsafe to give the fake ServiceAccount.
fn check_container(container: &Container, settings: &Settings) -> Result<(), Refusal> {
    for mount in container.volume_mounts.iter().flatten() {
        let path = mount.mount_path.trim_end_matches('/');
        let above = SA_PATH.starts_with(path) && SA_PATH[path.len()..].starts_with('/');
        if above || path == SA_PATH {
            return Err(Refusal::ServiceAccountPath {
                container: container.name.clone(),
                path: mount.mount_path.clone(),
            });
        }
    }
    if settings.mode != Mode::Ebpf {
        for variable in ["KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"] {
            if container.env.iter().flatten().any(|v| v.name == variable) {
                return Err(Refusal::EnvSet {
                    container: container.name.clone(),
                    variable,
                });
            }
        }
    }
    Ok(())
}

/// Every container but MCA: the application's, and its init containers.
fn app_containers(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    spec.init_containers
        .iter_mut()
        .flatten()
        .filter(|c| c.name != CONTAINER)
        .chain(spec.containers.iter_mut())
}

fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// MCA's container.
fn sidecar(settings: &Settings) -> Container {
    let mode = match settings.mode {
        Mode::Auto => "auto",
        Mode::Ebpf => "ebpf",
        Mode::Env => "env",
    };
    let mut args = vec![
        format!("--intercept={mode}"),
        format!("--fake-sa-dir={FAKE_DIR}/serviceaccount"),
    ];
    let mut mounts = vec![
        VolumeMount {
            name: REAL_SA_VOLUME.to_owned(),
            mount_path: SA_PATH.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: FAKE_VOLUME.to_owned(),
            mount_path: FAKE_DIR.to_owned(),
            ..VolumeMount::default()
        },
    ];
    if settings.mode != Mode::Env {
        // Inside its container's cgroup namespace MCA cannot see the pod's cgroup; the
        // host's hierarchy, read-only, lets it find it (see `--host-cgroup-root`).
        args.push(format!("--host-cgroup-root={HOST_CGROUP_DIR}"));
        mounts.push(VolumeMount {
            name: HOST_CGROUP_VOLUME.to_owned(),
            mount_path: HOST_CGROUP_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    if settings.config_secret.is_some() {
        args.push(format!("--config={CONFIG_DIR}/config.yaml"));
        args.push("--config-optional".to_owned());
        mounts.push(VolumeMount {
            name: CONFIG_VOLUME.to_owned(),
            mount_path: CONFIG_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let probe = |path: &str, period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("mca-admin".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let quantities = |cpu: Option<&str>, memory: &str| {
        let mut map = BTreeMap::new();
        if let Some(cpu) = cpu {
            map.insert("cpu".to_owned(), Quantity(cpu.to_owned()));
        }
        map.insert("memory".to_owned(), Quantity(memory.to_owned()));
        Some(map)
    };
    Container {
        name: CONTAINER.to_owned(),
        image: Some(settings.image.clone()),
        command: Some(vec![SIDECAR_PROGRAM.to_owned()]),
        args: Some(args),
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("mca-admin".to_owned()),
            container_port: ADMIN_PORT,
            ..ContainerPort::default()
        }]),
        // Ready within a minute of starting, or the kubelet restarts it.
        startup_probe: Some(probe("/readyz", 1, 60)),
        liveness_probe: Some(probe("/livez", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: quantities(Some("10m"), "32Mi"),
            limits: quantities(None, "256Mi"),
            ..ResourceRequirements::default()
        }),
        security_context: Some(security_context(settings.mode)),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Env mode needs no privilege at all; eBPF needs root (added capabilities reach only root
/// processes) with `CAP_BPF` and `CAP_NET_ADMIN`, and nothing else.
fn security_context(mode: Mode) -> SecurityContext {
    let ebpf = mode != Mode::Env;
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(!ebpf),
        run_as_user: Some(if ebpf { 0 } else { 65532 }),
        capabilities: Some(Capabilities {
            add: ebpf.then(|| vec!["BPF".to_owned(), "NET_ADMIN".to_owned()]),
            drop: Some(vec!["ALL".to_owned()]),
        }),
        ..SecurityContext::default()
    }
}

/// The real ServiceAccount, as the kubelet would have mounted it, for MCA alone.
fn real_service_account(expiration_seconds: i64) -> Volume {
    Volume {
        name: REAL_SA_VOLUME.to_owned(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(expiration_seconds),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".to_owned(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".to_owned(),
                            path: "ca.crt".to_owned(),
                            ..KeyToPath::default()
                        }]),
                        ..ConfigMapProjection::default()
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".to_owned(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".to_owned(),
                                ..ObjectFieldSelector::default()
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}
