//! eBPF interception, for real: MCA attaches its cgroup connect hooks to the pod's cgroup, and
//! unmodified clients that dial the API server's Service address are served by MCA. The pod's
//! network namespace has no route out: the Service addresses live on its loopback, where the
//! test API server stands in for the real one, so a connect that is not redirected stays in the
//! pod (and is detectable: it reaches a server the app's CA does not trust). Also as in a
//! container with a cgroup namespace of its own, where MCA finds the pod's cgroup through the
//! host's hierarchy.
//!
//! The pod gets a cgroup v2 subtree and the Service addresses `10.96.0.1` / `fd00:10:96::1` on its
//! loopback (no route out, so a connect that is not redirected stays in the pod); kubectl, the
//! Python client and curl dial the Service and are served by MCA; IPv6 and v4-mapped; getpeername;
//! exemption; original destination; fallback; no redirect after `kill -9`.

use std::{path::Path, process::Command};

use mca_tests::{
    apiserver::{API_ENDPOINT_IP, API_ENDPOINT_PORT, ApiServer, Options},
    harness::{Env, Mca, NAMESPACE, REAL_TOKEN, sidecar},
    sandbox::{Pod, SERVICE_V4, SERVICE_V6},
};

const APP_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The pod's `/interception` report.
fn interception(env: &Env) -> anyhow::Result<serde_json::Value> {
    let (code, body) = env.admin_get("/interception")?;
    assert_eq!(code, 200);
    Ok(serde_json::from_str(&body)?)
}

/// One of the `/interception` counters.
fn counter(report: &serde_json::Value, name: &str) -> u64 {
    report["counters"][name].as_u64().expect("a counter")
}

fn assert_only_real_token(env: &Env) {
    for request in env.apiserver().requests() {
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {REAL_TOKEN}").as_str()),
            "{request:?}"
        );
    }
}

