//! The real API server and MCA's credentials for it.
//!
//! Configuration comes from kube's config loading, so MCA authenticates exactly as kube-rs
//! clients do: bearer tokens, token files, client certificates, exec plugins and kubeconfig
//! impersonation. The request path is a tower stack built from kube's own layers:
//!
//! ```text
//! BaseUri (cluster URL + request path) → ExtraHeaders (kubeconfig `as:`) → Auth → pool
//! ```
//!
//! Credentials in files (token files, client certificates) are the exception: MCA reads and
//! watches those itself ([`credential`]) to use a rotated one within moments, not kube's
//! minute, and sends a request refused with 401 once more when a newer one has appeared.
//!
//! The [`pool`] holds the connections: HTTP/2 where the server speaks it, as many connections
//! as the server's stream limit and the open watches require, and a connection of its own for
//! each `Upgrade` (exec, attach, port-forward), which exists only in HTTP/1.1.

mod body;
mod connect;
mod credential;
mod http1;
mod http2;
pub mod lines;
pub mod pool;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use crate::{
    limits::deadline::{Deadline, Expired},
    status::{Reason, Status},
};
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use kube::{
    Config,
    client::ConfigExt,
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use tokio_util::sync::DropGuard;
use tower::{BoxError, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

pub use self::{
    body::{Body, Entered, InFlight},
    pool::{KeepAlive, Limits, RequestClass, Stats},
};
use self::{
    connect::Dialer,
    credential::{Files, Replay},
    pool::Pool,
};

/// The largest response header block MCA takes from an API server; a larger one fails the
/// request (502) instead of growing MCA's memory.
const MAX_RESPONSE_HEADER_BYTES: usize = 1 << 20;

/// The request body MCA forwards upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

type UpstreamService = BoxCloneSyncService<Request<UpstreamBody>, Response<Body>, BoxError>;

/// Where MCA's upstream configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// In-cluster: MCA's own ServiceAccount and `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster {
        /// The real ServiceAccount directory (`token`, `ca.crt`, `namespace`).
        sa_dir: PathBuf,
        /// The API server host, an IP or a name.
        host: String,
        /// The API server port.
        port: u16,
    },
    /// A kubeconfig file (or kube's default search when `path` is `None`), for local use.
    Kubeconfig {
        /// The kubeconfig path.
        path: Option<PathBuf>,
        /// The context; the current context when `None`.
        context: Option<String>,
    },
    /// A kubeconfig built from MCA's configuration file, using its current context.
    Inline(Box<Kubeconfig>),
}

