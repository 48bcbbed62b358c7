//! A pod, simulated: a network namespace of its own (loopback only, no route out, so nothing a
//! test dials can leave the machine), the containers' processes inside it, and for the
//! application a private mount namespace where MCA's fake ServiceAccount directory is
//! bind-mounted at the standard path, so unmodified in-cluster clients run as in a pod.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};

/// Where in-cluster clients look for their ServiceAccount.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The API server's Service address inside an eBPF pod, as in a kind cluster.
pub const SERVICE_V4: &str = "10.96.0.1:443";
/// An IPv6 Service address inside an eBPF pod.
pub const SERVICE_V6: &str = "[fd00:10:96::1]:443";

/// A simulated pod. Dropping it deletes its cgroups and network namespace.
pub struct Pod {
    netns: Option<String>,
    dir: tempfile::TempDir,
    mca_addr: SocketAddr,
    admin_addr: SocketAddr,
    cgroup: Option<PathBuf>,
    app_service: SocketAddr,
}

impl Pod {
    /// Creates the pod's network namespace with loopback up and nothing else.
    pub fn new() -> anyhow::Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let netns = format!(
            "mca-e2e-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &netns]))
            .context("creating a network namespace (needs root and iproute2)")?;
        run(Command::new("ip").args(["-n", &netns, "link", "set", "lo", "up"]))?;
        // The pod has its own loopback, so the standard ports are free.
        Self::with(
            Some(netns),
            "127.0.0.1:6443".parse()?,
            "127.0.0.1:9901".parse()?,
        )
    }

    /// A pod on the host's network (for a real cluster, which a network namespace with no
    /// route out cannot reach): only the mount namespace is the pod's; ports are free ones.
    pub fn new_host_network() -> anyhow::Result<Self> {
        let free = || -> anyhow::Result<SocketAddr> {
            Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        };
        Self::with(None, free()?, free()?)
    }

