//! Running MCA and clients in a [`Pod`] against the test API server (or, with
//! `MCA_E2E_KUBECONFIG`, a real cluster).

use std::{
    ffi::OsString,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{
    apiserver::{ApiServer, Options},
    projected::Projected,
    sandbox::{Pod, SERVICE_V4},
};

/// The token in MCA's real ServiceAccount, the one the test API server accepts.
pub const REAL_TOKEN: &str = "real-sa-token-1";
/// The namespace of MCA's real ServiceAccount.
pub const NAMESPACE: &str = "team-a";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

/// The directory holding this build's binaries (`target/debug`): a test runs from
/// `target/debug/deps`, a binary such as the demo from `target/debug` itself.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("an executable lives in a directory");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().expect("target/debug").to_owned(),
        _ => dir.to_owned(),
    }
}

/// The `mca` binary of this build (`cargo xtask test` builds it before the tests run).
pub fn mca_binary() -> PathBuf {
    built("mca")
}

/// The sidecar as injected pods run it, program first: this build's `mca-sidecar`; with
/// `MCA_SIDECAR` set, that program (`cargo xtask bench` measures the static binary the image
/// ships); with `MCA_BIN` set (a benchmark comparing builds side by side, some older than
/// `mca-sidecar`), `$MCA_BIN run`.
pub fn sidecar() -> Vec<OsString> {
    if let Some(program) = std::env::var_os("MCA_SIDECAR") {
        return vec![program];
    }
    match std::env::var_os("MCA_BIN") {
        Some(path) => vec![path, "run".into()],
        None => vec![built("mca-sidecar").into()],
    }
}

/// `name` in this build's binaries; it must be there.
fn built(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p mca-userspace), or run `cargo xtask test`",
        path.display()
    );
    path
}

/// The `mca` binary built with the `otlp` feature, which `cargo xtask test` builds as
/// `mca-otlp` beside the other.
pub fn mca_otlp_binary() -> PathBuf {
    let path = target_dir().join("mca-otlp");
    assert!(
        path.exists(),
        "{} is missing: `cargo xtask test` builds it (cargo build -p mca-userspace --features \
         otlp, copied to mca-otlp)",
        path.display()
    );
    path
}

/// A binary of this crate (`mca-kube-client`...), built with the others by `cargo build --bins`.
pub fn tests_binary(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --bins), or run `cargo xtask test`",
        path.display()
    );
    path
}

/// The compiled build script of `package` in this build (`target/debug/build/PACKAGE-*/`),
/// the most recently built when features gave it several.
pub fn build_script(package: &str) -> anyhow::Result<PathBuf> {
    let builds = target_dir().join("build");
    let prefix = format!("{package}-");
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in std::fs::read_dir(&builds).with_context(|| format!("{}", builds.display()))? {
        let dir = entry?.path();
        let script = dir.join("build-script-build");
        let ours = dir
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(&prefix));
        if !ours || !script.is_file() {
            continue;
        }
        let built = script.metadata()?.modified()?;
        if newest.as_ref().is_none_or(|(time, _)| built > *time) {
            newest = Some((built, script));
        }
    }
    newest
        .map(|(_, script)| script)
        .with_context(|| format!("no build script of {package} under {}", builds.display()))
}

/// A program installed in the e2e Python virtualenv (`kubectl`, `python`), which
/// `cargo xtask setup` creates; `MCA_E2E_VENV` overrides its location.
pub fn venv_program(name: &str) -> PathBuf {
    let venv = std::env::var_os("MCA_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/e2e-venv"));
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` to install the e2e clients",
        path.display()
    );
    path
}

/// A test client script shipped in `tests/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    workspace_root().join("tests/clients").join(name)
}

/// The real cluster's kubeconfig, when the suite should run against one.
pub fn real_cluster() -> Option<PathBuf> {
    std::env::var_os("MCA_E2E_KUBECONFIG").map(PathBuf::from)
}

