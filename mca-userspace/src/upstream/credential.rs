//! MCA's credentials that live in files replaced while it runs, kept current within moments:
//! a token file (the in-cluster ServiceAccount token, a cluster's `tokenFile`), sent as the
//! bearer token, and a client certificate and key, presented when connecting.
//!
//! kube re-reads a token file about once a minute and a client certificate never. When the
//! old credential is revoked the moment the new one is written (a recreated ServiceAccount,
//! an API server restarted with new keys), that costs the application up to a minute of
//! 401s. So MCA takes these files over from kube: it watches their directories
//! ([`crate::watch`]) and uses new content as soon as it is complete; a new client
//! certificate also retires the connections made with the old one. And a request the API
//! server refuses with 401 while the files hold something newer than what the request
//! carried is sent once more with the new credential, if MCA still has all of it: an empty
//! body, or one small enough to keep ([`Replay`]). A streamed body is never sent twice.
//!
//! Token files are trimmed, as client-go does, so a token written with a trailing newline
//! works.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use kube::{Config, client::ConfigExt};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{UpstreamBody, pool::Pool};
use crate::watch::Subscription;

/// The largest request body kept so the request can be sent again after a 401. Writes to the
/// API server are mostly far smaller; larger ones stream and are not retried.
const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// A credential file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// It holds no token, or one that cannot be sent in a header.
    #[error("{0} holds no usable token")]
    NoToken(PathBuf),
}

/// The credential files of one API server.
#[derive(Debug)]
pub struct Files {
    token: Option<TokenFile>,
    identity: Option<Identity>,
    /// Counts changes to either, so a refused request can tell whether it carried the latest.
    generation: AtomicU64,
}

#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    /// `Bearer <token>`, marked sensitive.
    header: ArcSwap<HeaderValue>,
}

struct Identity {
    certificate: PathBuf,
    key: PathBuf,
    /// The certificate and key last read, to notice a change.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
    /// The cluster's configuration, to build TLS from the new files exactly as kube does.
    config: Config,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificate", &self.certificate)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Files {
    /// The credential files MCA keeps current for `config`: its token file when that is the
    /// credential kube would use (no provider, basic auth or inline token before it), its
    /// client certificate and key when both are files and no exec plugin supplies them.
    /// `None` when there are none: kube's own auth then does everything.
    pub fn of(config: &Config) -> Result<Option<Self>, Error> {
        let auth = &config.auth_info;
        let earlier = auth.auth_provider.is_some()
            || (auth.username.is_some() && auth.password.is_some())
            || auth.token.is_some();
        let token = match &auth.token_file {
            Some(path) if !earlier => {
                let path = PathBuf::from(path);
                Some(TokenFile {
                    header: ArcSwap::from_pointee(read_token(&path)?),
                    path,
                })
            }
            _ => None,
        };
        let identity = match (&auth.client_certificate, &auth.client_key) {
            (Some(certificate), Some(key))
                if auth.client_certificate_data.is_none()
                    && auth.client_key_data.is_none()
                    && auth.exec.is_none() =>
            {
                let (certificate, key) = (PathBuf::from(certificate), PathBuf::from(key));
                Some(Identity {
                    loaded: Mutex::new((read(&certificate)?, read(&key)?)),
                    certificate,
                    key,
                    config: config.clone(),
                })
            }
            _ => None,
        };
        Ok((token.is_some() || identity.is_some()).then(|| Self {
            token,
            identity,
            generation: AtomicU64::new(0),
        }))
    }

    /// Whether MCA sends the bearer token itself (kube's auth layer must then stay out).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Adds the current token to `request`; returns the generation it belongs to.
    pub fn authorize<B>(&self, request: &mut Request<B>) -> u64 {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(token) = &self.token {
            let header = HeaderValue::clone(&token.header.load());
            request.headers_mut().insert(header::AUTHORIZATION, header);
        }
        generation
    }

