//! Unmodified in-cluster clients (kubectl, the Python `kubernetes` client, kube-rs) in the pod
//! sandbox, served through MCA; against the test API server, or a real cluster when
//! `MCA_E2E_KUBECONFIG` is set.

use mca_tests::harness::{Env, NAMESPACE, REAL_TOKEN};

/// The server saw MCA's token on every request, never the app's.
fn assert_only_real_token(env: &Env) {
    let Some(server) = &env.apiserver else { return };
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
fn kubectl_get_create_and_logs() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let out = env.kubectl(&["get", "pods", "-o", "name"])?;
    assert!(out.contains("pod/web"), "{out}");
    let out = env.kubectl(&["get", "pods"])?;
    assert!(out.contains("NAME") && out.contains("web"), "{out}");

    let manifest = env.pod.dir().join("pod.json");
    std::fs::write(
        &manifest,
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"made-by-kubectl"},
            "spec":{"containers":[{"name":"app","image":"busybox"}]}}"#,
    )?;
    let out = env.kubectl(&[
        "create",
        "--validate=false",
        "-f",
        manifest.to_str().unwrap(),
    ])?;
    assert!(out.contains("pod/made-by-kubectl created"), "{out}");
    let out = env.kubectl(&[
        "get",
        "pod",
        "made-by-kubectl",
        "-o",
        "jsonpath={.metadata.namespace}",
    ])?;
    assert_eq!(out, NAMESPACE);
    let out = env.kubectl(&["logs", "web"])?;
    assert_eq!(out, "log line 1\nlog line 2\n");

    assert_only_real_token(&env);
    if let Some(server) = &env.apiserver {
        // kubectl sent the placeholder token to MCA; the server never saw it. kubectl's
        // Table request and gzip acceptance passed through unchanged.
        let table = server
            .requests()
            .into_iter()
            .find(|r| r.header("accept").is_some_and(|a| a.contains("as=Table")))
            .expect("kubectl get asked for a Table");
        assert!(
            table
                .target
                .starts_with(&format!("/api/v1/namespaces/{NAMESPACE}/pods?")),
            "{table:?}"
        );
        assert_eq!(table.header("accept-encoding"), Some("gzip"));
    }
    let line = env
        .mca
        .wait_for_access(|l| l["verb"] == "create" && l["resource"] == "pods")?;
    assert_eq!(line["namespace"], NAMESPACE);
    assert_eq!(line["status"], 201);
    assert_eq!(line["stripped"], "authorization");
    Ok(())
}

#[test]
fn python_client_list_get_create_watch() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let out = env.python(&["list", NAMESPACE])?;
    assert!(out.lines().any(|l| l == "web"), "{out}");
    let out = env.python(&["get", NAMESPACE, "web"])?;
    assert_eq!(out.trim(), "web Running");
    let out = env.python(&["create", NAMESPACE, "made-by-python"])?;
    assert!(out.starts_with("made-by-python "), "{out}");
    let out = env.python(&["watch", NAMESPACE, "2"])?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ADDED made-by-python", "ADDED web"]
    );
    let out = env.python(&["--impersonate", "list", NAMESPACE])?;
    assert!(out.contains("web"), "{out}");
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
fn kube_rs_client_list_get_create_watch() -> anyhow::Result<()> {
    let env = Env::start(&[])?;
    let client = env!("CARGO_BIN_EXE_mca-kube-client");
    let run = |args: &[&str]| {
        mca_tests::harness::succeed(env.app_output(client, args)?, "mca-kube-client", args)
    };
    assert!(run(&["list", NAMESPACE])?.lines().any(|l| l == "web"));
    assert_eq!(run(&["get", NAMESPACE, "web"])?.trim(), "web Running");
    assert!(run(&["create", NAMESPACE, "made-by-kube-rs"])?.starts_with("made-by-kube-rs "));
    let out = run(&["watch", NAMESPACE, "2"])?;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["ADDED made-by-kube-rs", "ADDED web"]
    );
    assert_only_real_token(&env);
    Ok(())
}
