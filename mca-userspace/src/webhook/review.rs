//! One admission review: read the `AdmissionReview` the API server sent, decide, and answer
//! with a JSONPatch that injects MCA ([`crate::inject::pod`]).
//!
//! The webhook configuration sends two kinds of pod: those of namespaces labelled
//! `mca.io/inject=enabled` (injected unless the pod says `mca.io/inject: disabled`) and those
//! of other namespaces (injected only if the pod says `mca.io/inject: enabled`); the path
//! tells which ([`Scope`]), so the webhook never needs to read the namespace itself. A pod
//! MCA cannot be injected into safely is admitted as it is, with a warning the client prints
//! and an audit annotation; only an invalid pod and one whose processes would see MCA's
//! (where neither answer keeps the credentials from the application) are denied. The webhook has no side effects, so dry-run
//! requests are answered exactly like others.

use kube::core::{
    DynamicObject,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde::Deserialize as _;
use serde_json::Value;

use crate::inject::{
    Outcome, Refusal, Settings,
    pod::{self, INJECT},
    pod_security::{self, Level},
};

/// Which pods a request path is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Pods of an opted-in namespace: injected unless they opt out.
    Namespace,
    /// Pods of other namespaces: injected only if they opt in.
    Annotated,
}

/// Why a review could not be read: answered `400`, which the API server treats as a webhook
/// failure (and applies the configuration's `failurePolicy`).
#[derive(Debug, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview with a request: {0}")]
pub struct Malformed(String);

/// The scope and PodSecurity level a request path names: `/inject/<scope>[/<level>]`; without
/// a level (configurations written before levels were told apart), `privileged`.
pub fn route(path: &str) -> Option<(Scope, Level)> {
    let mut parts = path.strip_prefix("/inject/")?.split('/');
    let scope = match parts.next()? {
        "namespace" => Scope::Namespace,
        "annotated" => Scope::Annotated,
        _ => return None,
    };
    let level = match parts.next() {
        None | Some("privileged") => Level::Privileged,
        Some("baseline") => Level::Baseline,
        Some("restricted") => Level::Restricted,
        Some(_) => return None,
    };
    parts.next().is_none().then_some((scope, level))
}

