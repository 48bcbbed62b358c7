//! The fake credentials the application gets instead of real ones: a ServiceAccount directory
//! and a kubeconfig.
//!
//! In-cluster clients read three files from `/var/run/secrets/kubernetes.io/serviceaccount`:
//! `ca.crt` to verify the API server, `token` to authenticate, `namespace` as their default
//! namespace. MCA writes its own CA, its client token (see [`crate::client_auth`]; with
//! `--client-auth=none` a placeholder) and the real namespace there.
//!
//! The kubeconfig offers the same credentials with one context per cluster, whose server is
//! `https://<listen>/clusters/<name>`, so `kubectl --context east` reaches the cluster `east`
//! whatever the routes say, and a context `mca` (the current one) that leaves it to the
//! routes.
//!
//! Every file is written to a temporary name and renamed into place, so a client never reads
//! a half-written file even if it starts while MCA is (re)writing them.
//!
//! MCA only ever replaces files it wrote itself: the kubeconfig carries an extension naming
//! MCA ([`KUBECONFIG_EXTENSION`]), the ServiceAccount directory a marker file
//! ([`OWNED_MARKER`]). A path that holds anything else, such as the user's own kubeconfig
//! (`--kubeconfig ./kubeconfig` with the default `--fake-kubeconfig` beside `./fake-sa`), is
//! refused with an error naming the flag, never overwritten.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
    NamedExtension,
};

/// The token written with `--client-auth=none`. It must not be empty: several client
/// libraries (the Python `kubernetes` client among them) treat an empty token file as "no
/// in-cluster config". MCA strips it from every request, so its value carries no authority.
pub const PLACEHOLDER_TOKEN: &str = "mca-placeholder-token";

/// The kubeconfig extension that marks a kubeconfig as MCA's fake one: MCA replaces such a
/// file, and refuses it as an upstream (it would send MCA's requests to MCA).
pub const KUBECONFIG_EXTENSION: &str = "mca.io/fake-kubeconfig";
/// The file that marks a directory as MCA's fake ServiceAccount.
pub const OWNED_MARKER: &str = ".mca-fake-serviceaccount";

/// Errors while provisioning the fake ServiceAccount or kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be written.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The path holds something MCA did not write.
    #[error(
        "{path} exists and was not written by MCA: refusing to overwrite it; give MCA a path \
         of its own with {flag}"
    )]
    NotOurs {
        /// The path.
        path: PathBuf,
        /// The flag that chooses it.
        flag: &'static str,
    },
}

impl Error {
    fn write(path: &Path, source: std::io::Error) -> Self {
        Self::Write {
            path: path.to_owned(),
            source,
        }
    }
}

/// Writes `ca.crt`, `token` and `namespace` into `dir`, creating it if needed.
///
/// `ca.crt` is written last: clients that wait for it (as a sign the directory is complete)
/// then find the other two already in place. A directory that is neither empty nor marked
/// as MCA's is refused.
pub fn provision(dir: &Path, ca_pem: &str, token: &str, namespace: &str) -> Result<(), Error> {
    claim_directory(dir)?;
    write_atomically(&dir.join("namespace"), namespace.as_bytes(), 0o644)?;
    write_token(dir, token)?;
    write_atomically(&dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)
}

/// Replaces the `token` file (after the client token was renewed).
pub fn write_token(dir: &Path, token: &str) -> Result<(), Error> {
    write_atomically(&dir.join("token"), token.as_bytes(), 0o644)
}

/// The context that leaves the choice of cluster to MCA's routes.
pub const ROUTED_CONTEXT: &str = "mca";

/// Writes the fake kubeconfig to `path`: MCA's CA, the client `token`, `namespace` as every
/// context's namespace, the context [`ROUTED_CONTEXT`] (current) and one per cluster.
pub fn write_kubeconfig(
    path: &Path,
    ca_pem: &str,
    token: &str,
    listen: SocketAddr,
    namespace: &str,
    clusters: &[&str],
) -> Result<(), Error> {
    if path.exists() && !is_fake_kubeconfig(path) {
        return Err(Error::NotOurs {
            path: path.to_owned(),
            flag: "--fake-kubeconfig",
        });
    }
    let kubeconfig = fake_kubeconfig(ca_pem, token, listen, namespace, clusters);
    let json = serde_json::to_vec_pretty(&kubeconfig).expect("a kubeconfig always serializes");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    }
    write_atomically(path, &json, 0o644)
}

