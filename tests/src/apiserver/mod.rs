//! A small Kubernetes API server for MCA's end-to-end tests and demo.
//!
//! It is real where MCA could tell the difference: TLS with its own CA (HTTP/2 or HTTP/1.1 by
//! ALPN), bearer-token authentication (401 `Status` for anything else), discovery, pods with
//! get/list (paginated, JSON or Table)/watch (chunked)/create, `log?follow=true`, and the
//! exec/attach/port-forward upgrades over WebSocket and SPDY/3.1. It records the headers of
//! every request so tests can check what crossed MCA: that the application's token and
//! `Impersonate-*` headers never arrive, and that MCA's token does.

mod discovery;
pub mod faults;
mod pods;
mod remotecommand;
mod spdy;
mod websocket;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

pub use discovery::ExtraResource;
pub use pods::PodStore;

/// The API server endpoint the test server's EndpointSlice names.
pub const API_ENDPOINT_IP: &str = "10.96.0.2";
/// Its port.
pub const API_ENDPOINT_PORT: u16 = 6443;

/// Response body type of the test server.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How the server behaves, beyond the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// The HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` it announces (kube-apiserver: 100); more
    /// streams on one connection are refused. Default: hyper's (200).
    pub max_concurrent_streams: Option<u32>,
    /// Serve only the legacy discovery documents, as API servers before aggregated discovery.
    pub legacy_discovery: bool,
    /// Answer `403` to lists of EndpointSlices, as an API server does to a ServiceAccount
    /// without that permission.
    pub forbid_endpoint_slices: bool,
    /// Answer lists of pods with `200` and only the first half of their JSON, as a server
    /// whose stream broke would.
    pub truncate_lists: bool,
    /// Answer every request but the health probes this much later, as a farther or busier
    /// cluster would.
    pub delay: Option<std::time::Duration>,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The connection it came on, numbered from 1 in the order they were accepted.
    pub connection: u64,
    /// The user of the client certificate the connection presented (one the server issued
    /// with [`ApiServer::client_certificate`]), revoked or not.
    pub client_user: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// All headers, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any header name starts with `prefix` (case-insensitive).
    pub fn has_header_prefix(&self, prefix: &str) -> bool {
        let prefix = prefix.to_ascii_lowercase();
        self.headers.iter().any(|(n, _)| n.starts_with(&prefix))
    }
}

/// Server state shared by all connections.
pub struct State {
    options: Options,
    tokens: RwLock<Vec<String>>,
    /// Client certificates issued (DER) and their users.
    certificates: RwLock<Vec<(Vec<u8>, String)>>,
    /// Users whose certificates are no longer accepted.
    revoked: RwLock<Vec<String>>,
    requests: Mutex<Vec<Recorded>>,
    /// API groups this server has besides the core group's pods (discovery only).
    extra_resources: RwLock<Vec<ExtraResource>>,
    /// The pods.
    pub pods: PodStore,
    log_gate: Semaphore,
    /// Requests held open by the `stall` faults.
    stalled: faults::Stalled,
}

/// A running test API server, on a runtime of its own; stopped when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    state: Arc<State>,
    acceptor: tokio_rustls::TlsAcceptor,
    options: Options,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // Not a blocking shutdown: the server may be dropped inside an async test.
        self.stop();
    }
}

impl ApiServer {
    /// Serves on `listener` (which may live in another network namespace), accepting `token`.
    /// `names` are extra DNS names or IPs for the serving certificate.
    pub fn start(
        listener: std::net::TcpListener,
        token: &str,
        names: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_with(listener, token, names, Options::default())
    }

    /// [`ApiServer::start`] with `options`.
    pub fn start_with(
        listener: std::net::TcpListener,
        token: &str,
        names: &[String],
        options: Options,
    ) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let (ca_pem, issuer, tls) = tls_config(addr, names)?;
        let state = Arc::new(State {
            options,
            tokens: RwLock::new(vec![token.to_owned()]),
            certificates: RwLock::default(),
            revoked: RwLock::default(),
            requests: Mutex::default(),
            extra_resources: RwLock::default(),
            pods: PodStore::default(),
            log_gate: Semaphore::new(0),
            stalled: faults::Stalled::default(),
        });
        let mut server = Self {
            addr,
            ca_pem,
            issuer,
            state,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
            options,
            runtime: None,
        };
        server.resume(listener)?;
        Ok(server)
    }

    /// Stops serving, as a crashed API server would: the listener and every connection close.
    /// What it stored (pods, recorded requests) stays for [`ApiServer::resume`].
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Serves again on `listener`, with the same certificate, tokens and store.
    pub fn resume(&mut self, listener: std::net::TcpListener) -> anyhow::Result<()> {
        self.stop();
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        runtime.spawn(serve(
            listener,
            self.acceptor.clone(),
            Arc::clone(&self.state),
            self.options,
        ));
        self.runtime = Some(runtime);
        Ok(())
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The PEM of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate and key (PEM) from the server's CA, which it accepts as a user.
    pub fn client_certificate(&self, user: &str) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, user);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        self.state
            .certificates
            .write()
            .unwrap()
            .push((cert.der().to_vec(), user.to_owned()));
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Stops accepting `user`'s client certificates, on connections open or new.
    pub fn revoke_client_certificates(&self, user: &str) {
        self.state.revoked.write().unwrap().push(user.to_owned());
    }

    /// The shared state (pods, recorded requests).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Declares a resource `plural` of kind `kind` in `group/version`, which discovery then
    /// lists (as a CRD would make a real cluster list it).
    pub fn add_resource(&self, group: &str, version: &str, plural: &str, kind: &str) {
        self.state
            .extra_resources
            .write()
            .unwrap()
            .push(ExtraResource {
                group: group.to_owned(),
                version: version.to_owned(),
                plural: plural.to_owned(),
                kind: kind.to_owned(),
            });
    }

    /// Replaces the accepted tokens, e.g. to simulate rotation.
    pub fn set_tokens(&self, tokens: &[&str]) {
        *self.state.tokens.write().unwrap() = tokens.iter().map(|t| t.to_string()).collect();
    }

    /// Lets a `log?follow=true` stream that is waiting emit its next line.
    pub fn release_log_line(&self) {
        self.state.log_gate.add_permits(1);
    }

    /// Requests held open now by a `stall` or `stall-body` [fault](faults).
    pub fn stalled(&self) -> usize {
        self.state.stalled.count()
    }
}