    /// Re-reads the files and starts using what changed; whether anything did. A file that
    /// cannot be read or used (mid-write, removed) leaves the credential in use as it is.
    pub fn reload(&self, pool: &Pool) -> bool {
        let mut changed = false;
        if let Some(token) = &self.token {
            match read_token(&token.path) {
                Ok(header) if header != **token.header.load() => {
                    token.header.store(Arc::new(header));
                    tracing::info!(file = %token.path.display(), "using the renewed token");
                    changed = true;
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(%error, "keeping the token in use"),
            }
        }
        if let Some(identity) = &self.identity {
            changed |= identity.reload(pool);
        }
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// After a 401 to a request that carried `generation`: whether the files now hold a newer
    /// credential to send it with.
    pub fn renewed_since(&self, generation: u64, pool: &Pool) -> bool {
        self.reload(pool);
        self.generation.load(Ordering::Acquire) != generation
    }

    fn paths(&self) -> Vec<PathBuf> {
        let token = self.token.iter().map(|t| t.path.clone());
        let identity = self
            .identity
            .iter()
            .flat_map(|i| [i.certificate.clone(), i.key.clone()]);
        token.chain(identity).collect()
    }
}

impl Identity {
    fn reload(&self, pool: &Pool) -> bool {
        let (certificate, key) = match (read(&self.certificate), read(&self.key)) {
            (Ok(certificate), Ok(key)) => (certificate, key),
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "keeping the client certificate in use");
                return false;
            }
        };
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if *loaded == (certificate.clone(), key.clone()) {
            return false;
        }
        // A certificate and key written one after the other do not match in between: keep
        // the old pair until the new one works.
        match self.config.rustls_client_config() {
            Ok(tls) => {
                pool.renew_tls(tls);
                *loaded = (certificate, key);
                tracing::info!(
                    certificate = %self.certificate.display(),
                    "using the renewed client certificate; connections made with the old one \
                     close when their requests end"
                );
                true
            }
            Err(error) => {
                tracing::debug!(%error, "the client certificate and key do not work together yet");
                false
            }
        }
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_token(path: &std::path::Path) -> Result<HeaderValue, Error> {
    let text = read(path)?;
    let token = text.trim_ascii();
    if token.is_empty() {
        return Err(Error::NoToken(path.to_owned()));
    }
    let mut header = HeaderValue::from_bytes(&[b"Bearer ", token].concat())
        .map_err(|_| Error::NoToken(path.to_owned()))?;
    header.set_sensitive(true);
    Ok(header)
}

/// Keeps `files` current until the returned guard is dropped (with the last handle on the
/// upstream).
pub fn keep_current(files: Arc<Files>, pool: Pool) -> DropGuard {
    let stop = CancellationToken::new();
    let subscription = Subscription::new(&files.paths());
    tokio::spawn({
        let stop = stop.clone();
        async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = subscription.changed() => {}
                }
                files.reload(&pool);
            }
        }
    });
    stop.drop_guard()
}

/// What MCA keeps of a request to send it again.
#[derive(Debug)]
pub struct Replay {
    head: http::request::Parts,
    body: Bytes,
}

impl Replay {
    /// Reads a small body in full (larger ones keep streaming and `None` is returned with
    /// the request), so the request can be sent again.
    pub async fn keep(
        request: Request<UpstreamBody>,
    ) -> Result<(Request<UpstreamBody>, Option<Self>), hyper::Error> {
        use http_body::Body;

        let (head, body) = request.into_parts();
        let small = body.is_end_stream()
            || body
                .size_hint()
                .exact()
                .is_some_and(|size| size <= MAX_REPLAY_BODY);
        if !small {
            return Ok((Request::from_parts(head, body), None));
        }
        let body = body.collect().await?.to_bytes();
        let replay = Self {
            head: super::copy_head(&head),
            body: body.clone(),
        };
        Ok((Request::from_parts(head, full(body)), Some(replay)))
    }

    /// The request again.
    pub fn request(self) -> Request<UpstreamBody> {
        Request::from_parts(self.head, full(self.body))
    }
}

fn full(body: Bytes) -> UpstreamBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_trimmed_and_must_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        let header = read_token(&path).unwrap();
        assert_eq!(header, "Bearer abc");
        assert!(header.is_sensitive());
        for bad in ["", " \n", "a\nb"] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(read_token(&path), Err(Error::NoToken(_))),
                "{bad:?}"
            );
        }
        let missing = read_token(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    fn config_with(auth: kube::config::AuthInfo) -> Config {
        let mut config = Config::new("https://127.0.0.1:6443".parse().unwrap());
        config.auth_info = auth;
        config
    }

    #[test]
    fn mca_takes_the_token_file_only_where_kube_would_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file").unwrap();
        let file = Some(path.to_string_lossy().into_owned());
        let with_file = kube::config::AuthInfo {
            token_file: file.clone(),
            ..Default::default()
        };
        let files = Files::of(&config_with(with_file)).unwrap().unwrap();
        let mut request = Request::new(());
        files.authorize(&mut request);
        assert_eq!(request.headers()["authorization"], "Bearer from-file");

        // An inline token comes first, for kube as for MCA.
        let inline = kube::config::AuthInfo {
            token: Some("inline".to_owned().into()),
            token_file: file,
            ..Default::default()
        };
        assert!(Files::of(&config_with(inline)).unwrap().is_none());
    }

    #[tokio::test]
    async fn small_bodies_are_kept_and_large_ones_stream() {
        let request = |body: UpstreamBody| {
            Request::post("/api/v1/namespaces/a/configmaps")
                .header("content-type", "application/json")
                .body(body)
                .unwrap()
        };
        let small = Bytes::from_static(b"{\"kind\":\"ConfigMap\"}");
        let (sent, replay) = Replay::keep(request(full(small.clone()))).await.unwrap();
        let again = replay.unwrap().request();
        assert_eq!(again.method(), "POST");
        assert_eq!(again.headers()["content-type"], "application/json");
        for body in [sent.into_body(), again.into_body()] {
            assert_eq!(body.collect().await.unwrap().to_bytes(), small);
        }

        let large = Bytes::from(vec![b'x'; MAX_REPLAY_BODY as usize + 1]);
        let (sent, replay) = Replay::keep(request(full(large.clone()))).await.unwrap();
        assert!(replay.is_none());
        assert_eq!(sent.into_body().collect().await.unwrap().to_bytes(), large);
    }
}
