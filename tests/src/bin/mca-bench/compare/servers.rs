//! The servers of the comparison, each a process of its own on loopback: the static upstream
//! (nginx serving fixed documents over TLS, as an API server answers a GET or a LIST, and
//! requiring the real token), and the three ways to put credentials in front of an upstream —
//! MCA as shipped (access log on), an nginx TLS reverse proxy that sets the token (buffering
//! off), and `kubectl proxy`.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use mca_tests::harness::{REAL_TOKEN, sidecar, venv_program};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

/// The namespace the documents live in.
pub const NAMESPACE: &str = "bench";

/// A CA and a serving certificate it signed for 127.0.0.1, as PEM files in a directory.
pub struct Certs {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The serving certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Certs {
    /// Generates them into `dir`.
    pub fn generate(dir: &Path) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let cert = params.signed_by(&key, &issuer)?;
        let certs = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&certs.ca, ca.pem())?;
        std::fs::write(&certs.cert, cert.pem())?;
        std::fs::write(&certs.key, key.serialize_pem())?;
        Ok(certs)
    }
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A server process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { child, name })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts connections.
    fn wait_for(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited: {status}", self.name);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("{} did not listen on {addr}", self.name);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx's settings common to both roles, its files in `dir/<prefix>`; `server` is the role's
/// `server` block and `workers` its `worker_processes`. TLS 1.3 is allowed as kube-apiserver
/// and MCA allow it (Debian's nginx 1.22 stops at 1.2 unless told), so every hop negotiates
/// what it would in a cluster.
fn nginx(dir: &Path, prefix: &str, workers: &str, server: &str) -> anyhow::Result<Process> {
    let prefix = dir.join(prefix);
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes {workers};\n\
             worker_rlimit_nofile 65536;\n\
             pid {prefix}/nginx.pid;\n\
             error_log {prefix}/logs/error.log warn;\n\
             events {{ worker_connections 32768; }}\n\
             http {{\n\
               access_log {prefix}/logs/access.log;\n\
               client_body_temp_path {prefix}/body;\n\
               proxy_temp_path {prefix}/proxy;\n\
               fastcgi_temp_path {prefix}/fastcgi;\n\
               uwsgi_temp_path {prefix}/uwsgi;\n\
               scgi_temp_path {prefix}/scgi;\n\
               keepalive_requests 1000000;\n\
               http2_max_concurrent_streams 128;\n\
               ssl_protocols TLSv1.2 TLSv1.3;\n\
               {server}\n\
             }}\n",
            prefix = prefix.display(),
        ),
    )?;
    Process::spawn(
        "nginx",
        Command::new(nginx_binary())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"]),
    )
}

/// Debian's nginx.
pub fn nginx_binary() -> &'static str {
    "/usr/sbin/nginx"
}