/// Whether `path` is a kubeconfig MCA wrote (one carrying [`KUBECONFIG_EXTENSION`]).
///
/// MCA writes JSON, so the file is read as JSON: a file that is not JSON was not written by
/// MCA. Reading it as a kubeconfig (YAML) would page the YAML parser into every restarted
/// sidecar, which otherwise never runs it: 1.5 MB of resident code in an in-cluster MCA
/// (docs/benchmarks.md).
pub fn is_fake_kubeconfig(path: &Path) -> bool {
    /// The one part of a kubeconfig that tells.
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(default)]
        extensions: Vec<Extension>,
    }
    #[derive(serde::Deserialize)]
    struct Extension {
        name: String,
    }
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Marked>(&bytes).ok())
        .is_some_and(|marked| {
            marked
                .extensions
                .iter()
                .any(|extension| extension.name == KUBECONFIG_EXTENSION)
        })
}

/// Creates `dir` with MCA's marker in it, or checks that an existing one is MCA's (marked) or
/// empty.
fn claim_directory(dir: &Path) -> Result<(), Error> {
    let marker = dir.join(OWNED_MARKER);
    if marker.exists() {
        return Ok(());
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::NotOurs {
                    path: dir.to_owned(),
                    flag: "--fake-sa-dir",
                });
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
        }
        Err(error) => return Err(Error::write(dir, error)),
    }
    let text = "This directory is MCA's fake ServiceAccount: MCA rewrites its files.\n";
    write_atomically(&marker, text.as_bytes(), 0o644)
}

