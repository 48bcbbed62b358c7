//! The documents the static upstream serves and the bench posts, shaped like the API server's.

use serde_json::{Value, json};

use super::servers::NAMESPACE;

/// A running pod named `name`, about 1 KB of JSON.
pub fn pod(name: &str) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": NAMESPACE, "uid": "6c1b5a1e-3c2f-4f7e-9d9b-1f2a3b4c5d6e",
            "resourceVersion": "123456", "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "5d78c9b6f4"},
        },
        "spec": {
            "containers": [{
                "name": "app", "image": "registry.example.com/web:1.2.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "serviceAccountName": "default",
            "nodeName": "node-1", "schedulerName": "default-scheduler",
        },
        "status": {
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.10",
            "startTime": "2026-01-01T00:00:01Z", "qosClass": "Burstable",
            "conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": "2026-01-01T00:00:05Z"}],
        },
    })
}

/// A ConfigMap named `name` whose data holds about `bytes` bytes.
pub fn config_map(name: &str, bytes: usize) -> Value {
    json!({
        "kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "1000",
                     "uid": "0b8f6c1e-0000-4000-8000-000000000000",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"config.yaml": "x".repeat(bytes)},
    })
}

/// A list of `items` ConfigMaps of about 1 KB each (~550 KB for 500).
pub fn config_map_list(items: usize) -> Value {
    let items: Vec<Value> = (0..items)
        .map(|i| config_map(&format!("config-{i}"), 800))
        .collect();
    json!({"kind": "ConfigMapList", "apiVersion": "v1",
           "metadata": {"resourceVersion": "123456"}, "items": items})
}