/// The answer to the review `body`, for pods of `scope` in a namespace enforcing `level`.
pub fn answer(
    body: &[u8],
    scope: Scope,
    level: Level,
    settings: &Settings,
) -> Result<Value, Malformed> {
    // Parsed once; the typed review is read from that, and the patch is computed against the
    // object exactly as the API server sent it (a typed round trip could add or drop fields
    // the patch's paths then miss).
    let raw: Value = serde_json::from_slice(body).map_err(|e| Malformed(e.to_string()))?;
    let review = AdmissionReview::<DynamicObject>::deserialize(&raw)
        .map_err(|e| Malformed(e.to_string()))?;
    // The answer echoes the review's type: only the one version this webhook is registered
    // for (`admissionReviewVersions: [v1]`) is answered.
    let types = &review.types;
    if (types.api_version.as_str(), types.kind.as_str())
        != ("admission.k8s.io/v1", "AdmissionReview")
    {
        return Err(Malformed(format!(
            "apiVersion {:?}, kind {:?}",
            types.api_version, types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|e| Malformed(format!("{e}")))?;
    let object = raw.pointer("/request/object").filter(|o| o.is_object());
    let (settings, adjusted) = pod_security::admitted(settings, level);
    let mut response = decide(&request, object, scope, &settings);
    if let (Some(warning), Some(_)) = (adjusted, &response.patch) {
        response.warnings.get_or_insert_with(Vec::new).push(warning);
    }
    Ok(serde_json::to_value(response.into_review()).expect("a review serializes"))
}

fn decide(
    request: &AdmissionRequest<DynamicObject>,
    object: Option<&Value>,
    scope: Scope,
    settings: &Settings,
) -> AdmissionResponse {
    let admitted = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let (true, Operation::Create, Some(original)) = (is_pod, &request.operation, object) else {
        return admitted;
    };
    let mut meta = original.get("metadata").cloned().unwrap_or(Value::Null);
    let wanted = meta
        .get("annotations")
        .and_then(|a| a.get(INJECT))
        .and_then(Value::as_str);
    let inject = match scope {
        Scope::Namespace => wanted != Some("disabled"),
        Scope::Annotated => wanted == Some("enabled"),
    };
    if !inject {
        return admitted;
    }
    let mut spec = original.get("spec").cloned().unwrap_or(Value::Null);
    let name = ["name", "generateName"]
        .iter()
        .find_map(|key| meta.get(key)?.as_str())
        .unwrap_or_default()
        .to_owned();
    match pod::inject(&mut meta, &mut spec, settings) {
        Ok(Outcome::Injected) => {}
        Ok(Outcome::AlreadyInjected | Outcome::OptedOut) => return admitted,
        Err(Refusal::Invalid { what, reason }) => {
            return admitted.deny(format!("the pod's {what} is not valid: {reason}"));
        }
        // Admitted without MCA, the pod would mount the real token into the application;
        // admitted with it, the application could read MCA's. The pod asked for neither.
        Err(refusal @ Refusal::SharedProcesses { .. }) => {
            tracing::warn!(namespace = %request.namespace.as_deref().unwrap_or_default(), pod = %name, %refusal, "denied");
            return admitted.deny(format!("MCA cannot be injected: {refusal}"));
        }
        Err(refusal) => {
            tracing::warn!(namespace = %request.namespace.as_deref().unwrap_or_default(), pod = %name, %refusal, "admitted without MCA");
            let mut response = admitted;
            response.warnings = Some(vec![format!("MCA was not injected: {refusal}")]);
            response
                .audit_annotations
                .insert("not-injected".to_owned(), refusal.to_string());
            return response;
        }
    }
    let mut injected = original.clone();
    injected["metadata"] = meta;
    injected["spec"] = spec;
    let patch = json_patch::diff(original, &injected);
    tracing::info!(namespace = %request.namespace.as_deref().unwrap_or_default(), pod = %name, dry_run = request.dry_run, "injected MCA");
    match admitted.with_patch(patch) {
        Ok(response) => response,
        Err(error) => AdmissionResponse::from(request).deny(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            Container, Pod, PodSpec, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
            VolumeMount, VolumeProjection,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use serde_json::json;

    use super::*;
    use crate::{
        inject::{pod::ALLOW_SHARED_PROCESSES, sidecar::SA_PATH},
        intercept::Mode,
    };

    fn settings() -> Settings {
        Settings {
            image: "mca:test".to_owned(),
            mode: Mode::Auto,
            config_secret: None,
            token_expiration_seconds: 3607,
            service_port: 443,
        }
    }

    /// A pod as the API server hands it to mutating webhooks: the ServiceAccount admission
    /// plugin has already added its token volume and mounts.
    fn pod(annotations: &[(&str, &str)]) -> Pod {
        let token = Volume {
            name: "kube-api-access-x7k2p".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".to_owned(),
                        expiration_seconds: Some(3607),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        Pod {
            metadata: ObjectMeta {
                generate_name: Some("web-7d4b9-".to_owned()),
                namespace: Some("shop".to_owned()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    image: Some("registry.example/web:1".to_owned()),
                    volume_mounts: Some(vec![VolumeMount {
                        name: token.name.clone(),
                        mount_path: SA_PATH.to_owned(),
                        read_only: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                volumes: Some(vec![token]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn review(pod: &Pod, operation: &str, dry_run: bool) -> Vec<u8> {
        review_of(serde_json::to_value(pod).unwrap(), operation, dry_run)
    }

    fn review_of(object: Value, operation: &str, dry_run: bool) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object,
                "oldObject": null,
                "dryRun": dry_run,
            }
        })
        .to_string()
        .into_bytes()
    }

    /// The response, and the pod with its patch applied (if any).
    fn admit(pod: &Pod, scope: Scope) -> (Value, Option<Pod>) {
        let answer = answer(
            &review(pod, "CREATE", false),
            scope,
            Level::Privileged,
            &settings(),
        )
        .unwrap();
        let response = answer["response"].clone();
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        let patched = response.get("patch").map(|patch| {
            assert_eq!(response["patchType"], "JSONPatch");
            let bytes: Vec<u8> = serde_json::from_value(patch.clone()).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut object = serde_json::to_value(pod).unwrap();
            json_patch::patch(&mut object, &patch).unwrap();
            serde_json::from_value(object).unwrap()
        });
        (response, patched)
    }

    #[test]
    fn a_pod_of_an_opted_in_namespace_gets_mca_and_loses_the_automounted_token() {
        let (_, patched) = admit(&pod(&[]), Scope::Namespace);
        let pod = patched.expect("a patch");
        let annotations = pod.metadata.annotations.unwrap();
        assert_eq!(annotations["mca.io/injected"], env!("CARGO_PKG_VERSION"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let init = spec.init_containers.unwrap();
        assert_eq!(init[0].name, "mca");
        assert_eq!(init[0].image.as_deref(), Some("mca:test"));
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
        let probe = init[0]
            .startup_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/readyz"));
        let volumes: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(
            volumes,
            ["mca-real-sa", "mca-fake", "mca-state", "mca-host-cgroup"]
        );
        let app = &spec.containers[0];
        let mounts: Vec<_> = app
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [("mca-fake", SA_PATH), ("mca-fake", "/var/run/mca")]
        );
        let env: Vec<_> = app
            .env
            .iter()
            .flatten()
            .map(|v| (v.name.as_str(), v.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            env,
            [
                ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
                ("KUBERNETES_SERVICE_PORT", "6443"),
                ("KUBERNETES_SERVICE_PORT_HTTPS", "6443"),
                // The service-link variables the kubelet also sets point at MCA too.
                ("KUBERNETES_PORT", "tcp://127.0.0.1:6443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://127.0.0.1:6443"),
                ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                ("KUBERNETES_PORT_443_TCP_PORT", "6443"),
                ("KUBERNETES_PORT_443_TCP_ADDR", "127.0.0.1"),
            ]
        );
        // The real token reaches MCA only.
        let mca_mounts: Vec<_> = init[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert!(mca_mounts.contains(&("mca-real-sa", SA_PATH)));
        // So does MCA's state (its CA key), which survives MCA's restarts.
        assert!(mca_mounts.contains(&("mca-state", "/var/run/mca-state")));
        assert!(spec.containers.iter().all(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "mca-state")
        }));
        let args = init[0].args.as_ref().unwrap();
        assert!(args.contains(&"--state-dir=/var/run/mca-state".to_owned()));
    }

    #[test]
    fn paths_name_the_scope_and_the_pod_security_level() {
        assert_eq!(
            route("/inject/namespace"),
            Some((Scope::Namespace, Level::Privileged))
        );
        assert_eq!(
            route("/inject/annotated/restricted"),
            Some((Scope::Annotated, Level::Restricted))
        );
        assert_eq!(
            route("/inject/namespace/baseline"),
            Some((Scope::Namespace, Level::Baseline))
        );
        for bad in [
            "/inject",
            "/inject/other",
            "/inject/namespace/x",
            "/inject/namespace/baseline/x",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_namespace_enforcing_baseline_or_restricted_gets_env_mode_with_a_warning() {
        for level in [Level::Baseline, Level::Restricted] {
            let body = review(&pod(&[]), "CREATE", false);
            let answer = answer(&body, Scope::Namespace, level, &settings()).unwrap();
            let response = &answer["response"];
            let warning = response["warnings"][0].as_str().unwrap();
            assert!(
                warning.contains("env mode") && warning.contains(level.name()),
                "{warning}"
            );
            let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
            let mut pod = serde_json::to_value(pod(&[])).unwrap();
            json_patch::patch(&mut pod, &patch).unwrap();
            let mca = &pod["spec"]["initContainers"][0];
            assert!(
                mca["args"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("--intercept=env"))
            );
            assert_eq!(
                mca["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert!(mca["securityContext"]["capabilities"].get("add").is_none());
            let volumes = pod["spec"]["volumes"].as_array().unwrap();
            assert!(
                volumes.iter().all(|v| v.get("hostPath").is_none()),
                "{volumes:?}"
            );
        }
        // Nothing to warn about where nothing is injected.
        let body = review(&pod(&[(INJECT, "disabled")]), "CREATE", false);
        let answer = answer(&body, Scope::Namespace, Level::Restricted, &settings()).unwrap();
        assert!(answer["response"].get("warnings").is_none());
    }

    #[test]
    fn annotations_opt_in_and_out() {
        assert!(admit(&pod(&[]), Scope::Annotated).1.is_none());
        assert!(
            admit(&pod(&[(INJECT, "enabled")]), Scope::Annotated)
                .1
                .is_some()
        );
        assert!(
            admit(&pod(&[(INJECT, "disabled")]), Scope::Namespace)
                .1
                .is_none()
        );
        // Already injected (a reinvocation): nothing more to do.
        let injected = admit(&pod(&[]), Scope::Namespace).1.unwrap();
        assert!(admit(&injected, Scope::Namespace).1.is_none());
    }

    #[test]
    fn a_reinvocation_wires_containers_another_webhook_added() {
        let mut injected = admit(&pod(&[]), Scope::Namespace).1.unwrap();
        let spec = injected.spec.as_mut().unwrap();
        spec.containers.push(Container {
            name: "log-shipper".to_owned(),
            image: Some("registry.example/shipper:1".to_owned()),
            ..Default::default()
        });
        let before = spec.containers[0].clone();
        let rewired = admit(&injected, Scope::Namespace).1.expect("a patch");
        let spec = rewired.spec.unwrap();
        assert_eq!(
            spec.containers[0], before,
            "the wired container is untouched"
        );
        let mounts: Vec<_> = spec.containers[1]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, [SA_PATH, "/var/run/mca"]);
        assert_eq!(spec.init_containers.unwrap().len(), 1, "one MCA");
    }

    #[test]
    fn dry_run_is_answered_like_any_other_request() {
        let pod = pod(&[]);
        let real = answer(
            &review(&pod, "CREATE", false),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        );
        let dry = answer(
            &review(&pod, "CREATE", true),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        );
        assert_eq!(
            real.unwrap()["response"]["patch"],
            dry.unwrap()["response"]["patch"]
        );
    }

    #[test]
    fn a_pod_that_cannot_be_injected_is_admitted_with_a_warning() {
        let mut pod = pod(&[]);
        pod.spec.as_mut().unwrap().host_network = Some(true);
        let (response, patched) = admit(&pod, Scope::Namespace);
        assert!(patched.is_none());
        let warning = response["warnings"][0].as_str().unwrap();
        assert!(warning.contains("host network"), "{warning}");
        assert!(response["auditAnnotations"]["not-injected"].is_string());
    }

    #[test]
    fn a_pod_sharing_processes_is_denied_unless_it_allows_it() {
        for field in ["shareProcessNamespace", "hostPID"] {
            let mut object = serde_json::to_value(pod(&[])).unwrap();
            object["spec"][field] = json!(true);
            let body = review_of(object.clone(), "CREATE", false);
            let denied = answer(&body, Scope::Namespace, Level::Privileged, &settings()).unwrap();
            let response = &denied["response"];
            assert_eq!(response["allowed"], false, "{field}: {response}");
            assert!(response.get("patch").is_none());
            let message = response["status"]["message"].as_str().unwrap();
            assert!(message.contains(&format!("spec.{field}")), "{message}");
            assert!(message.contains(ALLOW_SHARED_PROCESSES), "{message}");

            object["metadata"]["annotations"][ALLOW_SHARED_PROCESSES] = json!("true");
            let body = review_of(object, "CREATE", false);
            let allowed = answer(&body, Scope::Namespace, Level::Privileged, &settings()).unwrap();
            assert_eq!(allowed["response"]["allowed"], true);
            assert!(allowed["response"].get("patch").is_some(), "{field}");
        }
        // Set to false, it shares nothing.
        let mut object = serde_json::to_value(pod(&[])).unwrap();
        object["spec"]["shareProcessNamespace"] = json!(false);
        object["spec"]["hostPID"] = json!(false);
        let body = review_of(object, "CREATE", false);
        let injected = answer(&body, Scope::Namespace, Level::Privileged, &settings()).unwrap();
        assert!(injected["response"].get("patch").is_some());
    }

    #[test]
    fn other_operations_and_kinds_pass_and_malformed_reviews_are_errors() {
        let update = answer(
            &review(&pod(&[]), "UPDATE", false),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        );
        let update = update.unwrap();
        assert_eq!(update["response"]["allowed"], true);
        assert!(update["response"].get("patch").is_none());
        let mut deployment: Value =
            serde_json::from_slice(&review(&pod(&[]), "CREATE", false)).unwrap();
        deployment["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let deployment = answer(
            deployment.to_string().as_bytes(),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        );
        assert!(deployment.unwrap()["response"].get("patch").is_none());
        let mut other_version: Value =
            serde_json::from_slice(&review(&pod(&[]), "CREATE", false)).unwrap();
        other_version["apiVersion"] = json!("admission.k8s.io/v1beta1");
        let refused = answer(
            other_version.to_string().as_bytes(),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        );
        assert!(refused.unwrap_err().to_string().contains("v1beta1"));
        for bad in [
            &b"not json"[..],
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
            br#"{"request": 7}"#,
            b"",
        ] {
            assert!(answer(bad, Scope::Namespace, Level::Privileged, &settings()).is_err());
        }
    }

    /// A pod with fields of Kubernetes 1.34 to 1.36 that k8s-openapi's 1.33 types do not
    /// know, and fields of a Kubernetes yet to come.
    fn newest_pod() -> Value {
        let mut pod = serde_json::to_value(pod(&[])).unwrap();
        pod["spec"]["hostnameOverride"] = json!("web-0.example");
        pod["spec"]["containers"][0]["restartPolicy"] = json!("Never");
        pod["spec"]["containers"][0]["restartPolicyRules"] =
            json!([{"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}}]);
        pod["spec"]["containers"][0]["env"] = json!([{
            "name": "CONFIG",
            "valueFrom": {"fileKeyRef": {"volumeName": "config", "path": "app.env",
                                          "key": "CONFIG", "optional": false}}
        }]);
        pod["spec"]["volumes"].as_array_mut().unwrap().push(
            json!({"name": "identity", "projected": {"sources": [{
                "podCertificate": {"signerName": "example.com/identity",
                                   "keyType": "ED25519", "credentialBundlePath": "bundle.pem"}
            }]}}),
        );
        pod["spec"]["futureField"] = json!({"nested": [1, {"deeper": true}]});
        pod["spec"]["containers"][0]["futureContainerField"] = json!("kept");
        pod["metadata"]["futureMetadata"] = json!({"a": "b"});
        pod
    }

    #[test]
    fn injection_only_adds_fields_newer_than_the_types_survive() {
        let original = newest_pod();
        let answer = answer(
            &review_of(original.clone(), "CREATE", false),
            Scope::Namespace,
            Level::Privileged,
            &settings(),
        )
        .unwrap();
        let bytes: Vec<u8> = serde_json::from_value(answer["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        // Everything but the automounted token MCA replaces is still there.
        let mut expected = original;
        expected["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .remove(0);
        expected["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("volumeMounts");
        if let Some(lost) = crate::inject::lost::first_lost(&expected, &patched) {
            panic!("the injected pod lost {lost}:\n{patched:#}");
        }
        assert_eq!(patched["spec"]["hostnameOverride"], "web-0.example");
        assert_eq!(patched["spec"]["initContainers"][0]["name"], "mca");
    }
}