/// A child process whose stdout and stderr lines are collected as they come; killed on drop.
pub struct Process {
    name: String,
    child: Mutex<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Spawns `command` with its output piped; `name` labels error messages.
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Ok(Self {
            name: name.to_owned(),
            child: Mutex::new(child),
            lines,
        })
    }

    /// Waits until an output line satisfies `pred`; fails with the output if the process
    /// exits or time runs out first.
    pub fn wait_for_line(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let found = || self.lines.lock().unwrap().iter().find(|l| pred(l)).cloned();
        self.poll(timeout, |exited| match (found(), exited) {
            (Some(line), _) => Ok(Some(line)),
            (None, Some(status)) => bail!(
                "{} exited ({status}); its output:\n{}",
                self.name,
                self.output()
            ),
            (None, None) => Ok(None),
        })
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait(&self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.poll(timeout, Ok)
    }

    /// Calls `check` with the exit status (once the process exited and its output was read)
    /// until it returns something; fails with the output when `timeout` is over.
    fn poll<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(Option<ExitStatus>) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.child.lock().unwrap().try_wait()?;
            if exited.is_some() {
                // Let the output readers catch up with its last words.
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(done) = check(exited)? {
                return Ok(done);
            }
            if Instant::now() > deadline {
                bail!(
                    "{} still running after {timeout:?}; its output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The output lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The output so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Its resident set (`VmRSS`), in KiB.
    pub fn resident_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// Its peak resident set so far (`VmHWM`), in KiB.
    pub fn peak_resident_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// A size field of `/proc/PID/status`, in KiB.
    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field} in /proc/PID/status"))
    }

    /// Sends it `signal` (SIGTERM to stop it as Kubernetes does, SIGKILL as a crash would).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        Ok(nix::sys::signal::kill(pid, signal)?)
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        matches!(self.child.lock().unwrap().try_wait(), Ok(Some(_)))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn real_sa_files<'a>(token: &'a str, ca: &'a str) -> [(&'static str, &'a [u8]); 3] {
    [
        ("token", token.as_bytes()),
        ("ca.crt", ca.as_bytes()),
        ("namespace", NAMESPACE.as_bytes()),
    ]
}

/// A running MCA process; killed on drop.
pub struct Mca {
    process: Process,
    /// Its real ServiceAccount volume, when in-cluster.
    real_sa: Option<Projected>,
}

impl Mca {
    /// Starts MCA in `pod`, in-cluster style: its real ServiceAccount (a kubelet-style
    /// projected volume) holds [`REAL_TOKEN`] and `upstream_ca`, and
    /// KUBERNETES_SERVICE_HOST/PORT point at `upstream`.
    pub fn start(
        pod: &Pod,
        upstream: SocketAddr,
        upstream_ca: &str,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_in_cluster(pod, upstream, upstream_ca, REAL_TOKEN, args)
    }

    /// [`Mca::start`] with `token` as its ServiceAccount token (one a real API server issued).
    pub fn start_in_cluster(
        pod: &Pod,
        upstream: SocketAddr,
        upstream_ca: &str,
        token: &str,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let argv = sidecar();
        let mut command = pod.command(&argv[0]);
        command.args(&argv[1..]);
        Self::start_command(command, pod, upstream, upstream_ca, token, args)
    }

    /// [`Mca::start_in_cluster`] with `command` ending in the sidecar to run: another build
    /// of MCA (`mca-otlp run`), or the sidecar behind a wrapper (`unshare ... mca-sidecar`).
    pub fn start_command(
        command: Command,
        pod: &Pod,
        upstream: SocketAddr,
        upstream_ca: &str,
        token: &str,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let volume = Projected::create(&pod.real_sa_dir(), &real_sa_files(token, upstream_ca))?;
        Self::spawn_in_cluster(command, pod, upstream, volume, args)
    }

    fn spawn_in_cluster(
        mut command: Command,
        pod: &Pod,
        upstream: SocketAddr,
        volume: Projected,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        command
            .env("KUBERNETES_SERVICE_HOST", upstream.ip().to_string())
            .env("KUBERNETES_SERVICE_PORT", upstream.port().to_string())
            .arg("--sa-dir")
            .arg(pod.real_sa_dir());
        let mut mca = Self::spawn(pod, command, args)?;
        mca.real_sa = Some(volume);
        Ok(mca)
    }

    /// Kills MCA as a crash does (SIGKILL, no drain) and starts it again with `args`, as the
    /// kubelet restarts a sidecar: same pod, same volumes. Returns once it is ready.
    pub fn crash_and_restart(
        &mut self,
        pod: &Pod,
        upstream: SocketAddr,
        args: &[&str],
    ) -> anyhow::Result<()> {
        self.signal(nix::sys::signal::Signal::SIGKILL)?;
        self.process.wait(Duration::from_secs(10))?;
        let volume = self.real_sa.take().context("MCA runs in-cluster")?;
        let argv = sidecar();
        let mut command = pod.command(&argv[0]);
        command.args(&argv[1..]);
        *self = Self::spawn_in_cluster(command, pod, upstream, volume, args)?;
        Ok(())
    }

    /// Rotates the real ServiceAccount token as the kubelet does: one atomic swap of the
    /// volume. Returns the directory now holding the files.
    pub fn rotate_real_token(&mut self, token: &str) -> anyhow::Result<PathBuf> {
        let volume = self.real_sa.as_mut().context("MCA runs in-cluster")?;
        let ca = std::fs::read_to_string(volume.data_dir().join("ca.crt"))?;
        volume.update(&real_sa_files(token, &ca))?;
        Ok(volume.data_dir())
    }

    /// The directory holding the real ServiceAccount's files now (see
    /// [`Projected::data_dir`]).
    pub fn real_sa_data_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self
            .real_sa
            .as_ref()
            .context("MCA runs in-cluster")?
            .data_dir())
    }

    /// Starts MCA in `pod` with a kubeconfig upstream.
    pub fn start_with_kubeconfig(
        pod: &Pod,
        kubeconfig: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let argv = sidecar();
        let mut command = pod.command(&argv[0]);
        command
            .args(&argv[1..])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--kubeconfig")
            .arg(kubeconfig);
        Self::spawn(pod, command, args)
    }

    fn spawn(pod: &Pod, mut command: Command, args: &[&str]) -> anyhow::Result<Self> {
        command
            .arg("--listen")
            .arg(pod.mca_addr().to_string())
            .arg("--admin-listen")
            .arg(pod.admin_listen().to_string())
            .arg("--fake-sa-dir")
            .arg(pod.fake_sa_dir())
            .args(["--log-format", "json"])
            .args(args)
            // The env-override suites must not touch the host's cgroups.
            .args(if args.contains(&"--intercept") {
                &[][..]
            } else {
                &["--intercept", "env"][..]
            })
            // MCA_E2E_LOG raises MCA's log level when a test needs debugging.
            .env(
                "MCA_LOG",
                std::env::var("MCA_E2E_LOG").unwrap_or_else(|_| "info".to_owned()),
            );
        let mca = Self {
            process: Process::spawn("MCA", &mut command)?,
            real_sa: None,
        };
        mca.wait_for_log(
            |line| line.contains("MCA is ready"),
            Duration::from_secs(30),
        )
        .context("MCA did not become ready")?;
        Ok(mca)
    }

    /// Waits until a log line satisfies `pred`; fails with the log if MCA exits or time runs
    /// out.
    pub fn wait_for_log(
        &self,
        pred: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        self.process.wait_for_line(pred, timeout)
    }

    /// Everything MCA logged so far.
    pub fn log(&self) -> String {
        self.process.output()
    }

    /// The access-log lines (JSON objects) so far.
    pub fn access_log(&self) -> Vec<Value> {
        self.process
            .lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "mca::access")
            .collect()
    }

    /// Waits for an access-log line matching `pred` (lines are written when a request ends).
    pub fn wait_for_access(&self, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let line = self.wait_for_log(
            |l| {
                serde_json::from_str::<Value>(l)
                    .is_ok_and(|v| v["target"] == "mca::access" && pred(&v))
            },
            Duration::from_secs(20),
        )?;
        Ok(serde_json::from_str(&line)?)
    }

    /// MCA's process id (the container wrapper and nsenter exec into it).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// MCA's resident set (`VmRSS`), in KiB.
    pub fn resident_kib(&self) -> anyhow::Result<u64> {
        self.process.resident_kib()
    }

    /// MCA's peak resident set so far (`VmHWM`), in KiB.
    pub fn peak_resident_kib(&self) -> anyhow::Result<u64> {
        self.process.peak_resident_kib()
    }

    /// How many files MCA has open.
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count())
    }

    /// Sends MCA `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        self.process.signal(signal)
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.process.wait(timeout)
    }

    /// Whether MCA has exited.
    pub fn exited(&mut self) -> bool {
        self.process.exited()
    }
}

