//! Unmodified in-cluster clients (kubectl, the Python `kubernetes` client, kube-rs) in the pod
//! sandbox, served through MCA: against the test API server, or against a real cluster when
//! `MCA_E2E_KUBECONFIG` is set (then in `MCA_E2E_NAMESPACE`, default `default`).
//!
//! Kubectl, the Python `kubernetes` client and a kube-rs client with in-cluster config: get, list,
//! create, watch, logs.

use mca_tests::harness::{Env, REAL_TOKEN, succeed};

/// Against the test API server: it saw MCA's token on every request, never the app's, and no
/// `Impersonate-*` header.
fn assert_only_real_token(env: &Env) {
    let Some(server) = &env.apiserver else {
        return;
    };
    let requests = server.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {REAL_TOKEN}").as_str()),
            "{} {}",
            request.method,
            request.target
        );
        assert!(!request.has_header_prefix("impersonate-"), "{request:?}");
    }
}

#[test]
fn kubectl_create_get_list_logs_delete() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let (ns, name) = (env.namespace(), env.unique_name("kubectl"));
    let manifest = env.pod.dir().join("pod.json");
    std::fs::write(
        &manifest,
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},
                "spec":{{"containers":[{{"name":"app","image":"busybox","command":["sleep","600"]}}]}}}}"#
        ),
    )?;
    let out = env.kubectl(&[
        "create",
        "-n",
        &ns,
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ])?;
    assert!(out.contains(&format!("pod/{name} created")), "{out}");
    let out = env.kubectl(&["get", "pods", "-n", &ns, "-o", "name"])?;
    assert!(out.lines().any(|l| l == format!("pod/{name}")), "{out}");
    let out = env.kubectl(&["get", "pods", "-n", &ns])?;
    assert!(out.starts_with("NAME") && out.contains(&name), "{out}");
    let out = env.kubectl(&[
        "get",
        "pod",
        &name,
        "-n",
        &ns,
        "-o",
        "jsonpath={.metadata.namespace}",
    ])?;
    assert_eq!(out, ns);

    if let Some(server) = &env.apiserver {
        // `logs` needs a running container: the test server's pods always run.
        let out = env.kubectl(&["logs", &name])?;
        assert_eq!(out, "log line 1\nlog line 2\n");
        // kubectl's Table request and its gzip acceptance passed through unchanged.
        let table = server
            .requests()
            .into_iter()
            .find(|r| r.header("accept").is_some_and(|a| a.contains("as=Table")))
            .expect("kubectl get asked for a Table");
        assert!(
            table
                .target
                .starts_with(&format!("/api/v1/namespaces/{ns}/pods?")),
            "{table:?}"
        );
        assert_eq!(table.header("accept-encoding"), Some("gzip"));
    }
    let out = env.kubectl(&["delete", "pod", &name, "-n", &ns, "--wait=false"])?;
    assert!(out.contains("deleted"), "{out}");

    assert_only_real_token(&env);
    let line = env
        .mca
        .wait_for_access(|l| l["verb"] == "create" && l["resource"] == "pods")?;
    assert_eq!(line["namespace"], ns.as_str());
    assert_eq!(line["status"], 201);
    assert_eq!(line["stripped"], "authorization");
    // Latency in whole microseconds.
    assert!(
        line["latency_us"].as_u64().is_some_and(|us| us > 0),
        "{line}"
    );
    Ok(())
}

#[test]
fn python_client_create_get_list_watch_delete() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let (ns, name) = (env.namespace(), env.unique_name("python"));
    let out = env.python(&["create", &ns, &name])?;
    assert!(out.starts_with(&format!("{name} ")), "{out}");
    let out = env.python(&["get", &ns, &name])?;
    assert!(out.starts_with(&format!("{name} ")), "{out}");
    let out = env.python(&["list", &ns])?;
    assert!(out.lines().any(|l| l == name), "{out}");
    let out = env.python(&["watch", &ns, &name])?;
    assert_eq!(out.trim(), format!("ADDED {name}"));
    // Impersonation headers the app adds never reach the server.
    let out = env.python(&["--impersonate", "list", &ns])?;
    assert!(out.lines().any(|l| l == name), "{out}");
    env.python(&["delete", &ns, &name])?;

    assert_only_real_token(&env);
    let line = env.mca.wait_for_access(|l| {
        l["stripped"]
            .as_str()
            .is_some_and(|s| s.contains("impersonate-user"))
    })?;
    assert_eq!(
        line["stripped"],
        "authorization,impersonate-user,impersonate-group"
    );
    Ok(())
}

#[test]
fn kube_rs_client_create_get_list_watch_delete() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let (ns, name) = (env.namespace(), env.unique_name("kube-rs"));
    let client = env!("CARGO_BIN_EXE_mca-kube-client");
    let run = |args: &[&str]| succeed(env.app_output(client, args)?, "mca-kube-client", args);
    assert!(run(&["create", &ns, &name])?.starts_with(&format!("{name} ")));
    assert!(run(&["get", &ns, &name])?.starts_with(&format!("{name} ")));
    assert!(run(&["list", &ns])?.lines().any(|l| l == name));
    assert_eq!(run(&["watch", &ns, &name])?.trim(), format!("ADDED {name}"));
    run(&["delete", &ns, &name])?;
    assert_only_real_token(&env);
    Ok(())
}
