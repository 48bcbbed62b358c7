//! The Helm chart (`deploy/helm/mca`), checked as CI can without a cluster: `helm lint` is
//! clean, and every object `helm template` renders (CRDs included, with the default values
//! and with routing and eBPF mode on) parses as its Kubernetes type with no field left over,
//! so a typo in a template cannot hide. Then what the objects say is checked where it
//! matters: the webhook entries, the operator's RBAC, the images and arguments.
//!
//! The chart linted (`--strict`) and every rendered object parsed as its type with no unknown
//! field; webhook settings and RBAC checked.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration,
        apps::v1::Deployment,
        core::v1::{ConfigMap, Service, ServiceAccount},
        networking::v1::NetworkPolicy,
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::LabelSelector,
    serde::{Serialize, de::DeserializeOwned},
};
use mca_tests::{
    harness::workspace_root,
    helm::{helm, render, render_with},
};
use serde_json::Value;

/// Parses `value` as `T` and back: equal only if every field is one `T` knows.
fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> anyhow::Result<T> {
    let parsed: T = serde_json::from_value(value.clone())?;
    let back = serde_json::to_value(&parsed)?;
    anyhow::ensure!(
        &back == value,
        "{} {}: fields its type does not know:\nrendered: {value}\ntyped:    {back}",
        value["kind"],
        value["metadata"]["name"]
    );
    Ok(parsed)
}

fn check_types(objects: &[Value]) -> anyhow::Result<()> {
    for object in objects {
        match object["kind"].as_str().unwrap_or_default() {
            "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(object)?),
            "ServiceAccount" => drop(typed::<ServiceAccount>(object)?),
            "ConfigMap" => drop(typed::<ConfigMap>(object)?),
            "ClusterRole" => drop(typed::<ClusterRole>(object)?),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(object)?),
            "Role" => drop(typed::<Role>(object)?),
            "RoleBinding" => drop(typed::<RoleBinding>(object)?),
            "Deployment" => drop(typed::<Deployment>(object)?),
            "Service" => drop(typed::<Service>(object)?),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(object)?),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(object)?),
            "MutatingWebhookConfiguration" => {
                drop(typed::<MutatingWebhookConfiguration>(object)?);
            }
            other => anyhow::bail!("the chart renders a {other}, which this test does not know"),
        }
    }
    Ok(())
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn the_chart_lints_and_renders_objects_of_known_types_only() -> anyhow::Result<()> {
    let lint = helm(&["lint", "mca", "--strict"])?;
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let defaults = render(&[])?;
    check_types(&defaults)?;
    let kinds: Vec<&str> = defaults.iter().filter_map(|o| o["kind"].as_str()).collect();
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
    let routed = render(&["routing.enabled=true", "mode=ebpf", "image.tag=1.2.3"])?;
    check_types(&routed)?;
    let webhook = find(&routed, "Deployment", "mca-webhook");
    let args = &webhook["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--mode=ebpf"), "{args:?}");
    assert!(args.contains(&"--config-secret=mca-routes"), "{args:?}");
    assert!(args.contains(&"--image=mca:1.2.3"), "{args:?}");
    Ok(())
}