/// Errors while loading the upstream configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ServiceAccount directory is incomplete.
    #[error("reading {path}: {source}")]
    ServiceAccount {
        /// The file that could not be read.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// `ca.crt` holds no usable certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The CA file.
        path: PathBuf,
    },
    /// The host/port do not form a URL.
    #[error("invalid API server address {0}")]
    Address(String),
    /// kube could not load or use the kubeconfig.
    #[error("loading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// kube could not build TLS or auth from the configuration.
    #[error("configuring the upstream client: {0}")]
    Client(#[from] kube::Error),
    /// A credential file cannot be used.
    #[error(transparent)]
    Credential(#[from] credential::Error),
}

/// A connection to `url` took longer than the connect timeout (TCP and TLS together).
#[derive(Debug, thiserror::Error)]
#[error("connecting to the API server timed out after {0:?}")]
pub struct ConnectTimeout(pub Duration);

/// The real API server: its URL, MCA's namespace there, and the authenticated client.
#[derive(Clone)]
pub struct Upstream {
    url: Uri,
    namespace: String,
    pool: Pool,
    service: UpstreamService,
    /// Credential files MCA keeps current itself, if any.
    files: Option<Arc<Files>>,
    /// Ends the task that watches them when the last handle goes.
    _watching: Option<Arc<DropGuard>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Loads the configuration from `source` and builds the client.
    pub async fn load(source: &Source, limits: Limits) -> Result<Self, Error> {
        let config = match source {
            Source::InCluster { sa_dir, host, port } => in_cluster_config(sa_dir, host, *port)?,
            Source::Kubeconfig { path, context } => {
                let options = KubeConfigOptions {
                    context: context.clone(),
                    ..KubeConfigOptions::default()
                };
                match path {
                    Some(path) => {
                        let kubeconfig = Kubeconfig::read_from(path)?;
                        Config::from_custom_kubeconfig(kubeconfig, &options).await?
                    }
                    None => Config::from_kubeconfig(&options).await?,
                }
            }
            Source::Inline(kubeconfig) => {
                let options = KubeConfigOptions::default();
                Config::from_custom_kubeconfig((**kubeconfig).clone(), &options).await?
            }
        };
        Self::from_config(config, limits)
    }

    /// Builds the client for a kube configuration.
    pub fn from_config(config: Config, limits: Limits) -> Result<Self, Error> {
        let dialer = Dialer::new(
            &config.cluster_url,
            config.rustls_client_config()?,
            config.tls_server_name.as_deref(),
        )?;
        let pool = Pool::new(dialer, limits);
        let files = Files::of(&config)?.map(Arc::new);
        let service = {
            let pool = pool.clone();
            tower::service_fn(move |request| {
                let pool = pool.clone();
                async move { pool.send(request).await }
            })
        };
        let kube_auth = !files.as_ref().is_some_and(|files| files.has_token());
        Ok(Self {
            url: config.cluster_url.clone(),
            namespace: config.default_namespace.clone(),
            service: stack(&config, kube_auth, service)?,
            _watching: files
                .as_ref()
                .map(|files| Arc::new(credential::keep_current(Arc::clone(files), pool.clone()))),
            pool,
            files,
        })
    }

    /// The API server's URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// MCA's namespace: the real ServiceAccount's, or the kubeconfig context's.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// What the connection pool holds now.
    pub fn stats(&self) -> Stats {
        self.pool.stats()
    }

    /// Sends a request (its URI only a path and query) with MCA's credentials; `class` says how
    /// long it will hold its connection. Refused with 401 while a newer credential has
    /// appeared in MCA's files, it is sent once more with that one (if its body was kept).
    /// A [`Deadline`] among the request's extensions bounds the answer, body included.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
        class: RequestClass,
    ) -> Result<Response<Body>, BoxError> {
        let Some(deadline) = request.extensions().get::<Deadline>().copied() else {
            return self.send_authorized(request, class).await;
        };
        match tokio::time::timeout_at(deadline.at(), self.send_authorized(request, class)).await {
            Ok(response) => Ok(response?.map(|body| body.until(deadline))),
            Err(_) => Err(deadline.expired().into()),
        }
    }

    async fn send_authorized(
        &self,
        mut request: Request<UpstreamBody>,
        class: RequestClass,
    ) -> Result<Response<Body>, BoxError> {
        let Some(files) = &self.files else {
            request.extensions_mut().insert(class);
            return self.service.clone().oneshot(request).await;
        };
        let (mut request, replay) = Replay::keep(request).await?;
        request.extensions_mut().insert(class);
        let generation = files.authorize(&mut request);
        let response = self.service.clone().oneshot(request).await?;
        if response.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        // Re-read even when this request cannot be sent again, so the next one can.
        let renewed = files.renewed_since(generation, &self.pool);
        let Some(replay) = replay.filter(|_| renewed) else {
            return Ok(response);
        };
        tracing::info!("the API server refused the credential just replaced; sending again");
        let mut request = replay.request();
        request.extensions_mut().insert(class);
        files.authorize(&mut request);
        self.service.clone().oneshot(request).await
    }
}

/// The request line, headers and deadline of a request, for sending it again.
pub(crate) fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(());
    *head.method_mut() = parts.method.clone();
    *head.uri_mut() = parts.uri.clone();
    *head.version_mut() = parts.version;
    *head.headers_mut() = parts.headers.clone();
    if let Some(&deadline) = parts.extensions.get::<Deadline>() {
        head.extensions_mut().insert(deadline);
    }
    head.into_parts().0
}

/// The `Status` a client gets when a request could not be forwarded: 504 when the API server
/// did not answer in time, 503 when it cannot be reached or MCA has no usable credentials, 502
/// when TLS or HTTP with it failed. The message says what happened without any credential.
pub fn failure_status(error: &BoxError) -> Status {
    use http::StatusCode;

    let message = error_chain(error.as_ref());
    for error in causes(error.as_ref()) {
        if error.is::<pool::Exhausted>() {
            return Status::new(
                StatusCode::TOO_MANY_REQUESTS,
                Reason::TooManyRequests,
                message,
            )
            .retry_after(1);
        }
        if error.is::<ConnectTimeout>() || error.is::<Expired>() {
            return Status::new(StatusCode::GATEWAY_TIMEOUT, Reason::Timeout, message);
        }
        if error.is::<kube::client::AuthError>() {
            return Status::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::ServiceUnavailable,
                format!("MCA has no usable credentials for the API server: {message}"),
            );
        }
        if error.is::<rustls::Error>() {
            return Status::new(
                StatusCode::BAD_GATEWAY,
                Reason::InternalError,
                format!("TLS with the API server failed: {message}"),
            );
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                TimedOut => {
                    return Status::new(StatusCode::GATEWAY_TIMEOUT, Reason::Timeout, message);
                }
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
                | NotFound => {
                    return Status::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        Reason::ServiceUnavailable,
                        format!("the API server is unreachable: {message}"),
                    );
                }
                _ => {}
            }
        }
    }
    if causes(error.as_ref()).any(|error| error.is::<pool::ConnectError>()) {
        Status::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Reason::ServiceUnavailable,
            format!("the API server is unreachable: {message}"),
        )
    } else {
        Status::new(
            StatusCode::BAD_GATEWAY,
            Reason::InternalError,
            format!("forwarding to the API server failed: {message}"),
        )
    }
}