/// The static upstream: nginx over TLS (HTTP/2 and HTTP/1.1) serving a pod and a 500-item
/// ConfigMap list from files, accepting POSTs of ConfigMaps, and answering 401 to any request
/// without the real token — so a proxy that failed to set it shows up as errors. A POST is
/// read whole before it is answered, as the API server does (nginx's own `return` answers
/// first and resets an HTTP/2 upload): nginx buffers it and passes it to a second server that
/// answers 201. Each HTTP/2 stream may send 256 KiB before the server reads any of it, as
/// kube-apiserver allows (its `MaxUploadBufferPerStream`; nginx's default is 64 KiB), so a
/// 100 KB POST does not wait for a window update halfway.
///
/// One worker process: nginx serves a connection on one worker, so a client multiplexing one
/// HTTP/2 connection (MCA, like client-go) would get one of the upstream's cores while a proxy
/// with 16 HTTP/1.1 connections gets both, where kube-apiserver serves every stream of a
/// connection in its own goroutine. With one worker every proxy meets the same upstream.
pub fn static_upstream(dir: &Path, certs: &Certs) -> anyhow::Result<(Process, SocketAddr)> {
    let www = dir.join("www");
    let namespace = www.join(format!("api/v1/namespaces/{NAMESPACE}"));
    std::fs::create_dir_all(namespace.join("pods"))?;
    std::fs::write(
        namespace.join("pods/web"),
        super::documents::pod("web").to_string(),
    )?;
    std::fs::write(
        namespace.join("configmaps"),
        super::documents::config_map_list(500).to_string(),
    )?;
    let (addr, created_addr) = (free_addr()?, free_addr()?);
    let created = super::documents::pod("created").to_string();
    let server = format!(
        "server {{\n\
           listen {created_addr};\n\
           client_max_body_size 16m;\n\
           location / {{ return 201 '{created}'; }}\n\
         }}\n\
         server {{\n\
           listen {addr} ssl http2;\n\
           ssl_certificate {cert};\n\
           ssl_certificate_key {key};\n\
           client_max_body_size 16m;\n\
           http2_body_preread_size 256k;\n\
           default_type application/json;\n\
           root {www};\n\
           location / {{\n\
             if ($http_authorization != \"Bearer {REAL_TOKEN}\") {{ return 401; }}\n\
             if ($request_method = POST) {{ proxy_pass http://{created_addr}; }}\n\
           }}\n\
         }}",
        cert = certs.cert.display(),
        key = certs.key.display(),
        www = www.display(),
    );
    let mut process = nginx(dir, "upstream", "1", &server)?;
    process.wait_for(addr)?;
    Ok((process, addr))
}

/// A way for clients to reach an upstream.
pub struct Target {
    /// What it is, as the report names it.
    pub name: &'static str,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Whether it speaks TLS (then with the CA in `ca`) and HTTP/2.
    pub tls: bool,
    /// The CA certificate that verifies it, when TLS.
    pub ca: Option<PathBuf>,
    /// The bearer token clients send, if any.
    pub token: Option<String>,
    /// Its process (none for the upstream itself, measured elsewhere).
    pub process: Option<Process>,
    /// For MCA: its admin listener.
    pub admin: Option<SocketAddr>,
    /// For MCA: how long from exec until `/readyz` said 200.
    pub ready_after: Option<Duration>,
}

impl Target {
    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// The upstream itself, for the baseline.
pub fn direct(upstream: SocketAddr, ca: &Path) -> Target {
    Target {
        name: "direct",
        addr: upstream,
        tls: true,
        ca: Some(ca.to_owned()),
        token: Some(REAL_TOKEN.to_owned()),
        process: None,
        admin: None,
        ready_after: None,
    }
}

/// A kubeconfig for `upstream` with the real token.
fn kubeconfig(dir: &Path, upstream: SocketAddr, ca: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("kubeconfig-{}", upstream.port()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: bench\n\
             clusters: [{{name: bench, cluster: {{server: 'https://{upstream}', \
             certificate-authority: '{ca}'}}}}]\n\
             users: [{{name: bench, user: {{token: '{REAL_TOKEN}'}}}}]\n\
             contexts: [{{name: bench, context: {{cluster: bench, user: bench, \
             namespace: {NAMESPACE}}}}}]\n",
            ca = ca.display()
        ),
    )?;
    Ok(path)
}

/// Where MCA takes the real credentials from.
#[derive(Debug, Clone, Copy)]
pub enum Credentials {
    /// A kubeconfig naming the upstream (`--kubeconfig`).
    Kubeconfig,
    /// A ServiceAccount directory and `KUBERNETES_SERVICE_HOST`/`_PORT`, as in a pod
    /// (`--sa-dir`): how an injected sidecar runs.
    InCluster,
}