#[test]
fn the_webhook_configuration_says_what_the_readme_says() -> anyhow::Result<()> {
    let objects = render(&[])?;
    let configuration: MutatingWebhookConfiguration = typed(find(
        &objects,
        "MutatingWebhookConfiguration",
        "mca-injector",
    ))?;
    let webhooks = configuration.webhooks.unwrap();
    assert_eq!(webhooks.len(), 6, "two scopes by three PodSecurity cases");
    for webhook in &webhooks {
        assert_eq!(webhook.side_effects, "None");
        assert_eq!(webhook.admission_review_versions, ["v1"]);
        assert_eq!(webhook.timeout_seconds, Some(5));
        assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let service = webhook.client_config.service.as_ref().unwrap();
        assert_eq!(
            (service.name.as_str(), service.namespace.as_str()),
            ("mca-webhook", "mca-system")
        );
        let excluded = webhook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        let names = excluded
            .iter()
            .find(|e| e.key == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(names.operator, "NotIn");
        assert!(
            names
                .values
                .as_ref()
                .unwrap()
                .contains(&"kube-system".to_owned())
        );
        assert!(
            names
                .values
                .as_ref()
                .unwrap()
                .contains(&"mca-system".to_owned())
        );
    }
    // Every namespace is sent to exactly one entry, whose path names its scope and the
    // PodSecurity level the webhook must inject for (the API server enforces an unknown
    // level as restricted).
    let cases = [
        (
            Some("enabled"),
            None,
            "/inject/namespace/privileged",
            "Fail",
        ),
        (
            Some("enabled"),
            Some("privileged"),
            "/inject/namespace/privileged",
            "Fail",
        ),
        (
            Some("enabled"),
            Some("baseline"),
            "/inject/namespace/restricted",
            "Fail",
        ),
        (
            Some("enabled"),
            Some("restricted"),
            "/inject/namespace/restricted",
            "Fail",
        ),
        (
            Some("enabled"),
            Some("Baseline"),
            "/inject/namespace/restricted",
            "Fail",
        ),
        (None, None, "/inject/annotated/privileged", "Fail"),
        (
            None,
            Some("baseline"),
            "/inject/annotated/restricted",
            "Fail",
        ),
        (
            None,
            Some("restricted"),
            "/inject/annotated/restricted",
            "Fail",
        ),
    ];
    for (inject, enforce, path, policy) in cases {
        let mut labels =
            BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), "shop".to_owned())]);
        labels.extend(inject.map(|v| ("mca.io/inject".to_owned(), v.to_owned())));
        labels.extend(enforce.map(|v| {
            (
                "pod-security.kubernetes.io/enforce".to_owned(),
                v.to_owned(),
            )
        }));
        let matching: Vec<_> = webhooks
            .iter()
            .filter(|w| selects(w.namespace_selector.as_ref().unwrap(), &labels))
            .collect();
        assert_eq!(matching.len(), 1, "{labels:?}");
        let service = matching[0].client_config.service.as_ref().unwrap();
        assert_eq!(service.path.as_deref(), Some(path), "{labels:?}");
        assert_eq!(matching[0].failure_policy.as_deref(), Some(policy));
        // Failing closed everywhere is safe only because the annotated scope is sent the
        // pods that asked for MCA alone.
        let conditions = matching[0].match_conditions.as_deref().unwrap_or_default();
        if path.contains("annotated") {
            assert_eq!(conditions.len(), 1, "{labels:?}");
            assert!(
                conditions[0]
                    .expression
                    .contains("object.metadata.annotations['mca.io/inject'] == 'enabled'")
            );
        } else {
            assert!(conditions.is_empty(), "{labels:?}");
        }
    }
    let opted_out = BTreeMap::from([("mca.io/inject".to_owned(), "disabled".to_owned())]);
    assert!(
        !webhooks
            .iter()
            .any(|w| selects(w.namespace_selector.as_ref().unwrap(), &opted_out))
    );
    Ok(())
}

/// Whether a label selector (its `matchExpressions`, all the chart uses) selects `labels`.
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(selector.match_labels.is_none());
    selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("operator {other}"),
        }
    })
}