/// A pod with the test API server and MCA running in it.
pub struct Env {
    /// MCA.
    pub mca: Mca,
    /// The test API server; `None` against a real cluster.
    pub apiserver: Option<ApiServer>,
    /// The pod (dropped last: it removes the network namespace).
    pub pod: Pod,
}

impl Env {
    /// The standard setup: against the test API server, or against the real cluster when
    /// `MCA_E2E_KUBECONFIG` is set.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        match real_cluster() {
            Some(kubeconfig) => Self::start_with_kubeconfig(&kubeconfig, args),
            None => Self::start_test(args),
        }
    }

    /// Always against the test API server (tests that inspect what the server received).
    pub fn start_test(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_test_with(Options::default(), args)
    }

    /// [`Env::start_test`] with a test API server configured by `options`.
    pub fn start_test_with(options: Options, args: &[&str]) -> anyhow::Result<Self> {
        let pod = Pod::new()?;
        let apiserver =
            ApiServer::start_with(pod.listen("127.0.0.1:0")?, REAL_TOKEN, &[], options)?;
        apiserver.state().pods.insert(NAMESPACE, "web");
        let mca = Mca::start(&pod, apiserver.addr(), apiserver.ca_pem(), args)?;
        Ok(Self {
            mca,
            apiserver: Some(apiserver),
            pod,
        })
    }

    /// eBPF mode: a pod with the Service addresses and cgroups, the test API server at
    /// [`SERVICE_V4`] in it, and MCA attached to the pod's cgroup (found by default: the
    /// parent of its own), its own cgroup exempt.
    pub fn start_ebpf(args: &[&str]) -> anyhow::Result<Self> {
        Self::start_ebpf_with(Options::default(), args)
    }

    /// [`Env::start_ebpf`] with a test API server set up as `options` say.
    pub fn start_ebpf_with(options: Options, args: &[&str]) -> anyhow::Result<Self> {
        let pod = Pod::with_service()?;
        let apiserver = ApiServer::start_with(pod.listen(SERVICE_V4)?, REAL_TOKEN, &[], options)?;
        apiserver.state().pods.insert(NAMESPACE, "web");
        let mut all = vec!["--intercept", "ebpf"];
        all.extend_from_slice(args);
        let mca = Mca::start(&pod, apiserver.addr(), apiserver.ca_pem(), &all)?;
        Ok(Self {
            mca,
            apiserver: Some(apiserver),
            pod,
        })
    }

    /// Runs the raw client (`tests/clients/raw_client.py`) as the application: dials `host`
    /// `port` directly and verifies TLS as `server_name` against `cafile`. Returns its output
    /// whatever the outcome.
    pub fn raw_client(
        &self,
        host: &str,
        port: u16,
        server_name: &str,
        cafile: &str,
    ) -> anyhow::Result<Output> {
        let script = client_script("raw_client.py");
        let port = port.to_string();
        self.app_output(
            venv_program("python"),
            &[
                script.to_str().expect("UTF-8"),
                host,
                &port,
                server_name,
                cafile,
            ],
        )
    }

    /// Against the cluster of `kubeconfig`, from a pod on the host network (which can reach
    /// it on loopback).
    pub fn start_with_kubeconfig(kubeconfig: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let pod = Pod::new_host_network()?;
        let mca = Mca::start_with_kubeconfig(&pod, kubeconfig, args)?;
        Ok(Self {
            mca,
            apiserver: None,
            pod,
        })
    }

    /// The namespace the tests work in: MCA's ServiceAccount namespace against the test API
    /// server; `MCA_E2E_NAMESPACE` (default `default`) against a real cluster.
    pub fn namespace(&self) -> String {
        match &self.apiserver {
            Some(_) => NAMESPACE.to_owned(),
            None => std::env::var("MCA_E2E_NAMESPACE").unwrap_or_else(|_| "default".to_owned()),
        }
    }

    /// A pod name unique to this test run and `tag`.
    pub fn unique_name(&self, tag: &str) -> String {
        format!("mca-e2e-{}-{tag}", std::process::id())
    }

    /// The test API server; panics against a real cluster.
    pub fn apiserver(&self) -> &ApiServer {
        self.apiserver
            .as_ref()
            .expect("this test needs the test API server")
    }

    /// Stops the test API server, as a crash would (see [`ApiServer::stop`]), and returns
    /// once its listener is gone (its runtime shuts down in the background, and until then
    /// it could still accept a watch that sees what the test changes meanwhile).
    pub fn stop_apiserver(&mut self) -> anyhow::Result<()> {
        let server = self
            .apiserver
            .as_mut()
            .expect("this test needs the test API server");
        server.stop();
        drop(self.free_apiserver_address()?);
        Ok(())
    }

    /// Serves again on the test API server's address in the pod.
    pub fn resume_apiserver(&mut self) -> anyhow::Result<()> {
        let listener = self.free_apiserver_address()?;
        self.apiserver
            .as_mut()
            .expect("this test needs the test API server")
            .resume(listener)
    }

    /// A listener on the test API server's address, once its old one is gone.
    fn free_apiserver_address(&self) -> anyhow::Result<std::net::TcpListener> {
        let addr = self.apiserver().addr().to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match self.pod.listen(&addr) {
                Ok(listener) => return Ok(listener),
                Err(error) if std::time::Instant::now() > deadline => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// Runs `program args` as the application and returns its output.
    pub fn app_output(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> anyhow::Result<Output> {
        let output = self
            .pod
            .app(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        Ok(output)
    }

    /// Runs kubectl as the application; fails unless it succeeds. Returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        succeed(
            self.app_output(venv_program("kubectl"), args)?,
            "kubectl",
            args,
        )
    }

    /// Runs the Python client script as the application; fails unless it succeeds.
    pub fn python(&self, args: &[&str]) -> anyhow::Result<String> {
        let script = client_script("python_client.py");
        let mut full = vec![script.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        succeed(
            self.app_output(venv_program("python"), &full)?,
            "python",
            args,
        )
    }

    /// The tasks alive in MCA's runtime (`/runtime` on the admin listener).
    pub fn mca_tasks(&self) -> anyhow::Result<u64> {
        let (code, body) = self.admin_get("/runtime")?;
        anyhow::ensure!(code == 200, "/runtime: {code} {body}");
        let report: Value = serde_json::from_str(&body)?;
        report["tasks"]
            .as_u64()
            .with_context(|| format!("/runtime: {report}"))
    }

    /// MCA's `/metrics`, parsed.
    pub fn metrics(&self) -> anyhow::Result<crate::metrics::Scrape> {
        let (code, body) = self.admin_get("/metrics")?;
        anyhow::ensure!(code == 200, "/metrics: {code} {body}");
        crate::metrics::Scrape::parse(&body)
    }

    /// The admin endpoint `path` as seen from inside the pod: (status code, body).
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.pod.connect(self.pod.admin_addr())?, path)
    }
}