    /// A pod for eBPF interception: like [`Pod::new`], plus the Service addresses
    /// ([`SERVICE_V4`], [`SERVICE_V6`]) on the pod's loopback, where a test API server can
    /// stand in for the real one (so an unintercepted connect stays inside the pod), and a
    /// cgroup v2 subtree `<netns>-pod<uid>/{mca,app}` for MCA and the application.
    pub fn with_service() -> anyhow::Result<Self> {
        let pod = Self::new()?;
        let netns = pod
            .netns
            .clone()
            .expect("Pod::new makes a network namespace");
        for addr in ["10.96.0.1/32", "fd00:10:96::1/128"] {
            pod.add_address(addr)?;
        }
        // Named as the kubelet names a pod's cgroup (`...pod<uid>`), which MCA checks before
        // it attaches to its container's parent.
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            std::process::id(),
            SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() & 0xffff_ffff_ffff
        );
        pod.with_cgroups(&format!("{netns}-pod{uid}"), SERVICE_V4.parse()?)
    }

    /// Gives the pod a cgroup v2 subtree `<name>/{mca,app}` (for eBPF interception), and the
    /// application `service` as its KUBERNETES_SERVICE_HOST/PORT, as in a real pod.
    pub fn with_cgroups(mut self, name: &str, service: SocketAddr) -> anyhow::Result<Self> {
        let cgroup = mca::intercept::cgroup2_mount(None)?.join(name);
        for dir in ["mca", "app"] {
            std::fs::create_dir_all(cgroup.join(dir))
                .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        }
        self.cgroup = Some(cgroup);
        self.app_service = service;
        Ok(self)
    }

    /// The pod's cgroup, for eBPF pods.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    fn with(
        netns: Option<String>,
        mca_addr: SocketAddr,
        admin_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let pod = Self {
            netns,
            dir: tempfile::tempdir()?,
            mca_addr,
            admin_addr,
            cgroup: None,
            app_service: mca_addr,
        };
        for dir in ["fake-sa", "real-sa", "home"] {
            std::fs::create_dir_all(pod.dir.path().join(dir))?;
        }
        Ok(pod)
    }

    /// Where MCA listens in the pod, and where the application is pointed.
    pub fn mca_addr(&self) -> SocketAddr {
        self.mca_addr
    }

    /// MCA's admin listener in the pod, to dial.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where MCA's admin listener binds: in a pod of its own, every address of it (as MCA's
    /// default does in a real pod, where the kubelet probes the pod's IP); on the host's
    /// network, loopback alone.
    pub fn admin_listen(&self) -> SocketAddr {
        match self.netns {
            Some(_) => SocketAddr::from(([0, 0, 0, 0], self.admin_addr.port())),
            None => self.admin_addr,
        }
    }

    /// Adds `addr` (`10.1.2.3/32`) to the pod's loopback device: an address of the pod that
    /// is not a loopback one, as its IP would be.
    pub fn add_address(&self, addr: &str) -> anyhow::Result<()> {
        let netns = self
            .netns
            .as_deref()
            .context("a pod with a network namespace")?;
        run(Command::new("ip").args(["-n", netns, "addr", "add", addr, "dev", "lo"]))
    }

    /// Scratch directory of the pod.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where MCA writes the fake ServiceAccount (the app sees it at the standard path).
    pub fn fake_sa_dir(&self) -> PathBuf {
        self.dir.path().join("fake-sa")
    }

    /// MCA's real ServiceAccount directory.
    pub fn real_sa_dir(&self) -> PathBuf {
        self.dir.path().join("real-sa")
    }

    /// Runs `f` on a thread that has entered the pod's network namespace: sockets it creates
    /// belong to the pod, and stay there when handed back.
    pub fn in_netns<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> anyhow::Result<T> {
        in_netns(self.netns.as_deref(), f)
    }

    /// Connects from inside the pod, without borrowing it (for tasks that outlive a borrow).
    pub fn dialer(
        &self,
    ) -> impl Fn(SocketAddr) -> anyhow::Result<TcpStream> + Send + Sync + 'static {
        let netns = self.netns.clone();
        move |addr| in_netns(netns.as_deref(), || TcpStream::connect(addr))
    }

    /// A listener inside the pod (e.g. for the test API server).
    pub fn listen(&self, addr: &str) -> anyhow::Result<TcpListener> {
        self.in_netns(|| TcpListener::bind(addr))
    }

    /// A connection from inside the pod.
    pub fn connect(&self, addr: SocketAddr) -> anyhow::Result<TcpStream> {
        self.in_netns(|| TcpStream::connect(addr))
    }

    /// A process in the pod's network namespace, like a container sharing it; in an eBPF pod
    /// it runs in the `mca` cgroup (MCA's container).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.container("mca", program)
    }

    /// A process of `container` (a child cgroup of the pod's, in eBPF pods). It enters the
    /// cgroup first, then the network namespace (with nsenter, which leaves /sys and so the
    /// cgroup mount in place, unlike `ip netns exec`).
    fn container(&self, container: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("sh");
        let procs = self
            .cgroup
            .as_ref()
            .map(|cgroup| cgroup.join(container).join("cgroup.procs"));
        command.args([
            "-c",
            r#"[ -z "$1" ] || echo $$ > "$1" || exit 125; shift; exec "$@""#,
            "sh",
        ]);
        command.arg(procs.unwrap_or_default());
        if let Some(netns) = &self.netns {
            command
                .arg("nsenter")
                .arg(format!("--net=/run/netns/{netns}"))
                .arg("--");
        }
        command
            .arg(program)
            .env("HOME", self.dir.path().join("home"))
            .env_remove("KUBECONFIG");
        command
    }

    /// The application container: in the pod's network namespace (and `app` cgroup), in a
    /// private mount namespace with the fake ServiceAccount at the standard path. In an eBPF
    /// pod its KUBERNETES_SERVICE_HOST/PORT are the Service's, as in a real pod; otherwise
    /// they are the env overrides pointing at MCA.
    pub fn app(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let script = format!(
            "mkdir -p {SERVICE_ACCOUNT_PATH} && mount --bind \"$MCA_FAKE_SA\" {SERVICE_ACCOUNT_PATH} && exec \"$@\""
        );
        let service = self.app_service;
        let mut command = self.container("app", "unshare");
        command
            .args([
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
                "sh",
            ])
            .arg(program)
            .env("MCA_FAKE_SA", self.fake_sa_dir())
            .env("KUBERNETES_SERVICE_HOST", service.ip().to_string())
            .env("KUBERNETES_SERVICE_PORT", service.port().to_string());
        command
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Some(cgroup) = &self.cgroup {
            for dir in ["mca", "app", ""] {
                let _ = std::fs::remove_dir(cgroup.join(dir));
            }
        }
        if let Some(netns) = &self.netns {
            let _ = Command::new("ip").args(["netns", "del", netns]).status();
        }
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a thread that has entered network namespace `netns` (the current one if `None`).
fn in_netns<T: Send>(
    netns: Option<&str>,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> anyhow::Result<T> {
    let Some(netns) = netns else {
        return Ok(f()?);
    };
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(&path)?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                f()
            })
            .join()
            .expect("netns thread panicked")
    })
    .with_context(|| format!("in network namespace {netns}"))
}