#[test]
fn the_operator_may_do_what_it_needs_and_the_webhook_nothing() -> anyhow::Result<()> {
    let objects = render(&[])?;
    let role: ClusterRole = typed(find(&objects, "ClusterRole", "mca-operator"))?;
    let rules = role.rules.unwrap();
    let allowed = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            r.api_groups.iter().flatten().any(|g| g == group)
                && r.resources.iter().flatten().any(|x| x == resource)
                && r.verbs.iter().any(|v| v == verb)
        })
    };
    assert!(allowed("mca.io", "clusters", "watch"));
    assert!(allowed("mca.io", "routes/status", "patch"));
    assert!(allowed("", "secrets", "get"));
    assert!(!allowed("", "secrets", "list"), "no listing every Secret");
    assert!(!allowed("", "secrets", "watch"));
    // Secrets are written by name only: the namespaces' configuration and the webhook's.
    for rule in rules.iter().filter(|r| {
        r.resources.iter().flatten().any(|x| x == "secrets") && r.verbs.iter().any(|v| v != "get")
    }) {
        let mut names = rule.resource_names.clone().unwrap_or_default();
        names.sort();
        assert_eq!(
            names,
            ["mca-routes", "mca-webhook-tls", "mca-webhook-tls-ca"],
            "{rule:?}"
        );
    }
    assert!(allowed("", "secrets", "patch"));
    assert!(!allowed(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "update"
    ));
    assert!(
        !rules.iter().any(|r| r.verbs.iter().any(|v| v == "*")),
        "no wildcards"
    );
    let webhooks = rules
        .iter()
        .find(|r| {
            r.resources
                .iter()
                .flatten()
                .any(|x| x == "mutatingwebhookconfigurations")
        })
        .unwrap();
    assert_eq!(
        webhooks.resource_names.as_deref(),
        Some(&["mca-injector".to_owned()][..])
    );
    let account: ServiceAccount = typed(find(&objects, "ServiceAccount", "mca-webhook"))?;
    assert_eq!(account.automount_service_account_token, Some(false));
    let bound: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("RoleBinding"))
        })
        .flat_map(|o| o["subjects"].as_array().unwrap())
        .collect();
    assert!(
        bound.iter().all(|s| s["name"] == "mca-operator"),
        "{bound:?}"
    );
    Ok(())
}

#[test]
fn watching_credential_secrets_is_opted_into_with_its_list_and_watch() -> anyhow::Result<()> {
    let secret_verbs = |objects: &[Value]| -> anyhow::Result<Vec<String>> {
        let role: ClusterRole = typed(find(objects, "ClusterRole", "mca-operator"))?;
        let mut verbs: Vec<String> = role
            .rules
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.resources.iter().flatten().any(|x| x == "secrets"))
            .filter(|r| r.resource_names.is_none())
            .flat_map(|r| r.verbs)
            .collect();
        verbs.sort();
        Ok(verbs)
    };
    let args = |objects: &[Value]| {
        find(objects, "Deployment", "mca-operator")["spec"]["template"]
        ["spec"]["containers"][0]["args"]
        .to_string()
    };
    let default = render(&[])?;
    assert_eq!(secret_verbs(&default)?, ["get"]);
    assert!(!args(&default).contains("--watch-credential-secrets"));
    let watching = render(&["operator.watchCredentialSecrets=true"])?;
    assert_eq!(secret_verbs(&watching)?, ["get", "list", "watch"]);
    assert!(args(&watching).contains("\"--watch-credential-secrets\""));
    Ok(())
}

#[test]
fn other_pods_reach_the_webhook_port_alone_and_the_operator_not_at_all() -> anyhow::Result<()> {
    let objects = render(&[])?;
    let webhook: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "mca-webhook"))?;
    let spec = webhook.spec.unwrap();
    let labels = spec.pod_selector.unwrap().match_labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/component"], "webhook");
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let ports = serde_json::to_value(&ingress[0].ports)?;
    assert_eq!(
        ports,
        serde_json::json!([{"port": "https", "protocol": "TCP"}])
    );
    assert!(ingress[0].from.is_none(), "from anywhere by default");
    // The port is the webhook container's.
    let deployment: Deployment = typed(find(&objects, "Deployment", "mca-webhook"))?;
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        container.ports.as_ref().unwrap()[0].name.as_deref(),
        Some("https")
    );
    let operator: NetworkPolicy = typed(find(&objects, "NetworkPolicy", "mca-operator"))?;
    let spec = operator.spec.unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned()][..])
    );
    assert!(spec.ingress.unwrap_or_default().is_empty());

    let restricted = render(&["networkPolicy.webhookFrom[0].ipBlock.cidr=10.0.0.0/24"])?;
    let webhook: NetworkPolicy = typed(find(&restricted, "NetworkPolicy", "mca-webhook"))?;
    let from = serde_json::to_value(&webhook.spec.unwrap().ingress.unwrap()[0].from)?;
    assert_eq!(
        from,
        serde_json::json!([{"ipBlock": {"cidr": "10.0.0.0/24"}}])
    );
    let off = render(&["networkPolicy.enabled=false"])?;
    assert!(!off.iter().any(|o| o["kind"] == "NetworkPolicy"));
    Ok(())
}