#[test]
fn unmodified_clients_dialling_the_service_are_served_by_mca() -> anyhow::Result<()> {
    let env = Env::start_ebpf(&[])?;
    // kubectl and the Python client use in-cluster config as in a real pod: the Service
    // address, no env overrides.
    let out = env.kubectl(&["get", "pods", "-o", "name"])?;
    assert_eq!(out.trim(), "pod/web");
    let out = env.python(&["list", NAMESPACE])?;
    assert_eq!(out.trim(), "web");
    // An exec: an upgrade through the redirect, and a new upstream connection from MCA (its
    // HTTP/1.1 client), which must not be redirected back to MCA itself.
    let out = env.kubectl(&["exec", "web", "--", "echo", "through", "the", "redirect"])?;
    assert_eq!(out, "through the redirect\n");
    // curl dialling kubernetes.default.svc, resolved to the Service IP, with the
    // ServiceAccount token as an in-cluster script would send it.
    let token = std::fs::read_to_string(env.pod.fake_sa_dir().join("token"))?;
    let authorization = format!("Authorization: Bearer {token}");
    let output = env.app_output(
        "curl",
        &[
            "-sS",
            "--fail",
            "--resolve",
            "kubernetes.default.svc:443:10.96.0.1",
            "--cacert",
            APP_CA,
            "-H",
            &authorization,
            &format!("https://kubernetes.default.svc/api/v1/namespaces/{NAMESPACE}/pods/web"),
        ],
    )?;
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains(r#""name":"web""#));
    // Had any request bypassed MCA, the server would have seen the app's token (and the app
    // would not have trusted it).
    assert_only_real_token(&env);

    let line = env
        .mca
        .wait_for_access(|l| l["path"] == format!("/api/v1/namespaces/{NAMESPACE}/pods/web"))?;
    assert_eq!(line["original_dst"], "10.96.0.1:443");
    let report = interception(&env)?;
    assert_eq!(report["mode"], "ebpf");
    // Without --cgroup MCA attached to its pod's cgroup: the parent of its own.
    assert_eq!(
        report["cgroup"],
        env.pod.cgroup().unwrap().to_str().unwrap()
    );
    assert!(counter(&report, "redirected_v4") >= 3, "{report}");
    // The same counters on /metrics, read from the maps at the scrape.
    let redirected = env
        .metrics()?
        .sum("mca_ebpf_events_total", &[("event", "redirected_v4")]);
    assert!(redirected >= counter(&report, "redirected_v4") as f64);
    // MCA's own connection to the Service address was exempt, not looped back to itself.
    assert!(counter(&report, "exempted_v4") >= 1, "{report}");
    Ok(())
}

/// A ServiceAccount that may not list the API server's EndpointSlices (a 403, as for most
/// applications' ServiceAccounts): MCA says once what is not intercepted and exactly what
/// would fix it, and an endpoint named with --intercept-address is caught anyway.
#[test]
fn without_the_right_to_list_endpoints_mca_says_what_is_needed() -> anyhow::Result<()> {
    let forbidding = || Options {
        forbid_endpoint_slices: true,
        ..Options::default()
    };
    let env = Env::start_ebpf_with(forbidding(), &[])?;
    let log = env.mca.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("only the kubernetes Service's address is intercepted"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    for needed in [
        "`list` on `endpointslices`",
        "discovery.k8s.io",
        "`default`",
        "--intercept-address",
    ] {
        assert!(warnings[0].contains(needed), "{needed}: {}", warnings[0]);
    }
    assert!(
        warnings[0].contains("\"level\":\"WARN\""),
        "{}",
        warnings[0]
    );
    let dial_endpoint = |env: &Env| {
        env.raw_client(
            API_ENDPOINT_IP,
            API_ENDPOINT_PORT,
            "kubernetes.default.svc",
            APP_CA,
        )
    };
    // The endpoint is not intercepted: the pod has no route there.
    let output = dial_endpoint(&env)?;
    assert!(!output.status.success(), "{output:?}");
    drop(env);
    // Named explicitly, it is.
    let endpoint = format!("{API_ENDPOINT_IP}:{API_ENDPOINT_PORT}");
    let env = Env::start_ebpf_with(forbidding(), &["--intercept-address", &endpoint])?;
    let output = dial_endpoint(&env)?;
    assert!(output.status.success(), "{output:?}");
    Ok(())
}

#[test]
fn ipv6_and_v4_mapped_destinations_and_getpeername() -> anyhow::Result<()> {
    let env = Env::start_ebpf(&[
        "--intercept-address",
        SERVICE_V6,
        "--extra-san",
        "fd00:10:96::1",
        "--ebpf-log",
    ])?;
    for (host, port, peer) in [
        ("10.96.0.1", 443, "peer 10.96.0.1 443"),
        ("fd00:10:96::1", 443, "peer fd00:10:96::1 443"),
        ("::ffff:10.96.0.1", 443, "peer ::ffff:10.96.0.1 443"),
        // The API server endpoint MCA found in the `kubernetes` EndpointSlice: the pod has no
        // route there, so only a redirect gets through.
        (API_ENDPOINT_IP, API_ENDPOINT_PORT, "peer 10.96.0.2 6443"),
    ] {
        let output = env.raw_client(host, port, "kubernetes.default.svc", APP_CA)?;
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{host}: {output:?}");
        // The app sees the address it dialled, not MCA's listener...
        assert_eq!(out.lines().next(), Some(peer), "{out}");
        // ...and was served by MCA (its CA verified, the request forwarded).
        assert_eq!(out.lines().nth(1), Some("HTTP/1.1 200 OK"), "{out}");
    }
    let report = interception(&env)?;
    assert!(counter(&report, "redirected_v6") >= 2, "{report}");
    assert!(counter(&report, "peername_rewritten") >= 3, "{report}");
    let line = env
        .mca
        .wait_for_access(|l| l["original_dst"] == "[fd00:10:96::1]:443")?;
    assert_eq!(line["status"], 200);
    assert_only_real_token(&env);
    Ok(())
}

#[test]
fn no_redirect_is_left_behind_when_mca_is_killed() -> anyhow::Result<()> {
    let mut env = Env::start_ebpf(&[])?;
    let output = env.raw_client("10.96.0.1", 443, "kubernetes.default.svc", APP_CA)?;
    assert!(output.status.success(), "{output:?}");
    // kill -9: no cleanup code runs in MCA.
    env.mca.signal(nix::sys::signal::Signal::SIGKILL)?;
    while !env.mca.exited() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A new connect goes where it was aimed: to the "real" API server, whose certificate the
    // app's (MCA) CA does not verify, but the server's own CA does.
    let ca = env.pod.dir().join("apiserver-ca.crt");
    std::fs::write(&ca, env.apiserver().ca_pem())?;
    let output = env.raw_client("10.96.0.1", 443, "localhost", ca.to_str().unwrap())?;
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(out.lines().next(), Some("peer 10.96.0.1 443"));
    // The app's token reached the server directly, which rejects it: MCA is out of the path.
    assert_eq!(
        out.lines().nth(1),
        Some("HTTP/1.1 401 Unauthorized"),
        "{out}"
    );
    let output = env.raw_client("10.96.0.1", 443, "kubernetes.default.svc", APP_CA)?;
    assert!(!output.status.success(), "still redirected: {output:?}");
    Ok(())
}

#[test]
fn auto_falls_back_to_env_mode_and_ebpf_mode_fails_fast() -> anyhow::Result<()> {
    // A cgroup that does not exist: eBPF cannot attach.
    let env = Env::start_test(&["--intercept", "auto", "--cgroup", "/nonexistent/cgroup"])?;
    let line = env.mca.wait_for_log(
        |l| l.contains("eBPF interception unavailable") && l.contains("env-override mode"),
        std::time::Duration::from_secs(5),
    )?;
    assert!(line.contains("/nonexistent/cgroup"), "{line}");
    assert_eq!(interception(&env)?["mode"], "env");
    // The fake ServiceAccount is provisioned all the same, and env-mode clients work.
    assert!(env.pod.fake_sa_dir().join("ca.crt").exists());
    assert_eq!(
        env.kubectl(&["get", "pods", "-o", "name"])?.trim(),
        "pod/web"
    );

    let pod = mca_tests::sandbox::Pod::new()?;
    let server =
        mca_tests::apiserver::ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
    let started = mca_tests::harness::Mca::start(
        &pod,
        server.addr(),
        server.ca_pem(),
        &["--intercept", "ebpf", "--cgroup", "/nonexistent/cgroup"],
    );
    let error = format!("{:#}", started.err().expect("--intercept=ebpf must fail"));
    assert!(
        error.contains("eBPF interception failed (--intercept=ebpf)"),
        "{error}"
    );
    // It failed before provisioning anything for the app.
    assert!(!pod.fake_sa_dir().join("ca.crt").exists());
    Ok(())
}

#[test]
fn a_parent_cgroup_not_named_as_a_pods_is_not_intercepted() -> anyhow::Result<()> {
    // As on a node without pod cgroups: MCA's container's parent would hold every pod's.
    let start = |name: &str, mode: &str| -> anyhow::Result<_> {
        let pod = Pod::new()?.with_cgroups(
            &format!("mca-not-a-pod-{name}-{}", std::process::id()),
            mca_tests::sandbox::SERVICE_V4.parse()?,
        )?;
        let server =
            mca_tests::apiserver::ApiServer::start(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[])?;
        let args = ["--intercept", mode];
        let mca = mca_tests::harness::Mca::start(&pod, server.addr(), server.ca_pem(), &args);
        Ok((mca, pod, server))
    };
    let (started, _pod, _server) = start("ebpf", "ebpf")?;
    let error = format!("{:#}", started.err().expect("--intercept=ebpf must fail"));
    assert!(error.contains("is not named as a pod's"), "{error}");
    let (mca, _pod, _server) = start("auto", "auto")?;
    let line = mca?.wait_for_log(
        |l| l.contains("not named as a pod's") && l.contains("env-override mode"),
        std::time::Duration::from_secs(5),
    )?;
    assert!(line.contains("mca-not-a-pod-auto"), "{line}");
    Ok(())
}

/// `mca` in a cgroup namespace of its own, as in a container: its cgroup is the root of the
/// cgroup2 mount it sees (mounted afresh over the host's, in a mount namespace of its own),
/// and the host's hierarchy is bind-mounted at `host_view` first, as a hostPath would be.
fn in_cgroup_namespace(pod: &Pod, host_view: &Path) -> anyhow::Result<Command> {
    let mount = mca::intercept::cgroup2_mount(None)?;
    let (mount, host_view) = (mount.display(), host_view.display());
    let script = format!(
        "mount --bind {mount} {host_view} && umount -l {mount} && mount -t cgroup2 none {mount} && exec \"$@\""
    );
    let mut command = pod.command("unshare");
    command
        .args([
            "--cgroup",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(sidecar());
    Ok(command)
}

#[test]
fn in_a_containers_cgroup_namespace_mca_finds_the_pods_cgroup_through_the_host_hierarchy()
-> anyhow::Result<()> {
    // A pod whose MCA runs in a cgroup namespace of its own, given `args`.
    let start = |args: &[&str]| -> anyhow::Result<Env> {
        let pod = Pod::with_service()?;
        let apiserver = ApiServer::start(pod.listen(SERVICE_V4)?, REAL_TOKEN, &[])?;
        apiserver.state().pods.insert(NAMESPACE, "web");
        let host_view = pod.dir().join("host-cgroup");
        std::fs::create_dir_all(&host_view)?;
        let host_view = host_view.to_str().expect("utf-8").to_owned();
        let mut all = vec!["--intercept", "ebpf"];
        all.extend(
            args.iter()
                .map(|a| if *a == "HOST" { host_view.as_str() } else { *a }),
        );
        let command = in_cgroup_namespace(&pod, Path::new(&host_view))?;
        let mca = Mca::start_command(
            command,
            &pod,
            apiserver.addr(),
            apiserver.ca_pem(),
            REAL_TOKEN,
            &all,
        )?;
        Ok(Env {
            mca,
            apiserver: Some(apiserver),
            pod,
        })
    };
    // Without the host's hierarchy it cannot see the pod's cgroup: it says so and stops,
    // rather than attach to its own cgroup and intercept nothing.
    let refused = start(&[]).err().expect("eBPF mode refused");
    assert!(
        format!("{refused:#}").contains("root of its cgroup namespace"),
        "{refused:#}"
    );

    let env = start(&["--host-cgroup-root", "HOST"])?;
    let report = interception(&env)?;
    let attached = report["cgroup"].as_str().unwrap_or_default();
    let pod_cgroup = env.pod.cgroup().expect("an eBPF pod has cgroups");
    let pod_name = pod_cgroup.file_name().unwrap().to_str().unwrap();
    assert!(
        attached.ends_with(pod_name),
        "attached to {attached}, not the pod's cgroup {}",
        pod_cgroup.display()
    );
    // An unmodified client dialling the Service is served by MCA.
    let out = env.kubectl(&["get", "pods", "-o", "name"])?;
    assert_eq!(out.trim(), "pod/web");
    assert_only_real_token(&env);
    Ok(())
}