/// MCA as shipped (access log on, written to a file as a container runtime would), in env
/// mode, in front of `upstream`.
pub fn mca(
    dir: &Path,
    upstream: SocketAddr,
    upstream_ca: &Path,
    credentials: Credentials,
    args: &[&str],
) -> anyhow::Result<Target> {
    let (addr, admin) = (free_addr()?, free_addr()?);
    // Its own directory: the fake kubeconfig is written beside the ServiceAccount, and an MCA
    // finding another's there would measure as a restarted one.
    let sa = dir.join(format!("mca-{}", addr.port())).join("sa");
    let log = std::fs::File::create(dir.join(format!("mca-{}.log", addr.port())))?;
    let sidecar = sidecar();
    let mut command = Command::new(&sidecar[0]);
    command.args(&sidecar[1..]);
    match credentials {
        Credentials::Kubeconfig => {
            command
                .env_remove("KUBERNETES_SERVICE_HOST")
                .arg("--kubeconfig")
                .arg(kubeconfig(dir, upstream, upstream_ca)?);
        }
        Credentials::InCluster => {
            let real = dir.join(format!("real-sa-{}", addr.port()));
            std::fs::create_dir_all(&real)?;
            std::fs::write(real.join("token"), REAL_TOKEN)?;
            std::fs::write(real.join("namespace"), NAMESPACE)?;
            std::fs::copy(upstream_ca, real.join("ca.crt"))?;
            command
                .env("KUBERNETES_SERVICE_HOST", upstream.ip().to_string())
                .env("KUBERNETES_SERVICE_PORT", upstream.port().to_string())
                .arg("--sa-dir")
                .arg(real);
        }
    }
    let start = Instant::now();
    let process = Process::spawn(
        "mca",
        command
            .args(["--intercept", "env", "--listen"])
            .arg(addr.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--fake-sa-dir")
            .arg(&sa)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log),
    )?;
    let ready_after = loop {
        if let Ok((200, _)) = admin_get(admin, "/readyz") {
            break start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("MCA did not become ready");
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    Ok(Target {
        name: "MCA",
        addr,
        tls: true,
        ca: Some(sa.join("ca.crt")),
        token: Some(std::fs::read_to_string(sa.join("token"))?),
        process: Some(process),
        admin: Some(admin),
        ready_after: Some(ready_after),
    })
}

/// An nginx TLS reverse proxy setting the real token, buffering off, keeping connections to
/// the upstream alive, passing upgrades through.
pub fn nginx_proxy(dir: &Path, certs: &Certs, upstream: SocketAddr) -> anyhow::Result<Target> {
    let addr = free_addr()?;
    let server = format!(
        "map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}\n\
         upstream api {{ server {upstream}; keepalive 256; }}\n\
         server {{\n\
           listen {addr} ssl http2;\n\
           ssl_certificate {cert};\n\
           ssl_certificate_key {key};\n\
           client_max_body_size 16m;\n\
           location / {{\n\
             proxy_pass https://api;\n\
             proxy_http_version 1.1;\n\
             proxy_set_header Authorization \"Bearer {REAL_TOKEN}\";\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;\n\
             proxy_buffering off;\n\
             proxy_request_buffering off;\n\
             proxy_ssl_session_reuse on;\n\
             proxy_read_timeout 1h;\n\
           }}\n\
         }}",
        cert = certs.cert.display(),
        key = certs.key.display(),
    );
    let mut process = nginx(dir, &format!("proxy-{}", addr.port()), "auto", &server)?;
    process.wait_for(addr)?;
    Ok(Target {
        name: "nginx",
        addr,
        tls: true,
        ca: Some(certs.ca.clone()),
        token: None,
        process: Some(process),
        admin: None,
        ready_after: None,
    })
}

/// `kubectl proxy` in front of `upstream`: plain HTTP on loopback, as users run it; its
/// filter is off so exec passes as through the others.
pub fn kubectl_proxy(dir: &Path, upstream: SocketAddr, ca: &Path) -> anyhow::Result<Target> {
    let kubeconfig = kubeconfig(dir, upstream, ca)?;
    let addr = free_addr()?;
    let mut process = Process::spawn(
        "kubectl proxy",
        Command::new(venv_program("kubectl"))
            .arg("proxy")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--address", "127.0.0.1", "--disable-filter=true"])
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    process.wait_for(addr)?;
    Ok(Target {
        name: "kubectl proxy",
        addr,
        tls: false,
        ca: None,
        token: None,
        process: Some(process),
        admin: None,
        ready_after: None,
    })
}

/// `GET path` on MCA's admin listener: status and body.
pub fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    mca_tests::harness::http_get(std::net::TcpStream::connect(admin)?, path)
}
