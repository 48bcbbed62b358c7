//! What injection adds to a pod, as Kubernetes types: MCA's container, its volumes, and what
//! each application container gets (the fake ServiceAccount's mounts, the env overrides).
//! Only these pieces are typed; the pod they are added to stays as the API server sent it
//! (see [`super::pod`]).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
        DownwardAPIVolumeFile, EmptyDirVolumeSource, EnvVar, HTTPGetAction, HostPathVolumeSource,
        KeyToPath, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
        SeccompProfile, SecretVolumeSource, SecurityContext, ServiceAccountTokenProjection, Volume,
        VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::{api::resource::Quantity, util::intstr::IntOrString},
};

use super::pod::Settings;
use crate::intercept::Mode;

/// The standard ServiceAccount path, where clients look for credentials.
pub const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// MCA's container.
pub const CONTAINER: &str = "mca";
/// The projected volume with the real ServiceAccount, MCA's only.
pub const REAL_SA_VOLUME: &str = "mca-real-sa";
/// The `emptyDir` MCA writes the fake ServiceAccount and kubeconfig into.
pub const FAKE_VOLUME: &str = "mca-fake";
/// The in-memory `emptyDir` where MCA keeps its CA and client token across its own restarts
/// (`--state-dir`), mounted into MCA alone.
pub const STATE_VOLUME: &str = "mca-state";
/// The routing configuration's Secret volume.
pub const CONFIG_VOLUME: &str = "mca-config";
/// The host's cgroup2 hierarchy (eBPF modes), where MCA finds the pod's cgroup.
pub const HOST_CGROUP_VOLUME: &str = "mca-host-cgroup";
/// Every volume MCA adds.
pub const VOLUMES: [&str; 5] = [
    REAL_SA_VOLUME,
    FAKE_VOLUME,
    STATE_VOLUME,
    CONFIG_VOLUME,
    HOST_CGROUP_VOLUME,
];
/// Where it is mounted in MCA.
const HOST_CGROUP_DIR: &str = "/host/sys/fs/cgroup";
/// Where the `emptyDir` is mounted.
const FAKE_DIR: &str = "/var/run/mca";
/// Where MCA's state volume is mounted.
const STATE_DIR: &str = "/var/run/mca-state";
/// Where the routing configuration is mounted in MCA.
const CONFIG_DIR: &str = "/etc/mca";
/// The admin port (probes, metrics).
const ADMIN_PORT: i32 = 9901;
/// Where MCA listens in env mode, as the application's overrides say.
const LISTEN_HOST: &str = "127.0.0.1";
const LISTEN_PORT: u16 = 6443;
/// The sidecar's program in MCA's image (`deploy/Dockerfile`): `mca run` alone, without the
/// control plane's code, so every pod's copy is smaller in memory.
pub const SIDECAR_PROGRAM: &str = "/usr/local/bin/mca-sidecar";