/// The `message` of the Status an API server answered an error with (from the first
/// 64 KiB of `body`), else the body as text.
pub async fn error_message(body: Body) -> String {
    let body = http_body_util::Limited::new(body, 64 << 10);
    let Ok(body) = http_body_util::BodyExt::collect(body).await else {
        return "(no readable answer)".to_owned();
    };
    let body = body.to_bytes();
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(status) if status["message"].is_string() => {
            status["message"].as_str().unwrap_or_default().to_owned()
        }
        _ => String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Whether a request failed because no connection to the API server could be made (as
/// opposed to MCA's own limits, or a failure after connecting): what health checking counts.
pub fn is_connect_failure(error: &BoxError) -> bool {
    causes(error.as_ref()).any(|e| e.is::<pool::ConnectError>() || e.is::<ConnectTimeout>())
}

/// An error and its causes, outermost first. An `io::Error` wrapping another error reports
/// the wrapped error's *source* as its own, skipping the wrapped error itself (hyper-rustls
/// wraps tokio-rustls's `io::Error`, which wraps the `rustls::Error`), so step into it.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| {
        match error.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as _),
            None => error.source(),
        }
    })
}

/// `outer: inner: innermost`, skipping links that only repeat their cause's text. A
/// credential's failure ends the chain with what [`credential_failure`] says of it.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let chain: Vec<_> = causes(error).collect();
    // Links wrapping the credential's error repeat its text (`io::Error::other` does).
    let credential = chain
        .iter()
        .find_map(|error| error.downcast_ref::<kube::client::AuthError>());
    let credential_text = credential.map(ToString::to_string);
    let mut parts: Vec<String> = Vec::new();
    for error in chain {
        if let Some(auth) = error.downcast_ref::<kube::client::AuthError>() {
            parts.push(credential_failure(auth));
            break;
        }
        let text = error.to_string();
        if credential_text
            .as_ref()
            .is_some_and(|t| text.contains(t.as_str()))
        {
            continue;
        }
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// What went wrong with a cluster's credential, for a `Status`, a health problem or a log
/// line: never an exec plugin's command, arguments or output (kube's own text for a failed
/// plugin has all three, and a plugin may print a credential), nor a parser's echo of it.
fn credential_failure(error: &kube::client::AuthError) -> String {
    use kube::client::AuthError::*;
    match error {
        AuthExecRun { out, .. } => format!("its exec plugin failed ({})", out.status),
        AuthExecParse(_) | ParseTokenKey(_) | ExecPluginFailed => {
            "its exec plugin's answer is not an ExecCredential with a status".to_owned()
        }
        AuthExec(_) | AuthExecSerialize(_) => "its exec plugin failed".to_owned(),
        UnrefreshableTokenResponse => "its auth provider failed to give a token".to_owned(),
        // These name a file, a missing field or a malformed header, never a secret.
        AuthExecStart(_)
        | ReadTokenFile(..)
        | InvalidBasicAuth(_)
        | InvalidBearerToken(_)
        | MissingCommand
        | ExecMissingClusterInfo
        | NoValidNativeRootCA(_)
        | MalformedTokenExpirationDate(_) => error.to_string(),
    }
}

/// kube's middleware around the pool, boxed.
fn stack<S>(config: &Config, kube_auth: bool, pool: S) -> Result<UpstreamService, Error>
where
    S: tower::Service<Request<UpstreamBody>, Response = Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(config.extra_headers_layer()?)
        .option_layer(if kube_auth {
            config.auth_layer()?
        } else {
            None
        })
        // kube's auth layer is an `Either` of two services that must fail alike.
        .service(pool);
    Ok(BoxCloneSyncService::new(service))
}