fn fake_kubeconfig(
    ca_pem: &str,
    token: &str,
    listen: SocketAddr,
    namespace: &str,
    clusters: &[&str],
) -> Kubeconfig {
    // An unspecified listen address is reached on loopback.
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => std::net::Ipv4Addr::LOCALHOST.into(),
        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let base = format!("https://{}", SocketAddr::new(ip, listen.port()));
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let entry = |name: &str, server: String| {
        let cluster = NamedCluster {
            name: name.to_owned(),
            cluster: Some(Cluster {
                server: Some(server),
                certificate_authority_data: Some(ca.clone()),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        };
        let context = NamedContext {
            name: name.to_owned(),
            context: Some(Context {
                cluster: name.to_owned(),
                user: Some(ROUTED_CONTEXT.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Context::default()
            }),
            ..NamedContext::default()
        };
        (cluster, context)
    };
    let (named_clusters, contexts) = std::iter::once(entry(ROUTED_CONTEXT, base.clone()))
        .chain(
            clusters
                .iter()
                .map(|name| entry(name, format!("{base}/clusters/{name}"))),
        )
        .unzip();
    Kubeconfig {
        clusters: named_clusters,
        contexts,
        auth_infos: vec![NamedAuthInfo {
            name: ROUTED_CONTEXT.to_owned(),
            auth_info: Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..AuthInfo::default()
            }),
            ..NamedAuthInfo::default()
        }],
        current_context: Some(ROUTED_CONTEXT.to_owned()),
        extensions: Some(vec![NamedExtension {
            name: KUBECONFIG_EXTENSION.to_owned(),
            extension: serde_json::json!({
                "writtenBy": concat!("mca ", env!("CARGO_PKG_VERSION")),
                "note": "fake credentials for the application; MCA rewrites this file",
            }),
        }]),
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        ..Kubeconfig::default()
    }
}

/// Writes `contents` to a temporary name beside `path` and renames it into place.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;

    let err = |source| Error::write(path, source);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.mca-tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_all_three_files_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("sa");
        provision(&sa, "CA", "token-1", "team-a").unwrap();
        // A second provision (e.g. after a CA change) replaces the files in place.
        provision(&sa, "CA2", "token-1", "team-a").unwrap();
        write_token(&sa, "token-2").unwrap();
        let read = |f: &str| std::fs::read_to_string(sa.join(f)).unwrap();
        assert_eq!(read("ca.crt"), "CA2");
        assert_eq!(read("namespace"), "team-a");
        assert_eq!(read("token"), "token-2");
        let mut names: Vec<_> = std::fs::read_dir(&sa)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [OWNED_MARKER, "ca.crt", "namespace", "token"]);
    }

    #[test]
    fn a_directory_mca_did_not_write_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "the user's").unwrap();
        let error = provision(dir.path(), "CA", "token", "ns").unwrap_err();
        assert!(
            matches!(
                error,
                Error::NotOurs {
                    flag: "--fake-sa-dir",
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("--fake-sa-dir"), "{error}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("token")).unwrap(),
            "the user's"
        );
        // An empty directory (an emptyDir volume) is MCA's to fill.
        let empty = tempfile::tempdir().unwrap();
        provision(empty.path(), "CA", "token", "ns").unwrap();
        assert!(empty.path().join(OWNED_MARKER).exists());
    }

    #[test]
    fn a_kubeconfig_mca_did_not_write_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let listen = "127.0.0.1:6443".parse().unwrap();
        let users = "apiVersion: v1\nkind: Config\nclusters: []\n";
        std::fs::write(&path, users).unwrap();
        let error = write_kubeconfig(&path, "CA", "t", listen, "ns", &[]).unwrap_err();
        assert!(error.to_string().contains("--fake-kubeconfig"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), users);
        assert!(!is_fake_kubeconfig(&path));
        // Not even a file that is no kubeconfig at all.
        std::fs::write(&path, "notes").unwrap();
        assert!(write_kubeconfig(&path, "CA", "t", listen, "ns", &[]).is_err());
        // Nor one that names MCA's extension without MCA having written it.
        let yaml = format!("extensions:\n- name: {KUBECONFIG_EXTENSION}\n  extension: {{}}\n");
        std::fs::write(&path, &yaml).unwrap();
        assert!(write_kubeconfig(&path, "CA", "t", listen, "ns", &[]).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), yaml);
        // MCA's own is rewritten.
        std::fs::remove_file(&path).unwrap();
        write_kubeconfig(&path, "CA", "t1", listen, "ns", &[]).unwrap();
        assert!(is_fake_kubeconfig(&path));
        write_kubeconfig(&path, "CA", "t2", listen, "ns", &[]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("t2"));
    }

    #[test]
    fn kubeconfig_has_a_routed_context_and_one_per_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let listen = "0.0.0.0:6443".parse().unwrap();
        write_kubeconfig(
            &path,
            "CA PEM",
            "the-token",
            listen,
            "team-a",
            &["local", "east"],
        )
        .unwrap();
        // kube reads it back as any kubeconfig.
        let kubeconfig = Kubeconfig::read_from(&path).unwrap();
        assert_eq!(kubeconfig.current_context.as_deref(), Some("mca"));
        let servers: Vec<(&str, &str)> = kubeconfig
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.cluster.as_ref().unwrap().server.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("mca", "https://127.0.0.1:6443"),
                ("local", "https://127.0.0.1:6443/clusters/local"),
                ("east", "https://127.0.0.1:6443/clusters/east"),
            ]
        );
        let ca = kubeconfig.clusters[2].cluster.as_ref().unwrap();
        assert_eq!(ca.certificate_authority_data.as_deref(), Some("Q0EgUEVN"));
        let context = kubeconfig.contexts[2].context.as_ref().unwrap();
        assert_eq!(
            (context.cluster.as_str(), context.namespace.as_deref()),
            ("east", Some("team-a"))
        );
        let user = kubeconfig.auth_infos[0].auth_info.as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(user.token.as_ref().unwrap().expose_secret(), "the-token");
    }

    #[test]
    fn reports_the_path_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let error = provision(&file, "CA", "token", "ns").unwrap_err();
        assert!(error.to_string().contains("not-a-dir"), "{error}");
    }
}