/// The server's CA (PEM and signer) and a TLS configuration that accepts, but does not
/// require, client certificates from that CA.
fn tls_config(
    addr: SocketAddr,
    names: &[String],
) -> anyhow::Result<(String, Issuer<'static, KeyPair>, rustls::ServerConfig)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mca-test-apiserver-ca");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(SanType::IpAddress(addr.ip()));
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        });
    }
    let cert = params.signed_by(&key, &issuer)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let clients = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(clients)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((ca_cert.pem(), issuer, config))
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    options: Options,
) {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // kube-apiserver takes header blocks up to 1 MiB.
    http.http1().max_buf_size(1 << 20);
    http.http2().max_header_list_size(1 << 20);
    if let Some(max) = options.max_concurrent_streams {
        http.http2().max_concurrent_streams(max);
    }
    for connection in 1.. {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        // As Go's net/http, and so kube-apiserver, does: no Nagle delay on small writes.
        let _ = tcp.set_nodelay(true);
        let (acceptor, state, http) = (acceptor.clone(), Arc::clone(&state), http.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            // rustls verified it against the server's CA.
            let presented = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let client_user = presented.and_then(|der| {
                let issued = state.certificates.read().unwrap();
                let user = issued.iter().find(|(issued, _)| issued == der.as_ref());
                user.map(|(_, user)| user.clone())
            });
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                let client_user = client_user.clone();
                async move { Ok::<_, Infallible>(handle(state, request, connection, client_user).await) }
            });
            let _ = http
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
    connection: u64,
    client_user: Option<String>,
) -> Response<Body> {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |t| t.to_string());
    state.requests.lock().unwrap().push(Recorded {
        connection,
        client_user: client_user.clone(),
        method: request.method().to_string(),
        target: target.clone(),
        version: format!("{:?}", request.version()),
        headers: request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let certified = client_user.is_some_and(|user| !state.revoked.read().unwrap().contains(&user));
    if !certified && !authenticated(&state, &request) {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }

    if let Some(response) = faults::serve(&state, &request).await {
        return response;
    }
    let path = go_decode(request.uri().path());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(delay) = state.options.delay
        && !matches!(segments.as_slice(), ["readyz" | "livez" | "healthz"])
    {
        tokio::time::sleep(delay).await;
    }
    if request.method() == Method::GET {
        let extra = state.extra_resources.read().unwrap().clone();
        if let Some(response) =
            discovery::serve(&request, &segments, &extra, !state.options.legacy_discovery)
        {
            return response;
        }
        // A declared resource's collection: always empty (nothing of it is stored).
        if let ["apis", group, version, "namespaces", _, plural] = segments.as_slice()
            && let Some(resource) = extra
                .iter()
                .find(|r| r.group == *group && r.version == *version && r.plural == *plural)
        {
            return json_response(
                StatusCode::OK,
                &json!({"kind": format!("{}List", resource.kind),
                        "apiVersion": format!("{group}/{version}"),
                        "metadata": {"resourceVersion": "1"}, "items": []}),
            );
        }
    }
    match (request.method(), segments.as_slice()) {
        (&Method::GET, ["readyz" | "livez" | "healthz"]) => {
            bytes_response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"))
        }
        (&Method::GET, ["version"]) => json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-mca-test",
                    "platform": "linux/amd64"}),
        ),
        // The `kubernetes` Service's endpoints, which MCA intercepts too: an address with no
        // route in the pod, so only a redirect reaches anything. Or a 403, as most
        // ServiceAccounts get.
        (
            &Method::GET,
            [
                "apis",
                "discovery.k8s.io",
                "v1",
                "namespaces",
                "default",
                "endpointslices",
            ],
        ) => {
            if state.options.forbid_endpoint_slices {
                return status(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "endpointslices.discovery.k8s.io is forbidden",
                );
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                        "items": [{"metadata": {"name": "kubernetes"}, "addressType": "IPv4",
                                   "endpoints": [{"addresses": [API_ENDPOINT_IP]}],
                                   "ports": [{"name": "https", "port": API_ENDPOINT_PORT,
                                              "protocol": "TCP"}]}]}),
            )
        }
        (_, ["api", "v1", "namespaces", namespace, "pods", rest @ ..]) => {
            let (namespace, rest) = (namespace.to_string(), rest.join("/"));
            pods::route(state, request, &namespace, &rest).await
        }
        (&Method::GET, ["api", "v1", "pods"]) => pods::route(state, request, "", "").await,
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ),
    }
}

fn authenticated(state: &State, request: &Request<Incoming>) -> bool {
    let Some(presented) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    state.tokens.read().unwrap().iter().any(|t| t == presented)
}

/// A JSON response.
fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    bytes_response(code, "application/json", Bytes::from(value.to_string()))
}

fn bytes_response(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed_unsync());
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A Kubernetes `Status` failure.
fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// How long a waiting `log?follow=true` stream waits for [`ApiServer::release_log_line`].
const LOG_GATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The path as Go's `net/http` gives it to the API server: every `%XX` decoded (`%2F` too).
fn go_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