/// `GET path` over `stream` with HTTP/1.1 and `Connection: close`, as a probe would: the
/// status code and the body (MCA's admin listener sends its bodies with a length).
pub fn http_get(
    mut stream: impl std::io::Read + std::io::Write,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: mca\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("admin response has no status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Returns stdout of a successful run, or an error with everything it printed.
pub fn succeed(output: Output, what: &str, args: &[&str]) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "{what} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls until `check` holds (every 100 ms, for at most `within`), returning its value;
/// errors count as "not yet" (the last one is returned if it never holds).
pub fn eventually<T>(
    within: Duration,
    mut check: impl FnMut() -> anyhow::Result<(bool, T)>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let checked = check();
        if let Ok((true, value)) = checked {
            return Ok(value);
        }
        if std::time::Instant::now() > deadline {
            checked?;
            bail!("not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `command` with `input` on its stdin (written from a thread, so a child that answers
/// before reading everything cannot deadlock against us) and collects its output.
pub fn output_with_input(command: &mut Command, input: &[u8]) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("a piped stdin");
    let input = input.to_vec();
    // A child that exits without reading it all closes the pipe: not our error to report.
    let writer = std::thread::spawn(move || drop(std::io::Write::write_all(&mut stdin, &input)));
    let output = child.wait_with_output()?;
    writer.join().expect("the stdin writer does not panic");
    Ok(output)
}