/// The volumes MCA adds to the pod.
pub fn volumes(settings: &Settings) -> Vec<Volume> {
    let in_memory = |name: &str| Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".to_owned()),
            size_limit: Some(Quantity("1Mi".to_owned())),
        }),
        ..Volume::default()
    };
    let mode = secret_file_mode(settings.mode);
    let mut volumes = vec![
        real_service_account(settings.token_expiration_seconds, mode),
        in_memory(FAKE_VOLUME),
        in_memory(STATE_VOLUME),
    ];
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
                default_mode: mode,
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// The mounts an application container gets: the fake ServiceAccount at the standard path,
/// and the directory with the fake kubeconfig.
pub fn app_mounts() -> [VolumeMount; 2] {
    [
        VolumeMount {
            name: FAKE_VOLUME.to_owned(),
            mount_path: SA_PATH.to_owned(),
            sub_path: Some("serviceaccount".to_owned()),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: FAKE_VOLUME.to_owned(),
            mount_path: FAKE_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
    ]
}

/// The variables env mode overrides: every one the kubelet derives from the `kubernetes`
/// Service (`KUBERNETES_SERVICE_*`, and the Docker-link style `KUBERNETES_PORT*`, whose names
/// carry the Service's port), so no client finds the real address in any of them.
pub fn service_overrides(service_port: u16) -> Vec<(String, String)> {
    let url = format!("tcp://{LISTEN_HOST}:{LISTEN_PORT}");
    let link = format!("KUBERNETES_PORT_{service_port}_TCP");
    [
        ("KUBERNETES_SERVICE_HOST".to_owned(), LISTEN_HOST.to_owned()),
        (
            "KUBERNETES_SERVICE_PORT".to_owned(),
            LISTEN_PORT.to_string(),
        ),
        (
            "KUBERNETES_SERVICE_PORT_HTTPS".to_owned(),
            LISTEN_PORT.to_string(),
        ),
        ("KUBERNETES_PORT".to_owned(), url.clone()),
        (link.clone(), url),
        (format!("{link}_PROTO"), "tcp".to_owned()),
        (format!("{link}_PORT"), LISTEN_PORT.to_string()),
        (format!("{link}_ADDR"), LISTEN_HOST.to_owned()),
    ]
    .into()
}

/// The variable pointing clients at the fake kubeconfig (a context per cluster).
pub fn kubeconfig_var() -> EnvVar {
    var("KUBECONFIG", &format!("{FAKE_DIR}/kubeconfig"))
}

/// A variable with a plain value.
pub fn var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// MCA's container.
pub fn container(settings: &Settings) -> Container {
    let mode = match settings.mode {
        Mode::Auto => "auto",
        Mode::Ebpf => "ebpf",
        Mode::Env => "env",
    };
    let mut args = vec![
        format!("--intercept={mode}"),
        format!("--fake-sa-dir={FAKE_DIR}/serviceaccount"),
        format!("--state-dir={STATE_DIR}"),
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
        VolumeMount {
            name: STATE_VOLUME.to_owned(),
            mount_path: STATE_DIR.to_owned(),
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
        // Whoever may write the Secret must not gain MCA's process (exec) or its files.
        args.push("--config-restricted".to_owned());
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
///
/// Env mode meets PodSecurity `restricted`, which also asks for a seccomp profile: the
/// runtime's default. eBPF mode sets none, since runtimes' default profiles differ in whether
/// they let `bpf(2)` through; it is admitted only where `privileged` is enforced anyway.
fn security_context(mode: Mode) -> SecurityContext {
    let ebpf = mode != Mode::Env;
    SecurityContext {
        seccomp_profile: (!ebpf).then(|| SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
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

/// The mode of the files of MCA's credential volumes: `0400` where MCA runs as root (the
/// kubelet writes them as root), so nothing but MCA's user reads them. In env mode MCA runs
/// as 65532 and the kubelet still writes root's files (it gives them to the container's user
/// only when every container of the pod runs as that user), so they keep the kubelet's
/// default (`0644`): MCA must read them, no other container mounts them, and the way in from
/// another process, `/proc/PID/root`, is closed by MCA's being non-dumpable.
fn secret_file_mode(mode: Mode) -> Option<i32> {
    (mode != Mode::Env).then_some(0o400)
}

/// The real ServiceAccount, as the kubelet would have mounted it, for MCA alone.
fn real_service_account(expiration_seconds: i64, default_mode: Option<i32>) -> Volume {
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
            default_mode,
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks of the Pod Security Standards `restricted` profile that apply to what MCA
    /// adds (container fields and volume types), as the API server's PodSecurity admission
    /// makes them; the names of the failed ones.
    fn restricted_violations(container: &Container, volumes: &[Volume]) -> Vec<&'static str> {
        let context = container.security_context.clone().unwrap_or_default();
        let capabilities = context.capabilities.clone().unwrap_or_default();
        let mut failed = Vec::new();
        if context.allow_privilege_escalation != Some(false) {
            failed.push("allowPrivilegeEscalation != false");
        }
        if context.run_as_non_root != Some(true) || context.run_as_user == Some(0) {
            failed.push("runAsNonRoot != true");
        }
        if !capabilities.drop.iter().flatten().any(|c| c == "ALL") {
            failed.push("capabilities.drop lacks ALL");
        }
        if capabilities
            .add
            .iter()
            .flatten()
            .any(|c| c != "NET_BIND_SERVICE")
        {
            failed.push("capabilities.add beyond NET_BIND_SERVICE");
        }
        let seccomp = context.seccomp_profile.as_ref().map(|p| p.type_.as_str());
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            failed.push("seccompProfile");
        }
        if context.privileged == Some(true) {
            failed.push("privileged");
        }
        let allowed_volume = |v: &Volume| {
            v.empty_dir.is_some()
                || v.projected.is_some()
                || v.secret.is_some()
                || v.config_map.is_some()
                || v.downward_api.is_some()
        };
        if !volumes.iter().all(allowed_volume) {
            failed.push("volume types (hostPath)");
        }
        failed
    }

    fn settings(mode: Mode) -> Settings {
        Settings {
            image: "mca:test".to_owned(),
            mode,
            config_secret: Some("routes".to_owned()),
            token_expiration_seconds: 3607,
            service_port: 443,
        }
    }

    #[test]
    fn the_routing_configuration_is_read_with_the_restricted_schema() {
        let args = container(&settings(Mode::Env)).args.unwrap();
        assert!(args.contains(&"--config-restricted".to_owned()), "{args:?}");
    }

    #[test]
    fn credential_files_are_mca_users_alone_where_mca_runs_as_root() {
        for (mode, file_mode) in [
            (Mode::Auto, Some(0o400)),
            (Mode::Ebpf, Some(0o400)),
            (Mode::Env, None),
        ] {
            let volumes = volumes(&settings(mode));
            let of = |name| volumes.iter().find(|v| v.name == name).unwrap();
            let projected = of(REAL_SA_VOLUME).projected.as_ref().unwrap();
            assert_eq!(projected.default_mode, file_mode, "{mode:?}");
            let secret = of(CONFIG_VOLUME).secret.as_ref().unwrap();
            assert_eq!(secret.default_mode, file_mode, "{mode:?}");
        }
    }

    #[test]
    fn the_env_mode_sidecar_meets_pod_security_restricted() {
        let env = settings(Mode::Env);
        assert_eq!(
            restricted_violations(&container(&env), &volumes(&env)),
            Vec::<&str>::new()
        );
        // eBPF needs what baseline already forbids: that is why such namespaces get env mode
        // (see `pod_security`).
        let ebpf = settings(Mode::Ebpf);
        let failed = restricted_violations(&container(&ebpf), &volumes(&ebpf));
        assert!(
            failed.contains(&"capabilities.add beyond NET_BIND_SERVICE"),
            "{failed:?}"
        );
        assert!(failed.contains(&"volume types (hostPath)"), "{failed:?}");
    }
}