/// The in-cluster configuration kube's `Config::incluster_env` builds, but reading the
/// ServiceAccount from `sa_dir` rather than the fixed path: MCA's real ServiceAccount is
/// mounted somewhere the application cannot see it.
fn in_cluster_config(sa_dir: &Path, host: &str, port: u16) -> Result<Config, Error> {
    let read = |name: &str| {
        let path = sa_dir.join(name);
        std::fs::read(&path).map_err(|source| Error::ServiceAccount { path, source })
    };
    let namespace = String::from_utf8_lossy(&read("namespace")?)
        .trim()
        .to_owned();
    let ca_path = sa_dir.join("ca.crt");
    let roots: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&read("ca.crt")?)
        .filter_map(Result::ok)
        .map(|der| der.to_vec())
        .collect();
    if roots.is_empty() {
        return Err(Error::NoCertificate { path: ca_path });
    }
    // Fail now, not on the first request, if the token is missing.
    read("token")?;

    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let url: Uri = format!("https://{authority}")
        .parse()
        .map_err(|_| Error::Address(authority))?;
    let mut config = Config::new(url);
    config.default_namespace = namespace;
    config.root_cert = Some(roots);
    config.root_cert_file = Some(ca_path);
    config.auth_info = AuthInfo {
        token_file: Some(sa_dir.join("token").to_string_lossy().into_owned()),
        ..AuthInfo::default()
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_status_codes() {
        let timeout: BoxError = ConnectTimeout(Duration::from_secs(1)).into();
        assert_eq!(failure_status(&timeout).code, 504);
        let refused: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        assert_eq!(failure_status(&refused).code, 503);
        // As hyper-rustls reports it: io::Error(Other, io::Error(InvalidData, rustls::Error)).
        let tls: BoxError = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ))
        .into();
        let status = failure_status(&tls);
        assert_eq!(status.code, 502);
        assert!(
            status.message.contains("UnknownIssuer"),
            "{}",
            status.message
        );
        let other: BoxError = "connection closed before message completed".into();
        assert_eq!(failure_status(&other).code, 502);

        let expired: BoxError = Expired(Duration::from_secs(60)).into();
        let status = failure_status(&expired);
        assert_eq!(
            (status.code.as_u16(), status.reason),
            (504, Reason::Timeout)
        );
        for kind in [
            std::io::ErrorKind::NetworkUnreachable,
            std::io::ErrorKind::HostUnreachable,
        ] {
            let unreachable: BoxError = std::io::Error::from(kind).into();
            let status = failure_status(&unreachable);
            assert_eq!(status.code, 503, "{kind:?}");
            assert!(status.message.contains("unreachable"), "{}", status.message);
        }
        let no_credential: BoxError =
            kube::client::AuthError::AuthExecStart(std::io::Error::other("no such plugin")).into();
        let status = failure_status(&no_credential);
        assert_eq!(status.code, 503);
        assert!(
            status.message.contains("no usable credentials"),
            "{}",
            status.message
        );
    }

    #[test]
    fn a_failed_exec_plugin_is_reported_without_its_command_arguments_or_output() {
        use std::os::unix::process::ExitStatusExt as _;
        let out = std::process::Output {
            status: std::process::ExitStatus::from_raw(1 << 8),
            stdout: b"{\"status\": {\"token\": \"SECRET-OUT\"}}".to_vec(),
            stderr: b"SECRET-ERR".to_vec(),
        };
        let failed = kube::client::AuthError::AuthExecRun {
            cmd: "/bin/plugin --password SECRET-ARG".to_owned(),
            out: Box::new(out),
        };
        // As the request failed: the auth layer's error inside hyper-util's and tower's.
        let error: BoxError = std::io::Error::other(failed).into();
        let status = failure_status(&error);
        assert_eq!(status.code, 503);
        assert!(!status.message.contains("SECRET"), "{}", status.message);
        assert!(
            status
                .message
                .contains("its exec plugin failed (exit status: 1)"),
            "{}",
            status.message
        );
    }

    #[test]
    fn in_cluster_reads_the_given_directory() {
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::tls::CertAuthority::generate(
            std::time::Duration::from_secs(60),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        std::fs::write(dir.path().join("namespace"), "team-a\n").unwrap();
        let config = in_cluster_config(dir.path(), "fd00::1", 443).unwrap();
        assert_eq!(config.cluster_url, "https://[fd00::1]:443/");
        assert_eq!(config.default_namespace, "team-a");
        assert_eq!(config.root_cert.unwrap().len(), 1);
        assert!(config.auth_info.token_file.unwrap().ends_with("/token"));
    }

    #[test]
    fn in_cluster_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = in_cluster_config(dir.path(), "10.0.0.1", 443).unwrap_err();
        assert!(error.to_string().contains("namespace"), "{error}");
        std::fs::write(dir.path().join("namespace"), "ns").unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let error = in_cluster_config(dir.path(), "10.0.0.1", 443).unwrap_err();
        assert!(matches!(error, Error::NoCertificate { .. }), "{error}");
    }
}