#[test]
fn the_deploy_examples_are_objects_of_known_types_only() -> anyhow::Result<()> {
    for example in ["sidecar-pod.yaml", "kind-demo.yaml"] {
        let path = workspace_root().join("deploy/examples").join(example);
        let documents: Vec<Value> =
            serde_saphyr::from_str_multiple(&std::fs::read_to_string(&path)?)?;
        for document in documents.iter().filter(|d| !d.is_null()) {
            match document["kind"].as_str().unwrap_or_default() {
                "Pod" => drop(typed::<k8s_openapi::api::core::v1::Pod>(document)?),
                "Namespace" => drop(typed::<k8s_openapi::api::core::v1::Namespace>(document)?),
                other => check_types(std::slice::from_ref(document))
                    .map_err(|error| anyhow::anyhow!("{example}: {other}: {error}"))?,
            }
        }
    }
    Ok(())
}

#[test]
fn the_inventory_is_read_in_its_namespaces_alone_with_the_provider_file_mounted()
-> anyhow::Result<()> {
    let providers = r#"operator.clusterProfiles.providers=[{"name":"token-reader","execConfig":{"apiVersion":"client.authentication.k8s.io/v1","command":"/plugins/token-reader","provideClusterInfo":true}}]"#;
    let objects = render_with(
        &[
            "operator.clusterProfiles.namespaces={fleet,open-cluster-management-addon}",
            "operator.clusterProfiles.consumers={shop,team-*}",
        ],
        &[
            providers,
            r#"operator.clusterProfiles.volumes=[{"name":"plugins","emptyDir":{}}]"#,
            r#"operator.clusterProfiles.volumeMounts=[{"name":"plugins","mountPath":"/plugins"}]"#,
        ],
    )?;
    check_types(&objects)?;
    let roles: Vec<Role> = objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "mca-operator-inventory")
        .map(typed)
        .collect::<anyhow::Result<_>>()?;
    let namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r.metadata.namespace.as_deref().unwrap())
        .collect();
    assert_eq!(namespaces, ["fleet", "open-cluster-management-addon"]);
    let rules = serde_json::to_value(&roles[0].rules)?;
    assert_eq!(
        rules,
        serde_json::json!([
            {"apiGroups": ["multicluster.x-k8s.io"], "resources": ["clusterprofiles"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ])
    );
    let bindings = objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == "mca-operator-inventory")
        .map(typed::<RoleBinding>)
        .collect::<anyhow::Result<Vec<_>>>()?;
    assert_eq!(bindings.len(), 2);
    let deployment: Deployment = typed(find(&objects, "Deployment", "mca-operator"))?;
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let container = &pod.containers[0];
    let args = container.args.clone().unwrap();
    for wanted in [
        "--clusterprofile-namespace=fleet",
        "--clusterprofile-namespace=open-cluster-management-addon",
        "--clusterprofile-consumers=shop",
        "--clusterprofile-consumers=team-*",
        "--clusterprofile-provider-file=/etc/mca-inventory/providers.json",
    ] {
        assert!(args.iter().any(|a| a == wanted), "{wanted} in {args:?}");
    }
    let mounts: Vec<&str> = container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/etc/mca-inventory", "/plugins"]);
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["inventory-providers", "plugins"]);
    // The provider file is one the operator reads.
    let file = find(&objects, "ConfigMap", "mca-inventory-providers")["data"]["providers.json"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed =
        mca::operator::inventory::provider::Providers::parse(&file).map_err(anyhow::Error::msg)?;
    assert_eq!(
        parsed.providers[0].exec_config.command,
        "/plugins/token-reader"
    );

    // Off by default: no Role, flag, volume or ConfigMap.
    let default = render(&[])?;
    assert!(
        default
            .iter()
            .all(|o| o["metadata"]["name"] != "mca-operator-inventory"
                && o["metadata"]["name"] != "mca-inventory-providers")
    );
    let deployment = find(&default, "Deployment", "mca-operator");
    assert!(!deployment.to_string().contains("clusterprofile"));
    assert!(deployment["spec"]["template"]["spec"]["volumes"].is_null());
    Ok(())
}
